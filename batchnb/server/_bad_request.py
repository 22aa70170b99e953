"""The answer to a request that cannot be read as HTTP: the JSON error shape, as every other answer.

uvicorn's h11 protocol answers a request line or header it cannot parse
(``h11.RemoteProtocolError``: a line without a colon, a byte HTTP does not
allow, headers past h11's size bound, a chunk size that is not hex) with a
``text/plain`` 400 of its own, before the app sees anything. :class:`JsonBadRequest`
answers the same 400 as JSON (``{"error": {"code": "bad_request", ...}}``) and
closes the connection, as uvicorn does; mixed into the h11 protocol that
``batchnb serve`` and :class:`~batchnb.LocalServer` give uvicorn
(:func:`batchnb.server._head.bounded_http`).

    >>> from uvicorn.protocols.http.h11_impl import H11Protocol
    >>> class Protocol(JsonBadRequest, H11Protocol): ...
"""

from __future__ import annotations

import asyncio

import h11

from .. import _json
from .._exceptions import Problem

__all__ = ["JsonBadRequest"]

_MESSAGE = "the request could not be read as HTTP/1.1: its line, a header or the body's framing is malformed"


def bad_request_bytes() -> bytes:
    """The whole answer, head and body, as written on the connection.

    >>> bad_request_bytes().split(b"\\r\\n")[0]
    b'HTTP/1.1 400 Bad Request'
    """
    problem = Problem("", "malformed request").to_wire()
    body = _json.dumps({"error": {"code": "bad_request", "message": _MESSAGE, "details": [problem]}})
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class JsonBadRequest:
    """Mixed in before uvicorn's ``H11Protocol``: its 400 for a request it cannot parse, in JSON."""

    conn: h11.Connection
    transport: asyncio.Transport

    def send_400_response(self, msg: str) -> None:
        # Only while no answer has begun: one half written would make the bytes that follow a lie.
        # h11 cannot answer a request it could not read: the answer is written as bytes.
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE) and not self.transport.is_closing():
            self.transport.write(bad_request_bytes())
        self.transport.close()
