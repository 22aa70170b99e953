"""Dispatchers: how one operation reaches an API and how its answer comes back, bounded.

A dispatcher is an async callable taking one request (method, path, headers,
body bytes) and returning a :class:`DispatchResult`. Three ship here:
:class:`HTTPDispatcher` (an ``httpx.AsyncClient``), :class:`ASGIDispatcher` (a direct
in-process ASGI call, about 15x cheaper than going through
``httpx.ASGITransport``) and :class:`DirectDispatcher` (an in-process API's
own dispatcher, no ASGI messages). Every answer is read under the same bound
(:class:`BodyReader`: decoded bytes, layer by layer). What a batch does with
the answer is :mod:`batchnb._engine`'s business.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

import httpx

from . import _json
from ._connect import Connection, proxy_refused, unreached
from ._exceptions import AuthenticationError, BatchError

__all__ = [
    "ACCEPT_ENCODING",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ASGIDispatcher",
    "BodyReader",
    "DirectDispatcher",
    "DispatchResult",
    "Dispatcher",
    "HTTPDispatcher",
    "ResponseTooLarge",
    "UnreadableResponse",
    "read_bounded",
    "route_path",
]

#: bytes of one operation's answer, once decoded.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
#: the encodings an operation's request accepts when it names none: what :class:`BodyReader` can undo.
ACCEPT_ENCODING = "gzip, deflate"
#: seconds operations of an in-process API (the demo's), which never suspends, may hold the event loop.
_LOOP_TURN_SECONDS = 0.005


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


class ResponseTooLarge(BatchError):
    """An API's answer larger, once decoded, than the limit: the operation answers 502.

    >>> str(ResponseTooLarge(1000))
    "the API's answer is larger than 1000 bytes once decoded"
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the API's answer is larger than {limit} bytes once decoded")


class UnreadableResponse(BatchError):
    """An API's answer in an encoding that cannot be read (or is corrupt, or cut short): the operation answers 502.

    >>> str(UnreadableResponse("br"))
    "the API's answer is encoded as 'br', which cannot be decoded here"
    >>> str(UnreadableResponse("gzip", "it ends before its gzip stream does"))
    "the API's answer is encoded as 'gzip', which cannot be decoded here: it ends before its gzip stream does"
    """

    def __init__(self, encoding: str, why: str | None = None) -> None:
        message = f"the API's answer is encoded as {encoding!r}, which cannot be decoded here"
        super().__init__(f"{message}: {why}" if why else message)


