"""Comparing a result with what was expected, and saying how it differs in a short table.

:mod:`batchnb.testing`'s assertions and ``batchnb run --expect`` both use it,
so that a notebook and the command line agree on what "differs" means:

- a **status** matches a number (``201``), a class (``4xx``) or "none" (the
  operation did not run);
- any other value matches when both sides read the same once ids are
  placeholders (see :mod:`batchnb._stable`) and types are set aside: ``201``
  and ``"201"``, ``True`` and ``"true"``, a body and its JSON text;
- a column named by a JSONPath (``$.address.city``) is that query on the body;
- a body (or any value that is a JSON object or list on both sides) is
  compared field by field, each difference named by its JSONPath
  (``$.address.city``, ``$.items[2]``, ``$['a b']``); a field the result has
  and the expected side does not is a difference only when ``strict``;
- rows are paired by label (the expected side's index, or a CSV's ``row``
  column), else by ``name``, else by position; a row on one side only differs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._display import _ok
from ._exceptions import BatchValidationError, Problem
from ._stable import Stabiliser, parse_json_text
from ._text import plural

__all__ = [
    "VOLATILE",
    "Difference",
    "Expected",
    "canon",
    "expected_status",
    "frame_differences",
    "message",
    "ok_differences",
    "rows_differ",
    "status_differences",
    "status_matches",
    "table",
]

#: columns that change between runs of the same work; comparisons leave them out unless told otherwise.
VOLATILE = ("duration", "attempts", "batch", "replayed")
#: how many differences a message shows before it counts the rest.
SHOWN = 20
_CELL = 40
_ERROR_CELL = 60
_STATUS_CLASS = re.compile(r"([1-5])xx", re.I)
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
#: the header a CSV's row labels go under (what ``batchnb run -o`` writes); pandas writes none.
_LABEL_HEADERS = ("row", "")
NO_ROW, A_ROW = "no row", "a row"


@dataclass(frozen=True)
class Difference:
    """One value that is not what was expected, or a row on one side only.

    >>> Difference("1", "add-service", "status", "201", "400", "400 name: must not be empty").field
    'status'
    """

    label: str
    name: str
    #: the column or JSONPath that differs; "" when the whole row is missing or extra.
    field: str
    expected: str
    got: str
    error: str = ""
    #: the row's position in the result (None for an expected row the result lacks).
    position: int | None = dataclasses.field(default=None, compare=False)


# ---------------------------------------------------------------- values


def canon(value: Any) -> str:
    """The text a value compares as: types set aside, JSON canonical, missing as "".

    >>> canon(201), canon("201"), canon(30.0), canon("True"), canon(None), canon(float("nan"))
    ('201', '201', '30', 'true', '', '')
    >>> canon({"b": 1, "a": [2]}) == canon('{"a": [2], "b": 1}')
    True
    """
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, str):
        lower = value.strip().lower()
        if lower in ("true", "false"):
            return lower
        if _INTEGER.fullmatch(value):
            return str(int(value))
        if _DECIMAL.fullmatch(value):
            return _float_text(float(value))
        parsed = parse_json_text(value)
        return value if parsed is value else _json(parsed)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else _float_text(float(value))
    if isinstance(value, (dict, list, tuple)):
        return _json(value)
    return str(value)


def _float_text(value: float) -> str:
    # 30.0 and 30 are the same number; a CSV cannot tell them apart anyway.
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=str)


def expected_status(value: Any, pointer: str) -> str:
    """An expected status as a comparison reads it: ``"201"``, ``"4xx"``, or ``""`` for "did not run".

    >>> expected_status(201, "x"), expected_status("4XX", "x"), expected_status(None, "x")
    ('201', '4xx', '')
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    number: Any = None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return ""
        match = _STATUS_CLASS.fullmatch(text)
        if match:
            return match.group(1) + "xx"
        number = int(text) if text.isascii() and text.isdigit() else None  # '²'.isdigit(), and int('²') raises
    elif (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))) or (
        isinstance(value, (float, np.floating)) and float(value).is_integer()
    ):
        number = int(value)
    if number is not None and 100 <= number <= 599:
        return str(number)
    raise BatchValidationError(
        [
            Problem(
                pointer,
                f"{value!r} is not a status: use a number such as 201, "
                "a class such as '4xx', or None for an operation that did not run",
            )
        ]
    )


