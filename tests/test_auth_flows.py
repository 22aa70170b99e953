"""Auth flows that refresh: batchnb.auth.ClientCredentials, Client(auth=), and what a run does with 401s.

Unit tests of the flow's error paths use httpx.MockTransport; everything a
user would meet runs against real loopback processes: the demo company API
(an OAuth2 token endpoint whose tokens live 2-3 s, and an API that checks
them), the gateway (``batchnb serve --upstream``), the CLI, a dask cluster.
The secret and every token the API saw are looked for in every output.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pandas as pd
import pytest

import batchnb
from batchnb import AsyncClient, AuthenticationError, BatchValidationError, Client
from batchnb.auth import ClientCredentials
from batchnb.demo.company import CompanyAPI
from tests.support import free_port, wait_for_http, wait_until

THINGS = "/api/things"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("BATCHNB_")} | {"PYTHONUNBUFFERED": "1"}
TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{32}")


# ---------------------------------------------------------------- helpers


def things(n: int, tag: str = "k") -> pd.DataFrame:
    return pd.DataFrame({"key": [f"{tag}-{i:05d}" for i in range(n)], "n": list(range(n))})


class Recording(httpx.AsyncBaseTransport):
    """The client's own transport, recording the Authorization of every request it carries."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, request.headers.get("authorization")))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def secrets(self) -> set[str]:
        """Every credential that went out: bearer tokens, and the Basic pair (which holds the client secret)."""
        found = set()
        for _path, value in self.seen:
            if value:
                found.add(value.partition(" ")[2])
        return found

    def tokens(self) -> set[str]:
        return {v.partition(" ")[2] for _p, v in self.seen if v and v.startswith("Bearer ")}


def assert_no_secret(texts: dict[str, str], secrets: set[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret ({len(secret)} characters) appears in {where}"


@contextlib.contextmanager
def gateway(upstream: str, tmp_path: Path) -> Iterator[str]:
    """`batchnb serve --upstream` with no credentials of its own: a batch's Authorization reaches the API."""
    port, log = free_port(), tmp_path / f"gateway-{free_port()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchnb.cli",
                "serve",
                "--port",
                str(port),
                "--upstream",
                upstream,
                "--log-level",
                "warning",
            ],
            env=ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/api/2.3/batch", proc, 30, log.read_text)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def token_endpoint(
    answer: Callable[[httpx.Request, int], httpx.Response] | None = None,
    api: Callable[[httpx.Request, str], httpx.Response] | None = None,
) -> tuple[httpx.MockTransport, dict[str, Any]]:
    """A mock transport: /oauth/token hands out t1, t2, … (or ``answer``); anything else goes to ``api``."""
    state: dict[str, Any] = {"tokens": 0, "requests": [], "lock": threading.Lock()}

    def handle(request: httpx.Request) -> httpx.Response:
        with state["lock"]:
            state["requests"].append(request)
            if request.url.path == "/oauth/token":
                state["tokens"] += 1
                n = state["tokens"]
        if request.url.path == "/oauth/token":
            if answer is not None:
                return answer(request, n)
            return httpx.Response(200, json={"access_token": f"t{n}", "token_type": "Bearer", "expires_in": 60})
        token = request.headers.get("authorization", "").partition(" ")[2]
        return api(request, token) if api is not None else httpx.Response(200, json={"token": token})

    return httpx.MockTransport(handle), state


def creds(**kw: Any) -> ClientCredentials:
    return ClientCredentials("http://idp.test/oauth/token", "analyst", "s3cret-value", **kw)


# ---------------------------------------------------------------- ClientCredentials itself


def test_repr_str_and_errors_never_hold_the_secret():
    auth = creds(scope="things")
    assert (
        repr(auth) == "ClientCredentials(token_url='http://idp.test/oauth/token', client_id='analyst', scope='things')"
    )
    assert "s3cret" not in str(auth)
    client = Client("http://api.test", auth=auth, mode="direct")
    assert repr(client) == "Client('http://api.test', auth=ClientCredentials(...), mode='direct')"

    def headers() -> dict[str, str]:
        return {"X-Api-Key": "key-123"}

    assert "auth=test_repr_str_and_errors_never_hold_the_secret.<locals>.headers()" in repr(
        Client("http://a.test", auth=headers)
    )


