"""Authentication, tenant isolation and secrecy of credentials.

Tenants here are the demo API's api keys. Isolation is checked from the
outside (HTTP answers) and from the inside (the SQLite rows and their
``tenant`` column), because "not found" alone does not prove that nothing
was written. Secrecy is checked against random credentials, so that finding
one in a repr, a log line or a file can only mean it leaked.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import batchnb
from batchnb import Batch, Operation
from batchnb.server import auth
from batchnb.server.auth import Keyring
from tests.support import count, free_port, stop, wait_for_http
from tests.support.faults import RecordingUpstream

CO = "/api/2.1/scheduling/companies"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server() -> Iterator[batchnb.LocalServer]:
    with batchnb.LocalServer(tenants=("demo", "other")) as s:
        yield s


def rows(server: batchnb.LocalServer, sql: str, *params: Any) -> list[tuple]:
    with sqlite3.connect(server.db) as conn:
        return conn.execute(sql, params).fetchall()


def post_batch(
    server: batchnb.LocalServer, ops: list[dict], headers: dict[str, str] | None = None, params: dict | None = None
) -> httpx.Response:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return httpx.post(
        server.url + "/api/2.3/batch", content=json.dumps({"requests": ops}), headers=hdrs, params=params, timeout=10
    )


def bearer(server: batchnb.LocalServer, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.credentials(key)['token']}"}


# ---------------------------------------------------------------- authentication


@pytest.mark.slow
def test_missing_or_wrong_credentials_run_nothing(server: batchnb.LocalServer) -> None:
    demo, other = server.credentials("demo"), server.credentials("other")
    write = [{"method": "POST", "path": CO, "body": {"name": "must not exist"}}]
    attempts: list[tuple[dict, dict | None]] = [
        ({}, None),
        ({"Authorization": "Bearer wrong"}, None),
        ({"Authorization": f"Basic {demo['token']}"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": f"Bearer {demo['token']}x"}, None),
        ({"Authorization": f"Bearer {demo['token'][:-1]}"}, None),
        ({}, {"apiKey": "demo", "token": "wrong"}),
        ({}, {"apiKey": "demo", "token": other["token"]}),  # a real token, but another tenant's
        ({}, {"apiKey": "demo"}),
        ({}, {"token": demo["token"]}),
        ({"Authorization": "Bearer wrong"}, {"apiKey": "demo", "token": demo["token"]}),  # a wrong header decides
    ]
    before = count(server.db)
    for headers, params in attempts:
        r = post_batch(server, write, headers, params)
        assert r.status_code == 401, (headers, params, r.text)
        err = r.json()["error"]
        assert err["details"] and all("pointer" in d for d in err["details"])
        # The API behind the batch endpoint refuses the same way.
        r = httpx.post(server.url + CO, json={"name": "must not exist"}, headers=headers, params=params, timeout=10)
        assert r.status_code == 401, (headers, params, r.text)
    assert count(server.db) == before
    with pytest.raises(batchnb.AuthenticationError) as info:
        batchnb.Client(server.url, api_key="demo", token="wrong").submit(
            Batch([Operation("POST", CO, {"name": "nope"})]), progress=False
        )
    assert info.value.status == 401
    assert count(server.db) == before


def test_keyring_compares_every_entry_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    creds = {f"key-{i}": f"token-{i}-{'x' * i}" for i in range(6)}
    ring = Keyring(creds)
    for token, expected in (("token-0-", "key-0"), ("token-5-xxxxx", "key-5"), ("nope", None), ("t" * 500, None)):
        calls.clear()
        assert ring.authenticate({"authorization": f"Bearer {token}"}, {}) == expected
        assert len(calls) == len(creds), f"{len(calls)} comparisons for {token!r}: the time reveals which entry matched"
        # Fixed-size digests on both sides: the presented secret's length does not show either.
        assert {(len(a), len(b)) for a, b in calls} == {(32, 32)}
    for key, token, expected in (
        ("key-0", "token-0-", "key-0"),
        ("key-3", "token-3-xxx", "key-3"),
        ("key-3", "token-4-xxxx", None),
        ("zzz", "token-0-", None),
    ):
        calls.clear()
        assert ring.authenticate({}, {"apiKey": key, "token": token}) == expected
        assert len(calls) == 2 * len(creds), f"{len(calls)} comparisons for {key}/{token}"
        assert {(len(a), len(b)) for a, b in calls} == {(32, 32)}


# ---------------------------------------------------------------- tenant isolation


def _create(server: batchnb.LocalServer, key: str, name: str) -> dict[str, str]:
    """A company with a service and a staff member, owned by ``key``."""
    r = post_batch(
        server,
        [
            {"method": "POST", "path": CO, "body": {"name": name}, "name": "co"},
            {"method": "POST", "path": CO + "/${result=co:$.id}/services", "body": {"name": "Cut"}, "name": "sv"},
            {
                "method": "POST",
                "path": CO + "/${result=co:$.id}/staff",
                "body": {"firstName": "A", "lastName": "B", "services": [{"id": "${result=sv:$.id}"}]},
                "name": "st",
            },
        ],
        bearer(server, key),
    )
    out = r.json()["responses"]
    assert [x["status"] for x in out] == [201, 201, 201], out
    return {"co": out[0]["body"]["id"], "sv": out[1]["body"]["id"], "st": out[2]["body"]["id"]}


def _snapshot(server: batchnb.LocalServer, tenant: str) -> list[tuple]:
    return [
        rows(server, f"select * from {t} where tenant = ? order by id", tenant)
        for t in ("companies", "services", "staff", "appointments")
    ]


def test_a_tenant_cannot_read_change_or_reference_another_tenants_data(server: batchnb.LocalServer) -> None:
    b = _create(server, "other", "B's shop")
    a = _create(server, "demo", "A's shop")
    b_before = _snapshot(server, "other")
    co_b, sv_b, st_b = b["co"], b["sv"], b["st"]
    ops = [
        {"method": "GET", "path": f"{CO}/{co_b}"},
        {"method": "PUT", "path": f"{CO}/{co_b}", "body": {"name": "taken over"}},
        {"method": "PATCH", "path": f"{CO}/{co_b}", "body": {"name": "taken over"}},
        {"method": "DELETE", "path": f"{CO}/{co_b}"},
        {"method": "GET", "path": f"{CO}/{co_b}/services"},
        {"method": "POST", "path": f"{CO}/{co_b}/services", "body": {"name": "planted"}},
        {"method": "GET", "path": f"{CO}/{co_b}/services/{sv_b}"},
        {"method": "PUT", "path": f"{CO}/{co_b}/services/{sv_b}", "body": {"name": "planted"}},
        {"method": "DELETE", "path": f"{CO}/{co_b}/staff/{st_b}"},
        # B's ids inside A's own company, in bodies:
        {
            "method": "POST",
            "path": f"{CO}/{a['co']}/staff",
            "body": {"firstName": "X", "lastName": "Y", "services": [{"id": sv_b}]},
        },
        {
            "method": "POST",
            "path": f"{CO}/{a['co']}/appointments",
            "body": {"serviceId": sv_b, "staffId": st_b, "start": "2030-01-01T10:00:00Z"},
        },
        {
            "method": "PUT",
            "path": f"{CO}/{a['co']}/staff/{a['st']}",
            "body": {"firstName": "X", "lastName": "Y", "services": [{"id": sv_b}]},
        },
        # Reaching B's data through a reference: the lookup fails, the dependants do not run.
        {"method": "GET", "path": f"{CO}/{co_b}", "name": "peek"},
        {"method": "DELETE", "path": CO + "/${result=peek:$.id}"},
        {"method": "PUT", "path": f"{CO}/{a['co']}", "body": {"name": "${result=peek:$.name}"}},
    ]
    r = post_batch(server, ops, bearer(server, "demo"))
    assert r.status_code == 200
    statuses = [x["status"] for x in r.json()["responses"]]
    assert statuses == [404] * 9 + [400, 400, 400, 404, 424, 424], statuses
    listing = post_batch(server, [{"method": "GET", "path": CO + "?limit=1000"}], bearer(server, "demo")).json()[
        "responses"
    ][0]["body"]
    assert co_b not in {c["id"] for c in listing["items"]}
    assert _snapshot(server, "other") == b_before
    assert rows(server, "select count(*) from companies where name = 'taken over' or name = ?", "B's shop")[0][0] == 1
    assert rows(server, "select count(*) from services where name = 'planted'")[0][0] == 0
    # A's staff member kept their own service only.
    assert rows(server, "select service_id from staff_services where staff_id = ?", a["st"]) == [(a["sv"],)]


def test_an_operation_with_its_own_credentials_acts_exactly_as_that_tenant(server: batchnb.LocalServer) -> None:
    b = _create(server, "other", "B again")
    a = _create(server, "demo", "A again")
    as_b = bearer(server, "other")
    ops = [
        {
            "method": "POST",
            "path": CO,
            "body": {"name": "made by B"},
            "headers": as_b,
            "name": "mine",
            # A child carries no credentials of its own: it runs as the batch (A), not as its parent.
            "requests": [{"method": "POST", "path": CO + "/${result=mine:$.id}/services", "body": {"name": "child"}}],
        },
        {"method": "GET", "path": f"{CO}/{b['co']}", "headers": as_b},
        {"method": "GET", "path": f"{CO}/{a['co']}", "headers": as_b},
        {"method": "GET", "path": f"{CO}/{a['co']}"},
        {"method": "GET", "path": f"{CO}/{b['co']}"},
        {"method": "GET", "path": CO, "headers": {"Authorization": "Bearer not-a-token"}},
        {"method": "POST", "path": CO, "body": {"name": "nobody's"}, "headers": "Authorization: Bearer not-a-token"},
    ]
    for auth_kind in ("header", "query"):
        client = server.client_for("demo", credentials_in=auth_kind)
        out = client.send(Batch(ops))
        statuses = [r.status for r in out]
        assert statuses == [201, 200, 404, 200, 404, 401, 401], (auth_kind, statuses, out[0].body)
        assert out[0].responses[0].status == 404, (auth_kind, out[0].responses[0].body)
        made = out[0].body["id"]
        assert rows(server, "select tenant from companies where id = ?", made) == [("other",)]
    assert rows(server, "select count(*) from companies where name = ?", "nobody's")[0][0] == 0
    assert rows(server, "select count(*) from services where name = 'child'")[0][0] == 0


def test_gateway_keeps_its_own_key_and_passes_operation_credentials() -> None:
    with RecordingUpstream() as up, batchnb.LocalServer(upstream=up.url, tenants=("gate",)) as gw:
        gate_token = gw.credentials("gate")["token"]
        for kind in ("header", "query"):
            up.clear()
            out = gw.client_for("gate", credentials_in=kind).send(
                Batch(
                    [
                        Operation("GET", "/plain"),
                        Operation("GET", "/own", headers={"Authorization": "Bearer upstream-secret"}),
                    ]
                )
            )
            assert [r.status for r in out] == [200, 200]
            seen = {q.target.split("?")[0]: q for q in up.requests}
            assert seen["/plain"].header("authorization") is None and "?" not in seen["/plain"].target, kind
            assert seen["/own"].header("authorization") == "Bearer upstream-secret"
            for q in up.requests:
                assert gate_token not in q.target and all(gate_token not in v for _k, v in q.headers), kind


# ---------------------------------------------------------------- secrets


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# Not "uvicorn.access": uvicorn turns its access log on when that logger has a
# handler, which LocalServer keeps off; the serve test below covers that log.
LOGGERS = ("", "batchnb", "batchnb.server", "httpx", "httpcore", "uvicorn", "uvicorn.error", "asyncio")


@pytest.fixture
def secret_server() -> Iterator[batchnb.LocalServer]:
    # Random keys and tokens: any occurrence in an output can only be a leak.
    tenants = (f"key{secrets.token_hex(6)}", f"key{secrets.token_hex(6)}")
    with batchnb.LocalServer(tenants=tenants, log_level="debug") as s:
        yield s


def _secrets_of(server: batchnb.LocalServer) -> list[str]:
    return [v for key in server.tenants for v in server.credentials(key).values()]


class Leaks:
    """Collects every place a credential shows, so that one failure lists them all."""

    def __init__(self, secret_values: list[str]) -> None:
        self.secrets = [s for s in secret_values if s]
        self.found: list[str] = []

    def check(self, text: str, where: str) -> None:
        for s in self.secrets:
            at = text.find(s)
            if at >= 0:
                self.found.append(f"{where}: …{text[max(0, at - 70) : at + 30]}…")
                return

    def assert_none(self) -> None:
        assert not self.found, "credentials leak:\n" + "\n".join(self.found)


def assert_no_secret(text: str, secret_values: list[str], where: str) -> None:
    leaks = Leaks(secret_values)
    leaks.check(text, where)
    leaks.assert_none()


def test_reprs_hide_credentials(secret_server: batchnb.LocalServer) -> None:
    key, other = secret_server.tenants
    token, other_token = secret_server.credentials(key)["token"], secret_server.credentials(other)["token"]
    hidden = _secrets_of(secret_server)
    op = Operation(
        "GET",
        f"{CO}?apiKey={other}&token={other_token}",
        headers={"Authorization": f"Bearer {other_token}", "X-Api-Key": other},
    )
    op_lines = Operation("GET", CO, headers=f"Authorization: Bearer {other_token}\nX-Api-Key: {other}")
    objects = {
        "Client": secret_server.client_for(key),
        "Client(query)": secret_server.client_for(key, credentials_in="query"),
        "AsyncClient": secret_server.async_client(key),
        "AsyncClient(query)": secret_server.async_client(key, credentials_in="query"),
        "AsyncClient(headers)": batchnb.AsyncClient(
            secret_server.url, headers={"Authorization": f"Bearer {token}", "X-Api-Key": key}
        ),
        "LocalServer": secret_server,
        "Operation": op,
        "Operation(lines)": op_lines,
        "Batch": Batch([op, op_lines]),
        "Response": batchnb.Response("GET", f"{CO}?apiKey={key}&token={token}", 200),
        "Plan": secret_server.client_for(key).submit(Batch([op]), dry_run=True),
    }
    leaks = Leaks(hidden)
    for label, obj in objects.items():
        leaks.check(repr(obj), f"repr({label})")
        leaks.check(str(obj), f"str({label})")
        html = getattr(obj, "_repr_html_", None)
        if html is not None:
            leaks.check(html(), f"{label}._repr_html_()")
    leaks.assert_none()


def test_error_messages_hide_credentials(secret_server: batchnb.LocalServer) -> None:
    key, _other = secret_server.tenants
    token = secret_server.credentials(key)["token"]
    hidden = [*_secrets_of(secret_server), "wrong-" + token]
    errors: list[BaseException] = []
    for kind in ("header", "query"):
        with pytest.raises(batchnb.AuthenticationError) as info:
            batchnb.Client(secret_server.url, api_key=key, token="wrong-" + token, credentials_in=kind).submit(
                Batch([Operation("GET", CO)]), progress=False
            )
        errors.append(info.value)
        dead = free_port()
        with pytest.raises(batchnb.BatchError) as info:
            batchnb.Client(f"http://127.0.0.1:{dead}", api_key=key, token=token, credentials_in=kind, retries=0).send(
                Batch([Operation("GET", CO)])
            )
        errors.append(info.value)
    # A header line typed without its colon must not be echoed back with the token in it.
    with pytest.raises(batchnb.BatchValidationError) as info:
        Batch([Operation("GET", CO, headers=f"Authorization Bearer {token}")])
    errors.append(info.value)
    with pytest.raises(batchnb.BatchHTTPError) as info:
        secret_server.client_for(key).send(
            Batch([Operation("GET", CO, headers={"Authorization": f"Bearer {token}\r\n"})], validate=False)
        )
    errors.append(info.value)
    leaks = Leaks(hidden)
    r = post_batch(
        secret_server,
        [{"method": "GET", "path": CO, "headers": f"Authorization Bearer {token}"}],
        bearer(secret_server, key),
    )
    assert r.status_code == 400
    leaks.check(r.text, "the server's 400 answer to a header line without its colon")
    for exc in errors:
        text = f"{exc!s} {exc!r} {getattr(exc, 'problems', '')} {exc.args}"
        leaks.check(text, f"{type(exc).__name__}: {str(exc)[:60]!r}")
        partial = getattr(exc, "partial", None)
        if partial is not None:
            leaks.check(partial.to_string() if hasattr(partial, "to_string") else repr(partial), "the partial result")
    leaks.assert_none()


def test_logs_results_and_journal_hide_credentials(secret_server: batchnb.LocalServer, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    key, other = secret_server.tenants
    hidden = _secrets_of(secret_server)
    other_token = secret_server.credentials(other)["token"]
    capture = Capture()
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate)
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
    try:
        frames = []
        for _i, kind in enumerate(("header", "query")):
            df = pd.DataFrame({"name": [f"Shop {kind} {n}" for n in range(120)]})
            client = secret_server.client_for(key, credentials_in=kind)
            frames.append(
                client.submit(
                    df,
                    method="POST",
                    path=CO,
                    body=["name"],
                    journal=str(tmp_path / f"run-{kind}.jsonl"),
                    progress=False,
                )
            )
            frames.append(
                client.submit(
                    [
                        Operation(
                            "POST",
                            CO,
                            {"name": "as the other"},
                            name="x",
                            headers={"Authorization": f"Bearer {other_token}"},
                        ),
                        Operation("GET", f"{CO}/{'${result=x:$.id}'}?apiKey={other}&token={other_token}"),
                        Operation("GET", f"{CO}/co_000000000000", headers={"Authorization": f"Bearer {other_token}"}),
                    ],
                    journal=str(tmp_path / f"refs-{kind}.jsonl"),
                    progress=False,
                )
            )
    finally:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(capture)
            logger.setLevel(saved[name][0])
    assert any(line.startswith("httpx") for line in capture.lines), "httpx logged nothing: the capture is broken"
    assert all(bool(f["ok"].all()) for f in frames[::2]), [f[["status", "error"]] for f in frames[::2]]
    leaks = Leaks(hidden)
    for line in capture.lines:
        leaks.check(line, "a log line")
    for frame in frames:
        leaks.check(frame.astype(str).to_string(), "the result DataFrame")
        leaks.check(frame.to_json(default_handler=str), "the result DataFrame as JSON")
    for path in sorted(tmp_path.glob("*.jsonl")):
        leaks.check(path.read_text(), f"the journal {path.name}")
    leaks.assert_none()


@pytest.mark.slow
def test_serve_access_log_hides_query_credentials(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(18)
    key = f"key{secrets.token_hex(6)}"
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    env = {**os.environ, "BATCHNB_TOKEN": token, "BATCHNB_API_KEY": key}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchnb.cli",
            "serve",
            "--db",
            str(tmp_path / "d.sqlite3"),
            "--port",
            str(port),
            "--log-level",
            "debug",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/api/2.3/batch", proc, 20, (tmp_path / "serve.log").read_text)
        for kind in ("header", "query"):
            out = batchnb.Client(url, api_key=key, token=token, credentials_in=kind).send(Batch([Operation("GET", CO)]))
            assert out[0].status == 200
        httpx.get(url + CO, params={"apiKey": key, "token": token}, timeout=5)
        # The server reads parameter names decoded: '%74oken' is 'token', and authenticates…
        assert httpx.get(f"{url}{CO}?apiKey={key}&%74oken={token}", timeout=5).status_code == 200
        httpx.get(url + CO + "/x%2F..", params={"apiKey": key, "token": token}, timeout=5)
    finally:
        stop(proc, signal.SIGINT)
    log.seek(0)
    text = log.read()
    assert "/api/2.3/batch" in text, text[-2000:]  # the access log was on
    assert_no_secret(text, [token], "the serve log")


#: "Bearer <something>" where the something is not a mask or a placeholder.
BEARER = re.compile(r"Bearer\s+(?!\*\*\*|…|<|\{|\$)([A-Za-z0-9._~+/=-]{6,})")
#: a token or api key value shown as ``token='…'``, ``"token": "…"`` or ``token=…`` in a URL.
ASSIGNED = re.compile(r"""(?:token|apiKey|api_key)['"]?\s*[:=]\s*['"]?([A-Za-z0-9_-]{12,})""")


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_stored_notebook_outputs_hold_no_credentials(notebook: Path) -> None:
    from batchnb.cli import DEMO_TOKEN

    nb = json.loads(notebook.read_text())
    for i, cell in enumerate(nb.get("cells", [])):
        outputs = json.dumps(cell.get("outputs", []))
        assert DEMO_TOKEN not in outputs, f"{notebook.name} cell {i}: an output shows the demo token"
        found = BEARER.findall(outputs) + ASSIGNED.findall(outputs)
        assert not found, f"{notebook.name} cell {i}: an output shows a credential: {found[0][:4]}…"


@pytest.mark.parametrize(
    ("path", "masked"),
    [
        ("/x?apiKey=k&token=t", "/x?apiKey=***&token=***"),
        ("/x?apiKey=demo&%74oken=demo-token", "/x?apiKey=***&%74oken=***"),
        ("/x?a=1&%54OKEN=s&b=2", "/x?a=1&%54OKEN=***&b=2"),
        ("http://h/p?x=1&api%5Fkey=zz#f", "http://h/p?x=1&api%5Fkey=***#f"),
        ("GET /x?tok%65n=abc HTTP/1.1", "GET /x?tok%65n=*** HTTP/1.1"),
        ("/x?tokens=1&x=2", "/x?tokens=1&x=2"),
    ],
)
def test_masking_judges_a_parameter_by_the_name_the_server_reads(path: str, masked: str) -> None:
    from batchnb._secrets import mask_path

    assert mask_path(path) == masked
