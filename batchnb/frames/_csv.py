"""Reading a CSV of operations so that every cell reaches the API as the file says.

pandas' ``read_csv`` guesses types the way a spreadsheet does: a zip code
``01234`` becomes ``1234``, an integer column with one empty cell becomes
floats (``30.0``), ``9007199254740993`` becomes ``9007199254740992.0``.
Each of those is sent to the API silently changed. :func:`read_csv` follows
one rule instead, column by column:

- **integers** only if every non-empty cell is an integer written canonically
  (no leading zero, no ``+``, no ``.0``), kept exact at any size;
- **decimals** only if every non-empty cell is a plain decimal number
  (``12.5``, ``-0.25``, or an integer as above), kept exact;
- **booleans** only if every non-empty cell is ``true`` or ``false`` (any case);
- **text** otherwise: every cell exactly as written;
- an **empty cell** is a missing value: left out of a body, an error in a path.

The separator (``,``, ``;`` or tab) is found from the header line, or from
Excel's ``sep=;`` hint line; the file is UTF-8, with or without a byte order
mark (Excel writes one), or UTF-16 with its byte order mark (Excel's "Unicode
text"), unless ``encoding`` says otherwise. A decoded control character
(U+0080 to U+009F, or NUL) is refused: it is a byte read in the wrong encoding
(``0x9c`` is ``œ`` in Windows' cp1252, an invisible control in Latin-1), and
would reach the API as such. A row whose every cell is empty (Excel's
``;;;``) is skipped, with a :class:`SkippedRowsWarning` naming its line.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

import numpy as np
import pandas as pd

from .._exceptions import BatchValidationError, Problem

__all__ = ["SkippedRowsWarning", "read_csv"]

_INTEGER = re.compile(r"0|-?[1-9][0-9]*")
_DECIMAL = re.compile(r"0|-?[1-9][0-9]*|-?(?:0|[1-9][0-9]*)\.[0-9]+")
_BOOLEAN = {"true": True, "false": False}
_SEPARATORS = (",", ";", "\t")
#: Excel's hint line, ``sep=;``: it names the separator, and the header is the next line.
_HINT = re.compile(r"sep=([^\r\n\"])\r?(?:\n|$)", re.IGNORECASE | re.ASCII)  # ASCII: 'ſep=' is no hint
#: characters that are never text in a CSV cell: a byte decoded with the wrong encoding.
_CONTROLS = re.compile("[\x00\x80-\x9f]")
#: byte order marks of the UTF-16 and UTF-32 files Windows writes (UTF-32's first: it starts like UTF-16's).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: how many skipped lines a notice names before it counts the rest.
_SHOWN = 20
#: the types a column may be given by hand (``dtype=``, ``batchnb run --dtype``).
TYPES = ("int", "decimal", "bool", "str")
_TYPE_NAMES = {
    "int": "int",
    "integer": "int",
    "decimal": "decimal",
    "float": "decimal",
    "number": "decimal",
    "bool": "bool",
    "boolean": "bool",
    "str": "str",
    "string": "str",
    "text": "str",
}


class SkippedRowsWarning(UserWarning):
    """:func:`read_csv` skipped rows whose every cell is empty (Excel writes ``;;;`` for a blank row).

    The message names their lines; ``df.attrs["batchnb.csv"].skipped`` holds them too.

    >>> import io, warnings
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     df = read_csv(io.StringIO("a;b\\n1;2\\n;\\n"))
    >>> print(seen[0].message)
    <input>: skipped 1 empty row (every cell empty): line 3
    """


@dataclass(frozen=True)
class CsvSource:
    """Where a frame's rows came from, so that a problem can name the file's line.

    Kept in ``df.attrs["batchnb.csv"]``; it applies only while the frame
    keeps the index it was read with (a filtered or re-indexed frame is
    another frame, and its problems name rows only). It also says how the
    file was written (``sep``, ``encoding`` as read: ``utf-8-sig`` when it
    had a byte order mark), so that a result can be written the same way,
    and which lines were ``skipped`` as empty.
    """

    name: str
    lines: tuple[int, ...]
    index: pd.Index
    sep: str = ","
    encoding: str = "utf-8"
    skipped: tuple[int, ...] = ()

    def line_of(self, position: int) -> int:
        return self.lines[position]

    def part(self, start: int, stop: int, index: pd.Index) -> CsvSource:
        """The source of rows ``start`` to ``stop`` (a chunk sent on its own)."""
        return dataclasses.replace(self, lines=self.lines[start:stop], index=index)

    def __deepcopy__(self, memo: dict[int, Any]) -> CsvSource:
        # pandas deep-copies attrs on every operation; this never changes.
        return self


def read_csv(
    path: str | os.PathLike[str] | IO[Any],
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    strings: bool = False,
    dtype: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read a CSV of operations: every cell as the file says (see the module's rule).

    >>> import io
    >>> from batchnb import from_frame, read_csv
    >>> df = read_csv(io.StringIO("zip;n;big;price;ok\\n01234;30;9007199254740993;12.50;true\\n02000;;1;3;FALSE\\n"))
    >>> df.dtypes.astype(str).tolist()
    ['str', 'Int64', 'int64', 'float64', 'bool']
    >>> from_frame(df, method="POST", path="/sites/{zip}", body=["n", "big", "price", "ok"])[0].to_wire()
    {'method': 'POST', 'path': '/sites/01234', 'body': {'n': 30, 'big': 9007199254740993, 'price': 12.5, 'ok': True}}

    ``sep`` forces the separator; ``encoding`` reads a file that is not
    UTF-8 (``"cp1252"`` for what Windows and Excel save as "CSV" or
    "ANSI"); ``strings=True`` reads every cell as text;
    ``dtype={"zip": "str", "qty": "int"}`` sets columns by hand (``int``,
    ``decimal``, ``bool``, ``str``). Every problem names its line: a byte
    that is not UTF-8, a control character (a byte read in the wrong
    encoding), a quote never closed, a line with more or fewer cells than
    the header, a cell that does not fit its ``dtype``. Rows whose every
    cell is empty are skipped with a :class:`~batchnb.frames.SkippedRowsWarning`.
    """
    name, raw = _read(path)
    text, read_as = _decoded(raw, encoding, name)
    if not text.strip():
        raise BatchValidationError(
            [Problem(name, "the file is empty: a CSV of operations needs a header line and a line per operation")]
        )
    hint = _HINT.match(text)
    offset = 0
    if hint is not None:
        text, offset = text[hint.end() :], 1
    separator = sep if sep is not None else hint.group(1) if hint is not None else _sniff(text)
    controls = _CONTROLS.search(text) is not None  # one scan of the whole text; cell by cell only to say where
    try:
        table = _parse(text, separator, name, offset)
    except BatchValidationError:
        if controls:  # the wrong encoding is the cause; the broken rows are its effect
            _refuse_controls_in_text(text, name, read_as, offset)
        raise
    if controls:
        _refuse_controls(table, name, read_as)
    header, rows, lines = table.header, table.rows, table.lines
    if table.skipped:
        warnings.warn(_skipped_notice(name, table.skipped), SkippedRowsWarning, stacklevel=2)
    forced = _forced_types(dtype or {}, header, name)
    columns: dict[str, Any] = {}
    problems: list[Problem] = []
    for j, column in enumerate(header):
        cells = [row[j] for row in rows]
        kind = forced.get(column, "str" if strings else _infer(cells))
        values, bad = _convert(cells, kind)
        for i, cell in bad:
            problems.append(
                Problem(
                    f"line {lines[i]}, column {column}",
                    f"{cell!r} is not {_A[kind]} (the column is read as {kind}: dtype={{{column!r}: {kind!r}}})",
                )
            )
        columns[column] = values
    if problems:
        raise BatchValidationError(problems)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))
    frame.attrs["batchnb.csv"] = CsvSource(name, tuple(lines), frame.index, separator, read_as, table.skipped)
    return frame


