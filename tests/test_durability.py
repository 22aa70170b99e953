"""What survives a kill -9: of the server (the SQLite file) and of the client (its journal).

The server promises that an operation answered 201 is on disk; the client
promises that a journalled run resumed after a crash sends every row at
most once and says "outcome unknown" where it cannot know. Both are checked
with real processes killed with SIGKILL, never a polite shutdown.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import batchnb
from tests.support import free_port, wait_for_http
from tests.support.faults import FaultyBatchServer

CO = "/api/2.1/scheduling/companies"


def integrity(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def test_demo_store_uses_wal(tmp_path: Path) -> None:
    with batchnb.LocalServer(tmp_path / "demo.sqlite3") as server:
        server.client.send(batchnb.Batch([batchnb.Operation("POST", CO, {"name": "x"})]))
        with sqlite3.connect(server.db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert (tmp_path / "demo.sqlite3-wal").exists()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``batchnb serve`` in a subprocess, credentials through the environment."""
    port, token = free_port(), "durability-token"
    db = tmp_path / "served.sqlite3"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchnb.cli", "serve", "--db", str(db), "--port", str(port), "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "BATCHNB_API_KEY": "demo", "BATCHNB_TOKEN": token},
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/api/2.3/batch", proc, 20, (tmp_path / "serve.log").read_text)
    yield {"proc": proc, "url": url, "db": db, "token": token}
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    log.close()


@pytest.mark.slow
def test_server_killed_mid_stream_keeps_every_acknowledged_write(serve: dict[str, Any]) -> None:
    acknowledged: list[str] = []
    failures: list[str] = []
    answered = threading.Semaphore(0)
    lock = threading.Lock()
    stop = threading.Event()
    headers = {"Authorization": f"Bearer {serve['token']}", "Content-Type": "application/json"}

    def sender(worker: int) -> None:
        with httpx.Client(timeout=10) as http:
            n = 0
            while not stop.is_set():
                ops = [{"method": "POST", "path": CO, "body": {"name": f"w{worker}-{n}-{i}"}} for i in range(50)]
                n += 1
                try:
                    r = http.post(
                        serve["url"] + "/api/2.3/batch", content=json.dumps({"requests": ops}), headers=headers
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:300]}")
                    return
                with lock:
                    acknowledged.extend(x["body"]["id"] for x in r.json()["responses"] if x["status"] == 201)
                answered.release()

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(3)]
    for t in threads:
        t.start()
    for _ in range(100):  # well into the stream, with batches in flight on every thread
        assert answered.acquire(timeout=20), f"the server stopped answering before the kill: {failures}"
    serve["proc"].send_signal(signal.SIGKILL)
    serve["proc"].wait(10)
    stop.set()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "a sender was still sending 20 s after the server was killed"
    assert not failures, failures
    assert len(acknowledged) >= 100 * 50
    assert integrity(serve["db"]) == [("ok",)]
    with sqlite3.connect(serve["db"]) as conn:
        stored = {row[0] for row in conn.execute("select id from companies")}
    missing = [i for i in acknowledged if i not in stored]
    assert not missing, f"{len(missing)} operations answered 201 are not in the database"


# ---------------------------------------------------------------- the client killed and resumed
# The client runs in a process of its own and is killed at a moment chosen by
# an event, never by a timer: after it has journalled its Nth answered batch
# (it says so on stdout, then stops), or once the server holds a batch it ran
# and will never answer.

