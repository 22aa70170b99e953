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

The separator (``,``, ``;`` or tab) is found from the header line; the file
is UTF-8, with or without a byte order mark (Excel writes one), unless
``encoding`` says otherwise.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, Mapping

import numpy as np
import pandas as pd

from .._exceptions import BatchValidationError, Problem

__all__ = ["read_csv"]

_INTEGER = re.compile(r"0|-?[1-9][0-9]*")
_DECIMAL = re.compile(r"0|-?[1-9][0-9]*|-?(?:0|[1-9][0-9]*)\.[0-9]+")
_BOOLEAN = {"true": True, "false": False}
_SEPARATORS = (",", ";", "\t")
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


@dataclass(frozen=True)
class CsvSource:
    """Where a frame's rows came from, so that a problem can name the file's line.

    Kept in ``df.attrs["batchnb.csv"]``; it applies only while the frame
    keeps the index it was read with (a filtered or re-indexed frame is
    another frame, and its problems name rows only).
    """

    name: str
    lines: tuple[int, ...]
    index: pd.Index

    def line_of(self, position: int) -> int:
        return self.lines[position]

    def part(self, start: int, stop: int, index: pd.Index) -> CsvSource:
        """The source of rows ``start`` to ``stop`` (a chunk sent on its own)."""
        return CsvSource(self.name, self.lines[start:stop], index)

    def __deepcopy__(self, memo: dict) -> CsvSource:
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
    UTF-8 (``"latin-1"`` for older Excel exports); ``strings=True`` reads
    every cell as text; ``dtype={"zip": "str", "qty": "int"}`` sets columns
    by hand (``int``, ``decimal``, ``bool``, ``str``). Every problem names
    its line: a byte that is not UTF-8, a quote never closed, a line with
    more or fewer cells than the header, a cell that does not fit its
    ``dtype``.
    """
    name, raw = _read(path)
    text = _decode(raw, encoding, name)
    if not text.strip():
        raise BatchValidationError(
            [Problem(name, "the file is empty: a CSV of operations needs a header line and a line per operation")]
        )
    separator = sep if sep is not None else _sniff(text)
    header, rows, lines = _parse(text, separator, name)
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
    frame.attrs["batchnb.csv"] = CsvSource(name, tuple(lines), frame.index)
    return frame


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
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
    try:
        return raw.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        hint = (
            (
                "; if it was saved as Latin-1 (Windows, older Excel), read it with encoding='latin-1' "
                "(batchnb run --encoding latin-1)"
            )
            if utf8
            else ""
        )
        raise BatchValidationError(
            [Problem(f"{name}, line {line}", f"byte 0x{raw[exc.start]:02x} is not {encoding} text{hint}")]
        ) from None
    except LookupError:
        raise BatchValidationError([Problem("encoding", f"unknown encoding {encoding!r}")]) from None


def _sniff(text: str) -> str:
    """The separator the header line uses most (outside quotes): ',', ';' or tab."""
    header = text.lstrip("\n").split("\n", 1)[0]
    outside = re.sub(r'"[^"]*"', "", header)
    counts = {s: outside.count(s) for s in _SEPARATORS}
    best = max(_SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] else ","


def _parse(text: str, sep: str, name: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows (blank lines skipped) and the line each row starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    header_line = 0
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row:  # a blank line ('""' is a row with one empty cell)
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
    return header, rows, lines


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
    data = np.array([bool(v) for v in values], dtype=bool)
    return data if not missing.any() else pd.arrays.BooleanArray(data, missing)
