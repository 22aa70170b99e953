"""Memory: building and sending a large frame, against ``batchnb serve`` over loopback.

    python benchmarks/memory.py [--rows 1000000] [--bodies json|parsed|none]

Prints the input frame's deep memory (the baseline), the client process's peak
RSS above what it held before the submit, and whether the growth stays under
the frame's deep memory plus 500 MB (the target) and plus 200 MB (the
stretch). The result frame is part of the growth. Without ``--bodies`` the
submit runs with its defaults, as an analyst's would: bodies reachable as
Python objects, kept as compact JSON text (about 150 bytes a row for the demo
API's companies, against about 800 as Python objects).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time

import pandas as pd
from _common import serve

from batchnb import AsyncClient

MB = 1024 * 1024


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--bodies", default=None, choices=["json", "parsed", "none"], help="default: submit's own default")
    a = p.parse_args()
    options = {} if a.bodies is None else {"bodies": a.bodies}
    df = pd.DataFrame(
        {
            "company": [f"co-{i % 997}" for i in range(a.rows)],
            "first": [f"F{i}" for i in range(a.rows)],
            "phone": [f"+33 1 {i:08d}" for i in range(a.rows)],
        }
    )
    frame_bytes = int(df.memory_usage(deep=True).sum())
    gc.collect()
    before = rss_now()
    with serve() as (url, token):

        async def go() -> pd.DataFrame:
            async with AsyncClient(url, token=token, concurrency=4) as client:
                return await client.submit(
                    df,
                    method="POST",
                    path="/api/2.1/scheduling/companies",
                    body={"name": "first", "address.city": "company", "phone": "phone"},
                    progress=False,
                    **options,
                )

        start = time.perf_counter()
        result = asyncio.run(go())
        elapsed = time.perf_counter() - start
    grown = peak_rss() - before
    kept = f"bodies={a.bodies!r}" if a.bodies else "default settings"
    print(
        f"rows: {a.rows}, {kept} (body column: {result['body'].dtype}), sent in {elapsed:.1f} s, ok: {int(result['ok'].sum())}"
    )
    print(f"baseline: input frame deep memory      {frame_bytes / MB:9.1f} MB")
    print(f"client peak RSS growth during submit   {grown / MB:9.1f} MB")
    print(f"  of which the result frame           {int(result.memory_usage(deep=True).sum()) / MB:9.1f} MB")
    limit = frame_bytes + 500 * MB
    print(
        f"ratio growth / (frame + 500 MB): {grown / limit:.2f} (target <= 1: {'met' if grown <= limit else 'NOT met'})"
    )
    stretch = frame_bytes + 200 * MB
    print(
        f"ratio growth / (frame + 200 MB): {grown / stretch:.2f} (stretch <= 1: {'met' if grown <= stretch else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