CLIENT = r"""
import os, time, pandas as pd, batchnb
from batchnb._journal import Journal

stop_after = int(os.environ.get("STOP_AFTER_DONE") or 0)
if stop_after:
    write_done, written = Journal.done, []

    def done(self, batch, responses):
        write_done(self, batch, responses)  # the line is written, flushed and synced when this returns
        written.append(batch)
        if len(written) == stop_after:
            print("ready", flush=True)
            time.sleep(3600)  # blocks the event loop: no other batch can start or finish

    Journal.done = done

stop_at_answer = int(os.environ.get("STOP_AT_ANSWER") or 0)
if stop_at_answer:
    from batchnb._senders import BatchEndpoint

    send, answered = BatchEndpoint.__call__, []

    async def call(self, ops):
        reply = await send(self, ops)  # the server ran the batch and answered
        answered.append(reply)
        if len(answered) == stop_at_answer:
            print("ready", flush=True)
            time.sleep(3600)  # the answer never reaches the journal: the batch stays in flight
        return reply

    BatchEndpoint.__call__ = call

n = int(os.environ["ROWS"])
col = os.environ["COLUMN"]
df = pd.DataFrame({col: [f"{os.environ['PREFIX']}-{i}" for i in range(n)]}, index=[f"r{i}" for i in range(n)])
client = batchnb.Client(os.environ["URL"], api_key=os.environ.get("KEY") or None, token=os.environ["TOKEN"], concurrency=1)
client.submit(df, method="POST", path=os.environ["OP_PATH"], body=[col], journal=os.environ["JOURNAL"], progress=False)
print("finished", flush=True)
"""


def frame_of(rows: int, prefix: str, column: str) -> pd.DataFrame:
    return pd.DataFrame({column: [f"{prefix}-{i}" for i in range(rows)]}, index=[f"r{i}" for i in range(rows)])


def journal_events(path: Path) -> tuple[dict[int, list[str]], set[int]]:
    """Batches sent (with their row keys) and batches done, from whole lines only."""
    sent: dict[int, list[str]] = {}
    done: set[int] = set()
    if not path.exists():
        return sent, done
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event["event"] == "send":
            sent[event["batch"]] = event["rows"]
        elif event["event"] == "done":
            done.add(event["batch"])
    return sent, done