def status_matches(expected: str, got: str) -> bool:
    """Whether status ``got`` (as :func:`canon` writes it) meets ``expected`` (as :func:`expected_status` does).

    >>> status_matches("4xx", "404"), status_matches("201", "200"), status_matches("", "")
    (True, False, True)
    """
    if expected.endswith("xx"):
        return len(got) == 3 and got[0] == expected[0]
    return expected == got


# ---------------------------------------------------------------- rows of a result


def _shown(value: Any) -> str:
    """A label, name or error as a table shows it: missing as ""."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


class _Rows:
    """A result frame read by position: label, name, status and error of each row, as text."""

    def __init__(self, frame: pd.DataFrame, *, result: bool = True) -> None:
        n = len(frame)
        self.result = result
        self.labels = [_shown(label) for label in frame.index]
        self.names = [_shown(v) for v in frame["name"]] if "name" in frame.columns else [""] * n
        self.errors = [_shown(v) for v in frame["error"]] if "error" in frame.columns else [""] * n
        self.statuses = [canon(v) for v in frame["status"]] if "status" in frame.columns else [""] * n

    def difference(self, i: int, field: str, expected: str, got: str) -> Difference:
        return Difference(
            self.labels[i], self.names[i], field, expected, got, self.errors[i], i if self.result else None
        )


def ok_differences(result: pd.DataFrame) -> list[Difference]:
    """The rows that are not ok, as differences from "2xx".

    >>> [d.got for d in ok_differences(pd.DataFrame({"status": [201, 404], "ok": [True, False]}))]
    ['404']
    """
    rows = _Rows(result)
    return [
        rows.difference(int(i), "status", "2xx", rows.statuses[i] or "none")
        for i in np.flatnonzero(~_ok(result).to_numpy())
    ]


def status_differences(result: pd.DataFrame, expected: Mapping[Any, Any] | pd.Series) -> tuple[int, list[Difference]]:
    """How many rows were checked, and those whose status is not the one ``expected`` gives.

    ``expected`` maps a row label or an operation name to a status; a key that
    is both, for different rows, is refused as ambiguous.

    >>> result = pd.DataFrame({"name": ["a", "b"], "status": [201, 400]})
    >>> checked, diffs = status_differences(result, {"a": 201, 1: "2xx"})
    >>> checked, [(d.label, d.expected, d.got) for d in diffs]
    (2, [('1', '2xx', '400')])
    """
    rows = _Rows(result)
    by_label: dict[Hashable, list[int]] = defaultdict(list)
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(result.index):
        by_label[label].append(i)
    if "name" in result.columns:
        for i, name in enumerate(result["name"]):
            if isinstance(name, str):
                by_name[name].append(i)
    checked, diffs = 0, []
    for key, value in expected.items():
        want = expected_status(value, f"expected[{key!r}]")
        labelled = by_label.get(key, []) if not isinstance(key, bool) else []
        named = by_name.get(key, []) if isinstance(key, str) else []
        if labelled and named and labelled != named:
            raise BatchValidationError(
                [
                    Problem(
                        f"expected[{key!r}]",
                        f"is the label of one row ({rows.labels[labelled[0]]}) and the name of "
                        f"another (row {rows.labels[named[0]]}); use a key that names one row only",
                    )
                ]
            )
        found = labelled or named
        if not found:
            checked += 1
            diffs.append(Difference(str(key), "", "status", want or "none", NO_ROW))
        for i in found:
            checked += 1
            if not status_matches(want, rows.statuses[i]):
                diffs.append(rows.difference(i, "status", want or "none", rows.statuses[i] or "none"))
    return checked, diffs


# ---------------------------------------------------------------- a result against an expected one


@dataclass
class Expected:
    """What a result is compared with: a frame, how its rows pair with the result's, and what to call it.

    >>> Expected.of(pd.DataFrame({"status": [201]})).by
    'label'
    """

    frame: pd.DataFrame
    #: "label", "name" or "position".
    by: str
    source: str

    @classmethod
    def of(cls, expected: pd.DataFrame | str | Path) -> Expected:
        """A frame as it is (paired by label), or a CSV file read as text (see :meth:`read`)."""
        if isinstance(expected, pd.DataFrame):
            return cls(expected, "label", "the expected frame")
        if isinstance(expected, (str, Path)):
            return cls.read(expected)
        raise BatchValidationError(
            [Problem("expected", f"must be a DataFrame or the path of a CSV file, not {type(expected).__name__}")]
        )

    @classmethod
    def read(cls, path: str | Path) -> Expected:
        """Read an expected CSV: every cell as text, checked (statuses, JSONPaths) before anything runs.

        A first column headed ``row`` (or not headed, as ``DataFrame.to_csv``
        writes it) holds row labels; without one, rows pair by ``name`` when
        every row has a distinct one, else by position. A text that ``batchnb
        run -o`` wrote with a leading ``'`` (a spreadsheet would have run it as
        a formula) is read as it was.
        """
        from ._output import as_written
        from .frames._csv import _decode, _read, _sniff

        name, raw = _read(path)
        text = _decode(raw, "utf-8", name)
        if not text.strip():
            raise BatchValidationError(
                [Problem(name, "is empty: an expected file needs a header line and a line per row")]
            )
        try:
            frame = pd.read_csv(io.StringIO(text), sep=_sniff(text), dtype=str, keep_default_na=False, na_filter=False)
        except (pd.errors.ParserError, ValueError) as exc:
            raise BatchValidationError([Problem(name, f"is not valid CSV: {exc}")]) from None
        # What `batchnb run -o` wrote with a leading ' (a text a spreadsheet would run), as it was.
        frame = frame.map(as_written)
        frame.columns = [as_written(c) for c in frame.columns]
        first = str(frame.columns[0]) if len(frame.columns) else None
        if first is not None and (first in _LABEL_HEADERS or first.startswith("Unnamed: 0")):
            frame = frame.set_index(frame.columns[0])
            frame.index.name = None
            by = "label"
        elif "name" in frame.columns and frame["name"].ne("").all() and frame["name"].is_unique:
            by = "name"
        else:
            by = "position"
        expected = cls(frame, by, name)
        expected.check()
        return expected

    @property
    def paths(self) -> list[str]:
        """The columns that are JSONPath queries on the body."""
        return [c for c in self.frame.columns if isinstance(c, str) and c.startswith("$")]

    def check(self, columns: Iterable[Any] | None = None, ignore: Iterable[Any] = ()) -> None:
        """Refuse, naming each problem, an expected side that cannot be compared.

        Its statuses must read as statuses and its JSONPaths must parse; with
        ``columns`` (what the result will have), each column it compares must be one of them.
        """
        from ._jsonpath import compile_query as _compile

        problems = []
        if "status" in self.frame.columns:
            for label, value in self.frame["status"].items():
                try:
                    expected_status(value, "")
                except BatchValidationError as exc:
                    problems.append(Problem(f"{self.source}, row {label}, column status", exc.problems[0].message))
        for query in self.paths:
            try:
                _compile(query)
            except BatchValidationError as exc:
                problems.append(Problem(f"{self.source}, column {query}", exc.problems[0].message))
        if columns is not None:
            have, skip = set(columns), set(ignore)
            unknown = [c for c in self.frame.columns if c not in have and c not in skip and c not in self.paths]
            if unknown:
                problems.append(
                    Problem(
                        self.source,
                        f"has {plural(len(unknown), 'column')} the result does not: "
                        f"{', '.join(map(repr, unknown))} (name body fields as JSONPaths such as "
                        "'$.name', or leave the columns out)",
                    )
                )
        if problems:
            raise BatchValidationError(problems[:50])


def frame_differences(
    actual: pd.DataFrame,
    expected: Expected,
    *,
    ignore: Iterable[Any] = VOLATILE,
    patterns: Iterable[str] = (),
    strict: bool = False,
) -> tuple[int, list[Difference]]:
    """How many rows were compared, and every value of ``expected`` that ``actual`` does not match.

    >>> actual = pd.DataFrame({"name": ["a", "b"], "status": [201, 400], "body": [{"id": "co_4ba06eb22da7"}, {}]})
    >>> stored = pd.DataFrame({"name": ["a", "b"], "status": [201, 201], "body": [{"id": "co_000000000000"}, {}]})
    >>> rows, diffs = frame_differences(actual, Expected.of(stored))
    >>> rows, [(d.label, d.field, d.expected, d.got) for d in diffs]
    (2, [('1', 'status', '201', '400')])

    Bodies compare field by field; a field only the result has differs only when ``strict``:

    >>> today = pd.DataFrame({"body": [{"name": "LYON", "city": "Lyon", "added": 1}]})
    >>> rows, diffs = frame_differences(today, Expected.of(pd.DataFrame({"body": [{"name": "Lyon", "city": "Lyon"}]})))
    >>> [(d.field, d.expected, d.got) for d in diffs]
    [('$.name', "'Lyon'", "'LYON'")]
    """
    ignore = set(ignore)
    expected.check(actual.columns, ignore)
    columns = [c for c in expected.frame.columns if c not in ignore and c != "status"]
    check_status = "status" in expected.frame.columns and "status" not in ignore
    body = "body_result" if "body_result" in actual.columns else "body"
    pairs = _pairs(actual, expected)
    both = [(e, a) for e, a in pairs if e is not None and a is not None]
    exp_view = expected.frame.iloc[[e for e, _ in both]][columns].reset_index(drop=True)
    act_view = pd.DataFrame({c: _column(actual, c, body, [a for _, a in both]) for c in columns})
    # Each side gets its own placeholders: ids are equal when they play the same part on both sides.
    exp_view = Stabiliser(patterns).learn(expected.frame).learn(exp_view).apply(exp_view)
    act_view = Stabiliser(patterns).learn(actual).learn(act_view).apply(act_view)

    rows, exp_rows = _Rows(actual), _Rows(expected.frame, result=False)
    diffs: list[Difference] = []
    k = 0
    for e, a in pairs:
        if a is None:
            if e is not None:
                diffs.append(exp_rows.difference(e, "", A_ROW, NO_ROW))
            continue
        if e is None:
            diffs.append(rows.difference(a, "", NO_ROW, A_ROW))
            continue
        if check_status:
            wanted = expected_status(expected.frame["status"].iat[e], "")
            if not status_matches(wanted, rows.statuses[a]):
                diffs.append(rows.difference(a, "status", wanted or "none", rows.statuses[a] or "none"))
        for c in columns:
            for field, want, got in _value_differences(str(c), exp_view[c].iat[k], act_view[c].iat[k], strict):
                diffs.append(rows.difference(a, field, want, got))
        k += 1
    return len(pairs), diffs


def _pairs(actual: pd.DataFrame, expected: Expected) -> list[tuple[int | None, int | None]]:
    """(expected position, actual position) of each row, in the expected order, then the actual's extra rows."""
    frame = expected.frame
    if expected.by == "position":
        n, m = len(frame), len(actual)
        return [(i if i < n else None, i if i < m else None) for i in range(max(n, m))]
    if expected.by == "name":
        exp_keys = [canon(v) for v in frame["name"]]
        act_keys = [canon(v) for v in actual["name"]] if "name" in actual.columns else [""] * len(actual)
    else:
        exp_keys = [canon(v) for v in frame.index]
        act_keys = [canon(v) for v in actual.index]
    # A label may repeat (nested rows share their parent's): pair the k-th with the k-th.
    seen: dict[str, int] = defaultdict(int)
    positions: dict[tuple[str, int], int] = {}
    for i, key in enumerate(act_keys):
        positions[(key, seen[key])] = i
        seen[key] += 1
    seen.clear()
    pairs: list[tuple[int | None, int | None]] = []
    used = set()
    for e, key in enumerate(exp_keys):
        a = positions.get((key, seen[key]))
        seen[key] += 1
        pairs.append((e, a))
        used.add(a)
    pairs.extend((None, a) for a in range(len(actual)) if a not in used)
    return pairs


