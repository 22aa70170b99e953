"""An HTTP API far away: every request answered after a fixed delay (an internet round trip).

    python benchmarks/_slow_api.py --delay 0.1

Prints ``listening PORT`` and serves on 127.0.0.1 until killed; each request gets
``{"id": "<last path segment>"}`` (201 for POST) after ``--delay`` seconds.
Keep-alive connections are served, so a client that reuses connections pays
only the delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = next(
                (int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:")), 0
            )
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)
            body = json.dumps({"id": target.split("?")[0].rsplit("/", 1)[-1]}).encode()
            status = "201 Created" if method == "POST" else "200 OK"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", type=float, default=0.1)
    a = p.parse_args()
    server = await asyncio.start_server(lambda r, w: serve(r, w, a.delay), "127.0.0.1", 0, backlog=1024)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
