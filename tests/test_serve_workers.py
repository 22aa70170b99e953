"""The end-to-end suite again, against `batchnb serve --workers 2`: two server processes, one SQLite file.

The tests are test_server.py's own (imported here, so they run a second time
with this module's fixtures): the same batches, statuses and database
writes, whichever process takes each request.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchnb import AsyncClient, Client
from tests.support import free_port, stop, wait_for_http, wait_until
from tests.test_server import (  # noqa: F401 - collected here, against two processes
    test_400_with_pointers,
    test_401_without_or_with_wrong_credentials_runs_nothing,
    test_413_for_count_depth_and_size,
    test_415_for_other_media_types,
    test_a_keyed_operation_sent_twice_runs_once_and_its_repeat_says_so,
    test_bad_third_operation_creates_nothing,
    test_chain_of_424s,
    test_chained_example_carries_the_created_company_id,
    test_created_rows_are_in_the_database,
    test_limits_endpoint,
    test_nested_example,
    test_per_operation_credentials,
    test_query_parameter_credentials,
    test_raw_json_with_plain_httpx_is_wire_compatible,
    test_three_services_and_mixed_examples,
)

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


class Served:
    """`batchnb serve --workers 2` as the tests see a LocalServer: url, db, tenants' credentials, clients."""

    def __init__(self, tmp: Path, *flags: str) -> None:
        self.flags = flags
        self.db = tmp / "workers.sqlite3"
        self.tenants = ("demo", "other")
        self._credentials = {key: secrets.token_urlsafe(12) for key in self.tenants}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tmp / "serve-workers.log"

    @contextlib.contextmanager
    def running(self) -> Iterator[Served]:
        env = {**os.environ, "BATCHNB_CREDENTIALS": json.dumps(self._credentials), "PYTHONUNBUFFERED": "1"}
        with self._log.open("w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "batchnb.cli",
                    "serve",
                    "--workers",
                    "2",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db),
                    "--log-level",
                    "warning",
                    *self.flags,
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = proc.pid
        try:
            wait_for_http(self.url + "/api/2.3/batch", proc, 60, self._log.read_text)
            yield self
        finally:
            stop(proc, signal.SIGTERM, 20)

    def credentials(self, api_key: str | None = None) -> dict[str, str]:
        key = api_key or self.tenants[0]
        return {"api_key": key, "token": self._credentials[key]}

    @property
    def client(self) -> Client:
        return Client(self.url, **self.credentials())

    def client_for(self, api_key: str, **options: Any) -> Client:
        return Client(self.url, **self.credentials(api_key), **options)

    def async_client(self, api_key: str | None = None, **options: Any) -> AsyncClient:
        return AsyncClient(self.url, **self.credentials(api_key), **options)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with Served(tmp_path_factory.mktemp("workers")).running() as served:
        yield served


@pytest.fixture()
def fresh_server(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path).running() as served:
        yield served


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_two_server_processes_serve_one_database(server: Served) -> None:
    import httpx

    # uvicorn's supervisor, and under it the two processes that answer.
    workers = [pid for pid in children(server.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2, children(server.pid)
    answers = {
        httpx.get(server.url + "/api/2.3/batch", headers={"Connection": "close"}).json()["maxRequests"]
        for _ in range(20)
    }
    assert answers == {50}


CO = "/api/2.1/scheduling/companies"


def _write_locked(db: Path) -> bool:
    """Whether some connection holds the SQLite file's write lock right now."""
    conn = sqlite3.connect(db, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def test_a_batch_filling_in_references_leaves_the_write_lock_to_the_other_worker(tmp_path: Path) -> None:
    """A batch wrote, then fills in references for seconds: the other process's writes go on meanwhile.

    The batch's work is bounded by time only here (a budget larger than
    its deadline allows), so that it is still filling in when the others write.
    """
    import httpx

    with Served(tmp_path, "--max-batch-work", str(10**9), "--batch-timeout", "6").running() as served:
        headers = {"Authorization": f"Bearer {served.credentials()['token']}"}
        url = served.url + "/api/2.3/batch"
        seed = [{"method": "POST", "path": CO, "body": {"name": "x" if i == 0 else f"c{i}"}} for i in range(50)]
        assert httpx.post(url, json={"requests": seed}, headers=headers, timeout=30).status_code == 200
        ref = "${result=L:$..[?@=='x']}"
        heavy = {
            "requests": [
                {"method": "POST", "path": CO, "body": {"name": "held"}},
                {"method": "GET", "path": CO + "?limit=1000", "name": "L"},
                {"method": "POST", "path": CO, "body": {"name": "n", "tags": [ref] * 20_000}},
            ]
        }
        answers: list[httpx.Response] = []
        batch = threading.Thread(
            target=lambda: answers.append(httpx.post(url, json=heavy, headers=headers, timeout=60)), daemon=True
        )
        batch.start()
        # The batch has written: its row is committed (handed on), or its transaction holds the lock.
        wait_until(
            lambda: (
                _write_locked(served.db)
                or sqlite3.connect(served.db)
                .execute("SELECT count(*) FROM companies WHERE name = 'held'")
                .fetchone()[0]
            ),
            20,
            "the batch did not write",
        )
        assert batch.is_alive(), "the batch ended before the others wrote: nothing was shown"
        # Another process (this one) gets the lock within a generous bound: the hold limit is 50 ms.
        other = sqlite3.connect(served.db, timeout=2.0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()
        # And so does a write through the server, whichever worker takes it.
        r = httpx.post(
            url,
            json={"requests": [{"method": "POST", "path": CO, "body": {"name": "meanwhile"}}]},
            headers={**headers, "Connection": "close"},
            timeout=3.0,
        )
        assert r.status_code == 200 and r.json()["responses"][0]["status"] == 201, r.text[:300]
        batch.join(60)
        assert answers, "the batch got no answer"
        statuses = [x["status"] for x in answers[0].json()["responses"]]
        assert statuses == [201, 200, 503], statuses  # ran out of time while filling in, as its deadline said
