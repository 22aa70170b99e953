"""The demo Scheduling API v2.1 over a :class:`Store`: a plain ASGI app, and a dispatcher the batch engine calls directly.

The batch server calls this API in-process for every operation of a batch,
so the request path is kept short: its own dispatcher (:meth:`SchedulingApp.dispatch`,
no ASGI messages), no middleware, a router that splits the path into its
segments (eight routes need no regular expressions), and synchronous SQLite
calls (each takes microseconds, far less than a thread hand-off would).
Requests over HTTP come through the ASGI app; both ways read a request into
one record and answer it with the same code.

Routes, all under ``/api/2.1/scheduling``::

    /companies                                   GET list, POST create
    /companies/{company_id}                      GET, PUT, PATCH, DELETE
    /companies/{company_id}/services             GET list, POST create
    /companies/{company_id}/services/{id}        GET, PUT, PATCH, DELETE
    /companies/{company_id}/staff                (same)
    /companies/{company_id}/staff/{id}
    /companies/{company_id}/appointments         (same; DELETE cancels)
    /companies/{company_id}/appointments/{id}

Example:
    >>> import asyncio, httpx
    >>> store, ring = Store(":memory:"), Keyring({"key-a": "tok-a"})
    >>> async def demo():
    ...     transport = httpx.ASGITransport(app=scheduling_app(store, ring))
    ...     async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
    ...         r = await client.post("/api/2.1/scheduling/companies", json={"name": "Salon"},
    ...                               headers={"Authorization": "Bearer tok-a"})
    ...         return r.status_code, r.json()["name"]
    >>> asyncio.run(demo())
    (201, 'Salon')
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote

from .. import _json
from .._asgi import Receive, Scope, Send
from .._dispatch import DispatchResult, route_path
from ..server.auth import Keyring
from . import idempotency
from ._store import DEFAULT_LIMIT, ID_PREFIXES, MAX_LIMIT, InvalidReference, KeyRecord, Kind, Store

__all__ = ["API_PREFIX", "MAX_BODY_BYTES", "SchedulingApp", "scheduling_app"]

#: where the demo API's routes start.
API_PREFIX = "/api/2.1/scheduling"
#: the largest request body the demo API reads (1 MiB); a larger one answers 413.
MAX_BODY_BYTES = 1024 * 1024

_log = logging.getLogger(__name__)

# ASGI's three: a connection's scope, and the calls that receive and send its messages.

_JSON_HEADERS = [(b"content-type", b"application/json")]

# -- responses -----------------------------------------------------------

_RawHeaders = Sequence[tuple[bytes, bytes]]
_Result = tuple[int, Any, _RawHeaders]


class _Undone(Exception):
    """Leaves a keyed request's transaction so that its writes are undone: ``reply`` is its refusal, None when the key held an answer."""

    def __init__(self, reply: _Reply | None) -> None:
        self.reply = reply


class _Reply(Exception):
    """Ends a handler early with a ready response (errors only)."""

    def __init__(self, status: int, payload: Any, headers: _RawHeaders = ()) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers


class _ClientGone(Exception):
    """The client disconnected before sending the whole body."""


