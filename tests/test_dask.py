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
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import batchnb.dask as bd  # noqa: E402 - after the skip when dask is not installed
from batchnb import BatchValidationError  # noqa: E402 - after the skip when dask is not installed
from tests.support import count, wait_until  # noqa: E402 - after the skip when dask is not installed
from tests.support.watching import WatchedServer  # noqa: E402 - after the skip when dask is not installed

CO = "/api/2.1/scheduling/companies"

pytestmark = [pytest.mark.slow, pytest.mark.dask]


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


#: (threads per worker, partitions, concurrency): the issue's configuration first (it hung, every worker
#: thread waiting for a lease), then a single lease shared by many partitions, and more partitions than threads.
DEADLOCK_CASES = [(2, 8, 8), (4, 16, 10), (1, 2, 1), (4, 8, 1), (3, 6, 5), (2, 4, 10)]


@pytest.mark.parametrize(("threads", "partitions", "concurrency"), DEADLOCK_CASES)
def test_a_cluster_wide_limit_never_deadlocks(tmp_path, threads, partitions, concurrency):
    rows = partitions * 200  # twenty batches of 10 a partition: many wait for a lease at once
    deadline = 120
    with WatchedServer(max_requests=10, delay=0.02) as server:
        # A cluster of its own, in a process of its own: a hang is killed at the deadline and fails the test.
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.dask_submit",
                server.url,
                server.token,
                str(threads),
                str(partitions),
                str(concurrency),
                str(rows),
                str(tmp_path / "j"),
            ],
            cwd=Path(__file__).parents[1],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = run.communicate(timeout=deadline)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            pytest.fail(
                f"the submit hung: {len(server.starts)} of {rows // 10} batches sent in {deadline} s "
                f"(threads={threads}, partitions={partitions}, concurrency={concurrency})"
            )
        assert run.returncode == 0, err[-3000:]
        assert out.split() == ["done", str(rows), "True"], (out, err[-3000:])
        assert len(server.starts) == rows // 10 and server.count() == rows
        assert server.max_in_flight <= concurrency, server.max_in_flight


def test_a_429_with_retry_after_backs_every_worker_off(cluster, tmp_path):
    # One batch in flight at a time, cluster-wide: the batch refused holds the only lease until every worker
    # can read its Retry-After. (With more, a batch of another slot may start between the server's 429 and
    # the moment the worker that got it publishes the wait, and one slot can do so several times: that race
    # belongs to the network, not to batchnb, and a count of such batches cannot be a test.)
    with WatchedServer(max_requests=10, answer=lambda n: (429, {"Retry-After": "2"}) if n == 5 else None) as server:
        ddf = dd.from_pandas(names_frame(200, "Backoff"), npartitions=4)  # 4 partitions on both workers at once
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            concurrency=1,
            client=cluster,
        )
        assert result.compute()["ok"].all()
        refused_at = server.starts[4]
        inside = [round(t - refused_at, 3) for t in server.starts[5:] if 0 < t - refused_at < 1.8]
        assert inside == []  # nothing starts inside the two seconds the 429 asked for
        # Then the rest ran, the refused batch's ten rows again: once paced, batches may go out in parts.
        assert sum(len(b["requests"]) for b in server.bodies[5:]) == 160
        assert sum(len(b["requests"]) for b in server.bodies) == 210
        # Batches of several partitions were waiting, not only the refused batch's own.
        after = {int(op["body"]["name"].split()[-1]) // 50 for b in server.bodies[5:] for op in b["requests"]}
        assert len(after) > 1, after


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
    # Once the cancelled tasks have returned, nothing of the submit is left on the cluster.
    wait_until(lambda: _published(cluster) == NOTHING, 60, "what the cancelled submit published is still there")


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


def test_the_result_and_its_join_go_to_parquet_and_read_back_as_they_were(cluster, tmp_path):
    # Partition 0 all ok (no error, no name: columns pandas would leave `object`); partition 1 refused rows.
    names = names_frame(40, "Parquet")
    names.loc[30:, "name"] = ""
    ddf = dd.from_pandas(names, npartitions=2)
    with WatchedServer() as server:
        result = bd.submit(
            ddf,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            client=cluster,
        )
        for number in range(result.npartitions):  # every partition has exactly the meta's dtypes
            pd.testing.assert_series_equal(result.get_partition(number).compute().dtypes, result._meta.dtypes)
        computed = result.compute()
        assert computed["ok"].sum() == 30 and computed["error"].notna().sum() == 10
        result.to_parquet(tmp_path / "result")
        joined = bd.join(ddf, result)
        joined.to_parquet(tmp_path / "joined")
        expected_join = joined.compute()
    # Read back with pandas (batchnb imported): the same frame, bodies JSON values again
    # (Dask names an unnamed index "__null_dask_index__" in the file).
    back = pd.read_parquet(tmp_path / "result").rename_axis(None)
    pd.testing.assert_frame_equal(back, computed, check_index_type=False)
    assert back["body"].iloc[0]["name"] == "Parquet 0"
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "joined").rename_axis(None), expected_join, check_index_type=False
    )
    # Dask reads the bodies as their JSON text.
    texts = dd.read_parquet(tmp_path / "result").compute()["body"]
    assert json.loads(texts.iloc[0])["name"] == "Parquet 0"


