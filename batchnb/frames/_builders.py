"""One builder per argument of :func:`~batchnb.from_frame`: methods, paths, names, parents, headers, bodies.

Each reads its argument's source (a column, a template or a constant),
checks every value with ``batchnb._rules`` and reports problems by row and
column; none of them raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import _refs, _rules
from .._cells import _is_null, _json_value
from ._reader import _Duplicate, _Frame, _Problems, _Source
from ._templates import _PLAIN_PATH, _plain_path, _Slot
from ._values import _may_hold_refs


def _methods(fr: _Frame, method: Any) -> list[str | None] | str | None:
    source = fr.resolve("method", method, required=True)
    if source.broken:
        return None
    if source.kind == "constant":
        message = _rules.method_problem(source.value)
        if message:
            fr.problems.add("method", message)
            return None
        return str(source.value).upper()
    values = fr.values_of(source)
    if values is None:
        return None
    bad = fr.judge(values, _rules.method_problem, source)
    # Few distinct methods: upper-case each once.
    upper = {m: (None if m is None or m in bad else m.upper()) for m in set(values)}
    return [upper[m] for m in values]


def _paths(fr: _Frame, path: Any) -> list[str | None] | str | None:
    source = fr.resolve("path", path, required=True)
    if source.broken:
        return None
    if source.kind == "constant":
        p = source.value
        message = _shape_problem(p) if isinstance(p, str) else _rules.path_problem(p)
        if message:
            fr.problems.add("path", message)
            return None
        if "${" in p:
            fr.ref_hits.append((None, "path", p))
        return str(p)
    if source.kind == "column":
        return _path_column(fr, source.column)
    # A template: checked once, with each placeholder standing for a plain
    # segment; then only the rows whose values could change that verdict.
    message = _shape_problem(source.template)
    if message:
        fr.problems.add("path", f"the template {message}")
        return None
    literal = "".join(p for p in source.template if not isinstance(p, _Slot))
    if "${" in literal:
        fr.ref_hits.append((None, "path", literal))
    filled = fr.fill(source, encode=True)
    if "%" in literal:
        # A '%' in the template could join a value into an escape ('%2' + 'E'
        # reads as '.'): no value is harmless then, check them all.
        checks = [(filled.slots[0].column, np.ones(fr.n, dtype=bool))]
    else:
        checks = [(slot.column, slot.coded.rows_where(slot.unsafe)) for slot in filled.slots if slot.unsafe is not None]
    # Each distinct path is judged once, and only if some row needs it.
    wanted = np.zeros(len(filled.texts), dtype=bool)
    for _column, rows in checks:
        wanted[filled.codes[rows & ~filled.empty]] = True
    verdicts = {k: _shape_problem(filled.texts[k]) for k in np.flatnonzero(wanted).tolist()}
    bad = np.zeros(len(filled.texts), dtype=bool)
    bad[[k for k, message in verdicts.items() if message]] = True
    for column, rows in checks:
        for i in np.flatnonzero(rows & ~filled.empty & bad[filled.codes]).tolist():
            p = filled.values[i]
            fr.add(i, column, f"makes the path {p!r} unsafe: it {verdicts[int(filled.codes[i])]}")
    return filled.values


def _shape_problem(path: str | tuple[Any, ...]) -> str | None:
    """The path rule for a path or a template, each reference and slot standing for one segment."""
    parts: list[Any] = []
    try:
        for part in (path,) if isinstance(path, str) else path:
            parts.extend(_refs.parse(part) if isinstance(part, str) else (part,))
    except _refs.RefSyntaxError as exc:
        return str(exc)
    return _rules.path_problem(tuple(parts))


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
        if not isinstance(v, str) or not v.strip():
            fr.add(i, column, _rules.path_problem(None if _is_null(v) else v) or "is not a path")
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
        message = _rules.name_problem(value)
        if message:
            fr.problems.add("name", message)
            source.broken = True
            return None, source
        # Every row the same name: only a one-row frame can use it.
        return [value] * fr.n, source
    values = fr.values_of(source)
    if values is None:
        return None, source
    fr.judge(values, _rules.name_problem, source)
    return values, source


def _parents(fr: _Frame, parent: Any) -> tuple[list[str | None] | None, _Source]:
    source = fr.resolve("parent", parent)
    if source.broken:
        return None, source
    if source.kind == "absent":
        return None, source
    if source.kind == "constant":
        given: list[str | None] = [source.value if isinstance(source.value, str) else str(source.value)]
        return given * fr.n, source
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
        cells: list[Any] = fr.fill(source, encode=False).values
        pointer_col: Any = "headers"
    else:
        pointer_col = source.column
        cells = fr.series(source.column).tolist()
    out: list[dict[str, str] | None] = []
    # Header cells repeat a lot (one token for many rows): parse each text once.
    cache: dict[str, tuple[dict[str, str] | None, list[str]]] = {}
    for i, cell in enumerate(cells):
        if isinstance(cell, str):
            seen = cache.get(cell)
            if seen is None:
                problems = _Problems()
                parsed = _parse_headers(cell, problems, "")
                seen = cache[cell] = (parsed, [p.message for p in problems.items])
            parsed, messages = seen
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
        # Spaces, tabs and line ends only: a no-break space ending a value is part of it (and refused).
        text = value.strip(" \t\r\n")
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
            parsed, bad_lines = _rules.parse_header_lines(text)
            for message in bad_lines:
                problems.add(pointer, message)
            value = parsed
    if not isinstance(value, Mapping):
        problems.add(pointer, f"must be an object or 'Name: value' lines, not {type(value).__name__}")
        return None
    out: dict[str, str] = {}
    for k, v in value.items():
        for message in _rules.header_problems(str(k), v):
            problems.add(pointer, f"{k}: {message}" if message.startswith("header value") else message)
        out[str(k)] = v
    for _name, message in _rules.header_set_problems(out):
        problems.add(pointer, message)
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
        fr.problems.add("body", fr.no_column(body))
        return None
    if isinstance(body, Mapping):
        fields = [(str(k), v) for k, v in body.items()]
    elif isinstance(body, (list, tuple, pd.Index)):
        fields = [(str(c), c) for c in body]
    else:
        fr.problems.add(
            "body", "must be None, a column name, a list of columns, a mapping {field: column} or a function of the row"
        )
        return None
    tree: dict[str, Any] = {}
    ok = True
    for field_name, column in fields:
        if not fr.has(column):
            fr.problems.add("body", fr.no_column(column))
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
        except Exception as exc:  # noqa: BLE001 - the user's function: reported with its row, as every problem
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
