"""The engine: runs a :class:`~batchnb.Batch` against an API, one operation at a time.

It is the only place that knows batch semantics — depth-first order, children
only after a 2xx parent, references resolved from earlier results, 424 for
what cannot run, per-operation headers, timing and timeouts. The server runs
it behind ``POST /api/2.3/batch``; the client runs the very same engine to
execute a batch against an API that has no batch endpoint.

An API is reached through a *dispatcher*: an async callable taking one
request (method, path, headers, body bytes) and returning a
:class:`DispatchResult`. Two ship here: :class:`HTTPDispatcher` (an
``httpx.AsyncClient``) and :class:`ASGIDispatcher` (a direct in-process ASGI
call, about 15x cheaper than going through ``httpx.ASGITransport``).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Mapping, MutableMapping, Protocol
from urllib.parse import quote, unquote

import httpx
import orjson

from . import _json, refs, rules
from .model import Batch, Operation, Response

__all__ = [
    "ASGIDispatcher",
    "DispatchResult",
    "Dispatcher",
    "HTTPDispatcher",
    "Prepared",
    "execute",
    "not_run",
    "prepare",
    "result_lookup",
]

#: response headers worth handing back to the caller (the spec's extension).
KEPT_HEADERS = ("location", "content-type", "retry-after", "idempotent-replayed")
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


@dataclass
class DispatchResult:
    """What the API answered to one operation: status, lower-case headers, body bytes.

    >>> DispatchResult(201, {"content-type": "application/json"}, b'{"id": 7}').status
    201
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


class Dispatcher(Protocol):
    """Sends one operation to the API.

    ``headers`` is a list of (name, value) pairs; ``path`` includes the query.

    >>> async def dispatch(method, path, headers, body):
    ...     return DispatchResult(200, {}, b"{}")
    """

    def __call__(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> Awaitable[DispatchResult]: ...


class ResponseTooLarge(Exception):
    pass


class HTTPDispatcher:
    """Dispatch over HTTP with an ``httpx.AsyncClient`` the caller owns.

    >>> import httpx
    >>> d = HTTPDispatcher(httpx.AsyncClient(), "http://127.0.0.1:8000")

    Operation paths are appended to the origin of ``base_url``; redirects are
    not followed, so an operation never leaves the API's host.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._max = max_response_bytes

    async def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> DispatchResult:
        request = self._client.build_request(method, self._base + path, headers=headers, content=body)
        response = await self._client.send(request, stream=True, follow_redirects=False)
        try:
            chunks, size = [], 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self._max:
                    raise ResponseTooLarge(f"the API's response is larger than {self._max} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        content = b"".join(chunks)
        encoding = response.headers.get("content-encoding")
        if encoding and content:
            # aiter_raw skips decoding so that the size limit counts wire bytes.
            content = httpx.Response(200, headers={"content-encoding": encoding}, content=content).read()
        return DispatchResult(response.status_code, {k.lower(): v for k, v in response.headers.items()}, content)


class ASGIDispatcher:
    """Dispatch by calling an ASGI app directly, in this process.

    >>> from starlette.responses import JSONResponse
    >>> async def app(scope, receive, send):
    ...     await JSONResponse({"ok": True})(scope, receive, send)
    >>> d = ASGIDispatcher(app)
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._app = app
        self._max = max_response_bytes

    async def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> DispatchResult:
        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            "client": ("127.0.0.1", 0),
            "server": ("batchnb", 80),
            "state": {},
        }
        sent_body = False
        disconnected = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        status = 500
        out_headers: dict[str, str] = {}
        chunks: list[bytes] = []
        size = 0

        async def send(message: Mapping[str, Any]) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    out_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self._max:
                    raise ResponseTooLarge(f"the API's response is larger than {self._max} bytes")
                chunks.append(chunk)

        try:
            await self._app(scope, receive, send)
        finally:
            disconnected.set()
        return DispatchResult(status, out_headers, b"".join(chunks))


# ---------------------------------------------------------------- execution


def encode_body(body: Any) -> tuple[bytes | None, str | None]:
    """Body bytes and their content type: JSON for data, a string verbatim."""
    if body is None:
        return None, None
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return _json.dumps(body), "application/json"


def decode_body(content: bytes, content_type: str | None) -> Any:
    """Parsed JSON when it is JSON, else text, ``None`` when empty."""
    if not content:
        return None
    ct = (content_type or "").lower()
    if "json" in ct or not ct:
        try:
            return _json.loads(content)
        except orjson.JSONDecodeError:
            pass
    return content.decode("utf-8", errors="replace")


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _label(pointer: str, op: Operation) -> str:
    return f"{pointer} ({op.name!r})" if op.name else pointer


@dataclass
class _Run:
    dispatch: Dispatcher
    headers: list[tuple[str, str]]
    query: str
    timeout: float
    deadline: float | None
    results: MutableMapping[str, Response]


