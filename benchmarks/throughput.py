"""End-to-end throughput: batched ``submit`` against ``batchnb serve`` over loopback, with two baselines.

    python benchmarks/throughput.py [--rows 20000] [--concurrency 4]

Baselines, measured in the same run:
- per-row HTTP: each row as its own request to the same server through one
  ``httpx.AsyncClient``, at the same concurrency (target: submit >= 5x this);
- in-process: the demo API called directly as ASGI, no HTTP at all — the
  physical limit of this server (target: submit >= 0.25x this).

It also prints what idempotency keys cost: the same submit with keys (the
default against a server that honours them) and without (``idempotency=False``),
as ops/s (target: keys within 10% of no keys).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

from _common import serve
from batchnb import AsyncClient
from batchnb.engine import ASGIDispatcher
from batchnb.server.auth import Keyring
from batchnb.demo.scheduling import scheduling_app
from batchnb.demo.store import Store

PATH = "/api/2.1/scheduling/companies"


async def per_row(url: str, token: str, rows: int, concurrency: int) -> float:
    queue = iter(range(rows))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        async def worker() -> None:
            for i in queue:
                r = await http.post(url + PATH, json={"name": f"row {i}"})
                assert r.status_code == 201, r.text

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def batched(url: str, token: str, rows: int, concurrency: int, idempotency: bool | str = "auto") -> float:
    df = pd.DataFrame({"title": [f"row {i}" for i in range(rows)]})
    async with AsyncClient(url, token=token, concurrency=concurrency) as client:
        start = time.perf_counter()
        result = await client.submit(df, method="POST", path=PATH, body={"name": "title"}, progress=False, idempotency=idempotency)
        elapsed = time.perf_counter() - start
    assert result["ok"].all(), result[~result["ok"]].head()
    return elapsed


async def in_process(rows: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "inproc.sqlite3")
        dispatch = ASGIDispatcher(scheduling_app(store, Keyring({"bench": "in-process"})))
        headers = [("authorization", "Bearer in-process"), ("content-type", "application/json")]
        start = time.perf_counter()
        for i in range(rows):
            r = await dispatch("POST", PATH, headers, b'{"name": "row %d"}' % i)
            assert r.status == 201
        elapsed = time.perf_counter() - start
        store.close()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args()
    with serve() as (url, token):
        t_row = asyncio.run(per_row(url, token, a.rows, a.concurrency))
        t_batch = asyncio.run(batched(url, token, a.rows, a.concurrency))
        t_unkeyed = asyncio.run(batched(url, token, a.rows, a.concurrency, idempotency=False))
    t_local = asyncio.run(in_process(a.rows))
    ops = lambda t: a.rows / t  # noqa: E731
    print(f"rows: {a.rows}, concurrency: {a.concurrency}")
    print(f"baseline per-row HTTP (httpx.AsyncClient): {t_row:7.2f} s  {ops(t_row):9.0f} ops/s")
    print(f"baseline in-process ASGI, no HTTP:         {t_local:7.2f} s  {ops(t_local):9.0f} ops/s")
    print(f"batchnb submit over loopback:              {t_batch:7.2f} s  {ops(t_batch):9.0f} ops/s")
    r1, r2 = t_row / t_batch, t_local / t_batch
    print(f"submit vs per-row HTTP: {r1:.1f}x (target >= 5x: {'met' if r1 >= 5 else 'NOT met'})")
    print(f"submit vs in-process:   {r2:.2f}x (target >= 0.25x: {'met' if r2 >= 0.25 else 'NOT met'})")
    print(f"batchnb submit without idempotency keys:   {t_unkeyed:7.2f} s  {ops(t_unkeyed):9.0f} ops/s")
    cost = t_batch / t_unkeyed - 1
    print(f"cost of keys: {cost:+.1%} time (target within 10%: {'met' if cost <= 0.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
