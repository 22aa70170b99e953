"""What the Composer form holds and the rules it applies, in plain Python (no widget in sight).

A :class:`Draft` is the batch being composed: the operations added so far,
flat, each with the name of its parent. The form's current values are a
:class:`Fields`; the draft checks them (:meth:`Draft.check`), adds them
(:meth:`Draft.add`), and answers everything else the form shows: names,
labels, the batch, its wire JSON, its frame.

    >>> draft = Draft()
    >>> draft.add(Fields("POST", "/api/2.1/scheduling/companies", name="co", body='{"name": "Riverside"}'))
    >>> draft.check(Fields("GET", "/x", name="co")).problems
    {'name': "duplicate name 'co' (first used at operation 1)"}
    >>> draft.batch
    Batch(1 operation)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import _refs, _rules
from ._exceptions import BatchError, BatchHTTPError, BatchValidationError, TransportError
from ._secrets import mask_headers, mask_path
from ._text import plural
from .model import Batch, Operation

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "OPERATION_COLUMNS",
    "Check",
    "Draft",
    "Fields",
    "Refusal",
    "describe_error",
    "masked_wire",
    "parse_body",
    "reference_to",
]

#: the columns of :meth:`Draft.to_frame`, which :meth:`Draft.from_frame` reads back.
OPERATION_COLUMNS = ("name", "method", "path", "body", "headers", "parent")

#: the fields a problem can be shown next to, in the form's order (header rows have their own).
FIELD_NAMES = ("method", "path", "name", "parent", "body")


# ---------------------------------------------------------------- field checks (pure functions)


def parse_body(text: str) -> tuple[Any, str | None]:
    """The body's JSON value (None when empty) and why it does not parse, with line and column.

    >>> parse_body('{"a": 1}')
    ({'a': 1}, None)
    >>> parse_body('{"a": }')[1]
    'invalid JSON at line 1, column 7: Expecting value'
    """
    if not text.strip():
        return None, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"


def _path_problem(text: str) -> str | None:
    """The path rule for the path field; a reference stands for the one segment it becomes."""
    try:
        return _rules.path_problem(_refs.parse(text) if text else text)
    except _refs.RefSyntaxError as exc:
        return str(exc)


def masked_wire(batch: Batch) -> dict[str, Any]:
    """The wire JSON of ``batch`` with credential headers and query parameters hidden.

    >>> op = Operation("GET", "/x?token=abc", headers={"Authorization": "Bearer abc"})
    >>> masked_wire(Batch([op]))
    {'requests': [{'method': 'GET', 'path': '/x?token=***', 'headers': {'Authorization': '***'}}]}
    """
    return {"requests": [_mask_op(op) for op in batch.to_wire()["requests"]]}


def _mask_op(op: dict[str, Any]) -> dict[str, Any]:
    out = dict(op)
    out["path"] = mask_path(out["path"])
    if isinstance(out.get("headers"), dict):
        out["headers"] = mask_headers(out["headers"])
    if out.get("requests"):
        out["requests"] = [_mask_op(child) for child in out["requests"]]
    return out


def reference_to(name: str | None, jsonpath: str) -> tuple[str | None, str | None]:
    """The reference ``${result=NAME:PATH}`` to an earlier result, or None and why it cannot be written.

    >>> reference_to("co", "$.id")
    ('${result=co:$.id}', None)
    >>> reference_to(None, "$.id")
    (None, 'name an operation and add it first: only named operations can be referenced')
    """
    if not name:
        return None, "name an operation and add it first: only named operations can be referenced"
    try:
        return _refs.ref(name, jsonpath.strip() or "$"), None
    except _refs.RefSyntaxError as exc:
        return None, str(exc)


def describe_error(exc: BaseException) -> tuple[list[str], str]:
    """The lines and the title the form's error area shows for an exception.

    >>> describe_error(TransportError("connection refused", sent=False))
    (['connection refused'], 'The batch could not be delivered; nothing was sent.')
    """
    if isinstance(exc, BatchValidationError):
        return [str(p) for p in exc.problems] or [str(exc)], "The batch is not valid; nothing was sent."
    if isinstance(exc, BatchHTTPError):
        lines = [f"HTTP {exc.status}: {exc.message}", *(str(p) for p in exc.problems)]
        return lines, "The server refused the batch; nothing in it ran."
    if isinstance(exc, TransportError):
        outcome = "its outcome is unknown" if exc.sent else "nothing was sent"
        return [str(exc)], f"The batch could not be delivered; {outcome}."
    if isinstance(exc, BatchError):
        return [str(exc)], "The submit failed."
    return [f"{type(exc).__name__}: {exc}"], "Something went wrong."


# ---------------------------------------------------------------- the form's values and what is wrong with them


@dataclass(frozen=True)
class Fields:
    """The form's values as typed: the body is JSON text, ``headers`` every row (empty ones too), in order.

    >>> Fields("POST", "/x", body='{"a": 1}').operation()
    Operation('POST', '/x', body={'a': 1})
    """

    method: str = "GET"
    path: str = ""
    name: str = ""
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    #: the name of the composed operation this one is nested under ("" for none).
    parent: str = ""

    def operation(self) -> Operation:
        """The operation these fields describe (check them first: :meth:`Draft.check`)."""
        headers = {key: value for key, value in self._header_items() if key}
        body, _ = parse_body(self.body)
        return Operation(
            self.method.strip().upper(),
            self.path.strip(),
            body=body,
            name=self.name.strip() or None,
            headers=headers or None,
        )

    def _header_items(self) -> list[tuple[str, str]]:
        return [(key.strip(), value) for key, value in self.headers]

    def with_reference(self, into: str, text: str) -> Fields:
        """These fields with ``text`` put ``into`` the path, the body or the last header's value.

        In the path and a header value it is appended (a header row is added when
        there is none); in the body it fills the first empty string ``""``, or is
        appended when there is none.

        >>> Fields(body='{"id": ""}').with_reference("body", "${result=co:$.id}").body
        '{"id": "${result=co:$.id}"}'
        """
        if into == "path":
            return replace(self, path=self.path + text)
        if into == "body":
            return replace(self, body=_into_body(self.body, text))
        key, value = self.headers[-1] if self.headers else ("", "")
        return replace(self, headers=(*self.headers[:-1], (key, value + text)))


@dataclass(frozen=True)
class Check:
    """What is wrong with a form's fields: a message per field, and per header row (numbered from 1).

    ``problems`` is what the form reports; its ``headers`` entry sums up the rows' messages.
    """

    problems: dict[str, str] = field(default_factory=dict)
    header_rows: dict[int, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True)
class Refusal:
    """Why the draft did not change: a title and one line per problem, as the form's error area shows them."""

    title: str
    messages: list[str]