def _skipped_notice(name: str, skipped: tuple[int, ...]) -> str:
    shown = ", ".join(str(n) for n in skipped[:_SHOWN]) + (
        f", … and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
    )
    rows = "row" if len(skipped) == 1 else "rows"
    lines = "line" if len(skipped) == 1 else "lines"
    return f"{name}: skipped {len(skipped)} empty {rows} (every cell empty): {lines} {shown}"


_A = {"int": "an integer", "decimal": "a decimal number", "bool": "true or false", "str": "text"}


def _read(path: Any) -> tuple[str, bytes]:
    if hasattr(path, "read"):
        data = path.read()
        name = getattr(path, "name", None)
        return (os.path.basename(name) if isinstance(name, str) else "<input>"), (
            data.encode("utf-8") if isinstance(data, str) else data
        )
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            return os.path.basename(name), f.read()
    except FileNotFoundError:
        raise BatchValidationError([Problem(name, "no such file")]) from None
    except IsADirectoryError:
        raise BatchValidationError([Problem(name, "is a directory, not a CSV file")]) from None
    except PermissionError:
        raise BatchValidationError([Problem(name, "cannot be read (permission denied)")]) from None


def _decode(raw: bytes, encoding: str, name: str) -> str:
    """The file's text (the expected results of ``--expect`` are read with it too)."""
    return _decoded(raw, encoding, name)[0]


