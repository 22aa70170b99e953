"""Loopback HTTP servers that misbehave on purpose, for reliability and security tests.

They speak HTTP/1.1 by hand over raw asyncio streams rather than through an
ASGI server, because the failures worth testing happen below ASGI: a socket
closed before the request is read, a reply cut off mid-body, a
``Content-Length`` that lies. Each server runs its own event loop in a
daemon thread on ``127.0.0.1`` and a free port, so a test can drive it from
sync or async code alike.

- :class:`FaultyBatchServer` is a Batch API 2.3 endpoint over an in-memory
  store that counts every execution of every operation, so a test can prove
  that nothing ran twice, whatever the faults.
- :class:`RecordingUpstream` is an API behind a batch gateway: it records
  every request it receives (to prove that a refused operation never left
  the gateway) and answers what the test scripts.
- :class:`DroppingServer` reads each batch in full and closes the
  connection without a word: the client cannot know whether it ran.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FAULTS", "DroppingServer", "FaultyBatchServer", "RecordingUpstream", "Reply", "Request"]


# ---------------------------------------------------------------- HTTP by hand


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: seconds to wait before answering (an upstream that stalls).
    delay: float = 0.0


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


async def read_request(reader: asyncio.StreamReader, first: bytes = b"") -> Request | None:
    """One request from the stream, or None when the peer closed cleanly."""
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not (first + exc.partial).strip():
            return None
        raise
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    req = Request(method, target, headers, b"")
    length = req.header("content-length")
    if length is not None:
        req.body = await reader.readexactly(int(length))
    elif (req.header("transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(data[:-2])
        req.body = b"".join(chunks)
    return req


def encode_reply(status: int, body: Any, headers: dict[str, str] | None = None, *, length: int | None = None) -> bytes:
    """The bytes of a response; ``length`` overrides Content-Length (to lie about it)."""
    if body is None:
        payload = b""
    elif isinstance(body, bytes):
        payload = body
    else:
        payload = json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    hdrs["Content-Length"] = str(len(payload) if length is None else length)
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return head.encode("latin-1") + b"\r\n" + payload


class LoopbackServer:
    """A raw asyncio server in a thread; subclasses implement :meth:`serve_connection`."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            loop = self._loop
            assert loop is not None
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0, limit=64 * 1024 * 1024)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("loopback server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()
        self._loop = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- the faulty batch server

#: every kind of misbehaviour, and whether the batch's operations ran before it happened.
FAULTS = {
    "ok": True,
    "drop_before_read": False,  # socket closed as the request arrives: nothing ran
    "drop_after_run": True,  # ran, then closed without a word
    "stall": True,  # ran, then silent past the client's timeout
    "status_500": False,
    "status_502": False,
    "status_503": False,
    "status_503_retry_after": False,
    "status_429": False,
    "status_429_retry_after": False,
    "truncated_json": True,  # ran; 200 with a valid length but half a JSON document
    "truncated_body": True,  # ran; 200 whose body stops short of its Content-Length
    "inner_429": True,  # ran, except some operations answered 429 (those did not run)
}

#: about one call in three fails outright; a further one in ten has operations at 429 inside.
DEFAULT_WEIGHTS = {
    "ok": 80,
    "drop_before_read": 4,
    "drop_after_run": 4,
    "stall": 3,
    "status_500": 3,
    "status_502": 3,
    "status_503": 3,
    "status_503_retry_after": 3,
    "status_429": 3,
    "status_429_retry_after": 4,
    "truncated_json": 4,
    "truncated_body": 4,
    "inner_429": 12,
}


class FaultyBatchServer(LoopbackServer):
    """``POST``/``GET /api/2.3/batch`` over ``/items/{key}``, failing in every way a network can.

    Operations: ``POST /items`` with ``{"key": K}`` creates item K (201),
    ``PUT /items/K`` stores the body (200), ``GET /items/K`` reads it (200 or
    404), ``DELETE /items/K`` removes it (204, also when absent). Every
    execution is counted in ``executions[(method, K)]``.

    Which fault hits a request is dealt, as the request arrives, from a deck
    holding each fault ``weights[fault]`` times, shuffled by
    ``random.Random(seed)``: the proportions hold exactly over every deck and
    every fault is dealt at least once per deck, so a run that makes enough
    calls has met them all. Retry-After, when sent, is ``0`` most of the time,
    so that retries cost no wall-clock time where the protocol lets the server
    decide.

    ``hold_batch=K`` runs the K-th batch it receives (counting from 1) and
    then never answers it: ``holding`` is set at that moment, the window in
    which a test kills a client whose batch ran but whose answer never came.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        weights: dict[str, int] | None = None,
        stall: float = 1.0,
        max_requests: int = 50,
        inner_429_share: float = 0.3,
        hold_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self._deck: list[str] = []
        self.stall = stall
        self.max_requests = max_requests
        self.inner_429_share = inner_429_share
        self.hold_batch = hold_batch
        #: set once the batch numbered ``hold_batch`` has run; its answer never leaves.
        self.holding = threading.Event()
        self.items: dict[str, Any] = {}
        self.executions: collections.Counter[tuple[str, str]] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.batches_received = 0

    def _deal(self) -> str:
        if not self._deck:
            self._deck = [kind for kind, n in self.weights.items() for _ in range(n)]
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def _retry_after(self) -> dict[str, str]:
        return {"Retry-After": "0" if self.rng.random() < 0.8 else "0.05"}

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            first = await reader.read(1)  # the next request begins (or the client left)
            if not first:
                return
            fault = self._deal()
            if fault == "drop_before_read":
                self.faults[fault] += 1
                return  # _accept aborts the socket: a reset, the request unread
            req = await read_request(reader, first)
            if req is None:
                return
            if req.path != "/api/2.3/batch":
                writer.write(encode_reply(404, {"error": {"code": "not_found", "message": req.path, "details": []}}))
                await writer.drain()
                continue
            if req.method == "GET":
                writer.write(encode_reply(200, {"version": "2.3", "maxRequests": self.max_requests, "maxDepth": 4}))
                await writer.drain()
                continue
            self.batches_received += 1
            self.faults[fault] += 1
            if fault.startswith("status_"):
                status = int(fault.split("_")[1])
                headers = self._retry_after() if fault.endswith("retry_after") else {}
                writer.write(
                    encode_reply(status, {"error": {"code": "fault", "message": fault, "details": []}}, headers)
                )
                await writer.drain()
                continue
            try:
                ops = json.loads(req.body)["requests"]
            except (ValueError, KeyError, TypeError):
                writer.write(
                    encode_reply(
                        400,
                        {
                            "error": {
                                "code": "malformed",
                                "message": "bad batch",
                                "details": [{"pointer": "", "message": "bad"}],
                            }
                        },
                    )
                )
                await writer.drain()
                continue
            if len(ops) > self.max_requests:
                writer.write(
                    encode_reply(
                        413,
                        {
                            "error": {
                                "code": "too_large",
                                "message": "too many",
                                "details": [{"pointer": "requests", "message": "too many"}],
                            }
                        },
                    )
                )
                await writer.drain()
                continue
            responses = [self._run(op, refuse=fault == "inner_429") for op in ops]
            payload = json.dumps({"responses": responses}).encode()
            if self.batches_received == self.hold_batch:
                self.holding.set()
                await asyncio.Event().wait()  # until stop() cancels this connection
            if fault == "drop_after_run":
                return
            if fault == "stall":
                await asyncio.sleep(self.stall)
                return
            if fault == "truncated_json":
                writer.write(encode_reply(200, payload[: len(payload) // 2]))
            elif fault == "truncated_body":
                writer.write(encode_reply(200, payload[: len(payload) // 2], length=len(payload)))
                await writer.drain()
                return
            else:
                writer.write(encode_reply(200, payload))
            await writer.drain()

    def _run(self, op: dict[str, Any], *, refuse: bool) -> dict[str, Any]:
        method, path, body = op.get("method", ""), op.get("path", ""), op.get("body")
        out: dict[str, Any] = {"path": path, "method": method, "duration": 0.1}
        if refuse and self.rng.random() < self.inner_429_share:
            out.update(
                status=429,
                body={"error": {"code": "rate_limited", "message": "slow down"}},
                headers=self._retry_after(),
            )
            return out
        status, rbody = self._execute(method, path, body)
        out.update(status=status, body=rbody)
        if op.get("requests"):
            ok = 200 <= status < 300
            out["responses"] = [
                self._run(c, refuse=False)
                if ok
                else {"path": c.get("path"), "method": c.get("method"), "status": 424, "body": None}
                for c in op["requests"]
            ]
        return out

    def _execute(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/items" and isinstance(body, dict) and isinstance(body.get("key"), str):
            key = body["key"]
            self.executions[(method, key)] += 1
            self.items[key] = body
            return 201, {"id": key, **body}
        if path.startswith("/items/") and method in ("GET", "PUT", "DELETE"):
            key = path[len("/items/") :]
            self.executions[(method, key)] += 1
            if method == "PUT":
                self.items[key] = body
                return 200, body
            if method == "DELETE":
                self.items.pop(key, None)
                return 204, None
            if key in self.items:
                return 200, self.items[key]
            return 404, {"error": {"code": "not_found", "message": key}}
        return 404, {"error": {"code": "not_found", "message": path}}


# ---------------------------------------------------------------- the recording upstream

Responder = Callable[[Request], "Reply | Awaitable[Reply]"]


class RecordingUpstream(LoopbackServer):
    """An API that records every request it gets and answers as ``respond`` says.

    ``requests`` holds every request that reached it, in order; with
    ``connections`` it proves a negative: a gateway that refused an operation
    did not even open a socket.
    """

    def __init__(self, respond: Responder | None = None) -> None:
        super().__init__()
        self.respond: Responder = respond or (lambda req: Reply(200, {"ok": True, "path": req.target}))
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.connections = 0

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            with self._lock:
                self.requests.append(req)
            reply = self.respond(req)
            if asyncio.iscoroutine(reply):
                reply = await reply
            if reply.delay:
                await asyncio.sleep(reply.delay)
            writer.write(encode_reply(reply.status, reply.body, reply.headers))
            await writer.drain()


# ---------------------------------------------------------------- the dropping server


class DroppingServer(LoopbackServer):
    """Answers ``GET /api/2.3/batch`` with its limits; reads every other request in full, then hangs up.

    ``requests`` holds ``(method, target)`` of every request read: after a
    dropped batch the client cannot know whether it ran, so this list is what
    proves how often it was sent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def sent(self, method: str) -> int:
        return sum(1 for m, _target in self.requests if m == method)

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            self.requests.append((req.method, req.target))
            if req.method != "GET":
                return  # _accept closes the socket: the batch was read, no answer comes
            writer.write(encode_reply(200, {"maxRequests": 50, "maxDepth": 4}))
            await writer.drain()
