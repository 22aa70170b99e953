"""OneConnection, the gateway's upstream connection: HTTP/1.1 on one kept-alive connection, as httpx means it.

A scripted server on loopback answers each path its own way (by length,
chunked, until close, after a 100 Continue, not at all), counting the
connections it accepts, so that each test sees what went over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import ssl
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import httpx
import orjson
import pytest

from batchnb._connect import unreached
from batchnb._dispatch import DispatchResult, ResponseTooLarge, UnreadableResponse
from batchnb.server._h11 import OneConnection, Origin
from tests.support.tls import TLSServer

#: a body as an API sends it, gzipped.
_ZIPPED = gzip.compress(b'{"zipped": true}', mtime=0)
#: a body gzipped in two members, one after the other (RFC 1952).
_MEMBERS = gzip.compress(b'{"first": 1, ', mtime=0) + gzip.compress(b'"second": 2}', mtime=0)
#: the first half of a gzipped body, framed as if it were all of it.
_CUT = gzip.compress(b'{"items": [' + b"1, " * 200 + b"1]}", mtime=0)[:40]

ANSWERS = {
    "/ok": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}',
    "/created": b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nSet-Cookie: s=1\r\n\r\n{}",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
    "/eof": b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
    "/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter",
    "/gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(_ZIPPED), _ZIPPED),
    "/cut-gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(_CUT), _CUT),
    "/gzip-members": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_MEMBERS), _MEMBERS),
    "/empty-gzip": b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n",
    "/big": b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1_000_000,
    "/huge-head": b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n",
}


class Scripted:
    """A loopback server answering each request by :data:`ANSWERS`; ``/drop`` closes without a word."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.bodies: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").split("\r\n")
                self.requests.append(head)
                length = next((int(f.split(":", 1)[1]) for f in fields if f.lower().startswith("content-length:")), 0)
                self.bodies.append(await reader.readexactly(length) if length else b"")
                path = line.split(" ")[1]
                if path == "/drop":
                    break
                writer.write(ANSWERS[path])
                await writer.drain()
                if path in ("/close", "/eof"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted()
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    try:
        yield script, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for w in script.writers:
            w.close()


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]  # a value the annotation does not name, on purpose


def fetch(
    conn: OneConnection, url: str, method: str, path: str, body: bytes | None = None, limit: int = 2_000_000
) -> Awaitable[DispatchResult]:
    return conn.fetch(Origin.of(url), method, path, [], body, limit)


def test_requests_share_one_kept_alive_connection_and_bodies_arrive_whole() -> None:
    async def main() -> None:
        async with scripted() as (script, url):
            conn = OneConnection()
            for i in range(5):
                r = await fetch(conn, url, "POST", "/created", b'{"n": %d}' % i)
                assert (r.status, r.body) == (201, b"{}")
            assert (await fetch(conn, url, "GET", "/ok")).body == b'{"ok": true}'
            assert (await fetch(conn, url, "GET", "/chunked")).body == b"abcde"
            assert script.connections == 1, "every request should have reused the first connection"
            assert script.bodies[:5] == [b'{"n": %d}' % i for i in range(5)]
            assert script.requests[0].startswith(b"POST /created HTTP/1.1\r\n")
            assert b"\r\nhost: 127.0.0.1:" in script.requests[0].lower()
            await conn.aclose()

    run(main())


def test_answers_that_end_the_connection_are_read_whole_and_the_next_request_opens_a_new_one() -> None:
    async def main() -> None:
        async with scripted() as (script, url):
            conn = OneConnection()
            assert (await fetch(conn, url, "GET", "/close")).body == b"bye"
            assert (await fetch(conn, url, "GET", "/eof")).body == b"until the end"
            assert (await fetch(conn, url, "GET", "/ok")).status == 200
            assert script.connections == 3
            await conn.aclose()

    run(main())


def test_an_informational_answer_is_skipped() -> None:
    async def main() -> None:
        async with scripted() as (_script, url):
            r = await fetch(OneConnection(), url, "GET", "/continue")
            assert (r.status, r.body) == (200, b"after")

    run(main())