@pytest.mark.parametrize(
    ("kwargs", "pointers"),
    [
        ({"token_url": "idp.test/token"}, ["token_url"]),
        ({"client_id": ""}, ["client_id"]),
        ({"client_secret": None}, ["client_secret"]),
        ({"refresh_margin": -1, "client_auth": "cookie"}, ["refresh_margin", "client_auth"]),
    ],
)
def test_bad_arguments_are_named_before_anything_is_sent(kwargs, pointers):
    args = {"token_url": "http://idp.test/token", "client_id": "a", "client_secret": "b", **kwargs}
    with pytest.raises(BatchValidationError) as info:
        ClientCredentials(**args)
    assert info.value.pointers == pointers


def test_auth_and_a_token_together_are_refused():
    with pytest.raises(BatchValidationError) as info:
        Client("http://api.test", token="t", auth=creds())
    assert info.value.pointers == ["auth"]
    with pytest.raises(BatchValidationError) as info:
        AsyncClient("http://api.test", headers={"authorization": "Bearer x"}, auth=creds())
    assert info.value.pointers == ["auth"]


def test_pickling_keeps_the_configuration_and_drops_tokens_and_locks():
    transport, _state = token_endpoint()
    auth = creds(scope="a b", refresh_margin=5)

    async def one(a: ClientCredentials) -> str:
        async with httpx.AsyncClient(transport=transport) as http:
            return (await http.get("http://api.test/x", auth=a)).json()["token"]

    assert asyncio.run(one(auth)) == "t1"
    data = pickle.dumps(auth)
    assert b"t1" not in data.replace(b"http", b"").replace(b"scope", b"")  # no token, whatever the field names
    back = pickle.loads(data)
    assert (back.token_url, back.client_id, back.scope, back.refresh_margin) == (
        auth.token_url,
        auth.client_id,
        "a b",
        5,
    )
    assert back.tokens_fetched == 0 and asyncio.run(one(back)) == "t2"  # its own token, fetched afresh
    assert copy.deepcopy(auth).tokens_fetched == 0
    assert asyncio.run(one(auth)) == "t1"  # the original keeps its own


def test_the_token_request_is_rfc_6749_client_credentials():
    transport, state = token_endpoint()

    async def go(auth: ClientCredentials) -> None:
        async with httpx.AsyncClient(transport=transport) as http:
            await http.get("http://api.test/x", auth=auth, timeout=7)

    asyncio.run(go(ClientCredentials("http://idp.test/oauth/token", "my id", "se:cr+et", scope="read write")))
    token_request = state["requests"][0]
    assert (
        token_request.method == "POST" and token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    )
    assert dict(parse_qsl(token_request.content.decode())) == {
        "grant_type": "client_credentials",
        "scope": "read write",
    }
    scheme, _, value = token_request.headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(value).decode() == "my+id:se%3Acr%2Bet"  # form-encoded first
    assert token_request.extensions["timeout"]["read"] == 7  # the API request's timeout bounds it too
    assert state["requests"][1].headers["authorization"] == "Bearer t1"

    asyncio.run(go(ClientCredentials("http://idp.test/oauth/token", "id", "secret", client_auth="form")))
    form = dict(parse_qsl(state["requests"][2].content.decode()))
    assert form == {"grant_type": "client_credentials", "client_id": "id", "client_secret": "secret"}
    assert "authorization" not in state["requests"][2].headers


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            401,
            {"error": "invalid_client", "error_description": "unknown client s3cret-value"},
            "refused client 'analyst' (invalid_client: unknown client ***)",
        ),
        (400, {"error": "invalid_scope"}, "refused client 'analyst' (invalid_scope)"),
        (500, "<html>oops</html>", "refused client 'analyst' (HTTP 500)"),
        (200, {"token_type": "Bearer"}, "answered without a usable access_token"),
        (200, {"access_token": "abc", "token_type": "mac"}, "issued a token of type 'mac'; only Bearer tokens"),
    ],
)
def test_a_failing_token_endpoint_raises_authentication_error_without_the_secret(status, body, expected):
    def answer(request: httpx.Request, n: int) -> httpx.Response:
        return httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)

    transport, state = token_endpoint(answer)
    with httpx.Client(transport=transport) as http, pytest.raises(AuthenticationError) as info:
        http.get("http://api.test/x", auth=creds())
    assert expected in str(info.value) and "s3cret-value" not in str(info.value)
    assert "the token endpoint http://idp.test/oauth/token" in str(info.value)
    assert [r.url.path for r in state["requests"]] == ["/oauth/token"]  # nothing reached the API
    if isinstance(body, dict) and "error" in body:
        assert info.value.code == body["error"] and info.value.status == status