def test_read_csv_keeps_every_cell_as_the_file_says_across_partitions(cluster, tmp_path):
    # Excel's "CSV UTF-8": a byte order mark, ';', CRLF; ids with leading zeros, a quoted newline,
    # and a count left empty in one row only (the whole column is then Int64, in every partition).
    lines = ["id;name;staff;note"]
    for i in range(60):
        note = '"Lyon\r\nentrance B"' if i == 31 else f"note {i}"
        lines.append(f"{i + 1:06d};Site {i};{'' if i == 45 else i % 7};{note}")
    csv = tmp_path / "sites.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    ddf = bd.read_csv(csv, blocksize=300)
    assert ddf.npartitions >= 4
    parts = [ddf.get_partition(k).compute() for k in range(ddf.npartitions)]
    for part in parts:  # every partition has the whole file's types
        pd.testing.assert_series_equal(part.dtypes, ddf._meta.dtypes)
    assert ddf.dtypes["staff"] == "Int64" and ddf._meta["id"].dtype.kind not in "iuf"
    whole = ddf.compute()
    assert whole.index.tolist() == list(range(60))  # the row's number in the file, as one read_csv gives
    assert whole.loc[0, "id"] == "000001" and whole.loc[59, "id"] == "000060"
    assert whole.loc[31, "note"] == "Lyon\r\nentrance B"  # the quoted newline, in one piece
    one = __import__("batchnb").read_csv(csv)
    pd.testing.assert_frame_equal(whole, one.astype(whole.dtypes.to_dict()), check_index_type=False)
    assert whole.astype(object).equals(one.astype(object))
    # Problems name the file's line, as one read_csv would, before any task runs.
    csv.write_bytes(b"id;name\n1;a\n2;b;extra\n")
    with pytest.raises(BatchValidationError) as err:
        bd.read_csv(csv)
    assert err.value.problems[0].pointer == "sites.csv, line 3"


def test_read_csv_then_submit_then_parquet_round_trips(cluster, tmp_path):
    csv = tmp_path / "staff.csv"
    rows = "".join(f'{i:06d},"Name {i}\nline two"\n' for i in range(1, 41))
    csv.write_text("code,name\n" + rows)
    staff = bd.read_csv(csv, blocksize=200)
    assert staff.npartitions > 1
    with WatchedServer() as server:
        result = bd.submit(
            staff,
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            client=cluster,
        )
        joined = bd.join(staff, result)
        joined.to_parquet(tmp_path / "out")
        expected = joined.compute()
        sent = sorted(op["body"]["name"] for b in server.bodies for op in b["requests"])
    assert sent == sorted(f"Name {i}\nline two" for i in range(1, 41))  # each cell reached the API whole
    back = pd.read_parquet(tmp_path / "out").rename_axis(None)
    pd.testing.assert_frame_equal(back, expected, check_index_type=False)
    assert back.loc[0, "code"] == "000001" and back["ok"].all()


def test_the_guides_dask_example_runs_on_a_local_cluster(cluster, tmp_path):
    guide = (Path(__file__).parents[1] / "docs" / "dask.md").read_text(encoding="utf-8")
    example = guide.split("```python\n", 1)[1].split("```", 1)[0]
    from batchnb import LocalServer

    with LocalServer(tmp_path / "demo.sqlite3") as server:
        company = server.client.submit(
            pd.DataFrame({"name": ["Acme"]}), method="POST", path=CO, body=["name"], progress=False
        )
        company_id = company["body"].iloc[0]["id"]
        people = "".join(f'{company_id},{i:04d},"Doe\n{i}"\n' for i in range(1, 61))
        (tmp_path / "staff.csv").write_text("company_id,firstName,lastName\n" + people)
        credentials = server.credentials()
        code = (
            example.replace('"tcp://scheduler.example:8786"', repr(cluster.scheduler.address))
            .replace('"/shared/staff.csv"', repr(str(tmp_path / "staff.csv")))
            .replace('"https://api.example"', repr(server.url))
            .replace("token=TOKEN", f"api_key={credentials['api_key']!r}, token=TOKEN")
            .replace('"/shared/runs/staff"', repr(str(tmp_path / "runs" / "staff")))
            .replace('"/shared/results/staff"', repr(str(tmp_path / "results" / "staff")))
        )
        assert "/shared/" not in code and ".example" not in code, code
        namespace = {"TOKEN": credentials["token"]}
        try:
            exec(compile(code, "docs/dask.md", "exec"), namespace)
        finally:
            if "dask_client" in namespace:
                namespace["dask_client"].close()
        assert count(tmp_path / "demo.sqlite3", "staff") == 60
    written = pd.read_parquet(tmp_path / "results" / "staff")
    assert len(written) == 60 and written["ok"].all() and written["status"].eq(201).all()
    assert written["firstName"].iloc[0] == "0001" and written["lastName"].iloc[0] == "Doe\n1"
    assert written["body"].iloc[0]["lastName"] == "Doe\n1"


