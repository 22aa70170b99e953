"""Load test: concurrent clients sending batches to a ``batchnb serve`` subprocess on loopback.

    python benchmarks/load.py                       # 8 clients, 50 operations a batch, 15 s
    python benchmarks/load.py --clients 16 --ops 20 --seconds 30

Prints batches/s, operations/s, p50 and p99 batch latency and the error count,
then a baseline measured in the same run against the same server: the demo
API called one operation per HTTP request, by as many clients. The ratio of
the two rates is what batching buys on this machine. Exits non-zero when any
batch or operation failed, so that it can gate a CI job.

The server runs in its own process (as in production) so that the load
generator does not compete with it for the GIL; on a small machine both
still share the CPUs, which the figures include.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
from _common import serve

import batchnb
from batchnb import Batch, Operation

CO = "/api/2.1/scheduling/companies"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.operations = 0
        self.errors = 0
        self.first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what


async def run_for(seconds: float, clients: int, one: Callable[[int, int], Awaitable[None]]) -> float:
    """Each client calls ``one(client, n)`` back to back until the time is up; returns the elapsed time."""
    stop_at = time.monotonic() + seconds

    async def worker(c: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            await one(c, n)
            n += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    return time.monotonic() - started


async def batch_phase(url: str, token: str, clients: int, ops: int, seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    pool = [batchnb.AsyncClient(url, api_key="bench", token=token, timeout=30) for _ in range(clients)]
    run_id = secrets.token_hex(3)

    async def one(c: int, n: int) -> None:
        # Half creates, half reads that depend on a create by reference: the server resolves them.
        batch = Batch(
            [
                Operation("POST", CO, {"name": f"b{run_id}-{c}-{n}-{i}"}, name=f"c{i}")
                if i % 2 == 0
                else Operation("GET", f"{CO}/${{result=c{i - 1}:$.id}}")
                for i in range(ops)
            ]
        )
        started = time.perf_counter()
        try:
            responses = await pool[c].send(batch)
        except batchnb.BatchError as exc:
            tally.error(f"batch refused: {exc}")
            return
        tally.latencies.append((time.perf_counter() - started) * 1000)
        tally.operations += len(responses)
        bad = [r for r in responses if not r.ok]
        if bad or len(responses) != ops:
            tally.error(f"{len(bad)} operation(s) failed, first: {bad[0] if bad else 'missing responses'}")

    try:
        elapsed = await run_for(seconds, clients, one)
    finally:
        for client in pool:
            await client.aclose()
    return tally, elapsed


async def baseline_phase(url: str, token: str, clients: int, seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    headers = {"Authorization": f"Bearer {token}"}
    pool = [httpx.AsyncClient(base_url=url, headers=headers, timeout=30, trust_env=False) for _ in range(clients)]
    run_id = secrets.token_hex(3)

    last_id: dict[int, str] = {}

    async def one(c: int, n: int) -> None:
        # The same mix as the batches: a create, then a read of what it created.
        started = time.perf_counter()
        try:
            if n % 2 == 0 or c not in last_id:
                r = await pool[c].post(CO, json={"name": f"s{run_id}-{c}-{n}"})
                expected = 201
                if r.status_code == 201:
                    last_id[c] = r.json()["id"]
            else:
                r = await pool[c].get(f"{CO}/{last_id[c]}")
                expected = 200
        except httpx.HTTPError as exc:
            tally.error(f"request failed: {type(exc).__name__}")
            return
        tally.latencies.append((time.perf_counter() - started) * 1000)
        tally.operations += 1
        if r.status_code != expected:
            tally.error(f"HTTP {r.status_code}: {r.text[:200]}")

    try:
        elapsed = await run_for(seconds, clients, one)
    finally:
        for client in pool:
            await client.aclose()
    return tally, elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--ops", type=int, default=50, help="operations per batch (default 50, the server's limit)")
    p.add_argument("--seconds", type=float, default=15.0, help="how long to send batches (default 15)")
    p.add_argument(
        "--baseline-seconds",
        type=float,
        default=None,
        help="how long to measure single requests (default: a third of --seconds)",
    )
    args = p.parse_args(argv)
    baseline_seconds = args.baseline_seconds if args.baseline_seconds is not None else max(2.0, args.seconds / 3)

    with serve() as (url, token):
        batches, b_elapsed = asyncio.run(batch_phase(url, token, args.clients, args.ops, args.seconds))
        singles, s_elapsed = asyncio.run(baseline_phase(url, token, args.clients, baseline_seconds))

    n = len(batches.latencies)
    batch_rate = n / b_elapsed
    op_rate = batches.operations / b_elapsed
    single_rate = len(singles.latencies) / s_elapsed
    cpus = os.cpu_count()
    print(
        f"batchnb load: {args.clients} clients, {args.ops} operations a batch (half POST, half GET by reference), "
        f"{b_elapsed:.1f} s, server in a subprocess, {cpus} CPU(s)"
    )
    print(f"  batches     {n:>9,}   {batch_rate:>10,.1f} batches/s")
    print(f"  operations  {batches.operations:>9,}   {op_rate:>10,.1f} operations/s")
    print(
        f"  latency     p50 {percentile(batches.latencies, 50):8.1f} ms   p99 {percentile(batches.latencies, 99):8.1f} ms   "
        f"mean {statistics.fmean(batches.latencies) if n else float('nan'):.1f} ms"
    )
    print(f"  errors      {batches.errors}" + (f"   first: {batches.first_error}" if batches.first_error else ""))
    print(
        f"baseline: one operation per HTTP request (the same POST/GET mix), {args.clients} clients, {s_elapsed:.1f} s"
    )
    print(f"  requests    {len(singles.latencies):>9,}   {single_rate:>10,.1f} requests/s")
    print(
        f"  latency     p50 {percentile(singles.latencies, 50):8.1f} ms   p99 {percentile(singles.latencies, 99):8.1f} ms"
    )
    print(f"  errors      {singles.errors}" + (f"   first: {singles.first_error}" if singles.first_error else ""))
    ratio = op_rate / single_rate if single_rate else float("inf")
    print(f"ratio: {ratio:.1f}x operations/s through batches vs single requests")
    ok = not (batches.errors or singles.errors or n == 0)
    print(f"target: 0 errors under load, batches and single requests alike: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