def test_many_requests_in_flight_cause_one_token_request_across_loops_and_threads():
    gate = threading.Event()

    def answer(request: httpx.Request, n: int) -> httpx.Response:
        gate.wait(10)  # held until every request waits for it
        return httpx.Response(200, json={"access_token": f"t{n}", "token_type": "Bearer", "expires_in": 60})

    transport, state = token_endpoint(answer)
    auth = creds()
    tokens: list[str] = []

    async def many() -> None:
        async with httpx.AsyncClient(transport=transport) as http:
            answers = await asyncio.gather(*(http.get("http://api.test/x", auth=auth) for _ in range(20)))
            tokens.extend(r.json()["token"] for r in answers)

    def sync_many() -> None:
        with httpx.Client(transport=transport) as http:
            tokens.append(http.get("http://api.test/y", auth=auth).json()["token"])

    threads = [threading.Thread(target=lambda: asyncio.run(many())) for _ in range(3)]
    threads += [threading.Thread(target=sync_many) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(state["requests"]) >= 1, 10, "no token request was made")
    gate.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert state["tokens"] == 1 and tokens == ["t1"] * 63


def test_a_refresh_margin_replaces_the_token_before_it_runs_out():
    # A margin longer than the lifetime: every request finds its token about to run out, and gets a new one first.
    transport, _state = token_endpoint(
        lambda r, n: httpx.Response(200, json={"access_token": f"t{n}", "token_type": "bearer", "expires_in": "5"})
    )
    auth = creds(refresh_margin=10)
    with httpx.Client(transport=transport) as http:
        seen = [http.get("http://api.test/x", auth=auth).json()["token"] for _ in range(3)]
    assert seen == ["t1", "t2", "t3"]
    # The default margin (a quarter of 5 s) keeps a fresh token.
    auth = creds()
    with httpx.Client(transport=transport) as http:
        assert [http.get("http://api.test/x", auth=auth).json()["token"] for _ in range(3)] == ["t4"] * 3


def test_a_401_gets_one_new_token_and_one_resend_and_invalidate_compares_the_token():
    transport, state = token_endpoint(api=lambda r, token: httpx.Response(401 if token != "t3" else 200, json={}))
    auth = creds()
    with httpx.Client(transport=transport) as http:
        r = http.get("http://api.test/x", auth=auth)
        assert r.status_code == 401  # t1 refused, t2 refused: the second 401 is the answer
        assert [q.url.path for q in state["requests"]] == ["/oauth/token", "/x", "/oauth/token", "/x"]
        auth.invalidate("Bearer t1")  # an old token: the current one (t2) stays
        assert auth._token == "t2"
        auth.invalidate("Bearer t2")
        assert http.get("http://api.test/x", auth=auth).status_code == 200 and state["tokens"] == 3


# ---------------------------------------------------------------- a run's 401s (mock batch server)


