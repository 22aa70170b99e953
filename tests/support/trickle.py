"""A loopback server that sends its answers a byte at a time: no read ever waits long, the whole answer does.

``TricklingServer(answer, slow=predicate, every=0.3)`` answers each request
with the bytes ``answer(request)`` gives (a whole HTTP response): for a
request ``slow(request)`` holds for, its head at once and its body one byte every ``every``
seconds, and the connection closes after it; others get their answer at
once. It counts the answers a client gave up on (``cut_off``): closed its
connection before the last byte.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tests.support.faults import LoopbackServer, Request, read_request

__all__ = ["TricklingServer"]


class TricklingServer(LoopbackServer):
    def __init__(
        self, answer: Callable[[Request], bytes], *, slow: Callable[[Request], bool], every: float = 0.3
    ) -> None:
        super().__init__()
        self._answer = answer
        self._slow = slow
        self._every = every
        self._lock = threading.Lock()
        #: answers whose client closed the connection before their last byte.
        self.cut_off = 0
        #: answers sent to their last byte.
        self.finished = 0
        self.requests: list[Request] = []

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            with self._lock:
                self.requests.append(req)
            data = self._answer(req)
            if not self._slow(req):
                writer.write(data)
                await writer.drain()
                continue
            head, _, body = data.partition(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n")
            # Reading on the side: an end of file means the client hung up.
            hung_up = asyncio.ensure_future(reader.read(1))
            try:
                for i in range(len(body)):
                    await asyncio.sleep(self._every)
                    if hung_up.done():
                        raise ConnectionResetError
                    writer.write(body[i : i + 1])
                    await writer.drain()
            except ConnectionError:
                with self._lock:
                    self.cut_off += 1
                return
            finally:
                hung_up.cancel()
            with self._lock:
                self.finished += 1
            return  # the side read may have taken a byte of the next request: that connection is done
