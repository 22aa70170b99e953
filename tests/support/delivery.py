"""What the delivery tests and ``benchmarks/faults.py`` share: the fault proxy as a process, the workload, the count of duplicates.

- :func:`fault_proxy` starts ``tests/support/fault_proxy.py`` in front of a
  server and yields its URL; :func:`proxy_stats` says which faults it made;
- :func:`companies_and_services` is the workload: companies, each with a
  service nested under it that names it by reference;
- :func:`duplicated` counts, in the demo store, companies created twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path

import httpx
import pandas as pd

from . import listening

__all__ = ["API", "companies_and_services", "duplicated", "fault_proxy", "proxy_stats"]

API = "/api/2.1/scheduling"
ROOT = Path(__file__).resolve().parent.parent.parent


def fault_proxy(target: str, seed: int, **faults: float) -> contextlib.AbstractContextManager[str]:
    """The fault proxy in front of ``target``; ``faults`` are its options (``drop=0.1``, ``stall_seconds=2.5``…)."""
    args = [sys.executable, "-m", "tests.support.fault_proxy", "--target", target, "--seed", str(seed)]
    for name, value in faults.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return listening(args, "the fault proxy", cwd=ROOT)


def proxy_stats(proxy: str) -> dict[str, int]:
    """How many of each fault the proxy made."""
    return httpx.get(proxy + "/_proxy/stats", trust_env=False, timeout=10).json()


def companies_and_services(n: int, tag: str, headers: dict[str, str] | None = None) -> pd.DataFrame:
    """``n`` companies, each with a service nested under it that names it by reference: 2n rows."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "label": f"co{i}",
                "method": "POST",
                "path": f"{API}/companies",
                "name": f"co-{i}",
                "parent": None,
                "body": {"name": f"{tag} {i}"},
            }
        )
        rows.append(
            {
                "label": f"sv{i}",
                "method": "POST",
                "path": f"{API}/companies/${{result=co-{i}:$.id}}/services",
                "name": None,
                "parent": f"co-{i}",
                "body": {"name": f"{tag} cut {i}", "duration": 30},
            }
        )
    frame = pd.DataFrame(rows).set_index("label")
    if headers:
        frame["headers"] = [headers] * len(frame)
    return frame


def duplicated(db: Path, tag: str) -> dict[str, int]:
    """Company names (made with ``tag``) that the store holds more than once, with their counts."""
    with sqlite3.connect(db) as conn:
        return dict(
            conn.execute(
                "SELECT name, count(*) FROM companies WHERE name LIKE ? GROUP BY name HAVING count(*) > 1",
                (f"{tag} %",),
            ).fetchall()
        )
