"""A logging forward proxy on loopback: absolute-form HTTP requests and CONNECT tunnels.

    with LoggingProxy() as proxy:                       # http://127.0.0.1:PORT
        httpx.get("https://127.0.0.1:8443/x", proxy=proxy.url, verify=ca)
        proxy.seen                                       # [("CONNECT", "127.0.0.1:8443")]

With ``auth="user:password"`` it answers ``407 Proxy Authentication Required``
to every request without that ``Proxy-Authorization: Basic`` (and records it
all the same). It forwards to loopback only: a target anywhere else answers
502, so no test sends traffic off the machine. Each forwarded absolute-form
request goes on a connection of its own (``Connection: close`` both ways).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import threading
from typing import Any

__all__ = ["LoggingProxy"]

#: the most bytes of a request's head (request line and headers) the proxy reads.
MAX_HEAD = 64 * 1024
HOP_BY_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoggingProxy:
    """The proxy, served by a thread of its own with its own event loop (a subprocess may use it too)."""

    def __init__(self, auth: str | None = None, start_timeout: float = 10.0) -> None:
        self._auth = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None
        self._start_timeout = start_timeout
        #: (method, target) of every request, in the order they came: "CONNECT host:port", or the absolute URL.
        self.seen: list[tuple[str, str]] = []
        #: the Proxy-Authorization of each request (None when absent), in the same order.
        self.credentials: list[str | None] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, userinfo: str) -> str:
        """The proxy's URL with ``user:password@`` in it."""
        return f"http://{userinfo}@127.0.0.1:{self.port}"

    def __enter__(self) -> LoggingProxy:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True, name="logging-proxy")
        self._thread.start()
        if not ready.wait(self._start_timeout):
            raise RuntimeError(f"the logging proxy did not start within {self._start_timeout} s")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def targets(self, method: str | None = None) -> list[str]:
        """The targets seen (of ``method`` only, when given)."""
        with self._lock:
            return [t for m, t in self.seen if method is None or m == method]

    # ------------------------------------------------------------ one client connection

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if len(head) > MAX_HEAD:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = ([*lines[0].split(" ", 2), "", ""])[:3]
                headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
                given = next((v.strip() for k, v in headers if k.strip().lower() == "proxy-authorization"), None)
                with self._lock:
                    self.seen.append((method, target))
                    self.credentials.append(given)
                if self._auth is not None and given != self._auth:
                    await self._drain_body(reader, headers)
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                    )
                    await writer.drain()
                    continue  # the client may try again on the same connection
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                else:
                    await self._forward(method, target, headers, reader, writer)
                return
        except Exception:  # noqa: BLE001 - a test proxy: a broken connection ends that connection only
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _drain_body(self, reader: asyncio.StreamReader, headers: list[tuple[str, ...]]) -> None:
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
        if length:
            await reader.readexactly(length)

    async def _open(self, host: str, port: int, writer: asyncio.StreamWriter) -> Any:
        if not _loopback(host):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return None
        try:
            return await asyncio.open_connection(host.strip("[]"), port)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return None

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        upstream = await self._open(host, int(port), writer)
        if upstream is None:
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _pipe_both(reader, writer, *upstream)

    async def _forward(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, ...]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        from urllib.parse import urlsplit

        url = urlsplit(target)
        upstream = await self._open(url.hostname or "", url.port or 80, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        kept = [f"{k.strip()}: {v.strip()}" for k, v in headers if k.strip().lower() not in HOP_BY_HOP]
        up_writer.write(("\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close"]) + "\r\n\r\n").encode())
        await self._copy_body(reader, up_writer, headers)
        await up_writer.drain()
        # The answer goes back with Connection: close, and so does this connection.
        head = await up_reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        out = [
            lines[0],
            *(ln for ln in lines[1:] if ln and not ln.lower().startswith("connection:")),
            "Connection: close",
        ]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        up_writer.close()

    async def _copy_body(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, headers: list[tuple[str, ...]]
    ) -> None:
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
        if length:
            up_writer.write(await reader.readexactly(length))


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
