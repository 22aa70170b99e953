"""The engine against small in-process ASGI apps: order, nesting, 424s, headers, timeouts."""

import asyncio
import itertools
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response as PlainResponse
from starlette.routing import Route

from batchnb import Batch, Operation, _dispatch, _engine, ref
from batchnb._dispatch import ASGIDispatcher, HTTPDispatcher
from batchnb._engine import execute

CALLS: list[tuple[str, str, str | None, str]] = []


async def echo(request: Request):
    body = await request.body()
    CALLS.append(
        (
            request.method,
            request.url.path + ("?" + request.url.query if request.url.query else ""),
            request.headers.get("authorization"),
            body.decode(),
        )
    )
    if request.path_params["item"] == "fail":
        return JSONResponse({"error": {"message": "nope"}}, status_code=400)
    if request.path_params["item"] == "slow":
        await asyncio.sleep(2)
    if request.path_params["item"] == "big":
        return PlainResponse(b"x" * 5000, media_type="text/plain")
    return JSONResponse({"id": f"id-{request.path_params['item']}", "n": 3, "seen": body.decode()}, status_code=201)


app = Starlette(routes=[Route("/items/{item}", echo, methods=["GET", "POST", "PUT", "DELETE"])])


def run(batch, **kw):
    CALLS.clear()
    kw.setdefault("headers", {"Authorization": "Bearer batch"})
    return asyncio.run(execute(batch, ASGIDispatcher(app, max_response_bytes=kw.pop("max_bytes", 10_000)), **kw))


def test_depth_first_order_and_children_after_parent():
    batch = Batch(
        [
            Operation(
                "POST",
                "/items/a",
                name="a",
                requests=[
                    Operation("POST", "/items/a1", requests=[Operation("POST", "/items/a11")]),
                    Operation("POST", "/items/a2"),
                ],
            ),
            Operation("POST", "/items/b"),
        ]
    )
    out = run(batch)
    assert [c[1] for c in CALLS] == ["/items/a", "/items/a1", "/items/a11", "/items/a2", "/items/b"]
    assert [r.status for r in out] == [201, 201]
    assert out[0].responses[0].responses[0].status == 201
    assert all(r.duration is not None and r.duration >= 0 for r in out)


def test_failed_parent_skips_children_and_dependents_get_424_chain():
    batch = Batch(
        [
            Operation("POST", "/items/fail", name="f", requests=[Operation("POST", "/items/c", name="c")]),
            Operation("POST", f"/items/{ref('f', '$.id')}", name="d1"),
            Operation("POST", f"/items/{ref('d1', '$.id')}", name="d2"),
            Operation("POST", f"/items/{ref('c', '$.id')}", name="d3"),
            Operation("POST", "/items/independent"),
        ]
    )
    out = run(batch)
    assert [r.status for r in out] == [400, 424, 424, 424, 201]
    assert out[0].responses[0].status == 424
    assert "answered 400" in out[1].body["error"]["message"]
    assert "'d1' answered 424" in out[2].body["error"]["message"]
    assert [c[1] for c in CALLS] == ["/items/fail", "/items/independent"]


def test_references_resolve_in_path_headers_and_typed_body():
    batch = Batch(
        [
            Operation("POST", "/items/x", name="x"),
            Operation(
                "PUT",
                f"/items/{ref('x', '$.id')}",
                {"n": ref("x", "$.n"), "s": f"n is {ref('x', '$.n')}"},
                headers={"X-Id": ref("x", "$.id")},
            ),
        ]
    )
    out = run(batch)
    assert out[1].path == "/items/id-x"
    assert CALLS[1][3] == '{"n":3,"s":"n is 3"}'


def test_operation_headers_replace_the_batchs_credentials():
    batch = Batch([Operation("GET", "/items/a"), Operation("GET", "/items/b", headers={"authorization": "Bearer own"})])
    run(batch)
    assert [c[2] for c in CALLS] == ["Bearer batch", "Bearer own"]


