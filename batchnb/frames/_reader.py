"""The frame being read: where each argument's values come from, and the problems found."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np
import pandas as pd

from .. import refs
from .._exceptions import Problem
from ._templates import _SIMPLE_SEGMENT, _Slot, _parse_template, _simple_segment
from ._values import _Column, _is_plain_text_column, _json_column, _texts

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
        self._text_cache: dict[Hashable, tuple[list[str | None], list[tuple[int, str]]]] = {}
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
        bad = {v for v, message in verdicts.items() if message}
        if bad:
            column = source.column if source.kind == "column" else source.arg
            for i, v in enumerate(values):
                if v in bad:
                    self.add(i, column, verdicts[v])
        return bad

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
                self.problems.add(arg_name, f"{self.no_column(arg_name)}; pass {arg_name}= (a column, a template or a constant)")
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
