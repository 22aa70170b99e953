"""The frame being read: where each argument's values come from, and the problems found."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import _refs
from .._exceptions import Problem
from ._templates import _parse_template, _simple_segment, _Slot
from ._values import _Coded, _coded_texts, _Column, _is_plain_text_column, _json_column, _object_array, _texts


def _at(label: Any, column: Any, line: str = "") -> str:
    return f"row {label!r}{line}, column {column}"


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
        source = df.attrs.get("batchnb.csv")
        # Lines of the file the frame was read from, while it keeps the rows it was read with.
        self._csv = source if source is not None and df.index.equals(source.index) else None
        self.omit = nulls == "omit"
        self.problems = _Problems()
        # Placeholders are text; they match column labels that are not
        # strings (``{0}``) by their text too.
        self.by_text: dict[str, Hashable] = {}
        for c in df.columns:
            self.by_text.setdefault(str(c), c)
        self._json_cache: dict[Hashable, _Column] = {}
        self._coded_cache: dict[Hashable, _Coded] = {}
        self._text_cache: dict[Hashable, list[str | None]] = {}
        #: (position or None for every row, column for the pointer, text or JSON value holding references)
        self.ref_hits: list[tuple[int | None, Any, Any]] = []

    def at(self, pos: int, column: Any) -> str:
        line = f" (line {self._csv.line_of(pos)} of {self._csv.name})" if self._csv is not None else ""
        return _at(self.labels[pos], column, line)

    def no_column(self, column: Hashable) -> str:
        """Why ``column`` cannot be used: the frame has no such column; which it has, and the nearest."""
        names = [str(c) for c in self.df.columns]
        close = difflib.get_close_matches(str(column), names, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(repr(n) for n in names[:20]) + (", …" if len(names) > 20 else "")
        return f"the frame has no column {column!r}{hint} (it has {shown})"

    def add(self, pos: int, column: Any, message: str) -> None:
        self.problems.add(self.at(pos, column), message, pos)

    def judge(self, values: list[Any], rule: Callable[[Any], str | None], source: _Source) -> set[Any]:
        """Apply ``rule`` once per distinct value (values repeat a lot) and report every row that
        breaks it, at the source's column (or its argument); returns the values that break it."""
        verdicts = {v: rule(v) for v in set(values)}
        bad = {v: message for v, message in verdicts.items() if message}
        if bad:
            column = source.column if source.kind == "column" else source.arg
            for i, v in enumerate(values):
                if v in bad:
                    self.add(i, column, bad[v])
        return set(bad)

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

    def coded(self, column: Hashable) -> _Coded:
        """The column's text (None for nulls) as distinct values and a code per row."""
        got = self._coded_cache.get(column)
        if got is None:
            s = self.series(column)
            got = _coded_texts(s)
            if got is None:
                values, bad = _texts(s)
                for i, message in bad:
                    self.add(i, column, message)
                got = _Coded.of_rows(values)
            self._coded_cache[column] = got
        return got

    def texts(self, column: Hashable) -> list[str | None]:
        got = self._text_cache.get(column)
        if got is None:
            got = self._text_cache[column] = self.coded(column).per_row()
        return got

    def resolve(self, arg_name: str, arg: Any, *, required: bool = False) -> _Source:
        """Apply the rule: an existing column, else a template, else a constant."""
        if arg is False and not required:
            return _Source("absent", arg_name)
        if arg is None:
            if self.has(arg_name):
                return self._column_source(arg_name, arg_name)
            if required:
                self.problems.add(
                    arg_name, f"{self.no_column(arg_name)}; pass {arg_name}= (a column, a template or a constant)"
                )
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
                    column = part.column if self.has(part.column) else self.by_text.get(str(part.column), _MISSING)
                    if column is _MISSING:
                        self.problems.add(arg_name, f"the template {{{part.column}}}: {self.no_column(part.column)}")
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

    def fill(self, source: _Source, encode: bool) -> _Filled:
        """Fill a template per row, each distinct combination of values once.

        ``encode`` percent-encodes each value as a path segment; a value that
        holds references keeps them verbatim (the server fills them in).
        """
        slots: list[_Filled.Slot] = []
        pieces: list[Any] = []  # literal text, or the index of a slot
        for part in source.template:
            if not isinstance(part, _Slot):
                pieces.append(part)
                continue
            coded = self.coded(part.column)
            unsafe = None
            if encode:
                coded, unsafe = self._encoded(part.column, coded)
            pieces.append(len(slots))
            slots.append(_Filled.Slot(part.column, coded, unsafe))
        codes, firsts = _combine([slot.coded.codes for slot in slots], self.n)
        # The text of each combination, from the first row that has it.
        columns = [
            itertools.repeat(p)
            if isinstance(p, str)
            else (v or "" for v in _object_array(slots[p].coded.values)[slots[p].coded.codes[firsts]].tolist())
            for p in pieces
        ]
        texts = ["".join(parts) for parts in zip(*columns)] if slots else ["".join(pieces)]
        values: list[str | None] = _object_array(texts)[codes].tolist()
        empty = np.zeros(self.n, dtype=bool)
        for slot in slots:
            nulls = slot.coded.rows_where([v is None for v in slot.coded.values])
            for i in np.flatnonzero(nulls).tolist():
                self.add(i, slot.column, f"is empty, but the {source.arg} template needs it")
            empty |= nulls
        for i in np.flatnonzero(empty).tolist():
            values[i] = None
        return _Filled(values, texts, codes, slots, empty)

    def _encoded(self, column: Hashable, coded: _Coded) -> tuple[_Coded, np.ndarray | None]:
        """The column's values as path segments; also which values were not plain (their rows need a full path check)."""
        if _is_plain_text_column(self.series(column)):
            return coded, None  # digits, '-', 'true', 'false': nothing to encode
        unsafe = np.array([v is not None and not _simple_segment(v) for v in coded.values], dtype=bool)
        if not unsafe.any():
            return coded, unsafe
        values = list(coded.values)
        broken: dict[int, str] = {}
        with_refs: list[int] = []
        for k in np.flatnonzero(unsafe).tolist():
            v = values[k]
            if "${" in v:
                try:
                    parts = _refs.parse(v)
                except _refs.RefSyntaxError as exc:
                    broken[k] = str(exc)
                    continue
                if any(isinstance(p, _refs.Ref) for p in parts):
                    # The reference is filled in by the server, which encodes
                    # its value; only the literal text around it is ours to encode.
                    with_refs.append(k)
                    values[k] = "".join(_refs.segment(p) if isinstance(p, str) else p.text for p in parts)
                    continue
            values[k] = _refs.segment(v)
        if broken:
            rows = coded.rows_where([k in broken for k in range(len(values))])
            for i in np.flatnonzero(rows).tolist():
                self.add(i, column, broken[int(coded.codes[i])])
        if with_refs:
            rows = coded.rows_where(np.isin(np.arange(len(values)), with_refs))
            self.ref_hits.extend((i, column, coded.values[coded.codes[i]]) for i in np.flatnonzero(rows).tolist())
        return _Coded(coded.codes, values), unsafe

    def values_of(self, source: _Source) -> list[str | None] | None:
        """Per-row text of a column or template source (not encoded)."""
        if source.broken or source.kind in ("absent", "constant"):
            return None
        if source.kind == "column":
            return self.texts(source.column)
        return self.fill(source, encode=False).values


