"""Every connection of ``batchnb serve`` bounded in time, from its first byte to its last.

uvicorn bounds an idle kept-alive connection and nothing else: a client that
sends a body a byte a second, keeps sending one after it was answered, or
never reads its answer, holds a socket (and the answer's bytes) for ever. The
HTTP protocol :func:`uvicorn_options` gives uvicorn bounds each phase:

==========================  ====================================================================
the request's line, headers  ``head_timeout`` from the connection's (or the head's) first byte:
                             408, closed (:mod:`._head`)
the request's body           ``body_timeout`` from the end of its head, read by the app or not,
                             answered already or not: 408 when not answered yet; closed either way
idle, kept alive             ``keep_alive_timeout`` (uvicorn's own), then the head's bound
the answer                   ``write_timeout`` from the moment some of it has to wait in this
                             process for the client to read: dropped with what waits
connections at once          ``max_connections``: one more takes the place of a connection whose
                             request was answered (its body unread, or idle before the next one);
                             with none, it is answered 503 and closed at once
both framings of a body      ``Content-Length`` and ``Transfer-Encoding`` in one request: 400 and
                             closed (RFC 9112 §6.1: which one frames it is what smuggling plays on)
==========================  ====================================================================

Each answer here is the JSON error shape of every other answer of the server.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import h11

from .._asgi import ASGIApp, Receive, Scope, Send
from .._exceptions import Problem
from ._head import _HeadBoundedH11, _raw_answer
from .app import _error
from .limits import Limits

__all__ = ["uvicorn_options"]


def uvicorn_options(limits: Limits) -> dict[str, Any]:
    """What ``uvicorn.run`` / ``uvicorn.Config`` take to bound every connection as ``limits`` say.

    The protocol is a partial of a class, so that it travels to ``--workers`` processes.

    >>> import uvicorn
    >>> config = uvicorn.Config(app=None, **uvicorn_options(Limits(write_timeout=5.0)))
    >>> config.timeout_keep_alive
    5.0
    """
    http = functools.partial(
        _BoundedH11,
        head_timeout=limits.head_timeout,
        body_timeout=limits.body_timeout,
        write_timeout=limits.write_timeout,
        max_connections=limits.max_connections,
    )
    return {"http": http, "timeout_keep_alive": limits.keep_alive_timeout}


class _BoundedH11(_HeadBoundedH11):
    def __init__(
        self, *args: Any, body_timeout: float, write_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._body_timeout = body_timeout
        self._write_timeout = write_timeout
        self._max_connections = max_connections
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.app = _OneFraming(self.app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn annotates BaseTransport; a TCP connection's is this
        super().connection_made(transport)
        # Paused as soon as anything has to wait in this process: then, and only then, the write clock runs.
        transport.set_write_buffer_limits(high=0)
        if len(self.connections) > self._max_connections and not self._make_room():
            message = f"the server holds {self._max_connections} connections already; retry later"
            busy = Problem("", "server busy")
            self.transport.write(_raw_answer(503, "too_many_connections", message, busy, "retry-after: 1\r\n"))
            self.transport.close()

    def _make_room(self) -> bool:
        """Close a connection that holds nothing anyone waits for, if there is one: whether one was closed.

        One whose request was answered before its body was read (it may only
        send the rest of a body nobody reads) goes first; else one idle
        between two requests. A request on its way or in the app is never cut.
        """
        idle = None
        for other in self.connections:
            if other is self or not isinstance(other, _BoundedH11) or other.transport.is_closing():
                continue
            if other.cycle is None or not other.cycle.response_complete:
                continue
            if other.conn.their_state is h11.SEND_BODY:
                other.transport.close()
                return True
            if idle is None and other.conn.their_state is h11.IDLE and not other.conn.trailing_data[0]:
                idle = other
        if idle is not None:
            idle.transport.close()
        return idle is not None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_body()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_body()  # a pipelined request may have begun from what was read already

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._body_timer = self._write_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._write_timeout, self._not_read)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _watch_body(self) -> None:
        # SEND_BODY in h11's terms: the head is in, the body's last byte is not.
        sending = self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing()
        if sending and self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_too_slow)
        elif not sending and self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app's receive() hears that the client left; whatever it sends from now on is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if not cycle.response_started:
                message = f"the request's body did not arrive within {self._body_timeout:g} s"
                self.transport.write(_raw_answer(408, "body_timeout", message, Problem("", "incomplete body")))
        # Answered already, without reading the body or while reading it: the rest of the body is not awaited.
        self.transport.close()

    def _not_read(self) -> None:
        self._write_timer = None
        # close() would wait for the answer to be read; abort() drops what waits, and the socket.
        self.transport.abort()


class _OneFraming:
    """The app, behind a refusal of any request that says both how long its body is and that it is chunked.

    h11 frames such a body by ``Transfer-Encoding``; a proxy in front may have
    framed it by ``Content-Length``, and what it took for the next request is
    then inside this one's body (request smuggling). RFC 9112 §6.1: answer, and
    close the connection.
    """

    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _value in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                body = json.dumps(
                    _error(
                        "ambiguous_framing",
                        "the request has both Content-Length and Transfer-Encoding; send one of them",
                        [Problem("headers.Content-Length", "not with Transfer-Encoding")],
                    )
                ).encode("utf-8")
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"connection", b"close"),
                ]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)
