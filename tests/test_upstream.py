"""batchnb.server._upstream: the gateway lends each operation a client of one kept-alive connection."""

from __future__ import annotations

import asyncio
import ssl
from typing import ClassVar

import httpx
import pytest

from batchnb._connect import Connection
from batchnb.server import Limits, create_app
from batchnb.server._upstream import ONE_CONNECTION, UpstreamClients, UpstreamDispatcher
from batchnb.server.app import BatchApp
from tests.support.faults import LoopbackServer, RecordingUpstream, Reply, read_request


def counting_clients(most: int = 8) -> tuple[UpstreamClients, list[httpx.AsyncClient]]:
    made: list[httpx.AsyncClient] = []

    def make(limits: httpx.Limits) -> httpx.AsyncClient:
        assert limits is ONE_CONNECTION
        made.append(httpx.AsyncClient(limits=limits, trust_env=False))
        return made[-1]

    return UpstreamClients(make, most=most), made


def test_an_operation_borrows_a_client_and_the_next_one_gets_it_back():
    clients, made = counting_clients()

    async def main() -> None:
        async with clients.lend() as first:
            pass
        async with clients.lend() as again:
            assert again is first
        async with clients.lend() as a, clients.lend() as b, clients.lend() as c:
            assert len({id(a), id(b), id(c)}) == 3 and clients.made == 3
        async with clients.lend() as last:
            assert last is a  # the one given back last is lent first
        await clients.aclose()

    asyncio.run(main())
    assert len(made) == 3


def test_no_more_clients_than_operations_allowed_in_flight_a_borrower_waits_for_one_given_back():
    clients, made = counting_clients(most=2)
    order: list[str] = []

    async def main() -> None:
        give_back = asyncio.Event()
        both_lent = asyncio.Event()

        async def hold(tag: str) -> httpx.AsyncClient:
            async with clients.lend() as http:
                order.append(f"{tag} lent")
                if clients.made == 2:
                    both_lent.set()
                await give_back.wait()
            order.append(f"{tag} back")
            return http

        async def third() -> httpx.AsyncClient:
            await both_lent.wait()
            order.append("third asks")
            async with clients.lend() as http:
                order.append("third lent")
                return http

        holders = [asyncio.create_task(hold("a")), asyncio.create_task(hold("b"))]
        late = asyncio.create_task(third())
        await both_lent.wait()
        for _ in range(10):  # the third borrower runs up to its wait, and waits
            await asyncio.sleep(0)
        assert order[-1] == "third asks" and not late.done()
        give_back.set()
        first, second = await asyncio.gather(*holders)
        assert await late in (first, second)
        await clients.aclose()

    asyncio.run(main())
    assert len(made) == 2
    assert order.index("third lent") > order.index("a back")


def test_closing_closes_the_idle_clients_and_each_lent_one_when_it_comes_back():
    clients, made = counting_clients()

    async def main() -> None:
        async with clients.lend():
            pass
        async with clients.lend() as lent, clients.lend() as other:
            await clients.aclose()
            assert not lent.is_closed and not other.is_closed  # in use: closed once given back
        assert lent.is_closed and other.is_closed and clients.made == 0

    asyncio.run(main())
    assert all(http.is_closed for http in made)


def test_operations_one_after_another_reuse_one_connection_to_the_api():
    with RecordingUpstream(lambda req: Reply(201, {"id": req.path.rsplit("/", 1)[-1]})) as upstream:
        clients = UpstreamClients(lambda limits: httpx.AsyncClient(limits=limits, trust_env=False), most=4)
        dispatch = UpstreamDispatcher(clients, upstream.url)

        async def main() -> list[int]:
            try:
                return [(await dispatch("POST", f"/things/{i}", [], b"{}")).status for i in range(5)]
            finally:
                await clients.aclose()

        statuses = asyncio.run(main())
        assert statuses == [201] * 5
        assert [req.path for req in upstream.requests] == [f"/things/{i}" for i in range(5)]
        assert upstream.connections == 1


class _CountingConnection(Connection):
    """A gateway's connection settings, counting how often its CAs are loaded."""

    loaded: ClassVar[list[str]] = []

    def ssl_context(self) -> ssl.SSLContext:
        self.loaded.append("ssl context")
        return super().ssl_context()


def _lifespan(app: BatchApp) -> None:
    """Drive ``app``'s lifespan through startup and shutdown, as a server does."""

    async def main() -> None:
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan"}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"], sent

    asyncio.run(main())


def test_the_gateway_loads_the_upstreams_cas_once_as_it_starts_and_every_operation_shares_them():
    _CountingConnection.loaded.clear()
    with RecordingUpstream(lambda req: Reply(201, {"id": 1})) as upstream:
        app = create_app(upstream=upstream.url, connection=_CountingConnection(trust_env=False))
        assert _CountingConnection.loaded == []
        _lifespan(app)
        loaded_at_start = list(_CountingConnection.loaded)

        async def batch() -> list[int]:
            dispatch = app._dispatcher()
            try:
                return [(await dispatch("POST", f"/things/{i}", [], b"{}")).status for i in range(3)]
            finally:
                await app.aclose()

        statuses = asyncio.run(batch())
    assert loaded_at_start == ["ssl context"]  # before any batch: the first batch does not wait for it
    assert statuses == [201] * 3
    assert _CountingConnection.loaded == ["ssl context"]  # the operations' clients made no other


