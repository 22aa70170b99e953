"""How batches reach the API (batchnb._senders): the batch endpoint over HTTP, the engine in this process, Retry-After."""

import asyncio
import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from batchnb import Batch, Client, Operation, TransportError
from batchnb._senders import BatchEndpoint, retry_after
from batchnb.demo import examples

from tests.support import free_port
from tests.support.faults import DroppingServer, RecordingUpstream, Reply


def send_through_endpoint(url, ops, headers=None, query=None):
    async def go():
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            return await BatchEndpoint(http, url, headers or {}, query or {})(ops)

    return asyncio.run(go())


def test_direct_mode_runs_the_engine_client_side(server):
    # The demo API is served directly too: no batch endpoint involved, references resolved here.
    client = Client(server.url, **server.credentials(), mode="direct")
    out = client.submit(examples.chained("Direct Location"))
    assert [r.status for r in out] == [201, 201, 201]
    assert out[2].path.endswith("/staff") and out[0].body["id"] in out[2].path


def test_the_endpoint_posts_the_batch_with_its_credentials():
    answer = {"responses": [{"method": "GET", "path": "/x", "status": 200, "body": {"ok": 1}, "duration": 2.0}]}
    with RecordingUpstream(lambda req: Reply(200, answer)) as srv:
        reply = send_through_endpoint(srv.url, [Operation("GET", "/x")], headers={"Authorization": "Bearer t"})
        reply_q = send_through_endpoint(srv.url, [Operation("GET", "/x")], query={"apiKey": "k", "token": "t"})
    assert reply.status == 200 and [(r.status, r.body) for r in reply.responses] == [(200, {"ok": 1})]
    assert reply_q.status == 200
    first, second = srv.requests
    assert (first.method, first.target) == ("POST", "/api/2.3/batch")
    assert first.header("authorization") == "Bearer t" and first.header("content-type") == "application/json"
    assert json.loads(first.body) == {"requests": [{"method": "GET", "path": "/x"}]}
    assert second.target == "/api/2.3/batch?apiKey=k&token=t" and second.header("authorization") is None


def test_an_answer_that_does_not_match_what_was_sent_has_no_responses():
    one = {"method": "GET", "path": "/x", "status": 200}
    answers = [
        Reply(200, {"responses": [one]}),  # two were sent
        Reply(200, {"responses": [one, {**one, "responses": [one]}]}),  # a child nobody sent
        Reply(200, b"not json"),
        Reply(400, {"error": {"message": "bad"}}),
        Reply(502, b"<html>bad gateway</html>"),
    ]
    with RecordingUpstream(lambda req: answers.pop(0)) as srv:
        replies = [send_through_endpoint(srv.url, [Operation("GET", "/x"), Operation("GET", "/y")]) for _ in range(5)]
    assert [r.status for r in replies] == [200, 200, 200, 400, 502]
    assert [r.responses for r in replies] == [None] * 5
    assert replies[3].body == {"error": {"message": "bad"}}
    assert replies[4].body == "<html>bad gateway</html>"  # kept as text, to explain the error


def test_a_batch_that_could_not_connect_was_not_sent():
    with pytest.raises(TransportError) as info:
        send_through_endpoint(f"http://127.0.0.1:{free_port()}", [Operation("POST", "/x", {})])
    assert info.value.sent is False and "could not connect" in str(info.value)


def test_a_connection_dropped_after_the_batch_left_may_have_run():
    with DroppingServer() as srv:
        with pytest.raises(TransportError) as info:
            send_through_endpoint(srv.url, [Operation("POST", "/x", {})])
        assert srv.sent("POST") == 1
    assert info.value.sent is True and "after the batch was sent" in str(info.value)


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after({"Retry-After": "2"}) == 2.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    assert retry_after({"Retry-After": "-3"}) == 0.0
    assert retry_after({}) is None
    assert retry_after({"Retry-After": "soon"}) is None
    in_an_hour = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    assert 1800 < retry_after({"Retry-After": in_an_hour}) <= 3600
    earlier = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=120), usegmt=True)
    assert retry_after({"Retry-After": earlier}) == 0.0


def test_an_answer_that_inflates_past_the_limit_is_an_outcome_unknown_not_a_full_kernel():
    from tests.support.hostile_upstream import bomb

    payload = bomb(64 * 1024 * 1024)

    async def go(url):
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            return await BatchEndpoint(http, url, {}, {}, max_answer_bytes=1_000_000)([Operation("GET", "/x")])

    with RecordingUpstream(lambda req: Reply(200, payload, {"Content-Encoding": "gzip, gzip"})) as srv:
        with pytest.raises(TransportError) as info:
            asyncio.run(go(srv.url))
    assert info.value.sent is True and "larger than 1000000 bytes once decoded" in str(info.value)


def test_responses_nested_deeper_than_what_was_sent_are_not_parsed():
    deep = (
        b'{"method": "GET", "path": "/x", "status": 200, "responses": [' * 500 + b"{}" + b"]}" * 500
    )  # 1,002 levels of JSON: orjson reads it
    with RecordingUpstream(lambda req: Reply(200, b'{"responses": [' + deep + b"]}")) as srv:
        reply = send_through_endpoint(srv.url, [Operation("GET", "/x")])
    assert reply.status == 200 and reply.responses is None  # not what was sent: its outcome is unknown


def test_direct_mode_reads_an_api_answer_within_the_same_bounds():
    from tests.support.hostile_upstream import bomb

    payload = bomb(64 * 1024 * 1024)

    def respond(req):
        if req.path == "/bomb":
            return Reply(200, payload, {"Content-Encoding": "gzip, gzip"})
        return Reply(200, b"[" * 300 + b"]" * 300)  # deeper than an answer can carry

    with RecordingUpstream(respond) as srv:
        out = Client(srv.url, token="t", mode="direct").send(
            Batch([Operation("GET", "/bomb"), Operation("GET", "/deep")])
        )
    assert [r.status for r in out] == [502, 502]
    assert "larger than 10485760 bytes once decoded" in out[0].body["error"]["message"]
    assert "nested too deeply" in out[1].body["error"]["message"]