# ---------------------------------------------------------------- the draft


@dataclass
class _Entry:
    """One composed operation, flat: its children are the entries naming it as ``parent``."""

    op: Operation
    parent: str | None = None


class Draft:
    """The operations composed so far, and the rules the form's fields must follow to join them.

    >>> draft = Draft()
    >>> draft.add(Fields("POST", "/companies", name="co"))
    >>> draft.add(Fields("GET", "/companies/${result=co:$.id}", parent="co"))
    >>> draft.batch, draft.labels()
    (Batch(2 operations, 1 nested), ['1. co: POST /companies', '2. GET /companies/${result=co:$.id}  (under co)'])
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Draft({plural(len(self), 'operation')})"

    @property
    def names(self) -> list[str]:
        """The names of the composed operations, in order."""
        return [e.op.name for e in self._entries if e.op.name]

    @property
    def batch(self) -> Batch:
        """The composed operations as a validated :class:`~batchnb.Batch` (children nested under parents)."""
        return Batch(_nest(self._entries))

    def unchecked_batch(self) -> Batch:
        """The composed operations as a :class:`~batchnb.Batch`, not validated: what the form shows."""
        return Batch(_nest(self._entries), validate=False)

    def labels(self) -> list[str]:
        """One line per composed operation, secrets masked, as the form's list shows them."""
        return [_label(i, e) for i, e in enumerate(self._entries)]

    def wire_json(self) -> str:
        """The batch as the JSON sent on the wire, secrets masked, indented."""
        return json.dumps(masked_wire(self.unchecked_batch()), indent=2, ensure_ascii=False)

    # ------------------------------------------------------------ checking the fields

    def check(self, fields: Fields, *, final: bool = False) -> Check:
        """What is wrong with ``fields`` as the next operation; ``final`` also reports empty required fields.

        >>> Draft().check(Fields("FETCH", "/x", body="[1,")).problems
        {'method': "unknown method 'FETCH'; use one of GET, POST, PUT, DELETE, PATCH", \
'body': 'invalid JSON at line 1, column 4: Expecting value'}

        Every rule is in ``batchnb._rules``; the draft only says which field a problem belongs to.
        """
        problems: dict[str, str] = {}

        def put(fld: str, message: str | None) -> None:
            # While typing, a field not filled in yet is no problem: only adding says it is required.
            if message and fld not in problems and (final or not message.startswith("is required")):
                problems[fld] = message

        names = [e.op.name for e in self._entries]
        here = len(names)
        new_name = fields.name.strip() or None
        put("method", _rules.method_problem(fields.method.strip()))
        path = fields.path.strip()
        put("path", _path_problem(path))
        put("name", _rules.name_problem(new_name))
        if fields.parent:
            _up, linked = _rules.link_parents(
                [*names, new_name], [*([None] * here), fields.parent], describe=self._describe
            )
            for p in linked:
                put("parent", p.message)
        body, body_problem = parse_body(fields.body)
        put("body", body_problem)

        row_messages: dict[int, str] = {}
        values: list[tuple[Any, Any]] = [("path", path), ("body", body)]
        items = list(enumerate(fields._header_items(), start=1))
        repeated = dict(_rules.header_set_problems(key for _i, (key, _v) in items if key))
        for i, (key, value) in items:
            if not key and not value:
                continue
            message = "the header needs a name" if not key else next(iter(_rules.header_problems(key, value)), None)
            if message is None and key in repeated:
                message = repeated.pop(key)
            if message:
                row_messages[i] = message
            else:
                values.append((i, value))
        references: list[_rules.Reference] = []
        for fld, value in values:
            try:
                references.extend(_rules.Reference(here, fld, r.name, r.text) for r in _refs.iter_refs(value))
            except _refs.RefSyntaxError as exc:
                if isinstance(fld, int):
                    row_messages.setdefault(fld, str(exc))
                else:
                    put(fld, str(exc))
        for p in _rules.check_graph([*names, new_name], references, describe=self._describe):
            if p.position != here:
                continue
            if isinstance(p.field, int):
                row_messages.setdefault(p.field, p.message)
            else:
                put(str(p.field), p.message)

        header_messages = [
            f"header {i} ({key or 'no name'}): {row_messages[i]}" for i, (key, _value) in items if i in row_messages
        ]
        if header_messages:
            problems["headers"] = "; ".join(header_messages)
        return Check(problems, row_messages)

    def _describe(self, position: int) -> str:
        """How a message names the composed operation at ``position``."""
        return f"operation {position + 1}" if position < len(self._entries) else "this operation"

    # ------------------------------------------------------------ changing the draft

    def add(self, fields: Fields) -> Refusal | None:
        """Add the operation of ``fields`` if every field is right and the batch stays valid; else say why not.

        >>> Draft().add(Fields("GET", "")).messages
        ["path: is required: a path such as '/api/2.1/scheduling/companies'"]
        """
        check = self.check(fields, final=True)
        if check:
            return Refusal(
                "Not added: fix the fields marked in red.",
                [f"{fld}: {message}" for fld, message in check.problems.items()],
            )
        candidate = [*self._entries, _Entry(fields.operation(), fields.parent or None)]
        try:
            Batch(_nest(candidate))
        except BatchValidationError as exc:
            return Refusal("Not added: the batch would be invalid.", [str(p) for p in exc.problems])
        self._entries = candidate
        return None

    def remove(self, index: int | None) -> Refusal | None:
        """Remove the operation at ``index`` and those nested under it, unless another one uses their results.

        >>> draft = Draft()
        >>> draft.add(Fields("POST", "/companies", name="co"))
        >>> draft.add(Fields("GET", "/companies/${result=co:$.id}"))
        >>> draft.remove(0).messages
        ['2. GET /companies/${result=co:$.id} uses ${result=co:$.id}']
        """
        if index is None or not 0 <= index < len(self._entries):
            return Refusal("Nothing removed.", ["select an operation in the list first"])
        doomed = _descendants(self._entries, index)
        rest = [(i, e) for i, e in enumerate(self._entries) if i not in doomed]
        gone = {self._entries[i].op.name for i in doomed} - {None}
        users = [f"{_label(i, e)} uses {r.text}" for i, e in rest for _f, r in e.op.references() if r.name in gone]
        if users:
            return Refusal("Not removed: other operations use its result; remove them first.", users)
        self._entries = [e for _i, e in rest]
        return None

    def clear(self) -> None:
        """Forget every composed operation."""
        self._entries = []

    # ------------------------------------------------------------ frames

    def to_frame(self) -> pd.DataFrame:
        """The composed operations, one row each: name, method, path, body, headers, parent.

        >>> draft = Draft()
        >>> draft.add(Fields("POST", "/companies", name="co", body='{"name": "Riverside"}'))
        >>> draft.to_frame().to_dict("records")
        [{'name': 'co', 'method': 'POST', 'path': '/companies', 'body': {'name': 'Riverside'}, \
'headers': None, 'parent': None}]
        """
        import pandas as pd

        rows = [
            {
                "name": e.op.name,
                "method": e.op.method,
                "path": e.op.path,
                "body": e.op.body,
                "headers": dict(e.op.headers) if e.op.headers else None,
                "parent": e.parent,
            }
            for e in self._entries
        ]
        return pd.DataFrame(rows, columns=list(OPERATION_COLUMNS), dtype=object)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, **columns: Any) -> Draft:
        """A draft of the operations of ``df`` (the columns of :meth:`to_frame`, read by :func:`batchnb.from_frame`).

        >>> import pandas as pd
        >>> Draft.from_frame(pd.DataFrame({"method": ["GET"], "path": ["/companies"]})).batch
        Batch(1 operation)

        Raises BatchValidationError naming the row and column of every problem.
        """
        from .frames import from_frame

        entries = [
            _Entry(replace(op, requests=[]), parent)
            for top in from_frame(df, **columns)
            for op, parent in _flatten(top, None)
        ]
        Batch(_nest(entries))  # names, order and references as a whole
        draft = cls()
        draft._entries = entries
        return draft


