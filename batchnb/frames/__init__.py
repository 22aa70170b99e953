"""DataFrame rows to operations: :func:`from_frame` (responses back to rows: :mod:`batchnb.results`).

``from_frame`` turns the rows of a DataFrame into :class:`~batchnb.Operation`
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

The package is split by role: ``_values`` (cells to JSON), ``_templates``,
``_reader`` (the frame being read and its problems), ``_builders`` (one per
argument); the rules themselves are ``batchnb._rules``'.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any, Literal, cast

import pandas as pd

from .. import _refs, _rules
from .._exceptions import BatchValidationError, Problem
from .._gc import gc_paused
from ..model import Operation
from ._builders import _bodies, _headers, _methods, _names, _parents, _paths
from ._csv import SkippedRowsWarning, read_csv
from ._reader import _Frame, _Source

__all__ = ["SkippedRowsWarning", "from_frame", "read_csv"]


# ---------------------------------------------------------------- names, parents, references


def _check_graph(
    fr: _Frame,
    names: list[str | None] | None,
    name_source: _Source,
    parents: list[str | None] | None,
    parent_source: _Source,
    known: Collection[str],
) -> list[int] | None:
    """Names, parents and references across rows, by ``batchnb._rules``; each row's parent position."""

    def describe(j: int) -> str:
        return f"row {fr.labels[j]!r}"

    def report(problems: list[_rules.GraphProblem]) -> None:
        for p in problems:
            if p.position is None:
                fr.problems.add(str(p.field), p.message)
            else:
                fr.add(p.position, p.field, p.message)

    row_names = names if names is not None else [None] * fr.n
    up = None
    if parents is not None:
        parent_column = parent_source.column if parent_source.kind == "column" else "parent"
        up, problems = _rules.link_parents(row_names, parents, field=parent_column, describe=describe)
        report(problems)
    if parent_source.broken:
        return up
    references: list[_rules.Reference] = []
    for pos, column, value in fr.ref_hits:
        try:
            references.extend(_rules.Reference(pos, column, r.name, r.text) for r in _refs.iter_refs(value))
        except _refs.RefSyntaxError as exc:
            if pos is None:
                fr.problems.add(str(column), str(exc))
            else:
                fr.add(pos, column, str(exc))
    if names is None and not references:
        return up
    name_column = name_source.column if name_source.kind == "column" else "name"
    report(
        _rules.check_graph(row_names, references, parents=up, known=known, name_field=name_column, describe=describe)
    )
    return up


# ---------------------------------------------------------------- from_frame


def from_frame(
    df: pd.DataFrame,
    method: str | None = None,
    path: str | None = None,
    body: Sequence[Hashable]
    | Mapping[str, Hashable]
    | Callable[[dict[Hashable, Any]], Any]
    | str
    | Literal[False]
    | None = None,
    name: str | Literal[False] | None = None,
    headers: str | Mapping[str, str] | Literal[False] | None = None,
    parent: str | Literal[False] | None = None,
    *,
    nulls: str = "omit",
    known: Collection[str] = (),
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
    operation's ``row`` is its index label. ``known`` are names that ran
    before (an earlier result): rows may reference them.

    ``False`` for ``name``, ``headers``, ``parent`` or ``body`` ignores the
    column of that name; a column the body takes a field from is not also
    used as the operations' names, headers or parents unless asked for.

    >>> import pandas as pd
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
        raise BatchValidationError([Problem("df", f"must be a pandas DataFrame, not {type(df).__name__}")])
    if nulls not in ("omit", "null"):
        raise BatchValidationError([Problem("nulls", f"must be 'omit' or 'null', not {nulls!r}")])
    with gc_paused():
        return _from_frame(df, method, path, body, name, headers, parent, nulls, known)


def _from_frame(
    df: pd.DataFrame,
    method: Any,
    path: Any,
    body: Any,
    name: Any,
    headers: Any,
    parent: Any,
    nulls: str,
    known: Collection[str],
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
    # Names must be known to judge parents and references; when they are
    # not, the problems already reported say why.
    if not name_source.broken:
        up = _check_graph(fr, names, name_source, parent_values, parent_source, known)
    if fr.problems:
        raise BatchValidationError(fr.problems.items)
    if n == 0:
        return []

    # No problems: every row has its method and path (None stands only where a problem was reported).
    method_iter = itertools.repeat(methods) if isinstance(methods, str) else cast("list[str]", methods)
    path_iter = itertools.repeat(paths) if isinstance(paths, str) else cast("list[str]", paths)
    body_iter = itertools.repeat(None) if bodies is None else bodies
    name_iter = itertools.repeat(None) if names is None else names
    header_iter = itertools.repeat(None) if header_values is None else header_values
    # Operation() would run __post_init__ per row to redo what was just done
    # column-wise (upper-case, parse headers, convert children).
    unchecked = Operation._unchecked
    ops = [
        unchecked(m, p, b, nm, h, None, label)
        for m, p, b, nm, h, label in zip(method_iter, path_iter, body_iter, name_iter, header_iter, fr.labels)
    ]
    if up is None or all(j < 0 for j in up):
        return ops
    top: list[Operation] = []
    for op, j in zip(ops, up):
        if j < 0:
            top.append(op)
        else:
            ops[j].requests.append(op)
    return top
