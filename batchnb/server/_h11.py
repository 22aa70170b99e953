"""One kept-alive HTTP/1.1 connection to an upstream, on asyncio's own streams.

The gateway lends each operation in flight a connection of its own (see
:mod:`batchnb.server._upstream`). httpx's default transport (httpcore on
anyio) spent most of the gateway's CPU per operation on machinery a
connection lent to one operation at a time does not need: a lock, cancel
scopes and a pool's bookkeeping around every read and write, about 0.45 ms of
the 0.75 ms an operation cost against an API 100 ms away; httpx's client,
request and response objects around it took a good part of the rest. With 64
operations answered in the same few milliseconds, that is queueing: the last
of them started its next request late. :class:`OneConnection` speaks HTTP/1.1
with h11 (httpcore's own parser) straight on an ``asyncio`` stream, and
:meth:`OneConnection.fetch` sends an operation as an httpx client would (the
same bytes on the wire).

It is used where nothing else is needed: no proxy for the upstream and no
HTTP/2 (see :meth:`batchnb.server.app.BatchApp`); an httpx client serves
every other case. It keeps httpx's meanings: the same exceptions
(``ConnectError`` with the ``ssl``/``OSError`` as its cause, ``ConnectTimeout``,
``ReadError``, ``RemoteProtocolError``), the connection closed when an answer
could not be read to its end, and idle connections dropped after
``keepalive_expiry`` (httpx's 5 s) or as soon as the server has closed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import httpx

from .._dispatch import ACCEPT_ENCODING, BodyReader, DispatchResult

__all__ = ["OneConnection", "Origin"]

#: a path httpx would send exactly as written: RFC 3986 path and query characters, percent escapes whole.
_PLAIN = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
#: the headers an httpx client adds to every request, in its order.
_CLIENT_DEFAULTS = (
    ("accept", "*/*"),
    ("connection", "keep-alive"),
    ("user-agent", f"python-httpx/{httpx.__version__}"),
)
_DEFAULT_NAMES = frozenset(k for k, _v in _CLIENT_DEFAULTS)
#: methods that httpx gives a ``Content-Length: 0`` when they carry no body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Origin:
    """Where an upstream is reached, read once from its base URL.

    >>> o = Origin.of("https://api.example/v1/")
    >>> o.key, o.host, o.target("/things/7?x=1")
    (('https', 'api.example', 443), 'api.example', '/v1/things/7?x=1')
    >>> o.target("/a b")  # what httpx would make of it
    '/v1/a%20b'
    """

    #: (scheme, host, port): which connection serves it.
    key: tuple[str, str, int]
    #: the Host header.
    host: str
    #: the base URL's path, put before every operation's.
    prefix: str
    #: the base URL, as the operation's path is appended to it.
    base: str

    @classmethod
    def of(cls, base_url: str) -> Origin:
        base = base_url.rstrip("/")
        url = httpx.URL(base)
        port = url.port or (443 if url.scheme == "https" else 80)
        prefix = url.raw_path.decode("ascii").rstrip("/")
        return cls((url.scheme, url.host, port), url.netloc.decode("ascii"), prefix, base)

    def target(self, path: str) -> str:
        """The request target for an operation's ``path``, as httpx would send it."""
        if "/." not in path and _PLAIN.fullmatch(path):
            return self.prefix + path  # as httpx sends it (tests/test_h11.py holds the two together)
        return httpx.URL(self.base + path).raw_path.decode("ascii")


#: the largest head h11 buffers before refusing it (httpcore's figure).
_MAX_HEAD = 100 * 1024
_READ = 64 * 1024


