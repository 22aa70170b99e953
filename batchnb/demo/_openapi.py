"""The demo Scheduling API in OpenAPI 3.1: its paths and components, made from its router and its validation.

Each path is asked of the router (which methods it answers, and with which
handler); each body's schema is what the fields' checks carry
(``check.schema``, set in :mod:`batchnb.demo.scheduling`); ids, pages and
idempotency keys come from the patterns the API matches them with. Links
chain each resource from its creation to its read, update and delete, so
that a stateful tester (Schemathesis) can follow them.

    >>> from batchnb.demo.scheduling import scheduling_app
    >>> from batchnb.demo._store import Store
    >>> from batchnb.server.auth import Keyring
    >>> paths = describe(scheduling_app(Store(":memory:"), Keyring({"k": "t"})))["paths"]
    >>> sorted(paths["/api/2.1/scheduling/companies/{company_id}/services"])
    ['get', 'post']
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

from ..server._openapi import SECURITY, error_responses
from ..server._patterns import char_class
from . import idempotency
from ._store import MAX_LIMIT, Kind
from .scheduling import (
    _ID_PATTERNS,
    _INVALID,
    _LIMIT_RE,
    _OFFSET_RE,
    _PLURAL,
    _RULES,
    API_PREFIX,
    MAX_BODY_BYTES,
    SchedulingApp,
    _Field,
)

__all__ = ["describe"]

_REF = "#/components/schemas/"
_JSON = "application/json"
_ERROR = "SchedulingError"


def describe(api: SchedulingApp) -> dict[str, Any]:
    """The OpenAPI 3.1 paths and components of ``api``, made from its routes and its validation.

    >>> from batchnb.demo.scheduling import scheduling_app
    >>> from batchnb.demo._store import Store
    >>> from batchnb.server.auth import Keyring
    >>> sorted(describe(scheduling_app(Store(":memory:"), Keyring({"key-a": "tok-a"})))["paths"])[0]
    '/api/2.1/scheduling/companies'
    """
    route = api._route  # the router the API itself routes with: the document names what it serves
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {_ERROR: _error_schema()}
    for kind, plural in _PLURAL.items():
        parent = "" if kind == "company" else "/companies/{company_id}"
        collection = f"{API_PREFIX}{parent}/{plural}"
        item = f"{collection}/{{{_param(kind)}}}"
        title = _title(kind)
        schemas[title] = _item_schema(kind)
        schemas[f"{title}New"] = _body_schema(kind, partial=False)
        schemas[f"{title}Changes"] = _body_schema(kind, partial=True)
        for template in (collection, item):
            found = route(_sample(template))
            assert found is not None, f"the router names nothing at {template}"
            paths[template] = {
                method.lower(): _operation(kind, template, method, cast("partial[Any]", handler))
                for method, handler in found[0].items()  # each handler is partial(api.<action>, kind)
            }
    return {"info": {"title": "the demo Scheduling API"}, "paths": paths, "components": {"schemas": schemas}}


# ---------------------------------------------------------------- names


def _title(kind: str) -> str:
    return kind[0].upper() + kind[1:]


def _param(kind: str) -> str:
    return f"{kind}_id"


def _sample(template: str) -> str:
    """A path the template stands for: each parameter an id that is not there."""
    return re.sub(r"\{[a-z_]+\}", "x", template)


def _operation_id(verb: str, kind: str) -> str:
    return f"{verb}{_title(_PLURAL[cast(Kind, kind)]) if verb == 'list' else _title(kind)}"


# ---------------------------------------------------------------- operations


def _operation(kind: str, template: str, method: str, handler: partial[Any]) -> dict[str, Any]:
    """One method of one path, from the handler the router gives it (``partial(api.create, kind)``, …)."""
    action = handler.func.__name__
    params = [_id_parameter("company", "company")] if "{company_id}" in template else []
    if kind != "company" and f"{{{_param(kind)}}}" in template:
        params.append(_id_parameter(kind, kind))
    # Where the API honours Idempotency-Key: the header, its 409 and 422, and Idempotent-Replayed on a replay.
    keyed = method in idempotency.METHODS
    key_errors = (409, 422) if keyed else ()
    op: dict[str, Any] = {"security": SECURITY, "parameters": params + ([_key_parameter()] if keyed else [])}
    if action == "list_items":
        op["operationId"] = _operation_id("list", kind)
        op["parameters"] = params + _page_parameters()
        op["responses"] = {
            "200": _ok(
                {
                    "type": "object",
                    "required": ["items", "limit", "offset"],
                    "properties": {
                        "items": {"type": "array", "items": {"$ref": _REF + _title(kind)}},
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
                "a page of them, in the order they were made",
            ),
            **_errors(400, 401, *((404,) if params else ())),
        }
    elif action == "create":
        op["operationId"] = _operation_id("create", kind)
        op["requestBody"] = _body(f"{_title(kind)}New")
        created = _ok({"$ref": _REF + _title(kind)}, "created")
        created["headers"] = {
            "Location": {"description": "where it is", "required": True, "schema": {"type": "string"}},
            **(_replayed() if keyed else {}),
        }
        created["links"] = _links_from_created(kind)
        op["responses"] = {"201": created, **_errors(400, 401, *((404,) if params else ()), *key_errors, 413)}
    elif action == "get":
        op["operationId"] = _operation_id("get", kind)
        op["responses"] = {"200": _ok({"$ref": _REF + _title(kind)}, "it"), **_errors(401, 404)}
    elif action == "update":
        partial_update = handler.args[1]
        op["operationId"] = _operation_id("update" if partial_update else "replace", kind)
        op["requestBody"] = _body(f"{_title(kind)}{'Changes' if partial_update else 'New'}")
        updated = _ok({"$ref": _REF + _title(kind)}, "as it is now")
        if keyed:
            updated["headers"] = _replayed()
        op["responses"] = {"200": updated, **_errors(400, 401, 404, *key_errors, 413)}
    elif action == "delete":
        op["operationId"] = _operation_id("delete", kind)
        if kind == "appointment":
            op["description"] = "cancels it: the appointment is kept for the record, with status 'cancelled'"
        op["responses"] = {"204": {"description": "done"}, **_errors(401, 404)}
    else:
        raise AssertionError(f"the router names a handler this document does not know: {action}")
    return op


def _errors(*statuses: int) -> dict[str, Any]:
    return error_responses(*statuses, schema=_ERROR)


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"a JSON object of at most {MAX_BODY_BYTES} bytes; fields not listed are ignored",
        "content": {_JSON: {"schema": {"$ref": _REF + schema}}},
    }


def _id_parameter(kind: str, noun: str) -> dict[str, Any]:
    return {
        "name": _param(kind),
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{_ID_PATTERNS[kind].pattern}$"},
        "description": f"the {noun}'s id (any other segment names nothing: 404)",
    }


def _digits(pattern: re.Pattern[str]) -> int:
    """The most digits ``[0-9]{1,N}`` lets through."""
    found = re.fullmatch(r"\[0-9\]\{1,(\d+)\}", pattern.pattern)
    assert found, f"the page's pattern changed: {pattern.pattern}"
    return int(found.group(1))


def _page_parameters() -> list[dict[str, Any]]:
    most_offset = 10 ** _digits(_OFFSET_RE) - 1
    return [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": min(MAX_LIMIT, 10 ** _digits(_LIMIT_RE) - 1)},
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": most_offset},
        },
    ]


def _key_parameter() -> dict[str, Any]:
    # What idempotency.parse_key reads (tests/test_openapi.py holds the two together): a quoted string (a
    # Structured Field, as the draft writes it) or a bare token, 1 to 255 long once read; HTTP itself drops
    # the spaces and tabs around a header's value.
    quoted_unit = r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])'
    key = f'(?:"{quoted_unit}{{1,255}}"|[\\x21\\x23-\\x7e]{{1,255}})'
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": f"^[ \\t]*{key}[ \\t]*$"},
        "description": (
            "the same key again with the same request answers the first answer (Idempotent-Replayed: true); "
            "with another request 422; while the first still runs 409"
        ),
    }


def _replayed() -> dict[str, Any]:
    return {
        "Idempotent-Replayed": {
            "description": "true when this is the first answer to the same key, again",
            "required": False,
            "schema": {"type": "string", "enum": ["true"]},
        }
    }


# ---------------------------------------------------------------- links


def _links_from_created(kind: str) -> dict[str, Any]:
    """What a client does next with what it just made: read it, change it, delete it, fill it."""
    created = "$response.body#/id"
    company = created if kind == "company" else "$request.path.company_id"
    ids = {"company_id": company} if kind == "company" else {"company_id": company, _param(kind): created}
    links: dict[str, Any] = {
        f"{verb}It": {"operationId": _operation_id(verb, kind), "parameters": ids}
        for verb in ("get", "replace", "update", "delete")
    }
    if kind == "company":
        for child in _PLURAL:
            if child != "company":
                links[f"list{_title(_PLURAL[child])}"] = {
                    "operationId": _operation_id("list", child),
                    "parameters": {"company_id": created},
                }
                links[f"create{_title(child)}"] = {
                    "operationId": _operation_id("create", child),
                    "parameters": {"company_id": created},
                }
    elif kind == "service":
        links["createStaffForIt"] = {
            "operationId": _operation_id("create", "staff"),
            "parameters": {"company_id": company},
            "requestBody": {"services": [{"id": created}]},
        }
    elif kind == "staff":
        links["createAppointmentWithThem"] = {
            "operationId": _operation_id("create", "appointment"),
            "parameters": {"company_id": company},
            "requestBody": {"staffId": created, "serviceId": "$response.body#/services/0/id"},
        }
    return links


# ---------------------------------------------------------------- schemas


def _field_schema(field: _Field) -> dict[str, Any]:
    """What the field's check accepts, as its ``schema`` says (and what only asking it tells)."""
    check = field.check
    schema: dict[str, Any] = copy.deepcopy(cast(Any, check).schema)  # every check of the demo is described
    fields = getattr(check, "fields", None)  # a nested object's check lists its fields
    if schema.get("type") == "object" and fields is not None:
        schema["properties"] = {f.name: _property(f) for f in fields}
    if schema.get("type") == "string" and "pattern" not in schema and not schema.get("format"):
        blank = _blank(check)
        if blank:
            schema["pattern"] = char_class(blank, negate=True)  # one character that is not white space
    return schema


