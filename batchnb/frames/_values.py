"""Cells to JSON values: every pandas and numpy type an analyst's frame may hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import _refs
from .._cells import _is_null, _json_value


def _may_hold_refs(value: Any) -> bool:
    # One C-speed pass over a nested value instead of a Python walk.
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, (dict, list)):
        try:
            return b"${" in orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return True
    return False


@dataclass
class _Column:
    """One column as JSON values: positions of nulls, of bad cells, of possible references."""

    values: list[Any]
    nulls: np.ndarray | None  # bool per row, None when the column has no null
    bad: list[tuple[int, str]]
    ref_rows: list[int]


def _json_column(s: pd.Series, omit: bool) -> _Column:
    """A column as a list of plain Python JSON values, worked out per dtype.

    Null cells hold None unless ``omit`` (then they hold whatever is cheapest,
    the caller drops them using ``nulls``).
    """
    dt = s.dtype
    if isinstance(dt, np.dtype):
        kind = dt.kind
        if kind in "iub":
            # tolist() already gives Python ints and bools.
            return _Column(s.tolist(), None, [], [])
        if kind == "f":
            arr = s.to_numpy()
            return _masked(arr.tolist(), np.isnan(arr), omit)
        if kind == "O":
            return _object_column(s.tolist(), omit)
        return _object_column(s.astype(object).tolist(), omit)
    if isinstance(dt, pd.StringDtype):
        coded = _coded_texts(s)
        assert coded is not None  # text columns always have a coded form
        nulls = coded.rows_where([v is None for v in coded.values])
        refs_ = coded.rows_where([v is not None and "${" in v for v in coded.values])
        return _Column(coded.per_row(), nulls if nulls.any() else None, [], np.flatnonzero(refs_).tolist())
    if isinstance(dt, pd.CategoricalDtype):
        cats = _json_column(pd.Series(dt.categories), omit)
        codes = s.cat.codes.to_numpy()
        nulls = codes < 0
        if cats.nulls is not None:
            nulls |= cats.nulls[codes] & (codes >= 0)
        cat_values = [*cats.values, None]  # code -1 picks the trailing None
        values = [cat_values[c] for c in codes.tolist()]
        bad_cats = dict(cats.bad)
        bad = [(i, bad_cats[c]) for i, c in enumerate(codes.tolist()) if c in bad_cats] if bad_cats else []
        ref_cats = set(cats.ref_rows)
        ref_rows = [i for i, c in enumerate(codes.tolist()) if c in ref_cats] if ref_cats else []
        return _Column(values, nulls if nulls.any() else None, bad, ref_rows)
    kind = getattr(dt, "kind", "O")
    numpy_dtype = getattr(dt, "numpy_dtype", None)
    if kind in "iubf" and numpy_dtype is not None and numpy_dtype.kind == kind:
        # Nullable (masked or Arrow) numbers: the values without their NAs,
        # then the NAs as a mask, so that Int64 gives ints, never floats.
        nulls = s.isna().to_numpy(dtype=bool)
        fill = np.nan if kind == "f" else (False if kind == "b" else 0)
        arr = s.to_numpy(dtype=numpy_dtype, na_value=fill)
        if kind == "f":
            nulls = nulls | np.isnan(arr)
        return _masked(arr.tolist(), nulls, omit)
    return _object_column(s.astype(object).tolist(), omit)


def _masked(values: list[Any], nulls: np.ndarray, omit: bool) -> _Column:
    """A column of plain values with a null mask: nulls become None unless they are to be omitted."""
    if not nulls.any():
        return _Column(values, None, [], [])
    if not omit:
        for i in np.flatnonzero(nulls).tolist():
            values[i] = None
    return _Column(values, nulls, [], [])


def _object_column(values: list[Any], omit: bool) -> _Column:
    null_rows: list[int] = []
    bad: list[tuple[int, str]] = []
    ref_rows: list[int] = []
    for i, v in enumerate(values):
        t = type(v)
        if t is str:
            if "${" in v:
                ref_rows.append(i)
            continue
        if t is int or t is bool or (t is float and v == v):
            continue
        if _is_null(v):
            null_rows.append(i)
            values[i] = None
            continue
        try:
            values[i] = converted = _json_value(v, omit)
        except TypeError as exc:
            bad.append((i, str(exc)))
            values[i] = None
            continue
        if _may_hold_refs(converted):
            ref_rows.append(i)
    nulls = None
    if null_rows:
        nulls = np.zeros(len(values), dtype=bool)
        nulls[null_rows] = True
    return _Column(values, nulls, bad, ref_rows)


def _texts(s: pd.Series) -> tuple[list[str | None], list[tuple[int, str]]]:
    """A column as text, for templates, methods and names: None for nulls.

    Numbers and booleans read as their JSON text, dates as ISO 8601.
    """
    coded = _coded_texts(s)
    if coded is not None:
        return coded.per_row(), []
    col = _json_column(s, omit=False)
    values = [v if v is None or type(v) is str else _refs.as_text(v) for v in col.values]
    return values, col.bad


@dataclass
class _Coded:
    """A column as its distinct values and, per row, the position of its value among them.

    Values repeat (one company for many staff): whatever is worked out from a
    value is worked out once, and the rows share the resulting objects.

    >>> c = _coded_texts(pd.Series(["a", None, "a"], dtype="str"))
    >>> c.values, c.codes.tolist(), c.per_row()
    (['a', None], [0, 1, 0], ['a', None, 'a'])
    """

    codes: np.ndarray  # per row, an index into ``values``
    values: list[Any]  # None stands for every null

    @classmethod
    def of_rows(cls, values: list[Any]) -> _Coded:
        """Each row its own value (a column whose equal values may still read differently)."""
        return cls(np.arange(len(values)), values)

    def per_row(self) -> list[Any]:
        rows: list[Any] = _object_array(self.values)[self.codes].tolist()
        return rows

    def rows_where(self, flags: list[bool] | np.ndarray) -> np.ndarray:
        """A mask of the rows whose value is flagged (``flags`` has one entry per distinct value)."""
        return np.asarray(flags, dtype=bool)[self.codes] if len(self.values) else np.zeros(len(self.codes), dtype=bool)


def _object_array(values: list[Any]) -> np.ndarray:
    # fromiter keeps each value one object (np.array would make a 2-D array of equal-length lists).
    return np.fromiter(values, dtype=object, count=len(values))


def _coded_texts(s: pd.Series) -> _Coded | None:
    """A column of text, integers or booleans as the text of its distinct values, or None for
    any other dtype (where values that compare equal, such as ``1`` and ``1.0``, read differently)."""
    dt = s.dtype
    if not (isinstance(dt, pd.StringDtype) or (isinstance(dt, np.dtype) and dt.kind in "iub")):
        return None
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    if isinstance(dt, pd.StringDtype):
        values: list[Any] = uniques.tolist()
    elif dt.kind == "b":
        values = ["true" if v else "false" for v in uniques.tolist()]
    else:
        values = list(map(str, uniques.tolist()))
    if len(codes) and codes.min() < 0:
        codes = np.where(codes < 0, len(values), codes)
        values.append(None)
    return _Coded(codes, values)


def _is_plain_text_column(s: pd.Series) -> bool:
    return isinstance(s.dtype, np.dtype) and s.dtype.kind in "iub"
