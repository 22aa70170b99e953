"""The OpenAPI 3.1 document a server answers at ``GET /api/2.3/openapi.json``.

It describes the batch endpoint as this server runs it: the limits it
announces (:class:`~batchnb.server.Limits`), whether it asks for
credentials, and every rule of an operation as a JSON Schema, each pattern
made from ``batchnb._rules`` (:mod:`batchnb.server._patterns`), never
written twice. An API served in-process may describe itself too (the demo
Scheduling API does, :mod:`batchnb.demo._openapi`): its paths and
components join the document; a gateway's document has the batch endpoint only.

    >>> from batchnb.server import Limits
    >>> doc = document(Limits(max_requests=20), idempotency=False, secured=True)
    >>> doc["openapi"], doc["components"]["schemas"]["Batch"]["properties"]["requests"]["maxItems"]
    ('3.1.0', 20)

What no schema can say is written in the descriptions: operation names are
unique in a batch, nested operations count toward ``maxRequests``, a
reference names an earlier operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .. import _rules
from ..model import BATCH_PATH
from . import _patterns
from .limits import Limits

__all__ = ["OPENAPI_PATH", "document", "error_responses"]

#: where a server answers its OpenAPI document.
OPENAPI_PATH = "/api/2.3/openapi.json"

_REF = "#/components/schemas/"
_JSON = "application/json"
_REFERENCES = (
    "Any string of an operation may also hold references, `${result=NAME:JSONPATH}`, to the results of "
    "operations that run earlier (see the docs): the patterns here describe text without them."
)


def document(
    limits: Limits, *, idempotency: bool, secured: bool, api: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The whole document: the batch endpoint under ``limits``, and ``api``'s paths and components if given.

    ``secured``: the batch endpoint asks for credentials (a Bearer token, or
    the ``apiKey`` and ``token`` query parameters).
    """
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Batch API 2.3" + (f" in front of {api['info']['title']}" if api else ""),
            "version": "2.3",
            "description": (
                "Several API operations in one request, along one authentication: "
                f"`POST {BATCH_PATH}`. Served by batchnb."
            ),
        },
        "paths": {
            BATCH_PATH: _batch_path(limits, secured=secured),
            OPENAPI_PATH: _document_path(),
        },
        "components": {
            "schemas": _schemas(limits, idempotency),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "query", "name": "apiKey"},
                "token": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
    if api is not None:
        doc["paths"].update(api["paths"])
        for kind, entries in api.get("components", {}).items():
            doc["components"].setdefault(kind, {}).update(entries)
    return doc


#: credentials as the batch endpoint and the demo API take them: a Bearer token, or both query parameters.
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": [], "token": []}]


def error_responses(*statuses: int, schema: str = "Error") -> dict[str, Any]:
    """``statuses`` answered with the JSON error shape ``schema`` (a name under components/schemas)."""
    out: dict[str, Any] = {}
    for status in statuses:
        answer: dict[str, Any] = {
            "description": _REASONS[status],
            "content": {_JSON: {"schema": {"$ref": _REF + schema}}},
        }
        if status in (409, 429):
            answer["headers"] = {"Retry-After": _header("seconds to wait before trying again", required=True)}
        out[str(status)] = answer
    return out


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized: no credentials, or wrong ones",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
}


def _header(description: str, *, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": {"type": "string"}}


def _batch_path(limits: Limits, *, secured: bool) -> dict[str, Any]:
    post: dict[str, Any] = {
        "operationId": "runBatch",
        "summary": "Run a batch of operations",
        "description": (
            "Operations run in order, depth first (or up to `parallel` at once, dependencies kept). "
            f"A batch holds at most {limits.max_requests} operations, nested ones included, nested at most "
            f"{limits.max_depth} deep; names are unique in the whole batch. {_REFERENCES}"
        ),
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"$ref": _REF + "Batch"}}}},
        "responses": {
            "200": {
                "description": "The batch ran: one answer per operation, whatever its status",
                "headers": {"Server-Timing": _header("where the batch's time went, in ms", required=True)},
                "content": {_JSON: {"schema": {"$ref": _REF + "BatchAnswer"}}},
            },
            **error_responses(400, *((401,) if secured else ()), 408, 413, 415, 429),
        },
    }
    if secured:
        post["security"] = SECURITY
    get = {
        "operationId": "getLimits",
        "summary": "The server's limits, so that a client can split its work",
        "responses": {"200": {"description": "The limits", "content": {_JSON: {"schema": {"$ref": _REF + "Limits"}}}}},
    }
    return {"get": get, "post": post}


def _document_path() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "getOpenAPI",
            "summary": "This document",
            "responses": {
                "200": {"description": "The OpenAPI document", "content": {_JSON: {"schema": {"type": "object"}}}}
            },
        }
    }


