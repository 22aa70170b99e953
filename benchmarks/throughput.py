"""End-to-end throughput: batched ``submit`` against ``batchnb serve`` over loopback, with two baselines.

    python benchmarks/throughput.py [--rows 20000] [--row-rows 3000] [--runs 3] [--concurrency 4]

Both baselines send the very requests ``submit`` sends (with an
``Idempotency-Key`` each when ``submit`` uses keys, its default against the
demo API, which honours them), measured in the same run:
- per-row HTTP: each row as its own request to the same server through one
  ``httpx.AsyncClient``, at the same concurrency (target: submit >= 6x this,
  in every run);
- in-process: the demo API called directly (its own dispatcher, no HTTP
  and no ASGI messages), a request at a time: the limit of one server
  process (target: submit >= 0.6x this, median of runs).

It prints where a batch's time goes on the server (the ``Server-Timing``
each batch answers with: reading, parsing and checking, filling in
references, the API, carrying answers, serialising), and what idempotency
keys cost: submit with keys against ``idempotency=False`` (target: within
10%), split into what the demo API spends keeping each answer and what is
left for batchnb.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
from _common import cpu_seconds, served

from batchnb import AsyncClient, Operation
from batchnb._keys import HEADER, RunKeys, new_run_id
from batchnb._timing import PHASES, read_header
from batchnb.demo import Store
from batchnb.demo.scheduling import scheduling_app
from batchnb.server.auth import Keyring

PATH = "/api/2.1/scheduling/companies"
PER_ROW_TARGET, IN_PROCESS_TARGET, KEY_COST_TARGET = 6.0, 0.6, 0.10


class ServerTimings(httpx.AsyncHTTPTransport):
    """A transport that adds up the ``Server-Timing`` of every batch answered through it."""

    def __init__(self) -> None:
        super().__init__()
        self.ms: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.ms.update(read_header(response.headers.get("server-timing", "")))
        return response


def run_keys(rows: int) -> list[str]:
    """The Idempotency-Key ``submit`` sends for each of ``rows`` rows (a fresh run's), so that the baselines send the same."""
    keys = RunKeys(new_run_id())
    ops = [Operation("POST", PATH, row=i) for i in range(rows)]
    keys.assign(ops)
    return [keys.headers_for(op)[HEADER] for op in ops]  # type: ignore[index]  # known to be there for these operations


async def per_row(url: str, token: str, rows: int, concurrency: int, keyed: bool) -> float:
    queue = iter(range(rows))
    keys = run_keys(rows) if keyed else []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, trust_env=False) as http:

        async def worker() -> None:
            for i in queue:
                headers = {HEADER: keys[i]} if keyed else None
                r = await http.post(url + PATH, json={"name": f"row {i}"}, headers=headers)
                assert r.status_code == 201, r.text

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def batched(
    url: str, token: str, rows: int, concurrency: int, keyed: bool, timings: ServerTimings | None = None
) -> float:
    df = pd.DataFrame({"title": [f"row {i}" for i in range(rows)]})
    async with AsyncClient(url, token=token, concurrency=concurrency, transport=timings) as client:
        start = time.perf_counter()
        result = await client.submit(
            df, method="POST", path=PATH, body={"name": "title"}, progress=False, idempotency="auto" if keyed else False
        )
        elapsed = time.perf_counter() - start
    assert result["ok"].all(), result[~result["ok"]].head()
    return elapsed