# ---------------------------------------------------------------- entries


def _label(i: int, entry: _Entry) -> str:
    under = f"  (under {entry.parent})" if entry.parent else ""
    name = f"{entry.op.name}: " if entry.op.name else ""
    return f"{i + 1}. {name}{entry.op.method} {mask_path(entry.op.path)}{under}"


def _nest(entries: list[_Entry]) -> list[Operation]:
    """Top-level operations with their children attached (copies: entries stay flat)."""
    by_name: dict[str, Operation] = {}
    top: list[Operation] = []
    for entry in entries:
        op = replace(entry.op, requests=[])
        if op.name:
            by_name[op.name] = op
        parent = by_name.get(entry.parent) if entry.parent else None
        (parent.requests if parent is not None else top).append(op)
    return top


def _descendants(entries: list[_Entry], index: int) -> list[int]:
    """``index`` and every entry nested under it, in order."""
    doomed = [index]
    names = {entries[index].op.name} - {None}
    for i in range(index + 1, len(entries)):
        if entries[i].parent in names:
            doomed.append(i)
            if entries[i].op.name:
                names.add(entries[i].op.name)
    return doomed


def _flatten(op: Operation, parent: str | None) -> Iterable[tuple[Operation, str | None]]:
    """An operation and its descendants, depth first, each with its parent's name."""
    yield op, parent
    for child in op.requests:
        yield from _flatten(child, op.name)


def _into_body(body: str, text: str) -> str:
    if not body.strip():
        return json.dumps(text)
    if '""' in body:
        return body.replace('""', json.dumps(text), 1)
    return body + text