def _decoded(raw: bytes, encoding: str, name: str) -> tuple[str, str]:
    """The file's text, and the encoding it was read with (``utf-8-sig`` when it had UTF-8's byte order mark)."""
    try:
        asked = codecs.lookup(encoding).name
    except LookupError:
        raise BatchValidationError([Problem("encoding", f"unknown encoding {encoding!r}")]) from None
    utf8 = asked in ("utf-8", "utf-8-sig")
    bom, wide = next(((bom, codec) for bom, codec in _WIDE_BOMS if raw.startswith(bom)), (b"", None))
    if wide is not None and not utf8 and not asked.startswith(wide):
        raise BatchValidationError(
            [
                Problem(
                    f"{name}, line 1",
                    f"starts with a {wide.upper()} byte order mark (bytes {bom.hex(' ').upper()}),"
                    f" so it is {wide.upper()} text, not {encoding}: leave encoding out to read it",
                )
            ]
        )
    codec = wide or ("utf-8-sig" if utf8 else encoding)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = ""
        if b"\x00" in raw[:4096]:  # text with NUL bytes between the letters: UTF-16 that lost its mark
            hint = "; it holds NUL bytes, so it may be UTF-16 without its byte order mark: read it with encoding='utf-16-le'"
        elif utf8:
            hint = '; if Windows or Excel saved it ("CSV", "ANSI": Windows-1252), read it with encoding=\'cp1252\''
        raise BatchValidationError(
            [Problem(f"{name}, line {line}", f"byte 0x{raw[exc.start]:02x} is not {encoding} text{hint}")]
        ) from None
    if utf8 and raw.startswith(codecs.BOM_UTF8):
        return text, "utf-8-sig"
    return text.removeprefix("\ufeff"), wide or asked


def _refuse_controls(table: _Table, name: str, read_as: str) -> None:
    """Refuse control characters (U+0080 to U+009F, NUL): bytes decoded with the wrong encoding, never text."""
    problems = []
    nul = False
    found = [(table.header_line, table.header, True)] + [(n, row, False) for n, row in zip(table.lines, table.rows)]
    for start, row, is_header in found:
        line = start
        for j, cell in enumerate(row):
            for match in _CONTROLS.finditer(cell):
                if match.group() == "\x00" and nul:
                    continue  # one is enough to say the file is UTF-16
                nul = nul or match.group() == "\x00"
                at = line + cell.count("\n", 0, match.start())
                column = (
                    f"column {j + 1} (the header)"
                    if is_header
                    else f"column {table.header[j] if j < len(table.header) else j + 1}"
                )
                problems.append(Problem(f"{name}, line {at}, {column}", _control_message(match.group(), read_as)))
            line += cell.count("\n")
    raise BatchValidationError(problems[:50])