def test_query_credentials_are_passed_in_the_same_form_but_not_shown_in_the_path():
    out = run(Batch([Operation("GET", "/items/a?x=1")]), headers={}, query={"apiKey": "k", "token": "t"})
    assert CALLS[0][1] == "/items/a?x=1&apiKey=k&token=t"
    assert out[0].path == "/items/a?x=1"


def test_timeout_response_size_and_unsafe_resolved_path():
    batch = Batch(
        [
            Operation("GET", "/items/slow"),
            Operation("GET", "/items/big"),
            Operation("POST", "/items/dots", name="d"),
            Operation("GET", "/items/ok"),
        ]
    )
    out = run(batch, timeout=0.2, max_bytes=1000)
    assert out[0].status == 504 and out[1].status == 502 and out[3].status == 201


def test_what_a_checked_batch_fills_in_or_encodes_is_checked_again_and_an_unchecked_operation_always() -> None:
    # A value filled in by a reference, into the path and into a header, is checked as it is sent, checked batch or not.
    filled = Batch(
        [
            Operation("POST", "/items/a", "line 1\nEvil: 1", name="a"),  # text, echoed as it came: with its newline
            Operation("GET", "/items/${result=a:$.seen}"),
            Operation("GET", "/items/b", headers={"X-Seen": "${result=a:$.seen}"}),
        ]
    )
    out = run(filled, checked=True)
    assert [r.status for r in out] == [201, 400, 400]
    assert "resolved path or header" in out[1].body["error"]["message"] and "X-Seen" in out[2].body["error"]["message"]
    # Made the unchecked way (as the client fills in earlier batches' results): checked here whatever the flag says.
    sneaky = [
        Operation._unchecked("GET", "/items/../admin"),
        Operation._unchecked("GET", "/items/c", headers={"Host": "evil"}),
    ]
    assert [r.status for r in run(sneaky)] == [400, 400]
    assert CALLS == []
    # A non-ASCII path is percent-encoded, then checked, in a checked batch too.
    out = run(Batch([Operation("GET", "/items/東京")]), checked=True)
    assert out[0].status == 201 and CALLS[0][1] == "/items/東京"


def test_deadline_stops_what_has_not_started():
    import time

    batch = Batch([Operation("GET", "/items/slow"), Operation("GET", "/items/a")])
    out = run(batch, timeout=5, deadline=time.monotonic() + 0.2)
    assert out[0].status == 504 and out[1].status == 503


def test_http_dispatcher_does_not_follow_redirects():
    async def redirect(request):
        return PlainResponse(status_code=302, headers={"location": "http://elsewhere.invalid/"})

    rapp = Starlette(routes=[Route("/r", redirect)])

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rapp)) as http:
            return await execute(Batch([Operation("GET", "/r")]), HTTPDispatcher(http, "http://api"))

    out = asyncio.run(go())
    assert out[0].status == 302 and out[0].headers["Location"] == "http://elsewhere.invalid/"


# ---------------------------------------------------------------- bounds on what an API answers


def test_a_nested_gzip_bomb_stops_at_the_decoded_limit():
    from tests.support.faults import RecordingUpstream, Reply
    from tests.support.hostile_upstream import bomb

    payload = bomb(64 * 1024 * 1024)  # a few hundred bytes on the wire
    with RecordingUpstream(lambda req: Reply(200, payload, {"Content-Encoding": "gzip, gzip"})) as up:

        async def go():
            async with httpx.AsyncClient(trust_env=False) as http:
                return await execute(
                    Batch([Operation("GET", "/bomb")]), HTTPDispatcher(http, up.url, max_response_bytes=1_000_000)
                )

        out = asyncio.run(go())
    assert out[0].status == 502, out[0].body
    assert out[0].body["error"]["message"] == "the API's answer is larger than 1000000 bytes once decoded"


