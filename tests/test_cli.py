"""The batchnb command, run as a user runs it: a real process."""

import os
import signal
import subprocess
import sys

import httpx
import pandas as pd

from tests.support import free_port, wait_for_http

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def batchnb(*args, env=ENV, **kw):
    return subprocess.run([sys.executable, "-m", "batchnb.cli", *args], capture_output=True, text=True, env=env, timeout=120, **kw)


def test_demo_runs_the_worked_examples():
    r = batchnb("demo")
    assert r.returncode == 0, r.stderr
    for title in ("chained", "three services", "mixed", "nested"):
        assert title in r.stdout
    assert r.stdout.count(" 201 ") >= 10 and " 424 " in r.stdout


def test_serve_refuses_demo_credentials_off_loopback():
    r = batchnb("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 2 and "refusing" in r.stderr


def test_serve_takes_each_limit_as_a_flag(tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    env = {**ENV, "BATCHNB_API_KEY": "cli", "BATCHNB_TOKEN": "cli-secret"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "batchnb.cli", "serve", "--port", str(port), "--db", str(tmp_path / "d.sqlite3"),
                                 "--log-level", "warning", "--max-requests", "7", "--max-depth", "2", "--operation-timeout", "2.5",
                                 "--max-concurrent-batches", "0"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/2.3/batch"
        wait_for_http(url, proc, 20, log.read_text)
        announced = httpx.get(url, trust_env=False).json()
        assert (announced["maxRequests"], announced["maxDepth"], announced["operationTimeout"]) == (7, 2, 2.5)
        # Not announced, yet in force: no batch may run at once.
        r = httpx.post(url, json={"requests": [{"method": "GET", "path": "/api/2.1/scheduling/companies"}]},
                       headers={"Authorization": "Bearer cli-secret"}, trust_env=False)
        assert r.status_code == 429, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_serve_and_run_a_csv_with_a_bad_row(tmp_path):
    port = free_port()
    db = tmp_path / "serve.sqlite3"
    env = {**ENV, "BATCHNB_API_KEY": "cli", "BATCHNB_TOKEN": "cli-secret"}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "batchnb.cli", "serve", "--port", str(port), "--db", str(db), "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/api/2.3/batch", proc, 20, log.read_text)
        good = tmp_path / "ops.csv"
        pd.DataFrame({"name": [f"Site {i}" for i in range(30)], "city": "Lyon"}).to_csv(good, index=False)
        out = tmp_path / "result.csv"
        r = batchnb("run", str(good), "--url", url, "--method", "POST", "--path", "/api/2.1/scheduling/companies",
                    "--body-columns", "name", "-o", str(out), "-q", env={**ENV, "BATCHNB_TOKEN": "cli-secret"})
        assert r.returncode == 0, r.stderr + r.stdout
        assert "30 of 30 rows ok" in r.stdout
        saved = pd.read_csv(out)
        assert (saved["status"] == 201).all() and len(saved) == 30
        assert "cli-secret" not in out.read_text() + r.stdout + r.stderr

        parquet_in, parquet_out = tmp_path / "ops.parquet", tmp_path / "result.parquet"
        pd.DataFrame({"name": ["Parquet A", "Parquet B"]}).to_parquet(parquet_in)
        r = batchnb("run", str(parquet_in), "--url", url, "--method", "POST", "--path", "/api/2.1/scheduling/companies",
                    "--body-columns", "name", "-o", str(parquet_out), "-q", env={**ENV, "BATCHNB_TOKEN": "cli-secret"})
        assert r.returncode == 0, r.stderr
        assert pd.read_parquet(parquet_out)["status"].tolist() == [201, 201]

        bad = tmp_path / "bad.csv"
        pd.DataFrame({"method": ["POST", "FETCH", "POST"], "path": ["/api/2.1/scheduling/companies", "/x", ""],
                      "body": ['{"name": "ok"}', "{}", '{"name": "x"}']}).to_csv(bad, index=False)
        before = httpx.post(url + "/api/2.3/batch", headers={"Authorization": "Bearer cli-secret"},
                            json={"requests": [{"method": "GET", "path": "/api/2.1/scheduling/companies?limit=1000"}]}).json()
        r = batchnb("run", str(bad), "--url", url, "-q", env={**ENV, "BATCHNB_TOKEN": "cli-secret"})
        assert r.returncode == 2
        assert "row 1" in r.stderr and "method" in r.stderr and "row 2" in r.stderr and "path" in r.stderr
        after = httpx.post(url + "/api/2.3/batch", headers={"Authorization": "Bearer cli-secret"},
                           json={"requests": [{"method": "GET", "path": "/api/2.1/scheduling/companies?limit=1000"}]}).json()
        assert len(after["responses"][0]["body"]["items"]) == len(before["responses"][0]["body"]["items"])  # nothing sent

        failing = tmp_path / "failing.csv"
        pd.DataFrame({"name": ["fine", ""]}).to_csv(failing, index=False)
        r = batchnb("run", str(failing), "--url", url, "--method", "POST", "--path", "/api/2.1/scheduling/companies",
                    "--body-columns", "name", "-q", env={**ENV, "BATCHNB_TOKEN": "cli-secret"})
        assert r.returncode == 1 and "1 of 2 rows ok" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
