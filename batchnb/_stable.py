"""What stays the same between two identical runs: a result without durations, its ids as placeholders.

Two runs of the same batch against the same API differ in what the server
makes up: ids, creation times, how long each operation took. A view without
those is a regression check by itself: shown in a notebook, nbval compares it;
compared with a stored one, only behaviour can differ.

An **id** is a value under a key named like one (``id``, ``companyId``,
``company_id``; a column of that name too), or text that matches an id
pattern (UUIDs, the demo API's ``co_0123456789ab``, earlier placeholders, and
the caller's ``patterns``). Each distinct id becomes ``<id1>``, ``<id2>``, …
in order of first appearance, reading the frame row by row (label first, then
the columns in order), and the same id gets the same placeholder wherever it
is: a whole value, inside text (pattern ids), or a segment of a path. A
creation or change time (``createdAt``, ``updated_at``, … holding an ISO 8601
time) becomes ``<time>``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd

from ._jsonarray import holds_values

__all__ = ["DEFAULT_ID_KEYS", "Stabiliser", "parse_json_text", "stable"]

#: keys (and column names) whose values are ids.
DEFAULT_ID_KEYS = r"^(?:id|Id|ID)$|_(?:id|ID)$|[a-z0-9](?:Id|ID)$"
#: keys whose ISO 8601 times the server sets as it goes.
_TIME_KEYS = re.compile(r"^(?:created|updated|modified|deleted)(?:_?at|_?on)?$|^timestamp$", re.I)
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?")
#: ids found in any text, whatever their key.
_ID_PATTERNS = (
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",  # UUIDs
    # The demo Scheduling API's (batchnb.demo._store.ID_PREFIXES; not imported, since the demo needs the server extra).
    r"\b(?:co|sv|st|ap)_[0-9a-f]{12}\b",
    r"<id\d+>",  # placeholders of an earlier stable view, numbered afresh
)
#: where a path (or any text with a slash) splits into segments.
_SEGMENT = re.compile(r"([/?&=#])")
_PLACEHOLDER = "<id{}>"
_TIME = "<time>"


def parse_json_text(value: str) -> Any:
    """The object or list a text cell holds (JSON, or a Python repr from ``to_csv``), else the text.

    >>> parse_json_text('{"id": 7}'), parse_json_text("{'id': 7}"), parse_json_text("plain")
    ({'id': 7}, {'id': 7}, 'plain')
    """
    text = value.strip()
    if not text or text[0] not in "{[":
        return value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value
    return parsed if isinstance(parsed, (dict, list)) else value


class Stabiliser:
    """Replaces ids with placeholders: :meth:`learn` every frame that may name them, then :meth:`apply`.

    >>> s = Stabiliser()
    >>> frame = pd.DataFrame({"path": ["/things", "/things/8412"], "body": [{"id": 8412}, None]})
    >>> s.learn(frame).apply(frame)["path"].tolist()
    ['/things', '/things/<id1>']

    Learning is separate so that ids defined in one part of a frame (a body's
    ``id``) are recognised in a view of another part (a path column alone).
    """

    def __init__(self, patterns: Iterable[str] = (), keys: str | None = None) -> None:
        self._pattern = re.compile("|".join(f"(?:{p})" for p in (*_ID_PATTERNS, *patterns)))
        self._keys = re.compile(keys if keys is not None else DEFAULT_ID_KEYS)
        #: ids found under id keys, as text: replaced where they are a whole value or a path segment.
        self._keyed: set[str] = set()
        self._placeholders: dict[str, str] = {}

    # ------------------------------------------------------------ learning

    def learn(self, frame: pd.DataFrame) -> Stabiliser:
        """Note the ids ``frame`` holds under id keys (body fields, id-named columns and index)."""
        if self._is_key(frame.index.name):
            self._keyed.update(filter(None, map(_id_text, frame.index)))
        for column in frame.columns:
            if self._is_key(column):
                self._keyed.update(filter(None, map(_id_text, frame[column])))
            elif holds_values(frame[column]):
                for value in frame[column]:
                    self._learn_value(value)
        return self

    def _learn_value(self, value: Any) -> None:
        if isinstance(value, str):
            value = parse_json_text(value)
        if isinstance(value, dict):
            for k, v in value.items():
                if self._is_key(k):
                    text = _id_text(v)
                    if text:
                        self._keyed.add(text)
                        continue
                self._learn_value(v)
        elif isinstance(value, list):
            for v in value:
                self._learn_value(v)

    def _is_key(self, key: Any) -> bool:
        return isinstance(key, str) and bool(self._keys.search(_last_name(key)))

    # ------------------------------------------------------------ replacing

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` with ids as placeholders, numbered row by row as they first appear."""
        columns = list(frame.columns)
        # Only cells that may hold ids change; numbers, flags and statuses stay as they are.
        touched = [
            c for c in columns if holds_values(frame[c]) or pd.api.types.is_string_dtype(frame[c]) or self._is_key(c)
        ]
        keyed_columns = {c for c in touched if self._is_key(c)}
        cells = {c: frame[c].tolist() for c in touched}
        labels = frame.index.tolist()
        label_is_id = self._is_key(frame.index.name)
        out_labels: list[Any] = []
        out: dict[Any, list[Any]] = {c: [None] * len(frame) for c in touched}
        for i, label in enumerate(labels):
            out_labels.append(self._whole(label) if label_is_id else self._label(label))
            for c in touched:
                value = cells[c][i]
                out[c][i] = self._whole(value) if c in keyed_columns else self._value(value, json_text=True)
        result = frame.copy()
        for c in touched:
            if pd.api.types.is_string_dtype(frame[c]) and frame[c].dtype != object:
                # Text stays text (missing cells show as the frame showed them).
                result[c] = pd.array(out[c], dtype=cast(pd.StringDtype, frame[c].dtype))
            else:
                # fromiter keeps each value one object (np.array would make a 2-D array of equal-length lists).
                result[c] = np.fromiter(out[c], dtype=object, count=len(frame))
        result.index = pd.Index(out_labels, name=frame.index.name) if out_labels != labels else frame.index
        return result

    def _label(self, label: Any) -> Any:
        return self._text(label) if isinstance(label, str) else label

    def _value(self, value: Any, *, json_text: bool = False, key: Any = None) -> Any:
        if key is not None and self._is_key(key) and (text := _id_text(value)):
            return self._placeholder(text)
        if (
            key is not None
            and isinstance(value, str)
            and _TIME_KEYS.match(_last_name(key))
            and _ISO_TIME.fullmatch(value.strip())
        ):
            return _TIME
        if isinstance(value, str):
            if json_text:
                parsed = parse_json_text(value)
                if parsed is not value:
                    return orjson.dumps(self._value(parsed)).decode()
            return self._text(value)
        if isinstance(value, dict):
            return {self._text(k) if isinstance(k, str) else k: self._value(v, key=k) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v) for v in value]
        return value

    def _whole(self, value: Any) -> Any:
        """A value that is an id because of where it is (an id-named column or index)."""
        text = _id_text(value)
        return self._placeholder(text) if text else self._value(value)

    def _text(self, text: str) -> str:
        # A number written as text is a number (a CSV's status, a count), unless a key or a path says it is an id.
        if text in self._keyed and not text.isdigit():
            return self._placeholder(text)
        if not self._keyed or not _SEGMENT.search(text):
            return self._pattern.sub(self._matched, text)
        # Segment by segment, so that ids are numbered in the order they appear in the text.
        return "".join(
            self._placeholder(p) if p in self._keyed else self._pattern.sub(self._matched, p)
            for p in _SEGMENT.split(text)
        )

    def _matched(self, match: re.Match[str]) -> str:
        return self._placeholder(match.group(0))

    def _placeholder(self, text: str) -> str:
        found = self._placeholders.get(text)
        if found is None:
            found = self._placeholders[text] = _PLACEHOLDER.format(len(self._placeholders) + 1)
        return found