def _refuse_controls_in_text(text: str, name: str, read_as: str, offset: int) -> None:
    """As :func:`_refuse_controls`, for a text that is not even valid CSV: each by its line and character."""
    problems = []
    nul = False
    for match in _CONTROLS.finditer(text):
        if match.group() == "\x00" and nul:
            continue  # one is enough to say the file is UTF-16
        nul = nul or match.group() == "\x00"
        line = offset + text.count("\n", 0, match.start()) + 1
        character = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
        problems.append(
            Problem(f"{name}, line {line}, character {character}", _control_message(match.group(), read_as))
        )
        if len(problems) == 50:
            break
    raise BatchValidationError(problems)


def _control_message(char: str, read_as: str) -> str:
    code = ord(char)
    try:
        data = char.encode(read_as)
    except (UnicodeEncodeError, LookupError):
        data = b""
    data = data.removeprefix(codecs.BOM_UTF16_LE).removeprefix(codecs.BOM_UTF16_BE)  # utf-16's encoder adds one
    byte = " ".join(f"0x{b:02x}" for b in data)
    said = (
        f"{'byte' if len(data) == 1 else 'bytes'} {byte} {'is' if len(data) == 1 else 'are'} read as " if data else ""
    )
    what = f"{said}U+{code:04X}, {'NUL' if code == 0 else 'a control character'}, not text"
    if code == 0:
        return f"{what}: the file may be UTF-16 without its byte order mark (read it with encoding='utf-16-le')"
    windows = bytes([code]).decode("cp1252", errors="replace")
    if len(data) == 1:
        # Latin-1 and its kin map each byte 0x80-0x9f to a control; Windows-1252 maps most of them to text.
        if windows != "\ufffd":
            return f"{what}: in Windows-1252 (what Windows and Excel write), 0x{code:02x} is {windows!r}; read it with encoding='cp1252'"
        return f"{what}: the file is not {read_as} text"
    converted = f" (in Windows-1252, 0x{code:02x} is {windows!r})" if windows != "\ufffd" else ""
    return f"{what}: the file was probably converted from Windows-1252 as if it were Latin-1{converted}; fix it at its source"


def _sniff(text: str) -> str:
    """The separator the header line uses most (outside quotes): ',', ';' or tab."""
    header = text.lstrip("\n").split("\n", 1)[0]
    outside = re.sub(r'"[^"]*"', "", header)
    counts = {s: outside.count(s) for s in _SEPARATORS}
    best = max(_SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] else ","


@dataclass
class _Table:
    """The cells as the file has them: the header, the rows and the line each starts on."""

    header: list[str]
    header_line: int
    rows: list[list[str]]
    lines: list[int]
    #: lines of rows whose every cell is empty (Excel's ``;;;``), left out
    skipped: tuple[int, ...]