class _Layer:
    """One ``Content-Encoding`` undone by a zlib decompressor, which subclasses may replace as they read."""

    def __init__(self, wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._inner.decompress(data, max_length)

    def flush(self) -> bytes:
        return self._inner.flush()

    @property
    def eof(self) -> bool:
        return self._inner.eof

    @property
    def unused_data(self) -> bytes:
        return self._inner.unused_data


class _Deflate(_Layer):
    """``deflate`` as servers send it: a zlib stream mostly, raw deflate data sometimes."""

    def __init__(self) -> None:
        super().__init__(zlib.MAX_WBITS)
        #: the first bytes, until there are two: what tells a zlib header from raw data.
        self._head: bytes | None = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._head is not None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = None
            try:
                return self._inner.decompress(data, max_length)
            except zlib.error:
                self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._inner.decompress(data, max_length)


class _Gzip(_Layer):
    """``gzip`` as RFC 1952 defines it: one member or several, one after another, each decoded."""

    def __init__(self) -> None:
        super().__init__(16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._inner.decompress(data, max_length)
        # A member ended and more bytes came: the next member (anything else is corrupt, and says so).
        while self._inner.eof and self._inner.unused_data and len(out) < max_length:
            rest = self._inner.unused_data
            self._inner = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self._inner.decompress(rest, max_length - len(out))
        return out


def _inflater(encoding: str) -> _Layer:
    if encoding in ("gzip", "x-gzip"):
        return _Gzip()
    if encoding == "deflate":
        return _Deflate()
    raise UnreadableResponse(encoding)


#: how many times the decoded limit an encoded answer may take on the wire (plus one read's worth).
_ENCODED_ROOM = 2
_READ_ROOM = 64 * 1024


class BodyReader:
    """Decodes an answer chunk by chunk (``Content-Encoding`` layers undone) and stops past ``limit`` decoded bytes.

    >>> import gzip
    >>> reader = BodyReader("gzip", limit=1000)
    >>> reader.feed(gzip.compress(b"x" * 10)); reader.finish()
    b'xxxxxxxxxx'
    >>> BodyReader("gzip", limit=1000).feed(gzip.compress(b"x" * 5000))
    Traceback (most recent call last):
    ...
    batchnb._dispatch.ResponseTooLarge: the API's answer is larger than 1000 bytes once decoded

    Each layer is inflated with a bound on its output, so a few bytes that
    would inflate to gigabytes stop as soon as they pass the limit.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        self._encodings: list[str] = []
        if content_encoding:
            names = [e.strip().lower() for e in content_encoding.split(",")]
            # Applied in the order listed, so undone in reverse; identity is no layer.
            self._encodings = [e for e in reversed(names) if e and e != "identity"]
        self._layers = [_inflater(e) for e in self._encodings]
        self._sizes = [0] * len(self._layers)
        #: whether each layer was given any bytes: an empty body is empty, whatever its encoding says.
        self._fed = [False] * len(self._layers)
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        #: bytes as they came off the wire, while there are layers to undo (else they are what is kept).
        self._encoded = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk as it came off the wire."""
        if self._layers:
            # Compressed data is hardly ever larger than what it decodes to; data that decodes to
            # nothing (empty gzip members, empty deflate blocks) could otherwise come for as long as
            # the operation's timeout, each chunk costing the decoders' time.
            self._encoded += len(chunk)
            if self._encoded > _ENCODED_ROOM * self._limit + _READ_ROOM:
                encoding = self._encodings[-1]
                raise UnreadableResponse(
                    encoding, f"it takes more than {_ENCODED_ROOM} times {self._limit} bytes before it is decoded"
                )
            for i, layer in enumerate(self._layers):
                chunk = self._inflate(i, layer, chunk)
        self._keep(chunk)

    def _inflate(self, i: int, layer: _Layer, data: bytes) -> bytes:
        room = self._limit - self._sizes[i]
        self._fed[i] = self._fed[i] or bool(data)
        try:
            out = layer.decompress(data, room + 1)
        except zlib.error:
            raise UnreadableResponse(self._encodings[i], "its data is corrupt") from None
        # Less than asked for means every input byte was used; more than room is too much.
        if len(out) > room:
            raise ResponseTooLarge(self._limit)
        self._sizes[i] += len(out)
        return bytes(out)

    def _keep(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            raise ResponseTooLarge(self._limit)
        if chunk:
            self._chunks.append(chunk)

    def finish(self) -> bytes:
        """The whole decoded body; an encoded stream that stopped before its end is refused.

        >>> import gzip
        >>> reader = BodyReader("gzip", limit=1000)
        >>> reader.feed(gzip.compress(b'{"id": 1}')[:12]); reader.finish()  # an answer framed shorter than its stream
        Traceback (most recent call last):
        ...
        batchnb._dispatch.UnreadableResponse: the API's answer is encoded as 'gzip', which cannot be decoded here: it ends before its gzip stream does
        """
        tail = b""
        for i, layer in enumerate(self._layers):
            out = self._inflate(i, layer, tail) if tail else b""
            tail = out + layer.flush()
            # What came is a beginning only (the answer's framing held fewer bytes than the stream has):
            # decoded, it would be a shorter body passed off as the whole.
            if self._fed[i] and not layer.eof:
                encoding = self._encodings[i]
                raise UnreadableResponse(encoding, f"it ends before its {encoding} stream does")
            if layer.unused_data:
                # Bytes past the end of the stream: read as nothing, part of the answer would vanish unsaid.
                encoding = self._encodings[i]
                raise UnreadableResponse(encoding, f"it goes on after its {encoding} stream ends")
        self._keep(tail)
        return b"".join(self._chunks)


class HTTPDispatcher:
    """Dispatch over HTTP with an ``httpx.AsyncClient`` the caller owns.

    >>> import httpx
    >>> d = HTTPDispatcher(httpx.AsyncClient(), "http://127.0.0.1:8000")

    Operation paths are appended to the origin of ``base_url``; redirects are
    not followed, so an operation never leaves the API's host. ``auth`` (an
    ``httpx.Auth``) signs every operation that carries no ``Authorization``
    of its own; when it cannot get a token, the operation answers 401 with why.
    A request that never reached the API (no connection, a certificate that
    does not verify, a proxy that refuses) raises
    :class:`~batchnb._connect.Unreached`, which says so; ``connection``, the
    settings ``client`` was made with, names the proxy.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connection: Connection | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._max = max_response_bytes
        self._connection = connection
        self.auth = auth

    async def __call__(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> DispatchResult:
        if not any(k.lower() == "accept-encoding" for k, _v in headers):
            headers = [*headers, ("accept-encoding", ACCEPT_ENCODING)]
        try:
            request = self._client.build_request(method, self._base + path, headers=headers, content=body)
            # An operation's own credentials are the user's choice: they win over the flow.
            auth = None if self.auth is None or any(k.lower() == "authorization" for k, _v in headers) else self.auth
            response = await self._client.send(request, stream=True, follow_redirects=False, auth=auth)
            refused = proxy_refused(response)
            if refused is not None:
                await response.aclose()
                raise refused
        except AuthenticationError as exc:  # no token: the operation was not sent
            content = _json.dumps({"error_description": exc.message})
            return DispatchResult(401, {"content-type": "application/json"}, content)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError) as exc:
            proxy = self._connection.proxy_for(self._base) if self._connection is not None else None
            raise unreached(exc, self._base, proxy) from exc
        try:
            content = await read_bounded(response, self._max)
        finally:
            await response.aclose()
        return DispatchResult(response.status_code, {k.lower(): v for k, v in response.headers.items()}, content)


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """A streamed response's body, decoded, refused past ``limit`` decoded bytes (see :class:`BodyReader`)."""
    if response.is_stream_consumed:
        # Made in memory, content given (a test transport's answer): already decoded, only counted here.
        reader = BodyReader(None, limit)
        reader.feed(response.content)
        return reader.finish()
    reader = BodyReader(response.headers.get("content-encoding"), limit)
    async for chunk in response.aiter_raw():  # raw: the reader decodes, and counts as it goes
        reader.feed(chunk)
    return reader.finish()


_ENCODED_SLASH = re.compile("%2f", re.IGNORECASE)


def route_path(raw_path: str) -> str:
    """The path an ASGI app routes on: percent-decoded, but an encoded ``/`` stays encoded.

    >>> route_path("/companies/co%20X%2Fservices%2Fsv_Y")
    '/companies/co X%2Fservices%2Fsv_Y'

    ASGI servers decode ``%2F`` into a ``/``, so a value encoded as one
    segment would become several; here it stays one segment.
    """
    if "%" not in raw_path:
        return raw_path  # nothing encoded, nothing to decode
    return "%2F".join(unquote(part) for part in _ENCODED_SLASH.split(raw_path))


class ASGIDispatcher:
    """Dispatch by calling an ASGI app directly, in this process.

    >>> async def app(scope, receive, send):
    ...     await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    ...     await send({"type": "http.response.body", "body": b'{"ok": true}'})
    >>> import asyncio
    >>> asyncio.run(ASGIDispatcher(app)("GET", "/x", [], None)).body
    b'{"ok": true}'
    """

    def __init__(
        self, app: Callable[..., Awaitable[None]], *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ) -> None:
        self._app = app
        self._max = max_response_bytes

    async def __call__(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> DispatchResult:
        raw_path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": route_path(raw_path) if "%" in raw_path else raw_path,
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            "client": ("127.0.0.1", 0),
            "server": ("batchnb", 80),
            "state": {},
        }
        sent_body = False
        disconnected: asyncio.Event | None = None  # made only for an app that listens past the body

        async def receive() -> dict[str, Any]:
            nonlocal sent_body, disconnected
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body or b"", "more_body": False}
            if disconnected is None:
                disconnected = asyncio.Event()
            await disconnected.wait()
            return {"type": "http.disconnect"}

        status = 500
        out_headers: dict[str, str] = {}
        reader: BodyReader | None = None

        async def send(message: Mapping[str, Any]) -> None:
            nonlocal status, reader
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    out_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
                reader = BodyReader(out_headers.get("content-encoding"), self._max)
            elif message["type"] == "http.response.body" and reader is not None:
                reader.feed(message.get("body", b""))

        try:
            await self._app(scope, receive, send)
        finally:
            if disconnected is not None:
                disconnected.set()
        return DispatchResult(status, out_headers, reader.finish() if reader is not None else b"")


class DirectDispatcher:
    """Dispatch through an in-process API's own dispatcher (no ASGI messages), its answers bounded like the others'.

    >>> async def api(method, path, headers, body):
    ...     return DispatchResult(200, {"content-type": "application/json"}, b"{}")
    >>> d = DirectDispatcher(api, max_response_bytes=1000)

    ``dispatch`` gives decoded bytes (no ``Content-Encoding`` to undo); an
    answer longer than ``max_response_bytes`` is refused as from any API.
    """

    def __init__(self, dispatch: Dispatcher, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._dispatch = dispatch
        self._max = max_response_bytes
        #: when an operation sent here last gave the event loop back.
        self._held_since = time.perf_counter()

    async def __call__(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> DispatchResult:
        # An in-process API answers without ever suspending: fifty of its answers in a row held every
        # other request of the server for 400 ms. So the loop is given back every few milliseconds.
        # (An API over HTTP suspends at each operation: the engine itself never yields for nothing.)
        if time.perf_counter() - self._held_since > _LOOP_TURN_SECONDS:
            await asyncio.sleep(0)
            self._held_since = time.perf_counter()
        result = await self._dispatch(method, path, headers, body)
        if len(result.body) > self._max:
            raise ResponseTooLarge(self._max)
        return result
