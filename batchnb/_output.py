"""Where ``batchnb run`` writes its result: checked before the first batch is sent.

A result that cannot be written after the operations ran is lost, and a
rerun would create everything again. So the format, the library that writes
it, and the directory are all checked first.
"""

from __future__ import annotations

import codecs
import importlib.util
import json
import os
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


class Output:
    """A result's destination: a file (.csv, .parquet, .xlsx) or ``-`` for CSV on standard output.

    A CSV is written with ``sep`` and ``encoding`` (``utf-8-sig`` writes the
    byte order mark that makes Excel read UTF-8).

    >>> Output("results.txt").problems()
    [Problem(pointer='-o', message="'results.txt': unknown format '.txt'; use .csv, .parquet or .xlsx (or - for CSV on standard output)")]
    >>> Output("results.csv", sep="||").problems()
    [Problem(pointer='--out-sep', message="'||' is not one character: a CSV's separator is one, such as ';'")]
    """

    def __init__(self, target: str, *, sep: str = ",", encoding: str = "utf-8") -> None:
        self.target = target
        self.to_stdout = target == "-"
        self.path = None if self.to_stdout else Path(target)
        self.sep = sep
        self.encoding = encoding

    @property
    def format(self) -> str:
        return "CSV" if self.to_stdout else FORMATS.get(self.path.suffix.lower(), ("?",))[0]

    def problems(self) -> list[Problem]:
        """Everything that would stop the result from being written, found now."""
        found = self._csv_problems()
        if self.to_stdout or found:
            return found
        path = self.path
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
        """Write ``frame``: JSON values as JSON text, unicode as itself.

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
        if kind == "Parquet":
            table.to_parquet(self.path)
        elif kind == "Excel":
            table.to_excel(self.path, index_label=index_label)
        else:
            return self._write_csv(table, index_label, stdout)
        return None

    def _write_csv(self, table: Any, index_label: str, stdout: TextIO | None) -> str | None:
        encoding, notice = self.encoding, None
        if not _holds_everything(encoding):
            # Found before a byte is written: a legacy encoding may lack a character the API answered with.
            text = table.to_csv(sep=self.sep, index_label=index_label)
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
            table.to_csv(self.path, sep=self.sep, index_label=index_label, encoding=encoding)
            return notice
        out = stdout or sys.stdout
        binary = getattr(out, "buffer", None)
        if binary is None:  # a text stream (a test's StringIO): the text, with the mark as a character
            out.write(("\ufeff" if _has_bom(encoding) else "") + table.to_csv(sep=self.sep, index_label=index_label))
            return notice
        out.flush()
        table.to_csv(binary, sep=self.sep, index_label=index_label, encoding=encoding, mode="wb")
        binary.flush()
        return notice


def _holds_everything(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-8", "utf-16", "utf-32"))


def _has_bom(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8-sig", "utf-16", "utf-32")


def _as_text(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value