def test_an_encoded_answer_is_decoded_within_the_limit() -> None:
    async def main() -> None:
        async with scripted() as (_script, url):
            conn = OneConnection()
            assert (await fetch(conn, url, "GET", "/gzip")).body == b'{"zipped": true}'
            with pytest.raises(ResponseTooLarge):
                await fetch(conn, url, "GET", "/gzip", limit=10)  # counted once decoded
            await conn.aclose()

    run(main())


def test_a_compressed_answer_is_read_whole_in_members_refused_cut_short_and_empty_when_empty() -> None:
    async def main() -> None:
        async with scripted() as (_script, url):
            conn = OneConnection()
            assert (await fetch(conn, url, "GET", "/gzip-members")).body == b'{"first": 1, "second": 2}'
            with pytest.raises(UnreadableResponse, match="ends before its gzip stream does"):
                await fetch(conn, url, "GET", "/cut-gzip")
            r = await fetch(conn, url, "GET", "/empty-gzip")  # no bytes: nothing was cut
            assert (r.status, r.body) == (204, b"")
            await conn.aclose()

    run(main())


def test_an_answer_not_read_to_its_end_closes_the_connection() -> None:
    async def main() -> None:
        async with scripted() as (script, url):
            conn = OneConnection()
            with pytest.raises(ResponseTooLarge):
                # the rest of the megabyte is still on the wire: this connection cannot carry another
                await fetch(conn, url, "GET", "/big", limit=1000)
            assert (await fetch(conn, url, "GET", "/ok")).status == 200
            assert script.connections == 2
            await conn.aclose()

    run(main())


def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def main() -> None:
        async with scripted() as (script, url):
            conn = OneConnection()
            assert (await fetch(conn, url, "GET", "/ok")).status == 200
            script.writers[0].close()  # the server's keep-alive timeout, say
            for _ in range(100):  # until the EOF has reached the client's side (bounded)
                await asyncio.sleep(0.01)
                if script.writers[0].is_closing():
                    break
            await asyncio.sleep(0.05)
            assert (await fetch(conn, url, "GET", "/ok")).status == 200
            assert script.connections == 2
            await conn.aclose()

    run(main())


def test_an_idle_connection_past_its_expiry_is_replaced() -> None:
    async def main() -> None:
        async with scripted() as (script, url):
            conn = OneConnection(keepalive_expiry=0)
            await fetch(conn, url, "GET", "/ok")
            await fetch(conn, url, "GET", "/ok")
            assert script.connections == 2
            await conn.aclose()

    run(main())


def test_a_server_that_closes_without_answering_is_a_remote_protocol_error() -> None:
    async def main() -> None:
        async with scripted() as (_script, url):
            conn = OneConnection()
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await fetch(conn, url, "GET", "/drop")
            assert (await fetch(conn, url, "GET", "/ok")).status == 200  # and the connection is usable again
            await conn.aclose()

    run(main())


def test_a_head_past_its_bound_is_refused() -> None:
    async def main() -> None:
        async with scripted() as (_script, url):
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(OneConnection(), url, "GET", "/huge-head")

    run(main())


def test_one_request_at_a_time() -> None:
    async def main() -> None:
        async with scripted() as (_script, url):
            conn = OneConnection()
            first = asyncio.ensure_future(fetch(conn, url, "GET", "/ok"))
            await asyncio.sleep(0)  # the first is under way: connecting
            with pytest.raises(RuntimeError, match="one request at a time"):
                await fetch(conn, url, "GET", "/ok")
            assert (await first).status == 200
            await conn.aclose()

    run(main())


def test_a_refused_connection_is_httpx_connect_error_and_says_so() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError) as caught:
            await fetch(OneConnection(connect_timeout=5), f"http://127.0.0.1:{port}", "GET", "/x")
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)
        assert unreached(caught.value, f"http://127.0.0.1:{port}/x").transient

    run(main())


async def _ok(scope: dict, receive: object, send: object) -> None:
    from tests.support import tls

    await tls._echo(scope, receive, send)