async def execute(
    batch: Batch | list[Operation],
    dispatch: Dispatcher,
    *,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    deadline: float | None = None,
    results: MutableMapping[str, Response] | None = None,
) -> list[Response]:
    """Run every operation of ``batch`` through ``dispatch`` and return their responses.

    >>> import asyncio, httpx
    >>> async def main():
    ...     async with httpx.AsyncClient() as http:
    ...         return await execute(batch, HTTPDispatcher(http, "https://api.example"), headers={"Authorization": "Bearer …"})

    ``headers`` and ``query`` are the batch's credentials, given to every
    operation that does not carry an ``Authorization`` of its own. ``timeout``
    bounds each operation (it then answers 504); ``deadline`` (a
    ``time.monotonic()`` value) bounds the whole batch: what has not started
    by then answers 503. ``results`` holds named responses of earlier batches
    (the client's cross-batch references) and receives this batch's.
    """
    ops = batch.requests if isinstance(batch, Batch) else list(batch)
    run = _Run(
        dispatch=dispatch,
        headers=list((headers or {}).items()),
        query="&".join(f"{k}={refs.segment(v)}" for k, v in (query or {}).items()),
        timeout=timeout,
        deadline=deadline,
        results=results if results is not None else {},
    )
    return await _run_list(ops, "requests", run)


async def _run_list(ops: list[Operation], prefix: str, run: _Run) -> list[Response]:
    out = []
    for i, op in enumerate(ops):
        pointer = f"{prefix}[{i}]"
        resp = await _run_one(op, pointer, run)
        if op.name:
            run.results[op.name] = resp
        if op.requests:
            if resp.ok:
                resp.responses = await _run_list(op.requests, f"{pointer}.requests", run)
            else:
                why = f"its parent {_label(pointer, op)} answered {resp.status}"
                resp.responses = [not_run(c, why, run.results) for c in op.requests]
        out.append(resp)
    return out


def not_run(op: Operation, why: str, results: MutableMapping[str, Response] | None = None) -> Response:
    """424 for ``op`` and every operation under it: they cannot run because ``why``.

    >>> not_run(Operation("GET", "/x"), "its parent answered 500").status
    424
    """
    message = f"not run: {why}"
    resp = Response(op.method, op.path, 424, op.name, 0.0, _error_body("failed_dependency", message))
    if op.name and results is not None:
        results[op.name] = resp
    resp.responses = [not_run(c, why, results) for c in op.requests]
    return resp


def result_lookup(results: Mapping[str, Response], *, defer_missing: bool = False) -> refs.Lookup:
    """A reference lookup over named responses.

    A reference to a response that failed, has no known outcome or matches
    nothing raises :class:`refs.Unresolved`. A name with no response yet is
    unresolved too, unless ``defer_missing``: then it is left for the server,
    which runs it in the same batch (the client's cross-batch resolution).

    >>> lookup = result_lookup({"co": Response("POST", "/c", 201, body={"id": "co_1"})})
    >>> lookup(refs.parse("${result=co:$.id}")[0])
    ['co_1']
    """

    def lookup(r: refs.Ref) -> list[Any] | None:
        done = results.get(r.name)
        if done is None:
            if defer_missing:
                return None
            raise refs.Unresolved(r, f"operation {r.name!r} did not run")
        if done.status is None:
            raise refs.Unresolved(r, f"the outcome of {r.name!r} is unknown")
        if not done.ok:
            raise refs.Unresolved(r, f"operation {r.name!r} answered {done.status}")
        values = r.find(done.body)
        if not values:
            raise refs.Unresolved(r, f"{r.query} matched nothing in the result of {r.name!r}")
        return values

    return lookup


async def _run_one(op: Operation, pointer: str, run: _Run) -> Response:
    lookup = result_lookup(run.results)
    try:
        path = refs.render(op.path, lookup, encode=refs.segment)
        op_headers = {k: refs.render(v, lookup) for k, v in (op.headers or {}).items()}
        body = refs.resolve_json(op.body, lookup)
    except refs.Unresolved as exc:
        return Response(op.method, op.path, 424, op.name, 0.0, _error_body("failed_dependency", f"not run: {exc}"))

    # Non-ASCII text (a literal "/companies/東京") travels percent-encoded as UTF-8, as browsers do.
    path = _NON_ASCII.sub(lambda m: quote(m.group()), path)
    problem = rules.path_problem(path)
    if problem is None:
        problem = next((f"header {k!r}: {m}" for k, v in op_headers.items() for m in rules.header_problems(k, v)), None)
    if problem is not None:
        return Response(op.method, path, 400, op.name, 0.0, _error_body("invalid_operation", f"not run: resolved path or header {problem}"))

    if run.deadline is not None and time.monotonic() >= run.deadline:
        return Response(op.method, path, 503, op.name, 0.0, _error_body("deadline_exceeded", "not run: the batch ran out of time"))

    content, content_type = encode_body(body)
    own = {k.lower() for k in op_headers}
    send_headers = [(k, v) for k, v in run.headers if k.lower() not in own]
    send_headers.extend(op_headers.items())
    if content_type and "content-type" not in own:
        send_headers.append(("content-type", content_type))
    target = path
    if run.query and "authorization" not in own:
        target = f"{path}{'&' if '?' in path else '?'}{run.query}"

    timeout = run.timeout
    if run.deadline is not None:
        timeout = min(timeout, max(run.deadline - time.monotonic(), 0.001))
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(run.dispatch(op.method, target, send_headers, content), timeout)
    except asyncio.TimeoutError:
        status, rbody, rheaders = 504, _error_body("timeout", f"the operation took longer than {timeout:g} s"), {}
    except ResponseTooLarge as exc:
        status, rbody, rheaders = 502, _error_body("response_too_large", str(exc)), {}
    except Exception as exc:  # noqa: BLE001 - the API failing must not fail the batch
        # The exception text may hold the URL, and so credentials in its query: name the kind only.
        status, rbody, rheaders = 502, _error_body("upstream_error", f"the API could not be reached ({type(exc).__name__})"), {}
    else:
        status = result.status
        rheaders = {k: v for k, v in result.headers.items() if k in KEPT_HEADERS}
        rbody = decode_body(result.body, result.headers.get("content-type"))
    duration = round((time.perf_counter() - started) * 1000, 3)
    if not math.isfinite(duration):
        duration = 0.0
    headers_out = {_title(k): v for k, v in rheaders.items()}
    return Response(op.method, path, status, op.name, duration, rbody, headers_out)