def _string(pattern: str, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "pattern": pattern}
    if description:
        out["description"] = description
    return out


def _schemas(limits: Limits, idempotency: bool) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Batch": {
            "type": "object",
            "required": ["requests"],
            "additionalProperties": False,
            "properties": {
                "requests": _children(limits, 0),
                "parallel": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": limits.max_parallel,
                    "description": "how many operations may run at once (1: one at a time, depth first)",
                },
            },
        },
        "Text": _string(_patterns.text(), "a string that holds no reference"),
        "Json": {
            "description": "any JSON value; its strings and keys are Text",
            "anyOf": [
                {"type": ["null", "boolean", "number"]},
                {"$ref": _REF + "Text"},
                {"type": "array", "items": {"$ref": _REF + "Json"}},
                {
                    "type": "object",
                    "propertyNames": {"$ref": _REF + "Text"},
                    "additionalProperties": {"$ref": _REF + "Json"},
                },
            ],
        },
        "Headers": {
            "description": (
                "an operation's own headers, replacing the batch's of the same name; a name given twice "
                "in two cases is refused"
            ),
            "anyOf": [
                {
                    "type": "object",
                    "propertyNames": {"pattern": _patterns.header_name()},
                    "additionalProperties": _string(_patterns.header_value()),
                },
                _string(_patterns.header_lines(), "'Name: value' lines"),
                {"type": "null"},
            ],
        },
        "BatchAnswer": {
            "type": "object",
            "required": ["responses"],
            "properties": {"responses": {"type": "array", "items": {"$ref": _REF + "OperationAnswer"}}},
        },
        "OperationAnswer": {
            "type": "object",
            "required": ["path", "method", "status", "duration", "body"],
            "properties": {
                "path": {"type": "string", "description": "the path as run, references filled in"},
                "method": {"type": "string", "enum": list(_rules.METHODS)},
                "name": {"type": "string"},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "duration": {"type": "number", "minimum": 0, "description": "milliseconds"},
                "body": {"description": "the API's answer: JSON, text, or null when empty"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "responses": {"type": "array", "items": {"$ref": _REF + "OperationAnswer"}},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["pointer", "message"],
                                "properties": {
                                    "pointer": {
                                        "type": "string",
                                        "description": "where in the batch: requests[3].path ('' the whole body)",
                                    },
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
        "Limits": _limits(limits, idempotency),
    }
    for level in range(1, max(limits.max_depth, 1) + 1):
        schemas[f"Operation{level}"] = _operation(limits, level)
    return schemas


def _children(limits: Limits, level: int) -> dict[str, Any]:
    """The ``requests`` list of an operation at ``level`` (0: the batch's own): at most what the limits leave room for."""
    if level >= limits.max_depth:
        return {"type": ["array", "null"], "maxItems": 0, "description": f"nothing: at most {limits.max_depth} levels"}
    return {
        "type": "array" if level == 0 else ["array", "null"],
        "maxItems": max(limits.max_requests - level, 0),
        "items": {"$ref": f"{_REF}Operation{level + 1}"},
        "description": f"at most {limits.max_requests} operations in the whole batch, nested ones included",
    }


def _operation(limits: Limits, level: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["method", "path"],
        "additionalProperties": False,
        "description": f"an operation at nesting level {level}. {_REFERENCES}",
        "properties": {
            "method": _string(_patterns.method(), "any case"),
            "path": _string(
                _patterns.operation_path(),
                "relative to the API: no scheme or host, no '.' or '..' segments (plain, percent-encoded or "
                "double-encoded), no backslash, control character or space",
            ),
            "body": {"$ref": _REF + "Json"},
            "name": {"type": ["string", "null"], "pattern": _patterns.operation_name()},
            "headers": {"$ref": _REF + "Headers"},
            "requests": _children(limits, level),
        },
    }


def _limits(limits: Limits, idempotency: bool) -> dict[str, Any]:
    """What ``GET /api/2.3/batch`` answers: each limit this server announces, with its value."""
    wire = limits.to_wire()
    properties: dict[str, Any] = {"version": {"const": wire["version"]}}
    for f in fields(limits):
        name = f.metadata.get("wire")
        if name:
            kind = "integer" if isinstance(getattr(limits, f.name), int) else "number"
            properties[name] = {"type": kind, "const": getattr(limits, f.name), "description": f.metadata["help"]}
    properties["idempotency"] = {
        "const": idempotency,
        "description": "whether the API behind honours Idempotency-Key on an operation's headers",
    }
    return {"type": "object", "required": list(properties), "additionalProperties": False, "properties": properties}
