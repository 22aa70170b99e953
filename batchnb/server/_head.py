"""A bound on the time a request's line and headers may take to arrive.

uvicorn hands a request to the app once its headers are in. Until then
nothing is bounded: a connection that sends nothing, or a header line a byte
a minute, is kept open for ever, and a few hundred of them hold every socket
the process may open. :class:`_HeadBoundedH11` is uvicorn's own h11
protocol, which answers 408 and closes a connection whose request head has
not arrived ``head_timeout`` seconds after the connection opened or after the
head's first byte (an idle kept-alive connection is uvicorn's keep-alive
timeout's). The other phases of a connection are bounded in :mod:`._bounds`,
whose ``uvicorn_options`` is what ``batchnb serve`` gives uvicorn.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._exceptions import Problem
from ._bad_request import JsonBadRequest
from .app import _error

__all__: list[str] = []


class _HeadBoundedH11(JsonBadRequest, H11Protocol):
    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn annotates BaseTransport; a TCP connection's is this
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        # The client is IDLE in h11's terms until a whole request head is in.
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_too_slow)
        elif not waiting:
            self._stop_head_timer()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        message = f"the request's line and headers did not arrive within {self._head_timeout:g} s"
        # h11 cannot answer a request it has not seen: the answer is written as bytes.
        self.transport.write(_raw_answer(408, "head_timeout", message, Problem("", "incomplete request head")))
        self.transport.close()


def _raw_answer(status: int, code: str, message: str, problem: Problem, extra: str = "") -> bytes:
    r"""A whole JSON error answer that closes its connection, as bytes, for when h11 or the app cannot answer.

    ``extra`` holds more header lines, each ending with CRLF.

    >>> _raw_answer(503, "busy", "later", Problem("", "busy"), "retry-after: 1\r\n").split(b"\r\n")[0]
    b'HTTP/1.1 503 Service Unavailable'
    """
    body = json.dumps(_error(code, message, [problem])).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body
