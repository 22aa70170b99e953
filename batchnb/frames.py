"""DataFrame rows to operations: :func:`from_frame` (responses back to rows: :mod:`batchnb.results`).

``from_frame`` turns the rows of a DataFrame into :class:`~batchnb.model.Operation`
objects, one per row, and checks all of them before anything is sent: every
problem is collected and raised as one :class:`~batchnb.BatchValidationError`.

Pointers name a cell the way a user looks for it: ``row 17, column method``.
The row is the index label written with ``repr`` (``row 17``, ``row 'a'``,
``row Timestamp('2024-01-01 00:00:00')``); the column is the frame's column
that holds the offending value. When the value was built from a template or a
constant rather than read from one column, the column is the argument that
built it (``method``, ``path``, ``name``, ``headers``, ``body``, ``parent``).
Problems of an argument as a whole (a template naming a missing column, an
unknown constant method) have the argument alone as pointer (``path``).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import gc
import itertools
import json
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Hashable, Iterator, Literal, Mapping, Sequence

import numpy as np
import orjson
import pandas as pd

from . import refs
from ._exceptions import BatchValidationError, Problem
from .model import METHODS, Operation, header_problems, parse_header_lines, path_problem

__all__ = ["from_frame"]

_METHODS = frozenset(METHODS)
#: a path segment that needs no percent-encoding and cannot form '.', '..' or
#: an empty segment, so a template filled with it stays as safe as the template.
_SIMPLE_SEGMENT = r"[A-Za-z0-9_~-]+"
_simple_segment = re.compile(_SIMPLE_SEGMENT + r"\Z").match
#: a full path that path_problem() would accept without having to decode it:
#: no '%', '\', '$', space or control character, not '//' at the start. A '/.'
#: anywhere (a '.' or '..' segment, maybe) is tested separately.
_PLAIN_PATH = r"/(?:[^/\\%$\x00-\x20\x7f][^\\%$\x00-\x20\x7f]*)?"
_plain_path = re.compile(_PLAIN_PATH + r"\Z").match
#: a placeholder: braces around a column name; quotes and ':' are excluded so
#: that JSON text (``{"a": 1}``) is never mistaken for one.
_PLACEHOLDER = re.compile(r"\{([^{}\"':\n]+)\}")


# ---------------------------------------------------------------- helpers


def _at(label: Any, column: Any) -> str:
    return f"row {label!r}, column {column}"


@contextmanager
def _gc_paused() -> Iterator[None]:
    # A million fresh dicts and objects, none of them cyclic, would make the
    # cyclic collector rescan the growing heap again and again (it doubles the
    # time); it runs once, normally, afterwards.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Problems:
    """Problems, each reported once: those of whole arguments first, then by row."""

    def __init__(self) -> None:
        self._found: list[tuple[int, Problem]] = []
        self._seen: set[Problem] = set()

    def add(self, pointer: str, message: str, pos: int = -1) -> None:
        p = Problem(pointer, message)
        if p not in self._seen:
            self._seen.add(p)
            self._found.append((pos, p))

    @property
    def items(self) -> list[Problem]:
        # Stable: within a row, in the order the checks found them.
        return [p for _pos, p in sorted(self._found, key=lambda found: found[0])]

    def __bool__(self) -> bool:
        return bool(self._found)


# ---------------------------------------------------------------- values


def _is_null(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float):  # np.float64 included
        return v != v
    if isinstance(v, np.floating):
        return bool(np.isnan(v))
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(v))
    if isinstance(v, decimal.Decimal):
        return v.is_nan()
    return False


def _json_value(v: Any, omit: bool) -> Any:
    """``v`` as plain JSON-able Python (not null at the top; nested nulls handled)."""
    t = type(v)
    if t is str or t is int or t is bool:
        return v
    if t is float:
        return None if v != v else v
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            key = k if type(k) is str else str(_json_value(k, omit))
            if _is_null(x):
                if not omit:
                    out[key] = None
            else:
                out[key] = _json_value(x, omit)
        return out
    if isinstance(v, (list, tuple)):
        # A list keeps its length: a null item stays null whatever ``nulls`` says.
        return [None if _is_null(x) else _json_value(x, omit) for x in v]
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "biu":
            return v.tolist()  # already Python ints and bools, and fast
        # tolist() would turn datetime64[ns] into bare integers: go item by item.
        items = v.tolist() if v.dtype.kind == "f" else list(v)
        return [None if _is_null(x) else _json_value(x, omit) for x in items]
    if isinstance(v, np.generic):
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, np.floating):
            f = float(v)
            return None if f != f else f
        if isinstance(v, np.str_):
            return str(v)
        if isinstance(v, np.datetime64):
            return pd.Timestamp(v).isoformat()
        if isinstance(v, np.timedelta64):
            return pd.Timedelta(v).isoformat()
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return None if v != v else float(v)
    if isinstance(v, (_dt.date, _dt.time)):  # datetime and pd.Timestamp too
        return v.isoformat()
    if isinstance(v, pd.Timedelta):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return pd.Timedelta(v).isoformat()
    if isinstance(v, decimal.Decimal):
        return None if v.is_nan() else float(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, pd.Period):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError("bytes that are not UTF-8 text cannot be sent as JSON") from None
    raise TypeError(f"a value of type {type(v).__name__} cannot be sent as JSON")


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
        values = s.tolist()
        nulls = s.isna().to_numpy(dtype=bool)
        has_nulls = bool(nulls.any())
        if has_nulls and not omit:
            for i in np.flatnonzero(nulls).tolist():
                values[i] = None
        ref_rows = np.flatnonzero(s.str.contains("${", regex=False).to_numpy(dtype=bool, na_value=False)).tolist()
        return _Column(values, nulls if has_nulls else None, [], ref_rows)
    if isinstance(dt, pd.CategoricalDtype):
        cats = _json_column(pd.Series(dt.categories), omit)
        codes = s.cat.codes.to_numpy()
        nulls = codes < 0
        if cats.nulls is not None:
            nulls |= cats.nulls[codes] & (codes >= 0)
        cat_values = cats.values + [None]  # code -1 picks the trailing None
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
    dt = s.dtype
    if isinstance(dt, np.dtype) and dt.kind in "iu":
        return list(map(str, s.tolist())), []
    if isinstance(dt, np.dtype) and dt.kind == "b":
        return ["true" if v else "false" for v in s.tolist()], []
    if isinstance(dt, pd.StringDtype):
        values = s.tolist()
        if s.hasnans:
            values = [v if type(v) is str else None for v in values]
        return values, []
    col = _json_column(s, omit=False)
    values = [v if v is None or type(v) is str else refs.as_text(v) for v in col.values]
    return values, col.bad


def _is_plain_text_column(s: pd.Series) -> bool:
    return isinstance(s.dtype, np.dtype) and s.dtype.kind in "iub"


# ---------------------------------------------------------------- templates


@dataclass(frozen=True)
class _Slot:
    column: str


@lru_cache(maxsize=512)
def _parse_template(text: str) -> tuple[Any, ...] | None:
    """Literal text and :class:`_Slot` placeholders, or None when ``text`` has none.

    References (``${result=…}``) and escaped ``$${`` are kept as literal text;
    ``{{`` and ``}}`` write literal braces.

    >>> _parse_template("/companies/{company}/staff")
    ('/companies/', _Slot(column='company'), '/staff')
    >>> _parse_template("/companies/7") is None
    True
    """
    parts: list[Any] = []
    buf: list[str] = []
    i, n = 0, len(text)
    found = False
    while i < n:
        c = text[i]
        if c == "$" and text.startswith("$${", i):
            buf.append("$${")
            i += 3
        elif c == "$" and text.startswith("${", i):
            end = refs._end_of_query(text, i + 2)
            if end < 0:
                buf.append(text[i:])
                break
            buf.append(text[i : end + 1])
            i = end + 1
        elif c == "{" and text.startswith("{{", i):
            buf.append("{")
            i += 2
        elif c == "}" and text.startswith("}}", i):
            buf.append("}")
            i += 2
        elif c == "{" and (m := _PLACEHOLDER.match(text, i)):
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_Slot(m.group(1)))
            found = True
            i = m.end()
        else:
            buf.append(c)
            i += 1
    if not found:
        return None
    if buf:
        parts.append("".join(buf))
    return tuple(parts)


@dataclass
class _Source:
    """Where one argument's values come from."""

    kind: str  # "absent" | "column" | "template" | "constant"
    arg: str  # the argument's name, for pointers
    column: Hashable = None
    template: tuple[Any, ...] = ()
    value: Any = None
    broken: bool = False  # cannot be computed (a problem was reported)


class _Frame:
    """The frame being read, with what every step needs to report problems."""

    def __init__(self, df: pd.DataFrame, nulls: str) -> None:
        self.df = df
        self.n = len(df)
        self.labels: list[Any] = df.index.tolist()
        self.omit = nulls == "omit"
        self.problems = _Problems()
        # Placeholders are text; they match column labels that are not
        # strings (``{0}``) by their text too.
        self.by_text: dict[str, Hashable] = {}
        for c in df.columns:
            self.by_text.setdefault(str(c), c)
        self._json_cache: dict[Hashable, _Column] = {}
        self._text_cache: dict[Hashable, tuple[list[str | None], list[tuple[int, str]]]] = {}
        #: (position or None for every row, column for the pointer, text or JSON value holding references)
        self.ref_hits: list[tuple[int | None, Any, Any]] = []

    def at(self, pos: int, column: Any) -> str:
        return _at(self.labels[pos], column)

    def add(self, pos: int, column: Any, message: str) -> None:
        self.problems.add(self.at(pos, column), message, pos)

    def has(self, column: Hashable) -> bool:
        try:
            return column in self.df.columns
        except TypeError:  # unhashable argument, e.g. a dict constant
            return False

    def series(self, column: Hashable) -> pd.Series:
        s = self.df[column]
        if isinstance(s, pd.DataFrame):
            raise _Duplicate(column)
        return s

    def json_column(self, column: Hashable) -> _Column:
        col = self._json_cache.get(column)
        if col is None:
            col = self._json_cache[column] = _json_column(self.series(column), self.omit)
            for i, message in col.bad:
                self.add(i, column, message)
        return col

    def texts(self, column: Hashable) -> list[str | None]:
        got = self._text_cache.get(column)
        if got is None:
            got = self._text_cache[column] = _texts(self.series(column))
            for i, message in got[1]:
                self.add(i, column, message)
        return got[0]

    def resolve(self, arg_name: str, arg: Any, *, required: bool = False) -> _Source:
        """Apply the rule: an existing column, else a template, else a constant."""
        if arg is False and not required:
            return _Source("absent", arg_name)
        if arg is None:
            if self.has(arg_name):
                return self._column_source(arg_name, arg_name)
            if required:
                self.problems.add(arg_name, f"the frame has no {arg_name!r} column; pass {arg_name}= (a column, a template or a constant)")
                return _Source("absent", arg_name, broken=True)
            return _Source("absent", arg_name)
        if isinstance(arg, str):
            if self.has(arg):
                return self._column_source(arg_name, arg)
            template = _parse_template(arg)
            if template is None:
                return _Source("constant", arg_name, value=arg)
            broken = False
            resolved = []
            for part in template:
                if isinstance(part, _Slot):
                    column = part.column if self.has(part.column) else self.by_text.get(part.column, _MISSING)
                    if column is _MISSING:
                        self.problems.add(arg_name, f"template names column {part.column!r} which the frame does not have")
                        broken = True
                        continue
                    if self._duplicated(arg_name, column):
                        broken = True
                        continue
                    part = _Slot(column)
                resolved.append(part)
            return _Source("template", arg_name, template=tuple(resolved), broken=broken)
        return _Source("constant", arg_name, value=arg)

    def _column_source(self, arg_name: str, column: Hashable) -> _Source:
        if self._duplicated(arg_name, column):
            return _Source("absent", arg_name, broken=True)
        return _Source("column", arg_name, column=column)

    def _duplicated(self, arg_name: str, column: Hashable) -> bool:
        if isinstance(self.df[column], pd.DataFrame):
            self.problems.add(arg_name, f"column {column!r} appears more than once in the frame")
            return True
        return False

    def fill(self, source: _Source, encode: bool) -> tuple[list[str | None], list[tuple[int, Any]]]:
        """Fill a template per row. Also the rows whose values need a full path check.

        ``encode`` percent-encodes each value as a path segment; a value that
        holds references keeps them verbatim (the server fills them in).
        """
        template = source.template
        acc: list[str] | None = None
        prefix = ""
        empty_rows: list[tuple[int, Any]] = []
        check_rows: list[tuple[int, Any]] = []
        for part in template:
            if not isinstance(part, _Slot):
                if acc is None:
                    prefix += part
                else:
                    acc = [a + part for a in acc]
                continue
            column = part.column
            values = self.texts(column)
            if encode:
                values = self._encoded(column, values, check_rows)
            if None in values:
                empty_rows.extend((i, column) for i, v in enumerate(values) if v is None)
                values = [v if v is not None else "" for v in values]
            if acc is None:
                acc = [prefix + v for v in values] if prefix else values
            else:
                acc = [a + v for a, v in zip(acc, values)]
        if acc is None:  # only possible for a broken template
            acc = [prefix] * self.n
        out: list[str | None] = acc  # type: ignore[assignment]
        if empty_rows:
            out = list(acc)
            for i, column in empty_rows:
                self.add(i, column, f"is empty, but the {source.arg} template needs it")
                out[i] = None
        return out, check_rows

    def _encoded(self, column: Hashable, values: list[str | None], check_rows: list[tuple[int, Any]]) -> list[str | None]:
        s = self.series(column)
        if _is_plain_text_column(s):
            return values  # digits, '-', 'true', 'false': nothing to encode
        if isinstance(s.dtype, pd.StringDtype):
            simple = s.str.fullmatch(_SIMPLE_SEGMENT).to_numpy(dtype=bool, na_value=True)
            todo = np.flatnonzero(~simple).tolist()
        else:
            todo = [i for i, v in enumerate(values) if v is not None and not _simple_segment(v)]
        if not todo:
            return values
        values = list(values)
        # Values repeat (one company, many staff): encode each distinct one once.
        memo: dict[str, str] = {}
        for i in todo:
            v = values[i]
            if v is None:
                continue
            check_rows.append((i, column))
            done = memo.get(v)
            if done is not None:
                values[i] = done
                continue
            if "${" in v:
                try:
                    parts = refs.parse(v)
                except refs.RefSyntaxError as exc:
                    self.add(i, column, str(exc))
                    continue
                if any(isinstance(p, refs.Ref) for p in parts):
                    # The reference is filled in by the server, which encodes
                    # its value; only the literal text around it is ours to encode.
                    self.ref_hits.append((i, column, v))
                    values[i] = "".join(refs.segment(p) if isinstance(p, str) else p.text for p in parts)
                    continue
            values[i] = memo[v] = refs.segment(v)
        return values

    def values_of(self, source: _Source) -> list[str | None] | None:
        """Per-row text of a column or template source (not encoded)."""
        if source.broken or source.kind in ("absent", "constant"):
            return None
        if source.kind == "column":
            return self.texts(source.column)
        return self.fill(source, encode=False)[0]


_MISSING = object()


class _Duplicate(Exception):
    pass


# ---------------------------------------------------------------- from_frame parts


def _methods(fr: _Frame, method: Any) -> list[str] | str | None:
    source = fr.resolve("method", method, required=True)
    if source.broken:
        return None
    if source.kind == "constant":
        m = source.value
        if not isinstance(m, str) or m.upper() not in _METHODS:
            fr.problems.add("method", f"unknown method {m!r}; use one of {', '.join(METHODS)}")
            return None
        return m.upper()
    values = fr.values_of(source)
    if values is None:
        return None
    pointer_col = source.column if source.kind == "column" else "method"
    # Few distinct methods: check and upper-case each once.
    upper: dict[str | None, str | None] = {}
    for m in set(values):
        if m is None:
            upper[m] = None
        elif m.upper() in _METHODS:
            upper[m] = m.upper()
        else:
            upper[m] = None
    bad = {m for m, u in upper.items() if u is None}
    if bad:
        for i, m in enumerate(values):
            if m in bad:
                if m is None or not m.strip():
                    fr.add(i, pointer_col, "is required: one of " + ", ".join(METHODS))
                else:
                    fr.add(i, pointer_col, f"unknown method {m!r}; use one of {', '.join(METHODS)}")
    return [upper[m] for m in values]


def _paths(fr: _Frame, path: Any) -> list[str | None] | str | None:
    source = fr.resolve("path", path, required=True)
    if source.broken:
        return None
    if source.kind == "constant":
        p = source.value
        if not isinstance(p, str) or not p:
            fr.problems.add("path", "is required and must be a string such as '/api/2.1/scheduling/companies'")
            return None
        message = _shape_problem(p)
        if message:
            fr.problems.add("path", message)
            return None
        if "${" in p:
            fr.ref_hits.append((None, "path", p))
        return p
    if source.kind == "column":
        return _path_column(fr, source.column)
    # A template: checked once, with each placeholder standing for a plain
    # segment; then only the rows whose values could change that verdict.
    shape = "".join("x" if isinstance(p, _Slot) else p for p in source.template)
    message = _shape_problem(shape)
    if message:
        fr.problems.add("path", f"the template {message}")
        return None
    literal = "".join(p for p in source.template if not isinstance(p, _Slot))
    if "${" in literal:
        fr.ref_hits.append((None, "path", literal))
    paths, check_rows = fr.fill(source, encode=True)
    if "%" in literal:
        # A '%' in the template could join a value into an escape ('%2' + 'E'
        # reads as '.'): no value is harmless then, check them all.
        first_slot = next(p.column for p in source.template if isinstance(p, _Slot))
        check_rows = [(i, first_slot) for i in range(fr.n)]
    verdicts: dict[str, str | None] = {}
    for i, column in check_rows:
        p = paths[i]
        if p is None:
            continue
        message = verdicts[p] if p in verdicts else verdicts.setdefault(p, _shape_problem(p))
        if message:
            fr.add(i, column, f"makes the path {p!r} unsafe: it {message}")
    return paths


def _shape_problem(path: str) -> str | None:
    # A reference stands for one percent-encoded segment once resolved.
    if "${" not in path:
        return path_problem(path)
    try:
        parts = refs.parse(path)
    except refs.RefSyntaxError as exc:
        return str(exc)
    return path_problem("".join(p if isinstance(p, str) else "x" for p in parts))


def _path_column(fr: _Frame, column: Hashable) -> list[str | None]:
    s = fr.series(column)
    values = s.tolist()
    if isinstance(s.dtype, pd.StringDtype):
        plain = s.str.fullmatch(_PLAIN_PATH).to_numpy(dtype=bool, na_value=False) & ~s.str.contains(
            "/.", regex=False
        ).to_numpy(dtype=bool, na_value=True)
        todo = np.flatnonzero(~plain).tolist()
    else:
        todo = [i for i, v in enumerate(values) if type(v) is not str or not _plain_path(v) or "/." in v]
    for i in todo:
        v = values[i]
        if not isinstance(v, str):
            if _is_null(v):
                fr.add(i, column, "is required: a path such as '/api/2.1/scheduling/companies'")
            else:
                fr.add(i, column, f"must be a string, not {type(v).__name__}")
            values[i] = None
            continue
        if not v.strip():
            fr.add(i, column, "is required: a path such as '/api/2.1/scheduling/companies'")
            values[i] = None
            continue
        message = _shape_problem(v)
        if message:
            fr.add(i, column, message)
        elif "${" in v:
            fr.ref_hits.append((i, column, v))
    return values


def _names(fr: _Frame, name: Any) -> tuple[list[str | None] | None, _Source]:
    source = fr.resolve("name", name)
    if source.broken:
        return None, source
    if source.kind == "absent":
        return None, source
    if source.kind == "constant":
        value = source.value
        if not isinstance(value, str) or not refs.NAME_PATTERN.match(value):
            fr.problems.add("name", f"{value!r} is not a valid name: use letters, digits, '_', '.', '-'")
            source.broken = True
            return None, source
        # Every row the same name: only a one-row frame can use it.
        return [value] * fr.n, source
    values = fr.values_of(source)
    if values is None:
        return None, source
    pointer_col = source.column if source.kind == "column" else "name"
    bad = {v for v in set(values) if v is not None and not refs.NAME_PATTERN.match(v)}
    if bad:
        for i, v in enumerate(values):
            if v in bad:
                fr.add(i, pointer_col, f"{v!r} is not a valid name: use letters, digits, '_', '.', '-'")
    return values, source


def _parents(fr: _Frame, parent: Any) -> tuple[list[str | None] | None, _Source]:
    source = fr.resolve("parent", parent)
    if source.broken:
        return None, source
    if source.kind == "absent":
        return None, source
    if source.kind == "constant":
        return [source.value if isinstance(source.value, str) else str(source.value)] * fr.n, source
    values = fr.values_of(source)
    return values, source


def _headers(fr: _Frame, headers: Any) -> list[dict[str, str] | None] | None:
    source = fr.resolve("headers", headers)
    if source.broken:
        return None
    if source.kind == "absent":
        return None
    if source.kind == "constant":
        got = _parse_headers(source.value, fr.problems, "headers")
        if got is None:
            return None
        if any("${" in v for v in got.values() if isinstance(v, str)):
            fr.ref_hits.append((None, "headers", got))
        return [dict(got) for _ in range(fr.n)]
    if source.kind == "template":
        cells: list[Any] = fr.fill(source, encode=False)[0]
        pointer_col: Any = "headers"
    else:
        pointer_col = source.column
        cells = fr.series(source.column).tolist()
    out: list[dict[str, str] | None] = []
    # Header cells repeat a lot (one token for many rows): parse each text once.
    cache: dict[str, tuple[dict[str, str] | None, list[str]]] = {}
    for i, cell in enumerate(cells):
        if isinstance(cell, str):
            got = cache.get(cell)
            if got is None:
                problems = _Problems()
                parsed = _parse_headers(cell, problems, "")
                got = cache[cell] = (parsed, [p.message for p in problems.items])
            parsed, messages = got
            for message in messages:
                fr.add(i, pointer_col, message)
            parsed = dict(parsed) if parsed is not None else None
        elif not isinstance(cell, (Mapping, list, np.ndarray)) and _is_null(cell):
            parsed = None
        else:
            problems = _Problems()
            parsed = _parse_headers(cell, problems, "")
            for p in problems.items:
                fr.add(i, pointer_col, p.message)
        if parsed and any("${" in v for v in parsed.values() if isinstance(v, str)):
            fr.ref_hits.append((i, pointer_col, parsed))
        out.append(parsed or None)
    return out


def _parse_headers(value: Any, problems: _Problems, pointer: str) -> dict[str, str] | None:
    """A dict, JSON text of an object, or ``Name: value`` lines, checked."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                problems.add(pointer, f"is not valid JSON: {exc}")
                return None
            if not isinstance(value, dict):
                problems.add(pointer, "must be an object or 'Name: value' lines")
                return None
        else:
            parsed, bad_lines = parse_header_lines(text)
            for line in bad_lines:
                problems.add(pointer, f"line {line!r} is not of the form 'Name: value'")
            value = parsed
    if not isinstance(value, Mapping):
        problems.add(pointer, f"must be an object or 'Name: value' lines, not {type(value).__name__}")
        return None
    out: dict[str, str] = {}
    for k, v in value.items():
        for _sub, message in header_problems(str(k), v):
            problems.add(pointer, f"{k}: {message}" if message.startswith("header value") else message)
        out[str(k)] = v
    return out


# ---------------------------------------------------------------- bodies


def _bodies(fr: _Frame, body: Any) -> list[Any] | None:
    if body is False:
        return None
    if body is None:
        if fr.has("body"):
            return _body_column(fr, "body")
        return None
    if callable(body):
        return _body_callable(fr, body)
    if isinstance(body, str):
        if fr.has(body):
            return _body_column(fr, body)
        fr.problems.add("body", f"names column {body!r} which the frame does not have")
        return None
    if isinstance(body, Mapping):
        fields = [(str(k), v) for k, v in body.items()]
    elif isinstance(body, (list, tuple, pd.Index)):
        fields = [(str(c), c) for c in body]
    else:
        raise TypeError("body must be None, a column name, a list of columns, a mapping {field: column} or a callable")
    tree: dict[str, Any] = {}
    ok = True
    for field_name, column in fields:
        if not fr.has(column):
            fr.problems.add("body", f"names column {column!r} which the frame does not have")
            ok = False
            continue
        keys = field_name.split(".")
        if not all(keys):
            fr.problems.add("body", f"field {field_name!r} has an empty part")
            ok = False
            continue
        node = tree
        for key in keys[:-1]:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                fr.problems.add("body", f"field {field_name!r} nests inside {key!r}, which is a value")
                ok = False
                break
            node = nxt
        else:
            if keys[-1] in node:
                fr.problems.add("body", f"field {field_name!r} is given twice, or is both a value and an object")
                ok = False
            else:
                node[keys[-1]] = _Leaf(column)
    if not ok:
        return None
    try:
        rows, _empty = _build_objects(fr, tree)
    except _Duplicate as exc:
        fr.problems.add("body", f"column {exc.args[0]!r} appears more than once in the frame")
        return None
    return rows


@dataclass(frozen=True)
class _Leaf:
    column: Hashable


def _build_objects(fr: _Frame, tree: dict[str, Any]) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """One dict per row for ``tree``, built a field at a time over all rows.

    Also which rows ended up empty because every field was an omitted null
    (a nested object that is empty is then left out of its parent).
    """
    rows: list[dict[str, Any]] | None = None
    removals: list[tuple[str, np.ndarray]] = []
    for key, node in tree.items():
        if isinstance(node, _Leaf):
            col = fr.json_column(node.column)
            values = col.values
            nulls = col.nulls if fr.omit else None
            for i in col.ref_rows:
                fr.ref_hits.append((i, node.column, values[i]))
        else:
            values, nulls = _build_objects(fr, node)
        if rows is None:
            # The first field makes the dicts, the others are added in place:
            # as fast as a dict display, for any number of fields.
            rows = [{key: v} for v in values]
        else:
            for d, v in zip(rows, values):
                d[key] = v
        if nulls is not None:
            removals.append((key, np.flatnonzero(nulls)))
    if rows is None:
        return [{} for _ in range(fr.n)], None
    if not removals:
        return rows, None
    removed = np.zeros(fr.n, dtype=np.int64)
    for key, positions in removals:
        for i in positions.tolist():
            del rows[i][key]
        removed[positions] += 1
    empty = removed == len(tree)
    return rows, (empty if empty.any() else None)


def _body_column(fr: _Frame, column: Hashable) -> list[Any] | None:
    try:
        cells = fr.series(column).tolist()
    except _Duplicate:
        fr.problems.add("body", f"column {column!r} appears more than once in the frame")
        return None
    out: list[Any] = []
    append = out.append
    for i, cell in enumerate(cells):
        if isinstance(cell, (str, bytes, bytearray)):
            text = cell if isinstance(cell, str) else bytes(cell).decode("utf-8", "replace")
            if not text.strip():
                append(None)
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                try:
                    # The standard parser takes what orjson refuses (NaN,
                    # integers over 64 bits) and explains what it cannot take.
                    value = json.loads(text)
                except ValueError as exc:
                    fr.add(i, column, f"is not valid JSON: {exc}")
                    append(None)
                    continue
            if "${" in text:
                fr.ref_hits.append((i, column, value))
            append(value)
            continue
        if not isinstance(cell, (Mapping, list, tuple, np.ndarray)) and _is_null(cell):
            append(None)
            continue
        try:
            value = _json_value(cell, fr.omit)
        except TypeError as exc:
            fr.add(i, column, str(exc))
            append(None)
            continue
        if _may_hold_refs(value):
            fr.ref_hits.append((i, column, value))
        append(value)
    return out


def _body_callable(fr: _Frame, fn: Callable[[dict[Hashable, Any]], Any]) -> list[Any]:
    records = fr.df.to_dict("records")
    out: list[Any] = []
    for i, row in enumerate(records):
        try:
            value = fn(row)
        except Exception as exc:  # reported with its row, like every other problem
            fr.add(i, "body", f"the body function raised {type(exc).__name__}: {exc}")
            out.append(None)
            continue
        if value is None or (not isinstance(value, (Mapping, list, tuple, np.ndarray)) and _is_null(value)):
            out.append(None)
            continue
        try:
            value = _json_value(value, fr.omit)
        except TypeError as exc:
            fr.add(i, "body", str(exc))
            out.append(None)
            continue
        if _may_hold_refs(value):
            fr.ref_hits.append((i, "body", value))
        out.append(value)
    return out


# ---------------------------------------------------------------- names, parents, references


def _check_names(fr: _Frame, names: list[str | None], source: _Source) -> dict[str, int]:
    pointer_col = source.column if source.kind == "column" else "name"
    first: dict[str, int] = {}
    setdefault = first.setdefault
    for i, nm in enumerate(names):
        if nm is None:
            continue
        j = setdefault(nm, i)
        if j != i:
            fr.add(i, pointer_col, f"duplicate name {nm!r} (first used at row {fr.labels[j]!r})")
    return first


def _link_parents(
    fr: _Frame, parents: list[str | None], source: _Source, first: dict[str, int]
) -> list[int]:
    """The parent position of each row (-1 at the top)."""
    pointer_col = source.column if source.kind == "column" else "parent"
    up = [-1] * fr.n
    for i, p in enumerate(parents):
        if p is None:
            continue
        j = first.get(p, -1)
        if j < 0:
            fr.add(i, pointer_col, f"parent {p!r} is the name of no row")
        elif j == i:
            fr.add(i, pointer_col, f"parent {p!r} is this row itself")
        elif j > i:
            fr.add(i, pointer_col, f"parent {p!r} is row {fr.labels[j]!r}, which comes later; a parent row must come earlier")
        else:
            up[i] = j
    return up


def _run_order(up: list[int]) -> list[int]:
    """Each row's place in the order operations run: depth first, children after their parent."""
    n = len(up)
    children: list[list[int]] = [[] for _ in range(n)]
    tops: list[int] = []
    for i, j in enumerate(up):
        (children[j] if j >= 0 else tops).append(i)
    order = [0] * n
    k = 0
    stack = tops[::-1]
    while stack:
        i = stack.pop()
        order[i] = k
        k += 1
        stack.extend(children[i][::-1])
    return order


def _check_refs(fr: _Frame, first: dict[str, int], order: list[int] | None) -> None:
    for pos, column, value in fr.ref_hits:
        try:
            found = list(refs.iter_refs(value))
        except refs.RefSyntaxError as exc:
            if pos is None:
                fr.problems.add(str(column), str(exc))
            else:
                fr.add(pos, column, str(exc))
            continue
        for r in found:
            j = first.get(r.name)
            if j is None:
                message = f"{r.text} refers to {r.name!r}, which no row is named"
                if pos is None:
                    fr.problems.add(str(column), message)
                else:
                    fr.add(pos, column, message)
                continue
            # A reference in a template or constant is in every row.
            rows = range(fr.n) if pos is None else (pos,)
            for i in rows:
                if j == i:
                    fr.add(i, column, f"{r.text} refers to this row's own result")
                elif (order[j] > order[i]) if order is not None else j > i:
                    fr.add(i, column, f"{r.text} refers to row {fr.labels[j]!r}, which runs later (a forward reference)")


# ---------------------------------------------------------------- from_frame


def from_frame(
    df: pd.DataFrame,
    method: str | None = None,
    path: str | None = None,
    body: Sequence[Hashable] | Mapping[str, Hashable] | Callable[[dict[Hashable, Any]], Any] | str | Literal[False] | None = None,
    name: str | Literal[False] | None = None,
    headers: str | Mapping[str, str] | Literal[False] | None = None,
    parent: str | Literal[False] | None = None,
    *,
    nulls: str = "omit",
) -> list[Operation]:
    """One :class:`~batchnb.model.Operation` per row of ``df``, checked all at once.

    ``method``, ``path``, ``name``, ``headers`` and ``parent`` are each a
    column name, a template such as ``"/companies/{company}/staff"`` (values
    go in per row; in a path each is percent-encoded as one segment, unless
    it is a reference), or a constant; None uses the column of that name.
    Numbers go into text as their JSON text (a float column gives ``7.0``).
    ``body`` is None (the ``body`` column: objects, or JSON text, which is
    parsed), the name of another such column, a list of columns, a mapping
    ``{"field.sub": column}`` or a function of the row (a dict). Null cells
    are left out of a body, and so is a nested object left empty by them
    (``nulls="null"`` sends them as null instead). Rows with a ``parent``
    become the children of the earlier row of that ``name``. Each
    operation's ``row`` is its index label.

    ``False`` for ``name``, ``headers``, ``parent`` or ``body`` ignores the
    column of that name; a column the body takes a field from is not also
    used as the operations' names, headers or parents unless asked for.

    >>> df = pd.DataFrame({"site": ["a b/c", "x"], "city": ["Oslo", None], "n": [1, 2]})
    >>> ops = from_frame(df, method="POST", path="/sites/{site}/staff",
    ...                  body={"address.city": "city", "count": "n"})
    >>> ops[0].to_wire()
    {'method': 'POST', 'path': '/sites/a%20b%2Fc/staff', 'body': {'address': {'city': 'Oslo'}, 'count': 1}}
    >>> ops[1].body
    {'count': 2}

    Every problem found (unknown method, missing path, bad JSON, unknown or
    forward reference, duplicate name, …) is raised together as one
    :class:`~batchnb.BatchValidationError` with pointers like
    ``row 17, column method``.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"from_frame needs a pandas DataFrame, not {type(df).__name__}")
    if nulls not in ("omit", "null"):
        raise ValueError(f"nulls must be 'omit' or 'null', not {nulls!r}")
    with _gc_paused():
        return _from_frame(df, method, path, body, name, headers, parent, nulls)


def _from_frame(
    df: pd.DataFrame, method: Any, path: Any, body: Any, name: Any, headers: Any, parent: Any, nulls: str
) -> list[Operation]:
    fr = _Frame(df, nulls)
    n = fr.n
    # A column the body names as one of its fields is data: a frame of
    # companies has a 'name' column that is no operation name. Asked for
    # explicitly (name="name"), it is both.
    if isinstance(body, (Mapping, list, tuple, pd.Index)):
        fields = set(body.values() if isinstance(body, Mapping) else body)
        name = False if name is None and "name" in fields else name
        headers = False if headers is None and "headers" in fields else headers
        parent = False if parent is None and "parent" in fields else parent
    methods = _methods(fr, method)
    paths = _paths(fr, path)
    names, name_source = _names(fr, name)
    parent_values, parent_source = _parents(fr, parent)
    header_values = _headers(fr, headers)
    bodies = _bodies(fr, body)

    up: list[int] | None = None
    # Names and parents must be known to judge parents and references; when
    # they are not, the problems already reported say why.
    if not name_source.broken:
        first = _check_names(fr, names, name_source) if names is not None else {}
        if parent_values is not None:
            up = _link_parents(fr, parent_values, parent_source, first)
        if not parent_source.broken:
            order = _run_order(up) if up is not None and any(j >= 0 for j in up) else None
            _check_refs(fr, first, order)
    if fr.problems:
        raise BatchValidationError(fr.problems.items)
    if n == 0:
        return []

    method_iter = itertools.repeat(methods) if isinstance(methods, str) else methods
    path_iter = itertools.repeat(paths) if isinstance(paths, str) else paths
    body_iter = itertools.repeat(None) if bodies is None else bodies
    name_iter = itertools.repeat(None) if names is None else names
    header_iter = itertools.repeat(None) if header_values is None else header_values
    # Operation() would run __post_init__ per row to redo what was just done
    # column-wise (upper-case, parse headers, convert children); setting the
    # instance dict directly is several times faster on a million rows.
    new = object.__new__
    ops: list[Operation] = []
    append = ops.append
    for m, p, b, nm, h, label in zip(method_iter, path_iter, body_iter, name_iter, header_iter, fr.labels):
        op = new(Operation)
        op.__dict__ = {"method": m, "path": p, "body": b, "name": nm, "headers": h, "requests": [], "row": label}
        append(op)
    if up is None or all(j < 0 for j in up):
        return ops
    top: list[Operation] = []
    for op, j in zip(ops, up):
        if j < 0:
            top.append(op)
        else:
            ops[j].requests.append(op)
    return top