def _title(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


# ---------------------------------------------------------------- before a batch: what earlier batches decided


@dataclass
class Prepared:
    """A batch with the results of earlier batches applied, ready to be sent.

    ``sendable`` is what goes to the API: references to earlier results
    filled in, and without the operations that cannot run (a reference to a
    result that failed, matched nothing or has no known outcome), nor those
    that depend on them in this batch. Those answer 424 here, as the engine
    would answer them, and :meth:`merge` puts them back in place.

    >>> p = prepare([Operation("GET", "/x")], result_lookup({}, defer_missing=True))
    >>> [r.status for r in p.merge([Response("GET", "/x", 200)])]
    [200]
    """

    operations: list[Operation]
    sendable: list[Operation]
    _skipped: dict[int, Response]

    def merge(self, responses: list[Response]) -> list[Response]:
        """Responses to ``sendable`` (in its order) → responses to ``operations``, with every ``row`` set."""
        answered = iter(responses)
        return [self._merge(op, answered) for op in self.operations]

    def _merge(self, op: Operation, answered: Iterator[Response]) -> Response:
        skipped = self._skipped.get(id(op))
        if skipped is not None:
            for (_p, o), (_q, r) in zip(op.walk(), skipped.walk()):
                r.row = o.row
            return skipped
        resp = next(answered)
        resp.row = op.row
        kids = iter(resp.responses)
        resp.responses = [self._merge(child, kids) for child in op.requests]
        return resp


def prepare(
    ops: list[Operation],
    lookup: refs.Lookup,
    *,
    extra_headers: Callable[[Operation], Mapping[str, str] | None] | None = None,
) -> Prepared:
    """Fill in what earlier batches answered, and decide here what cannot run.

    ``lookup`` answers references to earlier results and returns None for
    names of this batch (see :func:`result_lookup` with ``defer_missing``).
    ``extra_headers(op)`` gives headers to add to an operation as it is sent
    (its idempotency key, say); the operation's own headers are kept.

    >>> from batchnb.model import Response
    >>> failed = {"co": Response("POST", "/c", 400)}
    >>> p = prepare([Operation("GET", "/c/${result=co:$.id}"), Operation("GET", "/x")], result_lookup(failed, defer_missing=True))
    >>> [op.path for op in p.sendable], p.merge([Response("GET", "/x", 200)])[0].status
    (['/x'], 424)
    """
    skipped: dict[int, Response] = {}
    dropped: set[str] = set()

    def visit(op: Operation) -> Operation | None:
        try:
            # References only point backwards, so one pass in run order sees every drop first.
            hit = sorted(op.referenced_names() & dropped) if dropped else ()
            if hit:
                first = next(r for _f, r in op.references() if r.name == hit[0])
                raise refs.Unresolved(first, f"operation {hit[0]!r} could not run")
            path = refs.render(op.path, lookup, encode=refs.segment, partial=True)
            headers = {k: refs.render(v, lookup, partial=True) for k, v in op.headers.items()} if op.headers else op.headers
            body = refs.resolve_json(op.body, lookup, partial=True)
        except refs.Unresolved as exc:
            skipped[id(op)] = not_run(op, str(exc))
            dropped.update(o.name for _p, o in op.walk() if o.name)
            return None
        children = [c for c in (visit(child) for child in op.requests) if c is not None]
        extra = extra_headers(op) if extra_headers is not None else None
        if extra:
            headers = {**extra, **(headers or {})}
        return Operation._unchecked(op.method, path, body, op.name, headers, children, op.row)

    sendable = [s for s in (visit(op) for op in ops) if s is not None]
    return Prepared(list(ops), sendable, skipped)
