"""The clients (batchnb.client): the sync twin in a running loop, the async one, limits, arguments, send."""

import asyncio
import json

import httpx
import numpy as np
import pandas as pd
import pytest

from batchnb import AsyncClient, Batch, BatchValidationError, Client, LocalServer, Operation, TransportError
from batchnb.demo import examples
from batchnb.server import Limits
from tests.support import wait_until
from tests.support.faults import RecordingUpstream, Reply, encode_reply
from tests.support.trickle import TricklingServer

API = "/api/2.1/scheduling"


def test_sync_client_inside_a_running_event_loop(server):
    client = server.client

    async def cell():
        # What a Jupyter cell does: call the sync API while a loop is running.
        return client.submit(Batch([Operation("GET", f"{API}/companies")]))

    out = asyncio.run(cell())
    assert out[0].status == 200


def test_async_client_twin(server):
    async def go():
        async with server.async_client() as client:
            return await client.submit(examples.chained("Async Location"))

    assert [r.status for r in asyncio.run(go())] == [201, 201, 201]


def test_limits_are_the_servers_unless_the_client_overrides_them(tmp_path):
    with LocalServer(tmp_path / "demo.sqlite3", limits=Limits(max_requests=7, max_depth=2)) as srv:
        announced = srv.client.limits()
        assert (announced["maxRequests"], announced["maxDepth"]) == (7, 2)
        mine = Client(srv.url, **srv.credentials(), max_requests=3).limits()
        assert (mine["maxRequests"], mine["maxDepth"]) == (3, 2)
        # A submit splits to the limit it was told.
        plan = srv.client.submit([Operation("GET", f"{API}/companies")] * 15, dry_run=True)
        assert [b.size for b in plan.batches] == [7, 7, 1]


def test_a_server_that_does_not_announce_limits_gets_the_specs_defaults():
    with RecordingUpstream(lambda req: Reply(404, {"error": {"message": "no such route"}})) as old:
        limits = Client(old.url, token="t").limits()
        assert (limits["maxRequests"], limits["maxDepth"]) == (50, 4)
        assert [(q.method, q.path) for q in old.requests] == [("GET", "/api/2.3/batch")]


def test_every_bad_argument_is_reported_at_once():
    with pytest.raises(BatchValidationError) as info:
        Client("http://127.0.0.1:1", token="t", credentials_in="cookie", auth=3, mode="fast")
    assert info.value.pointers == ["credentials_in", "auth", "mode"]
    with pytest.raises(BatchValidationError) as info:
        AsyncClient("http://127.0.0.1:1", token="t", credentials_in="query")
    assert info.value.pointers == ["credentials_in"] and "needs both api_key and token" in str(info.value)


def test_the_old_meaning_of_auth_is_named_with_its_new_name():
    with pytest.raises(BatchValidationError) as info:
        Client("http://127.0.0.1:1", api_key="k", token="t", auth="query")
    assert [(p.pointer, p.message) for p in info.value.problems] == [
        ("auth", "'query' is now written credentials_in='query'; auth= takes an httpx.Auth")
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8765", "'127.0.0.1:8765' is not an http(s) URL: write 'http://127.0.0.1:8765'"),
        ("localhost", "'localhost' is not an http(s) URL: write 'http://localhost'"),
        ("ftp://files.example", "'ftp://files.example' is not an http(s) URL: write 'http://…' or 'https://…'"),
        ("", "is required: the server's address, such as 'http://127.0.0.1:8000'"),
    ],
)
def test_a_url_without_a_scheme_is_refused_at_once(url, message):
    # Before, the client took it, sent nothing, and reported POSTs as "outcome unknown".
    with pytest.raises(BatchValidationError) as info:
        Client(url, token="t")
    assert [(p.pointer, p.message) for p in info.value.problems] == [("base_url", message)]


def test_an_api_key_without_a_token_is_refused_not_a_silent_401_later():
    with pytest.raises(BatchValidationError) as info:
        AsyncClient("http://127.0.0.1:1", api_key="k")
    assert [(p.pointer, p.message) for p in info.value.problems] == [
        ("token", "api_key was given without a token: the server needs both")
    ]


