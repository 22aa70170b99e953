"""Schemathesis against a real ``batchnb serve``: every check, positive and negative data, the stateful phase, 0 failures.

The document it reads is the one the server answers (``GET /api/2.3/openapi.json``):
the batch endpoint and the demo Scheduling API, with links from each
resource's creation to its read, update and delete. What no schema can say
(a name unique in a batch, a service that must exist, …) is told to
Schemathesis in :mod:`tests.support.schemathesis_hooks`, which drops only the
failures whose answer is that rule's refusal and counts them.

By hand, against a server of your own (``batchnb serve`` in another shell)::

    SCHEMATHESIS_HOOKS=tests.support.schemathesis_hooks python -m schemathesis.cli \\
        --config-file tests/support/schemathesis.toml run http://127.0.0.1:8000/api/2.3/openapi.json \\
        --checks all -H "Authorization: Bearer demo-token" --max-examples 30 --seed 20
"""

from __future__ import annotations

import collections
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port, stop, wait_for_http
from tests.support.schemathesis_hooks import DROPPED_VARIABLE

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "support" / "schemathesis.toml"
#: examples per operation and phase: about two minutes on two cores. More by hand: BATCHNB_SCHEMATHESIS_EXAMPLES.
EXAMPLES = os.environ.get("BATCHNB_SCHEMATHESIS_EXAMPLES", "30")
#: a fixed seed, so that CI runs the same cases each time (BATCHNB_SCHEMATHESIS_SEED to try others).
SEED = os.environ.get("BATCHNB_SCHEMATHESIS_SEED", "20")


@pytest.mark.timeout(1500)
def test_schemathesis_finds_no_failure_against_a_real_server(tmp_path: Path) -> None:
    port = free_port()
    key, token = f"key{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "batchnb.cli", "serve", "--port", str(port), "--db", str(tmp_path / "demo.sqlite3")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BATCHNB_API_KEY": key, "BATCHNB_TOKEN": token},
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    dropped = tmp_path / "dropped.tsv"
    try:
        wait_for_http(url + "/api/2.3/openapi.json", server, 30, log.read_text)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "--no-color",
                "run",
                url + "/api/2.3/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {token}",
                "--max-examples",
                EXAMPLES,
                "--seed",
                SEED,
                "--generation-database",
                "none",
            ],
            # Its working files go to the test's own folder; the hooks are imported from the repository.
            cwd=tmp_path,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
                DROPPED_VARIABLE: str(dropped),
            },
            capture_output=True,
            text=True,
            timeout=1400,
        )
    finally:
        stop(server)
    counted = (
        collections.Counter(line.split("\t")[0] for line in dropped.read_text().splitlines())
        if dropped.exists()
        else {}
    )
    excused = "\n".join(f"  {n:5d}  {reason}" for reason, n in sorted(counted.items(), key=lambda kv: -kv[1]))
    report = f"{run.stdout[-20000:]}\n{run.stderr[-5000:]}\nfailures excused by the hooks:\n{excused}"
    print(report)
    assert run.returncode == 0, (
        f"Schemathesis failed (exit {run.returncode}):\n{report}\nserver log:\n{log.read_text()[-3000:]}"
    )
    assert "Test cases:" in run.stdout and " passed" in run.stdout, report