def test_a_gateway_in_front_of_an_in_process_api_loads_no_cas():
    _CountingConnection.loaded.clear()

    async def api(scope: dict, receive: object, send: object) -> None:  # never called here
        raise AssertionError("not called")

    _lifespan(create_app(api=api, connection=_CountingConnection(trust_env=False)))
    assert _CountingConnection.loaded == []


class _DrippingUpstream(LoopbackServer):
    """Answers at once with a 200-byte body, then sends that body a byte every 50 ms (10 s in all)."""

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n")
        for _ in range(200):
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b" ")


@pytest.mark.slow
def test_the_gateways_clients_have_only_a_connect_timeout_and_a_slow_answer_is_still_cut_at_the_operations_bound():
    from batchnb._connect import Connection
    from batchnb.server._h11 import OneConnection

    app = create_app(upstream="http://127.0.0.1:9", limits=Limits(operation_timeout=1.5))
    straight = app._upstream_client(ONE_CONNECTION)
    assert isinstance(straight, OneConnection) and straight._connect_timeout == 1.5  # connecting only
    proxied = create_app(
        upstream="http://127.0.0.1:9",
        limits=Limits(operation_timeout=1.5),
        connection=Connection(proxy="http://127.0.0.1:8"),
    )
    http = proxied._upstream_client(ONE_CONNECTION)
    assert isinstance(http, httpx.AsyncClient)
    assert http.timeout == httpx.Timeout(None, connect=1.5)  # no timer per read and per write
    asyncio.run(http.aclose())

    with _DrippingUpstream() as upstream:
        app = create_app(upstream=upstream.url, limits=Limits(operation_timeout=1.0))

        async def main() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batch.test") as http:
                try:
                    return await http.post("/api/2.3/batch", json={"requests": [{"method": "GET", "path": "/slow"}]})
                finally:
                    await app.aclose()

        r = asyncio.run(main())
    answer = r.json()["responses"][0]
    assert (r.status_code, answer["status"], answer["body"]["error"]["code"]) == (200, 504, "timeout"), r.text


# ---------------------------------------------------------------- answers carried as bytes


def _big_answer(size: int) -> bytes:
    """About ``size`` bytes of JSON in many small objects (as Python objects, 12 times that), with
    numbers and escapes that parsing and writing again would change: only bytes carried as they came keep them."""
    item = '{"id":%d,"v":[12.50,{"e":1E+2}],"s":"\\u00e9\\""}'
    count = size // (len(item) + 6)
    return ("[" + ",".join(item % i for i in range(count)) + "]").encode()


def _memory(pid: int) -> dict[str, int]:
    """The process's resident memory now and at its peak, in bytes (Linux)."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.mark.slow
def test_a_gateway_carries_big_answers_as_their_bytes_in_about_their_size_of_memory(tmp_path):
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from tests.support import free_port, stop, wait_for_http

    big = _big_answer(1024 * 1024)
    batches, ops = 8, 4

    def respond(req):
        if req.path == "/big":
            return Reply(200, big, delay=0.05)  # the batches' operations answer in turns: all batches fill at once
        return Reply(200, {"ok": True})

    port, log = free_port(), tmp_path / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHNB_")}
    with RecordingUpstream(respond) as upstream, log.open("w") as out:
        command = [sys.executable, "-m", "batchnb.cli", "serve", "--upstream", upstream.url, "--port", str(port)]
        proc = subprocess.Popen([*command, "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/api/2.3/batch"
        try:
            wait_for_http(url, proc, 60, log.read_text)

            def post(path: str, n: int = 1) -> httpx.Response:
                body = {"requests": [{"method": "GET", "path": path}] * n}
                return httpx.post(url, json=body, timeout=60, trust_env=False)

            assert post("/small").status_code == 200  # warmed up: every module loaded
            before = _memory(proc.pid)["VmRSS"]
            with ThreadPoolExecutor(batches) as pool:
                answers = list(pool.map(post, ["/big"] * batches, [ops] * batches))
            grew = _memory(proc.pid)["VmHWM"] - before
        finally:
            stop(proc)
    for r in answers:
        assert r.status_code == 200, r.text[:300]
        assert r.content.count(b'"body":' + big + b",") == ops, "the API's answers were not carried byte for byte"
    carried = batches * ops * len(big)
    # As Python objects these answers took 12 times their bytes, and more (+1.59 GB for 8 answers of 7 MiB).
    assert grew < 4 * carried, f"the gateway grew {grew >> 20} MiB carrying {carried >> 20} MiB"