def batch_server(refuse: Callable[[str, dict], bool]) -> tuple[httpx.MockTransport, dict[str, Any]]:
    """A batch endpoint that answers each operation 201, or 401 when ``refuse(token, operation)``."""

    def api(request: httpx.Request, token: str) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"maxRequests": 40, "maxDepth": 2})
        ops = json.loads(request.content)["requests"]
        state["batches"].append((token, len(ops)))
        out = []
        for i, op in enumerate(ops):
            own = (op.get("headers") or {}).get("Authorization")
            refused = refuse(own.partition(" ")[2] if own else token, op)
            body = {"error": "invalid_token", "error_description": f"{token} is spent"} if refused else {"i": i}
            out.append({"method": op["method"], "path": op["path"], "status": 401 if refused else 201, "body": body})
        return httpx.Response(200, json={"responses": out})

    transport, state = token_endpoint(api=api)
    state["batches"] = []
    return transport, state


def test_forty_operations_refused_with_one_token_cause_one_refresh_and_go_again_once():
    transport, state = batch_server(lambda token, op: token == "t1")
    client = Client("http://gw.test", auth=creds(), transport=transport)
    result = client.submit(things(40), method="POST", path=THINGS, body=["key"])
    assert result["ok"].all() and state["tokens"] == 2
    assert state["batches"] == [("t1", 40), ("t2", 40)] and (result["attempts"] == 2).all()


def test_operations_refused_again_after_a_refresh_stop_the_run():
    transport, state = batch_server(lambda token, op: op["body"]["n"] % 2 == 0)  # whatever the token
    client = Client("http://gw.test", auth=creds(), transport=transport, concurrency=1)
    with pytest.raises(AuthenticationError) as info:
        client.submit(things(120), method="POST", path=THINGS, body=["key", "n"])
    partial = info.value.partial
    assert [n for _t, n in state["batches"]] == [40, 20]  # the first batch, then its refused half once more
    first = partial.iloc[:40]
    assert (first["status"].iloc[1::2] == 201).all() and (first["status"].iloc[0::2] == 401).all()
    assert first["error"].iloc[0] == "HTTP 401: invalid_token: t2 is spent"
    assert (partial["error"].iloc[40:] == "not run: unauthorized (invalid_token: t2 is spent)").all()
    assert "the run stopped sending" in str(info.value)


def test_a_batch_refused_401_as_a_whole_gets_a_new_token_and_goes_again():
    def api(request: httpx.Request, token: str) -> httpx.Response:
        if token == "t1":
            return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "token expired"}})
        ops = json.loads(request.content)["requests"]
        return httpx.Response(
            200, json={"responses": [{"method": o["method"], "path": o["path"], "status": 200} for o in ops]}
        )

    transport, state = token_endpoint(api=api)
    client = Client("http://gw.test", auth=creds(), transport=transport, max_requests=10, max_depth=2)
    result = client.submit(things(10), method="PUT", path=THINGS + "/{key}", body=["n"])
    assert result["ok"].all() and state["tokens"] == 2
    assert [r.url.path for r in state["requests"]] == [
        "/oauth/token",
        "/api/2.3/batch",
        "/oauth/token",
        "/api/2.3/batch",
    ]


def test_an_operation_with_its_own_authorization_is_the_users_in_direct_mode():
    def api(request: httpx.Request, token: str) -> httpx.Response:
        return httpx.Response(
            401 if token == "mine-bad" else 201, json={"error": "invalid_token"} if token == "mine-bad" else {}
        )

    transport, state = token_endpoint(api=api)
    ops = [
        batchnb.Operation("POST", THINGS, {"n": 1}),
        batchnb.Operation("POST", THINGS, {"n": 2}, headers={"Authorization": "Bearer mine-bad"}),
        batchnb.Operation("POST", THINGS, {"n": 3}),
    ]
    out = Client("http://api.test", auth=creds(), mode="direct", transport=transport).submit(ops)
    assert list(out["status"]) == [201, 401, 201]  # its 401 is its own: no refresh, the run goes on
    sent = [r.headers.get("authorization") for r in state["requests"] if r.url.path == THINGS]
    assert sent == ["Bearer t1", "Bearer mine-bad", "Bearer t1"] and state["tokens"] == 1


