"""batchnb.dask on a real LocalCluster (2 worker processes) and the real loopback server.

Every promise of one machine, across the cluster: rows aligned to their
input partition, the limit the server sees respected, nothing sent twice
when a worker dies or the result is computed again, references refused
across partitions before anything is sent, cancel stops new batches, and
credentials stay out of the task graph.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sqlite3
import time
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import batchnb.dask as bd  # noqa: E402
from batchnb import BatchValidationError  # noqa: E402

from tests.support import wait_until  # noqa: E402
from tests.support.watching import WatchedServer  # noqa: E402

CO = "/api/2.1/scheduling/companies"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.Client]:
    # A dead worker's semaphore lease is freed after this long (the default is 30 s); workers read it from
    # their environment, the scheduler (in this process) from the config.
    os.environ["DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT"] = "3s"
    import dask

    with (
        dask.config.set({"distributed.scheduler.locks.lease-timeout": "3s"}),
        distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as local,
        distributed.Client(local) as client,
    ):
        yield client


def names_frame(n: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame({"name": [f"{tag} {i}" for i in range(n)]})


def companies_named(db: Path, tag: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(
            conn.execute(
                "SELECT name, count(*) FROM companies WHERE name LIKE ? GROUP BY name", (f"{tag} %",)
            ).fetchall()
        )


def test_results_line_up_with_their_input_partition_by_partition(cluster, tmp_path):
    csv = tmp_path / "sites.csv"
    names_frame(300, "Aligned").to_csv(csv, index=False)
    ddf = dd.read_csv(csv, blocksize=1000)  # several partitions, each indexed 0, 1, 2, …
    assert ddf.npartitions >= 3
    with WatchedServer() as server:
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "journal",
            client=cluster,
        )
        joined = bd.join(ddf, result).compute()
        computed = result.compute()
        # Building the graph called nothing: the server created exactly the rows, once each.
        assert server.count() == 300
    assert list(result.columns) == list(result._meta.columns) and "partition" in result.columns
    assert len(joined) == 300 and joined["ok"].all()
    assert (joined["body"].map(lambda b: b["name"]) == joined["name"]).all()  # each result beside its own row
    assert computed["partition"].nunique() == ddf.npartitions
    for number in range(ddf.npartitions):
        part_in = ddf.get_partition(number).compute()
        part_out = computed[computed["partition"] == number]
        assert part_out.index.tolist() == part_in.index.tolist()
    # Why join exists: labels repeat across partitions, and a plain join multiplies rows.
    assert len(ddf.join(result[["status"]]).compute()) > 300


def test_computing_the_result_again_sends_nothing_more(cluster, tmp_path):
    with WatchedServer() as server:
        result = bd.submit(
            dd.from_pandas(names_frame(200, "Twice"), npartitions=4),
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            client=cluster,
        )
        sent = len(server.starts)
        result.compute()
        result.compute()
        assert len(server.starts) == sent and server.count() == 200


def test_the_limit_holds_for_the_whole_cluster_as_the_server_sees_it(cluster, tmp_path):
    concurrency, rate = 2, 8
    with WatchedServer(max_requests=10, delay=0.05) as server:
        ddf = dd.from_pandas(names_frame(400, "Limited"), npartitions=8)  # 40 batches of 10
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            concurrency=concurrency,
            batch_rate=rate,
            client=cluster,
        )
        assert result.compute()["ok"].all()
        assert len(server.starts) == 40
        assert server.max_in_flight <= concurrency, server.max_in_flight
        assert server.starts_per_window(1.0) <= rate, server.starts_per_window(1.0)


def test_a_rate_in_requests_per_second_holds_for_the_whole_cluster(cluster, tmp_path):
    rate = "40/s"  # batches of 10: four batches a second, cluster-wide
    with WatchedServer(max_requests=10) as server:
        ddf = dd.from_pandas(names_frame(200, "PerRequest"), npartitions=4)  # 20 batches of 10
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            concurrency=4,
            rate=rate,
            client=cluster,
        )
        assert result.compute()["ok"].all()
        assert len(server.starts) == 20
        assert server.starts_per_window(1.0) * 10 <= 40, server.starts_per_window(1.0)


def test_an_invalid_rate_is_refused_before_anything_is_sent(cluster, tmp_path):
    with WatchedServer(max_requests=10) as server:
        ddf = dd.from_pandas(names_frame(20, "Bad"), npartitions=2)
        with pytest.raises(BatchValidationError) as info:
            bd.submit(
                ddf,
                server.url,
                token=server.token,
                method="POST",
                path=CO,
                body=["name"],
                rate="fast",
                journal=tmp_path / "j",
                client=cluster,
            )
        assert info.value.problems[0].pointer == "rate" and server.starts == []


def test_a_429_with_retry_after_backs_every_worker_off(cluster, tmp_path):
    with WatchedServer(max_requests=10, answer=lambda n: (429, {"Retry-After": "2"}) if n == 5 else None) as server:
        ddf = dd.from_pandas(names_frame(200, "Backoff"), npartitions=4)
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            concurrency=2,
            client=cluster,
        )
        assert result.compute()["ok"].all()
        refused_at = server.starts[4]
        inside = [round(t - refused_at, 3) for t in server.starts[5:] if 0 < t - refused_at < 1.8]
        # Batches already past the check when the 429 came (one a slot, concurrency 2) may still start;
        # nothing else starts inside the two seconds it asked for.
        assert len(inside) <= 2, inside
        assert len(server.starts) > 5 + len(inside)  # the rest waited, then ran


@pytest.mark.parametrize("idempotency", ["auto", False])
def test_a_worker_killed_after_its_batch_was_sent_creates_nothing_twice(cluster, tmp_path, idempotency):
    journal = tmp_path / "j"
    with WatchedServer(max_requests=20, hold=lambda n, body: n == 3) as server:
        ddf = dd.from_pandas(names_frame(160, "Killed"), npartitions=4)  # 40 rows, 2 batches a partition
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=journal,
            concurrency=2,
            idempotency=idempotency,
            client=cluster,
            wait=False,
        )
        assert server.holding.wait(60), "the server never got its third batch"
        held = [op["body"]["name"] for op in server.bodies[2]["requests"]]
        partition = int(held[0].split()[-1]) // 40
        fence = json.loads((journal / f"partition-{partition:05d}.fence").read_text())
        os.kill(fence["pid"], signal.SIGKILL)  # the worker that sent it dies with the batch in flight
        server.release()
        distributed.wait(distributed.futures_of(result), timeout=120)
        computed = result.compute()
        counts = companies_named(server.db, "Killed")
    assert all(n == 1 for n in counts.values()), {k: v for k, v in counts.items() if v > 1}
    names = names_frame(160, "Killed")["name"]
    rows_of = computed.assign(name=names.to_numpy())  # from_pandas kept the rows in order
    if idempotency == "auto":
        # Everything the dead worker had in flight (the held batch among it) was sent again with the
        # same keys, and the API answered with its first answers: every row ran once, and says ok.
        assert computed["ok"].all() and len(counts) == 160
        assert set(held) <= set(rows_of.loc[rows_of["replayed"], "name"])
    else:
        # At most once: what was in flight is "outcome unknown", never sent again; the rest ran once.
        unknown = rows_of["error"].fillna("").str.startswith("outcome unknown")
        assert set(held) <= set(rows_of.loc[unknown, "name"])
        assert rows_of.loc[~unknown, "ok"].all() and not rows_of["replayed"].any()


def test_a_reference_across_partitions_is_refused_before_anything_is_sent(cluster, tmp_path):
    ops = pd.DataFrame(
        {
            "method": "POST",
            "path": [CO, CO, f"{CO}/${{result=co-a:$.id}}/services", CO],
            "name": ["co-a", "co-b", None, "co-c"],
            # JSON text, as a CSV holds it (Dask turns a column of dicts into text of their repr).
            "body": ['{"name": "A"}', '{"name": "B"}', '{"name": "cut", "duration": 30}', '{"name": "C"}'],
        },
        index=["r0", "r1", "r2", "r3"],
    )
    ddf = dd.from_pandas(ops, npartitions=2, sort=False)
    with WatchedServer() as server:
        with pytest.raises(BatchValidationError) as err:
            bd.submit(ddf, server.url, api_key="demo", token=server.token, journal=tmp_path / "j", client=cluster)
        assert server.starts == []
    assert str(err.value.problems[0]) == (
        "row 'r2' in partition 1: refers to 'co-a', made in partition 0 (row 'r0'): references work within a partition; "
        "move each chain into one (batchnb.dask.by_key) or send the parents first"
    )
    # by_key puts each chain in one partition, parents first: then it runs.
    ops["site"] = ["a", "b", "a", "c"]
    with WatchedServer() as server:
        result = bd.submit(
            bd.by_key(dd.from_pandas(ops, npartitions=2, sort=False), "site"),
            server.url,
            api_key="demo",
            token=server.token,
            journal=tmp_path / "k",
            client=cluster,
        )
        assert result.compute()["ok"].all() and server.count("services") == 1


def test_a_journal_is_required_when_a_row_may_create_something(cluster):
    with pytest.raises(BatchValidationError) as err:
        bd.submit(
            dd.from_pandas(names_frame(4, "J"), npartitions=2),
            "http://127.0.0.1:9",
            token="t",
            method="POST",
            path=CO,
            body=["name"],
            client=cluster,
        )
    assert err.value.pointers == ["journal"]


def test_cancelling_stops_new_batches(cluster, tmp_path):
    with WatchedServer(max_requests=5, delay=0.2) as server:
        ddf = dd.from_pandas(names_frame(400, "Cancelled"), npartitions=4)  # 80 batches, 0.2 s each
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            concurrency=2,
            client=cluster,
            wait=False,
        )
        wait_until(lambda: len(server.starts) >= 4, 60, "no batch started")
        cluster.cancel(distributed.futures_of(result))
        at_cancel = len(server.starts)
        # Settled: no batch started for a whole second.
        wait_until(
            lambda: server.in_flight == 0 and time.monotonic() - max(server.starts) > 1.0, 30, "batches kept starting"
        )
        assert len(server.starts) - at_cancel <= 2, (
            at_cancel,
            len(server.starts),
        )  # at most those already past the check
        assert len(server.starts) < 80


def test_credentials_never_travel_in_the_task_graph(cluster, tmp_path):
    # The first batch's answer is held, so that its task is still on the scheduler when the graph is read.
    with WatchedServer(hold=lambda n, body: n == 1) as server:
        result = bd.submit(
            dd.from_pandas(names_frame(40, "Secret"), npartitions=2),
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            client=cluster,
            wait=False,
        )
        wait_until(server.holding.is_set, 30, "no batch reached the server")
        specs = cluster.run_on_scheduler(
            lambda dask_scheduler: [
                pickle.dumps(ts.run_spec) for ts in dask_scheduler.tasks.values() if ts.run_spec is not None
            ]
        )
        server.release()
        distributed.wait(distributed.futures_of(result), timeout=60)
        assert result.compute()["ok"].all()
    assert specs and not any(server.token.encode() in spec for spec in specs)


def test_an_api_that_answers_429_past_its_rate_gets_every_row_once_with_defaults_only(cluster, tmp_path):
    from tests.test_ratelimit_api import company, gateway

    rows = 300
    with company("ietf") as (api, token), gateway(api.url) as url:
        ddf = dd.from_pandas(pd.DataFrame({"key": [f"dask-{i}" for i in range(rows)]}), npartitions=4)
        result = bd.submit(
            ddf,
            url,
            token=token,
            method="POST",
            path="/api/things",
            body=["key"],
            journal=tmp_path / "j",
            client=cluster,
        ).compute()
        stats = api.stats()
    assert result["ok"].all(), result.loc[~result["ok"], ["status", "error"]].head()
    assert len(result) == rows and stats["created"] == rows and stats["duplicates"] == 0, stats
    assert stats["status"].get("429", 0) > 0, stats  # the limit was met, and every refused row went again
