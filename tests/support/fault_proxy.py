"""A proxy on loopback, in a process of its own, that loses batches the way networks do.

    python -m tests.support.fault_proxy --target http://127.0.0.1:8000 --seed 7

It prints ``listening PORT`` once it accepts connections, then forwards every
request to ``--target``. For each ``POST /api/2.3/batch``, drawn from the seed:

- ``drop``: forward it, let the server answer, then hang up without a word
  (the batch ran; the client cannot know);
- ``bad-gateway``: answer 502 without forwarding (the batch never ran);
- ``stall``: forward it, let the server answer, then sit on the answer for
  ``--stall-seconds`` (past the client's timeout) and hang up.

``GET /_proxy/stats`` answers how many of each it did.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random

import httpx

from tests.support.faults import encode_reply, read_request

BATCH = "/api/2.3/batch"
_NOT_FORWARDED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


class FaultProxy:
    def __init__(
        self, target: str, seed: int, drop: float, bad_gateway: float, stall: float, stall_seconds: float
    ) -> None:
        self.target = target.rstrip("/")
        self.rng = random.Random(seed)
        self.weights = [("drop", drop), ("bad-gateway", bad_gateway), ("stall", stall)]
        self.stall_seconds = stall_seconds
        self.stats: collections.Counter[str] = collections.Counter()
        self.http = httpx.AsyncClient(timeout=120, trust_env=False)

    def fault(self) -> str | None:
        r = self.rng.random()
        for name, p in self.weights:
            if r < p:
                return name
            r -= p
        return None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await read_request(reader)
                if req is None:
                    return
                if req.path == "/_proxy/stats":
                    writer.write(encode_reply(200, dict(self.stats)))
                    await writer.drain()
                    continue
                fault = self.fault() if req.method == "POST" and req.path == BATCH else None
                if fault == "bad-gateway":
                    self.stats[fault] += 1
                    writer.write(
                        encode_reply(
                            502, {"error": {"code": "bad_gateway", "message": "the proxy did not forward this"}}
                        )
                    )
                    await writer.drain()
                    continue
                headers = [(k, v) for k, v in req.headers if k.lower() not in _NOT_FORWARDED]
                answer = await self.http.request(
                    req.method, self.target + req.target, headers=headers, content=req.body
                )
                self.stats["forwarded"] += 1
                if fault is not None:
                    self.stats[fault] += 1
                    if fault == "stall":
                        await asyncio.sleep(self.stall_seconds)
                    return  # the server answered; the client hears nothing
                kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "retry-after")}
                writer.write(encode_reply(answer.status_code, answer.content, kept))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop", type=float, default=0.1)
    p.add_argument("--bad-gateway", type=float, default=0.05)
    p.add_argument("--stall", type=float, default=0.05)
    p.add_argument("--stall-seconds", type=float, default=3.0)
    args = p.parse_args()
    proxy = FaultProxy(args.target, args.seed, args.drop, args.bad_gateway, args.stall, args.stall_seconds)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0, limit=64 * 1024 * 1024)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
