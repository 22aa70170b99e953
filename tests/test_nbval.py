"""The nbval sanitizer that ships with batchnb, on a notebook a user writes: its stored outputs pass run after run
under the CI line of the guide (docs/regression-tests.md), and a status the API changed fails the cell that shows it."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbval.plugin import get_sanitize_patterns

from batchnb.testing import sanitize_config
from tests.support.faults import RecordingUpstream, Reply

#: the line the guide (docs/regression-tests.md) gives for CI, word for word.
CI_LINE = 'pytest --nbval --nbval-sanitize-with "$(batchnb sanitize-config)" notebooks/'
BIN = str(Path(sys.executable).parent)

CELLS = [
    # The demo API on the embedded server: a free port, a temporary database, ids it makes up.
    """import os
import pandas as pd
import batchnb as bn

API = "/api/2.1/scheduling/companies"
server = bn.LocalServer(limits=bn.Limits(max_requests=4)).start()
server""",
    "client = server.client\nclient",
    # Two batches, so the progress bar shows; one row the API refuses.
    """sites = pd.DataFrame({"site": ["lyon", "nantes", "lille", "brest", "metz", "nice"],
                      "name": ["Lyon", "Nantes", "Lille", "", "Metz", "Nice"]})
result = client.submit(sites, method="POST", path=API, name="co-{site}", body=["name"])
result.batchnb.report()""",
    'result.drop(columns="duration")',
    "result.batchnb.stable()",
    'print(client.submit(bn.Batch([bn.Operation("GET", API + "?limit=2", name="two")])))',
    # The team's own API (no batch endpoint: direct mode): UUIDs and creation times.
    """team = bn.Client(os.environ["TEAM_API"], mode="direct")
orders = pd.DataFrame({"item": ["tea", "coffee", "oolong leaves"]})
placed = team.submit(orders, method="POST", path="/orders", body=["item"], progress=False)
placed[["status", "body", "error"]]""",
    'placed.batchnb.stable()[["status", "body", "error"]]',
    "server.stop()",
]
TEAM_CELLS = (6, 7)


def team_api(max_item: int) -> RecordingUpstream:
    """The team's API: orders get a UUID and a creation time; items longer than ``max_item`` are refused."""

    def respond(request):
        item = json.loads(request.body)["item"]
        if len(item) > max_item:
            return Reply(
                422, {"error": {"message": "Validation failed", "details": [{"field": "item", "message": "too long"}]}}
            )
        now = datetime.datetime.now(datetime.UTC).isoformat()
        return Reply(201, {"id": str(uuid.uuid4()), "item": item, "createdAt": now})

    return RecordingUpstream(respond)


def _nbval(folder: Path, api: str, line: str = CI_LINE) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEAM_API": api, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    return subprocess.run(
        ["bash", "-c", line + " -p no:cacheprovider -p no:randomly"],
        cwd=folder.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _failed_cells(output: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"^FAILED \S+::Cell (\d+)", output, re.M)})


