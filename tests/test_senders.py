"""How batches reach the API (batchnb._senders): the batch endpoint over HTTP, the engine in this process, Retry-After."""

import asyncio
import json
import zlib
from datetime import UTC, datetime, timedelta
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
    in_an_hour = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert 1800 < retry_after({"Retry-After": in_an_hour}) <= 3600
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=120), usegmt=True)
    assert retry_after({"Retry-After": earlier}) == 0.0


def test_an_answer_that_inflates_past_the_limit_is_an_outcome_unknown_not_a_full_kernel():
    from tests.support.hostile_upstream import bomb

    payload = bomb(64 * 1024 * 1024)

    async def go(url):
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            return await BatchEndpoint(http, url, {}, {}, max_answer_bytes=1_000_000)([Operation("GET", "/x")])

    with (
        RecordingUpstream(lambda req: Reply(200, payload, {"Content-Encoding": "gzip, gzip"})) as srv,
        pytest.raises(TransportError) as info,
    ):
        asyncio.run(go(srv.url))
    assert info.value.sent is True and "larger than 1000000 bytes once decoded" in str(info.value)


def test_a_batch_answer_cut_short_is_not_read_as_a_shorter_one():
    import gzip

    answer = {"responses": [{"method": "GET", "path": f"/x/{i}", "status": 200, "body": {"i": i}} for i in range(50)]}
    whole = gzip.compress(json.dumps(answer).encode())
    with (
        RecordingUpstream(lambda req: Reply(200, whole[: len(whole) * 2 // 3], {"Content-Encoding": "gzip"})) as srv,
        pytest.raises(TransportError) as info,
    ):
        send_through_endpoint(srv.url, [Operation("GET", f"/x/{i}") for i in range(50)])
    assert info.value.sent is True, "the batch went: what it did is unknown, not undone"
    assert "could not be read" in str(info.value) and "ends before its gzip stream does" in str(info.value)


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


# ---------------------------------------------------------------- answers read as their bytes


def _answer_bomb(body_bytes: int, rows: int = 2) -> bytes:
    """A batch's answer gzipped: ``rows`` responses, the first with a body of ``body_bytes`` bytes of ``[0,0,…]``.

    A few tens of kilobytes on the wire; as Python objects, the body alone takes four times its size.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = b'{"responses": [{"method": "GET", "path": "/x", "status": 200, "duration": 1.0, "body": [0'
    parts = [packer.compress(head)]
    piece = b",0" * (1 << 19)
    for _ in range(body_bytes // len(piece)):
        parts.append(packer.compress(piece))
    rest = [{"method": "GET", "path": "/x", "status": 200, "duration": 1.0, "body": {"ok": i}} for i in range(1, rows)]
    tail = b"]}" + b"".join(b"," + json.dumps(r).encode() for r in rest) + b"]}"
    parts.append(packer.compress(tail) + packer.flush())
    return b"".join(parts)


def _batch_server(answer: bytes):
    def respond(req):
        if req.method == "GET":
            return Reply(200, {"maxRequests": 50, "maxDepth": 4})
        return Reply(200, answer, {"Content-Encoding": "gzip"})

    return RecordingUpstream(respond)


def _traced_peak(work):
    """What ``work()`` returns, and the most memory Python held meanwhile beyond what it held before."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = work()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.mark.slow
def test_an_answer_that_inflates_past_the_clients_limit_is_refused_with_a_clear_error_on_its_rows():
    import pandas as pd

    answer = _answer_bomb(64 * 1024 * 1024)  # about 65 KB: it once took a kernel to 2 GB
    rows = pd.DataFrame({"n": [1, 2]}, index=["r1", "r2"])
    with _batch_server(answer) as srv:
        result, peak = _traced_peak(
            lambda: Client(srv.url, token="t").submit(rows, method="GET", path="/x", progress=False)
        )
        posts = sum(q.method == "POST" for q in srv.requests)
    assert not result["ok"].any() and result["status"].isna().all()
    for error in result["error"]:
        assert "larger than 33554432 bytes once decoded" in error and "max_answer_bytes=" in error, error
    assert result["batch"].tolist() == [0, 0]  # which batch: the rows name it
    assert posts == 1, "an answer too large to read was asked for again"
    assert peak < 4 * 32 * 1024 * 1024, f"{peak >> 20} MiB held to refuse an answer past 32 MiB"


@pytest.mark.slow
def test_an_answer_within_the_limit_is_kept_as_text_in_about_its_size_until_a_cell_is_read():
    import pandas as pd

    size = 24 * 1024 * 1024
    with _batch_server(_answer_bomb(size)) as srv:
        result, peak = _traced_peak(
            lambda: Client(srv.url, token="t").submit(
                pd.DataFrame({"n": [1, 2]}), method="GET", path="/x", progress=False
            )
        )
    assert result["ok"].all(), result["error"].tolist()
    body = result["body"]
    assert body.array.nbytes < size * 1.1  # the text, as it came
    assert body[1] == {"ok": 1}
    # As objects, a list of 12 million zeros is 96 MiB of pointers alone, parsed from twice that in text.
    assert peak < 4 * size, f"{peak >> 20} MiB held to read an answer of {size >> 20} MiB"