def start_client(env: dict[str, str], journal: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT],
        env={**os.environ, **env, "JOURNAL": str(journal)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for_line(proc: subprocess.Popen, line: bytes, timeout: float) -> None:
    """Read the client's output until ``line`` comes; fail if it ends or ``timeout`` passes first."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while line not in seen.splitlines():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(
                f"the client did not print {line!r} within {timeout} s; it printed: {seen[-2000:].decode(errors='replace')}"
            )
        readable, _, _ = select.select([proc.stdout], [], [], left)
        if readable:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait(10)
                pytest.fail(
                    f"the client ended ({proc.returncode}) before printing {line!r}: {seen[-2000:].decode(errors='replace')}"
                )
            seen += chunk


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, f"the client was not killed: it ended with {proc.returncode}"


def kill_when_ready(
    server: batchnb.LocalServer, journal: Path, rows: int, prefix: str, **stop: int
) -> tuple[dict[int, list[str]], set[int]]:
    """A client posting ``rows`` companies to ``server``, killed when it says it reached ``stop``: the journal's (sent, done)."""
    creds = server.credentials("demo")
    env = {
        "URL": server.url,
        "KEY": creds["api_key"],
        "TOKEN": creds["token"],
        "ROWS": str(rows),
        "PREFIX": prefix,
        "COLUMN": "name",
        "OP_PATH": CO,
        **{name.upper(): str(value) for name, value in stop.items()},
    }
    proc = start_client(env, journal)
    try:
        wait_for_line(proc, b"ready", timeout=120)
    finally:
        kill(proc)
    return journal_events(journal)


@pytest.mark.slow
def test_client_killed_between_batches_resumes_to_all_ok_with_no_duplicate(tmp_path: Path) -> None:
    rows, journal, stop_after = 2000, tmp_path / "run.jsonl", 6
    with batchnb.LocalServer(tmp_path / "demo.sqlite3") as server:
        # Killed at a quiet moment: its sixth batch answered and journalled, nothing else sent.
        sent, done = kill_when_ready(server, journal, rows, "resume", stop_after_done=stop_after)
        in_flight = {key for b, keys in sent.items() if b not in done for key in keys}
        assert done == set(range(stop_after)) and set(sent) == done, (sorted(sent), sorted(done))
        assert 6 <= len(done) < rows // 50, f"not killed mid-run: {len(done)} batches done"

        df = frame_of(rows, "resume", "name")
        result = server.client.submit(
            df, method="POST", path=CO, body=["name"], journal=str(journal), resume=True, progress=False
        )
        with sqlite3.connect(server.db) as conn:
            counts = dict(conn.execute("select name, count(*) from companies group by name").fetchall())
    assert list(result.index) == list(df.index)
    twice = {n: c for n, c in counts.items() if c > 1}
    assert not twice, f"created twice: {list(twice)[:5]}"
    for label, name in df["name"].items():
        row = result.loc[label]
        if json.dumps(label) in in_flight:  # the kill fell inside a batch after all: honesty, not success
            assert str(row["error"]).startswith("outcome unknown"), (label, row["status"], row["error"])
            assert counts.get(name, 0) <= 1
        else:
            assert row["ok"] and row["status"] == 201, (label, row["status"], row["error"])
            assert counts.get(name) == 1, name
    assert not in_flight, (
        f"{len(in_flight)} rows were in flight at the kill (checked above, but the kill should land between batches)"
    )


@pytest.mark.slow
def test_client_killed_with_a_batch_in_flight_never_resends_it(tmp_path: Path) -> None:
    rows, journal, held = 600, tmp_path / "run.jsonl", 4
    # The server runs the fourth batch and never answers it.
    with FaultyBatchServer(weights={"ok": 1}, hold_batch=held) as server:
        env = {"URL": server.url, "TOKEN": "t", "ROWS": str(rows), "PREFIX": "k", "COLUMN": "key", "OP_PATH": "/items"}
        proc = start_client(env, journal)
        try:
            assert server.holding.wait(120), f"the server never received batch {held}: {server.batches_received} came"
        finally:
            kill(proc)
        sent, done = journal_events(journal)
        # The journal says the batch left before it was sent: it is the one in flight.
        assert set(sent) == set(range(held)) and done == set(range(held - 1)), (sorted(sent), sorted(done))
        in_flight = {key for b, keys in sent.items() if b not in done for key in keys}
        assert len(in_flight) == 50 and server.batches_received == len(sent)
        df = frame_of(rows, "k", "key")

        async def resume() -> pd.DataFrame:
            async with batchnb.AsyncClient(server.url, token="t") as client:
                return await client.submit(
                    df, method="POST", path="/items", body=["key"], journal=str(journal), resume=True, progress=False
                )

        result = asyncio.run(asyncio.wait_for(resume(), 60))
        for label, key in df["key"].items():
            runs = server.executions[("POST", key)]
            assert runs == 1 or (runs == 0 and json.dumps(label) not in in_flight), (label, runs)
            row = result.loc[label]
            if json.dumps(label) in in_flight:
                assert pd.isna(row["status"]) and str(row["error"]).startswith("outcome unknown"), (
                    label,
                    row["status"],
                    row["error"],
                )
            else:
                assert row["status"] == 201, (label, row["status"], row["error"])


@pytest.mark.slow
def test_client_killed_with_an_answered_batch_in_flight_resumes_exactly_once_with_its_keys(tmp_path: Path) -> None:
    rows, journal, stop_at = 600, tmp_path / "run.jsonl", 4
    with batchnb.LocalServer(tmp_path / "demo.sqlite3") as server:
        # Killed after the server ran the fourth batch and answered, before the client wrote it down.
        sent, done = kill_when_ready(server, journal, rows, "keyed", stop_at_answer=stop_at)
        assert set(sent) == set(range(stop_at)) and done == set(range(stop_at - 1)), (sorted(sent), sorted(done))
        in_flight = set(sent[stop_at - 1])
        with sqlite3.connect(server.db) as conn:
            assert (
                conn.execute("select count(*) from companies").fetchone()[0] == stop_at * 50
            )  # the batch in flight did run

        df = frame_of(rows, "keyed", "name")
        result = server.client.submit(
            df, method="POST", path=CO, body=["name"], journal=str(journal), resume=True, progress=False
        )
        with sqlite3.connect(server.db) as conn:
            counts = dict(conn.execute("select name, count(*) from companies group by name").fetchall())
    assert not {n: c for n, c in counts.items() if c > 1}, "created twice"
    assert len(counts) == rows and result["ok"].all(), result.loc[~result["ok"], ["status", "error"]].head()
    assert not result["error"].fillna("").str.startswith("outcome unknown").any()
    # The batch in flight was sent again with the same keys, and the API answered with its first answers.
    replayed = {json.dumps(label) for label in result.index[result["replayed"]]}
    assert replayed == in_flight
