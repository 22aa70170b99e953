"""An API that allows N requests a second per client, answering 429 + Retry-After past it: defaults only.

    python benchmarks/ratelimit.py [--rows 1000] [--rate 50] [--headers none|ietf|x]

The API is ``batchnb.demo.company`` (a process of its own on loopback): at
most ``--rate`` requests to ``/api/...`` in any second per client, else 429
with ``Retry-After`` (and, per ``--headers``, the RateLimit or X-RateLimit
headers). ``submit`` sends ``--rows`` creates with no ``rate=`` and no
retry settings, in direct mode and through a gateway (``batchnb serve
--upstream``, another process):
- baseline: the ideal, rows / rate seconds;
- measured: the wall time of each run.
Targets: 0 rows failed, 0 duplicates; wall time <= 1.25x the ideal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from _common import _wait_ready, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from batchnb import Client
from batchnb.demo.company import CompanyAPI

TARGET = 1.25


@contextlib.contextmanager
def gateway(upstream: str) -> Iterator[str]:
    """``batchnb serve --upstream`` with no credentials of its own: each batch's Authorization reaches the API."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("BATCHNB_TOKEN", "BATCHNB_API_KEY")}
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
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def one_run(label: str, rows: int, rate: int, headers: str, gateway_too: bool) -> tuple[float, int, int]:
    """(seconds, rows failed, duplicates) of one run against a fresh API."""
    with CompanyAPI(rate=rate, ratelimit_headers=headers) as api:  # type: ignore[arg-type]  # a value the annotation does not name, on purpose
        token = api.token()
        df = pd.DataFrame({"key": [f"{label}-{i}" for i in range(rows)]})
        with contextlib.ExitStack() as stack:
            if gateway_too:
                client = Client(stack.enter_context(gateway(api.url)), token=token)
            else:
                client = Client(api.url, token=token, mode="direct")
            # Let the limiter's window of the token request pass: the run starts on a clean second.
            time.sleep(1.0)
            start = time.perf_counter()
            result = client.submit(df, method="POST", path="/api/things", body=["key"], progress=False)
            elapsed = time.perf_counter() - start
        stats = api.stats()
    failed = int((~result["ok"]).sum())
    print(
        f"{label:<26s}: {rows} rows {elapsed:6.2f} s, {failed} failed, {stats['duplicates']} duplicates, "
        f"{stats['status'].get('429', 0)} answers 429 ({stats['requests']} requests)"
    )
    return elapsed, failed, int(stats["duplicates"])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--rate", type=int, default=50)
    p.add_argument("--headers", choices=["none", "ietf", "x"], default="none")
    a = p.parse_args()
    ideal = a.rows / a.rate
    print(f"API: {a.rate} requests/s per client, 429 + Retry-After (headers: {a.headers}); defaults only")
    print(f"baseline  ideal {a.rows} / {a.rate}: {ideal:.3f} s")
    status = 0
    for label, through_gateway in (("direct mode", False), ("through a gateway", True)):
        elapsed, failed, duplicates = one_run(label, a.rows, a.rate, a.headers, through_gateway)
        ratio = elapsed / ideal
        met = ratio <= TARGET and failed == 0 and duplicates == 0
        print(
            f"  {label}: {failed} rows failed (target 0), ratio {ratio:.2f}x the ideal "
            f"({'within' if ratio <= TARGET else 'NOT within'} {TARGET:g}x)"
        )
        status |= 0 if met else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
