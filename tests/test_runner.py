"""Running a plan (batchnb._runner): cross-batch references, retries that never duplicate, interrupts, pace, progress."""

import asyncio
import json
import time

import httpx
import pytest

from batchnb import AsyncClient, Batch, Client, Operation, TransportError, ref
from batchnb._journal import Journal
from batchnb._runner import Runner
from batchnb._senders import Reply
from batchnb.model import Response
from batchnb.plan import make_plan
from tests.support import count, interrupted_when
from tests.support.faults import DroppingServer

API = "/api/2.1/scheduling"


def companies(n, prefix="co"):
    return [Operation("POST", f"{API}/companies", {"name": f"{prefix} {i}"}, name=f"{prefix}-{i}") for i in range(n)]


# ---------------------------------------------------------------- references across batches


def test_chain_larger_than_one_batch_is_resolved_across_batches(fresh_server):
    ops = (
        companies(1)
        + [
            Operation(
                "POST",
                f"{API}/companies/{ref('co-0', '$.id')}/services",
                {"name": f"s{i}", "duration": 10 + i},
                name=f"s{i}",
            )
            for i in range(24)
        ]
        + [Operation("GET", f"{API}/companies/{ref('co-0', '$.id')}/services/{ref('s23', '$.id')}")]
    )
    client = Client(fresh_server.url, **fresh_server.credentials(), max_requests=10)
    result = client.submit(ops, progress=False)
    assert result["ok"].all(), result[~result["ok"]]
    assert result["batch"].nunique() == 3
    company_id = result.loc[0, "body"]["id"]
    assert all(company_id in p for p in result["path"].iloc[1:])
    assert result.iloc[-1]["body"]["name"] == "s23"
    assert count(fresh_server.db, "services") == 24


def test_failed_dependency_in_an_earlier_batch_is_424_without_sending(fresh_server):
    ops = (
        [Operation("POST", f"{API}/companies", {"name": ""}, name="bad")]
        + [
            Operation("POST", f"{API}/companies/{ref('bad', '$.id')}/services", {"name": f"s{i}"}, name=f"s{i}")
            for i in range(5)
        ]
        + [Operation("GET", f"{API}/companies/x/services/{ref('s4', '$.id')}")]
    )
    result = Client(fresh_server.url, **fresh_server.credentials(), max_requests=3).submit(ops, progress=False)
    assert result["status"].tolist() == [400, 424, 424, 424, 424, 424, 424]
    assert "answered 400" in result.loc[3, "error"]


# ---------------------------------------------------------------- retries


class Recorder(httpx.AsyncBaseTransport):
    """A transport that answers from a script and notes when each request came."""

    def __init__(self, script):
        self.script = list(script)
        self.times = []
        self.bodies = []

    async def handle_async_request(self, request):
        self.times.append(time.monotonic())
        if request.method == "GET":
            return httpx.Response(200, json={"maxRequests": 50, "maxDepth": 4})
        body = json.loads(await request.aread())
        self.bodies.append(body)
        action = self.script.pop(0)
        if isinstance(action, Exception):
            raise action
        status, headers = action
        if status == 200:
            return httpx.Response(
                200,
                json={
                    "responses": [
                        {"method": op["method"], "path": op["path"], "status": 200, "duration": 1, "body": {"ok": True}}
                        for op in body["requests"]
                    ]
                },
            )
        return httpx.Response(status, headers=headers, json={"error": {"code": "busy", "message": "busy"}})


@pytest.mark.slow
def test_429_retry_after_is_honoured():
    t = Recorder([(429, {"Retry-After": "0.5"}), (503, {"Retry-After": "0.3"}), (200, {})])
    client = AsyncClient("http://api.test", token="x", transport=t)
    out = asyncio.run(client.submit(Batch([Operation("POST", "/a", {"k": 1})])))
    posts = t.times[1:]
    assert out[0].status == 200 and len(posts) == 3
    assert posts[1] - posts[0] >= 0.5 and posts[2] - posts[1] >= 0.3


def test_429_retries_give_up_after_retry_for_with_a_clear_error():
    t = Recorder([(429, {"Retry-After": "0"})] * 3)
    result = asyncio.run(
        AsyncClient("http://api.test", token="x", transport=t, retry_for=0).submit([Operation("GET", "/a")])
    )
    assert len(t.bodies) == 1
    assert result["status"].isna().all()
    assert "answered 429 1 time (retry_for=0 s)" in result.loc[0, "error"]