def test_https_verifies_against_the_given_ca_and_a_foreign_certificate_is_a_certificate_error(tmp_path: Path) -> None:
    with TLSServer(_ok, tmp_path) as server:

        async def main() -> None:
            trusted = OneConnection(ssl_context=ssl.create_default_context(cafile=server.ca_file))
            for _ in range(3):
                r = await fetch(trusted, server.url, "GET", "/hello")
                assert orjson.loads(r.body) == {"ok": True, "path": "/hello"}
            await trusted.aclose()
            foreign = OneConnection(ssl_context=ssl.create_default_context())  # the system's CAs: not the test's CA
            with pytest.raises(httpx.ConnectError) as caught:
                await fetch(foreign, server.url, "GET", "/hello")
            message = unreached(caught.value, server.url).message
            assert message.startswith(f"certificate verify failed for {server.url}"), message
            assert not unreached(caught.value, server.url).transient

        run(main())


def test_the_gateway_goes_straight_on_one_connection_and_through_httpx_when_a_proxy_is_set() -> None:
    from batchnb._connect import Connection
    from batchnb.server.app import create_app

    straight = create_app(upstream="http://127.0.0.1:9", connection=Connection(trust_env=False))
    proxied = create_app(upstream="http://127.0.0.1:9", connection=Connection(proxy="http://127.0.0.1:8"))
    # Straight: the bare connection, which operations are sent on as they are (no client around them).
    assert isinstance(straight._upstream_client(httpx.Limits()), OneConnection)
    through = proxied._upstream_client(httpx.Limits())
    assert isinstance(through, httpx.AsyncClient) and not isinstance(through._transport, OneConnection)


# ---------------------------------------------------------------- fetch: an operation without httpx's objects


def test_fetch_sends_what_an_httpx_client_sends_and_reads_the_answer_bounded() -> None:
    async def main() -> None:
        async with scripted() as (script, url):
            origin = Origin.of(url + "/")
            conn = OneConnection()
            ops = [("POST", "/created", b'{"n": 1}'), ("PUT", "/ok", None), ("GET", "/chunked", None)]
            for method, path, body in ops:
                await conn.fetch(origin, method, path, [("x-trace", "t1")], body, 1000)
            async with httpx.AsyncClient() as http:
                for method, path, body in ops:
                    headers = [("x-trace", "t1"), ("accept-encoding", "gzip, deflate")]  # as HTTPDispatcher adds it
                    await http.request(method, url + path, headers=headers, content=body)
            fetched = script.requests[:3]
            # The gateway's clients keep no cookies: this one did (the script sets one).
            through_httpx = [re.sub(rb"\r\ncookie: [^\r]*", b"", h, flags=re.I) for h in script.requests[3:]]
            # Byte for byte what an httpx client sends (names' case aside: h11 writes them lower-case).
            assert [h.lower() for h in fetched] == [h.lower() for h in through_httpx]
            assert b"\r\nconnection: keep-alive\r\n" in fetched[0].lower()
            assert script.bodies[0] == b'{"n": 1}' and script.connections == 2  # one kept-alive connection each
            answer = await conn.fetch(origin, "GET", "/chunked", [], None, 1000)
            assert (answer.status, answer.body, answer.headers.get("transfer-encoding")) == (200, b"abcde", "chunked")
            with pytest.raises(ResponseTooLarge):
                await conn.fetch(origin, "GET", "/big", [], None, 1000)
            assert (await conn.fetch(origin, "GET", "/ok", [], None, 1000)).status == 200  # on a new connection
            assert script.connections == 3, "an answer not read to its end must close its connection"
            await conn.aclose()

    run(main())


def test_an_origin_sends_every_path_as_httpx_would() -> None:
    import random

    chars = "ABCXYZabcxyz0189-._~!$&'()*+,;=:@/?%. \"<>[]{}|\\^`é#"
    rng = random.Random(7)
    for base in ("http://h:81", "http://h:81/v1/", "https://api.example/a%20b"):
        origin = Origin.of(base)
        for _ in range(3000):
            path = "/" + "".join(rng.choice(chars) for _ in range(rng.randint(0, 24)))
            try:
                expected = httpx.URL(base.rstrip("/") + path).raw_path.decode("ascii")
            except httpx.InvalidURL:
                continue
            assert origin.target(path) == expected, (base, path)
