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
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pandas as pd
import pytest

import batchnb

sys.path.insert(0, str(Path(__file__).parent))  # the helper lives beside the tests, not in a package
from faults import FaultyBatchServer, wait_until

CO = "/api/2.1/scheduling/companies"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BATCHNB_API_KEY": "demo", "BATCHNB_TOKEN": token},
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/api/2.3/batch", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    assert wait_until(up, timeout=20) and proc.poll() is None, (tmp_path / "serve.log").read_text()
    yield {"proc": proc, "url": url, "db": db, "token": token}
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    log.close()


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
                    r = http.post(serve["url"] + "/api/2.3/batch", content=json.dumps({"requests": ops}), headers=headers)
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
    assert not failures, failures
    assert len(acknowledged) >= 100 * 50
    assert integrity(serve["db"]) == [("ok",)]
    with sqlite3.connect(serve["db"]) as conn:
        stored = {row[0] for row in conn.execute("select id from companies")}
    missing = [i for i in acknowledged if i not in stored]
    assert not missing, f"{len(missing)} operations answered 201 are not in the database"


# ---------------------------------------------------------------- the client killed and resumed

CLIENT = r"""
import os, pandas as pd, batchnb
n = int(os.environ["ROWS"])
col = os.environ["COLUMN"]
df = pd.DataFrame({col: [f"{os.environ['PREFIX']}-{i}" for i in range(n)]}, index=[f"r{i}" for i in range(n)])
client = batchnb.Client(os.environ["URL"], api_key=os.environ.get("KEY") or None, token=os.environ["TOKEN"], concurrency=int(os.environ["CONC"]))
rate = float(os.environ["RATE"]) or None
client.submit(df, method="POST", path=os.environ["OP_PATH"], body=[col], journal=os.environ["JOURNAL"], progress=False, rate=rate)
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


def run_client_and_kill(env: dict[str, str], journal: Path, when: Any, timeout: float = 60) -> tuple[dict[int, list[str]], set[int]]:
    proc = subprocess.Popen([sys.executable, "-c", CLIENT], env={**os.environ, **env, "JOURNAL": str(journal)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            sent, done = journal_events(journal)
            if when(sent, done):
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"the client ended before it could be killed: {out[-2000:]}")
            assert time.monotonic() < deadline, "the client made no progress"
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return journal_events(journal)


def test_client_killed_between_batches_resumes_to_all_ok_with_no_duplicate(tmp_path: Path) -> None:
    rows, journal = 2000, tmp_path / "run.jsonl"
    with batchnb.LocalServer(tmp_path / "demo.sqlite3") as server:
        creds = server.credentials("demo")
        env = {"URL": server.url, "KEY": creds["api_key"], "TOKEN": creds["token"], "ROWS": str(rows), "PREFIX": "resume",
               "COLUMN": "name", "OP_PATH": CO, "CONC": "2", "RATE": "20"}
        # Killed at a quiet moment: some batches done, none in flight.
        sent, done = run_client_and_kill(env, journal, lambda s, d: len(d) >= 6 and set(s) == d)
        in_flight = {key for b, keys in sent.items() if b not in done for key in keys}
        assert 6 <= len(done) < rows // 50, f"not killed mid-run: {len(done)} batches done"

        df = frame_of(rows, "resume", "name")
        result = server.client.submit(df, method="POST", path=CO, body=["name"], journal=str(journal), resume=True, progress=False)
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
    assert not in_flight, f"{len(in_flight)} rows were in flight at the kill (checked above, but the kill should land between batches)"


def test_client_killed_with_a_batch_in_flight_never_resends_it(tmp_path: Path) -> None:
    rows, journal = 600, tmp_path / "run.jsonl"
    with FaultyBatchServer(weights={"ok": 1}, answer_delay=0.4) as server:
        env = {"URL": server.url, "TOKEN": "t", "ROWS": str(rows), "PREFIX": "k", "COLUMN": "key",
               "OP_PATH": "/items", "CONC": "1", "RATE": "0"}
        # Killed while the server sits on a batch it has already run.
        sent, done = run_client_and_kill(
            env, journal, lambda s, d: len(d) >= 3 and len(set(s) - d) == 1 and server.batches_received == len(s)
        )
        in_flight = {key for b, keys in sent.items() if b not in done for key in keys}
        assert len(in_flight) == 50 and server.batches_received == len(sent)
        df = frame_of(rows, "k", "key")

        async def resume() -> pd.DataFrame:
            async with batchnb.AsyncClient(server.url, token="t") as client:
                return await client.submit(df, method="POST", path="/items", body=["key"], journal=str(journal), resume=True, progress=False)

        result = asyncio.run(asyncio.wait_for(resume(), 60))
        for label, key in df["key"].items():
            runs = server.executions[("POST", key)]
            assert runs == 1 or (runs == 0 and json.dumps(label) not in in_flight), (label, runs)
            row = result.loc[label]
            if json.dumps(label) in in_flight:
                assert pd.isna(row["status"]) and str(row["error"]).startswith("outcome unknown"), (label, row["status"], row["error"])
            else:
                assert row["status"] == 201, (label, row["status"], row["error"])
