"""Hostile input to ``POST /api/2.3/batch``: the server stays correct whatever it is sent.

What must hold for any input: never a 500, always a JSON answer, every error
with pointers, and a refused batch runs nothing (counted in the SQLite file,
not taken on the server's word). In gateway mode, an operation refused for
its path or headers never reaches the upstream: a recording loopback server
proves that no request, not even a connection, left the gateway.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchnb
from batchnb.demo import create_demo_app
from batchnb.server import Limits, create_app
from tests.support import count
from tests.support.faults import RecordingUpstream, Reply

TOKEN = "hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CO = "/api/2.1/scheduling/companies"
TABLES = ("companies", "services", "staff", "staff_services", "appointments")


class InProcess:
    """The batch app called in-process, on one event loop kept for the whole test."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batch.test")

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def post(self, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        content = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        return self.run(self.http.post("/api/2.3/batch", content=content, headers=AUTH if headers is None else headers))

    def close(self) -> None:
        self.run(self.http.aclose())
        self.run(self.app.aclose())
        self.loop.close()


class Rows:
    """Counts rows through a second SQLite connection: what really ran, whatever the server says."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)

    def __call__(self) -> tuple[int, ...]:
        return tuple(self.conn.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcess, Rows, str]]:
    db = tmp_path_factory.mktemp("hostile") / "demo.sqlite3"
    caller = InProcess(create_demo_app(db=db, credentials={"demo": TOKEN}))
    r = caller.post({"requests": [{"method": "POST", "path": CO, "body": {"name": "Anchor"}}]})
    company = r.json()["responses"][0]["body"]["id"]
    yield caller, Rows(db), company
    caller.close()


def assert_well_formed(r: httpx.Response) -> Any:
    """No 500, a JSON body, and pointers on every error; returns the parsed body."""
    assert r.status_code != 500, r.text[:500]
    assert r.headers["content-type"].startswith("application/json"), r.headers
    data = r.json()
    if r.status_code != 200:
        err = data["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str)
        assert err["details"], data
        for d in err["details"]:
            assert isinstance(d["pointer"], str) and isinstance(d["message"], str), d
    else:
        assert isinstance(data["responses"], list)
    return data


def check_batch(demo: tuple[InProcess, Rows, str], payload: Any) -> httpx.Response:
    caller, rows, _ = demo
    before = rows()
    r = caller.post(payload)
    data = assert_well_formed(r)
    if r.status_code != 200:
        assert rows() == before, f"a refused batch changed the store: {r.text[:300]}"
    else:
        sent = payload if not isinstance(payload, (bytes, str)) else json.loads(payload)
        assert len(data["responses"]) == len(sent["requests"])
        for resp in data["responses"]:
            for sub in _walk(resp):
                assert isinstance(sub["status"], int), sub
                # The demo API's last-resort answer: a bug behind the batch endpoint.
                assert sub["status"] != 500, sub
    return r


def _walk(resp: dict) -> Iterator[dict]:
    yield resp
    for child in resp.get("responses") or []:
        yield from _walk(child)


# ---------------------------------------------------------------- strategies

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)
NAMES = st.sampled_from(["a", "b", "seed", "co-1", "x.y_z", "", "bad name", "ü", "a:b", "}"])
JSONPATHS = st.sampled_from(
    [
        "$",
        "$.id",
        "$['a:b']",
        "$[?@.x == '}']",
        "$.items[0].id",
        "$..*",
        "$[",
        "$[?@.x ==",
        "not json path",
        "$['unclosed",
        "$.a}b",
        '$["}"]',
        "$..[?@ > 1]",
        "",
    ]
)
REFS = st.builds(
    lambda n, q, tail: f"${{result={n}:{q}}}{tail}", NAMES, JSONPATHS, st.sampled_from(["", "}", "/x", "$${"])
)
HOSTILE_PATHS = [
    "http://127.0.0.1:1/x",
    "https://evil.example/",
    "//evil.example/x",
    "/a/../b",
    "/..",
    "/a/%2e%2e/b",
    "/a/%2E%2e/b",
    "/a/%252e%252e/b",
    "/a/.%2e/b",
    "/a\\b",
    "/a/%5cb",
    "/a/%255cb",
    "/a\r\nX-Injected: 1",
    "/a%0d%0aX:%20y",
    "/a\x00b",
    "/a%00",
    "relative",
    "",
    "/ space",
    "/%2f%2fevil",
    "/a?x=\n",
    "/\u00e9",
    "/\ud800",
    CO,
    CO + "?limit=0",
    CO + "?limit=abc&offset=-1",
    CO + "/co_000000000000",
    CO + "/co_000000000000/services",
]
PATHS = st.one_of(
    st.sampled_from(HOSTILE_PATHS),
    st.text(max_size=30),
    st.builds(lambda p, r: p + "/" + r, st.sampled_from([CO, "/x"]), REFS),
)
METHODS = st.sampled_from(["GET", "get", "POST", "PUT", "DELETE", "PATCH", "FETCH", "", "GET ", 1, None, True])
HEADERS = st.one_of(
    st.dictionaries(
        st.sampled_from(["X-A", "Authorization", "Host", "Content-Length", "X\r\nB", "", "X A", "Content-Type", "é"]),
        st.one_of(st.text(max_size=12), REFS, st.integers(), st.none()),
        max_size=3,
    ),
    st.text(max_size=40),
    st.sampled_from(["X-A: 1\r\nHost: evil", "no colon here", "Authorization: Bearer nope"]),
    JSON,
)
BODIES = st.one_of(
    JSON,
    REFS,
    st.dictionaries(
        st.sampled_from(["name", "firstName", "${result=a:$}"]), st.one_of(REFS, st.text(max_size=20)), max_size=3
    ),
)
FIELDS = {"method": METHODS, "path": PATHS, "body": BODIES, "name": NAMES, "headers": HEADERS, "junk": JSON}
OPERATIONS = st.recursive(
    st.fixed_dictionaries({}, optional=FIELDS),
    lambda inner: st.fixed_dictionaries({}, optional={**FIELDS, "requests": st.lists(inner, max_size=3)}),
    max_leaves=6,
)
#: a real write leads every batch, so that "a refused batch runs nothing" is tested, not assumed.
SEED = {"method": "POST", "path": CO, "body": {"name": "written only if the batch runs"}, "name": "seed"}

HYP = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


# ---------------------------------------------------------------- properties


@pytest.mark.slow
@HYP
@given(body=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())))
def test_any_bytes_get_a_json_answer(demo: tuple[InProcess, Rows, str], body: bytes) -> None:
    caller, rows, _ = demo
    before = rows()
    r = caller.post(body)
    assert_well_formed(r)
    if r.status_code != 200:
        assert rows() == before


@pytest.mark.slow
@HYP
@given(ops=st.lists(OPERATIONS, max_size=5))
def test_hostile_operations_never_break_the_server(demo: tuple[InProcess, Rows, str], ops: list[dict]) -> None:
    check_batch(demo, {"requests": [SEED, *ops]})


@HYP
@given(
    path=st.sampled_from([p for p in HOSTILE_PATHS if not p.startswith(CO)]),
    where=st.sampled_from(["top", "child", "late"]),
)
def test_an_unsafe_path_anywhere_rejects_the_whole_batch(
    demo: tuple[InProcess, Rows, str], path: str, where: str
) -> None:
    bad = {"method": "GET", "path": path}
    if where == "top":
        reqs = [bad, SEED]
    elif where == "child":
        reqs = [{**SEED, "requests": [bad]}]
    else:
        reqs = [SEED, {"method": "GET", "path": CO}, bad]
    r = check_batch(demo, {"requests": reqs})
    if path in ("/\u00e9", "/a/%252e%252e/b"):
        return  # judged below, on their own
    assert r.status_code == 400, (path, r.text[:300])
    pointers = [d["pointer"] for d in r.json()["error"]["details"]]
    # A lone surrogate is not even JSON: refused before there is an operation to point at.
    assert any(p.endswith(".path") for p in pointers) or path == "/\ud800", pointers


def test_deep_and_huge_inputs(demo: tuple[InProcess, Rows, str]) -> None:
    nested_json = b"[" * 100_000 + b"]" * 100_000
    assert check_batch(demo, nested_json).status_code == 400
    deep_body = json.loads("[" * 600 + "]" * 600)
    r = check_batch(
        demo, {"requests": [SEED, {"method": "POST", "path": CO, "body": {"name": "x", "deep": deep_body}}]}
    )
    assert r.status_code in (200, 400, 413)
    huge = "x" * 600_000  # under the 1 MiB body limit once, over it twice
    r = check_batch(demo, {"requests": [SEED, {"method": "POST", "path": CO, "body": {"name": huge}}]})
    assert r.status_code == 200 and r.json()["responses"][1]["status"] == 400  # the API's own field limit
    r = check_batch(demo, {"requests": [SEED, {"method": "POST", "path": CO, "body": {"name": huge + huge}}]})
    assert r.status_code == 413
    r = check_batch(demo, {"requests": [SEED, {"method": "GET", "path": "/" + "a" * 200_000}]})
    assert r.status_code == 200 and r.json()["responses"][1]["status"] == 404


def test_unicode_survives_the_round_trip(demo: tuple[InProcess, Rows, str]) -> None:
    names = ["Zürich Süd", "東京 本店", "🙂 emoji", "ℌ𝔢𝔩𝔩𝔬", "\u200b zero width", "right\u202eleft"]
    r = check_batch(demo, {"requests": [{"method": "POST", "path": CO, "body": {"name": n}} for n in names]})
    assert [x["body"]["name"] for x in r.json()["responses"]] == names
    lone = b'{"requests": [{"method": "POST", "path": "' + CO.encode() + b'", "body": {"name": "\\udc00"}}]}'
    assert check_batch(demo, lone).status_code == 400
    assert check_batch(demo, b'{"requests": [{"method": "GET", "path": "/\xff\xfe"}]}').status_code == 400


def test_non_ascii_path_reaches_the_api_percent_encoded(demo: tuple[InProcess, Rows, str]) -> None:
    # HTTP paths are ASCII: the API must see the UTF-8 percent-encoding (its
    # 404 for an unknown company), not a dispatcher failing to encode it.
    r = check_batch(demo, {"requests": [{"method": "GET", "path": CO + "/東京"}]})
    op = r.json()["responses"][0]
    assert op["status"] == 404, op


def test_references_that_cannot_be_run_are_refused_up_front(demo: tuple[InProcess, Rows, str]) -> None:
    cases = {
        "unknown": [SEED, {"method": "GET", "path": CO + "/${result=nobody:$.id}"}],
        "forward": [{"method": "GET", "path": CO + "/${result=later:$.id}"}, {**SEED, "name": "later"}],
        "self": [{**SEED, "body": {"name": "${result=seed:$.id}"}}],
        "cycle": [
            {"method": "GET", "path": CO + "/${result=b:$.id}", "name": "a"},
            {"method": "GET", "path": CO + "/${result=a:$.id}", "name": "b"},
            SEED,
        ],
        "bad jsonpath": [SEED, {"method": "GET", "path": CO + "/${result=seed:$[?@.x ==}"}],
        "unclosed": [SEED, {"method": "GET", "path": CO + "/${result=seed:$['}"}],
        "child before parent": [
            {**SEED, "body": {"name": "${result=kid:$.id}"}, "requests": [{"method": "GET", "path": CO, "name": "kid"}]}
        ],
        "sibling's child is fine, its later sibling is not": [
            {
                "method": "GET",
                "path": CO,
                "name": "p",
                "requests": [{"method": "GET", "path": CO + "/${result=q:$.id}"}],
            },
            {"method": "GET", "path": CO, "name": "q"},
            SEED,
        ],
        "in a header": [SEED, {"method": "GET", "path": CO, "headers": {"X-Id": "${result=ghost:$.id}"}}],
        "in a body key": [SEED, {"method": "POST", "path": CO, "body": {"${result=ghost:$}": 1}}],
        "duplicate name": [SEED, {**SEED}],
    }
    for label, reqs in cases.items():
        r = check_batch(demo, {"requests": reqs})
        assert r.status_code == 400, (label, r.text[:300])
        assert any(d["pointer"].startswith("requests[") for d in r.json()["error"]["details"]), label


def test_a_number_beyond_a_double_in_a_jsonpath_is_a_400_with_its_pointer(demo: tuple[InProcess, Rows, str]) -> None:
    for field, value in (
        ("path", CO + "/${result=seed:$[?@.n == 1e999]}"),
        ("body", {"name": "${result=seed:$[?@.n == " + "9" * 400 + "]}"}),
        ("headers", {"X-N": "${result=seed:$[?@.n == -1.5e999]}"}),
    ):
        op = {"method": "POST", "path": CO, field: value}
        r = check_batch(demo, {"requests": [SEED, op]})
        assert r.status_code == 400, (field, r.text[:300])
        details = r.json()["error"]["details"]
        assert details[0]["pointer"].startswith(f"requests[1].{field}"), details
        assert "beyond what a double can hold" in details[0]["message"], details


def test_batch_level_errors_have_their_status(demo: tuple[InProcess, Rows, str]) -> None:
    caller, rows, _ = demo
    before = rows()
    r = caller.post({"requests": [SEED]}, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"})
    assert r.status_code == 415 and assert_well_formed(r)
    r = caller.post({"requests": [SEED]}, headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and assert_well_formed(r)
    r = caller.run(caller.http.delete("/api/2.3/batch", headers=AUTH))
    assert r.status_code == 405 and assert_well_formed(r)
    r = caller.run(caller.http.get("/api/2.3/batch", headers=AUTH))
    assert r.status_code == 200 and r.json()["maxRequests"] == 50
    assert rows() == before


# ---------------------------------------------------------------- limits


def test_operation_count_and_depth_limits(demo: tuple[InProcess, Rows, str]) -> None:
    r = check_batch(demo, {"requests": [SEED] + [{"method": "GET", "path": CO}] * 50})
    assert r.status_code == 413
    assert "requests" in [d["pointer"] for d in r.json()["error"]["details"]]
    # 50 counting the nested ones is the limit, not 50 at the top.
    nested = [{"method": "GET", "path": CO, "requests": [{"method": "GET", "path": CO}]}] * 25
    assert check_batch(demo, {"requests": [*nested, SEED]}).status_code == 413
    assert check_batch(demo, {"requests": [SEED] + [{"method": "GET", "path": CO}] * 49}).status_code == 200
    op: dict[str, Any] = {"method": "GET", "path": CO}
    for _ in range(4):
        op = {"method": "GET", "path": CO, "requests": [op]}
    r = check_batch(demo, {"requests": [SEED, op]})
    assert r.status_code == 413
    assert any(d["pointer"].startswith("requests[1].requests[0]") for d in r.json()["error"]["details"])


# ---------------------------------------------------------------- the gateway


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server  # type: ignore[misc]  # what a test may do and a user may not


def gateway(upstream: RecordingUpstream, **limits: Any) -> InProcess:
    return InProcess(create_app(upstream=upstream.url, limits=Limits(**limits)))


def test_gateway_never_forwards_an_unsafe_path_or_header(upstream: RecordingUpstream) -> None:
    gw = gateway(upstream)
    try:
        unsafe_ops = [
            {"method": "GET", "path": p}
            for p in HOSTILE_PATHS
            if not p.startswith(CO) and p not in ("/\u00e9", "/a/%252e%252e/b")
        ]
        unsafe_ops += [
            {"method": "GET", "path": "/ok", "headers": h}
            for h in (
                {"X-A": "1\r\nX-Injected: yes"},
                {"X-A": "a\x00b"},
                {"X-A": "a\nb"},
                {"X\r\nA": "1"},
                {"X A": "1"},
                {"X:A": "1"},
                {"": "1"},
                {"Host": "evil.example"},
                {"Content-Length": "0"},
                {"Connection": "close"},
                {"Transfer-Encoding": "chunked"},
                {"X-A": "東京"},
                "X-A: 1\r\nHost: evil.example",
                "X-A: 1\nX-B",
            )
        ]
        for op in unsafe_ops:
            for reqs in (
                [op],
                [{"method": "GET", "path": "/fine"}, op],
                [{"method": "GET", "path": "/fine", "requests": [op]}],
            ):
                r = gw.post({"requests": reqs})
                assert_well_formed(r)
                assert r.status_code == 400, (op, r.text[:300])
        assert upstream.requests == [] and upstream.connections == 0, [q.target for q in upstream.requests]
    finally:
        gw.close()


def test_gateway_rechecks_what_references_put_into_paths_and_headers(upstream: RecordingUpstream) -> None:
    upstream.respond = lambda req: Reply(
        200, {"dots": "..", "crlf": "a\r\nX-Injected: 1", "slash": "a/b", "pct": "%2e%2e", "ok": "fine"}
    )
    gw = gateway(upstream)
    try:
        reqs = [
            {"method": "GET", "path": "/src", "name": "src"},
            {"method": "GET", "path": "/t/${result=src:$.dots}/x"},
            {"method": "GET", "path": "/t", "headers": {"X-A": "${result=src:$.crlf}"}},
            {"method": "GET", "path": "/t/${result=src:$.slash}"},
            {"method": "GET", "path": "/t/${result=src:$.pct}"},
            {"method": "GET", "path": "/t/${result=src:$.ok}"},
        ]
        r = gw.post({"requests": reqs})
        data = assert_well_formed(r)
        statuses = [x["status"] for x in data["responses"]]
        assert statuses[:3] == [200, 400, 400], data
        # A value fills exactly one segment: one holding '/' is refused (an
        # upstream that decodes %2F would obey it); an encoded '..' is refused
        # too, for an upstream that decodes twice.
        assert statuses[3:] == [400, 400, 200], data
        assert "may read as a separator" in data["responses"][3]["body"]["error"]["message"]
        targets = [q.target for q in upstream.requests]
        assert targets == ["/src", "/t/fine"], targets
        assert all(q.header("X-Injected") is None for q in upstream.requests)
    finally:
        gw.close()


JSONPATH_DOC = {
    "a:b": "colon",
    "items": [{"x": "}", "id": "brace"}, {"x": "y", "id": "other"}],
    "n": 7,
    "obj": {"k": [1, 2]},
}


def test_jsonpath_edge_cases_in_references(upstream: RecordingUpstream) -> None:
    upstream.respond = lambda req: Reply(
        200, JSONPATH_DOC if req.target == "/src" else {"echo": json.loads(req.body or b"null")}
    )
    gw = gateway(upstream)
    try:
        reqs = [
            {"method": "GET", "path": "/src", "name": "s"},
            {"method": "POST", "path": "/t/${result=s:$['a:b']}", "body": {"v": "${result=s:$['a:b']}"}},
            {
                "method": "POST",
                "path": "/t/${result=s:$.items[?@.x == '}'].id}",
                "body": "${result=s:$.items[?@.x == '}']}",
            },
            {
                "method": "POST",
                "path": "/typed",
                "body": {
                    "n": "${result=s:$.n}",
                    "obj": "${result=s:$.obj}",
                    "text": "n=${result=s:$.n}",
                    "all": "${result=s:$.items[*].id}",
                    "joined": "ids ${result=s:$.items[*].id}",
                    "literal": "$${result=s:$.n}",
                },
            },
            {"method": "POST", "path": "/none", "body": {"v": "${result=s:$.missing}"}},
            {"method": "POST", "path": "/t/${result=s:$..id}"},
        ]
        data = assert_well_formed(gw.post({"requests": reqs}))
        statuses = [x["status"] for x in data["responses"]]
        assert statuses == [200, 200, 200, 200, 424, 200], data
        by_target = {q.target: q for q in upstream.requests}
        assert set(by_target) == {"/src", "/t/colon", "/t/brace", "/typed", "/t/brace%2Cother"}
        assert json.loads(by_target["/t/colon"].body) == {"v": "colon"}
        assert json.loads(by_target["/t/brace"].body) == {"x": "}", "id": "brace"}
        assert json.loads(by_target["/typed"].body) == {
            "n": 7,
            "obj": {"k": [1, 2]},
            "text": "n=7",
            "all": ["brace", "other"],
            "joined": "ids brace,other",
            "literal": "${result=s:$.n}",
        }
        upstream.clear()
        for bad in ("$[?@.x ==", "$['a:b'", "$.items[", "$$", "x"):
            r = gw.post(
                {
                    "requests": [
                        {"method": "GET", "path": "/src", "name": "s"},
                        {"method": "GET", "path": f"/t/${{result=s:{bad}}}"},
                    ]
                }
            )
            assert_well_formed(r)
            assert r.status_code == 400, (bad, r.text[:200])
            assert next(d["pointer"] for d in r.json()["error"]["details"]).startswith("requests[1].path"), r.text
        assert upstream.requests == []
    finally:
        gw.close()


def test_upstream_response_over_the_size_limit_is_a_502_for_that_operation(upstream: RecordingUpstream) -> None:
    upstream.respond = lambda req: Reply(200, {"blob": "x" * 50_000} if req.target == "/big" else {"ok": True})
    gw = gateway(upstream, max_response_bytes=10_000)
    try:
        reqs = [
            {"method": "GET", "path": "/small"},
            {"method": "GET", "path": "/big"},
            {"method": "GET", "path": "/small2"},
        ]
        r = gw.post({"requests": reqs})
        data = assert_well_formed(r)
        assert r.status_code == 200
        assert [x["status"] for x in data["responses"]] == [200, 502, 200]
        assert len(r.content) < 10_000
    finally:
        gw.close()


@pytest.mark.slow
def test_operation_timeout_and_batch_deadline(upstream: RecordingUpstream) -> None:
    # "/stall" is answered a minute later: only the gateway's timeout can make it a 504 in between.
    upstream.respond = lambda req: Reply(200, {"ok": req.target}, delay=60.0 if req.target == "/stall" else 0.0)
    gw = gateway(upstream, operation_timeout=1.0)
    try:
        r = gw.post(
            {
                "requests": [
                    {"method": "GET", "path": "/a"},
                    {"method": "GET", "path": "/stall"},
                    {"method": "GET", "path": "/b"},
                ]
            }
        )
        data = assert_well_formed(r)
        assert [x["status"] for x in data["responses"]] == [200, 504, 200], data
        assert data["responses"][1]["body"]["error"] == {
            "code": "timeout",
            "message": "the operation took longer than 1 s",
        }
        # The operation after the stalled one still ran: a timeout fails one operation, not the batch.
        assert [q.target for q in upstream.requests] == ["/a", "/stall", "/b"]
    finally:
        gw.close()

    upstream.clear()
    # "/op1" is never answered in time: the batch runs out of time while waiting for it.
    upstream.respond = lambda req: Reply(200, {"ok": req.target}, delay=60.0 if req.target == "/op1" else 0.0)
    gw = gateway(upstream, operation_timeout=30.0, batch_timeout=2.0)
    try:
        r = gw.post({"requests": [{"method": "GET", "path": f"/op{i}"} for i in range(10)]})
        data = assert_well_formed(r)
        statuses = [x["status"] for x in data["responses"]]
        assert statuses[0] == 200 and statuses[-1] == 503, statuses
        assert set(statuses) <= {200, 503, 504}, statuses
        first_503 = statuses.index(503)
        assert all(s == 503 for s in statuses[first_503:]), statuses
        assert statuses == [200, 504] + [503] * 8, statuses
        assert data["responses"][1]["body"]["error"]["code"] == "timeout"
        for x in data["responses"][2:]:
            assert x["body"]["error"] == {
                "code": "deadline_exceeded",
                "message": "not run: the batch ran out of time",
            }, x
        not_run = {f"/op{i}" for i in range(first_503, 10)}
        assert not not_run & {q.target for q in upstream.requests}, (
            "an operation answered 503 'not run' reached the API"
        )
        assert [q.target for q in upstream.requests] == ["/op0", "/op1"]
    finally:
        gw.close()


# ---------------------------------------------------------------- over real loopback


@pytest.fixture(scope="module")
def live() -> Iterator[batchnb.LocalServer]:
    with batchnb.LocalServer(limits=Limits(max_body_bytes=64 * 1024)) as server:
        yield server


def _raw(port: int, data: bytes, read_timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_live_server_refuses_oversized_and_lying_bodies(live: batchnb.LocalServer) -> None:
    token = live.credentials()["token"]
    before = count(live.db)
    big = json.dumps({"requests": [{"method": "POST", "path": CO, "body": {"name": "x" * 100_000}}]}).encode()

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=live.url, timeout=10) as http:
        r = http.post("/api/2.3/batch", content=big, headers=headers)
        assert r.status_code == 413 and assert_well_formed(r)
        r = http.post("/api/2.3/batch", content=chunked(), headers=headers)  # no Content-Length to trust
        assert r.status_code == 413 and assert_well_formed(r)
        r = http.post("/api/2.3/batch", content=b"\xff\xfe{", headers=headers)
        assert r.status_code == 400 and assert_well_formed(r)
    # A Content-Length that promises more than comes: the server gives up on it and lives on.
    body = json.dumps({"requests": [{"method": "POST", "path": CO, "body": {"name": "half"}}]}).encode()
    head = (
        f"POST /api/2.3/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n"
    ).encode()
    _raw(live.port, head + body, read_timeout=2.0)
    # Request-line tricks: traversal and absolute forms never reach another resource.
    for line in (
        b"GET /api/2.3/../2.3/batch HTTP/1.1",
        b"GET http://evil.example/api/2.3/batch HTTP/1.1",
        b"GET /api/2.3/batch\x00 HTTP/1.1",
    ):
        reply = _raw(live.port, line + b"\r\nHost: x\r\n\r\n")
        assert not reply.startswith(b"HTTP/1.1 500"), reply[:200]
    r = live.client.submit(batchnb.Batch([batchnb.Operation("GET", CO + "?limit=1")]), progress=False)
    assert r[0].status == 200
    assert count(live.db) == before


def test_live_server_property_subset(live: batchnb.LocalServer) -> None:
    token = live.credentials()["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    payloads = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'{"requests": null}',
        json.dumps({"requests": [{"method": "GET", "path": "//evil"}]}).encode(),
        json.dumps({"requests": [{"method": "GET", "path": CO + "/%2e%2e/%2e%2e"}]}).encode(),
        json.dumps({"requests": [{"method": "GET", "path": CO, "headers": {"X-A": "1\r\nX-B: 2"}}]}).encode(),
        json.dumps({"requests": [{"method": "GET", "path": CO + "/${result=x:$[}"}]}).encode(),
    ]
    before = count(live.db)
    with httpx.Client(base_url=live.url, timeout=10) as http:
        for p in payloads:
            r = http.post("/api/2.3/batch", content=p, headers=headers)
            assert_well_formed(r)
            assert r.status_code == 400, (p, r.text[:200])
    assert count(live.db) == before
