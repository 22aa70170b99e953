"""The Batch API 2.3 server: an ASGI app you can mount, test in-process, or serve with uvicorn.

    POST /api/2.3/batch     run a batch (auth, 400/401/413/415/429 with pointers)
    GET  /api/2.3/batch     the server's limits, so that clients can split work

Behind it sits the API the operations call: by default the demo Scheduling
API on SQLite, reached by a direct ASGI call (no network hop); or, with
``upstream=``, any HTTP API, which turns this server into a batch gateway.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import httpx
import orjson
from starlette.datastructures import Headers, QueryParams

from .._exceptions import BatchValidationError, Problem
from ..engine import ASGIDispatcher, HTTPDispatcher, execute
from ..model import BATCH_PATH, Batch
from .auth import Keyring

__all__ = ["BatchApp", "Limits", "create_app", "BATCH_PATH"]

log = logging.getLogger("batchnb.server")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """What one batch may ask of the server.

    >>> Limits(max_requests=100).max_requests
    100
    """

    max_requests: int = 50
    max_depth: int = 4
    max_body_bytes: int = 1024 * 1024
    max_response_bytes: int = 10 * 1024 * 1024
    operation_timeout: float = 30.0
    batch_timeout: float = 300.0
    max_concurrent_batches: int = 32

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "version": "2.3",
            "maxRequests": d["max_requests"],
            "maxDepth": d["max_depth"],
            "maxBodyBytes": d["max_body_bytes"],
            "maxResponseBytes": d["max_response_bytes"],
            "operationTimeout": d["operation_timeout"],
            "batchTimeout": d["batch_timeout"],
        }


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Problem], headers: dict[str, str] | None = None):
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers or {}


class BatchApp:
    """The batch endpoint in front of an API.

    >>> app = create_app(db=":memory:", credentials={"demo": "demo-token"})
    >>> app.limits.max_requests
    50

    ``api`` is an ASGI app called in-process for each operation, or
    ``upstream`` the base URL of an HTTP API. ``keyring`` guards the batch
    endpoint: in front of the in-process API the same credentials are handed
    on to each operation; in front of an upstream, the gateway's own
    credentials are never forwarded and operations carry their own.
    """

    def __init__(
        self,
        *,
        api: ASGIApp | None = None,
        upstream: str | None = None,
        keyring: Keyring | None = None,
        limits: Limits = Limits(),
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        if (api is None) == (upstream is None):
            raise ValueError("give exactly one of api= (in-process) or upstream= (an HTTP API)")
        self.api = api
        self.upstream = upstream
        self.keyring = keyring
        self.limits = limits
        self._on_shutdown = on_shutdown
        self._http: httpx.AsyncClient | None = None
        self._in_flight = 0

    def __repr__(self) -> str:
        where = f"upstream={self.upstream!r}" if self.upstream else "in-process API"
        return f"BatchApp({where}, {self.keyring!r}, {self.limits})"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == BATCH_PATH or scope["path"] == BATCH_PATH + "/":
            await self._batch(scope, receive, send)
        elif self.api is not None:
            # The API is also served directly, so one server answers both ways.
            await self.api(scope, receive, send)
        else:
            await _send_json(send, 404, _error("not_found", f"{scope['path']} is not served here; post batches to {BATCH_PATH}", [Problem("path", "not found")]))

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        """Release the upstream client and the store."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._on_shutdown is not None:
            self._on_shutdown()
            self._on_shutdown = None

    def _dispatcher(self) -> Any:
        if self.api is not None:
            return ASGIDispatcher(self.api, max_response_bytes=self.limits.max_response_bytes)
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.limits.operation_timeout, trust_env=False)
        return HTTPDispatcher(self._http, self.upstream or "", max_response_bytes=self.limits.max_response_bytes)

    async def _batch(self, scope: dict, receive: Callable, send: Callable) -> None:
        method = scope["method"]
        if method == "GET":
            await _send_json(send, 200, self.limits.to_wire())
            return
        if method != "POST":
            await _send_json(send, 405, _error("method_not_allowed", f"{method} is not allowed here; use POST (or GET for the limits)", [Problem("method", "use POST")]), {"allow": "GET, POST"})
            return
        try:
            status, payload = 200, await self._run(scope, receive)
            extra: dict[str, str] = {}
        except _Reject as r:
            status, payload, extra = r.status, _error(r.code, r.message, r.details), r.headers
        except Exception:  # noqa: BLE001 - a batch must never answer a bare 500
            log.exception("batch failed")
            status, payload, extra = 500, _error("internal_error", "the server failed while running the batch", [Problem("", "internal error")]), {}
        await _send_json(send, status, payload, extra)

    async def _run(self, scope: dict, receive: Callable) -> dict[str, Any]:
        headers = Headers(scope=scope)
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        if self.keyring is not None and self.keyring.authenticate(headers, query) is None:
            raise _Reject(401, "unauthorized", "Authentication is required to execute this request",
                          [Problem("headers.Authorization", "missing or wrong credentials (Bearer token, or apiKey and token query parameters)")])
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise _Reject(415, "unsupported_media_type", f"the batch must be sent as application/json, not {media or 'no content type'!r}",
                          [Problem("headers.Content-Type", "use application/json")])
        if self._in_flight >= self.limits.max_concurrent_batches:
            raise _Reject(429, "too_many_requests", f"more than {self.limits.max_concurrent_batches} batches at once; retry later",
                          [Problem("", "rate limited")], {"retry-after": "1"})
        self._in_flight += 1
        try:
            raw = await _read_body(receive, headers, self.limits.max_body_bytes)
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _Reject(400, "malformed_json", f"the body is not valid JSON: {exc}", [Problem("", str(exc))]) from None
            self._check_limits(data)
            try:
                batch = Batch.from_wire(data)
            except BatchValidationError as exc:
                raise _Reject(400, "invalid_batch", f"the batch is invalid ({len(exc.problems)} problem(s)); nothing ran", exc.problems) from None
            fwd_headers, fwd_query = self._credentials_to_forward(headers, query)
            started = time.monotonic()
            responses = await execute(
                batch,
                self._dispatcher(),
                headers=fwd_headers,
                query=fwd_query,
                timeout=self.limits.operation_timeout,
                deadline=started + self.limits.batch_timeout,
            )
            return {"responses": [r.to_wire() for r in responses]}
        finally:
            self._in_flight -= 1

    def _credentials_to_forward(self, headers: Headers, query: QueryParams) -> tuple[dict[str, str], dict[str, str]]:
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
        count, too_deep = 0, None
        stack: list[tuple[list, str, int]] = [(data["requests"], "requests", 1)]
        while stack:
            items, prefix, depth = stack.pop()
            for i, item in enumerate(items):
                count += 1
                if depth > self.limits.max_depth and too_deep is None:
                    too_deep = f"{prefix}[{i}]"
                if isinstance(item, dict) and isinstance(item.get("requests"), list):
                    stack.append((item["requests"], f"{prefix}[{i}].requests", depth + 1))
        details = []
        if count > self.limits.max_requests:
            details.append(Problem("requests", f"{count} operations (nested included); the limit is {self.limits.max_requests}"))
        if too_deep is not None:
            details.append(Problem(too_deep, f"nested deeper than the limit of {self.limits.max_depth} levels"))
        if details:
            raise _Reject(413, "too_large", "; ".join(p.message for p in details), details)


