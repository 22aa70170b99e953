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
