"""batchnb.dask on one machine: what the cluster costs, and the limit the server sees.

    python benchmarks/dask.py [--rows 20000] [--partitions 20]

The same 20,000 POST rows, against a server in a process of its own:
- baseline: one process, ``Client.submit`` at concurrency 4;
- measured: ``batchnb.dask.submit`` on a ``LocalCluster`` of 2 worker processes,
  with a cluster-wide limit of 4 batches in flight.
Target: the cluster within 20% of one process (on one machine the cluster
only adds work: semaphores, journals, scheduling). The server counts the
batches it had in flight at once: it must never see more than the limit. It
waits ``--delay`` (20 ms) before running each batch, as an API across a network
would: without a wait the demo API runs each batch to its end before the next
one starts, and the server would never see two at once, limit or not.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script is named like the package it measures: its own folder must not hide that package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402 - after sys.path stops naming this folder
import contextlib  # noqa: E402 - after sys.path stops naming this folder
import os  # noqa: E402 - after sys.path stops naming this folder
import subprocess  # noqa: E402 - after sys.path stops naming this folder
import tempfile  # noqa: E402 - after sys.path stops naming this folder
import time  # noqa: E402 - after sys.path stops naming this folder
from collections.abc import Iterator  # noqa: E402 - after sys.path stops naming this folder

import dask.dataframe as dd  # noqa: E402 - after sys.path stops naming this folder
import distributed  # noqa: E402 - after sys.path stops naming this folder
import httpx  # noqa: E402 - after sys.path stops naming this folder
import pandas as pd  # noqa: E402 - after sys.path stops naming this folder

import batchnb as bn  # noqa: E402 - after sys.path stops naming this folder
import batchnb.dask  # noqa: E402 - after sys.path stops naming this folder

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/2.1/scheduling/companies"


@contextlib.contextmanager
def watched_server(delay: float) -> Iterator[tuple[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.watching", "50", str(delay)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening "):
            raise SystemExit(f"the server did not start: {line}")
        _, url, token = line.split()
        yield url, token
    finally:
        proc.kill()
        proc.wait(10)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--partitions", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--delay", type=float, default=0.02, help="seconds the server waits before running each batch")
    a = p.parse_args()
    frame = lambda tag: pd.DataFrame({"name": [f"{tag} {i}" for i in range(a.rows)]})  # noqa: E731
    with watched_server(a.delay) as (url, token), tempfile.TemporaryDirectory() as tmp:
        client = bn.Client(url, api_key="demo", token=token, concurrency=a.concurrency)
        start = time.perf_counter()
        single = client.submit(frame("single"), method="POST", path=PATH, body=["name"], progress=False)
        t_single = time.perf_counter() - start
        assert single["ok"].all()
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as dask_client,
        ):
            ddf = dd.from_pandas(frame("cluster"), npartitions=a.partitions)
            before = httpx.get(url + "/_watch/stats").json()
            start = time.perf_counter()
            result = batchnb.dask.submit(
                ddf,
                url,
                api_key="demo",
                token=token,
                method="POST",
                path=PATH,
                body=["name"],
                journal=Path(tmp) / "journal",
                concurrency=a.concurrency,
                client=dask_client,
            )
            t_cluster = time.perf_counter() - start
            assert result["ok"].all().compute()
        seen = httpx.get(url + "/_watch/stats").json()
    ops = lambda t: a.rows / t  # noqa: E731
    overhead = t_cluster / t_single - 1
    print(
        f"rows: {a.rows}; partitions: {a.partitions}; 2 worker processes; limit {a.concurrency} batches in flight; "
        f"the server waits {a.delay * 1000:g} ms before each batch"
    )
    print(f"baseline one process, Client.submit:  {t_single:6.2f} s  {ops(t_single):7.0f} ops/s")
    print(f"batchnb.dask.submit on the cluster:   {t_cluster:6.2f} s  {ops(t_cluster):7.0f} ops/s")
    print(f"overhead of the cluster: {overhead:+.1%} (target within 20%: {'met' if overhead <= 0.20 else 'NOT met'})")
    print(
        f"batches in flight at once, as the server saw them: {seen['max_in_flight']} (limit {a.concurrency}: "
        f"{'met' if seen['max_in_flight'] <= a.concurrency else 'NOT met'}); batches: {seen['batches'] - before['batches']}"
    )
    return 0 if overhead <= 0.20 and seen["max_in_flight"] <= a.concurrency else 1


if __name__ == "__main__":
    sys.exit(main())
