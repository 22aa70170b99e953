"""What a user's type checker sees: batchnb ships ``py.typed``, so its annotations must catch a user's mistakes.

A script written as an analyst would write it, with deliberate mistakes each
marked ``# MISTAKE``, is checked by mypy against the package: every marked
line must be reported, and no other line of the script.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SCRIPT = """\
import pandas as pd

import batchnb as bn

df = pd.DataFrame({"name": ["Riverside", "Lakeside"]})
with bn.LocalServer() as server:
    client = server.client
    result = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
    print(result.loc[result["ok"], "status"])
    client.submit(df, methd="POST", path="/api/2.1/scheduling/companies")  # MISTAKE: no such argument
    client.submit(df, method="POST", path="/x", concurrency="four")  # MISTAKE: a number of batches
    plan = client.plan(df, method="POST", path="/api/2.1/scheduling/companies")
    print(plan.calls)
    print(plan.loc[0])  # MISTAKE: a plan is not a frame
    dry = client.submit(df, method="POST", path="/x", dry_run=True)
    print(dry.batches)
    responses = client.submit(bn.Batch([bn.Operation("GET", "/api/2.1/scheduling/companies")]))
    print(responses[0].status)
    print(responses.loc[0])  # MISTAKE: a batch answers a list of responses
    bn.Client("https://api.example", timeout="10")  # MISTAKE: seconds are a number
operations = bn.from_frame(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
print(operations[0].method.upper())
bn.read_csv(42)  # MISTAKE: a path or a file, not a number
"""


def test_a_users_checker_reports_each_mistake_and_nothing_else(tmp_path: Path) -> None:
    script = tmp_path / "analysis.py"
    script.write_text(SCRIPT, encoding="utf-8")
    expected = {n for n, line in enumerate(SCRIPT.splitlines(), 1) if "# MISTAKE" in line}
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache")]
    run = subprocess.run([*command, str(script)], capture_output=True, text=True, timeout=600)
    reported = {int(m[1]) for m in re.finditer(r"analysis\.py:(\d+): error:", run.stdout)}
    assert reported == expected, f"mistakes on lines {sorted(expected)}; mypy reported:\n{run.stdout}{run.stderr}"
