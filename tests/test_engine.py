"""The engine against small in-process ASGI apps: order, nesting, 424s, headers, timeouts."""

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response as PlainResponse
from starlette.routing import Route

from batchnb import Batch, Operation, ref
from batchnb.engine import ASGIDispatcher, HTTPDispatcher, execute

CALLS: list[tuple[str, str, str | None, str]] = []


async def echo(request: Request):
    body = await request.body()
    CALLS.append((request.method, request.url.path + ("?" + request.url.query if request.url.query else ""),
                  request.headers.get("authorization"), body.decode()))
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
    batch = Batch([
        Operation("POST", "/items/a", name="a", requests=[
            Operation("POST", "/items/a1", requests=[Operation("POST", "/items/a11")]),
            Operation("POST", "/items/a2"),
        ]),
        Operation("POST", "/items/b"),
    ])
    out = run(batch)
    assert [c[1] for c in CALLS] == ["/items/a", "/items/a1", "/items/a11", "/items/a2", "/items/b"]
    assert [r.status for r in out] == [201, 201]
    assert out[0].responses[0].responses[0].status == 201
    assert all(r.duration is not None and r.duration >= 0 for r in out)


def test_failed_parent_skips_children_and_dependents_get_424_chain():
    batch = Batch([
        Operation("POST", "/items/fail", name="f", requests=[Operation("POST", "/items/c", name="c")]),
        Operation("POST", f"/items/{ref('f', '$.id')}", name="d1"),
        Operation("POST", f"/items/{ref('d1', '$.id')}", name="d2"),
        Operation("POST", f"/items/{ref('c', '$.id')}", name="d3"),
        Operation("POST", "/items/independent"),
    ])
    out = run(batch)
    assert [r.status for r in out] == [400, 424, 424, 424, 201]
    assert out[0].responses[0].status == 424
    assert "answered 400" in out[1].body["error"]["message"]
    assert "'d1' answered 424" in out[2].body["error"]["message"]
    assert [c[1] for c in CALLS] == ["/items/fail", "/items/independent"]


def test_references_resolve_in_path_headers_and_typed_body():
    batch = Batch([
        Operation("POST", "/items/x", name="x"),
        Operation("PUT", f"/items/{ref('x', '$.id')}", {"n": ref("x", "$.n"), "s": f"n is {ref('x', '$.n')}"},
                  headers={"X-Id": ref("x", "$.id")}),
    ])
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
    batch = Batch([
        Operation("GET", "/items/slow"),
        Operation("GET", "/items/big"),
        Operation("POST", "/items/dots", name="d"),
        Operation("GET", "/items/ok"),
    ])
    out = run(batch, timeout=0.2, max_bytes=1000)
    assert out[0].status == 504 and out[1].status == 502 and out[3].status == 201


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
                return await execute(Batch([Operation("GET", "/bomb")]), HTTPDispatcher(http, up.url, max_response_bytes=1_000_000))

        out = asyncio.run(go())
    assert out[0].status == 502, out[0].body
    assert out[0].body["error"]["message"] == "the API's answer is larger than 1000000 bytes once decoded"


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
    batch = Batch([
        Operation("POST", "/items/x", name="x"),
        Operation("POST", "/items/y", {"copies": [ref("x", "$")] * 2000}),
        Operation("POST", "/items/z", {"one": ref("x", "$")}),
    ])
    out = run(batch, max_resolved_bytes=10_000)
    assert [r.status for r in out] == [201, 413, 201]
    assert out[1].body["error"] == {"code": "resolved_too_large", "message": out[1].body["error"]["message"]}
    assert "more than 10000 bytes" in out[1].body["error"]["message"]
    assert [c[1] for c in CALLS] == ["/items/x", "/items/z"]


def test_the_whole_answer_is_bounded():
    out = run(Batch([Operation("GET", "/items/big")] * 4 + [Operation("GET", "/items/a")]), max_bytes=10_000, max_answer_bytes=12_000)
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
    from batchnb.engine import prepare, result_lookup
    from batchnb.model import Response

    earlier = {"co": Response("POST", "/c", 201, body={"id": "co_1/services/sv_2", "blob": "x" * 5000})}
    ops = [Operation("DELETE", "/c/${result=co:$.id}"), Operation("POST", "/c", {"b": [ref("co", "$.blob")] * 10}), Operation("GET", "/ok")]
    p = prepare(ops, result_lookup(earlier, defer_missing=True), max_resolved_bytes=20_000)
    assert [op.path for op in p.sendable] == ["/ok"]
    out = p.merge([Response("GET", "/ok", 200)])
    assert [r.status for r in out] == [400, 413, 200]
    assert "may read as a separator" in out[0].body["error"]["message"]
