"""A batch's work budget (batchnb._work): one count of units, shared by the threads filling in its references."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchnb import _work
from batchnb._work import OutOfTime, OutOfWork, Slice, Work, spend
from tests.support import free_port, stop, wait_for_http


def test_units_spent_in_metered_blocks_add_up_and_what_is_not_used_goes_back():
    work = Work(10_000)
    for _ in range(4):
        with work.metered():
            spend(1_000)
            spend(1)
    assert work.spent == 4_004 and work.left == 5_996


def test_the_block_that_needs_more_than_is_left_is_refused_and_nothing_is_left_after_it():
    work = Work(3_000)
    with work.metered():
        spend(2_000)
    with pytest.raises(OutOfWork, match="budget of 3000 units is spent"), work.metered():
        spend(1_500)
    assert work.left == 0
    with pytest.raises(OutOfWork), work.metered():
        spend(1)


def test_outside_a_metered_block_nothing_is_counted_or_refused():
    spend(10**12)


def test_threads_share_one_budget():
    work = Work(1_000_000)
    refused: list[int] = []

    def busy() -> None:
        try:
            with work.metered():
                for _ in range(400_000):
                    spend(1)
        except OutOfWork:
            refused.append(1)

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # 1,200,000 units were asked for, 1,000,000 given: one thread at least was refused, and no unit was lost.
    assert refused and work.left == 0


def test_a_stopped_budget_stops_the_work_at_its_next_units():
    work = Work(10**9)
    work.stop()
    with pytest.raises(OutOfTime), work.metered():
        for _ in range(10_000):
            spend(1)


def test_a_deadline_stops_the_work():
    work = Work(10**9, deadline=time.monotonic() - 1)
    with pytest.raises(OutOfTime), work.metered():
        spend(1)


def test_a_slice_ends_the_block_and_gives_back_what_it_spent():
    work = Work(100_000)
    with pytest.raises(Slice), work.metered(slice_units=2_000):
        for _ in range(100_000):
            spend(1)
    assert work.left == 100_000
    with work.metered(slice_units=2_000):
        spend(100)
    assert work.spent == 100


def test_every_cost_is_a_positive_whole_number():
    assert all(isinstance(v, int) and v > 0 for v in _work.COSTS.values())


# ---------------------------------------------------------------- against a real `batchnb serve`

CO = "/api/2.1/scheduling/companies"
BATCH = "/api/2.3/batch"
TOKEN = "work-token"
COSTLY = "${result=L:$..[?@=='x']}"


@contextlib.contextmanager
def _serve(tmp_path: Path, *flags: str) -> Iterator[str]:
    port, log = free_port(), tmp_path / "serve.log"
    env = {**os.environ, "BATCHNB_API_KEY": "work", "BATCHNB_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchnb.cli",
                "serve",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "d.sqlite3"),
                "--log-level",
                "warning",
                *flags,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + BATCH, proc, 30, log.read_text)
        # 200 companies, one named 'x': each costly reference visits them all and finds one value.
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False) as http:
            for start in range(0, 200, 50):
                ops = [
                    {"method": "POST", "path": CO, "body": {"name": "x" if i == 0 else f"c{i}"}}
                    for i in range(start, start + 50)
                ]
                assert http.post(BATCH, json={"requests": ops}, timeout=30).status_code == 200
        yield url
    finally:
        stop(proc, signal.SIGTERM, 20)


def _costly(copies: int) -> dict:
    return {
        "requests": [
            {"method": "GET", "path": CO + "?limit=1000", "name": "L"},
            {"method": "POST", "path": CO, "body": {"name": "n", "tags": [COSTLY] * copies}},
            {"method": "GET", "path": CO + "?limit=1"},
        ]
    }


def _post_in_background(url: str, batch: dict, timeout: float) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def post() -> None:
        answers.append(
            httpx.post(
                url + BATCH, json=batch, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout, trust_env=False
            )
        )

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.slow
def test_800_costly_references_in_one_operation_are_refused_and_the_server_answers_others_meanwhile(tmp_path):
    with _serve(tmp_path) as url:
        batch, answers = _post_in_background(url, _costly(800), timeout=120)
        probes = during = 0
        with httpx.Client(base_url=url, trust_env=False) as probe:
            while batch.is_alive() and probes < 500:
                # A generous bound, not a measure: the loop is never held for more than a few milliseconds.
                assert probe.get(BATCH, timeout=1.0).status_code == 200
                probes += 1
                during += batch.is_alive()
                time.sleep(0.01)
        batch.join(120)
        assert answers, "the batch got no answer"
        out = answers[0].json()["responses"]
        assert [r["status"] for r in out] == [200, 424, 200], [(r["status"], str(r["body"])[:200]) for r in out]
        assert out[1]["body"]["error"]["code"] == "work_budget_spent"
        assert "the batch's work budget of 1000000 units is spent" in out[1]["body"]["error"]["message"]
        assert during, "the batch ended before a probe could be sent: nothing was shown"


@pytest.mark.slow
def test_the_batch_timeout_covers_filling_in_references(tmp_path):
    # The budget is no bound here: 5,000 references cost more than 5 million units, many seconds.
    with _serve(tmp_path, "--batch-timeout", "1", "--max-batch-work", str(10**9)) as url:
        batch, answers = _post_in_background(url, _costly(5_000), timeout=20)
        batch.join(30)
        assert answers, "no answer within 20 s: filling in references went on past the batch's timeout"
        out = answers[0].json()["responses"]
        assert [r["status"] for r in out] == [200, 503, 503], [(r["status"], str(r["body"])[:200]) for r in out]
        assert out[1]["body"]["error"]["code"] == "deadline_exceeded"


def test_serve_refuses_a_budget_of_no_work(tmp_path):
    for value in ("0", "-5", "nan"):
        message = f"must be a whole number, 1 or more, not '{value}'"
        r = subprocess.run(
            [sys.executable, "-m", "batchnb.cli", "serve", "--max-batch-work", value, "--db", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and message in r.stderr and "max-batch-work" in r.stderr.replace("_", "-"), r.stderr
