"""A batch's answer read as untrusted input: its envelope parsed, every body kept as its JSON text.

Nearly all the bytes of an answer are the operations' bodies. Parsed into
Python objects they take 5 to 20 times their size (an answer of 64 MiB took
2 GB), so here only the envelope is parsed — each response's status, name,
path, headers and children — and each body stays the text the server sent,
a :class:`~batchnb._json.RawJSON`, until a cell of the result is read or a
reference looks into it.

    >>> from batchnb.model import Operation
    >>> [r] = read_answer(b'{"responses": [{"method": "GET", "path": "/x", "status": 200, "body": {"id": 7}}]}',
    ...                   [Operation("GET", "/x")])
    >>> r.status, r.body, r.body.value()
    (200, RawJSON({"id":7}), {'id': 7})

The answer must match what was sent, operation for operation (else its
outcome is unknown: None). A body that a journal line or a cell could not
hold as JSON (nested deeper than 254 levels with what wraps it, or JSON that
:func:`~batchnb._json.loads` refuses) is kept as its text, a ``str``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import _json
from ._engine import _ANSWER_LEVELS
from .model import Operation, Response

__all__ = ["read_answer"]

#: a field other than a body is read only up to this size (a string of any size: it costs its bytes, no more).
_SMALL = 64 * 1024


class _Wire(msgspec.Struct, kw_only=True):
    """One response of an answer, each field left as its JSON text (read by :func:`_response`)."""

    method: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    path: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    name: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    status: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    duration: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    headers: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    body: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    #: what older servers call the body.
    response: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    responses: list[_Wire] | None = None


class _Answer(msgspec.Struct):
    responses: list[_Wire]


_DECODER = msgspec.json.Decoder(_Answer)


def read_answer(raw: bytes, ops: list[Operation]) -> list[Response] | None:
    """The responses of the answer ``raw`` to ``ops``, or None when it is no answer to them.

    >>> read_answer(b'{"responses": []}', [Operation("GET", "/x")]) is None  # one operation sent, none answered
    True
    """
    try:
        answer = _DECODER.decode(raw)
    except msgspec.DecodeError:  # ValidationError is one too
        return None
    except RecursionError:
        return _read_parsed(raw, ops)
    if not _same_shape(ops, answer.responses):
        return None
    return [Response.from_wire(_fields(w, 0)) for w in answer.responses]


def _same_shape(ops: list[Operation], wires: list[_Wire]) -> bool:
    if len(ops) != len(wires):
        return False
    return all(_same_shape(op.requests, w.responses or []) for op, w in zip(ops, wires))


def _fields(wire: _Wire, level: int) -> dict[str, Any]:
    """A response's fields as :meth:`Response.from_wire` reads them, its body kept as text."""
    out: dict[str, Any] = {}
    for name in ("method", "path", "name", "status", "duration", "headers"):
        value = getattr(wire, name)
        if value is not msgspec.UNSET:
            out[name] = _small(value)
    body = wire.body if wire.body is not msgspec.UNSET else wire.response
    if body is not msgspec.UNSET:
        out["body"] = _body(body, level)
    out["responses"] = [_fields(child, level + 1) for child in wire.responses or []]
    return out


def _small(raw: msgspec.Raw) -> Any:
    """A field's value; None for one too large to be what it claims to be (a status, a name, headers)."""
    view = memoryview(raw)
    if len(view) > _SMALL and bytes(view[:1]) != b'"':
        return None
    try:
        return _json.loads(bytes(view))
    except (ValueError, RecursionError):
        return None


def _body(raw: msgspec.Raw, level: int) -> Any:
    """A body as the result keeps it: JSON as its text, ``null`` as None, and what JSON cannot carry here as text."""
    view = memoryview(raw)
    if len(view) == 4 and bytes(view) == b"null":
        return None
    try:
        # With what wraps it in a journal's line (as in an answer), at most 254 levels: dumps and every parser take it.
        return _json.RawJSON.of(view, most_depth=_json.MAX_DEPTH - _ANSWER_LEVELS - 2 * level)
    except ValueError:
        return bytes(view).decode("utf-8", "replace")


# ---------------------------------------------------------------- answers nested deeper than the checker goes


def _read_parsed(raw: bytes, ops: list[Operation]) -> list[Response] | None:
    """An answer holding a body nested deeper than :data:`_DECODER` goes (about 900 levels), read as objects.

    Rare, and bounded by the answer's size: parsed whole (up to the 1,024
    levels :func:`~batchnb._json.loads` reads), each body that JSON could
    not write again kept as its text.
    """
    try:
        data = _json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not _same_parsed_shape(ops, data.get("responses")):
        return None
    return [Response.from_wire(_parsed_fields(r, 0)) for r in data["responses"]]


def _same_parsed_shape(ops: list[Operation], responses: Any) -> bool:
    if not isinstance(responses, list) or len(ops) != len(responses):
        return False
    if not all(isinstance(r, dict) for r in responses):
        return False
    return all(_same_parsed_shape(op.requests, r.get("responses") or []) for op, r in zip(ops, responses))


def _parsed_fields(response: dict[str, Any], level: int) -> dict[str, Any]:
    out = {k: v for k, v in response.items() if k not in ("body", "response", "responses")}
    body = response["body"] if "body" in response else response.get("response")
    if _nests_past(body, _json.MAX_DEPTH - _ANSWER_LEVELS - 2 * level):
        body = _written(body)
    out["body"] = body
    out["responses"] = [_parsed_fields(child, level + 1) for child in response.get("responses") or []]
    return out


def _nests_past(value: Any, most: int) -> bool:
    """Whether ``value`` nests more than ``most`` levels (counted without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            if depth > most:
                return True
            stack.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return False


class _Text(str):
    """JSON text to write as it is (a bracket, a key): not a string value."""


def _written(value: Any) -> str:
    """``value`` as compact JSON, however deep it nests (written without recursion).

    >>> _written({"a": [1, {"b": None}], "c": "d"})
    '{"a":[1,{"b":null}],"c":"d"}'
    """
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Text:
            out.append(item)
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Text("}"))
            entries = list(item.items())
            for i in range(len(entries) - 1, -1, -1):
                key, inner = entries[i]
                stack.append(inner)
                stack.append(_Text(("," if i else "") + _json.dumps(str(key)).decode() + ":"))
        elif isinstance(item, list):
            out.append("[")
            stack.append(_Text("]"))
            for i in range(len(item) - 1, -1, -1):
                stack.append(item[i])
                if i:
                    stack.append(_Text(","))
        else:
            out.append(_json.dumps(item).decode())
    return "".join(out)