async def _read_body(receive: Callable, headers: Headers, limit: int) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Reject(413, "too_large", f"the body is {declared} bytes; the limit is {limit}", [Problem("", "body too large")])
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Reject(400, "disconnected", "the client went away", [Problem("", "incomplete body")])
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _Reject(413, "too_large", f"the body is over the limit of {limit} bytes", [Problem("", "body too large")])
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(code: str, message: str, details: list[Problem]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": [p.to_wire() for p in details]}}


async def _send_json(send: Callable, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
    body = orjson.dumps(payload)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def create_app(
    *,
    db: str | Path | None = None,
    upstream: str | None = None,
    credentials: Mapping[str, str] | None = None,
    limits: Limits = Limits(),
) -> BatchApp:
    """The batch server, in front of the demo Scheduling API (``db``) or an ``upstream`` URL.

    >>> app = create_app(db=":memory:", credentials={"demo": "demo-token"})

    ``credentials`` maps api keys to tokens. In front of the demo API they are
    required (they are its tenants); in front of an upstream they are
    optional and guard only the gateway.
    """
    keyring = Keyring(credentials) if credentials else None
    if upstream is not None:
        return BatchApp(upstream=upstream, keyring=keyring, limits=limits)
    if keyring is None:
        raise ValueError("the demo API needs credentials (its tenants)")
    from .scheduling import scheduling_app
    from .store import Store

    store = Store(db if db is not None else "batchnb-demo.sqlite3")
    return BatchApp(api=scheduling_app(store, keyring), keyring=keyring, limits=limits, on_shutdown=store.close)