def _parse(text: str, sep: str, name: str, offset: int = 0) -> _Table:
    """Header, rows (blank and empty rows skipped) and the line each row starts on (``offset`` lines come before ``text``)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    skipped: list[int] = []
    header: list[str] | None = None
    header_line = 0
    last = offset
    try:
        for row in reader:
            start, last = last + 1, reader.line_num + offset
            if not row:  # a blank line ('""' is a row with one empty cell)
                continue
            if len(row) > 1 and not any(row):  # separators only: Excel writes a blank row as ';;;'
                skipped.append(start)
                continue
            if header is None:
                header, header_line = row, start
                continue
            rows.append(row)
            lines.append(start)
    except csv.Error as exc:
        raise BatchValidationError([Problem(f"{name}, line {last + 1}", _csv_error(str(exc)))]) from None
    if header is None:
        raise BatchValidationError(
            [Problem(name, "the file is empty: a CSV of operations needs a header line and a line per operation")]
        )
    problems = _header_problems(header, header_line, name)
    for row, line in zip(rows, lines):
        if len(row) != len(header):
            problems.append(
                Problem(
                    f"{name}, line {line}", f"has {len(row)} cells; the header has {len(header)} (separator {sep!r})"
                )
            )
    if problems:
        raise BatchValidationError(problems[:50])
    return _Table(header, header_line, rows, lines, tuple(skipped))


def _csv_error(message: str) -> str:
    if "unexpected end of data" in message or "EOF" in message:
        return "a quoted cell opened here is never closed (a lone '\"')"
    return f"is not valid CSV: {message}"


def _header_problems(header: list[str], line: int, name: str) -> list[Problem]:
    problems = []
    seen: dict[str, int] = {}
    for j, column in enumerate(header, 1):
        if not column.strip():
            problems.append(Problem(f"{name}, line {line}", f"column {j} has no name in the header"))
        elif column in seen:
            problems.append(
                Problem(
                    f"{name}, line {line}",
                    f"column {column!r} appears twice in the header (columns {seen[column]} and {j})",
                )
            )
        else:
            seen[column] = j
    return problems


def _forced_types(dtype: Mapping[str, str], header: list[str], name: str) -> dict[str, str]:
    forced = {}
    problems = []
    for column, kind in dtype.items():
        canonical = _TYPE_NAMES.get(str(kind).lower())
        if column not in header:
            problems.append(
                Problem(f"dtype[{column!r}]", f"{name} has no column {column!r} (it has {', '.join(header)})")
            )
        elif canonical is None:
            problems.append(Problem(f"dtype[{column!r}]", f"unknown type {kind!r}; use one of {', '.join(TYPES)}"))
        else:
            forced[column] = canonical
    if problems:
        raise BatchValidationError(problems)
    return forced


def _infer(cells: list[str]) -> str:
    distinct = set(cells)
    distinct.discard("")
    if not distinct:
        return "str"
    if all(_INTEGER.fullmatch(c) for c in distinct):
        return "int"
    if all(_DECIMAL.fullmatch(c) for c in distinct):
        return "decimal"
    if all(c.lower() in _BOOLEAN for c in distinct):
        return "bool"
    return "str"


def _convert(cells: list[str], kind: str) -> tuple[Any, list[tuple[int, str]]]:
    """The column's values in the tightest exact dtype, and the cells that do not fit ``kind``."""
    missing = np.fromiter((c == "" for c in cells), dtype=bool, count=len(cells))
    if kind == "str":
        return pd.array([None if m else c for c, m in zip(cells, missing)], dtype="str"), []
    parse = {"int": _int, "decimal": _decimal, "bool": _bool}[kind]
    memo: dict[str, Any] = {}
    bad: list[tuple[int, str]] = []
    values: list[Any] = []
    for i, cell in enumerate(cells):
        if cell == "":
            values.append(None)
            continue
        if cell not in memo:
            memo[cell] = parse(cell)
        value = memo[cell]
        if value is _BAD:
            bad.append((i, cell))
            value = None
        values.append(value)
    if bad:
        return None, bad
    return _typed(values, missing, kind), []


_BAD = object()


def _int(cell: str) -> Any:
    return int(cell) if _INTEGER.fullmatch(cell) else _BAD


def _decimal(cell: str) -> Any:
    return Decimal(cell) if _DECIMAL.fullmatch(cell) else _BAD


def _bool(cell: str) -> Any:
    return _BOOLEAN.get(cell.lower(), _BAD)


def _typed(values: list[Any], missing: np.ndarray, kind: str) -> Any:
    present = [v for v in values if v is not None]
    if kind == "int":
        if all(-(2**63) <= v < 2**63 for v in present):
            data = np.array([0 if v is None else v for v in values], dtype=np.int64)
            return data if not missing.any() else pd.arrays.IntegerArray(data, missing)
        return np.array(values, dtype=object)  # beyond 64 bits: exact Python ints
    if kind == "decimal":
        floats = [None if v is None else float(v) for v in values]
        # A float is kept only where it is the very number the file wrote.
        if all(Decimal(repr(f)) == v for f, v in zip(floats, values) if v is not None):
            return np.array([np.nan if f is None else f for f in floats], dtype=np.float64)
        return np.array(values, dtype=object)
    flags = np.array([bool(v) for v in values], dtype=bool)
    return flags if not missing.any() else pd.arrays.BooleanArray(flags, missing)
