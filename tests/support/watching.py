"""The real batch server, watched: batches in flight at once, when each started, and one held on demand.

:class:`WatchedServer` serves the demo API behind ``batchnb``'s batch app with
uvicorn on 127.0.0.1 (in a thread), wrapped in an ASGI layer that counts
what the server itself sees. It can hold the answer to a chosen batch (the
batch has run; its answer waits) until the test releases it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from batchnb.demo import create_demo_app

from . import wait_until

__all__ = ["WatchedServer"]


class WatchedServer:
    def __init__(
        self,
        db: Path | None = None,
        *,
        max_requests: int = 50,
        delay: float = 0.0,
        hold: Callable[[int, dict], bool] | None = None,
        answer: Callable[[int], tuple[int, dict] | None] | None = None,
    ) -> None:
        from batchnb.server import Limits

        self._tmp = tempfile.TemporaryDirectory(prefix="batchnb-watched-") if db is None else None
        self.db = Path(self._tmp.name) / "demo.sqlite3" if db is None else db
        self.token = secrets.token_urlsafe(12)
        self.app = create_demo_app(
            db=self.db, credentials={"demo": self.token}, limits=Limits(max_requests=max_requests)
        )
        self.delay = delay
        self.hold = hold
        self.answer = answer
        self.in_flight = 0
        self.max_in_flight = 0
        self.starts: list[float] = []
        self.bodies: list[dict] = []
        self.holding = threading.Event()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the watching layer

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] == "/_watch/stats":
            payload = json.dumps(
                {
                    "batches": len(self.starts),
                    "max_in_flight": self.max_in_flight,
                    "max_starts_per_second": self.starts_per_window(1.0),
                }
            ).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": payload})
            return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/api/2.3/batch":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.starts.append(time.monotonic())
            number = len(self.starts)
            self.bodies.append(json.loads(body))
        try:
            scripted = self.answer(number) if self.answer else None
            if scripted is not None:
                status, headers = scripted
                raw = [(k.encode(), v.encode()) for k, v in headers.items()] + [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": status, "headers": raw})
                await send({"type": "http.response.body", "body": b'{"error": {"code": "busy", "message": "busy"}}'})
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            replayed = iter([{"type": "http.request", "body": body, "more_body": False}])

            async def again() -> dict:
                return next(replayed, {"type": "http.disconnect"})

            held = self.hold is not None and self.hold(number, self.bodies[-1])
            sent: list[dict] = []

            async def keep(message: dict) -> None:
                sent.append(message)

            await self.app(scope, again, keep if held else send)
            if held:
                self.holding.set()
                await self._release.wait()  # the batch ran; its answer waits
                for message in sent:
                    await send(message)
        finally:
            with self._lock:
                self.in_flight -= 1

    def release(self) -> None:
        """Let a held answer go (to whoever still listens)."""
        assert self._loop is not None and self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    # ------------------------------------------------------------ the server

    def starts_per_window(self, seconds: float = 1.0) -> int:
        """The most batches that started within any window of ``seconds``."""
        times = sorted(self.starts)
        best, j = 0, 0
        for i, t in enumerate(times):
            while times[j] < t - seconds + 1e-9:
                j += 1
            best = max(best, i - j + 1)
        return best

    def __enter__(self) -> WatchedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, as LocalServer
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self, log_level="warning", lifespan="on"))

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._release = asyncio.Event()
            self._loop.run_until_complete(self._server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name="watched-server", daemon=True)
        self._thread.start()
        wait_until(lambda: self._server.started, 20, "the watched server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._release is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._server.should_exit = True
        self._thread.join(10)
        if self._tmp is not None:
            self._tmp.cleanup()

    def count(self, table: str = "companies") -> int:
        import sqlite3

        with sqlite3.connect(self.db) as conn:
            return conn.execute(f"select count(*) from {table}").fetchone()[0]


if __name__ == "__main__":
    # A watched server in a process of its own: prints "listening URL TOKEN", serves until killed.
    # Arguments: [max_requests [delay seconds before each batch runs]].
    import sys

    args = sys.argv[1:]
    with WatchedServer(
        max_requests=int(args[0]) if args else 50, delay=float(args[1]) if len(args) > 1 else 0.0
    ) as watched:
        print(f"listening {watched.url} {watched.token}", flush=True)
        watched._thread.join()