def test_a_compressed_answer_cut_short_answers_502_and_the_batch_goes_on():
    import gzip

    from tests.support.faults import RecordingUpstream, Reply

    whole = gzip.compress(b'{"items": [' + b'"x", ' * 500 + b'"x"]}')

    def respond(req):
        if req.path == "/cut":
            return Reply(200, whole[: len(whole) // 2], {"Content-Encoding": "gzip"})
        return Reply(200, whole, {"Content-Encoding": "gzip"})

    with RecordingUpstream(respond) as up:

        async def go():
            async with httpx.AsyncClient(trust_env=False) as http:
                return await execute(
                    Batch([Operation("GET", "/cut"), Operation("GET", "/whole")]), HTTPDispatcher(http, up.url)
                )

        out = asyncio.run(go())
    assert [r.status for r in out] == [502, 200], [r.body for r in out]
    assert out[0].body["error"]["code"] == "unreadable_response"
    assert "ends before its gzip stream does" in out[0].body["error"]["message"]
    assert len(out[1].body["items"]) == 501


def test_a_reference_into_an_answer_without_a_body_does_not_run():
    async def empty(request):
        return PlainResponse(status_code=204)

    eapp = Starlette(routes=[Route("/empty", empty, methods=["DELETE"]), Route("/items/{item}", echo, methods=["GET"])])
    ops = Batch([Operation("DELETE", "/empty", name="e"), Operation("GET", f"/items/{ref('e', '$')}")])
    CALLS.clear()
    out = asyncio.run(execute(ops, ASGIDispatcher(eapp)))
    assert [r.status for r in out] == [204, 424]
    assert "answered 204 with no body" in out[1].body["error"]["message"]
    assert CALLS == []  # no GET /items/null


def test_values_that_references_fill_in_are_bounded_per_operation():
    batch = Batch(
        [
            Operation("POST", "/items/x", name="x"),
            Operation("POST", "/items/y", {"copies": [ref("x", "$")] * 2000}),
            Operation("POST", "/items/z", {"one": ref("x", "$")}),
        ]
    )
    out = run(batch, max_resolved_bytes=10_000)
    assert [r.status for r in out] == [201, 413, 201]
    assert out[1].body["error"] == {"code": "resolved_too_large", "message": out[1].body["error"]["message"]}
    assert "more than 10000 bytes" in out[1].body["error"]["message"]
    assert [c[1] for c in CALLS] == ["/items/x", "/items/z"]


def test_the_whole_answer_is_bounded():
    out = run(
        Batch([Operation("GET", "/items/big")] * 4 + [Operation("GET", "/items/a")]),
        max_bytes=10_000,
        max_answer_bytes=12_000,
    )
    assert [r.status for r in out] == [200, 200, 502, 503, 503]
    assert out[2].body["error"]["code"] == "answer_too_large"
    assert out[3].body["error"]["message"] == "not run: the batch's answer reached its limit of 12000 bytes"


def test_an_answer_too_deep_to_carry_is_that_operations_502():
    async def deep(request):
        return PlainResponse(b"[" * 300 + b"]" * 300, media_type="application/json")

    dapp = Starlette(routes=[Route("/deep", deep), Route("/items/{item}", echo, methods=["POST"])])
    out = asyncio.run(execute(Batch([Operation("POST", "/items/w"), Operation("GET", "/deep")]), ASGIDispatcher(dapp)))
    assert [r.status for r in out] == [201, 502]
    assert "nested too deeply" in out[1].body["error"]["message"]
    from batchnb import _json

    _json.dumps({"responses": [r.to_wire() for r in out]})  # the batch's answer can be written


def test_an_encoded_slash_stays_inside_its_segment_in_process():
    seen = []

    async def item(request):
        seen.append(request.path_params["item"])
        return JSONResponse({"ok": True})

    sapp = Starlette(routes=[Route("/items/{item}", item), Route("/items/{item}/services/{sv}", item)])
    out = asyncio.run(execute(Batch([Operation("GET", "/items/co_1%2Fservices%2Fsv_2")]), ASGIDispatcher(sapp)))
    assert out[0].status == 200 and seen == ["co_1%2Fservices%2Fsv_2"]


def test_earlier_results_filled_in_client_side_keep_the_same_bounds():
    from batchnb._engine import prepare, result_lookup
    from batchnb.model import Response

    earlier = {"co": Response("POST", "/c", 201, body={"id": "co_1/services/sv_2", "blob": "x" * 5000})}
    ops = [
        Operation("DELETE", "/c/${result=co:$.id}"),
        Operation("POST", "/c", {"b": [ref("co", "$.blob")] * 10}),
        Operation("GET", "/ok"),
    ]
    p = prepare(ops, result_lookup(earlier, defer_missing=True), max_resolved_bytes=20_000)
    assert [op.path for op in p.sendable] == ["/ok"]
    out = p.merge([Response("GET", "/ok", 200)])
    assert [r.status for r in out] == [400, 413, 200]
    assert "may read as a separator" in out[0].body["error"]["message"]


# ---------------------------------------------------------------- operations in flight at once


class Timeline:
    """A dispatcher that takes ``delay`` per operation and keeps when each started and ended."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.spans: dict[str, tuple[float, float]] = {}
        self.in_flight = 0
        self.most = 0

    async def __call__(self, method, path, headers, body):
        import json as _json
        import time as _time

        from batchnb._dispatch import DispatchResult

        start = _time.monotonic()
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        key = path.split("?")[0]
        self.spans[key] = (start, _time.monotonic())
        status = 400 if key.endswith("/fail") else 201
        return DispatchResult(
            status, {"content-type": "application/json"}, _json.dumps({"id": key.rsplit("/", 1)[-1]}).encode()
        )


def test_parallel_operations_wait_for_their_parent_and_references_and_keep_their_places():
    t = Timeline()
    ops = [
        Operation("POST", "/a", name="a", requests=[Operation("POST", f"/a1/{ref('a', '$.id')}", name="a1")]),
        Operation("POST", "/b", name="b"),
        Operation("POST", f"/c/{ref('b', '$.id')}/{ref('a1', '$.id')}", name="c"),
        *[Operation("POST", f"/free{i}") for i in range(6)],
    ]
    out = asyncio.run(execute(ops, t, parallel=4))
    # (each answer's id is its path's last segment: a1 answered "a")
    assert [r.path for top in out for _p, r in top.walk()] == [
        "/a",
        "/a1/a",
        "/b",
        "/c/b/a",
        *[f"/free{i}" for i in range(6)],
    ]
    assert t.most == 4  # the cap, reached
    start, end = {k: s for k, (s, _e) in t.spans.items()}, {k: e for k, (_s, e) in t.spans.items()}
    assert start["/a1/a"] >= end["/a"]  # after its parent
    assert start["/c/b/a"] >= max(end["/b"], end["/a1/a"])  # after everything it references
    assert start["/b"] < end["/a"]  # independent operations overlap


def test_parallel_one_is_the_specs_order():
    t = Timeline(delay=0.001)
    ops = [Operation("POST", f"/op{i}") for i in range(5)]
    asyncio.run(execute(ops, t, parallel=1))
    assert t.most == 1
    assert sorted(t.spans, key=lambda k: t.spans[k][0]) == [f"/op{i}" for i in range(5)]


def test_parallel_a_finished_operations_slot_goes_straight_to_the_next_one():
    # One runner per slot goes on from operation to operation: no task per
    # operation waiting to be woken (a trip through every ready task each).
    runners: list[object] = []

    async def dispatch(method, path, headers, body):
        from batchnb._dispatch import DispatchResult

        runners.append(asyncio.current_task())
        await asyncio.sleep(0)
        return DispatchResult(200, {}, b"")

    ops = [Operation("GET", f"/op{i}") for i in range(12)]
    out = asyncio.run(execute(ops, dispatch, parallel=3))
    assert [r.status for r in out] == [200] * 12
    assert len(runners) == 12 and len(set(map(id, runners))) == 3


def test_parallel_operations_that_become_ready_together_are_taken_up_to_the_limit():
    t = Timeline(delay=0.001)
    ops = [Operation("POST", "/root", name="root")] + [
        Operation("GET", f"/x{i}/{ref('root', '$.id')}") for i in range(7)
    ]
    out = asyncio.run(execute(ops, t, parallel=4))
    assert [r.status for r in out] == [201] * 8
    assert t.most == 4  # seven waited for one: four started together, never more


def test_parallel_an_error_in_one_operation_stops_the_others_in_flight():
    class Broken(BaseException):
        pass

    running: set[str] = set()
    cancelled: list[str] = []

    async def dispatch(method, path, headers, body):
        from batchnb._dispatch import DispatchResult

        running.add(path)
        try:
            if path == "/bad":
                raise Broken()
            await asyncio.sleep(30)
            return DispatchResult(200, {}, b"")
        except asyncio.CancelledError:
            cancelled.append(path)
            raise
        finally:
            running.discard(path)

    ops = [Operation("GET", "/slow1"), Operation("GET", "/slow2"), Operation("GET", "/bad"), Operation("GET", "/x")]

    async def main() -> None:
        with pytest.raises(Broken):
            await execute(ops, dispatch, parallel=3, timeout=60)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert sorted(cancelled) == ["/slow1", "/slow2"] and not running


def _random_batch(draw):
    from hypothesis import strategies as st

    names: list[str] = []
    count = [0]

    def op(depth: int) -> Operation:
        count[0] += 1
        i = count[0]
        fails = draw(st.booleans().map(lambda b: b and i % 3 == 0))
        used = draw(st.lists(st.sampled_from(names), max_size=2, unique=True)) if names else []
        path = f"/n{i}" + "".join(f"/{ref(n, '$.id')}" for n in used) + ("/fail" if fails else "")
        kids = [op(depth + 1) for _ in range(draw(st.integers(0, 2 if depth < 2 else 0)))]
        names.append(f"n{i}")
        return Operation("POST", path, name=f"n{i}", requests=kids)

    return [op(0) for _ in range(draw(st.integers(1, 5)))]


@pytest.mark.slow
def test_parallel_outcomes_are_the_sequential_outcomes():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data(), st.integers(2, 8))
    def check(data, parallel):
        ops = _random_batch(data.draw)
        sequential = asyncio.run(execute(ops, Timeline(delay=0)))
        concurrent = asyncio.run(execute(ops, Timeline(delay=0), parallel=parallel))

        def outcome(responses):
            return [(p, r.name, r.path, r.status, r.body) for top in responses for p, r in [("", top), *top.walk()]]

        assert outcome(concurrent) == outcome(sequential)

    check()


# ---------------------------------------------------------------- the per-operation timeout


def test_an_answer_that_never_waits_needs_no_timer() -> None:
    async def instant() -> str:
        return "at once"

    assert asyncio.run(_engine._bounded(instant(), 0.0)) == "at once"


def test_an_answer_that_waits_past_the_timeout_is_a_timeout_and_is_cancelled() -> None:
    cleaned = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append("cancelled inside")
        return "late"

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await _engine._bounded(slow(), 0.05)

    asyncio.run(asyncio.wait_for(main(), 10))
    assert cleaned == ["cancelled inside"]


@pytest.mark.slow
def test_time_spent_before_the_first_wait_counts() -> None:
    # 0.4 s of work, then 0.2 s of waiting, within 0.5 s: only 0.1 s is left when the wait begins, so the
    # wait is cut. A timer armed with the whole 0.5 s at the first wait would let it finish ("late").
    async def busy_then_wait() -> str:
        time.sleep(0.4)  # synchronous work: no timeout can interrupt it, but it is spent
        await asyncio.sleep(0.2)
        return "late"

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await _engine._bounded(busy_then_wait(), 0.5)
        assert time.monotonic() - started < 5, "the timer did not fire"

    asyncio.run(main())


def test_waiting_answers_and_errors_come_through() -> None:
    async def waits(n: int) -> int:
        for _ in range(n):
            await asyncio.sleep(0)
        return n

    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("from the API")

    async def fails_at_once() -> None:
        raise KeyError("at once")

    async def main() -> None:
        assert await _engine._bounded(waits(3), 5) == 3
        with pytest.raises(ValueError, match="from the API"):
            await _engine._bounded(fails(), 5)
        with pytest.raises(KeyError):
            await _engine._bounded(fails_at_once(), 5)
        assert await _engine._bounded(asyncio.ensure_future(waits(1)), 5) == 1  # any awaitable

    asyncio.run(main())


def test_a_cancelled_caller_cancels_the_operation() -> None:
    seen = []

    async def waits_long() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        task = asyncio.ensure_future(_engine._bounded(waits_long(), 30))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    assert seen == ["cancelled"]


def test_a_direct_dispatcher_bounds_answers_like_the_others() -> None:
    async def api(method, path, headers, body):
        size = int(path.rsplit("/", 1)[1])
        return _dispatch.DispatchResult(200, {"content-type": "text/plain"}, b"x" * size)

    direct = _dispatch.DirectDispatcher(api, max_response_bytes=100)
    out = asyncio.run(execute(Batch([Operation("GET", "/items/100"), Operation("GET", "/items/101")]), direct))
    assert [r.status for r in out] == [200, 502]
    assert out[1].body["error"]["code"] == "response_too_large"


# ---------------------------------------------------------------- the batch's work budget


def _listing(n: int):
    """A dispatcher that answers GET with a list of ``n`` companies (one named 'x'), and other methods with what they sent."""
    import orjson

    body = orjson.dumps({"items": [{"id": f"co_{i}", "name": "x" if i == n - 1 else f"c{i}"} for i in range(n)]})

    async def dispatch(method, path, headers, content):
        return _dispatch.DispatchResult(200, {"content-type": "application/json"}, body if method == "GET" else content)

    return _dispatch.DirectDispatcher(dispatch)


COSTLY = "${result=L:$..[?@ == 'x']}"


def test_one_budget_spans_every_reference_of_the_batch():
    ops = [
        Operation("GET", "/list", name="L"),
        Operation("POST", "/a", body={"tags": [COSTLY] * 5}),  # about 1,000 units a reference
        Operation("POST", "/b", body={"tags": [COSTLY] * 5}),
        Operation("POST", "/c", body={"tags": [COSTLY] * 5}),
        Operation("GET", "/d"),  # no reference: runs whatever is spent
        Operation("GET", "/e/" + ref("L", "$.items[0].id")),  # spent: not even one node is left
    ]
    out = asyncio.run(execute(ops, _listing(200), max_work=8_000))
    assert [r.status for r in out] == [200, 200, 424, 424, 200, 424]
    for r in (out[2], out[3], out[5]):
        assert r.body["error"]["code"] == "work_budget_spent"
        assert "the batch's work budget of 8000 units is spent" in r.body["error"]["message"]
    assert [r.status for r in asyncio.run(execute(ops, _listing(200), max_work=None))] == [200] * 6


@pytest.mark.slow
def test_costly_references_are_filled_in_while_the_event_loop_serves_others():
    import concurrent.futures

    ops = [Operation("GET", "/list", name="L"), Operation("POST", "/a", body={"tags": [COSTLY] * 100})]
    ticks = 0

    async def main():
        nonlocal ticks
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        with concurrent.futures.ThreadPoolExecutor(1) as threads:
            out = await execute(ops, _listing(2000), max_work=10**9, executor=threads)
        done = True
        await task
        return out

    out = asyncio.run(main())
    assert [r.status for r in out] == [200, 200]
    assert out[1].body == {"tags": ["x"] * 100}  # the same answer as filled in on the loop
    # Every answer comes without waiting: only the thread lets the ticker run meanwhile.
    assert ticks >= 10, ticks


@pytest.mark.slow
def test_the_deadline_stops_references_being_filled_in_and_their_thread():
    import concurrent.futures

    ops = [
        Operation("GET", "/list", name="L"),
        Operation("POST", "/a", body={"tags": [COSTLY] * 100_000}),  # minutes of work, if it ran to the end
        Operation("GET", "/b"),
    ]

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as threads:
            out = await execute(ops, _listing(2000), max_work=10**12, executor=threads, deadline=time.monotonic() + 0.5)
            # The thread has stopped too: it takes this next task at once.
            assert threads.submit(lambda: "free").result(timeout=30) == "free"
            return out

    out = asyncio.run(main())
    assert [r.status for r in out] == [200, 503, 503]
    assert out[1].body["error"] == {"code": "deadline_exceeded", "message": "not run: the batch ran out of time"}


# ---------------------------------------------------------------- one batch does not hold the event loop


def _in_process(answer: bytes, seen: list[int], ticks: list[int], busy: float = 0.0):
    """A dispatcher that, like the demo's, answers without ever suspending; it notes the ticker's count at each call."""

    async def dispatch(method, target, headers, content):
        seen.append(ticks[0])
        if busy:
            time.sleep(busy)  # an operation that holds the loop for this long, as a big SQLite read does
        return _dispatch.DispatchResult(200, {"content-type": "application/json"}, answer)

    return dispatch


async def _with_ticker(coro, ticks: list[int]):
    async def tick():
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        return await coro
    finally:
        ticker.cancel()


def test_operations_of_an_api_that_never_suspends_give_the_loop_back_between_them():
    # Fifty of the demo's answers in a row once held every other request of the server for 400 ms.
    seen: list[int] = []
    ticks = [0]
    batch = [Operation("GET", f"/items/{i}") for i in range(8)]
    api = _in_process(b'{"ok": true}', seen, ticks, busy=2 * _dispatch._LOOP_TURN_SECONDS)
    dispatch = _dispatch.DirectDispatcher(api)
    out = asyncio.run(_with_ticker(execute(batch, dispatch), ticks))
    assert [r.status for r in out] == [200] * 8
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), f"the loop ran nothing else: {seen}"


def test_a_big_answer_is_checked_off_the_event_loop(monkeypatch):
    import concurrent.futures
    import threading

    checked_in: list[str] = []
    real = _engine.carried_body

    def carried_body(content, content_type, *, levels=0):
        checked_in.append(threading.current_thread().name)
        return real(content, content_type, levels=levels)

    monkeypatch.setattr(_engine, "carried_body", carried_body)
    big = b"[" + b",".join(b'{"id": %d}' % i for i in range(_engine._CHECK_ON_LOOP_BYTES // 8)) + b"]"
    seen: list[int] = []
    ticks = [0]
    batch = [Operation("GET", "/small"), Operation("GET", "/big")]
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="work") as pool:

        async def both():
            small = await execute(batch[:1], _in_process(b"[1]", seen, ticks), executor=pool)
            large = await execute(batch[1:], _in_process(big, seen, ticks), executor=pool, raw_bodies=True)
            return small + large

        out = asyncio.run(_with_ticker(both(), ticks))
    assert [r.status for r in out] == [200, 200]
    assert out[1].body.text == big.replace(b" ", b"")
    assert checked_in[0] == threading.main_thread().name and checked_in[1].startswith("work"), checked_in