@dataclass
class _Filled:
    """A template filled for every row: the texts, and what a check of them needs."""

    @dataclass
    class Slot:
        column: Hashable
        coded: _Coded  # its values as filled in (encoded for a path)
        unsafe: np.ndarray | None  # per distinct value: not a plain segment, so the filled path needs a check

    values: list[str | None]  # per row; None where a slot was empty
    texts: list[str]  # per distinct combination of slot values
    codes: np.ndarray  # per row, its combination
    slots: list[Slot]
    empty: np.ndarray  # per row


def _combine(codes: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """One code per distinct combination of the given codes, and the first row of each."""
    if not codes:
        return np.zeros(n, dtype=np.intp), np.zeros(1, dtype=np.intp)
    combined = codes[0]
    for more in codes[1:]:
        # Renumbered after each step, so that the product stays below n * n.
        combined = pd.factorize(combined.astype(np.int64) * (int(more.max(initial=0)) + 1) + more)[0]
    size = int(combined.max(initial=-1)) + 1
    firsts = np.zeros(size, dtype=np.intp)
    # Written backwards, so that the first row of each code is the one left.
    firsts[combined[::-1]] = np.arange(n - 1, -1, -1)
    return combined, firsts


_MISSING = object()


class _Duplicate(Exception):
    pass