class OneConnection:
    """At most one HTTP/1.1 connection to an upstream, serving one operation at a time.

    >>> OneConnection(connect_timeout=5.0)
    OneConnection(unconnected)

    ``ssl_context`` verifies ``https`` upstreams (None: plain HTTP only);
    ``connect_timeout`` bounds connecting and the TLS handshake. A second
    operation while one is running is an error: the gateway lends a
    connection to one operation at a time.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._expiry = keepalive_expiry
        self._conn: _Connection | None = None
        self._busy = False

    def __repr__(self) -> str:
        state = "busy" if self._busy else ("idle" if self._conn is not None else "unconnected")
        return f"OneConnection({state})"

    async def fetch(
        self,
        origin: Origin,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
        limit: int,
    ) -> DispatchResult:
        """One operation's exchange: its answer's status, lower-case headers and body.

        >>> OneConnection().fetch  # doctest: +ELLIPSIS
        <bound method OneConnection.fetch of OneConnection(unconnected)>

        The request carries what an httpx client would add (Host, Accept,
        User-Agent, Accept-Encoding, Content-Length); the answer's body is
        read whole, decoded and bounded by :class:`~batchnb._dispatch.BodyReader`
        (``limit`` decoded bytes), and its headers come back with lower-case
        names, repeated ones joined as httpx joins them. Building and reading
        those objects was a fifth of the gateway's CPU an operation.
        """
        if self._busy:
            raise RuntimeError("OneConnection serves one request at a time")
        self._busy = True
        conn: _Connection | None = None
        reusable = False
        try:
            conn = await self._connection_for(origin.key)
            head = await conn.send(method, origin.target(path), _request_headers(origin, method, headers, body), body)
            answer: dict[str, str] = {}
            for name, value in head.headers:
                key, text = name.decode("latin-1"), value.decode("latin-1")
                answer[key] = f"{answer[key]}, {text}" if key in answer else text
            reader = BodyReader(answer.get("content-encoding"), limit)
            async for chunk in conn.body():
                reader.feed(chunk)
            content = reader.finish()
            reusable = conn.finish()
        finally:
            if conn is None:
                self._busy = False
            else:
                self._done(conn, reusable)
        return DispatchResult(head.status_code, answer, content)

    async def aclose(self) -> None:
        self._drop()

    def _done(self, conn: _Connection, reusable: bool) -> None:
        """The answer is over: keep the connection for the next request, or close it."""
        self._busy = False
        if reusable and conn is self._conn:
            conn.idle_since = time.monotonic()
        else:
            conn.close()
            if conn is self._conn:
                self._conn = None

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connection_for(self, key: tuple[str, str, int]) -> _Connection:
        conn = self._conn
        if conn is not None and (conn.key != key or not conn.usable(self._expiry)):
            self._drop()
            conn = None
        if conn is None:
            conn = self._conn = await _Connection.open(key, self._ssl, self._connect_timeout)
        return conn


class _Connection:
    """A socket and h11's state for it."""

    def __init__(self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key = key
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self.idle_since = time.monotonic()

    @classmethod
    async def open(
        cls, key: tuple[str, str, int], context: ssl.SSLContext | None, timeout: float | None
    ) -> _Connection:
        scheme, host, port = key
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the URL's scheme must be http or https, not {scheme!r}")
        if scheme == "https" and context is None:
            raise httpx.ConnectError("no TLS settings for an https upstream")
        tls = {"ssl": context, "server_hostname": host} if scheme == "https" else {}
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=_READ, **tls)  # type: ignore[arg-type]  # typeshed has no overload taking ssl and server_hostname from one mapping
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took longer than {timeout} s") from exc
        except OSError as exc:  # refused, unresolvable, a certificate that does not verify (ssl.SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return cls(key, reader, writer)

    def usable(self, expiry: float) -> bool:
        """Idle, fresh, and not closed by the server (its EOF has arrived while the connection waited)."""
        return (
            self._h11.our_state is h11.IDLE
            and self._h11.their_state is h11.IDLE
            and time.monotonic() - self.idle_since < expiry
            and not self._reader.at_eof()
            and not self._writer.is_closing()
        )

    async def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> h11.Response:
        """Send a request given as its parts and read the answer's head; the body is read by :meth:`body`."""
        try:
            # One write: one system call and one packet (Nagle is off), where head and body apart
            # cost two of each here and two reads at the API.
            parts = [self._h11.send(h11.Request(method=method, target=target, headers=headers))]
            if body:
                parts.append(self._h11.send(h11.Data(data=body)))
            parts.append(self._h11.send(h11.EndOfMessage()))
            self._writer.write(b"".join(p for p in parts if p))
            await self._writer.drain()
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                return event
            # an InformationalResponse (100 Continue, 103 Early Hints): the answer is still to come

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return

    def finish(self) -> bool:
        """After the whole answer: ready for the next request on this connection?"""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    async def _next(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise httpx.RemoteProtocolError("Server disconnected without sending a complete response.")
                return event
            try:
                data = await self._reader.read(_READ)
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            if not data and self._h11.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            self._h11.receive_data(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a socket that is already gone
            self._writer.close()


def _request_headers(
    origin: Origin, method: str, headers: list[tuple[str, str]], body: bytes | None
) -> list[tuple[str, str]]:
    """``headers`` merged into what the gateway's httpx clients sent, in their order: Host, the client's
    defaults (an operation's value in place of a default's), the operation's others, what answers
    :class:`~batchnb._dispatch.BodyReader` can decode, then the body's length."""
    given = {k.lower(): v for k, v in headers}
    framed = "content-length" in given or "transfer-encoding" in given
    out = [("host", origin.host)]
    if body is None and method in _BODY_METHODS and not framed:
        out.append(("content-length", "0"))  # where httpx puts it: among the headers it adds itself
    out.extend((k, given.get(k, v)) for k, v in _CLIENT_DEFAULTS)
    out.extend((k, v) for k, v in headers if k.lower() not in _DEFAULT_NAMES)
    if "accept-encoding" not in given:
        out.append(("accept-encoding", ACCEPT_ENCODING))
    if body is not None and not framed:
        out.append(("content-length", str(len(body))))
    return out
