"""A CSV of operations as a Dask DataFrame, by :func:`batchnb.read_csv`'s rule, split by rows.

``dd.read_csv`` types each block on its own, the way pandas guesses
(``000123`` becomes ``123``), and splits the file at newlines, so that a
quoted cell holding one is cut in two. Here the client reads the file once,
as one :func:`batchnb.read_csv` would: every column's type is decided for
the whole file, every problem is found with its line, and the byte where
each row starts is known, quoted newlines included. Each partition then
reads its own bytes (a run of whole rows) on a worker and gives its
columns exactly the whole file's dtypes.

The index is the row's number in the file (0 for the first row after the
header), as one ``batchnb.read_csv`` gives: unique across partitions, and
the divisions are known.

    >>> _starts_of_lines(b"a\\r\\nb\\nc")
    [0, 3, 5]
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from ._exceptions import BatchValidationError, Problem
from .frames import _csv


def _open(path: str, mode: str = "rb") -> Any:
    import fsspec

    return fsspec.open(path, mode)


def _starts_of_lines(text: bytes) -> list[int]:
    """The byte each line starts at, lines ending as Python's csv module ends them (\\n, \\r\\n or \\r)."""
    starts = [0]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == 0x0A or (c == 0x0D and not (i + 1 < n and text[i + 1] == 0x0A)):
            starts.append(i + 1)
        i += 1
    return starts


def read_csv(
    path: str | os.PathLike[str],
    *,
    blocksize: int | str = "64MiB",
    sep: str | None = None,
    encoding: str = "utf-8",
    strings: bool = False,
    dtype: Mapping[str, str] | None = None,
) -> Any:
    """A CSV of operations as a Dask DataFrame: every cell as the file says (:func:`batchnb.read_csv`'s rule).

    >>> import batchnb.dask
    >>> _ = (tmp / "staff.csv").write_text("company_id,firstName,lastName\\nco_1,0001,Doe\\n")
    >>> staff = batchnb.dask.read_csv(tmp / "staff.csv", blocksize="16MiB")     # lazy: nothing read yet
    >>> staff.compute()["firstName"].tolist()                                   # text, as the file says
    ['0001']

    ``sep``, ``encoding``, ``strings`` and ``dtype`` are
    :func:`batchnb.read_csv`'s. ``path`` is a file every worker can read (a
    shared filesystem, or an fsspec URL such as ``s3://``). Partitions are
    runs of whole rows of about ``blocksize`` bytes; a quoted cell holding
    a newline stays in one piece. Column types are decided once, for the
    whole file, and every partition has them. The index is the row's
    number in the file (0 for the first row after the header).
    """
    import dask.dataframe as dd
    from dask.utils import parse_bytes

    name = os.fspath(path)
    if "\n".encode(encoding, errors="replace") != b"\n":
        raise BatchValidationError(
            [
                Problem(
                    "encoding",
                    f"batchnb.dask.read_csv splits the file by bytes; {encoding!r} writes a newline in more than "
                    "one byte: save the file as UTF-8, or read it with batchnb.read_csv and dd.from_pandas",
                )
            ]
        )
    with _open(name) as f:
        raw = f.read()
    buffer = io.BytesIO(raw)
    buffer.name = name  # problems name the file
    whole = _csv.read_csv(buffer, sep=sep, encoding=encoding, strings=strings, dtype=dtype)
    source = whole.attrs["batchnb.csv"]
    separator = source.sep  # the one the whole file was read with (given, Excel's sep= line, or found)
    meta = whole.iloc[:0]
    kinds = {column: _kind(whole[column]) for column in whole.columns}
    n = len(whole)
    del whole
    if n == 0:
        return dd.from_pandas(meta, npartitions=1)
    line_starts = _starts_of_lines(raw)
    row_starts = [line_starts[line - 1] for line in source.lines]
    size = parse_bytes(blocksize) if isinstance(blocksize, str) else int(blocksize)
    first_rows = [0]
    for row, start in enumerate(row_starts):
        if start - row_starts[first_rows[-1]] >= size:
            first_rows.append(row)
    parts = []
    for k, row in enumerate(first_rows):
        stop_row = first_rows[k + 1] if k + 1 < len(first_rows) else n
        parts.append(
            {
                "path": name,
                "header": row_starts[0],
                "start": row_starts[row],
                "stop": row_starts[stop_row] if stop_row < n else len(raw),
                "first_row": row,
                "first_line": source.lines[row],
                "rows": stop_row - row,
            }
        )
    options = {"sep": separator, "encoding": encoding, "kinds": kinds, "dtypes": meta.dtypes.to_dict()}
    divisions = [*first_rows, n - 1]
    return dd.from_map(_read_part, parts, options=options, meta=meta, divisions=divisions, enforce_metadata=False)


def _kind(column: pd.Series) -> str:
    """The rule's type of a column read by batchnb.read_csv, from its dtype (and values, for object columns)."""
    dt = column.dtype
    if isinstance(dt, pd.StringDtype):
        return "str"
    if pd.api.types.is_bool_dtype(dt):
        return "bool"
    if pd.api.types.is_integer_dtype(dt):
        return "int"
    if pd.api.types.is_float_dtype(dt):
        return "decimal"
    present = column.dropna()
    return "int" if len(present) and all(isinstance(v, int) for v in present) else "decimal"


def _read_part(part: dict[str, Any], options: dict[str, Any]) -> pd.DataFrame:
    """One partition: the header's bytes and the part's rows, read by the whole file's types."""
    with _open(part["path"]) as f:
        header = f.read(part["header"])
        f.seek(part["start"])
        body = f.read(part["stop"] - part["start"])
    name = os.path.basename(part["path"])
    text = _csv._decode(header + body, options["encoding"], name)
    hint = _csv._HINT.match(text)  # Excel's sep= line before the header: the separator is known already
    if hint is not None:
        text = text[hint.end() :]
    table = _csv._parse(text, options["sep"], name)  # it skips empty rows as the whole file's read did
    columns, rows, lines = table.header, table.rows, table.lines
    if len(rows) != part["rows"]:  # the file changed since it was read
        raise BatchValidationError(
            [Problem(name, f"has {len(rows)} rows where it had {part['rows']}: it changed while being read")]
        )
    shift = part["first_line"] - lines[0] if lines else 0
    index = pd.RangeIndex(part["first_row"], part["first_row"] + len(rows))
    data = {}
    for j, column in enumerate(columns):
        cells = [row[j] for row in rows]
        data[column] = _typed(cells, options["kinds"][column], options["dtypes"][column])
    frame = pd.DataFrame(data, index=index)
    frame.attrs["batchnb.csv"] = _csv.CsvSource(
        name, tuple(line + shift for line in lines), frame.index, options["sep"]
    )
    return frame


def _typed(cells: list[str], kind: str, dtype: Any) -> Any:
    """The cells as the whole file's dtype: a part with no missing cell still gets Int64 when the file has one."""
    if dtype is object or dtype == np.dtype(
        object
    ):  # integers beyond 64 bits, or decimals a float cannot hold: exact Python values
        parse = int if kind == "int" else Decimal
        return np.array([None if c == "" else parse(c) for c in cells], dtype=object)
    values, _bad = _csv._convert(cells, kind)  # the whole file was checked: nothing is bad
    return pd.Series(values, copy=False).astype(dtype).array
