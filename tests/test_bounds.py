"""Every connection of a real ``batchnb serve`` bounded in time (batchnb.server._bounds), with raw sockets on loopback.

Two processes: the demo API, and a gateway in front of a port where nothing
listens (what it answers without an upstream is all these tests need). Their
bounds are a second each, so that the tests wait them out quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_for_http, wait_until
from tests.support.attacks import body_of, connect, held_by_server, status_of, trickle_until_closed

BATCH = "/api/2.3/batch"
CO = "/api/2.1/scheduling/companies"
#: every time bound of the servers here, in seconds.
BOUND = 1.0
MAX_CONNECTIONS = 150
#: companies the demo API holds for the answers nobody reads; a list of them all is about 300 KB.
SEEDED = 300
#: how long after its bound a connection may still be seen open before a test fails: a loaded machine is slow.
LATE = 10.0


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    log: Path
    token: str | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def auth(self) -> str:
        return f"Authorization: Bearer {self.token}\r\n" if self.token else ""

    def connections(self) -> int:
        return held_by_server(self.port)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for the server process")

    def quiet(self) -> None:
        """Wait until the server holds no connection (a test's sockets from before are gone)."""
        wait_until(lambda: self.connections() == 0, LATE, lambda: f"the server holds {self.connections()} connections")


def _serve(tmp: Path, name: str, args: list[str], env: dict[str, str]) -> tuple[str, subprocess.Popen, Path]:
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchnb.cli",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
                *_bounds(),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    return f"http://127.0.0.1:{port}", proc, log


def _bounds() -> list[str]:
    out = ["--max-connections", str(MAX_CONNECTIONS)]
    for flag in ("head-timeout", "body-timeout", "keep-alive-timeout", "write-timeout"):
        out += [f"--{flag}", str(BOUND)]
    return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    tmp = tmp_path_factory.mktemp("bounds")
    token = secrets.token_urlsafe(12)
    demo_url, demo_proc, demo_log = _serve(
        tmp, "demo", ["--db", str(tmp / "demo.sqlite3")], {"BATCHNB_API_KEY": "k", "BATCHNB_TOKEN": token}
    )
    gw_url, gw_proc, gw_log = _serve(
        tmp, "gateway", ["--upstream", f"http://127.0.0.1:{free_port()}"], {"BATCHNB_API_KEY": "", "BATCHNB_TOKEN": ""}
    )
    demo, gateway = Served(demo_url, demo_proc, demo_log, token), Served(gw_url, gw_proc, gw_log)
    try:
        for s in (demo, gateway):
            wait_for_http(s.url + BATCH, s.proc, 30, s.log.read_text)
        yield demo, gateway
    finally:
        for s in (demo, gateway):
            s.proc.terminate()
        for s in (demo, gateway):
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(5)


def _post(s: Served, ops: list[dict]) -> httpx.Response:
    return httpx.post(
        s.url + BATCH,
        json={"requests": ops},
        headers={"Authorization": f"Bearer {s.token}"},
        timeout=60,
        trust_env=False,
    )


# ---------------------------------------------------------------- the body, answered or not


@pytest.mark.slow
def test_a_client_trickling_its_body_is_closed_within_the_body_timeout_whatever_it_was_answered(servers):
    demo, gateway = servers
    demo.quiet()
    auth = demo.auth()
    big = "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    cases = [
        (demo, f"POST {BATCH} HTTP/1.1\r\nHost: x\r\n{big}", 401),  # no credentials
        (demo, f"PUT {BATCH} HTTP/1.1\r\nHost: x\r\n{big}", 405),
        (demo, f"GET {BATCH} HTTP/1.1\r\nHost: x\r\n{big}", 200),  # the limits, with a body nobody reads
        (demo, f"POST /api/2.1/scheduling/nothing HTTP/1.1\r\nHost: x\r\n{auth}{big}", 404),
        (gateway, f"POST /elsewhere HTTP/1.1\r\nHost: x\r\n{big}", 404),
        (demo, f"POST {BATCH} HTTP/1.1\r\nHost: x\r\n{auth}{big}{{", 408),  # the batch's body, too slow
        (demo, f"POST {CO} HTTP/1.1\r\nHost: x\r\n{auth}{big}{{", 408),  # a body the demo API reads, too slow
    ]
    socks = [connect(s.port, head.encode()) for s, head, _expected in cases]
    try:
        got = trickle_until_closed(socks, time.monotonic() + BOUND + LATE)
    finally:
        for sock in socks:
            sock.close()
    for (_s, head, expected), sock in zip(cases, socks):
        reply = got[sock]
        assert status_of(reply) == expected, (head.split("\r\n")[0], reply[:300])
        assert "error" in body_of(reply) or expected == 200, reply[:300]
    late = body_of(got[socks[-1]])["error"]
    assert late["code"] == "body_timeout" and late["message"] == f"the request's body did not arrive within {BOUND:g} s"


@pytest.mark.slow
def test_a_hundred_trickling_connections_leave_a_normal_batch_its_answer(servers):
    demo, _gateway = servers
    demo.quiet()
    head = f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    socks = [connect(demo.port, head.encode()) for _ in range(100)]
    try:
        r = _post(demo, [{"method": "GET", "path": CO + "?limit=1"}])
        assert r.status_code == 200, r.text[:300]
        got = trickle_until_closed(socks, time.monotonic() + BOUND + LATE)
    finally:
        for sock in socks:
            sock.close()
    assert {status_of(reply) for reply in got.values()} == {401}
    demo.quiet()


# ---------------------------------------------------------------- framing


