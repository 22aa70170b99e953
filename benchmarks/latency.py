"""An API 100 ms away, behind a gateway: batching against per-row HTTP at the same client concurrency.

    python benchmarks/latency.py [--delay 0.1] [--rows 2000] [--parallel 16]

The API (benchmarks/_slow_api.py, a process of its own on loopback) answers
every request after ``--delay`` seconds, as an API across the internet would.
- baseline: each row its own request straight to that API, 4 at a time;
- measured: ``submit`` through ``batchnb serve --upstream`` (another process),
  4 batches at a time, each letting the gateway run ``--parallel`` of its
  operations at once.
Targets: >= 5x the baseline's throughput, and >= 0.85 of the in-flight
bound ``parallel * concurrency / delay`` ops/s (that many requests in flight,
each taking the API's delay: nothing can go faster). Without ``parallel`` a
batch of 50 would take 50 round trips and batching would gain nothing. Exits 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
from _common import _wait_ready, free_port

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # tests/support: how to start a server that says its port
from batchnb import AsyncClient
from tests.support import listening

HERE = Path(__file__).resolve().parent
TARGET = 5.0
#: of the in-flight bound parallel * concurrency / delay.
BOUND_TARGET = 0.85


def slow_api(delay: float) -> contextlib.AbstractContextManager[str]:
    return listening([sys.executable, str(HERE / "_slow_api.py"), "--delay", str(delay)], "the slow API")


@contextlib.contextmanager
def gateway(upstream: str) -> Iterator[tuple[str, str]]:
    token, port = secrets.token_urlsafe(12), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchnb.cli",
            "serve",
            "--upstream",
            upstream,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "BATCHNB_API_KEY": "bench", "BATCHNB_TOKEN": token},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(10)


async def per_row(api: str, rows: int, concurrency: int) -> float:
    queue = iter(range(rows))
    async with httpx.AsyncClient(trust_env=False) as http:

        async def worker() -> None:
            for i in queue:
                r = await http.post(f"{api}/things/{i}", json={"n": i})
                assert r.status_code == 201

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def batched(url: str, token: str, rows: int, concurrency: int, parallel: int) -> float:
    df = pd.DataFrame({"n": range(rows)})
    async with AsyncClient(url, token=token, concurrency=concurrency) as client:
        start = time.perf_counter()
        result = await client.submit(
            df, method="POST", path="/things/{n}", body=["n"], parallel=parallel, progress=False, idempotency=False
        )
        elapsed = time.perf_counter() - start
    assert result["ok"].all(), result.loc[~result["ok"], ["status", "error"]].head()
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--delay", type=float, default=0.1)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--baseline-rows", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--parallel", type=int, default=16)
    a = p.parse_args()
    with slow_api(a.delay) as api, gateway(api) as (url, token):
        t_row = asyncio.run(per_row(api, a.baseline_rows, a.concurrency))
        t_batch = asyncio.run(batched(url, token, a.rows, a.concurrency, a.parallel))
    row_ops, batch_ops = a.baseline_rows / t_row, a.rows / t_batch
    ratio = batch_ops / row_ops
    bound = a.parallel * a.concurrency / a.delay
    of_bound = batch_ops / bound
    print(f"API latency {a.delay * 1000:.0f} ms a request; client concurrency {a.concurrency}")
    print(f"baseline per-row HTTP straight to the API: {a.baseline_rows:6d} rows {t_row:6.2f} s {row_ops:8.0f} ops/s")
    print(
        f"submit through the gateway, parallel={a.parallel:<3d}:  {a.rows:6d} rows {t_batch:6.2f} s {batch_ops:8.0f} ops/s"
    )
    print(
        f"ratio: {ratio:.1f}x the baseline's throughput (target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'NOT met'})"
    )
    print(
        f"in-flight bound parallel*concurrency/delay = {a.parallel}*{a.concurrency}/{a.delay:g} s = {bound:.0f} ops/s: "
        f"{of_bound:.2f} of it (target >= {BOUND_TARGET:g}: {'met' if of_bound >= BOUND_TARGET else 'NOT met'})"
    )
    return 0 if ratio >= TARGET and of_bound >= BOUND_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