def _error(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> _Reply:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return _Reply(status, {"error": err})


def _shown(text: str, limit: int = 64) -> str:
    # Ids echoed in messages come from the caller: bound their length and
    # drop anything (e.g. lone surrogates) that cannot be encoded as UTF-8.
    clipped = text[:limit].encode("utf-8", "replace").decode("utf-8")
    return clipped + "…" if len(text) > limit else clipped


def _not_found(noun: str, item_id: str) -> _Reply:
    return _error(404, "not_found", f"{noun} '{_shown(item_id)}' not found")


def _invalid(details: list[dict[str, str]]) -> _Reply:
    count = len(details)
    message = f"Validation failed: {count} invalid field{'s' if count != 1 else ''}"
    return _error(400, "validation_error", message, details)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _encode(payload: Any) -> bytes:
    try:
        return _json.dumps(payload)  # the fast path; the same compact JSON
    except TypeError:
        pass  # a lone surrogate, which only an escape can carry
    try:
        return _ENCODER.encode(payload).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(payload).encode("ascii")


async def _send(send: Send, status: int, payload: Any, headers: _RawHeaders = (), *, head: bool = False) -> None:
    """Answer with ``payload`` as JSON; for a HEAD request, the same head without the body (RFC 9110 §9.3.2)."""
    if payload is None:
        body = b""
        raw = list(headers)
    else:
        body = _encode(payload)
        raw = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


# -- validation ----------------------------------------------------------

_INVALID: Any = object()
_Errors = list[dict[str, str]]
_Check = Callable[[Any, str, _Errors], Any]


def _fail(errors: _Errors, path: str, message: str) -> Any:
    errors.append({"field": path, "message": message})
    return _INVALID


@dataclass(frozen=True)
class _Field:
    name: str
    check: _Check
    required: bool = False
    # null means "not set" (the default) unless the field is not nullable.
    nullable: bool = True
    default: Any = None


def _described(check: Callable[..., Any], schema: dict[str, Any]) -> _Check:
    """``check``, carrying the JSON Schema of what it accepts: the API's OpenAPI document reads it (:mod:`._openapi`)."""
    check.schema = schema  # type: ignore[attr-defined]  # a function's own attribute, read where the API is described
    return check


def _validate(
    body: Mapping[str, Any], fields: Sequence[_Field], *, partial: bool, errors: _Errors, prefix: str = ""
) -> dict[str, Any]:
    """Check ``body`` against ``fields``; append problems to ``errors``.

    With ``partial`` (PATCH) absent fields are skipped; otherwise they get
    their defaults, and missing required fields are errors. Unknown keys are
    ignored.
    """
    clean: dict[str, Any] = {}
    for spec in fields:
        path = prefix + spec.name
        if spec.name not in body:
            if partial:
                continue
            if spec.required:
                _fail(errors, path, "is required")
            else:
                clean[spec.name] = spec.default
            continue
        value = body[spec.name]
        if value is None:
            if spec.required:
                _fail(errors, path, "is required")
                continue
            if spec.nullable:
                clean[spec.name] = spec.default
                continue
        result = spec.check(value, path, errors)
        if result is not _INVALID:
            clean[spec.name] = result
    return clean


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(max_len: int, *, non_empty: bool = False) -> _Check:
    def check(value: Any, path: str, errors: _Errors) -> Any:
        if not isinstance(value, str):
            return _fail(errors, path, "must be a string")
        if len(value) > max_len:
            return _fail(errors, path, f"must be at most {max_len} characters")
        if non_empty and not value.strip():
            return _fail(errors, path, "must not be empty")
        if not _is_text(value):
            return _fail(errors, path, "must be valid Unicode text")
        return value

    # Whether blank text is refused, and which characters are blank, the document asks the check itself.
    return _described(check, {"type": "string", "maxLength": max_len})


def _email(value: Any, path: str, errors: _Errors) -> Any:
    value = _string(254)(value, path, errors)
    if value is _INVALID:
        return value
    local, _, domain = value.partition("@")
    if not local or not domain or "@" in domain:
        return _fail(errors, path, "must be an email address like name@example.com")
    return value


_described(_email, {"type": "string", "maxLength": 254, "pattern": "^[^@]+@[^@]+$"})

_CURRENCY = re.compile(r"[A-Z]{3}")


def _currency(value: Any, path: str, errors: _Errors) -> Any:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        return _fail(errors, path, "must be a 3-letter uppercase currency code like EUR")
    return value


_described(_currency, {"type": "string", "pattern": f"^{_CURRENCY.pattern}$"})


def _integer(low: int, high: int) -> _Check:
    def check(value: Any, path: str, errors: _Errors) -> Any:
        # JSON has one kind of number: 30.0 is the integer 30 (as JSON Schema's "integer" says), kept as 30.
        if type(value) is float and value.is_integer() and low <= value <= high:
            value = int(value)
        # `type(...) is int` rather than isinstance: JSON true/false must not pass as 1/0.
        if type(value) is not int:
            return _fail(errors, path, "must be an integer")
        if not low <= value <= high:
            return _fail(errors, path, f"must be between {low} and {high}")
        return value

    return _described(check, {"type": "integer", "minimum": low, "maximum": high})


def _number(low: int, high: int) -> _Check:
    def check(value: Any, path: str, errors: _Errors) -> Any:
        if type(value) is not int and type(value) is not float:
            return _fail(errors, path, "must be a number")
        # Also false for NaN and ±inf (JSON 1e999 parses as inf).
        if not low <= value <= high:
            return _fail(errors, path, f"must be between {low} and {high}")
        return value

    return _described(check, {"type": "number", "minimum": low, "maximum": high})


def _choice(*options: str) -> _Check:
    def check(value: Any, path: str, errors: _Errors) -> Any:
        if not isinstance(value, str) or value not in options:
            return _fail(errors, path, "must be one of " + ", ".join(f"'{o}'" for o in options))
        return value

    return _described(check, {"type": "string", "enum": list(options)})


#: RFC 3339 section 5.6 ``date-time``: full-date "T" full-time, seconds and an offset included ("T" and "Z" in
#: either case). ``[0-9]``, not ``\d``, which would take any Unicode digit.
_DATE_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _check_datetime(value: Any, path: str, errors: _Errors) -> Any:
    if isinstance(value, str) and len(value) <= 64 and _is_date_time(value):
        return value  # kept as sent: 'z' stays 'z', the offset stays the client's
    return _fail(
        errors,
        path,
        "must be an RFC 3339 date-time with seconds and an offset,"
        " like 2025-01-31T14:30:00+01:00 or 2025-01-31T14:30:00Z",
    )


# The document's pattern is the check's own (its group names left out, which ECMA writes otherwise);
# a day that no month has (02-30) is the check's alone.
_datetime = _described(
    _check_datetime,
    {
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "pattern": "^" + re.sub(r"\(\?P<\w+>", "(?:", _DATE_TIME.pattern) + "$",
        "description": "an RFC 3339 date-time with seconds and an offset, like 2025-01-31T14:30:00+01:00",
    },
)


def _is_date_time(text: str) -> bool:
    """Whether ``text`` is an RFC 3339 date-time that names a real instant.

    >>> _is_date_time("2024-02-29T23:59:60+01:00"), _is_date_time("2024-02-29T22:59:60-01:00")
    (False, True)

    A second of 60 is a leap second: the last second of a day in UTC, wherever the offset puts it.
    """
    m = _DATE_TIME.fullmatch(text)
    if m is None:
        return False
    year, month, day = int(m["year"]), int(m["month"]), int(m["day"])
    hour, minute, second = int(m["hour"]), int(m["minute"]), int(m["second"])
    off_hour, off_minute = int(m["off_hour"] or 0), int(m["off_minute"] or 0)
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 60 or off_hour > 23 or off_minute > 59:
        return False
    leap_year = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (month == 2 and leap_year):
        return False
    if second == 60:
        offset = (off_hour * 60 + off_minute) * (-1 if m["sign"] == "-" else 1)
        return (hour * 60 + minute - offset) % 1440 == 23 * 60 + 59
    return True


def _object(fields: Sequence[_Field]) -> _Check:
    def check(value: Any, path: str, errors: _Errors) -> Any:
        if not isinstance(value, dict):
            return _fail(errors, path, "must be an object")
        before = len(errors)
        clean = _validate(value, fields, partial=False, errors=errors, prefix=path + ".")
        return clean if len(errors) == before else _INVALID

    check.fields = fields  # type: ignore[attr-defined]  # the object's own fields, for the OpenAPI document
    return _described(check, {"type": "object"})


def _reference(kind: str, noun: str) -> _Check:
    pattern = re.compile(ID_PREFIXES[kind] + r"_[0-9a-f]{12}")

    def check(value: Any, path: str, errors: _Errors) -> Any:
        if not isinstance(value, str):
            return _fail(errors, path, "must be a string")
        if not pattern.fullmatch(value):
            # Cannot exist, so say so without asking the store.
            return _fail(errors, path, f"{noun} '{_shown(value)}' not found in this company")
        return value

    return _described(check, {"type": "string", "pattern": f"^{pattern.pattern}$"})


_MAX_STAFF_SERVICES = 100
_service_ref = _reference("service", "service")


def _service_refs(value: Any, path: str, errors: _Errors) -> Any:
    if not isinstance(value, list):
        return _fail(errors, path, 'must be a list of objects like {"id": "sv_..."}')
    if len(value) > _MAX_STAFF_SERVICES:
        return _fail(errors, path, f"must have at most {_MAX_STAFF_SERVICES} items")
    # Malformed items become None so the store can still check the others
    # by their original index when errors are being collected.
    refs: list[dict[str, str] | None] = []
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            _fail(errors, item_path, 'must be an object like {"id": "sv_..."}')
            refs.append(None)
            continue
        if item.get("id") is None:
            _fail(errors, item_path + ".id", "is required")
            refs.append(None)
            continue
        service_id = _service_ref(item["id"], item_path + ".id", errors)
        refs.append(None if service_id is _INVALID else {"id": service_id})
    return refs


_described(
    _service_refs,
    {
        "type": "array",
        "maxItems": _MAX_STAFF_SERVICES,
        "items": {"type": "object", "required": ["id"], "properties": {"id": _service_ref.schema}},  # type: ignore[attr-defined]  # set by _described
    },
)


_ADDRESS = (
    _Field("street", _string(500)),
    _Field("city", _string(200)),
    _Field("zip", _string(32)),
    _Field("country", _string(100)),
)
_CUSTOMER = (
    _Field("name", _string(200)),
    _Field("email", _email),
)
_RULES: dict[str, tuple[_Field, ...]] = {
    "company": (
        _Field("name", _string(200, non_empty=True), required=True),
        _Field("address", _object(_ADDRESS)),
        _Field("timezone", _string(100)),
        _Field("phone", _string(64)),
    ),
    "service": (
        _Field("name", _string(200, non_empty=True), required=True),
        _Field("duration", _integer(1, 1440), nullable=False, default=30),
        _Field("price", _number(0, 10**12)),
        _Field("currency", _currency),
    ),
    "staff": (
        _Field("firstName", _string(200, non_empty=True), required=True),
        _Field("lastName", _string(200, non_empty=True), required=True),
        _Field("email", _email),
        _Field("services", _service_refs, default=()),
    ),
    "appointment": (
        _Field("serviceId", _service_ref, required=True),
        _Field("staffId", _reference("staff", "staff member"), required=True),
        _Field("start", _datetime, required=True),
        _Field("customer", _object(_CUSTOMER)),
        _Field("status", _choice("booked", "cancelled"), nullable=False, default="booked"),
    ),
}

_ID_PATTERNS = {kind: re.compile(prefix + r"_[0-9a-f]{12}") for kind, prefix in ID_PREFIXES.items()}
_PLURAL: dict[Kind, str] = {
    "company": "companies",
    "service": "services",
    "staff": "staff",
    "appointment": "appointments",
}
_NOUN = {"company": "company", "service": "service", "staff": "staff member", "appointment": "appointment"}
_LIMIT_RE = re.compile(r"[0-9]{1,7}")
_OFFSET_RE = re.compile(r"[0-9]{1,12}")


def _page(query: Mapping[str, str]) -> tuple[int, int, _Errors]:
    errors: _Errors = []
    limit, offset = DEFAULT_LIMIT, 0
    raw = query.get("limit")
    if raw is not None:
        if _LIMIT_RE.fullmatch(raw) and 1 <= int(raw) <= MAX_LIMIT:
            limit = int(raw)
        else:
            _fail(errors, "limit", f"must be an integer between 1 and {MAX_LIMIT}")
    raw = query.get("offset")
    if raw is not None:
        if _OFFSET_RE.fullmatch(raw):
            offset = int(raw)
        else:
            _fail(errors, "offset", "must be an integer between 0 and 999999999999")
    return limit, offset, errors


# -- requests ------------------------------------------------------------


@dataclass
class _Request:
    """What the API reads of one request, however it came: through ASGI or from the batch engine directly."""

    method: str
    #: the path as the client wrote it, for messages.
    path: str
    #: what the path names (None: nothing here).
    route: _Route | None
    #: the path as sent, with its query.
    target: str
    root_path: str
    query_string: str
    authorization: str | None
    keys: list[str]
    #: where the body is read from (ASGI), or None when ``body`` is the whole of it.
    receive: Receive | None = None
    body: bytes = b""


class _Call:
    """One authenticated request as the handlers see it."""

    __slots__ = (
        "_body",
        "_given",
        "company_id",
        "item_id",
        "method",
        "query",
        "receive",
        "root_path",
        "target",
        "tenant",
    )

    def __init__(
        self, request: _Request, tenant: str, query: Mapping[str, str], company_id: str | None, item_id: str | None
    ) -> None:
        self.method = request.method
        #: the path as sent, with its query: what the request's fingerprint covers.
        self.target = request.target
        self.root_path = request.root_path
        self.receive = request.receive
        self.tenant = tenant
        self.query = query
        self.company_id = company_id
        self.item_id = item_id
        self._given = request.body
        self._body: bytes | None = None

    async def body(self) -> bytes:
        """The request's body, read once (a second call does not wait)."""
        if self._body is None:
            if self.receive is None:
                if len(self._given) > MAX_BODY_BYTES:
                    raise _too_large()
                self._body = self._given
                return self._body
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _too_large()
                chunks.append(chunk)
                more = message.get("more_body", False)
            self._body = b"".join(chunks)
        return self._body

    async def json_object(self) -> dict[str, Any]:
        raw = self._body if self._body is not None else await self.body()
        try:
            data = _json.loads(raw)
        except _json.IntegerTooLong as exc:
            raise _invalid([{"field": exc.pointer, "message": exc.message}]) from None
        except ValueError:
            # What the fast parser refuses but Python's reads (NaN, lone surrogates), read as before.
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                raise _invalid_body("Request body must be valid JSON") from None
        if not isinstance(data, dict):
            raise _invalid_body("Request body must be a JSON object")
        return data


def _too_large() -> _Reply:
    return _error(413, "payload_too_large", f"Request body exceeds {MAX_BODY_BYTES} bytes")


def _invalid_body(message: str) -> _Reply:
    return _error(400, "validation_error", message, [])


_Handler = Callable[[_Call], Awaitable[_Result]]
_NO_QUERY: Mapping[str, str] = {}


class _API:
    """Request handlers, generic over the four resource kinds."""

    def __init__(self, store: Store, keyring: Keyring, key_ttl: float) -> None:
        self.store = store
        self.keyring = keyring
        self.key_ttl = key_ttl
        #: (tenant, key) of the keyed requests running in this process.
        self.running: set[tuple[str, str]] = set()

    # -- dispatch --

    async def answer(self, request: _Request) -> _Result | None:
        """The status, payload and headers to answer ``request`` with; None when the client left before its body came."""
        # A name given twice counts with its last value.
        query = dict(parse_qsl(request.query_string, keep_blank_values=True)) if request.query_string else _NO_QUERY
        # HEAD is GET without the body (RFC 9110 §9.3.2): wherever GET answers, HEAD does, with the same headers.
        method = "GET" if request.method == "HEAD" else request.method
        try:
            tenant = self.keyring.authenticate(
                {"authorization": request.authorization} if request.authorization is not None else {}, query
            )
            if tenant is None:
                raise _error(401, "unauthorized", "Authentication is required to execute this request")
            if request.route is None:
                raise _error(404, "not_found", f"No route for {_shown(method)} {_shown(request.path, 200)}")
            handlers, company_id, item_id = request.route
            handler = handlers.get(method)
            if handler is None:
                allow = ", ".join(_allowed(handlers))
                reply = _error(405, "method_not_allowed", f"Method {_shown(method)} is not allowed here")
                reply.headers = [(b"allow", allow.encode())]
                raise reply
            call = _Call(request, tenant, query, company_id, item_id)
            if request.keys and method in idempotency.METHODS:
                return await self._once(call, handler, request.keys)
            return await handler(call)
        except _Reply as reply:
            return reply.status, reply.payload, reply.headers
        except _ClientGone:
            return None
        except Exception:  # noqa: BLE001 - last resort: a bug must still produce a JSON answer
            _log.exception("unhandled error in %s %s", method, request.path)
            return 500, {"error": {"code": "internal_error", "message": "Internal server error"}}, ()

    async def _once(self, call: _Call, handler: _Handler, keys: list[str]) -> _Result:
        """Run ``handler`` once per Idempotency-Key; a repeat gets the first answer."""
        key, problem = idempotency.parse_key(keys)
        if problem:
            raise _error(
                400,
                "invalid_idempotency_key",
                f"Idempotency-Key {problem}",
                [{"field": idempotency.POINTER, "message": problem}],
            )
        assert key is not None
        # Claimed before the body is read: a repeat that comes while this one
        # is still arriving (a client resending too early) is told 409. In
        # another process, the repeat waits for this one's transaction and
        # gets its answer.
        claim = (call.tenant, key)
        if claim in self.running:
            reply = _error(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still running; retry later",
                [{"field": idempotency.POINTER, "message": "is in use by a request that has not finished"}],
            )
            reply.headers = [(b"retry-after", b"1")]
            raise reply
        self.running.add(claim)
        try:
            # The body first: nothing may wait inside the transactions below.
            fingerprint = idempotency.fingerprint(call.method, call.target, await call.body())
            return self._first_or_replay(call, handler, key, fingerprint)
        finally:
            self.running.discard(claim)

    def _first_or_replay(self, call: _Call, handler: _Handler, key: str, fingerprint: str) -> _Result:
        """Run the request and keep its answer with its writes, or, if the key holds an answer already, undo and replay it."""
        now = time.time()
        try:
            with self.store.atomic():
                try:
                    status, payload, headers = _now(handler(call))
                except _Reply as reply:
                    raise _Undone(reply) from None  # a refusal's partial writes (if any) are not kept
                if status < 500 and not self._keep(call, key, fingerprint, (status, payload, headers), now):
                    raise _Undone(None)
            return status, payload, headers
        except _Undone as undone:
            held = self.store.find_key(call.tenant, key, now=now)
            if held is not None:
                return self._replay(held, fingerprint)
            refusal = undone.reply
            assert refusal is not None, "the key held an answer a moment ago"
            if refusal.status >= 500:
                raise refusal from None  # not kept: a retry may run it
            refused = refusal.status, refusal.payload, refusal.headers
            with self.store.atomic():
                if self._keep(call, key, fingerprint, refused, now):
                    return refused
            held = self.store.find_key(call.tenant, key, now=now)  # kept by another process in between
            assert held is not None
            return self._replay(held, fingerprint)

    def _keep(self, call: _Call, key: str, fingerprint: str, answer: _Result, now: float) -> bool:
        status, payload, headers = answer
        kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        return self.store.keep_key(call.tenant, key, fingerprint, status, payload, kept, now=now, ttl=self.key_ttl)

    @staticmethod
    def _replay(held: KeyRecord, fingerprint: str) -> _Result:
        if held.fingerprint != fingerprint:
            raise _error(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request",
                [{"field": idempotency.POINTER, "message": "was used for another method, path or body"}],
            )
        replayed = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in held.headers]
        return held.status, held.body, [*replayed, (b"idempotent-replayed", b"true")]

    # -- existence checks (error paths only) --

    def _check_ids(self, kind: Kind, call: _Call) -> None:
        if call.company_id is not None and not _ID_PATTERNS["company"].fullmatch(call.company_id):
            raise _not_found("company", call.company_id)
        if call.item_id is not None and not _ID_PATTERNS[kind].fullmatch(call.item_id):
            self._require_company(call)
            raise _not_found(_NOUN[kind], call.item_id)

    def _require_company(self, call: _Call) -> None:
        if call.company_id is not None and not self.store.company_exists(call.tenant, call.company_id):
            raise _not_found("company", call.company_id)

    def _require_item(self, kind: Kind, call: _Call) -> None:
        assert call.item_id is not None
        if self.store.get(call.tenant, kind, call.item_id, company_id=call.company_id) is None:
            self._require_company(call)
            raise _not_found(_NOUN[kind], call.item_id)

    def _location(self, kind: Kind, call: _Call, item_id: str) -> tuple[bytes, bytes]:
        if call.company_id is None:
            path = f"{API_PREFIX}/companies/{item_id}"
        else:
            path = f"{API_PREFIX}/companies/{call.company_id}/{_PLURAL[kind]}/{item_id}"
        return (b"location", (quote(call.root_path) + path).encode("latin-1"))

    # -- handlers --

    async def list_items(self, kind: Kind, call: _Call) -> _Result:
        self._check_ids(kind, call)
        limit, offset, errors = _page(call.query)
        if errors:
            self._require_company(call)
            raise _invalid(errors)
        items = self.store.list_items(call.tenant, kind, company_id=call.company_id, limit=limit, offset=offset)
        if items is None:
            raise _not_found("company", call.company_id or "")
        return 200, {"items": items, "limit": limit, "offset": offset}, ()

    async def create(self, kind: Kind, call: _Call) -> _Result:
        self._check_ids(kind, call)
        try:
            body = await call.json_object()
        except _Reply:
            self._require_company(call)
            raise
        errors: _Errors = []
        clean = _validate(body, _RULES[kind], partial=False, errors=errors)
        if errors:
            self._require_company(call)
            if call.company_id is not None:
                errors += self.store.missing_references(call.tenant, call.company_id, clean)
            raise _invalid(errors)
        try:
            item = self.store.create(call.tenant, kind, clean, company_id=call.company_id)
        except InvalidReference as exc:
            raise _invalid(exc.details) from None
        if item is None:
            raise _not_found("company", call.company_id or "")
        return 201, item, (self._location(kind, call, item["id"]),)

    async def get(self, kind: Kind, call: _Call) -> _Result:
        self._check_ids(kind, call)
        assert call.item_id is not None
        item = self.store.get(call.tenant, kind, call.item_id, company_id=call.company_id)
        if item is None:
            self._require_company(call)
            raise _not_found(_NOUN[kind], call.item_id)
        return 200, item, ()

    async def update(self, kind: Kind, partial: bool, call: _Call) -> _Result:
        self._check_ids(kind, call)
        assert call.item_id is not None
        try:
            body = await call.json_object()
        except _Reply:
            self._require_item(kind, call)
            raise
        errors: _Errors = []
        clean = _validate(body, _RULES[kind], partial=partial, errors=errors)
        if errors:
            self._require_item(kind, call)
            if call.company_id is not None:
                errors += self.store.missing_references(call.tenant, call.company_id, clean)
            raise _invalid(errors)
        return self._apply(kind, call, clean)

    async def delete(self, kind: Kind, call: _Call) -> _Result:
        self._check_ids(kind, call)
        assert call.item_id is not None
        if kind == "appointment":
            # Appointments are kept for the record: DELETE means cancel.
            self._apply(kind, call, {"status": "cancelled"})
        elif not self.store.delete(call.tenant, kind, call.item_id, company_id=call.company_id):
            self._require_company(call)
            raise _not_found(_NOUN[kind], call.item_id)
        return 204, None, ()

    def _apply(self, kind: Kind, call: _Call, fields: Mapping[str, Any]) -> _Result:
        assert call.item_id is not None
        try:
            item = self.store.update(call.tenant, kind, call.item_id, fields, company_id=call.company_id)
        except InvalidReference as exc:
            raise _invalid(exc.details) from None
        if item is None:
            self._require_company(call)
            raise _not_found(_NOUN[kind], call.item_id)
        return 200, item, ()