def test_a_callable_gives_headers_for_every_request():
    calls = []

    def headers() -> dict[str, str]:
        calls.append(1)
        return {"X-Api-Key": f"key-{len(calls)}"}

    transport, _state = token_endpoint(api=lambda r, t: httpx.Response(200, json={"key": r.headers["x-api-key"]}))
    out = Client("http://api.test", auth=headers, mode="direct", transport=transport).submit(
        [batchnb.Operation("GET", "/a"), batchnb.Operation("GET", "/b")]
    )
    assert [b["key"] for b in out["body"]] == ["key-1", "key-2"]


# ---------------------------------------------------------------- against the company API (real processes)


def _run_and_check(api: CompanyAPI, client: Client, rec: Recording, tmp_path: Path, rows: int, caplog) -> pd.DataFrame:
    journal = tmp_path / "run.jsonl"
    df = things(rows)
    result = client.submit(df, method="POST", path=THINGS, body=["key", "n"], journal=str(journal))
    stats = api.stats()
    assert result["ok"].all(), result.loc[~result["ok"], "error"].value_counts().to_dict()
    assert stats["created"] == rows and stats["duplicates"] == 0, stats
    assert stats["tokens"] > 1 and len(rec.tokens()) == stats["tokens"], stats
    secrets = rec.secrets() | {api.client_secret}
    assert_no_secret(
        {
            "the result": result.to_csv() + repr(result),
            "the client's repr": repr(client),
            "the journal": journal.read_text(),
            "the logs": caplog.text,
        },
        secrets,
    )
    return result


# Each test's API answers after 20 ms: the run's length then has a floor (rows x 20 ms / 2 in flight), so it
# outlives several tokens however fast the machine is.


