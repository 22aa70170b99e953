"""Where ``batchnb run`` writes its result: checked before the first batch is sent.

A result that cannot be written after the operations ran is lost, and a
rerun would create everything again. So the format, the library that writes
it, and the directory are all checked first.

A result holds what an API answered, and a spreadsheet runs a cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a
formula (OWASP "CSV injection": ``=HYPERLINK(...)`` sends a click away,
``=cmd|...`` asks to start a program). So no text reaches a spreadsheet as a
formula: an xlsx holds every text as a string cell, and a CSV writes such a
text cell with a leading ``'`` (see :func:`formula_safe`), unless
``raw_cells`` asks for every cell as it is. A new file is readable by its
owner only (mode 0600): API answers may hold anything.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from ._exceptions import Problem
from ._jsonarray import holds_values

__all__ = ["Output"]

#: file endings, the format they mean, and the library (and extra) that writes it.
FORMATS = {
    ".csv": ("CSV", None, None),
    ".parquet": ("Parquet", "pyarrow", "parquet"),
    ".pq": ("Parquet", "pyarrow", "parquet"),
    ".xlsx": ("Excel", "openpyxl", "excel"),
}


#: what a spreadsheet reads as the start of a formula (OWASP: ``=``, ``+``, ``-``, ``@``, tab, carriage return).
_RUNS = frozenset("=+-@\t\r")
#: a text that is a plain number (``-3``, ``+4.5e3``): a spreadsheet reads a number, and runs nothing.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _would_run(text: str) -> bool:
    """Whether ``text``, once its leading quotes are set aside, starts as a formula does."""
    bare = text.lstrip("'")
    return bare[:1] in _RUNS and _NUMBER.fullmatch(bare) is None


def formula_safe(text: str) -> str:
    """A text cell as a CSV writes it: with a leading ``'`` where a spreadsheet would run it.

    >>> print(formula_safe('=HYPERLINK("http://x.example","click")'), formula_safe("-3"), formula_safe("Lyon"))
    '=HYPERLINK("http://x.example","click") -3 Lyon

    A plain number (``-3``) runs nothing and is written as it is. A text
    that starts with quotes gets one more when what follows them would run
    (``'=x`` is written ``''=x``), so that :func:`as_written` can take the
    prefix off again without a doubt.
    """
    return "'" + text if _would_run(text) else text


def as_written(text: str) -> str:
    """A cell :func:`formula_safe` wrote, as it was before: its prefix taken off.

    >>> as_written("'=SUM(A1)"), as_written("''=x"), as_written("'plain"), as_written("-3")
    ('=SUM(A1)', "'=x", "'plain", '-3')
    """
    return text[1:] if text[:1] == "'" and _would_run(text) else text


class Output:
    """A result's destination: a file (.csv, .parquet, .xlsx) or ``-`` for CSV on standard output.

    A CSV is written with ``sep`` and ``encoding`` (``utf-8-sig`` writes the
    byte order mark that makes Excel read UTF-8). Its text cells that a
    spreadsheet would run as a formula get a leading ``'``
    (:func:`formula_safe`); ``raw_cells=True`` writes them as they are, for a
    CSV that a program reads back cell for cell. An xlsx holds every text as a
    string cell, never a formula.

    >>> Output("results.txt").problems()
    [Problem(pointer='-o', message="'results.txt': unknown format '.txt'; use .csv, .parquet or .xlsx (or - for CSV on standard output)")]
    >>> Output("results.csv", sep="||").problems()
    [Problem(pointer='--out-sep', message="'||' is not one character: a CSV's separator is one, such as ';'")]
    """

    def __init__(self, target: str, *, sep: str = ",", encoding: str = "utf-8", raw_cells: bool = False) -> None:
        self.target = target
        self.to_stdout = target == "-"
        self.path = None if self.to_stdout else Path(target)
        self.sep = sep
        self.encoding = encoding
        self.raw_cells = raw_cells

    @property
    def format(self) -> str:
        return "CSV" if self.path is None else FORMATS.get(self.path.suffix.lower(), ("?",))[0]

    def problems(self) -> list[Problem]:
        """Everything that would stop the result from being written, found now."""
        found = self._csv_problems()
        path = self.path
        if path is None or found:
            return found
        if path.is_dir():
            return [Problem("-o", f"{self.target!r} is a directory; name a file in it")]
        spec = FORMATS.get(path.suffix.lower())
        if spec is None:
            return [
                Problem(
                    "-o",
                    f"{self.target!r}: unknown format {path.suffix or '(no ending)'!r}; use .csv, .parquet or .xlsx (or - for CSV on standard output)",
                )
            ]
        name, module, extra = spec
        if module is not None and importlib.util.find_spec(module) is None:
            return [Problem("-o", f"{self.target!r}: writing {name} needs {module}: pip install 'batchnb[{extra}]'")]
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            return [Problem("-o", f"{self.target!r}: the directory {str(parent)!r} does not exist")]
        try:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=".batchnb-", delete=True):
                pass
        except OSError as exc:
            return [Problem("-o", f"{self.target!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})")]
        if path.exists() and not os.access(path, os.W_OK):
            return [Problem("-o", f"{self.target!r} exists and cannot be overwritten")]
        return []

    def _csv_problems(self) -> list[Problem]:
        found = []
        if len(self.sep) != 1 or self.sep in '"\r\n':
            found.append(
                Problem("--out-sep", f"{self.sep!r} is not one character: a CSV's separator is one, such as ';'")
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            found.append(Problem("--out-encoding", f"unknown encoding {self.encoding!r}; for Excel, use utf-8-sig"))
        return found

    def write(self, frame: Any, stdout: TextIO | None = None) -> str | None:
        """Write ``frame``: JSON values as JSON text, unicode as itself, no text as a formula.

        Returns a notice when the CSV could not be written in ``encoding``
        (a character it has no byte for) and was written as UTF-8 with a
        byte order mark instead: a result is never lost nor altered.
        """
        table = frame.copy()
        for column in table.columns:
            if holds_values(table[column]):
                table[column] = table[column].astype(object).map(_as_text)
        index_label = frame.index.name or "row"
        kind = self.format
        if self.path is not None:
            _create_private(self.path)
        if kind == "Parquet" and self.path is not None:
            table.to_parquet(self.path)
        elif kind == "Excel" and self.path is not None:
            _write_xlsx(table, self.path, index_label)
        else:
            if not self.raw_cells:
                table, index_label = _formula_safe_table(table), formula_safe(str(index_label))
            return self._write_csv(table, index_label, stdout)
        return None

    def _write_csv(self, table: Any, index_label: str, stdout: TextIO | None) -> str | None:
        encoding, notice = self.encoding, None
        options = {"sep": self.sep, "index_label": index_label, "lineterminator": _line_end(table)}
        if not _holds_everything(encoding):
            # Found before a byte is written: a legacy encoding may lack a character the API answered with.
            text = table.to_csv(**options)
            try:
                text.encode(encoding)
            except UnicodeEncodeError as exc:
                where = "standard output" if self.to_stdout else repr(self.target)
                notice = (
                    f"{where}: {exc.object[exc.start]!r} cannot be written in {encoding}; "
                    "the result is written as utf-8-sig (UTF-8 that Excel reads) instead"
                )
                encoding = "utf-8-sig"
        if not self.to_stdout:
            table.to_csv(self.path, encoding=encoding, **options)
            return notice
        out = stdout or sys.stdout
        binary = getattr(out, "buffer", None)
        if binary is None:  # a text stream (a test's StringIO): the text, with the mark as a character
            out.write(("\ufeff" if _has_bom(encoding) else "") + table.to_csv(**options))
            return notice
        out.flush()
        table.to_csv(binary, encoding=encoding, mode="wb", **options)
        binary.flush()
        return notice


def _create_private(path: Path) -> None:
    """Create ``path`` readable and writable by its owner only, unless it exists (its mode is then its owner's)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _write_xlsx(table: Any, path: Path, index_label: str) -> None:
    """An xlsx whose every text is a string cell: openpyxl makes a formula of a text that starts with ``=``."""
    import pandas as pd

    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        table.to_excel(writer, index_label=index_label)
        for sheet in writer.sheets.values():
            for row in sheet.iter_rows():
                for cell in row:
                    # 'f' (a formula) and 'e' (an error such as '#N/A') are texts openpyxl guessed about.
                    if isinstance(cell.value, str) and cell.data_type != "s":
                        cell.data_type = "s"


def _formula_safe_table(table: Any) -> Any:
    """``table`` with :func:`formula_safe` applied to every text: cells, column names and row labels."""

    def safe(value: Any) -> Any:
        return formula_safe(value) if isinstance(value, str) else value

    for column in table.columns:
        if table[column].dtype.kind not in "biufcmM":  # numbers, booleans and times hold no text
            table[column] = table[column].map(safe)
    table.columns = [safe(c) for c in table.columns]
    if table.index.dtype.kind not in "biufcmM":
        table.index = table.index.map(safe)
    return table


def _line_end(table: Any) -> str:
    """``\\n``, or ``\\r\\n`` when a text holds a carriage return.

    Python's csv module quotes a cell that holds a character of the line
    end only: a bare ``\\r`` in a cell written unquoted ends the line for
    whoever reads the file (Excel, ``read_csv``), and the row falls apart.
    """
    texts = [table.columns, table.index, *(table[c] for c in table.columns if table[c].dtype.kind not in "biufcmM")]
    return "\r\n" if any(isinstance(v, str) and "\r" in v for values in texts for v in values) else "\n"


def _holds_everything(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-8", "utf-16", "utf-32"))


def _has_bom(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8-sig", "utf-16", "utf-32")


def _as_text(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value