@pytest.mark.slow
def test_a_users_notebook_passes_twice_and_fails_on_a_changed_status(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with team_api(max_item=40) as api:
        monkeypatch.setenv("TEAM_API", api.url)
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    path = notebooks / "orders.ipynb"
    nbformat.write(nb, path)
    stored = path.read_text(encoding="utf-8")
    assert "co_" in stored and "op/s" in stored and " ms" in stored and "createdAt" in stored  # what changes is there

    for attempt in (1, 2):
        with team_api(max_item=40) as api:
            run = _nbval(notebooks, api.url)
        assert run.returncode == 0, f"run {attempt}:\n{run.stdout[-6000:]}"
        assert f"{len(CELLS)} passed" in run.stdout

    # Without the sanitizer the same notebook fails on what batchnb prints that changes: that is what the file is
    # for. Ports, temporary files and ids always change; durations almost always (two sub-millisecond runs may
    # print the same). The stable views (cells 4 and 7) pass even so: showing one is a regression check by itself.
    with team_api(max_item=40) as api:
        bare = _nbval(notebooks, api.url, "pytest --nbval notebooks/")
    assert bare.returncode == 1
    assert {0, 1, 3, 6} <= set(_failed_cells(bare.stdout)) <= {0, 1, 2, 3, 5, 6}, bare.stdout[-6000:]

    # The API changed: a long item is now refused. The cells that show statuses fail, and only they.
    with team_api(max_item=10) as api:
        changed = _nbval(notebooks, api.url)
    assert changed.returncode == 1
    assert _failed_cells(changed.stdout) == list(TEAM_CELLS), changed.stdout[-6000:]
    assert "422" in changed.stdout
    assert path.read_text(encoding="utf-8") == stored  # nbval compares; it never rewrites


@pytest.mark.slow
def test_the_command_prints_the_path_or_the_rules():
    path = subprocess.run(
        [sys.executable, "-m", "batchnb.cli", "sanitize-config"], capture_output=True, text=True, check=True
    ).stdout
    assert Path(path.strip()) == sanitize_config() and sanitize_config().is_file()
    shown = subprocess.run(
        [sys.executable, "-m", "batchnb.cli", "sanitize-config", "--show"], capture_output=True, text=True, check=True
    ).stdout
    assert shown == sanitize_config().read_text(encoding="utf-8")


def test_the_file_ships_with_the_package():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert sanitize_config().name in project["tool"]["setuptools"]["package-data"]["batchnb"]
    assert sanitize_config().parent == Path(__import__("batchnb").__file__).resolve().parent
    # Our own notebooks use it and no private one.
    addopts = project["tool"]["pytest"]["ini_options"]["addopts"]
    assert "--nbval-sanitize-with batchnb/nbval-sanitize.cfg" in addopts
    assert not list((Path(__file__).parents[1] / "notebooks").glob("*.cfg"))


def _sanitize(text: str) -> str:
    for regex, replace in get_sanitize_patterns(sanitize_config().read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(
    "printed, sanitized",
    [
        (
            "LocalServer(running at http://127.0.0.1:41235, db='/tmp/batchnb-r6zszz_f/demo.sqlite3', 2 tenants)",
            "LocalServer(running at http://127.0.0.1:PORT, db='TMPDIR/demo.sqlite3', 2 tenants)",
        ),
        (
            "Client('http://localhost:8000', token ***, mode='batch')",
            "Client('http://localhost:PORT', token ***, mode='batch')",
        ),
        ("{'id': 'co_4ba06eb22da7', 'companyId': 'co_4ba...", "{'id': 'co_ID', 'companyId': 'co_ID..."),
        ("/companies/sv_dfd09fabcdbf/staff/st_1fecf072f699", "/companies/sv_ID/staff/st_ID"),
        (
            "3 operations, 0 not ok (201: 3); duration total 11.00 ms, p50 0.30 ms, p95 10.42 ms",
            "3 operations, 0 not ok (201: 3); duration total N ms, p50 N ms, p95 N ms",
        ),
        (
            "[<Response two GET /api/2.1/scheduling/companies?limit=2 → 200 12.3ms>]",
            "[<Response two GET /api/2.1/scheduling/companies?limit=2 → 200 Nms>]",
        ),
        ("batchnb:  50%|█████     | 3/6 [00:01<00:01, 2.91op/s]", "batchnb:  50%|█████     | 3/6 [ELAPSED]"),
        (
            "{'id': '4f6c1f2e-1d3a-4b8e-9a51-2c7d9e0f3b11', 'at': '2026-11-29T05:51:17.283091+00:00'}",
            "{'id': 'UUID', 'at': 'TIMESTAMP'}",
        ),
        ("{'id': '4f6c1f2e-1d3a-4b8e-9a...", "{'id': 'UUID..."),
    ],
)
def test_what_changes_is_replaced(printed, sanitized):
    assert _sanitize(printed) == sanitized


@pytest.mark.parametrize(
    "printed",
    [
        "201 Created: 3 rows, 0.5 of them, 12.5 EUR, version 2.3",  # numbers that are data stay
        "co_add, co_1234 and sv_short are names",  # not ids: too short, not cut by a table
        "opening on 2026-12-01, batch 4 of 12",  # a date alone, counts
        "/api/2.1/scheduling/companies?limit=1000",  # paths and query strings
        "duration 12.5 s, 300 ms timeout",  # not batchnb's format for a duration
    ],
)
def test_what_is_data_stays(printed):
    assert _sanitize(printed) == printed


def test_every_id_the_demo_api_makes_is_replaced():
    from batchnb.demo._store import ID_PREFIXES, new_id

    for kind, prefix in ID_PREFIXES.items():
        assert _sanitize(f"made {new_id(kind)}.") == f"made {prefix}_ID."