async def in_process(rows: int, keyed: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "inproc.sqlite3")
        # The fastest way in: the API's own dispatcher (no ASGI messages), as the batch server calls it.
        dispatch = scheduling_app(store, Keyring({"bench": "in-process"})).dispatch
        base = [("authorization", "Bearer in-process"), ("content-type", "application/json")]
        keys = run_keys(rows) if keyed else []
        start = time.perf_counter()
        for i in range(rows):
            headers = [*base, ("idempotency-key", keys[i])] if keyed else base
            r = await dispatch("POST", PATH, headers, b'{"name":"row %d"}' % i)
            assert r.status == 201
        elapsed = time.perf_counter() - start
        store.close()
    return elapsed


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20_000, help="rows per submit")
    p.add_argument("--row-rows", type=int, default=3_000, help="rows sent one request each (the per-row baseline)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args()

    def rate(rows: int, seconds: float) -> float:
        return rows / seconds

    figures: dict[str, list[float]] = {}
    timings = ServerTimings()
    server_cpu = 0.0
    with served() as (url, token, pid):
        for run in range(1, a.runs + 1):
            seen: dict[str, float] = {}
            for keyed in (True, False):
                tag = "keys" if keyed else "no keys"
                seen[f"per-row, {tag}"] = rate(
                    a.row_rows, asyncio.run(per_row(url, token, a.row_rows, a.concurrency, keyed))
                )
                cpu0 = cpu_seconds(pid)
                seen[f"submit, {tag}"] = rate(
                    a.rows, asyncio.run(batched(url, token, a.rows, a.concurrency, keyed, timings if keyed else None))
                )
                cpu1 = cpu_seconds(pid)
                if keyed and cpu0 is not None and cpu1 is not None:
                    server_cpu += cpu1 - cpu0
                seen[f"in-process, {tag}"] = rate(a.rows, asyncio.run(in_process(a.rows, keyed)))
            for name, value in seen.items():
                figures.setdefault(name, []).append(value)
            print(
                f"run {run}: " + ", ".join(f"{name} {value:,.0f}" for name, value in seen.items()) + " ops/s",
                flush=True,
            )

    median = {name: statistics.median(values) for name, values in figures.items()}
    print(
        f"\nrows per submit: {a.rows}, per-row baseline rows: {a.row_rows}, concurrency: {a.concurrency}, runs: {a.runs} (medians)"
    )
    for name in (
        "per-row, keys",
        "in-process, keys",
        "submit, keys",
        "per-row, no keys",
        "in-process, no keys",
        "submit, no keys",
    ):
        print(f"  {name:<22} {median[name]:9,.0f} ops/s")

    failures = 0
    for tag in ("keys", "no keys"):
        each = [s / r for s, r in zip(figures[f"submit, {tag}"], figures[f"per-row, {tag}"])]
        ok = min(each) >= PER_ROW_TARGET
        failures += not ok
        print(
            f"submit vs per-row HTTP ({tag}): {statistics.median(each):.1f}x median, runs {', '.join(f'{x:.1f}x' for x in each)} "
            f"(target >= {PER_ROW_TARGET:g}x in every run: {met(ok)})"
        )
    for tag in ("keys", "no keys"):
        ratio = median[f"submit, {tag}"] / median[f"in-process, {tag}"]
        ok = ratio >= IN_PROCESS_TARGET
        failures += not ok
        print(f"submit vs in-process ({tag}):   {ratio:.2f}x (target >= {IN_PROCESS_TARGET:g}x: {met(ok)})")

    cost = median["submit, no keys"] / median["submit, keys"] - 1
    api_cost = median["in-process, no keys"] / median["in-process, keys"] - 1
    ok = cost <= KEY_COST_TARGET
    failures += not ok
    print(f"cost of keys: {cost:+.1%} time per row (target within {KEY_COST_TARGET:.0%}: {met(ok)})")
    per_op_api = 1e6 / median["in-process, keys"] - 1e6 / median["in-process, no keys"]
    per_op_all = 1e6 / median["submit, keys"] - 1e6 / median["submit, no keys"]
    print(
        f"  keys cost a submit {per_op_all:.0f} us a row; the demo API called in-process, a commit for each request, "
        f"{per_op_api:.0f} us a row ({api_cost:+.1%}) to keep each answer in SQLite"
    )

    total = sum(timings.ms.values())
    ops = a.rows * a.runs
    print("\nwhere a batch's time goes on the server (keyed submits, per operation):")
    for phase, what in PHASES.items():
        ms = timings.ms.get(phase, 0.0)
        print(f"  {phase:<10} {ms * 1000 / ops:7.1f} us  {ms / total if total else 0:5.1%}  {what}")
    if server_cpu:
        outside = server_cpu * 1e6 / ops - total * 1000 / ops
        print(
            f"  server CPU {server_cpu * 1e6 / ops:7.1f} us a row; outside the phases (HTTP, uvicorn, event loop): {outside:.1f} us"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
