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
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the proxy and the workload are the tests' own (tests/support/delivery.py)

import batchnb as bn  # noqa: E402 - after sys.path names the repository
from tests.support.delivery import companies_and_services, duplicated, fault_proxy, proxy_stats  # noqa: E402 - after sys.path names the repository


def run(server: bn.LocalServer, rows: int, seed: int, keys: bool) -> bool:
    tag = "keys" if keys else "nokeys"
    with fault_proxy(server.url, seed, drop=0.1, bad_gateway=0.05, stall=0.05, stall_seconds=2.5) as url:
        client = bn.Client(url, **server.credentials(), timeout=1.5, retries=12, backoff=0.05, max_backoff=0.5)
        start = time.perf_counter()
        result = client.submit(companies_and_services(rows // 2, tag), progress=False, idempotency=keys)
        elapsed = time.perf_counter() - start
        faults = proxy_stats(url)
    twice = len(duplicated(server.db, tag))
    unknown = int(result["error"].fillna("").str.startswith("outcome unknown").sum())
    final = int(result["status"].notna().sum())
    verdict = "met" if (unknown == 0 and twice == 0) else "NOT met"
    target = f"   (target 0 unknown, 0 duplicated: {verdict})" if keys else "   (at most once: duplicated must be 0)"
    print(
        f"{'with keys   ' if keys else 'without keys'}: {final} final, {unknown} outcome unknown, {twice} duplicated, "
        f"{int(result['replayed'].sum())} answered by a replay; {elapsed:.1f} s; faults {dict(sorted(faults.items()))}{target}"
    )
    return twice == 0 and (unknown == 0 or not keys)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--seed", type=int, default=11)
    a = p.parse_args()
    print(f"rows: {a.rows} (companies, each with a nested service that references it); seed {a.seed}")
    with bn.LocalServer() as server:
        ok = run(server, a.rows, a.seed, keys=True)
        ok = run(server, a.rows, a.seed, keys=False) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