def _id_text(value: Any) -> str | None:
    """An id value as text: a whole number or a word; None for anything that cannot be an id."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if isinstance(value, str) and value and "${" not in value and not any(ch.isspace() for ch in value):
        return value
    return None


def _last_name(key: str) -> str:
    # A JSONPath column such as $.company.id is named by its last member.
    names: list[str] = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", key) if key.startswith("$") else [key]
    return names[-1] if names else key


def stable(frame: pd.DataFrame, *, patterns: Iterable[str] = (), keys: str | None = None) -> pd.DataFrame:
    """``frame`` without what changes between identical runs: no ``duration``, ids as placeholders.

    >>> result = pd.DataFrame({
    ...     "name": ["add-company", "add-service"],
    ...     "path": ["/companies", "/companies/co_4ba06eb22da7/services"],
    ...     "status": [201, 201],
    ...     "duration": [0.31, 0.27],
    ...     "body": [{"id": "co_4ba06eb22da7"}, {"id": "sv_dfd09fabcdbf", "companyId": "co_4ba06eb22da7"}],
    ... })
    >>> view = stable(result)
    >>> view.columns.tolist()
    ['name', 'path', 'status', 'body']
    >>> view["path"].tolist()
    ['/companies', '/companies/<id1>/services']
    >>> view["body"].tolist()
    [{'id': '<id1>'}, {'id': '<id2>', 'companyId': '<id1>'}]

    Also ``result.batchnb.stable()``. ``patterns`` adds regular expressions
    of ids your API makes (``r"ord_[A-Za-z0-9]{16}"``); ``keys`` replaces the
    expression that names id keys (:data:`DEFAULT_ID_KEYS`).
    """
    view = frame.drop(columns=[c for c in ("duration",) if c in frame.columns])
    stabiliser = Stabiliser(patterns, keys)
    return stabiliser.learn(view).apply(view)