def test_send_is_one_call_and_an_answer_that_is_not_a_batch_response_is_an_error():
    answers = [
        Reply(200, {"responses": [{"method": "GET", "path": "/x", "status": 200, "body": {"n": 1}}]}),
        Reply(200, {"hello": "world"}),
    ]
    with RecordingUpstream(lambda req: answers.pop(0)) as srv:
        client = Client(srv.url, token="t")
        out = client.send(Batch([Operation("GET", "/x")]))
        assert [(r.status, r.body) for r in out] == [(200, {"n": 1})]
        with pytest.raises(TransportError) as info:
            client.send(Batch([Operation("GET", "/x")]))
        assert info.value.sent and "not a batch response" in str(info.value)
        assert [(q.method, q.path) for q in srv.requests] == [("POST", "/api/2.3/batch")] * 2
        assert json.loads(srv.requests[0].body) == {"requests": [{"method": "GET", "path": "/x"}]}


def test_the_sync_client_shows_what_its_async_twin_shows():
    options = {"mode": "direct", "timeout": 12.5, "concurrency": 7, "retries": 2, "retry_for": 30.0, "backoff": 0.25}
    options["max_backoff"] = 4.0
    twin = AsyncClient("https://api.example/", **options)
    client = Client("https://api.example/", **options)
    assert client.mode == "direct"
    public = [name for name in vars(twin) if not name.startswith("_")]
    assert {"base_url", "mode", "timeout", "concurrency", "retries"} <= set(public)
    for name in public:
        assert getattr(client, name) == getattr(twin, name), name
    # Read-only: each call makes its AsyncClient from the options given, so a new value would not be used.
    with pytest.raises(AttributeError):
        client.mode = "batch"  # type: ignore[misc]  # what a test may do and a user may not


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("concurrency", 0),
        ("concurrency", -2),
        ("concurrency", "four"),
        ("concurrency", 2.5),
        ("retries", -1),
        ("retries", "3"),
        ("timeout", 0),
        ("timeout", float("nan")),
        ("retry_for", -1),
        ("backoff", -0.5),
        ("max_requests", 0),
        ("max_depth", True),
        ("max_answer_bytes", 0),
        ("max_answer_bytes", 1.5),
    ],
)
def test_numeric_settings_are_checked_before_anything_is_sent_naming_the_argument(setting, value):
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(500))
    with pytest.raises(BatchValidationError) as info:
        Client("http://127.0.0.1:9", mode="direct", transport=transport, **{setting: value})
    assert info.value.pointers == [setting] and repr(value) in str(info.value)
    if setting in ("concurrency", "retries", "retry_for"):
        client = Client("http://127.0.0.1:9", mode="direct", transport=transport)
        with pytest.raises(BatchValidationError) as info:
            client.submit([Operation("GET", "/x")], **{setting: value})
        assert info.value.pointers == [setting]
    assert sent == []


def test_a_numpy_integer_is_a_whole_number_like_any_other():
    assert Client("http://127.0.0.1:9", concurrency=np.int64(3), retries=np.int32(1)).concurrency == 3


# ---------------------------------------------------------------- timeout: a deadline for each exchange


LIMITS = {"version": "2.3", "maxRequests": 7, "maxDepth": 4}
ONE_ROW = pd.DataFrame({"n": [1]})


def _answered(req) -> bytes:
    """What a batch server (or an API, for /x) answers, whole."""
    if req.method == "GET" and req.path == "/api/2.3/batch":
        return encode_reply(200, LIMITS)
    if req.path == "/api/2.3/batch":
        answer = {"responses": [{"method": "GET", "path": "/x", "status": 200, "duration": 1.0, "body": {"ok": 1}}]}
        return encode_reply(200, answer)
    return encode_reply(200, {"ok": 1})


def _submit(twin: str, url: str, **options) -> pd.DataFrame:
    if twin == "sync":
        return Client(url, token="t", timeout=1, retries=0, **options).submit(ONE_ROW, method="GET", path="/x")

    async def go() -> pd.DataFrame:
        async with AsyncClient(url, token="t", timeout=1, retries=0, **options) as client:
            return await client.submit(ONE_ROW, method="GET", path="/x")

    return asyncio.run(go())


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["sync", "async"])
def test_timeout_bounds_a_whole_batch_exchange_even_when_the_answer_trickles_in(twin):
    # A byte every 0.3 s: no read waits as long as the timeout of 1 s, the whole answer does.
    batches = lambda req: req.method == "POST"  # noqa: E731 - the limits come at once
    with TricklingServer(_answered, slow=batches) as srv:
        result = _submit(twin, srv.url)
        cut_off = wait_until(lambda: srv.cut_off, 10, "the server never saw the client hang up")
        finished = srv.finished
    assert result["status"].isna().all() and not result["ok"].any()
    assert "took longer than timeout=1 s" in result["error"].iloc[0], result["error"].iloc[0]
    assert "outcome unknown" in result["error"].iloc[0]
    assert (cut_off, finished) == (1, 0), "the client waited for the trickled answer instead of giving up"


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["sync", "async"])
def test_timeout_bounds_each_operation_in_direct_mode_when_the_api_trickles(twin):
    with TricklingServer(_answered, slow=lambda req: req.path == "/x") as srv:
        result = _submit(twin, srv.url, mode="direct")
        cut_off = wait_until(lambda: srv.cut_off, 10, "the server never saw the client hang up")
        finished = srv.finished
    assert result["status"].tolist() == [504], result["error"].tolist()
    assert "took longer than 1 s" in result["error"].iloc[0]
    assert (cut_off, finished) == (1, 0)


