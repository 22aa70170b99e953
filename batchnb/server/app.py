"""The Batch API 2.3 server: an ASGI app you can mount, test in-process, or serve with uvicorn.

    POST /api/2.3/batch         run a batch (auth, 400/401/413/415/429 with pointers)
    GET  /api/2.3/batch         the server's limits, so that clients can split work
    GET  /api/2.3/openapi.json  the OpenAPI 3.1 document of the batch endpoint (and of the API, if it describes itself)

HEAD answers wherever GET does, as GET without the body.

Behind it sits the API the operations call: an ASGI app reached by a direct
call in this process (no network hop; :func:`batchnb.demo.create_demo_app`
puts the demo Scheduling API there), or, with ``upstream=``, any HTTP API,
which turns this server into a batch gateway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager as ContextManager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qsl

import httpx

from .. import _json, _jsonpath, _rules
from .._asgi import ASGIApp, Receive, Scope, Send
from .._connect import Connection, Unreached
from .._dispatch import ASGIDispatcher, DirectDispatcher, Dispatcher
from .._engine import execute
from .._exceptions import BatchValidationError, Problem
from .._timing import Timings
from ..model import BATCH_PATH, Batch
from ._h11 import OneConnection
from ._openapi import OPENAPI_PATH, document
from ._upstream import UpstreamClients, UpstreamDispatcher
from .auth import Keyring
from .limits import MAX_ERROR_DETAILS, Limits

__all__ = ["BatchApp", "create_app"]

log = logging.getLogger("batchnb.server")


#: threads for the CPU-heavy work of batches (see BatchApp._threads).
_THREADS = 2
#: a batch larger than this, or holding more references, is parsed in a thread: up to tens of milliseconds of work.
_PARSE_ON_LOOP_BYTES = 64 * 1024
_PARSE_ON_LOOP_REFS = 256


class _Reject(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: list[Problem], headers: dict[str, str] | None = None
    ):
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers or {}


class BatchApp:
    """The batch endpoint in front of an API.

    >>> app = create_app(upstream="https://api.example")
    >>> app.limits.max_requests
    50

    ``api`` is an ASGI app called in-process for each operation, or
    ``upstream`` the base URL of an HTTP API. ``keyring`` guards the batch
    endpoint: in front of the in-process API the same credentials are handed
    on to each operation; in front of an upstream, the gateway's own
    credentials are never forwarded and operations carry their own.
    ``idempotency`` says whether the API honours ``Idempotency-Key`` (an
    operation header, passed on with the operation); ``GET /api/2.3/batch``
    announces it, so that clients may resend a POST whose outcome is unknown.
    ``group_writes``, for an in-process API, makes the context each batch's
    operations run in, left before the batch's answer is sent: the API may
    keep the batch's writes in one transaction and commit them there, once
    (the demo does: :meth:`batchnb.demo.Store.group`). If leaving it
    raises, the batch answers 500 and no operation's answer is sent.
    ``dispatch``, for an in-process API, calls it the way the engine calls
    any API (:class:`~batchnb.server.Dispatcher`), without ASGI's messages
    (the demo's :meth:`~batchnb.demo.scheduling.SchedulingApp.dispatch`);
    ``api`` still serves its requests that come over HTTP. ``connection``
    holds how the upstream is reached (its CA, a client certificate, a
    proxy; by default httpx's, the environment included): an operation that
    cannot reach it answers 502 saying why, and the server logs each such
    reason once a minute at most. ``describe_api``, for an in-process API,
    gives the OpenAPI paths and components that describe it (the demo's
    come from its routes and their checks): they join the
    batch endpoint's in ``GET /api/2.3/openapi.json``.
    """

    def __init__(
        self,
        *,
        api: ASGIApp | None = None,
        upstream: str | None = None,
        keyring: Keyring | None = None,
        limits: Limits = Limits(),
        on_shutdown: Callable[[], None] | None = None,
        idempotency: bool = False,
        group_writes: Callable[[], ContextManager[None]] | None = None,
        dispatch: Dispatcher | None = None,
        connection: Connection | None = None,
        describe_api: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        if (api is None) == (upstream is None):
            raise BatchValidationError(
                [Problem("api", "give exactly one of api= (an ASGI app, in-process) or upstream= (an HTTP API's URL)")]
            )
        self.api = api
        self._group_writes = group_writes if api is not None else None
        self._direct = dispatch if api is not None else None
        self.idempotency = idempotency
        self.upstream = upstream
        self.keyring = keyring
        self.limits = limits
        self._on_shutdown = on_shutdown
        self.connection = connection or Connection()
        self._upstream_clients: UpstreamClients | None = None
        self._upstream_ssl: ssl.SSLContext | None = None
        self._in_flight = 0
        self._unreached_log = _LogOnce()
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        self._describe_api = describe_api if api is not None else None
        self._openapi: bytes | None = None

    def __repr__(self) -> str:
        where = f"upstream={self.upstream!r}" if self.upstream else "in-process API"
        return f"BatchApp({where}, {self.keyring!r}, {self.limits})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == BATCH_PATH or scope["path"] == BATCH_PATH + "/":
            await self._batch(scope, receive, send)
        elif scope["path"] == OPENAPI_PATH:
            await self._document(scope, send)
        elif self.api is not None:
            # The API is also served directly, so one server answers both ways.
            await self.api(scope, receive, send)
        else:
            await _send_json(
                send,
                404,
                _error(
                    "not_found",
                    f"{scope['path']} is not served here; post batches to {BATCH_PATH}",
                    [Problem("path", "not found")],
                ),
                head=scope["method"] == "HEAD",
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._prepare_upstream()
                self._openapi_bytes()  # before the first request, which would otherwise wait for it
                _json.prepare()  # the same
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Release the upstream clients and the store."""
        if self._upstream_clients is not None:
            await self._upstream_clients.aclose()
            self._upstream_clients = None
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None
        if self._on_shutdown is not None:
            self._on_shutdown()
            self._on_shutdown = None

    @property
    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        """Where a batch's CPU-heavy work goes (parsing a large one, filling in costly references), off the event loop.

        Two threads: the work holds the GIL in slices of a few milliseconds,
        so the loop still answers between them; more threads would make it
        wait for each of them in turn.
        """
        if self._workers is None:
            self._workers = concurrent.futures.ThreadPoolExecutor(_THREADS, thread_name_prefix="batchnb-work")
        return self._workers

    def _dispatcher(self) -> Any:
        if self._direct is not None:
            return DirectDispatcher(self._direct, max_response_bytes=self.limits.max_response_bytes)
        if self.api is not None:
            return ASGIDispatcher(self.api, max_response_bytes=self.limits.max_response_bytes)
        if self._upstream_clients is None:
            # A connection of its own for each operation in flight (see _upstream: httpx's one pool
            # for them all cost more CPU than the requests); at most what the limits let run at once.
            most = self.limits.max_parallel * self.limits.max_concurrent_batches
            self._upstream_clients = UpstreamClients(self._upstream_client, most=most)
        upstream = UpstreamDispatcher(
            self._upstream_clients,
            self.upstream or "",
            max_response_bytes=self.limits.max_response_bytes,
            connection=self.connection,
        )
        return _Logged(upstream, self._unreached_log)

    def _prepare_upstream(self) -> None:
        """Load the upstream's CAs (and client certificate) now, as the server starts.

        Made at the first operation instead, it kept every operation of the
        first batches waiting (~30 ms for the default CAs: the event loop
        stands still while they load). One that cannot be made now is tried
        again at the first operation, which then answers why.
        """
        if self.upstream is None or self._upstream_ssl is not None:
            return
        try:
            self._upstream_ssl = self.connection.ssl_context()
        except (ssl.SSLError, OSError, ValueError):
            log.warning("the upstream's CA or client certificate could not be loaded; trying again at the first batch")

    def _upstream_client(self, limits: httpx.Limits) -> httpx.AsyncClient | OneConnection:
        """One client for the upstream; every one shares one SSL context (building one loads the CAs: ~15 ms).

        Straight to the upstream over HTTP/1.1, it is a bare connection
        (:class:`OneConnection`), which operations are sent on as they are.
        """
        if self._upstream_ssl is None:
            self._upstream_ssl = self.connection.ssl_context()
        timeout = self._upstream_timeout
        if self._lean_upstream:
            return OneConnection(ssl_context=self._upstream_ssl, connect_timeout=timeout.connect)
        return self.connection.client(
            timeout=timeout, cookies=_NO_COOKIES, limits=limits, ssl_context=self._upstream_ssl
        )

    @functools.cached_property
    def _lean_upstream(self) -> bool:
        """Whether upstream requests go on :class:`OneConnection`: HTTP/1.1, straight to the upstream (no proxy)."""
        return not self.connection.http2 and self.connection.proxy_for(self.upstream or "") is None

    @property
    def _upstream_timeout(self) -> httpx.Timeout:
        """The upstream clients' own timeouts: connecting only.

        Every upstream request runs inside the engine's bound on its
        operation (``operation_timeout``: then it answers 504), which covers
        connecting, sending and reading to the last byte. httpx's read and
        write timeouts would bound the same thing again, with a timer armed
        and disarmed for every read and every write (about a tenth of the
        gateway's CPU per operation); the pool's cannot expire, a client being
        lent to one operation at a time. Connecting keeps its own, so that a
        host that never answers the handshake is still "unreachable" (502).
        """
        return httpx.Timeout(None, connect=self.limits.operation_timeout)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document this server answers at ``GET /api/2.3/openapi.json``.

        >>> create_app(upstream="https://api.example").openapi()["paths"].keys()
        dict_keys(['/api/2.3/batch', '/api/2.3/openapi.json'])
        """
        return document(
            self.limits,
            idempotency=self.idempotency,
            secured=self.keyring is not None,
            api=self._describe_api() if self._describe_api is not None else None,
        )

    async def _document(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            error = _error(
                "method_not_allowed", f"{method} is not allowed here; use GET", [Problem("method", "use GET")]
            )
            await _send_json(send, 405, error, {"allow": "GET, HEAD"})
            return
        await _send(send, 200, self._openapi_bytes(), head=method == "HEAD")

    def _openapi_bytes(self) -> bytes:
        """The document as sent: the same for every request, so made once (~30 ms; at startup under uvicorn)."""
        if self._openapi is None:
            self._openapi = _json.dumps(self.openapi())
        return self._openapi

    async def _batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method in ("GET", "HEAD"):
            # HEAD is GET without the body (RFC 9110 §9.3.2): the same status and headers.
            limits = {**self.limits.to_wire(), "idempotency": self.idempotency}
            await _send_json(send, 200, limits, head=method == "HEAD")
            return
        if method != "POST":
            await _send_json(
                send,
                405,
                _error(
                    "method_not_allowed",
                    f"{method} is not allowed here; use POST (or GET for the limits)",
                    [Problem("method", "use POST")],
                ),
                {"allow": "GET, HEAD, POST"},
            )
            return
        timings = Timings()
        try:
            answer = await self._run(scope, receive, timings)
            began = time.perf_counter()
            body = _json.dumps(answer)
            timings.add("serialise", time.perf_counter() - began)
            status, extra = 200, {"server-timing": timings.header()}
        except _Reject as r:
            status, body, extra = r.status, _json.dumps(_error(r.code, r.message, r.details)), r.headers
        except Exception:  # a batch must never answer a bare 500
            log.exception("batch failed")
            error = _error(
                "internal_error", "the server failed while running the batch", [Problem("", "internal error")]
            )
            status, body, extra = 500, _json.dumps(error), {}
        await _send(send, status, body, extra)

    async def _run(self, scope: Scope, receive: Receive, timings: Timings) -> dict[str, Any]:
        headers = _headers(scope)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if self.keyring is not None and self.keyring.authenticate(headers, query) is None:
            raise _Reject(
                401,
                "unauthorized",
                "Authentication is required to execute this request",
                [
                    Problem(
                        "headers.Authorization",
                        "missing or wrong credentials (Bearer token, or apiKey and token query parameters)",
                    )
                ],
            )
        media = headers.get("content-type", "").split(";")[0].strip(" \t").lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise _Reject(
                415,
                "unsupported_media_type",
                f"the batch must be sent as application/json, not {media or 'no content type'!r}",
                [Problem("headers.Content-Type", "use application/json")],
            )
        began = time.perf_counter()
        raw = await _read_body(receive, headers, self.limits.max_body_bytes, self.limits.body_timeout)
        read = time.perf_counter()
        # The batch's time runs from here: parsing it (in a thread when it is large) counts against batchTimeout too.
        started = time.monotonic()
        if len(raw) > _PARSE_ON_LOOP_BYTES or raw.count(b"${") > _PARSE_ON_LOOP_REFS:
            batch = await asyncio.get_running_loop().run_in_executor(self._threads, self._parse, raw)
        else:
            batch = self._parse(raw)
        timings.add("read", read - began)
        timings.add("parse", time.perf_counter() - read)
        fwd_headers, fwd_query = self._credentials_to_forward(headers, query)
        # The slot is taken only now, for work ready to run: a client still
        # sending its body (slowly, on purpose or not) holds none.
        async with self._slot():
            with self._group_writes() if self._group_writes is not None else contextlib.nullcontext():
                responses = await self._execute(batch, fwd_headers, fwd_query, started, timings)
            began = time.perf_counter()
            answer = {"responses": [r.to_wire() for r in responses]}
            timings.add("serialise", time.perf_counter() - began)
            return answer

    async def _execute(
        self, batch: Batch, headers: dict[str, str], query: dict[str, str], started: float, timings: Timings
    ) -> list[Any]:
        return await execute(
            batch,
            self._dispatcher(),
            headers=headers,
            query=query,
            timeout=self.limits.operation_timeout,
            deadline=started + self.limits.batch_timeout,
            max_resolved_bytes=self.limits.max_resolved_bytes,
            max_jsonpath_nodes=self.limits.max_jsonpath_nodes,
            max_answer_bytes=self.limits.max_answer_bytes,
            max_work=self.limits.max_batch_work,
            executor=self._threads,
            parallel=batch.parallel,
            timings=timings,
            checked=True,  # Batch.from_wire checked every path and header
            raw_bodies=True,  # answers go out as they came, never parsed unless a reference reads them
        )

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._in_flight >= self.limits.max_concurrent_batches:
            raise _Reject(
                429,
                "too_many_requests",
                f"more than {self.limits.max_concurrent_batches} batches at once; retry later",
                [Problem("", "rate limited")],
                {"retry-after": "1"},
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    def _parse(self, raw: bytes) -> Batch:
        """The batch in ``raw``, or the 400/413 that says what is wrong with it; nothing has run."""
        try:
            data = _json.loads_strict(raw)
        except _json.DuplicateKey as exc:
            raise _Reject(
                400, "malformed_json", f"the body is ambiguous JSON: {exc}", [Problem(exc.pointer, exc.message)]
            ) from None
        except _json.IntegerTooLong as exc:
            raise _Reject(
                400, "number_too_long", f"the body holds {exc}", [Problem(exc.pointer, exc.message)]
            ) from None
        except ValueError as exc:
            raise _Reject(
                400, "malformed_json", f"the body is not valid JSON: {exc}", [Problem("", str(exc))]
            ) from None
        self._check_limits(data)
        try:
            batch = Batch.from_wire(data, text=raw)
        except BatchValidationError as exc:
            raise _Reject(
                400,
                "invalid_batch",
                f"the batch is invalid ({len(exc.problems)} problem(s)); nothing ran",
                exc.problems,
            ) from None
        self._check_references(batch)
        message = _rules.parallel_problem(batch.parallel, self.limits.max_parallel)
        if message:
            raise _Reject(
                400, "invalid_batch", f"the batch is invalid: parallel {message}", [Problem("parallel", message)]
            )
        return batch

    def _check_references(self, batch: Batch) -> None:
        """This server's bounds on JSONPaths, when it sets them lower than the ceilings every parse applies."""
        if (
            self.limits.max_jsonpath_length >= _jsonpath.MAX_QUERY_LENGTH
            and self.limits.max_jsonpath_nesting >= _jsonpath.MAX_QUERY_NESTING
        ):
            return  # every parse has checked these already
        details = [
            Problem(f"{pointer}.{fld}", problem)
            for pointer, op in batch.walk()
            for fld, r in op.references()
            if (
                problem := _jsonpath.query_problem(
                    r.query, self.limits.max_jsonpath_length, self.limits.max_jsonpath_nesting
                )
            )
        ]
        if details:
            raise _Reject(
                400, "invalid_batch", f"the batch is invalid ({len(details)} problem(s)); nothing ran", details
            )

    def _credentials_to_forward(
        self, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        # In front of an upstream, a key that protects the gateway itself stays here.
        if self.upstream is not None and self.keyring is not None:
            return {}, {}
        if "authorization" in headers:
            return {"authorization": headers["authorization"]}, {}
        if "apiKey" in query and "token" in query:
            return {}, {"apiKey": query["apiKey"], "token": query["token"]}
        return {}, {}

    def _check_limits(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
            return  # the model reports the shape problem as a 400
        shape = _rules.measure(data["requests"], lambda item: item.get("requests") if isinstance(item, dict) else None)
        details = []
        if shape.size > self.limits.max_requests:
            details.append(Problem("requests", _rules.too_many(shape.size, self.limits.max_requests)))
        if shape.depth > self.limits.max_depth:
            pointer = "".join(f"requests[{i}]" if n == 0 else f".requests[{i}]" for n, i in enumerate(shape.deepest))
            details.append(Problem(pointer, _rules.too_deep(shape.depth, self.limits.max_depth)))
        if details:
            raise _Reject(413, "too_large", "; ".join(p.message for p in details), details)


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name; the first of repeated ones counts."""
    out: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        out.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return out


async def _read_body(receive: Receive, headers: Mapping[str, str], limit: int, timeout: float) -> bytes:
    declared = headers.get("content-length")
    # ASCII digits only: str.isdigit() is true of '²', which int() refuses.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _Reject(
            413, "too_large", f"the body is {declared} bytes; the limit is {limit}", [Problem("", "body too large")]
        )
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Reject(400, "disconnected", "the client went away", [Problem("", "incomplete body")])
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _Reject(
                        413,
                        "too_large",
                        f"the body is over the limit of {limit} bytes",
                        [Problem("", "body too large")],
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise _Reject(
            408, "body_timeout", f"the batch did not arrive within {timeout:g} s", [Problem("", "incomplete body")]
        ) from None


def _error(code: str, message: str, details: list[Problem]) -> dict[str, Any]:
    """The JSON error shape; past ``MAX_ERROR_DETAILS`` problems, the first ones and ``detailCount``, their number.

    A megabyte of bad fields would otherwise be answered by ten megabytes of pointers.

    >>> err = _error("invalid_batch", "…", [Problem(f"requests[{i}].path", "bad") for i in range(150)])["error"]
    >>> len(err["details"]), err["detailCount"]
    (100, 150)
    """
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "details": [p.to_wire() for p in details[:MAX_ERROR_DETAILS]],
    }
    if len(details) > MAX_ERROR_DETAILS:
        error["detailCount"] = len(details)
    return {"error": error}


async def _send_json(
    send: Send, status: int, payload: Any, headers: Mapping[str, str] | None = None, *, head: bool = False
) -> None:
    await _send(send, status, _json.dumps(payload), headers, head=head)


async def _send(
    send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None, *, head: bool = False
) -> None:
    """Answer ``body`` as JSON; ``head``: the same status and headers, ``Content-Length`` included, without the body."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


class _LogOnce:
    """Logs each reason an upstream could not be reached once per ``quiet`` seconds: not once per operation."""

    def __init__(self, quiet: float = 60.0, most: int = 100) -> None:
        self._quiet = quiet
        self._most = most
        self._last: dict[str, float] = {}

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(message, -self._quiet) < self._quiet:
            return
        if len(self._last) >= self._most:
            self._last.clear()
        self._last[message] = now
        log.warning("operations could not reach the upstream: %s (said once a minute at most)", message)


class _Logged:
    """The upstream's dispatcher, logging why an operation could not reach it (the operation answers 502)."""

    def __init__(self, dispatch: Dispatcher, log_once: _LogOnce) -> None:
        self._dispatch = dispatch
        self._log_once = log_once

    async def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> Any:
        try:
            return await self._dispatch(method, path, headers, body)
        except Unreached as exc:
            self._log_once(exc.message)
            raise


#: the gateway's cookie jar accepts none: an upstream's Set-Cookie for one
#: caller must never ride along with another caller's operations.
_NO_COOKIES = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def create_app(
    *,
    api: ASGIApp | None = None,
    upstream: str | None = None,
    credentials: Mapping[str, str] | None = None,
    limits: Limits = Limits(),
    on_shutdown: Callable[[], None] | None = None,
    idempotency: bool = False,
    group_writes: Callable[[], ContextManager[None]] | None = None,
    dispatch: Dispatcher | None = None,
    connection: Connection | None = None,
    describe_api: Callable[[], Mapping[str, Any]] | None = None,
) -> BatchApp:
    """The batch server in front of ``api`` (an ASGI app, called in-process) or an ``upstream`` URL.

    >>> app = create_app(upstream="https://api.example", credentials={"gateway": "its-token"})

    ``credentials`` maps api keys to tokens that may use the batch endpoint.
    In front of an in-process API they are handed on to each operation (the
    API judges them); in front of an upstream they guard only the gateway.
    ``on_shutdown`` runs when the server stops (to close a store, say).
    ``idempotency=True`` announces that the API behind honours ``Idempotency-Key``
    (for a gateway, the operator knows; ``batchnb serve --upstream-idempotency``).
    ``group_writes`` is the context each batch's operations run in, and
    ``dispatch`` how they call ``api`` without ASGI (see :class:`~batchnb.server.BatchApp`).
    ``connection`` says how the upstream is reached (its CA, a client
    certificate, a proxy), checked here. ``describe_api`` gives the OpenAPI
    paths and components of an in-process API, for ``GET /api/2.3/openapi.json``.
    """
    if connection is not None:
        connection.check({"verify": "connection.verify", "cert": "connection.cert", "proxy": "connection.proxy"})
    keyring = Keyring(credentials) if credentials else None
    return BatchApp(
        api=api,
        upstream=upstream,
        keyring=keyring,
        limits=limits,
        on_shutdown=on_shutdown,
        idempotency=idempotency,
        group_writes=group_writes,
        dispatch=dispatch,
        connection=connection,
        describe_api=describe_api,
    )