@pytest.mark.slow
def test_a_batch_answered_429_is_retried_on_time_not_on_count():
    # retries=0 counts batches that could not be delivered; 429 and 503 go on until retry_for.
    t = Recorder([(429, {"Retry-After": "0"}), (503, {}), (429, {}), (503, {"Retry-After": "0"}), (200, {})])
    client = AsyncClient("http://api.test", token="x", transport=t, retries=0, backoff=0.01, max_backoff=0.05)
    result = asyncio.run(client.submit([Operation("GET", "/a")], progress=False))
    assert len(t.bodies) == 5 and result.loc[0, "status"] == 200 and result.loc[0, "attempts"] == 5


@pytest.mark.slow
def test_outcome_unknown_post_is_not_resent_but_put_is():
    t = Recorder([httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"), (200, {})])
    client = AsyncClient("http://api.test", token="x", transport=t)
    post = asyncio.run(client.submit([Operation("POST", "/a", {"k": 1}), Operation("GET", "/b")]))
    assert len(t.bodies) == 1
    assert post["status"].isna().all()
    expected = "outcome unknown: not resent because it contains POST (the connection failed after the batch was sent (ReadTimeout))"
    assert (post["error"] == expected).all(), post["error"].tolist()
    put = asyncio.run(client.submit([Operation("PUT", "/a", {"k": 1})]))
    assert len(t.bodies) == 3 and put.loc[0, "status"] == 200 and put.loc[0, "attempts"] == 2


@pytest.mark.slow
def test_dropped_connection_on_a_post_batch_is_not_resent():
    with DroppingServer() as srv:
        client = Client(srv.url, token="x", retries=3)
        result = client.submit([Operation("POST", f"{API}/companies", {"name": "once"})], progress=False)
        assert srv.sent("POST") == 1
        assert result.loc[0, "error"].startswith("outcome unknown: not resent because it contains POST (the connection")
        client.submit([Operation("DELETE", f"{API}/companies/co_1")], progress=False, retries=2)
        assert srv.sent("POST") == 1 + 3  # the idempotent batch: 1 + 2 retries


class Script:
    """A sender (the runner's seam) that answers each batch from a script and keeps what it was sent."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    async def __call__(self, ops):
        self.sent.append([op.path for op in ops])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer == 200:
            return Reply(200, {}, [Response(op.method, op.path, 201, op.name, 1.0, {"id": op.path}) for op in ops])
        return Reply(answer, {}, None, {"error": {"code": "refused", "message": f"refused with {answer}"}})


def run(runner, ops, **plan_options):
    return asyncio.run(runner.run(make_plan(ops, **plan_options)))


def test_a_post_batch_that_never_left_is_sent_again():
    send = Script(TransportError("could not connect", sent=False), 200)
    out = run(Runner(send, backoff=0), [Operation("POST", "/a", {})])
    assert send.sent == [["/a"], ["/a"]]
    assert out[0].status == 201 and out[0].attempts == 2


def test_a_batch_that_never_left_says_not_run_once_retries_are_spent():
    send = Script(*[TransportError("could not connect to the server", sent=False)] * 3)
    out = run(Runner(send, retries=2, backoff=0), [Operation("POST", "/a", {})])
    assert len(send.sent) == 3
    assert out[0].status is None and out[0].error == "not run: could not connect to the server"


@pytest.mark.parametrize(
    ("method", "sends", "error"),
    [
        ("POST", 1, "outcome unknown: not resent because it contains POST"),
        ("PUT", 4, "outcome unknown: the server answered 500"),
    ],
)
def test_a_500_is_resent_only_when_the_batch_is_idempotent(method, sends, error):
    send = Script(*[500] * 4)
    out = run(Runner(send, retries=3, backoff=0), [Operation(method, "/a", {})])
    assert len(send.sent) == sends
    assert out[0].status is None and out[0].error == error


def test_a_refused_batch_stops_every_batch_not_yet_started():
    send = Script(200, 400)
    runner = Runner(send, concurrency=1)
    out = run(runner, [Operation("POST", f"/c{i}", {}) for i in range(4)], max_requests=1)
    assert send.sent == [["/c0"], ["/c1"]]  # nothing after the refusal was sent
    assert runner.fatal is not None and runner.fatal.status == 400
    assert [r.status for r in out] == [201, None, None, None]
    assert out[1].error == "not run: the server refused the batch: HTTP 400: refused with 400"
    assert [r.error for r in out[2:]] == ["not run: HTTP 400: refused with 400"] * 2


def test_the_journal_has_the_send_before_the_batch_leaves(tmp_path):
    journal = Journal(tmp_path / "run.jsonl")
    on_disk_at_send = []

    async def send(ops):
        # What a crash at this instant would leave: the rows are in flight, not done.
        on_disk_at_send.append(Journal(journal.path).read())
        return Reply(200, {}, [Response(op.method, op.path, 201, row=op.row) for op in ops])

    ops = [Operation("POST", f"/c{i}", {}, row=f"r{i}") for i in range(2)]
    run(Runner(send, concurrency=1, journal=journal), ops, max_requests=1)
    journal.close()
    first, second = on_disk_at_send
    assert first.in_flight == {'"r0"': False} and first.done == {}
    assert second.in_flight == {'"r1"': False} and set(second.done) == {'"r0"'}
    assert set(Journal(journal.path).read().done) == {'"r0"', '"r1"'}


# ---------------------------------------------------------------- interrupts, progress, pace


def test_interrupt_keeps_what_finished(fresh_server):
    client = fresh_server.async_client(max_requests=2, concurrency=1)
    # Interrupted mid-run, once some batches are done.
    partial = interrupted_when(
        client.submit(companies(400, "i"), progress=False),
        lambda: count(fresh_server.db) >= 10,
        "no batch was done within 60 s",
    )
    done = int(partial["ok"].sum())
    assert 0 < done < 400
    unknown = int(partial["error"].str.startswith("outcome unknown").fillna(False).sum())
    # Rows in flight when interrupted may have run: they say "outcome unknown", never "not run".
    assert done <= count(fresh_server.db) <= done + unknown
    assert partial.loc[~partial["ok"], "error"].str.match(r"not run|outcome unknown").all()


def test_progress_bar_counts_done_and_failed_operations(fresh_server, capsys):
    ops = [*companies(6, "p"), Operation("POST", f"{API}/companies", {"name": ""})]
    Client(fresh_server.url, **fresh_server.credentials(), max_requests=2).submit(ops)  # on by default: 4 batches
    err = capsys.readouterr().err
    assert "7/7" in err and "failed=1" in err
    Client(fresh_server.url, **fresh_server.credentials(), max_requests=2).submit(ops[:6], progress=False)
    assert "/6" not in capsys.readouterr().err


@pytest.mark.slow
def test_rate_limit_spaces_batches():
    t = Recorder([(200, {})] * 4)
    client = AsyncClient("http://api.test", token="x", transport=t, max_requests=1)
    result = asyncio.run(client.submit([Operation("GET", f"/a/{i}") for i in range(4)], rate=5, progress=False))
    posts = t.times[1:]
    assert result["ok"].all() and len(posts) == 4
    assert posts[-1] - posts[0] >= 3 / 5 * 0.99  # four batches at five a second: at least 0.6 s from first to last


class Paced:
    """A throttle paced from the start at ``most`` operations a part, that never waits."""

    def __init__(self, most):
        self.most = most
        self.reserved = []

    def most_at_once(self):
        return self.most

    async def wait(self, n=1):
        self.reserved.append(n)

    def observe(self, sent_at, answers, **kw):
        list(answers)

    def limited(self, *a, **kw):
        pass


def test_a_paced_batch_goes_out_in_parts_in_order():
    send = Script(*[200] * 4)
    throttle = Paced(5)
    out = run(Runner(send, throttle=throttle), [Operation("POST", f"/a/{i}", {}) for i in range(20)], max_requests=20)
    assert [len(s) for s in send.sent] == [5, 5, 5, 5] and throttle.reserved == [5, 5, 5, 5]
    assert [p for s in send.sent for p in s] == [f"/a/{i}" for i in range(20)]
    assert all(r.status == 201 and r.batch == 0 and r.attempts == 1 for r in out)


def test_with_no_429_seen_a_batch_goes_out_whole():
    from batchnb._ratelimit import Throttle

    send = Script(200)
    run(Runner(send, throttle=Throttle()), [Operation("POST", f"/a/{i}", {}) for i in range(20)], max_requests=20)
    assert [len(s) for s in send.sent] == [20]


def test_a_part_never_separates_an_operation_from_one_it_refers_to():
    ops = [Operation("POST", f"/a/{i}", {}, name=f"op{i}") for i in range(10)]
    ops[6] = Operation("POST", f"/b/{ref('op2', '$.id')}", {}, name="op6")
    send = Script(*[200] * 3)
    run(Runner(send, throttle=Paced(3)), ops, max_requests=10)
    assert [len(s) for s in send.sent] == [7, 3]  # cut after op6 at the earliest: it needs op2's answer in its batch


def test_a_child_counts_and_a_child_reference_ties_too():
    ops = [
        Operation("POST", "/p", {}, name="p", requests=[Operation("GET", f"/c/{ref('p', '$.id')}")]),
        Operation("POST", "/q", {}, name="q"),
        Operation("GET", "/r", requests=[Operation("GET", f"/s/{ref('q', '$.id')}")]),
    ]
    sent = []

    def answer(op):
        return Response(op.method, op.path, 200, op.name, 1.0, {"id": "x"}, responses=[answer(c) for c in op.requests])

    async def send(part):
        sent.append(part)
        return Reply(200, {}, [answer(op) for op in part])

    out = run(Runner(send, throttle=Paced(2)), ops, max_requests=10)
    assert [len(s) for s in sent] == [1, 2] and all(
        r.ok for r in out
    )  # p and its child; then q, and r whose child refers to q


def test_a_part_that_could_not_be_delivered_leaves_the_rest_unsent():
    send = Script(200, *[TransportError("could not connect", sent=False)] * 3)
    out = run(
        Runner(send, throttle=Paced(2), retries=2, backoff=0), [Operation("POST", f"/a/{i}", {}) for i in range(6)]
    )
    assert len(send.sent) == 4  # the first part, then the second three times; the third never
    assert [r.status for r in out[:2]] == [201, 201]
    assert all(r.status is None and r.error == "not run: could not connect" for r in out[2:])


def test_a_part_refused_as_a_whole_stops_the_batch():
    send = Script(200, 400)
    out = run(Runner(send, throttle=Paced(2)), [Operation("POST", f"/a/{i}", {}) for i in range(6)])
    assert len(send.sent) == 2
    assert [r.status for r in out[:2]] == [201, 201]
    assert all(r.status is None and r.error.startswith("not run:") for r in out[2:])


# ---------------------------------------------------------------- idempotency keys


class KeyedScript(Script):
    """A Script that also keeps the Idempotency-Key each operation went with."""

    def __init__(self, *answers):
        super().__init__(*answers)
        self.keys = []

    async def __call__(self, ops):
        self.keys.append(
            [next((v for k, v in (op.headers or {}).items() if k.lower() == "idempotency-key"), None) for op in ops]
        )
        if self.answers and isinstance(self.answers[0], list):  # per-operation statuses
            statuses = self.answers.pop(0)
            self.sent.append([op.path for op in ops])
            return Reply(
                200,
                {},
                [Response(op.method, op.path, s, op.name, 1.0, {"id": op.path}) for op, s in zip(ops, statuses)],
            )
        return await super().__call__(ops)


def keyed_runner(send, **kw):
    from batchnb._keys import RunKeys

    keys = RunKeys("run-1")
    return Runner(send, backoff=0, keys=keys, **kw), keys


def run_keyed(runner, keys, ops, **plan_options):
    plan = make_plan(ops, **plan_options)
    keys.assign(op for b in plan.batches for op in b.operations)
    return asyncio.run(runner.run(plan))


def test_a_keyed_post_batch_whose_outcome_is_unknown_is_resent_with_the_same_keys():
    send = KeyedScript(TransportError("the connection failed after the batch was sent", sent=True), 502, 200)
    runner, keys = keyed_runner(send)
    ops = [
        Operation("POST", "/a", {}, row="r1"),
        Operation("PATCH", "/b", {}, row="r2"),
        Operation("GET", "/c", row="r3"),
    ]
    out = run_keyed(runner, keys, ops)
    assert len(send.sent) == 3
    assert send.keys[0] == send.keys[1] == send.keys[2]
    first = send.keys[0]
    assert first[0] and first[1] and first[0] != first[1] and first[2] is None  # GET needs none
    assert [r.status for r in out] == [201, 201, 201] and out[0].attempts == 3


def test_without_keys_the_same_batch_is_not_resent():
    send = KeyedScript(TransportError("the connection failed after the batch was sent", sent=True))
    out = run(Runner(send, backoff=0), [Operation("POST", "/a", {})])
    assert len(send.sent) == 1 and send.keys == [[None]]
    assert (
        out[0].error
        == "outcome unknown: not resent because it contains POST (the connection failed after the batch was sent)"
    )


def test_a_key_the_user_set_is_never_replaced():
    send = KeyedScript(TransportError("dropped", sent=True), 200)
    runner, keys = keyed_runner(send)
    out = run_keyed(runner, keys, [Operation("POST", "/a", {}, headers={"idempotency-key": '"mine-1"'})])
    assert send.keys == [['"mine-1"'], ['"mine-1"']] and out[0].status == 201
    assert send.sent == [["/a"], ["/a"]]


def test_a_keyed_operation_answered_409_goes_again_with_its_key():
    send = KeyedScript([201, 409], [201])
    runner, keys = keyed_runner(send)
    out = run_keyed(runner, keys, [Operation("POST", "/a", {}, row=0), Operation("POST", "/b", {}, row=1)])
    assert send.sent == [["/a", "/b"], ["/b"]]
    assert send.keys[1] == [send.keys[0][1]]
    assert [r.status for r in out] == [201, 201]


def test_keys_follow_the_server_unless_told():
    from batchnb._submission import Submission, SubmitOptions

    for idempotency, announced, expected in [
        ("auto", True, True),
        ("auto", False, False),
        (True, False, True),
        (False, True, False),
    ]:
        send = KeyedScript(200)
        limits = {"maxRequests": 50, "maxDepth": 4, "idempotency": announced}
        asyncio.run(
            Submission(
                Batch([Operation("POST", "/a", {})]), {}, limits, send, SubmitOptions(idempotency=idempotency)
            ).run()
        )
        assert (send.keys[0][0] is not None) is expected, (idempotency, announced)


def test_keys_are_numbered_in_the_order_they_are_sent_and_a_recorded_key_comes_back_once():
    from batchnb._keys import RunKeys

    ops = [Operation("POST", f"/a/{i}", {}, row=label) for i, label in enumerate(["r1", 7, ("t", 2), "r1"])]
    ops.insert(2, Operation("GET", "/x", row="g"))
    keys = RunKeys("run-1")
    keys.assign(ops[:3])
    keys.assign(ops[3:])  # the next chunk
    sent = [keys.headers_for(op)["Idempotency-Key"] for op in ops if op.method == "POST"]
    # The run's id and a number: nothing of the rows' labels reaches the API.
    assert sent == [f'"run-1-{n:016x}"' for n in range(4)]
    assert keys.headers_for(ops[2]) is None
    # Continuing a run: a row the journal saw sent goes again with its key (once), the others are numbered anew.
    again = [
        Operation("POST", "/b", {}, row="r1"),
        Operation("POST", "/c", {}, row="r1"),
        Operation("POST", "/d", {}, row="r9"),
    ]
    later = RunKeys("run-2", recorded={'"r1"': '"run-1-0000000000000000"'})
    later.assign(again)
    assert [later.headers_for(op)["Idempotency-Key"] for op in again] == [
        '"run-1-0000000000000000"',
        '"run-2-0000000000000000"',
        '"run-2-0000000000000001"',
    ]


def test_a_batch_that_raises_stops_every_other_batch_before_submit_raises(tmp_path, monkeypatch):
    """The journal's disk full on one batch: submit raises, and no sibling batch goes on sending after it."""
    sent: list[int] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"maxRequests": 5, "maxDepth": 4})
        ops = json.loads(request.content)["requests"]
        sent.append(len(ops))
        await asyncio.sleep(0.01)  # answered later: batches of other slots are in flight meanwhile
        return httpx.Response(200, json={"responses": [{"status": 201, "body": {"n": 1}} for _ in ops]})

    done = Journal.done
    calls = []

    def full_disk(self, batch, responses):
        calls.append(batch)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        done(self, batch, responses)

    monkeypatch.setattr(Journal, "done", full_disk)

    async def go() -> tuple[int, list[asyncio.Task]]:
        client = AsyncClient("http://api.test", token="x", transport=httpx.MockTransport(answer), concurrency=4)
        with pytest.raises(OSError, match="No space left"):
            await client.submit(companies(100), journal=str(tmp_path / "run.jsonl"), progress=False)
        return len(sent), [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    at_raise, pending = asyncio.run(go())
    assert pending == []  # every batch of the run has stopped: nothing can send after submit raised
    assert at_raise < 20  # and not every batch was sent
