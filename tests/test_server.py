"""The batch server (batchnb.server.app) end to end over real loopback HTTP: uvicorn on 127.0.0.1, the demo API on SQLite."""

import json
import sqlite3

import httpx
import pytest

from batchnb import (
    AuthenticationError,
    Batch,
    Client,
    LocalServer,
    Operation,
    PayloadTooLargeError,
    RateLimitedError,
    UnsupportedMediaTypeError,
    ref,
)
from batchnb.demo import examples
from batchnb.server import Limits
from tests.support import count

API = "/api/2.1/scheduling"


def bearer(server, tenant=None):
    return {"Authorization": f"Bearer {server.credentials(tenant)['token']}"}


def post_raw(server, payload, headers=None, **kw):
    h = {"Content-Type": "application/json", **bearer(server), **(headers or {})}
    content = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return httpx.post(server.url + "/api/2.3/batch", content=content, headers=h, timeout=30, **kw)


def test_limits_endpoint(server):
    r = httpx.get(server.url + "/api/2.3/batch")
    assert r.status_code == 200 and r.json()["maxRequests"] == 50 and r.json()["maxDepth"] == 4


def test_chained_example_carries_the_created_company_id(server):
    out = server.client.submit(examples.chained())
    assert [r.status for r in out] == [201, 201, 201]
    company_id = out[0].body["id"]
    assert out[1].path == f"{API}/companies/{company_id}/services"
    assert out[2].path == f"{API}/companies/{company_id}/staff"
    assert out[2].body["services"] == [{"id": out[1].body["id"]}]
    assert out[1].body["companyId"] == company_id


def test_three_services_and_mixed_examples(server):
    company_id = server.client.submit(examples.chained())[0].body["id"]
    three = server.client.submit(examples.three_services(company_id))
    assert [r.status for r in three] == [201, 201, 201]
    mixed = server.client.submit(examples.mixed(company_id))
    assert [r.status for r in mixed] == [200, 200, 201, 200, 404, 204]
    assert mixed[1].body["name"] == "My Location (renamed)"
    names = (
        {s["name"] for s in mixed[3].body["items"]}
        if isinstance(mixed[3].body, dict)
        else {s["name"] for s in mixed[3].body}
    )
    assert {"Haircut", "Colour", "Shave", "Massage"} <= names


def test_nested_example(server):
    out = server.client.submit(examples.nested())
    assert out[0].status == 201
    assert out[0].responses[0].status == 201 and out[0].responses[0].responses[0].status == 201
    assert out[1].status == 400 and out[1].responses[0].status == 424
    assert "parent" in out[1].responses[0].body["error"]["message"]


def test_chain_of_424s(server):
    batch = Batch(
        [
            Operation("GET", f"{API}/companies/co_000000000000", name="missing"),
            Operation("POST", f"{API}/companies/{ref('missing', '$.id')}/services", {"name": "s"}, name="s1"),
            Operation("POST", f"{API}/companies/{ref('s1', '$.companyId')}/services", {"name": "s"}, name="s2"),
            Operation("POST", f"{API}/companies", {"name": "still runs"}),
        ]
    )
    out = server.client.submit(batch)
    assert [r.status for r in out] == [404, 424, 424, 201]


def test_per_operation_credentials(server):
    other = server.credentials("other")["token"]
    batch = Batch(
        [
            Operation("POST", f"{API}/companies", {"name": "mine"}, name="mine"),
            Operation("POST", f"{API}/companies", {"name": "wrong"}, headers={"Authorization": "Bearer not-a-key"}),
            Operation(
                "POST",
                f"{API}/companies",
                {"name": "theirs"},
                name="theirs",
                headers={"Authorization": f"Bearer {other}"},
            ),
            Operation("GET", f"{API}/companies/{ref('theirs', '$.id')}"),
            Operation("GET", f"{API}/companies/{ref('theirs', '$.id')}", headers={"Authorization": f"Bearer {other}"}),
        ]
    )
    out = server.client.submit(batch)
    assert [r.status for r in out] == [201, 401, 201, 404, 200]


def test_query_parameter_credentials(server):
    creds = server.credentials()
    r = httpx.post(
        server.url + "/api/2.3/batch",
        params={"apiKey": creds["api_key"], "token": creds["token"]},
        json={"requests": [{"method": "POST", "path": f"{API}/companies", "body": {"name": "q"}}]},
    )
    assert r.status_code == 200 and r.json()["responses"][0]["status"] == 201
    client = Client(server.url, **creds, credentials_in="query")
    assert client.submit(Batch([Operation("GET", f"{API}/companies")]))[0].status == 200


