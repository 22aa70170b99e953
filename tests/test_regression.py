"""batchnb run --expect and --junit, as CI runs them: the real command against a real server, the report parsed as XML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

import batchnb as bn
from batchnb._compare import Difference
from batchnb._regression import write_junit
from tests.support import count

API = "/api/2.1/scheduling/companies"


@pytest.fixture()
def cli(fresh_server, tmp_path):
    """Run ``batchnb run ops.csv`` in ``tmp_path`` against ``fresh_server``, credentials in the environment."""
    credentials = fresh_server.credentials()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "BATCHNB_URL": fresh_server.url,
        "BATCHNB_API_KEY": credentials["api_key"],
        "BATCHNB_TOKEN": credentials["token"],
    }
    pd.DataFrame(
        {
            "method": ["POST", "POST", "GET"],
            "path": [API, API, f"{API}/co_000000000000"],
            "name": ["lyon", "empty", "missing"],
            "body": [json.dumps({"name": "Lyon"}), json.dumps({"name": ""}), ""],
        }
    ).to_csv(tmp_path / "ops.csv", index=False)

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "batchnb.cli", "run", "ops.csv", "-q", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert credentials["token"] not in done.stdout + done.stderr
        return done

    run.token = credentials["token"]  # type: ignore[attr-defined]  # an attribute set on the object by this test
    return run


def _junit(path: Path) -> tuple[ET.Element, list[ET.Element]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0], suites[0].findall("testcase")


@pytest.mark.slow
def test_what_a_good_run_wrote_is_what_the_next_run_is_compared_with(cli, tmp_path):
    first = cli("-o", "expected.csv")
    assert first.returncode == 1, first.stderr  # two rows are not ok, and that is the API's behaviour
    again = cli("--expect", "expected.csv", "--junit", "report.xml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all 3 rows as in expected.csv" in again.stdout
    suite, cases = _junit(tmp_path / "report.xml")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    assert [c.get("name") for c in cases] == ["lyon (row 0)", "empty (row 1)", "missing (row 2)"]
    assert {c.get("classname") for c in cases} == {"ops"} and suite.get("name") == "ops.csv"
    assert all(c.find("failure") is None for c in cases)
    only = cli("-o", "results.csv", "--only-results")
    assert cli("--expect", "results.csv").returncode == 0, only.stderr


@pytest.mark.slow
def test_an_expected_file_written_formula_safe_compares_with_the_texts_themselves(cli, tmp_path):
    # Texts a spreadsheet would run: `-o` writes them with a leading ', and --expect reads them as they were.
    pd.DataFrame(
        {
            "method": ["POST", "POST"],
            "path": [API, API],
            "name": ["a", "b"],
            "body": [json.dumps({"name": "=HYPERLINK(1)"}), json.dumps({"name": "+33 1 23"})],
            "note": ["=SUM(A1)", "'-x"],
        }
    ).to_csv(tmp_path / "ops.csv", index=False)
    assert cli("-o", "expected.csv").returncode == 0
    written = pd.read_csv(tmp_path / "expected.csv", dtype=str, keep_default_na=False)
    assert written["note"].tolist() == ["'=SUM(A1)", "''-x"]
    again = cli("--expect", "expected.csv")
    assert again.returncode == 0, again.stdout + again.stderr
    raw = cli("-o", "raw.csv", "--raw-cells")
    assert raw.returncode == 0 and bn.read_csv(tmp_path / "raw.csv")["note"].tolist() == ["=SUM(A1)", "'-x"]


@pytest.mark.slow
def test_a_status_or_a_field_that_differs_exits_1_with_a_table(cli, tmp_path):
    (tmp_path / "expected.csv").write_text(
        "name,status,$.name\nlyon,201,Lyon\nempty,201,\nmissing,404,\n", encoding="utf-8"
    )
    run = cli("--expect", "expected.csv", "--junit", "report.xml")
    assert run.returncode == 1, run.stderr
    assert run.stdout.split("\n\n")[-1].strip("\n") == (
        "1 of 3 rows differs from expected.csv:\n"
        "  row  name   expected  got  error\n"
        "  1    empty  201       400  400 name: must not be empty"
    )
    suite, cases = _junit(tmp_path / "report.xml")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["empty (row 1)"]
    failure = failed[0].find("failure")
    assert failure.get("message") == "status: expected 201, got 400" and failure.get("type") == "status"
    assert failure.text == "400 name: must not be empty"

    (tmp_path / "fields.csv").write_text(
        "name,status,$.name\nlyon,201,Lyon Sud\nempty,4xx,\nmissing,404,\n", encoding="utf-8"
    )
    run = cli("--expect", "fields.csv")
    assert run.returncode == 1
    assert "  row  name  field   expected  got   error\n  0    lyon  $.name  Lyon Sud  Lyon" in run.stdout


@pytest.mark.slow
def test_an_expected_row_the_run_lacks_is_a_failed_test(cli, tmp_path):
    (tmp_path / "expected.csv").write_text(
        "name,status\nlyon,201\nempty,400\nmissing,404\nparis,201\n", encoding="utf-8"
    )
    run = cli("--expect", "expected.csv", "--junit", "report.xml")
    assert run.returncode == 1 and "  3    paris  a row     no row" in run.stdout
    suite, cases = _junit(tmp_path / "report.xml")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "1")
    assert (
        cases[-1].get("name") == "paris (row 3)"
        and cases[-1].find("failure").get("message") == "row: expected a row, got no row"
    )


@pytest.mark.slow
def test_without_expect_the_junit_report_fails_the_rows_that_are_not_ok(cli, tmp_path):
    run = cli("--junit", "report.xml")
    assert run.returncode == 1
    suite, cases = _junit(tmp_path / "report.xml")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    failures = {c.get("name"): c.find("failure") for c in cases if c.find("failure") is not None}
    assert set(failures) == {"empty (row 1)", "missing (row 2)"}
    assert failures["empty (row 1)"].get("message") == "status: expected 2xx, got 400"
    assert cli.token not in (tmp_path / "report.xml").read_text(encoding="utf-8")  # type: ignore[attr-defined]  # an attribute set on the object by this test


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, said",
    [
        ("name,status\nlyon,created\n", "'created' is not a status"),
        ("name,stauts\nlyon,201\n", "'stauts'"),
        ("name,status,$.[\nlyon,201,x\n", "does not parse"),
        ("", "is empty"),
    ],
)
def test_an_expected_file_that_cannot_be_used_exits_2_and_sends_nothing(cli, fresh_server, tmp_path, content, said):
    (tmp_path / "expected.csv").write_text(content, encoding="utf-8")
    run = cli("--expect", "expected.csv")
    assert run.returncode == 2 and said in run.stderr, run.stderr
    assert count(fresh_server.db) == 0


@pytest.mark.slow
def test_a_report_that_cannot_be_written_exits_2_and_sends_nothing(cli, fresh_server, tmp_path):
    run = cli("--junit", "no/such/dir/report.xml")
    assert run.returncode == 2 and "does not exist" in run.stderr
    assert count(fresh_server.db) == 0


@pytest.mark.slow
def test_a_batch_the_server_refuses_fails_every_row_with_the_reason(tmp_path):
    (tmp_path / "ops.csv").write_text(f"method,path\nGET,{API}\n", encoding="utf-8")
    with bn.LocalServer(tmp_path / "d.sqlite3") as server:
        env = {**os.environ, "BATCHNB_TOKEN": "wrong-token"}
        run = subprocess.run(
            [sys.executable, "-m", "batchnb.cli", "run", "ops.csv", "--url", server.url, "--junit", "report.xml", "-q"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    suite, cases = _junit(tmp_path / "report.xml")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "1", "0")
    failure = cases[0].find("failure")
    assert failure.get("message") == "status: expected 2xx, got none" and "HTTP 401" in failure.text
    assert "wrong-token" not in (tmp_path / "report.xml").read_text(encoding="utf-8")


def test_the_report_holds_any_text_as_valid_xml(tmp_path):
    result = pd.DataFrame(
        {
            "name": ["<a&b>", None],
            "status": [500, 201],
            "ok": [False, True],
            "duration": [1500.0, float("nan")],
            "error": ["bad \x00 byte \x1b and ]]> end", None],
        }
    )
    diffs = [Difference("0", "<a&b>", "status", "2xx", "500", "bad \x00 byte \x1b and ]]> end", 0)]
    write_junit(tmp_path / "r.xml", result, diffs, source="weird name.csv")
    suite, cases = _junit(tmp_path / "r.xml")
    assert [c.get("name") for c in cases] == ["<a&b> (row 0)", "row 1"]
    assert cases[0].get("time") == "1.500" and cases[1].get("time") == "0.000" and suite.get("time") == "1.500"
    assert cases[0].find("failure").text == "bad \ufffd byte \ufffd and ]]> end"


# ---------------------------------------------------------------- field-level differences


class _ChangingAPI:
    """An API whose answers change between runs the way real ones do: one field upper-cased, one field added."""

    def __init__(self) -> None:
        self.upper = self.added = False

    def __call__(self, req):
        import secrets

        from tests.support.faults import Reply

        city = "LYON" if self.upper else "Lyon"
        body = {
            "id": f"ord_{secrets.token_hex(8)}",
            "description": "A long description of this site that no table cell could hold in full. " * 3,
            "address": {"street": "12 rue de la République", "city": city, "zip": "69002"},
            "tags": ["north", "retail"],
        }
        if self.added:
            body["createdBy"] = "api-v2"
        return Reply(201, body)


@pytest.mark.slow
def test_run_expect_names_the_field_that_changed_with_both_values(tmp_path):
    from tests.support.faults import RecordingUpstream

    api = _ChangingAPI()
    (tmp_path / "ops.csv").write_text("name,site\nLyon,north\nBrest,west\n", encoding="utf-8")
    with RecordingUpstream(api) as upstream:

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "batchnb.cli",
                    "run",
                    "ops.csv",
                    "--url",
                    upstream.url,
                    "--direct",
                    "-q",
                    "--method",
                    "POST",
                    "--path",
                    "/orders",
                    "--body-columns",
                    "name",
                    *args,
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        first = run("-o", "expected.csv")
        assert first.returncode == 0, first.stderr
        api.added = True
        same = run("--expect", "expected.csv")
        strict = run("--expect", "expected.csv", "--strict")
        api.upper = True
        changed = run("--expect", "expected.csv", "--junit", "report.xml")
    # A field the API added is not a change, unless asked.
    assert same.returncode == 0 and "all 2 rows as in expected.csv" in same.stdout, same.stdout
    assert strict.returncode == 1 and "$.createdBy  —         'api-v2'" in strict.stdout, strict.stdout
    assert changed.returncode == 1
    table = changed.stdout[changed.stdout.index("2 of 2 rows differ from expected.csv:") :].splitlines()
    assert table[1].split() == ["row", "name", "field", "expected", "got", "error"]
    assert [line.split() for line in table[2:]] == [
        ["0", "Lyon", "$.address.city", "'Lyon'", "'LYON'"],
        ["1", "Brest", "$.address.city", "'Lyon'", "'LYON'"],
    ]
    failures = [f.get("message") for f in ET.parse(tmp_path / "report.xml").getroot().iter("failure")]
    assert failures == ["$.address.city: expected 'Lyon', got 'LYON'"] * 2


def test_assert_result_names_the_field_that_changed_and_ignores_added_ones_unless_strict():
    from batchnb.testing import assert_result
    from tests.support.faults import RecordingUpstream

    api = _ChangingAPI()
    rows = pd.DataFrame({"name": ["Lyon"]})
    with RecordingUpstream(api) as upstream:
        client = bn.Client(upstream.url, mode="direct")

        def submit() -> pd.DataFrame:
            return client.submit(rows, method="POST", path="/orders", body=["name"], progress=False)

        stored = submit()
        api.added = True
        added = submit()
        api.upper = True
        changed = submit()
    assert_result(added, stored)
    with pytest.raises(AssertionError, match=r"\$\.createdBy  —         'api-v2'"):
        assert_result(added, stored, strict=True)
    with pytest.raises(AssertionError) as caught:
        assert_result(changed, stored)
    assert str(caught.value).splitlines()[1:] == [
        "  row  name  field           expected  got     error",
        "  0          $.address.city  'Lyon'    'LYON'",
    ]