def _now(coroutine: Awaitable[_Result]) -> _Result:
    """Run a handler whose body is already read: it must finish without waiting.

    It runs inside a store transaction; a handler that waited there would let
    another request's writes into that transaction.
    """
    try:
        coroutine.send(None)  # type: ignore[attr-defined]  # a coroutine, driven by hand: it must not wait
    except StopIteration as done:
        result: _Result = done.value
        return result
    coroutine.close()  # type: ignore[attr-defined]  # a coroutine, driven by hand: it must not wait
    raise RuntimeError("a handler waited inside its idempotency transaction")


def scheduling_app(store: Store, keyring: Keyring, *, key_ttl: float = idempotency.DEFAULT_TTL) -> SchedulingApp:
    """Build the Scheduling API v2.1 ASGI app over ``store``, guarded by ``keyring``.

    Every request must authenticate (Bearer token or ``apiKey``/``token``
    query parameters); data is scoped to the authenticated api_key. Errors
    are JSON ``{"error": {"code", "message", "details"?}}``.

    Example:
        >>> app = scheduling_app(Store(":memory:"), Keyring({"key-a": "tok-a"}))
        >>> callable(app)  # serve it, mount it, or call it directly as ASGI
        True
    """
    api = _API(store, keyring, key_ttl)
    return SchedulingApp(api, _router(api))