def test_raw_json_with_plain_httpx_is_wire_compatible(server):
    payload = {
        "requests": [
            {"method": "post", "path": f"{API}/companies", "name": "add-company", "body": {"name": "Raw"}},
            {
                "method": "POST",
                "path": f"{API}/companies/${{result=add-company:$.id}}/services",
                "name": "add-service",
                "body": {"name": "Raw service", "duration": 20},
                "headers": "X-Note: hello",
            },
            {
                "method": "POST",
                "path": f"{API}/companies/${{result=add-company:$.id}}/staff",
                "body": {"firstName": "R", "lastName": "W", "services": [{"id": "${result=add-service:$.id}"}]},
                "requests": [{"method": "GET", "path": f"{API}/companies/${{result=add-company:$.id}}/staff"}],
            },
        ]
    }
    r = post_raw(server, payload)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    resp = r.json()["responses"]
    assert [x["status"] for x in resp] == [201, 201, 201]
    cid = resp[0]["body"]["id"]
    assert resp[1]["path"] == f"{API}/companies/{cid}/services" and resp[1]["name"] == "add-service"
    assert isinstance(resp[0]["duration"], float)
    assert resp[2]["responses"][0]["status"] == 200
    assert resp[0]["headers"]["Location"].endswith(cid)


@pytest.mark.parametrize(
    "payload, pointer",
    [
        (b"{not json", ""),
        ({"requests": "nope"}, "requests"),
        ({"requests": [{"method": "GET"}]}, "requests[0].path"),
        ({"requests": [{"method": "YELL", "path": "/x"}]}, "requests[0].method"),
        ({"requests": [{"method": "GET", "path": "http://evil.example/"}]}, "requests[0].path"),
        (
            {"requests": [{"method": "GET", "path": "/x", "name": "a"}, {"method": "GET", "path": "/y", "name": "a"}]},
            "requests[1].name",
        ),
        ({"requests": [{"method": "GET", "path": "/x/${result=nobody:$.id}"}]}, "requests[0].path"),
        (
            {
                "requests": [
                    {"method": "GET", "path": "/x", "body": "${result=a:$[?}"},
                    {"method": "GET", "path": "/y", "name": "a"},
                ]
            },
            "requests[0].body",
        ),
    ],
)
def test_400_with_pointers(server, payload, pointer):
    r = post_raw(server, payload)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["message"] and pointer in [d["pointer"] for d in err["details"]]


@pytest.mark.slow
def test_a_400_lists_the_first_100_problems_and_counts_them_all(server):
    # A megabyte of bad header names: one problem each.
    names = [f" {i:x}" for i in range(80_000)]
    raw = json.dumps(
        {"requests": [{"method": "GET", "path": "/x", "headers": dict.fromkeys(names, "")}]}, separators=(",", ":")
    )
    assert len(raw) <= Limits().max_body_bytes
    r = post_raw(server, raw)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["detailCount"] == 80_000 and "80000 problem(s)" in err["message"]
    assert [d["pointer"] for d in err["details"]] == [f"requests[0].headers.{n}" for n in names[:100]]
    assert len(r.content) < 20_000, len(r.content)
    small = post_raw(server, {"requests": [{"method": "GET", "path": "/x", "headers": {" a": ""}}]}).json()["error"]
    assert "detailCount" not in small and len(small["details"]) == 1


