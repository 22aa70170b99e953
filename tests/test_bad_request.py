"""A request that cannot be read as HTTP gets the JSON error shape too, not uvicorn's text/plain (raw sockets, real uvicorn)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from batchnb import LocalServer

MALFORMED = {
    "not a request line": b"GARBAGE\r\n\r\n",
    "a byte HTTP does not allow in the target": b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "a header without a colon": b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "a NUL in a header value": b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "a space before the colon": b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
    "a length that is not a number": b"POST /api/2.3/batch HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    "two hosts": b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    # The app has the request already and waits for its body when the framing breaks.
    "a chunk size that is not hex": (
        b"POST /api/2.3/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer demo-token\r\nContent-Type: application/json\r\n\r\nzz\r\n"
    ),
}


def exchange(server: LocalServer, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (each wait bounded)."""
    where = urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


def answers(reply: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """The (status line, headers, body) of each answer in ``reply``, framed by Content-Length."""
    out = []
    while reply:
        head, _, rest = reply.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
        size = int(headers[b"content-length"])
        out.append((status, headers, rest[:size]))
        reply = rest[size:]
    return out


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_that_cannot_be_read_gets_a_json_400_and_the_connection_closes(server: LocalServer, data: bytes):
    reply = exchange(server, data)  # returns only once the server has closed the connection
    [(status, headers, body)] = answers(reply)
    assert status == b"HTTP/1.1 400 Bad Request" and headers[b"content-type"] == b"application/json", reply
    assert headers[b"connection"] == b"close"
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and "could not be read as HTTP/1.1" in error["message"]
    assert error["details"] == [{"pointer": "", "message": "malformed request"}]


def test_a_malformed_request_after_a_good_one_on_the_same_connection_gets_its_json_400(server: LocalServer):
    good = b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\n\r\n"
    [(first, _, limits), (second, headers, body)] = answers(exchange(server, good + b"GARBAGE\r\n\r\n"))
    assert first == b"HTTP/1.1 200 OK" and json.loads(limits)["version"] == "2.3"
    assert second == b"HTTP/1.1 400 Bad Request" and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"