class SchedulingApp:
    """The Scheduling API as an ASGI app, and as the batch engine's dispatcher for calls in this process.

    >>> app = scheduling_app(Store(":memory:"), Keyring({"key-a": "tok-a"}))
    >>> import asyncio
    >>> asyncio.run(app.dispatch("GET", "/api/2.1/scheduling/companies", [("Authorization", "Bearer tok-a")], None)).status
    200

    Both ways read a request into the same :class:`_Request` and answer it
    the same way; :meth:`dispatch` only skips ASGI's messages, which cost a
    batch's operations more than some of their answers.
    """

    __slots__ = ("_api", "_route")

    def __init__(self, api: _API, route: Callable[[str], _Route | None]) -> None:
        self._api = api
        self._route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            # Routed on what the client wrote: an encoded '/' inside an id stays inside it.
            path = route_path(raw.decode("latin-1").partition("?")[0]) if scope.get("raw_path") else scope["path"]
            query = scope.get("query_string") or b""
            root = scope.get("root_path") or ""
            authorization, keys = _read_headers(
                (n.decode("latin-1"), v.decode("latin-1")) for n, v in scope.get("headers", ())
            )
            request = _Request(
                scope["method"],
                scope["path"],
                self._route(_below_root(path, root)),
                raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else ""),
                root,
                query.decode("latin-1"),
                authorization,
                keys,
                receive,
            )
            answer = await self._api.answer(request)
            if answer is not None:
                await _send(send, *answer, head=scope["method"] == "HEAD")
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        elif scope["type"] == "lifespan":
            while True:  # nothing to start or stop: the store is the caller's
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def dispatch(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> DispatchResult:
        """One operation, called in this process without ASGI's messages: the answer the app gives over ASGI.

        ``path`` holds the query, as the engine sends it; header names are any case.
        """
        raw_path, _, query = path.partition("?")
        authorization, keys = _read_headers(headers)
        routed = route_path(raw_path)
        request = _Request(
            method,
            routed,
            self._route(routed),
            raw_path + ("?" + query if query else ""),
            "",
            query,
            authorization,
            keys,
            None,
            body or b"",
        )
        answer = await self._api.answer(request)
        assert answer is not None, "a body given whole cannot be cut short"
        status, payload, extra = answer
        out: dict[str, str] = {}
        content = b""
        if payload is not None:
            content = _encode(payload)
            out = {"content-type": "application/json", "content-length": str(len(content))}
        for name, value in extra:
            out[name.decode("latin-1").lower()] = value.decode("latin-1")
        return DispatchResult(status, out, content)


def _read_headers(headers: Iterable[tuple[str, str]]) -> tuple[str | None, list[str]]:
    """The two headers the API reads, in one pass: the first ``Authorization``, and every ``Idempotency-Key``."""
    authorization: str | None = None
    keys: list[str] = []
    for name, value in headers:
        name = name.lower()
        if name == "authorization":
            if authorization is None:
                authorization = value
        elif name == "idempotency-key":
            keys.append(value)
    return authorization, keys


#: handlers by method, the company's id, the item's id: what a path names.
_Route = tuple[Mapping[str, _Handler], str | None, str | None]


def _below_root(path: str, root: str) -> str:
    """``path`` without the prefix the app is mounted under (``root_path``), as Starlette routes it."""
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


def _router(api: _API) -> Callable[[str], _Route | None]:
    """What each path names: ``/companies``, ``/companies/{id}``, ``/companies/{id}/{kind}``, ``/companies/{id}/{kind}/{id}``.

    An id is any non-empty segment; a path with an empty segment (``//``, a
    trailing ``/``) names nothing.
    """
    collections = {kind: _handlers(api, kind, collection=True) for kind in _PLURAL}
    items = {kind: _handlers(api, kind, collection=False) for kind in _PLURAL}
    kinds = {plural: kind for kind, plural in _PLURAL.items() if kind != "company"}
    root = f"{API_PREFIX}/companies"

    def route(path: str) -> _Route | None:
        if not path.startswith(root):
            return None
        rest = path[len(root) :]
        if not rest:
            return collections["company"], None, None
        if rest[0] != "/":
            return None
        parts = rest[1:].split("/")
        if "" in parts or len(parts) > 3:
            return None
        if len(parts) == 1:
            return items["company"], None, parts[0]
        kind = kinds.get(parts[1])
        if kind is None:
            return None
        if len(parts) == 2:
            return collections[kind], parts[0], None
        return items[kind], parts[0], parts[2]

    return route


def _allowed(handlers: Mapping[str, _Handler]) -> list[str]:
    """The methods a route answers, as ``Allow`` lists them: HEAD after GET."""
    names = list(handlers)
    return [*names[:1], "HEAD", *names[1:]] if names[:1] == ["GET"] else names


def _handlers(api: _API, kind: Kind, *, collection: bool) -> Mapping[str, _Handler]:
    if collection:
        handlers = {"GET": partial(api.list_items, kind), "POST": partial(api.create, kind)}
    else:
        handlers = {
            "GET": partial(api.get, kind),
            "PUT": partial(api.update, kind, False),
            "PATCH": partial(api.update, kind, True),
            "DELETE": partial(api.delete, kind),
        }
    return handlers