@pytest.mark.slow
@pytest.mark.parametrize("twin", ["sync", "async"])
def test_timeout_bounds_the_limits_request_and_a_server_that_trickles_them_gets_the_specs_defaults(twin):
    with TricklingServer(_answered, slow=lambda req: req.method == "GET") as srv:
        if twin == "sync":
            limits = Client(srv.url, token="t", timeout=1).limits()
        else:

            async def go() -> dict:
                async with AsyncClient(srv.url, token="t", timeout=1) as client:
                    return await client.limits()

            limits = asyncio.run(go())
        cut_off = wait_until(lambda: srv.cut_off, 10, "the server never saw the client hang up")
        finished = srv.finished
    assert (limits["maxRequests"], limits["maxDepth"]) == (50, 4)
    assert (cut_off, finished) == (1, 0)


# ---------------------------------------------------------------- limits that cannot be used


@pytest.mark.parametrize(
    ("answer", "names"),
    [
        (b"null", "its answer is null, not a JSON object"),
        (b"[1, 2]", "its answer is a list, not a JSON object"),
        (b'"limits"', "its answer is a string, not a JSON object"),
        (b"not json", "its answer is not JSON"),
        (b'{"maxRequests": "abc"}', 'maxRequests is "abc", not a whole number from 1'),
        (b'{"maxRequests": -5}', "maxRequests is -5, not a whole number from 1"),
        (b'{"maxRequests": 0}', "maxRequests is 0"),
        (b'{"maxRequests": 2.5}', "maxRequests is 2.5"),
        (b'{"maxRequests": true}', "maxRequests is true"),
        (b'{"maxRequests": 1e30}', "maxRequests is 1e+30"),
        (b'{"maxRequests": 99999999999999999999999}', "maxRequests is 99999999999999999999999"),
        (b'{"maxDepth": 0}', "maxDepth is 0"),
        (b'{"maxDepth": null}', "maxDepth is null"),
        (b'{"maxParallel": "x"}', 'maxParallel is "x"'),
        (b'{"maxParallel": -1}', "maxParallel is -1"),
        (b'{"idempotency": "yes"}', 'idempotency is "yes", not true or false'),
    ],
)
def test_limits_that_cannot_be_used_are_an_error_naming_the_field_and_the_server(answer, names):
    with RecordingUpstream(lambda req: Reply(200, answer)) as srv:
        url = srv.url.replace("http://", "http://alice:s3cret@")
        with pytest.raises(TransportError) as info:
            Client(url, api_key="k", token="tok-secret", credentials_in="query").submit(
                ONE_ROW, method="GET", path="/x"
            )
        posted = [q for q in srv.requests if q.method == "POST"]
    message = str(info.value)
    assert names in message, message
    assert f"GET http://***@127.0.0.1:{srv.port}/api/2.3/batch" in message, message
    assert "s3cret" not in message and "tok-secret" not in message
    assert info.value.sent is False and info.value.transient is False
    assert posted == [], "a batch was sent with limits that cannot be used"


def test_announced_counts_written_as_whole_floats_are_whole_numbers():
    with RecordingUpstream(lambda req: Reply(200, {"maxRequests": 7.0, "maxDepth": 2, "maxParallel": 4.0})) as srv:
        limits = Client(srv.url, token="t").limits()
    assert (limits["maxRequests"], limits["maxDepth"], limits["maxParallel"]) == (7, 2, 4)
    assert type(limits["maxRequests"]) is int


def test_a_limits_answer_that_inflates_past_its_bound_is_refused_not_read():
    from tests.support.hostile_upstream import bomb

    payload = bomb(64 * 1024 * 1024)
    with (
        RecordingUpstream(lambda req: Reply(200, payload, {"Content-Encoding": "gzip, gzip"})) as srv,
        pytest.raises(TransportError) as info,
    ):
        Client(srv.url, token="t").limits()
    assert "its answer cannot be read" in str(info.value) and "larger than 65536 bytes" in str(info.value)