@pytest.mark.slow
def test_direct_mode_outlives_several_tokens(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with CompanyAPI(token_ttl=2, delay=0.02) as api:
        rec = Recording()
        auth = ClientCredentials(api.token_url, api.client_id, api.client_secret)
        client = Client(api.url, mode="direct", auth=auth, concurrency=2, max_requests=20, transport=rec)
        _run_and_check(api, client, rec, tmp_path, 400, caplog)


@pytest.mark.slow
def test_batch_mode_through_a_gateway_outlives_several_tokens(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with CompanyAPI(token_ttl=3, delay=0.02) as api, gateway(api.url, tmp_path) as gw:
        rec = Recording()
        auth = ClientCredentials(api.token_url, api.client_id, api.client_secret)
        client = Client(gw, auth=auth, concurrency=2, max_requests=20, transport=rec)
        _run_and_check(api, client, rec, tmp_path, 500, caplog)
        # The token requests went out through the client's own transport, as the batches did.
        assert {p for p, _a in rec.seen} == {"/oauth/token", "/api/2.3/batch"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "gateway"])
def test_a_wrong_client_secret_is_a_clear_error_and_nothing_reaches_the_api(tmp_path, mode):
    with (
        CompanyAPI() as api,
        gateway(api.url, tmp_path) if mode == "gateway" else contextlib.nullcontext(api.url) as url,
    ):
        auth = ClientCredentials(api.token_url, api.client_id, "wrong-" + api.client_secret)
        client = Client(url, auth=auth, mode="direct" if mode == "direct" else "batch")
        with pytest.raises(AuthenticationError) as info:
            client.submit(things(30), method="POST", path=THINGS, body=["key"])
        assert "refused client 'analyst' (invalid_client: unknown client or wrong secret)" in str(info.value)
        assert api.client_secret not in str(info.value) and api.client_secret not in repr(info.value.partial)
        assert api.stats()["requests"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["direct", "gateway"])
def test_an_api_that_keeps_refusing_stops_the_run_and_resume_sends_the_rest(tmp_path, mode):
    journal = str(tmp_path / "run.jsonl")
    df = things(200)
    with (
        CompanyAPI(token_ttl=30) as api,
        gateway(api.url, tmp_path) if mode == "gateway" else contextlib.nullcontext(api.url) as url,
    ):
        api.refuse(True)  # a revoked client: tokens are issued, and refused
        auth = ClientCredentials(api.token_url, api.client_id, api.client_secret)
        options = dict(mode="direct" if mode == "direct" else "batch", concurrency=1, max_requests=20)
        with pytest.raises(AuthenticationError) as info:
            Client(url, auth=auth, **options).submit(df, method="POST", path=THINGS, body=["key"], journal=journal)
        partial = info.value.partial
        refused, rest = partial.iloc[:20], partial.iloc[20:]
        assert (refused["status"] == 401).all() and (
            refused["error"] == "HTTP 401: invalid_token: the access token is not valid"
        ).all()
        assert (rest["error"] == "not run: unauthorized (invalid_token: the access token is not valid)").all()
        assert (
            api.stats()["requests"] == 40
        )  # one batch's worth, each refused twice (the second time after a new token)
        api.refuse(False)
        result = Client(url, auth=auth, **options).submit(
            df, method="POST", path=THINGS, body=["key"], journal=journal, resume=True
        )
        assert result["ok"].all()
        stats = api.stats()
        assert stats["created"] == 200 and stats["duplicates"] == 0
        # A second resume finds every row done: nothing more is sent.
        again = Client(url, auth=auth, **options).submit(
            df, method="POST", path=THINGS, body=["key"], journal=journal, resume=True
        )
        assert again["ok"].all() and api.stats()["requests"] == stats["requests"]


@pytest.mark.slow
def test_the_cli_gets_tokens_from_the_environment_secret(tmp_path):
    csv = tmp_path / "things.csv"
    things(300).to_csv(csv, index=False)
    out, journal = tmp_path / "out.csv", tmp_path / "run.jsonl"
    with CompanyAPI(token_ttl=2, delay=0.02) as api:
        args = [sys.executable, "-m", "batchnb.cli", "run", str(csv), "--url", api.url, "--direct"]
        args += ["--token-url", api.token_url, "--client-id", api.client_id, "--method", "POST", "--path", THINGS]
        args += ["--body-columns", "key,n", "--concurrency", "2"]
        env = {**ENV, "BATCHNB_CLIENT_SECRET": api.client_secret}
        r = subprocess.run(
            [*args, "-o", str(out), "--journal", str(journal)], capture_output=True, text=True, env=env, timeout=120
        )
        stats = api.stats()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "300 of 300 rows ok" in r.stdout
        assert stats["created"] == 300 and stats["duplicates"] == 0 and stats["tokens"] > 1, stats
        outputs = {
            "stdout": r.stdout,
            "stderr": r.stderr,
            "the output file": out.read_text(),
            "the journal": journal.read_text(),
        }
        assert_no_secret(outputs, {api.client_secret})
        for where, text in outputs.items():
            assert not TOKEN_LIKE.search(text), f"something shaped like a token appears in {where}"
        # Without a secret: a usage error that says where it comes from; nothing sent.
        env.pop("BATCHNB_CLIENT_SECRET")
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2 and "set BATCHNB_CLIENT_SECRET, or give --client-secret-file FILE" in r.stderr
        secret_file = tmp_path / "secret"
        secret_file.write_text("not-the-secret-at-all\n")
        r = subprocess.run(
            [*args, "--client-secret-file", str(secret_file)], capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode == 1 and "invalid_client: unknown client or wrong secret" in r.stderr, r.stderr
        assert api.stats()["requests"] == stats["requests"]


@pytest.mark.slow
def test_dask_workers_get_the_flow_through_the_plugin_never_the_graph(tmp_path):
    distributed = pytest.importorskip("distributed")
    dd = pytest.importorskip("dask.dataframe")
    import batchnb.dask as bd

    with (
        CompanyAPI(token_ttl=2, delay=0.02) as api,
        gateway(api.url, tmp_path) as gw,
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as local,
        distributed.Client(local) as cluster,
    ):
        auth = ClientCredentials(api.token_url, api.client_id, api.client_secret)
        result = bd.submit(
            dd.from_pandas(things(400), npartitions=2),
            gw,
            auth=auth,
            method="POST",
            path=THINGS,
            body=["key", "n"],
            journal=tmp_path / "j",
            concurrency=2,
            client=cluster,
            wait=False,
        )
        wait_until(lambda: api.stats()["requests"] > 0, 60, "no operation reached the API")
        specs = cluster.run_on_scheduler(
            lambda dask_scheduler: [
                pickle.dumps(ts.run_spec) for ts in dask_scheduler.tasks.values() if ts.run_spec is not None
            ]
        )
        distributed.wait(distributed.futures_of(result), timeout=120)
        frame = result.compute()
        stats = api.stats()
    assert frame["ok"].all(), frame.loc[~frame["ok"], "error"].value_counts().to_dict()
    assert stats["created"] == 400 and stats["duplicates"] == 0 and stats["tokens"] > 1, stats
    assert specs and not any(api.client_secret.encode() in spec for spec in specs)
    assert_no_secret({"the result": frame.to_csv()}, {api.client_secret})
    journals = "".join(p.read_text() for p in (tmp_path / "j").glob("*.jsonl"))
    assert journals and not TOKEN_LIKE.search(journals) and api.client_secret not in journals


@pytest.mark.slow
def test_a_resume_sends_a_refused_row_with_the_rows_that_answered_424_because_of_it(tmp_path):
    journal = str(tmp_path / "run.jsonl")
    ops = [
        batchnb.Operation("POST", THINGS, {"key": "a"}, name="a"),
        batchnb.Operation("PUT", f"{THINGS}/{batchnb.ref('a', '$.id')}", {"key": "a", "seen": True}),
        batchnb.Operation("POST", THINGS, {"key": "b"}),
    ]
    with CompanyAPI() as api, gateway(api.url, tmp_path) as gw:
        auth = ClientCredentials(api.token_url, api.client_id, api.client_secret)
        api.refuse(True)
        with pytest.raises(AuthenticationError) as info:
            Client(gw, auth=auth).submit(ops, journal=journal)
        assert list(info.value.partial["status"]) == [401, 424, 401]
        api.refuse(False)
        result = Client(gw, auth=auth).submit(ops, journal=journal, resume=True)
        assert list(result["status"]) == [201, 200, 201] and result["body"][1]["seen"] is True
        assert api.stats()["created"] == 2


def test_a_sync_client_keeps_its_token_from_call_to_call():
    transport, state = token_endpoint()
    client = Client("http://api.test", auth=creds(), mode="direct", transport=transport)
    for _ in range(3):
        client.submit([batchnb.Operation("GET", "/a")])
    assert state["tokens"] == 1


@pytest.mark.slow
def test_a_token_request_that_is_stuck_is_not_waited_for_past_the_request_timeout():
    stuck = threading.Event()

    def answer(request: httpx.Request, n: int) -> httpx.Response:
        if n == 1:
            stuck.wait(30)  # the first token request hangs (its own timeout is the transport's business)
        return httpx.Response(200, json={"access_token": f"t{n}", "token_type": "Bearer", "expires_in": 60})

    transport, state = token_endpoint(answer)
    auth = creds()
    first: list[str] = []
    hung = threading.Thread(
        target=lambda: first.append(httpx.Client(transport=transport).get("http://api.test/x", auth=auth).text)
    )
    hung.start()
    wait_until(lambda: state["tokens"] == 1, 10, "the first token request was not made")
    try:
        with httpx.Client(transport=transport, timeout=0.1) as http:
            assert http.get("http://api.test/y", auth=auth).json()["token"] == "t2"
    finally:
        stuck.set()
        hung.join(30)
    assert first and state["tokens"] == 2