def _column(actual: pd.DataFrame, column: Any, body: str, rows: list[int]) -> list[Any]:
    """The values ``column`` names in ``actual`` at ``rows``: a column, or a JSONPath query on the body."""
    if not (isinstance(column, str) and column.startswith("$")):
        values: list[Any] = actual[column].iloc[rows].tolist()
        return values
    from ._jsonpath import compile_query as _compile

    query = _compile(column)
    out = []
    for value in actual[body].iloc[rows].tolist() if body in actual.columns else [None] * len(rows):
        if isinstance(value, str):
            value = parse_json_text(value)
        found = query.find(value).values() if isinstance(value, (dict, list)) else []
        out.append(None if not found else found[0] if len(found) == 1 else found)
    return out


# ---------------------------------------------------------------- values field by field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BODIES = ("body", "body_result")


def member(path: str, key: Any) -> str:
    """The JSONPath of ``key`` under ``path``: dotted when the name allows, else bracket-quoted.

    >>> print(member("$", "name"), member("$.a", "b c"), member("$", "it's"))
    $.name $.a['b c'] $['it\\'s']
    """
    key = str(key)
    if _NAME.fullmatch(key):
        return f"{path}.{key}"
    return "{}['{}']".format(path, key.replace("\\", "\\\\").replace("'", "\\'"))