@pytest.mark.slow
@pytest.mark.parametrize("target", [BATCH, CO])
def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(servers, target):
    demo, _gateway = servers
    request = (
        f"POST {target} HTTP/1.1\r\nHost: x\r\n{demo.auth()}Content-Type: application/json\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        f"GET {BATCH} HTTP/1.1\r\nHost: x\r\n\r\n"  # what a proxy framing by Content-Length would read next
    )
    with connect(demo.port, request.encode()) as sock:
        reply = b""
        while chunk := sock.recv(65536):  # until the server closes; the socket's timeout bounds each wait
            reply += chunk
    assert status_of(reply) == 400 and reply.count(b"HTTP/1.1") == 1, reply[:500]
    assert b"\r\nconnection: close\r\n" in reply.lower()
    error = body_of(reply)["error"]
    assert error["code"] == "ambiguous_framing" and error["details"][0]["pointer"] == "headers.Content-Length"


# ---------------------------------------------------------------- the answer


def _seed(demo: Served) -> None:
    for start in range(0, SEEDED, 50):
        ops = [
            {
                "method": "POST",
                "path": CO,
                "body": {"name": f"{i:03d}" + "n" * 190, "address": {"street": "s" * 500, "city": "c" * 200}},
            }
            for i in range(start, start + 50)
        ]
        r = _post(demo, ops)
        assert r.status_code == 200 and all(x["status"] == 201 for x in r.json()["responses"]), r.text[:300]


@pytest.mark.slow
def test_clients_that_never_read_their_answers_are_dropped_and_the_memory_comes_back(servers):
    demo, _gateway = servers
    demo.quiet()
    _seed(demo)
    lists = [{"method": "GET", "path": f"{CO}?limit={SEEDED}"}] * 50
    size = len(_post(demo, lists).content)  # read whole once: what the allocator keeps for one answer is in
    assert size > 12_000_000, size
    body = json.dumps({"requests": lists}).encode()
    request = (
        f"POST {BATCH} HTTP/1.1\r\nHost: x\r\n{demo.auth()}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    before = demo.rss()
    readers = 6
    socks = [connect(demo.port, request, rcvbuf=4096) for _ in range(readers)]
    try:
        peak = wait_until(
            lambda: (rss := demo.rss()) > before + readers * size // 2 and rss,
            LATE,
            lambda: f"the answers nobody reads never filled the server: {(demo.rss() - before) / 2**20:.0f} MB",
        )
        # Nothing more is read: the server drops each connection with what waits in it.
        wait_until(
            lambda: demo.connections() == 0,
            BOUND + LATE,
            lambda: f"{demo.connections()} connections whose answers nobody reads are still held",
        )
        after = wait_until(
            lambda: (rss := demo.rss()) < before + 20 * 2**20 and rss,
            LATE,
            lambda: f"the server kept {(demo.rss() - before) / 2**20:.0f} MB after dropping the connections",
        )
    finally:
        for sock in socks:
            sock.close()
    print(f"RSS before {before / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, after {after / 2**20:.0f} MB")
    assert _post(demo, [{"method": "GET", "path": CO + "?limit=1"}]).status_code == 200


# ---------------------------------------------------------------- connections at once


def test_past_max_connections_one_more_is_answered_503_and_closed(servers):
    demo, _gateway = servers
    demo.quiet()
    held = [connect(demo.port) for _ in range(MAX_CONNECTIONS)]
    try:
        # Taken in the order they came: these first (and for a second, their head's bound), then this one.
        with connect(demo.port, f"GET {BATCH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()) as extra:
            reply = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := extra.recv(65536):
                    reply += chunk
    finally:
        for sock in held:
            sock.close()
    assert status_of(reply) == 503 and b"\r\nretry-after: 1\r\n" in reply, reply[:300]
    assert body_of(reply)["error"]["code"] == "too_many_connections"
    demo.quiet()
    r = httpx.get(demo.url + BATCH, timeout=30, trust_env=False)
    assert r.status_code == 200


@pytest.mark.parametrize("kind", ["answered, trickling the rest of a body", "idle between two requests"])
def test_at_max_connections_a_new_one_takes_the_place_of_one_whose_request_was_answered(tmp_path, kind):
    from batchnb import LocalServer
    from batchnb.server import Limits

    limits = Limits(max_connections=20, body_timeout=60.0, keep_alive_timeout=60.0, head_timeout=60.0)
    with LocalServer(tmp_path / "db.sqlite3", limits=limits) as srv:
        if kind.startswith("answered"):
            request = (
                f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9999\r\n\r\n{{"
            )
        else:
            request = f"GET {BATCH} HTTP/1.1\r\nHost: x\r\n\r\n"
        held = [connect(srv.port, request.encode()) for _ in range(limits.max_connections)]
        try:
            for sock in held:
                answer = b""
                while b"}}" not in answer and b'"version"' not in answer:  # the whole 401, or the limits
                    answer += sock.recv(65536)  # the socket's timeout bounds each wait
            # Full, but every connection's request is answered: a new one takes one's place.
            r = httpx.post(
                srv.url + BATCH,
                json={"requests": [{"method": "GET", "path": CO + "?limit=1"}]},
                headers={"Authorization": f"Bearer {srv.credentials()['token']}"},
                timeout=30,
                trust_env=False,
            )
            assert r.status_code == 200, r.text[:300]
            closed = 0
            for sock in held:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    closed += sock.recv(1) == b""
            assert closed >= 1, "no held connection gave its place"
        finally:
            for sock in held:
                sock.close()
