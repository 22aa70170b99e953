"""Where ``batchnb run`` writes its result: checked before the first batch is sent.

A result that cannot be written after the operations ran is lost, and a
rerun would create everything again. So the format, the library that writes
it, and the directory are all checked first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from ._exceptions import BatchValidationError, Problem
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

    >>> Output("results.txt").problems()
    [Problem(pointer='-o', message="'results.txt': unknown format '.txt'; use .csv, .parquet or .xlsx (or - for CSV on standard output)")]
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.to_stdout = target == "-"
        self.path = None if self.to_stdout else Path(target)

    @property
    def format(self) -> str:
        return "CSV" if self.to_stdout else FORMATS.get(self.path.suffix.lower(), ("?",))[0]

    def problems(self) -> list[Problem]:
        """Everything that would stop the result from being written, found now."""
        if self.to_stdout:
            return []
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

    def write(self, frame: Any, stdout: TextIO | None = None) -> None:
        """Write ``frame``: JSON values as JSON text, unicode as itself."""
        table = frame.copy()
        for column in table.columns:
            if holds_values(table[column]):
                table[column] = table[column].astype(object).map(_as_text)
        index_label = frame.index.name or "row"
        if self.to_stdout:
            table.to_csv(stdout or sys.stdout, index_label=index_label)
            return
        kind = self.format
        if kind == "Parquet":
            table.to_parquet(self.path)
        elif kind == "Excel":
            table.to_excel(self.path, index_label=index_label)
        else:
            table.to_csv(self.path, index_label=index_label, encoding="utf-8")


def _as_text(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value