def test_401_without_or_with_wrong_credentials_runs_nothing(fresh_server):
    body = {"requests": [{"method": "POST", "path": f"{API}/companies", "body": {"name": "x"}}]}
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        r = post_raw(fresh_server, body, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["message"] == "Authentication is required to execute this request"
    r = httpx.post(fresh_server.url + "/api/2.3/batch", json=body, params={"apiKey": "demo", "token": "wrong"})
    assert r.status_code == 401
    assert count(fresh_server.db) == 0
    with pytest.raises(AuthenticationError) as info:
        Client(fresh_server.url, token="wrong").submit(Batch(body["requests"]))
    assert info.value.status == 401 and "Authentication is required" in str(info.value)


def test_413_for_count_depth_and_size(server):
    too_many = {"requests": [{"method": "GET", "path": "/x"}] * 51}
    r = post_raw(server, too_many)
    assert r.status_code == 413 and r.json()["error"]["details"][0]["pointer"] == "requests"
    deep = {"method": "GET", "path": "/x"}
    for _ in range(4):
        deep = {"method": "GET", "path": "/x", "requests": [deep]}
    r = post_raw(server, {"requests": [deep]})
    assert r.status_code == 413 and "requests[0].requests[0].requests[0].requests[0].requests[0]" in r.text
    r = post_raw(server, {"requests": [{"method": "POST", "path": "/x", "body": "x" * 2_000_000}]})
    assert r.status_code == 413
    with pytest.raises(PayloadTooLargeError):
        Client(server.url, **server.credentials()).send(Batch([Operation("GET", "/x")] * 51))


def test_415_for_other_media_types(server):
    r = post_raw(server, b'{"requests": []}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["details"][0]["pointer"] == "headers.Content-Type"
    with pytest.raises(UnsupportedMediaTypeError):
        raise_for(r)


def raise_for(r):
    from batchnb._exceptions import http_error

    raise http_error(r.status_code, r.json())


def test_429_with_retry_after(tmp_path):
    with LocalServer(tmp_path / "db.sqlite3", limits=Limits(max_concurrent_batches=0)) as srv:
        r = post_raw(srv, {"requests": [{"method": "GET", "path": f"{API}/companies"}]})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        with pytest.raises(RateLimitedError) as info:
            srv.client.send(Batch([Operation("GET", f"{API}/companies")]))
        assert info.value.retry_after == 1.0


def test_bad_third_operation_creates_nothing(fresh_server):
    ops = [
        {"method": "POST", "path": f"{API}/companies", "body": {"name": "one"}},
        {"method": "POST", "path": f"{API}/companies", "body": {"name": "two"}},
        {"method": "POST", "path": "//elsewhere/companies", "body": {"name": "three"}},
    ]
    assert post_raw(fresh_server, {"requests": ops}).status_code == 400
    with pytest.raises(Exception) as info:
        fresh_server.client.submit(Batch(ops))
    assert "requests[2].path" in str(info.value)
    assert count(fresh_server.db) == 0


def test_created_rows_are_in_the_database(fresh_server):
    out = fresh_server.client.submit(examples.chained("Persisted"))
    with sqlite3.connect(fresh_server.db) as conn:
        names = [r[0] for r in conn.execute("select name from companies")]
    assert names == ["Persisted"] and out[0].ok


def test_gateway_in_front_of_another_http_api(server):
    """A batch server with --upstream runs batches for an API that has none (here: the demo API over HTTP)."""
    demo_auth = {"Authorization": f"Bearer {server.credentials()['token']}"}
    with LocalServer(upstream=server.url, tenants=("gateway",)) as gateway:
        chained = examples.chained("Through the gateway")
        for _p, op in chained.walk():
            op.headers = dict(demo_auth)  # the gateway's own key is never forwarded: operations carry the API's
        out = gateway.client.submit(chained)
        assert [r.status for r in out] == [201, 201, 201]
        assert out[0].body["id"] in out[2].path
        # Without the API's credentials the API itself says no, and only that operation fails.
        mixed = gateway.client.submit(
            Batch([Operation("GET", f"{API}/companies"), Operation("GET", f"{API}/companies", headers=demo_auth)])
        )
        assert [r.status for r in mixed] == [401, 200]


# ---------------------------------------------------------------- idempotency keys


@pytest.mark.slow
def test_the_demo_server_says_it_honours_keys_and_a_gateway_says_what_its_operator_says(server):
    assert httpx.get(server.url + "/api/2.3/batch").json()["idempotency"] is True
    with LocalServer(upstream=server.url, tenants=("gw",)) as gateway:
        assert httpx.get(gateway.url + "/api/2.3/batch").json()["idempotency"] is False
    with LocalServer(upstream=server.url, tenants=("gw",), upstream_idempotency=True) as gateway:
        assert httpx.get(gateway.url + "/api/2.3/batch").json()["idempotency"] is True


def test_a_keyed_operation_sent_twice_runs_once_and_its_repeat_says_so(fresh_server):
    op = {
        "method": "POST",
        "path": f"{API}/companies",
        "body": {"name": "Keyed"},
        "headers": {"Idempotency-Key": '"twice"'},
    }
    first = post_raw(fresh_server, {"requests": [op]}).json()["responses"][0]
    again = post_raw(fresh_server, {"requests": [op]}).json()["responses"][0]
    assert first["status"] == again["status"] == 201 and first["body"] == again["body"]
    assert again["headers"]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.get("headers", {})
    assert count(fresh_server.db) == 1


def test_the_gateway_passes_the_key_on_with_each_operation():
    from tests.support.faults import RecordingUpstream, Reply

    with (
        RecordingUpstream(lambda req: Reply(201, {"id": "x"})) as upstream,
        LocalServer(upstream=upstream.url, tenants=("gw",)) as gateway,
    ):
        gateway.client.submit(
            Batch(
                [
                    Operation("POST", "/things", {"n": 1}, headers={"Idempotency-Key": '"k-1"'}),
                    Operation("POST", "/things", {"n": 2}),
                ]
            ),
            idempotency=False,
        )
        keys = [req.header("idempotency-key") for req in upstream.requests]
    assert keys == ['"k-1"', None]


# ---------------------------------------------------------------- one request cannot stop the server


@pytest.mark.slow
def test_a_slow_body_holds_no_slot_and_is_refused_with_408(tmp_path):
    import socket

    limits = Limits(max_concurrent_batches=2, body_timeout=1.0)
    with LocalServer(tmp_path / "db.sqlite3", limits=limits) as srv:
        head = (
            f"POST /api/2.3/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {srv.credentials()['token']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
        ).encode()
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(5)]
        try:
            for sock in slow:
                sock.sendall(head)
            # Five bodies on their way, two slots: an ordinary batch still runs.
            r = post_raw(srv, {"requests": [{"method": "GET", "path": f"{API}/companies"}]})
            assert r.status_code == 200, r.text
            for sock in slow:
                reply = b""
                while b"did not arrive" not in reply and (chunk := sock.recv(4096)):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 408") and b"body did not arrive within 1 s" in reply, reply
        finally:
            for sock in slow:
                sock.close()


@pytest.mark.slow
def test_a_slow_head_is_answered_408_and_its_connection_closed(tmp_path):
    import socket

    def read_until_closed(sock: socket.socket) -> bytes:
        reply = b""
        while chunk := sock.recv(4096):  # the socket's timeout bounds each wait
            reply += chunk
        return reply

    with LocalServer(tmp_path / "db.sqlite3", limits=Limits(head_timeout=0.5)) as srv:
        silent, partial, kept = (socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(3))
        try:
            partial.sendall(b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\n")
            # A kept-alive connection: one whole request, then only the start of the next one's head.
            kept.sendall(b"GET /api/2.3/batch HTTP/1.1\r\nHost: x\r\n\r\n")
            first = b""
            while b"\r\n\r\n" not in first or len(first.partition(b"\r\n\r\n")[2]) < int(
                first.lower().split(b"content-length: ")[1].split(b"\r\n")[0]
            ):
                first += kept.recv(4096)
            assert first.startswith(b"HTTP/1.1 200"), first
            kept.sendall(b"GET /api/2.3/batch HTTP/1.1\r\nHo")
            # Meanwhile the server answers whole requests as ever.
            assert httpx.get(srv.url + "/api/2.3/batch", trust_env=False).status_code == 200
            for sock in (silent, partial, kept):
                reply = read_until_closed(sock)
                assert reply.startswith(b"HTTP/1.1 408"), reply
                assert reply.endswith(
                    b"the request's line and headers did not arrive within 0.5 s\", "
                    b'"details": [{"pointer": "", "message": "incomplete request head"}]}}'
                ), reply
        finally:
            for sock in (silent, partial, kept):
                sock.close()


def test_a_key_written_twice_is_refused_not_silently_dropped(fresh_server):
    raw = (
        f'{{"requests": [{{"method": "POST", "method": "GET", "path": "{API}/companies", "body": {{"name": "x"}}}}]}}'
    ).encode()
    r = post_raw(fresh_server, raw)
    assert r.status_code == 400
    assert r.json()["error"]["details"] == [
        {"pointer": "requests[0]", "message": "the key 'method' appears twice in one object"}
    ]
    assert count(fresh_server.db) == 0


def test_the_gateway_keeps_integers_beyond_64_bits_exact_and_no_cookie():
    from tests.support.faults import RecordingUpstream, Reply

    def respond(req):
        if req.path == "/login":
            return Reply(200, {"ok": True}, {"Set-Cookie": "session=caller-a; Path=/"})
        return Reply(200, b'{"n": 1180591620717411303424}')

    with RecordingUpstream(respond) as up, LocalServer(upstream=up.url, tenants=("gate",)) as gw:
        token = gw.credentials("gate")["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        first = httpx.post(
            gw.url + "/api/2.3/batch",
            headers=headers,
            timeout=30,
            content=b'{"requests": [{"method": "GET", "path": "/login"}]}',
        )
        second = httpx.post(
            gw.url + "/api/2.3/batch",
            headers=headers,
            timeout=30,
            content=b'{"requests": [{"method": "POST", "path": "/n", "body": {"n": 1180591620717411303424}}]}',
        )
    assert first.status_code == second.status_code == 200, second.text
    assert b'"body":{"n":1180591620717411303424}' in second.content
    posted = up.requests[1]
    assert posted.body == b'{"n":1180591620717411303424}'
    assert posted.header("cookie") is None, "the upstream's cookie for one batch went out with another"


def test_an_answer_too_deep_for_the_batch_is_a_502_and_the_batch_answers(tmp_path):
    from tests.support.faults import RecordingUpstream, Reply

    deep = b"[" * 300 + b"]" * 300
    with (
        RecordingUpstream(lambda req: Reply(200, deep if req.path == "/deep" else {"made": True})) as up,
        LocalServer(upstream=up.url, tenants=("gate",)) as gw,
    ):
        r = httpx.post(
            gw.url + "/api/2.3/batch",
            timeout=30,
            headers={"Authorization": f"Bearer {gw.credentials('gate')['token']}", "Content-Type": "application/json"},
            json={"requests": [{"method": "POST", "path": "/write"}, {"method": "GET", "path": "/deep"}]},
        )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text[:300]
    out = r.json()["responses"]
    assert [x["status"] for x in out] == [200, 502] and out[0]["body"] == {"made": True}
    assert "nested too deeply" in out[1]["body"]["error"]["message"]


# ---------------------------------------------------------------- operations of one batch in flight at once


def _slow_upstream(delay: float = 0.05):
    import asyncio as _asyncio

    from tests.support.faults import RecordingUpstream, Reply

    state = {"now": 0, "most": 0}

    async def respond(req):
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        try:
            await _asyncio.sleep(delay)
        finally:
            state["now"] -= 1
        return Reply(400 if req.path.endswith("/fail") else 201, {"id": req.path.rsplit("/", 1)[-1]})

    return RecordingUpstream(respond), state


def test_the_server_announces_how_many_operations_it_runs_at_once_and_refuses_more(server):
    announced = httpx.get(server.url + "/api/2.3/batch").json()["maxParallel"]
    assert announced == Limits().max_parallel
    op = {"method": "GET", "path": f"{API}/companies"}
    for parallel, message in [
        (announced + 1, f"asks for {announced + 1} operations at once; this server runs at most {announced}"),
        (0, "must be a whole number, at least 1"),
        ("4", "must be a whole number, at least 1"),
    ]:
        r = post_raw(server, {"requests": [op], "parallel": parallel})
        assert r.status_code == 400 and {"pointer": "parallel", "message": message} in r.json()["error"]["details"], (
            r.text
        )


@pytest.mark.slow
def test_a_gateway_runs_a_batchs_operations_at_once_when_asked_and_keeps_every_dependency():
    upstream, state = _slow_upstream()
    ops = [Operation("POST", f"/things/{i}", name=f"t{i}") for i in range(12)]
    ops.append(
        Operation(
            "POST",
            f"/after/{ref('t3', '$.id')}",
            name="after",
            requests=[Operation("POST", f"/child/{ref('after', '$.id')}")],
        )
    )
    ops.append(Operation("POST", "/x/fail", name="bad", requests=[Operation("POST", "/never")]))
    ops.append(Operation("POST", f"/needs/{ref('bad', '$.id')}"))
    with upstream, LocalServer(upstream=upstream.url, tenants=("gw",)) as gateway:
        sequential = gateway.client.submit(Batch(ops), idempotency=False)
        assert state["most"] == 1
        first_run = len(upstream.requests)
        # One batch at a time: with more, the plan would spread these 15 over several batches.
        concurrent = gateway.client.submit(Batch(ops), parallel=6, concurrency=1, idempotency=False)
        assert state["most"] == 6
        order = [req.path for req in upstream.requests[first_run:]]

    def outcome(responses):
        return [(r.name, r.path, r.status, r.body) for top in responses for _p, r in top.walk()]

    assert outcome(concurrent) == outcome(sequential)  # places, statuses, 424 chain and messages alike
    assert [r.status for r in concurrent[-3:]] == [201, 400, 424]
    assert order.index("/after/3") > order.index("/things/3") and order.index("/child/3") > order.index("/after/3")
    assert "/never" not in order


@pytest.mark.slow
def test_the_client_asks_no_more_than_the_server_runs_and_direct_mode_honours_parallel():
    upstream, state = _slow_upstream(0.02)
    ops = [Operation("POST", f"/things/{i}") for i in range(20)]
    with upstream, LocalServer(upstream=upstream.url, tenants=("gw",), limits=Limits(max_parallel=3)) as gateway:
        result = gateway.client.submit(ops, parallel=10, concurrency=1, idempotency=False, progress=False)
        assert result["ok"].all() and state["most"] == 3  # held to the 3 the server announced
        state["most"] = 0
        direct = Client(upstream.url, token="t", mode="direct")
        result = direct.submit(ops, parallel=5, concurrency=1, progress=False)
        assert result["ok"].all() and state["most"] == 5


def _gathering_upstream(total: int, want: int, patience: float = 15.0):
    """An API that answers nothing until ``want`` requests wait at once (or every request still to come):
    then it answers them all, one round. A gateway that ever leaves fewer in flight while more work
    remains makes a short round, counted in ``state["short"]`` (after ``patience`` seconds, so that the
    test fails rather than hangs)."""
    import asyncio as _asyncio

    from tests.support.faults import RecordingUpstream, Reply

    state = {"waiting": 0, "released": 0, "rounds": 0, "short": 0, "sizes": []}
    round_open: dict[str, _asyncio.Event] = {}

    async def respond(req):
        gate = round_open.setdefault("now", _asyncio.Event())
        state["waiting"] += 1
        if state["waiting"] >= min(want, total - state["released"]):
            _release(gate)
        else:
            try:
                await _asyncio.wait_for(gate.wait(), patience)
            except TimeoutError:
                if round_open.get("now") is gate:
                    state["short"] += 1
                    _release(gate)
        return Reply(201, {"id": req.path.rsplit("/", 1)[-1]})

    def _release(gate) -> None:
        state["sizes"].append(state["waiting"])
        state["released"] += state["waiting"]
        state["waiting"] = 0
        state["rounds"] += 1
        round_open["now"] = _asyncio.Event()  # the next round's
        gate.set()

    return RecordingUpstream(respond), state


@pytest.mark.slow
def test_a_gateway_keeps_parallel_operations_in_flight_round_after_round_on_connections_it_keeps():
    """With parallel=16 and 2 batches at once, every round of the API holds 32 operations: no batch
    ends a round with a few alone (batches of 48, not 50), and each operation in flight has a
    connection of its own, kept from round to round (httpx's one pool for all kept 20 alive)."""
    rows, parallel, concurrency = 192, 16, 2
    upstream, state = _gathering_upstream(rows, parallel * concurrency)
    ops = [Operation("POST", f"/things/{i}") for i in range(rows)]
    with upstream, LocalServer(upstream=upstream.url, tenants=("gw",)) as gateway:
        result = gateway.client.submit(
            ops, parallel=parallel, concurrency=concurrency, idempotency=False, progress=False
        )
        assert result["ok"].all(), result.loc[~result["ok"], ["status", "error"]].head()
        assert state["short"] == 0 and state["sizes"] == [32] * 6, state
        assert len(upstream.requests) == rows
        assert upstream.connections == parallel * concurrency


def test_a_batch_answer_says_where_its_time_went(server):
    """Server-Timing: each phase between the socket and the API, in milliseconds; the API's phase holds the operations' durations."""
    from batchnb._timing import PHASES, read_header

    payload = {
        "requests": [
            {"method": "POST", "path": "/api/2.1/scheduling/companies", "body": {"name": f"Timed {i}"}}
            for i in range(5)
        ]
    }
    r = post_raw(server, payload)
    assert r.status_code == 200
    phases = read_header(r.headers["server-timing"])
    assert set(phases) == set(PHASES)
    assert all(ms >= 0 for ms in phases.values())
    durations = sum(op["duration"] for op in r.json()["responses"])
    assert phases["api"] == pytest.approx(durations, abs=0.01 * len(payload["requests"]))
    assert "Bearer" not in r.headers["server-timing"]
    # A refused batch says nothing of phases it never reached.
    assert "server-timing" not in post_raw(server, {"requests": [{"method": "GET"}]}).headers


def _demo_post(app, payload: dict) -> tuple[int, dict]:
    """One batch posted to an in-process app: its status and JSON answer."""
    import asyncio

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batchnb") as http:
            return await http.post("/api/2.3/batch", json=payload, headers={"Authorization": "Bearer tok"})

    r = asyncio.run(post())
    return r.status_code, r.json()


def test_a_batch_against_the_demo_commits_its_writes_once_before_it_answers(tmp_path):
    from batchnb.demo import create_demo_app

    app = create_demo_app(db=tmp_path / "one-commit.sqlite3", credentials={"k": "tok"})
    store = app._group_writes.__self__  # the demo's store, which groups each batch's writes
    statements: list[str] = []
    store._conn.set_trace_callback(lambda sql: statements.append(sql.split()[0].upper()))
    requests = [{"method": "POST", "path": f"{API}/companies", "body": {"name": f"co {i}"}} for i in range(10)]
    requests.insert(5, {"method": "POST", "path": f"{API}/companies", "body": {"name": 7}})  # refused, in the middle
    status, answer = _demo_post(app, {"requests": requests})
    assert status == 200
    assert [r["status"] for r in answer["responses"]] == [201] * 5 + [400] + [201] * 5
    assert statements.count("COMMIT") == 1, statements
    assert count(tmp_path / "one-commit.sqlite3", "companies") == 10  # kept, as seen from another connection
    store.close()


def test_a_batch_whose_writes_cannot_be_kept_answers_500_and_no_operation(tmp_path):
    """``group_writes`` failing as it ends (the commit failed): no operation's answer may say it ran."""
    import contextlib

    from batchnb.demo._store import Store, WritesLost
    from batchnb.demo.scheduling import scheduling_app
    from batchnb.server import Keyring, create_app

    store = Store(tmp_path / "lost.sqlite3")

    @contextlib.contextmanager
    def lose_them():
        with store.group():
            yield
        raise WritesLost()

    app = create_app(api=scheduling_app(store, Keyring({"k": "tok"})), credentials={"k": "tok"}, group_writes=lose_them)
    status, answer = _demo_post(
        app, {"requests": [{"method": "POST", "path": f"{API}/companies", "body": {"name": "x"}}]}
    )
    assert status == 500 and "responses" not in answer
    assert answer["error"]["code"] == "internal_error"
    store.close()


def test_integers_past_a_double_reach_the_api_exactly_and_longer_ones_are_refused_saying_where(server):
    def batch(digits: int) -> str:
        body = '{"name": "x", "address": {"zip": ' + "7" * digits + "}}"
        return '{"requests": [{"method": "POST", "path": "' + API + '/companies", "body": ' + body + "}]}"

    # Once "not valid JSON" from 309 digits on: now the API gets the number, and its own rule answers.
    r = post_raw(server, batch(400))
    assert r.status_code == 200, r.text
    [op] = r.json()["responses"]
    assert op["status"] == 400 and op["body"]["error"]["details"][0]["field"] == "address.zip", op
    r = post_raw(server, batch(4301))
    assert r.status_code == 400 and r.json()["error"]["code"] == "number_too_long", r.text
    assert r.json()["error"]["details"] == [
        {
            "pointer": "requests[0].body.address.zip",
            "message": "an integer of 4301 digits; integers are kept exact up to 4300 digits",
        }
    ]


def test_head_answers_as_get_does_without_the_body(server):
    # RFC 9110 §9.3.2, on uvicorn: the limits, and the demo API's reads.
    for path, headers in (
        ("/api/2.3/batch", {}),
        (API + "/companies?limit=2", bearer(server)),
        (API + "/companies/co_000000000000", bearer(server)),
    ):
        got = httpx.get(server.url + path, headers=headers)
        head = httpx.head(server.url + path, headers=headers)
        assert head.status_code == got.status_code and head.content == b"", (path, head.status_code)
        assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content)), path
        assert head.headers["content-type"] == got.headers["content-type"] == "application/json", path
    r = httpx.put(server.url + "/api/2.3/batch")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