def _blank(check: Callable[[Any, str, list[dict[str, str]]], Any]) -> str:
    """The white space a string check refuses as nothing at all ("must not be empty"), asked of the check."""
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    return "".join(c for c in spaces if check(c, "x", []) is _INVALID)


def _property(field: _Field) -> dict[str, Any]:
    schema = _field_schema(field)
    if field.nullable and not field.required:
        return {"anyOf": [schema, {"type": "null"}], "description": "null: not set"}
    return schema


def _body_schema(kind: str, *, partial: bool) -> dict[str, Any]:
    fields: Sequence[_Field] = _RULES[kind]
    schema: dict[str, Any] = {"type": "object", "properties": {f.name: _property(f) for f in fields}}
    if not partial:
        schema["required"] = [f.name for f in fields if f.required]
    return schema


def _item_schema(kind: str) -> dict[str, Any]:
    """An item as the API answers it: its id, its company's, and every field, null when not set."""
    properties: dict[str, Any] = {"id": {"type": "string", "pattern": f"^{_ID_PATTERNS[kind].pattern}$"}}
    if kind != "company":
        properties["companyId"] = {"type": "string", "pattern": f"^{_ID_PATTERNS['company'].pattern}$"}
    for f in _RULES[kind]:
        schema = _field_schema(f)
        keeps_a_value = f.required or f.default is not None
        properties[f.name] = schema if keeps_a_value else {"anyOf": [schema, {"type": "null"}]}
    return {"type": "object", "required": list(properties), "properties": properties}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "message"],
                            "properties": {
                                "field": {
                                    "type": "string",
                                    "description": (
                                        "the field of the request: address.zip, services[1].id, limit, "
                                        "headers.Idempotency-Key (the batch's own errors say pointer, into the batch)"
                                    ),
                                },
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }
