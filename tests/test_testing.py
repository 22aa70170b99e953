"""batchnb.testing: assertions whose failures read well, and the opt-in pytest fixtures, used from a pytest run of their own."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import batchnb as bn
from batchnb.testing import assert_ok, assert_result, assert_statuses, sanitize_config

pytest_plugins = ["pytester"]

API = "/api/2.1/scheduling/companies"


def _result() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["co-lyon", "co-bad", "co-nantes"],
            "status": pd.array([201, 400, 201], dtype="Int64"),
            "ok": [True, False, True],
            "duration": [0.41, 0.12, 0.33],
            "body": [
                {"id": "co_4ba06eb22da7", "name": "Lyon"},
                {"error": {"message": "bad"}},
                {"id": "co_c447e0a6551a", "name": "Nantes"},
            ],
            "error": [None, "400 name: must not be empty", None],
        }
    )


# ---------------------------------------------------------------- failure messages, exactly


def test_assert_ok_names_the_rows_that_are_not_ok():
    with pytest.raises(AssertionError) as caught:
        assert_ok(_result())
    assert str(caught.value) == (
        "1 of 3 rows not ok:\n"
        "  row  name    expected  got  error\n"
        "  1    co-bad  2xx       400  400 name: must not be empty"
    )


def test_assert_statuses_by_name_and_by_label():
    result = _result()
    assert_statuses(result, {"co-lyon": 201, "co-bad": "4xx", 2: 201})
    assert_statuses(result, pd.Series({"co-bad": 400}))
    with pytest.raises(AssertionError) as caught:
        assert_statuses(result, {"co-lyon": 200, 1: 201, "co-gone": 201, 2: "2xx"})
    assert str(caught.value) == (
        "3 of 4 statuses not as expected:\n"
        "  row      name     expected  got     error\n"
        "  0        co-lyon  200       201\n"
        "  1        co-bad   201       400     400 name: must not be empty\n"
        "  co-gone           201       no row"
    )


def test_assert_statuses_for_an_operation_that_did_not_run():
    result = pd.DataFrame(
        {"name": ["a", "b"], "status": pd.array([201, None], dtype="Int64"), "error": [None, "outcome unknown"]}
    )
    assert_statuses(result, {"b": None})
    with pytest.raises(AssertionError, match=r"b     201       none  outcome unknown"):
        assert_statuses(result, {"b": 201})


def test_assert_result_shows_the_field_that_differs():
    stored = _result()
    today = _result()
    today["body"] = [*today["body"][:2], {"id": "co_0123456789ab", "name": "Nantes Sud"}]
    today.loc[1, "status"] = 409
    with pytest.raises(AssertionError) as caught:
        assert_result(today, stored)
    assert str(caught.value) == (
        "2 of 3 rows differ from the expected frame:\n"
        "  row  name       field   expected  got           error\n"
        "  1    co-bad     status  400       409           400 name: must not be empty\n"
        "  2    co-nantes  $.name  'Nantes'  'Nantes Sud'"
    )


def test_a_long_list_of_differences_is_cut_short():
    result = pd.DataFrame({"name": [f"op-{i}" for i in range(25)], "status": [500] * 25, "ok": [False] * 25})
    with pytest.raises(AssertionError) as info:
        assert_ok(result)
    text = str(info.value)
    assert text.startswith("25 of 25 rows not ok:\n") and text.endswith("\n  … and 5 more")
    assert len(text.splitlines()) == 1 + 1 + 20 + 1


# ---------------------------------------------------------------- assert_result against files


def test_assert_result_against_a_csv_written_by_to_csv(tmp_path, server):
    batch = bn.Batch(
        [
            bn.Operation("POST", API, {"name": "Stored"}, name="stored"),
            bn.Operation(
                "POST", f"{API}/{bn.ref('stored', '$.id')}/services", {"name": "Cut", "duration": 30}, name="svc"
            ),
            bn.Operation("POST", API, {"name": ""}, name="empty"),
        ]
    )
    first = bn.to_frame(server.client.submit(batch))
    first.to_csv(tmp_path / "expected.csv")
    first.batchnb.stable().to_csv(tmp_path / "stable.csv")
    again = bn.to_frame(server.client.submit(batch))  # new ids, new durations, same behaviour
    assert_result(again, tmp_path / "expected.csv")
    assert_result(again, str(tmp_path / "stable.csv"))
    assert_result(again, first)

    changed = bn.Batch(
        [
            op if op.name != "empty" else bn.Operation("POST", API, {"name": "Now valid"}, name="empty")
            for op in batch.requests
        ]
    )
    with pytest.raises(AssertionError) as caught:
        assert_result(bn.to_frame(server.client.submit(changed)), tmp_path / "expected.csv")
    lines = str(caught.value).splitlines()
    assert lines[0] == "1 of 3 rows differs from expected.csv:"
    assert lines[2].split()[:5] == ["2", "empty", "status", "400", "201"]
    assert any(line.split()[:3] == ["2", "empty", "$.error"] for line in lines)  # the stored body was an error


def test_assert_result_with_a_sparse_file_of_names_statuses_and_jsonpaths(tmp_path):
    (tmp_path / "expected.csv").write_text(
        "name,status,$.name\nco-lyon,201,Lyon\nco-bad,4xx,\nco-nantes,201,Nantes\n", encoding="utf-8"
    )
    assert_result(_result(), tmp_path / "expected.csv")
    (tmp_path / "expected.csv").write_text(
        "name,status,$.name\nco-lyon,201,Lyon\nco-bad,4xx,\nco-nantes,201,Nantes\nco-paris,201,Paris\n"
    )
    with pytest.raises(AssertionError) as caught:
        assert_result(_result(), tmp_path / "expected.csv")
    assert str(caught.value).splitlines()[-1].split() == ["3", "co-paris", "a", "row", "no", "row"]


def test_ignore_leaves_columns_out_and_everything_else_is_compared():
    stored, today = _result(), _result()
    today["error"] = today["error"].fillna("")
    today.loc[0, "error"] = "something new"
    with pytest.raises(AssertionError, match="something new"):
        assert_result(today, stored)
    assert_result(today, stored, ignore=["error", "duration"])


def test_misuse_is_a_batch_error_not_an_assertion(tmp_path):
    with pytest.raises(bn.BatchValidationError, match="is not a status"):
        assert_statuses(_result(), {"co-lyon": "created"})
    with pytest.raises(bn.BatchValidationError, match="no such file"):
        assert_result(_result(), tmp_path / "missing.csv")
    with pytest.raises(bn.BatchValidationError, match="'stauts'"):
        assert_result(_result(), pd.DataFrame({"stauts": [201, 400, 201]}))
    ambiguous = pd.DataFrame({"name": ["b", "a"], "status": [201, 201]}, index=["a", "b"])
    with pytest.raises(bn.BatchValidationError, match="names one row only"):
        assert_statuses(ambiguous, {"a": 201})


def test_sanitize_config_is_the_file_the_command_prints():
    path = sanitize_config()
    assert path.is_file() and "regex: " in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the fixtures, from a pytest run of their own

USER_SUITE = """
import pandas as pd
import batchnb as bn
from batchnb.testing import assert_ok, assert_statuses

API = "/api/2.1/scheduling/companies"

def _names(server):
    listed = server.client.submit(bn.Batch([bn.Operation("GET", API + "?limit=1000")]))
    return sorted(item["name"] for item in listed[0].body["items"])

def test_a_batch_flow(batchnb_client):
    result = batchnb_client.submit(pd.DataFrame({"name": ["North", "South"]}), method="POST", path=API, body=["name"])
    assert_ok(result)

def test_each_test_has_a_fresh_database(batchnb_server):
    assert _names(batchnb_server) == []
    batchnb_server.client.submit(bn.Batch([bn.Operation("POST", API, {"name": "Mine"})]))
    assert _names(batchnb_server) == ["Mine"]
    assert batchnb_server.url.startswith("http://127.0.0.1:")
    assert set(batchnb_server.credentials()) == {"api_key", "token"}

def test_the_session_server_is_shared_1(batchnb_session_server):
    batchnb_session_server.client.submit(bn.Batch([bn.Operation("POST", API, {"name": "Shared"})]))

def test_the_session_server_is_shared_2(batchnb_session_server):
    assert _names(batchnb_session_server) == ["Shared"]

def test_a_failure_reads_well(batchnb_client):
    result = batchnb_client.submit(pd.DataFrame({"name": ["Fine", ""]}), method="POST", path=API, body=["name"])
    assert_statuses(result, {0: 201, 1: 201})
"""


@pytest.mark.slow
def test_the_fixtures_in_a_users_own_suite(pytester):
    pytester.makepyfile(test_user_api=USER_SUITE)
    run = pytester.runpytest_subprocess("-p", "batchnb.testing", "-p", "no:randomly", "-p", "no:cacheprovider", "-q")
    run.assert_outcomes(passed=4, failed=1)
    run.stdout.fnmatch_lines(
        [
            "*AssertionError: 1 of 2 statuses not as expected:",
            "*row  name  expected  got  error",
            "*1          201       400  400 name: must not be empty",
        ]
    )


@pytest.mark.slow
def test_the_fixtures_are_there_only_when_asked_for(pytester):
    pytester.makepyfile(test_user_api=USER_SUITE)
    run = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-q")
    run.assert_outcomes(errors=5)
    run.stdout.fnmatch_lines(["*fixture 'batchnb_client' not found*"])


@pytest.mark.slow
def test_pytest_plugins_in_a_conftest_is_the_other_way_in(pytester):
    pytester.makeconftest('pytest_plugins = ["batchnb.testing"]\n')
    pytester.makepyfile(test_user_api=USER_SUITE)
    run = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-q")
    run.assert_outcomes(passed=4, failed=1)


@pytest.mark.slow
def test_the_guides_example_of_the_fixture_passes(pytester):
    guide = (Path(__file__).parents[1] / "docs" / "regression-tests.md").read_text(encoding="utf-8")
    section = guide.split("**The pytest fixtures**", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_from_guide=example)
    pytester.runpytest_subprocess("-p", "batchnb.testing", "-p", "no:cacheprovider", "-q").assert_outcomes(passed=1)


# ---------------------------------------------------------------- the guide's regression flow, as written

REGRESSION_NOTEBOOK = [
    "import pandas as pd\nimport batchnb as bn\n\nserver = bn.LocalServer().start()",
    (
        'sites = pd.DataFrame({"site": ["lyon", "brest"], "name": ["Lyon", ""]})\n'
        'result = server.client.submit(sites, method="POST", path="/api/2.1/scheduling/companies",\n'
        '                              name="co-{site}", body=["name"], progress=False)\n'
        "result.batchnb.report(stable=True)"
    ),
    'result.batchnb.stable()[["name", "path", "status", "body", "error"]]',
    "server.stop()",
]


def _guide_commands() -> dict[str, str]:
    """The commands of docs/regression-tests.md, the guide to regression tests."""
    section = (Path(__file__).parents[1] / "docs" / "regression-tests.md").read_text(encoding="utf-8")
    commands = {}
    for line in section.splitlines():
        command = line.split("  #")[0].strip()
        for lead in ("pip install", "jupyter nbconvert", "pytest --nbval"):
            if command.startswith(lead):
                commands.setdefault(lead, command)
    return commands


@pytest.mark.slow
def test_the_guides_regression_flow_executes_saves_and_passes_nbval_twice(tmp_path):
    import os
    import re
    import shlex
    import subprocess
    import sys
    import tomllib

    import nbformat

    commands = _guide_commands()
    # Step 1's tools come with the extra the guide installs.
    assert commands["pip install"] == 'pip install "batchnb[testing]"'
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    extra = pyproject["project"]["optional-dependencies"]["testing"]
    assert {"nbconvert", "nbval", "ipykernel", "pytest"} <= {re.match(r"[\w.-]+", d).group(0) for d in extra}

    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "my-api.ipynb"
    assert commands["jupyter nbconvert"].endswith("notebooks/my-api.ipynb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in REGRESSION_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}

    def shell(command: str) -> subprocess.CompletedProcess:
        # `$(batchnb sanitize-config)` as a shell would expand it, without a shell.
        command = command.replace('"$(batchnb sanitize-config)"', str(sanitize_config()))
        return subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    executed = shell(commands["jupyter nbconvert"])
    assert executed.returncode == 0, executed.stderr
    saved = nbformat.read(notebook, as_version=4)
    report = saved.cells[1].outputs[0]["data"]
    assert report["text/plain"] == "2 operations, 1 not ok (201: 1, 400: 1)"
    assert "failures by cause" in report["text/html"] and "co_" not in report["text/html"]
    for _ in range(2):  # identical runs: new ids, new durations, new port, the same outputs
        checked = shell(commands["pytest --nbval"] + " -p no:cacheprovider")
        assert checked.returncode == 0, checked.stdout[-3000:]
        assert "4 passed" in checked.stdout