def test_read_csv_reads_excels_files_as_batchnb_read_csv_does(tmp_path):
    """Excel's sep= line, blank rows and Windows-1252 text: every partition as one bn.read_csv reads them."""
    import warnings

    import batchnb as bn

    path = tmp_path / "excel.csv"
    lines = ["sep=;", "code;name"] + [f"{i:06d};Bœuf {i}" if i % 7 else ";" for i in range(1, 400)]
    path.write_bytes("\r\n".join(lines).encode("cp1252") + b"\r\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bn.frames.SkippedRowsWarning)
        expected = bn.read_csv(path, encoding="cp1252")
        ddf = bd.read_csv(path, encoding="cp1252", blocksize=1000)
    assert ddf.npartitions > 2
    got = ddf.compute(scheduler="sync")
    assert got["code"].tolist() == expected["code"].tolist() and got["name"].tolist() == expected["name"].tolist()
    assert got["code"].iloc[0] == "000001" and got["name"].iloc[0] == "Bœuf 1" and len(got) == 399 - 57


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


# ---------------------------------------------------------------- what a submit leaves on the cluster


def _published(client: distributed.Client) -> dict[str, list[str]]:
    """The names of what batchnb put on the scheduler and the workers: plugins, variables, semaphores."""

    def on_scheduler(dask_scheduler):
        return {
            "plugins": [n for n in dask_scheduler.worker_plugins if "batchnb" in n],
            "variables": [n for n in dask_scheduler.extensions["variables"].variables if "batchnb" in str(n)],
            "semaphores": [n for n in dask_scheduler.extensions["semaphores"].max_leases if "batchnb" in str(n)],
        }

    found = client.run_on_scheduler(on_scheduler)
    on_workers = client.run(lambda dask_worker: [n for n in dask_worker.plugins if "batchnb" in n])
    found["worker plugins"] = sorted({n for names in on_workers.values() for n in names})
    return found


NOTHING = {"plugins": [], "variables": [], "semaphores": [], "worker plugins": []}


def test_a_submit_not_waited_for_removes_its_credentials_and_limits_when_it_ends(cluster, tmp_path):
    import hashlib

    with WatchedServer(hold=lambda n, body: n == 1) as server:
        result = bd.submit(
            dd.from_pandas(names_frame(40, "Cleaned"), npartitions=2),
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            rate=100,
            batch_rate=50,
            client=cluster,
            wait=False,
        )
        wait_until(server.holding.is_set, 30, "no batch reached the server")
        during = _published(cluster)
        # While it runs: the credentials' plugin, the backoff, the limits; named by a random id, not by
        # a digest of the URL and the credentials (a guess list would find the token from it).
        guessable = hashlib.sha256(f"{server.url}|demo|{server.token}".encode()).hexdigest()[:16]
        names = [n for kind in during.values() for n in kind]
        assert during["plugins"] and during["variables"] and len(during["semaphores"]) == 3, during
        assert not [n for n in names if guessable in n], names
        server.release()
        distributed.wait(distributed.futures_of(result), timeout=60)
        assert result.compute()["ok"].all()
        wait_until(lambda: _published(cluster) == NOTHING, 30, "what the submit published is still there")


def test_a_submit_waited_for_leaves_nothing(cluster, tmp_path):
    with WatchedServer() as server:
        bd.submit(
            dd.from_pandas(names_frame(10, "Waited"), npartitions=2),
            server.url,
            api_key="demo",
            token=server.token,
            method="POST",
            path=CO,
            body=["name"],
            journal=tmp_path / "j",
            client=cluster,
        )
        assert _published(cluster)["plugins"] == []  # the token is gone when submit returns
        wait_until(lambda: _published(cluster) == NOTHING, 30, "what the submit published is still there")
        assert server.count() == 10


def test_a_password_in_the_url_stays_out_of_the_task_graph(cluster, tmp_path):
    password = "S3cretPassw0rd"
    with WatchedServer(hold=lambda n, body: n == 1) as server:
        result = bd.submit(
            dd.from_pandas(names_frame(4, "UrlSecret"), npartitions=2),
            server.url.replace("http://", f"http://alice:{password}@"),
            method="GET",
            path=CO,
            name=False,
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
    assert specs and not any(password.encode() in spec for spec in specs)
