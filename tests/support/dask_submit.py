"""One batchnb.dask submit on a LocalCluster of its own, in a process a test can kill when it hangs.

    python -m tests.support.dask_submit URL TOKEN THREADS PARTITIONS CONCURRENCY ROWS JOURNAL

Two worker processes with THREADS threads each; ROWS companies named
``Deadline <i>`` in PARTITIONS partitions, posted with ``concurrency``
CONCURRENCY. Prints ``done <rows> <all ok>`` when the result is computed.
"""

from __future__ import annotations

import sys

import pandas as pd


def main(url: str, token: str, threads: int, partitions: int, concurrency: int, rows: int, journal: str) -> None:
    import dask.dataframe as dd
    import distributed

    import batchnb.dask as bd

    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=threads, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        names = pd.DataFrame({"name": [f"Deadline {i}" for i in range(rows)]})
        result = bd.submit(
            dd.from_pandas(names, npartitions=partitions),
            url,
            api_key="demo",
            token=token,
            method="POST",
            path="/api/2.1/scheduling/companies",
            body=["name"],
            journal=journal,
            concurrency=concurrency,
            client=client,
        )
        ok = result.compute()["ok"]
        print(f"done {len(ok)} {bool(ok.all())}", flush=True)


if __name__ == "__main__":
    url, token, threads, partitions, concurrency, rows, journal = sys.argv[1:]
    main(url, token, int(threads), int(partitions), int(concurrency), int(rows), journal)
