"""An API that answers as an attacker's would, in a process of its own: ``python -m tests.support.hostile_upstream PORT``.

It stands behind a ``batchnb serve --upstream`` gateway in the attack corpus
(:mod:`tests.support.attacks`). Every request it receives is recorded, and
``GET /__seen`` answers them all (method, target, headers) so that a test can
prove what one batch's upstream requests carried. Its answers, by path:

- ``/cookie/WHO``: 200, and ``Set-Cookie: session=WHO-secret`` (a session for one caller);
- ``/bomb``: a few hundred bytes, ``Content-Encoding: gzip, gzip``, that inflate to 128 MiB of zeros;
- ``/deep``: JSON nested 300 levels deep (orjson reads it, but writes no more than 254);
- ``/big``: 266 KB of JSON;
- ``/empty``: 204, no body;
- ``/bigint``: ``{"n": 2**70}``, an integer beyond 64 bits;
- ``/br``: a body in an encoding nobody asked for (``br``);
- ``/cut-gzip``: a gzip stream cut short, framed as if it were whole (its ``Content-Length`` is what is sent);
- ``/strings/N``: a list of ``N`` short strings, the last one ``"x"`` (a document of many nodes);
- ``/exact``: 1 MB of JSON in small objects, with numbers and escapes (``12.50``, ``1E+2``, ``\\u00e9``)
  that parsing and writing again would change;
- anything else: 200 with what was received (method, target, headers, body).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import zlib

from tests.support.faults import Request, encode_reply, read_request

BOMB_SIZE = 128 * 1024 * 1024
DEEP_LEVELS = 300
BIG_BYTES = 266_000
EXACT_ITEM = '{"id":%d,"v":[12.50,{"e":1E+2}],"s":"\\u00e9\\""}'
EXACT_ITEMS = 22_000  # about 1 MB


def bomb(size: int = BOMB_SIZE) -> bytes:
    """``size`` zeros, gzipped twice: made chunk by chunk, so this process never holds them."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    once = b"".join(inner.compress(zeros) for _ in range(size >> 20)) + inner.flush()
    return gzip.compress(once, 9)


class HostileUpstream:
    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.bomb = bomb()
        self.deep = ("[" * DEEP_LEVELS + "]" * DEEP_LEVELS).encode()
        self.exact = ("[" + ",".join(EXACT_ITEM % i for i in range(EXACT_ITEMS)) + "]").encode()

    def answer(self, req: Request) -> bytes:
        path = req.path
        if path == "/__seen":
            return encode_reply(200, self.seen)
        self.seen.append({"method": req.method, "target": req.target, "headers": req.headers})
        if path.startswith("/cookie/"):
            who = path.rsplit("/", 1)[1]
            return encode_reply(200, {"ok": True}, {"Set-Cookie": f"session={who}-secret; Path=/"})
        if path == "/bomb":
            return encode_reply(200, self.bomb, {"Content-Encoding": "gzip, gzip"})
        if path == "/deep":
            return encode_reply(200, self.deep)
        if path == "/big":
            return encode_reply(200, {"blob": "x" * BIG_BYTES})
        if path == "/empty":
            return encode_reply(204, None)
        if path == "/bigint":
            return encode_reply(200, b'{"n": 1180591620717411303424}')
        if path == "/exact":
            return encode_reply(200, self.exact)
        if path == "/br":
            return encode_reply(200, b"\x1b\x03\x00\xf8", {"Content-Encoding": "br"})
        if path == "/cut-gzip":
            whole = gzip.compress(json.dumps({"items": list(range(200))}).encode())
            return encode_reply(200, whole[: len(whole) // 2], {"Content-Encoding": "gzip"})
        if path.startswith("/strings/") and path[9:].isdigit():
            n = min(int(path[9:]), 1_000_000)
            return encode_reply(200, [f"s{i}" for i in range(n - 1)] + ["x"])
        received = {
            "method": req.method,
            "target": req.target,
            "headers": req.headers,
            "body": req.body.decode("utf-8", "replace"),
        }
        return encode_reply(200, received)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (req := await read_request(reader)) is not None:
                writer.write(self.answer(req))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def main(port: int) -> None:
    upstream = HostileUpstream()
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", port, limit=64 * 1024 * 1024)
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