def _structure(value: Any) -> Any:
    """The object or list a cell holds (parsed from JSON text), else None."""
    if isinstance(value, str):
        value = parse_json_text(value)
    return value if isinstance(value, (dict, list)) else None


def _literal(value: Any) -> str:
    """A JSON value as a difference shows it: text quoted, so that ``'201'`` and ``201`` read apart."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return canon(value)


def _value_differences(column: str, want: Any, got: Any, strict: bool) -> Iterable[tuple[str, str, str]]:
    """(field, expected, got) for each difference between two values of ``column``."""
    w, g = _structure(want), _structure(got)
    if w is not None and g is not None:
        root = "$" if column in _BODIES else column
        return list(_walk(root, w, g, strict))
    want_text, got_text = canon(want), canon(got)
    return [(column, want_text, got_text)] if want_text != got_text else []


def _walk(path: str, want: Any, got: Any, strict: bool) -> Iterable[tuple[str, str, str]]:
    if isinstance(want, dict) and isinstance(got, dict):
        for key, value in want.items():
            if key in got:
                yield from _walk(member(path, key), value, got[key], strict)
            else:
                yield member(path, key), _literal(value), ""
        if strict:
            for key in got.keys() - want.keys():
                yield member(path, key), "", _literal(got[key])
    elif isinstance(want, list) and isinstance(got, list):
        for i in range(max(len(want), len(got))):
            if i >= len(got):
                yield f"{path}[{i}]", _literal(want[i]), ""
            elif i >= len(want):
                yield f"{path}[{i}]", "", _literal(got[i])
            else:
                yield from _walk(f"{path}[{i}]", want[i], got[i], strict)
    elif canon(want) != canon(got):
        yield path, _literal(want), _literal(got)


# ---------------------------------------------------------------- the message


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut_pair(want: str, got: str, width: int = _CELL) -> tuple[str, str]:
    """Two values cut to ``width`` around where they first differ, so that the difference shows.

    >>> _cut_pair("a" * 60 + "Lyon", "a" * 60 + "LYON", 12)
    ('…aaaaaaLyon', '…aaaaaaLYON')
    """
    want, got = " ".join(want.split()), " ".join(got.split())
    if len(want) <= width and len(got) <= width:
        return want, got
    at = next((i for i, (x, y) in enumerate(zip(want, got)) if x != y), min(len(want), len(got)))
    start = max(0, at - (width * 2) // 3)
    if start:
        want, got = "…" + want[start + 1 :], "…" + got[start + 1 :]
    return _cut(want, width), _cut(got, width)


def table(diffs: list[Difference], *, fields: bool) -> str:
    """The differences as a plain-text table: row, name, [field,] expected, got, error.

    >>> print(table([Difference("1", "add-service", "status", "201", "400", "400 name: must not be empty")], fields=False))
      row  name         expected  got  error
      1    add-service  201       400  400 name: must not be empty
    """
    header = ["row", "name", *(["field"] if fields else []), "expected", "got", "error"]
    lines = [header]
    for d in diffs[:SHOWN]:
        want, got = _cut_pair(d.expected or "—", d.got or "—")
        cells = [_cut(c, _CELL) for c in (d.label, d.name, *([d.field] if fields else []))]
        lines.append([*cells, want, got, _cut(d.error, _ERROR_CELL)])
    widths = [max(len(line[j]) for line in lines) for j in range(len(header))]
    out = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    if len(diffs) > SHOWN:
        out.append(f"  … and {len(diffs) - SHOWN} more")
    return "\n".join(out)


def message(title: str, diffs: list[Difference]) -> str:
    """A title, then the table (with a field column when something other than a status differs)."""
    fields = any(d.field not in ("status", "") for d in diffs)
    return f"{title}:\n{table(diffs, fields=fields)}"


def rows_differ(diffs: list[Difference], total: int, against: str) -> str:
    """The title of a comparison: how many of how many rows differ, and from what.

    >>> rows_differ([Difference("1", "", "status", "201", "400")], 3, "expected.csv")
    '1 of 3 rows differs from expected.csv'
    """
    n = len({(d.label, d.name) for d in diffs})
    return f"{n} of {plural(total, 'row')} {'differs' if n == 1 else 'differ'} from {against}"
