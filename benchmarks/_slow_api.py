"""An HTTP API far away: every request answered after a fixed delay (an internet round trip).

    python benchmarks/_slow_api.py --delay 0.1

Prints ``listening PORT`` and serves on 127.0.0.1 until killed; each request gets
``{"id": "<last path segment>"}`` (201 for POST) after ``--delay`` seconds.
Keep-alive connections are served, so a client that reuses connections pays
only the delay.

It stands for an API on another machine, whose work costs this one nothing: so it
is an ``asyncio.Protocol`` that parses just what it needs and answers from a timer
(about 40 us of CPU a request, against 150 us for the streams version it
replaced). Its CPU shares this machine's cores with the gateway and the client
under test, all of it in bursts (every request of a round answered together), and
each microsecond of it is a wait added to some operation that a remote API would
not add.
"""

from __future__ import annotations

import argparse
import asyncio
import json

_HEAD_END = b"\r\n\r\n"


class SlowAPI(asyncio.Protocol):
    """One connection: requests read as they come, each answered ``delay`` seconds after it arrived."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(_HEAD_END)) >= 0:
            head = self._buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            total = end + len(_HEAD_END) + length
            if len(self._buffer) < total:
                return  # the body is still on its way
            self._buffer = self._buffer[total:]
            method, target, _ = head.split(" ", 2)
            # Answers go out in the order their requests came: every one waits the same delay.
            self._loop.call_later(self._delay, self._answer, method, target)

    def _answer(self, method: str, target: str) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        body = json.dumps({"id": target.split("?")[0].rsplit("/", 1)[-1]}).encode()
        status = "201 Created" if method == "POST" else "200 OK"
        self._transport.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", type=float, default=0.1)
    a = p.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SlowAPI(a.delay), "127.0.0.1", 0, backlog=1024)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
