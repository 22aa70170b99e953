"""The rules of :mod:`batchnb._rules` as real processes apply them: a gateway, the demo API, and the client.

``batchnb serve --upstream`` runs in a process of its own in front of a
recording upstream (a real socket server), so a refusal is proved by what
never reached the upstream. The client is pointed at a recording server
too: what it refuses before sending never arrives there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from batchnb import BatchValidationError, Client, Operation, ref
from tests.support import free_port, wait_for_http
from tests.support.faults import RecordingUpstream, Reply

BATCH = "/api/2.3/batch"
CO = "/api/2.1/scheduling/companies"
#: what the upstream answers at /src: values a reference may fill into a later path.
SOURCE = {"dots": "..;", "dot": ".;x", "encoded": "%2e%2e;", "hash": "C#", "ok": "fine"}
REWRITING = [
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Forwarded",
    "X-Real-IP",
]


def _serve(args: list[str], log: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchnb.cli", "serve", "--port", str(port), "--log-level", "warning", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + BATCH, proc, 30, log.read_text)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return url, proc


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream(lambda req: Reply(200, SOURCE if req.path == "/src" else {"target": req.target})) as server:
        yield server  # type: ignore[misc]  # what a test may do and a user may not


@pytest.fixture(scope="module")
def gateway(upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("gateway")
    url, proc = _serve(["--upstream", upstream.url], tmp / "gateway.log", {"BATCHNB_API_KEY": "", "BATCHNB_TOKEN": ""})
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("demo")
    env = {"BATCHNB_API_KEY": "rules", "BATCHNB_TOKEN": "rules-token"}
    url, proc = _serve(["--db", str(tmp / "demo.sqlite3")], tmp / "demo.log", env)
    try:
        yield url
    finally:
        _stop(proc)


def post(url: str, ops: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return httpx.post(url + BATCH, json={"requests": ops}, timeout=30, trust_env=False, **kw)


def refused(r: httpx.Response, pointer: str, message: str) -> None:
    assert r.status_code == 400, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    details = r.json()["error"]["details"]
    assert [d["pointer"] for d in details] == [pointer], details
    assert message in details[0]["message"], details


# ---------------------------------------------------------------- headers that rewrite the URL, method or client


@pytest.mark.slow
@pytest.mark.parametrize("name", REWRITING)
def test_the_gateway_refuses_a_header_that_rewrites_the_url_method_or_client(
    gateway: str, upstream: RecordingUpstream, name: str
) -> None:
    upstream.clear()
    r = post(
        gateway, [{"method": "GET", "path": "/fine"}, {"method": "GET", "path": "/h", "headers": {name: "/admin"}}]
    )
    refused(r, f"requests[1].headers.{name}", "cannot be set per operation")
    # As header lines too, and nested.
    lines = {"method": "GET", "path": "/h", "headers": f"X-A: 1\r\n{name}: DELETE"}
    r = post(gateway, [{"method": "GET", "path": "/fine", "requests": [lines]}])
    refused(r, f"requests[0].requests[0].headers.{name}", "URL, method or client")
    assert upstream.requests == [], [q.target for q in upstream.requests]


def test_the_client_refuses_a_rewriting_header_before_sending() -> None:
    with RecordingUpstream(lambda req: Reply(404, {"error": "no limits here"})) as server:
        with Client(server.url, token="t") as client:
            frame = pd.DataFrame({"to": ["/admin", "/other"]})
            with pytest.raises(BatchValidationError) as info:
                client.submit(frame, method="GET", path="/x", headers="X-Original-URL: {to}")
            assert info.value.pointers == ["row 0, column headers", "row 1, column headers"]
            ops = [Operation("GET", "/x"), Operation("POST", "/y", headers={"X-HTTP-Method-Override": "DELETE"})]
            with pytest.raises(BatchValidationError) as info:
                client.submit(ops)
            assert "requests[1].headers.X-HTTP-Method-Override" in " ".join(info.value.pointers)
        assert [q for q in server.requests if q.method == "POST"] == []


# ---------------------------------------------------------------- dot segments with path parameters


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/a/..;/admin", "/..;/admin", "/a/.;x/b", "/a/..;jsessionid=1/b", "/a/..%3B/b"])
def test_the_gateway_refuses_a_dot_segment_with_parameters(
    gateway: str, upstream: RecordingUpstream, path: str
) -> None:
    upstream.clear()
    refused(post(gateway, [{"method": "GET", "path": path}]), "requests[0].path", "'.' or '..' segments")
    assert upstream.requests == []


def test_the_gateway_refuses_dots_with_parameters_that_a_reference_fills_in(
    gateway: str, upstream: RecordingUpstream
) -> None:
    upstream.clear()
    ops = [{"method": "GET", "path": "/src", "name": "src"}]
    ops += [{"method": "GET", "path": f"/t/${{result=src:$.{key}}}/admin"} for key in ("dots", "dot", "encoded", "ok")]
    r = post(gateway, ops)
    assert r.status_code == 200, r.text[:500]
    out = r.json()["responses"]
    assert [x["status"] for x in out] == [200, 400, 400, 400, 200], out
    assert all("'.' or '..' segments" in x["body"]["error"]["message"] for x in out[1:4]), out
    assert [q.target for q in upstream.requests] == ["/src", "/t/fine/admin"]


# ---------------------------------------------------------------- '#' in a path


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/a#b", "/c?x=1#frag", "/#"])
def test_a_fragment_mark_is_refused_before_credentials_can_be_lost_after_it(
    gateway: str, demo: str, upstream: RecordingUpstream, path: str
) -> None:
    upstream.clear()
    r = post(gateway, [{"method": "GET", "path": "/fine"}, {"method": "GET", "path": path}])
    refused(r, "requests[1].path", "must not contain '#'")
    creds = {"apiKey": "rules", "token": "rules-token"}
    refused(post(demo, [{"method": "GET", "path": CO + path}], params=creds), "requests[0].path", "%23")
    assert upstream.requests == []


def test_a_fragment_mark_filled_in_by_a_reference_is_sent_encoded(gateway: str, upstream: RecordingUpstream) -> None:
    upstream.clear()
    r = post(
        gateway,
        [{"method": "GET", "path": "/src", "name": "src"}, {"method": "GET", "path": "/t/${result=src:$.hash}"}],
    )
    assert [x["status"] for x in r.json()["responses"]] == [200, 200], r.text[:500]
    assert [q.target for q in upstream.requests] == ["/src", "/t/C%23"]


# ---------------------------------------------------------------- ASCII methods and keys


@pytest.mark.slow
@pytest.mark.parametrize("method", ["po\u017ft", "PO\ufb06"])
def test_a_method_that_unicode_upper_cases_to_post_is_refused(
    gateway: str, demo: str, upstream: RecordingUpstream, method: str
) -> None:
    upstream.clear()
    refused(post(gateway, [{"method": method, "path": "/write"}]), "requests[0].method", "unknown method")
    assert upstream.requests == []
    r = post(
        demo,
        [{"method": method, "path": CO, "body": {"name": "long s"}}],
        params={"apiKey": "rules", "token": "rules-token"},
    )
    refused(r, "requests[0].method", "unknown method")


def test_a_key_ending_in_a_no_break_space_is_refused_not_read_without_it(demo: str) -> None:
    auth = {"Authorization": "Bearer rules-token", "Content-Type": "application/json"}
    for key in (b"k1\xa0", b"\xa0k1", b'"k1"\xa0'):
        r = httpx.post(
            demo + CO,
            content=b'{"name": "nbsp"}',
            headers={**auth, "Idempotency-Key": key},
            timeout=30,
            trust_env=False,
        )
        assert r.status_code == 400, (key, r.text[:300])
        assert r.json()["error"]["details"][0]["field"] == "headers.Idempotency-Key"
    # As an operation's header line, the batch is refused before anything runs.
    line = {"method": "POST", "path": CO, "body": {"name": "nbsp"}, "headers": "Idempotency-Key: k1\xa0"}
    r = post(demo, [line], headers={"Authorization": "Bearer rules-token"})
    refused(r, "requests[0].headers.Idempotency-Key", "must be ASCII text")
    listed = httpx.get(demo + CO + "?limit=100", headers=auth, timeout=30, trust_env=False).json()["items"]
    assert [c for c in listed if c["name"] == "nbsp"] == []


# ---------------------------------------------------------------- what the client fills in across batches


@pytest.mark.slow
def test_the_client_checks_a_path_it_fills_in_from_an_earlier_batch_and_sends_the_rest(demo: str) -> None:
    ops = [
        Operation("POST", CO, {"name": "..;"}, name="dots"),
        Operation("POST", CO, {"name": "plain"}, name="plain"),
        Operation("GET", CO + "/" + ref("dots", "$.name")),
        Operation("GET", CO + "/" + ref("plain", "$.id")),
        Operation("POST", CO, {"name": "x\r\nX-Injected: 1"}, name="crlf"),
        Operation("GET", CO, headers={"X-Note": ref("crlf", "$.name")}),
        Operation("GET", CO, headers={"X-Note": ref("plain", "$.name")}),
    ]
    # One operation a batch: each reference is filled in by the client, from an earlier batch's answer.
    with Client(demo, token="rules-token", max_requests=1) as client:
        result = client.submit(ops, progress=False)
    assert result["status"].tolist() == [201, 201, 400, 200, 201, 400, 200], result[["path", "status", "error"]]
    assert "'.' or '..' segments" in result["error"].iloc[2]
    assert "'X-Note': header value must not contain control characters" in result["error"].iloc[5]
