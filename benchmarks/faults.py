"""Delivery through a network that loses batches: 5,000 rows, with and without idempotency keys.

    python benchmarks/faults.py [--rows 5000] [--seed 11]

A fault-injecting proxy (tests/support/fault_proxy.py, a process of its own
on loopback) sits in front of ``batchnb serve``: from a seed it hangs up after
the server answered, answers 502 without forwarding, or sits on the answer
past the client's timeout. Rows are companies, each with a service nested
under it that references it. Printed for each run: rows final, rows whose
outcome is unknown, companies created twice (counted in the store by name),
and the time. Target, with keys: 0 unknown and 0 duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd

import batchnb as bn

ROOT = Path(__file__).resolve().parent.parent
API = "/api/2.1/scheduling"


@contextlib.contextmanager
def proxy(target: str, seed: int) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fault_proxy", "--target", target, "--seed", str(seed),
                             "--drop", "0.1", "--bad-gateway", "0.05", "--stall", "0.05", "--stall-seconds", "2.5"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening "):
            raise SystemExit(f"the fault proxy did not start: {line}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait(10)


def frame(units: int, tag: str) -> pd.DataFrame:
    rows = []
    for i in range(units):
        rows.append({"label": f"co{i}", "method": "POST", "path": f"{API}/companies", "name": f"co-{i}", "parent": None,
                     "body": {"name": f"{tag} {i}"}})
        rows.append({"label": f"sv{i}", "method": "POST", "path": f"{API}/companies/${{result=co-{i}:$.id}}/services",
                     "name": None, "parent": f"co-{i}", "body": {"name": f"{tag} cut {i}", "duration": 30}})
    return pd.DataFrame(rows).set_index("label")


def run(server: bn.LocalServer, rows: int, seed: int, keys: bool) -> None:
    tag = "keys" if keys else "nokeys"
    with proxy(server.url, seed) as url:
        client = bn.Client(url, **server.credentials(), timeout=1.5, retries=12, backoff=0.05, max_backoff=0.5)
        start = time.perf_counter()
        result = client.submit(frame(rows // 2, tag), progress=False, idempotency=keys)
        elapsed = time.perf_counter() - start
        faults = httpx.get(url + "/_proxy/stats", trust_env=False).json()
    with sqlite3.connect(server.db) as conn:
        twice = conn.execute("SELECT count(*) FROM (SELECT name FROM companies WHERE name LIKE ? GROUP BY name HAVING count(*) > 1)",
                             (f"{tag} %",)).fetchone()[0]
    unknown = int(result["error"].fillna("").str.startswith("outcome unknown").sum())
    final = int(result["status"].notna().sum())
    verdict = "met" if (unknown == 0 and twice == 0) else "NOT met"
    target = f"   (target 0 unknown, 0 duplicated: {verdict})" if keys else "   (at most once: duplicated must be 0)"
    print(f"{'with keys   ' if keys else 'without keys'}: {final} final, {unknown} outcome unknown, {twice} duplicated, "
          f"{int(result['replayed'].sum())} answered by a replay; {elapsed:.1f} s; faults {dict(sorted(faults.items()))}{target}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--seed", type=int, default=11)
    a = p.parse_args()
    print(f"rows: {a.rows} (companies, each with a nested service that references it); seed {a.seed}")
    with bn.LocalServer() as server:
        run(server, a.rows, a.seed, keys=True)
        run(server, a.rows, a.seed, keys=False)


if __name__ == "__main__":
    main()
