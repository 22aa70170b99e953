"""The client's submit: splitting, cross-batch references, retries that never duplicate, journal and resume."""

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from batchnb import AsyncClient, Batch, Client, Operation, SubmitInterrupted, ref
from batchnb.journal import Journal

from tests.conftest import count

API = "/api/2.1/scheduling"


def companies(n, prefix="co"):
    return [Operation("POST", f"{API}/companies", {"name": f"{prefix} {i}"}, name=f"{prefix}-{i}") for i in range(n)]


def test_dry_run_plans_without_sending(fresh_server):
    ops = companies(3) + [
        Operation("POST", f"{API}/companies/{ref(f'co-{i % 3}', '$.id')}/services", {"name": f"s{i}"}) for i in range(30)
    ]
    plan = Client(fresh_server.url, **fresh_server.credentials(), max_requests=10).submit(ops, dry_run=True)
    assert plan.calls == 4 and plan.operations == 33
    assert all(b.size <= 10 for b in plan.batches)
    assert plan.client_resolved  # the chain did not fit: the client resolves some references
    assert count(fresh_server.db) == 0
    frame = plan.to_frame()
    assert list(frame["operations"]) == [b.size for b in plan.batches]


def test_chain_larger_than_one_batch_is_resolved_across_batches(fresh_server):
    ops = companies(1) + [
        Operation("POST", f"{API}/companies/{ref('co-0', '$.id')}/services", {"name": f"s{i}", "duration": 10 + i}, name=f"s{i}")
        for i in range(24)
    ] + [Operation("GET", f"{API}/companies/{ref('co-0', '$.id')}/services/{ref('s23', '$.id')}")]
    client = Client(fresh_server.url, **fresh_server.credentials(), max_requests=10)
    result = client.submit(ops, progress=False)
    assert result["ok"].all(), result[~result["ok"]]
    assert result["batch"].nunique() == 3
    company_id = result.loc[0, "body"]["id"]
    assert all(company_id in p for p in result["path"].iloc[1:])
    assert result.iloc[-1]["body"]["name"] == "s23"
    assert count(fresh_server.db, "services") == 24


def test_failed_dependency_in_an_earlier_batch_is_424_without_sending(fresh_server):
    ops = [Operation("POST", f"{API}/companies", {"name": ""}, name="bad")] + [
        Operation("POST", f"{API}/companies/{ref('bad', '$.id')}/services", {"name": f"s{i}"}, name=f"s{i}") for i in range(5)
    ] + [Operation("GET", f"{API}/companies/x/services/{ref('s4', '$.id')}")]
    result = Client(fresh_server.url, **fresh_server.credentials(), max_requests=3).submit(ops, progress=False)
    assert result["status"].tolist() == [400, 424, 424, 424, 424, 424, 424]
    assert "answered 400" in result.loc[3, "error"]


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
            return httpx.Response(200, json={"responses": [
                {"method": op["method"], "path": op["path"], "status": 200, "duration": 1, "body": {"ok": True}}
                for op in body["requests"]]})
        return httpx.Response(status, headers=headers, json={"error": {"code": "busy", "message": "busy"}})


def test_429_retry_after_is_honoured():
    t = Recorder([(429, {"Retry-After": "0.5"}), (503, {"Retry-After": "0.3"}), (200, {})])
    client = AsyncClient("http://api.test", token="x", transport=t)
    out = asyncio.run(client.submit(Batch([Operation("POST", "/a", {"k": 1})])))
    posts = t.times[1:]
    assert out[0].status == 200 and len(posts) == 3
    assert posts[1] - posts[0] >= 0.5 and posts[2] - posts[1] >= 0.3


def test_retries_give_up_with_a_clear_error():
    t = Recorder([(429, {"Retry-After": "0"})] * 3)
    result = asyncio.run(AsyncClient("http://api.test", token="x", transport=t, retries=2).submit([Operation("GET", "/a")]))
    assert result["status"].isna().all() and "answered 429 3 times" in result.loc[0, "error"]


def test_outcome_unknown_post_is_not_resent_but_put_is():
    t = Recorder([httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"), (200, {})])
    client = AsyncClient("http://api.test", token="x", transport=t)
    post = asyncio.run(client.submit([Operation("POST", "/a", {"k": 1}), Operation("GET", "/b")]))
    assert len(t.bodies) == 1
    assert post["status"].isna().all()
    assert (post["error"] == "outcome unknown: not resent because it contains POST").all()
    put = asyncio.run(client.submit([Operation("PUT", "/a", {"k": 1})]))
    assert len(t.bodies) == 3 and put.loc[0, "status"] == 200 and put.loc[0, "attempts"] == 2


class DroppingServer:
    """A real loopback TCP server that reads each request in full, then drops the connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.requests = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next((l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), b"0"))
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head.split(b" ")[0:2])
            if head.startswith(b"GET"):
                payload = b'{"maxRequests": 50, "maxDepth": 4}'
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
            conn.close()  # after reading the batch: the client cannot know whether it ran


def test_dropped_connection_on_a_post_batch_is_not_resent():
    srv = DroppingServer()
    client = Client(f"http://127.0.0.1:{srv.port}", token="x", retries=3)
    result = client.submit([Operation("POST", f"{API}/companies", {"name": "once"})], progress=False)
    posts = [r for r in srv.requests if r[0] == b"POST"]
    assert len(posts) == 1
    assert result.loc[0, "error"] == "outcome unknown: not resent because it contains POST"
    client.submit([Operation("DELETE", f"{API}/companies/co_1")], progress=False, retries=2)
    assert len([r for r in srv.requests if r[0] == b"POST"]) == 1 + 3  # the idempotent batch: 1 + 2 retries


def test_journal_resume_sends_only_missing_rows_and_never_resends_posts_in_flight(fresh_server, tmp_path):
    journal = tmp_path / "run.jsonl"
    ops = companies(40, "r")
    client = Client(fresh_server.url, **fresh_server.credentials(), max_requests=5)
    first = client.submit(ops, journal=journal, progress=False)
    assert first["ok"].all() and count(fresh_server.db) == 40
    # Simulate a run killed after three batches, with a fourth (POST) batch sent but never answered.
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    kept = [e for e in events if e["batch"] < 4 and (e["event"] == "send" or e["batch"] < 3)]
    journal.write_text("".join(json.dumps(e) + "\n" for e in kept) + '{"event":"done","batch":3,"respo')
    # The database is reset to what the "killed" run had done: rows of the first 3 batches (15) and the in-flight one (5).
    import sqlite3
    with sqlite3.connect(fresh_server.db) as conn:
        keep = {f"r {i}" for i in range(20)}
        conn.executemany("delete from companies where name = ?", [(f"r {i}",) for i in range(40) if f"r {i}" not in keep])
    resumed = client.submit(ops, journal=journal, resume=True, progress=False)
    assert count(fresh_server.db) == 40  # nothing created twice, nothing missing
    assert resumed.index.tolist() == list(range(40))
    assert resumed.loc[:14, "ok"].all() and resumed.loc[20:, "ok"].all()
    assert resumed.loc[15:19, "status"].isna().all()
    assert resumed.loc[15:19, "error"].str.startswith("outcome unknown").all()
    assert Journal(journal).read().done.keys() >= {json.dumps(i) for i in range(40) if not 15 <= i < 20}


def test_interrupt_keeps_what_finished(fresh_server):
    async def go():
        client = fresh_server.async_client(max_requests=2, concurrency=1)
        task = asyncio.ensure_future(client.submit(companies(400, "i"), progress=False))
        while count(fresh_server.db) < 10:  # interrupt mid-run, once some batches are done
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(SubmitInterrupted) as info:
            await task
        return info.value.partial

    partial = asyncio.run(go())
    done = int(partial["ok"].sum())
    assert 0 < done < 400
    unknown = int(partial["error"].str.startswith("outcome unknown").fillna(False).sum())
    # Rows in flight when interrupted may have run: they say "outcome unknown", never "not run".
    assert done <= count(fresh_server.db) <= done + unknown
    assert partial.loc[~partial["ok"], "error"].str.match(r"not run|outcome unknown").all()


def test_progress_bar_counts_done_and_failed_operations(fresh_server, capsys):
    ops = companies(6, "p") + [Operation("POST", f"{API}/companies", {"name": ""})]
    Client(fresh_server.url, **fresh_server.credentials(), max_requests=2).submit(ops)  # on by default: 4 batches
    err = capsys.readouterr().err
    assert "7/7" in err and "failed=1" in err
    Client(fresh_server.url, **fresh_server.credentials(), max_requests=2).submit(ops[:6], progress=False)
    assert "/6" not in capsys.readouterr().err


def test_rate_limit_spaces_batches():
    t = Recorder([(200, {})] * 4)
    client = AsyncClient("http://api.test", token="x", transport=t, max_requests=1)
    result = asyncio.run(client.submit([Operation("GET", f"/a/{i}") for i in range(4)], rate=5, progress=False))
    posts = t.times[1:]
    assert result["ok"].all() and len(posts) == 4
    assert posts[-1] - posts[0] >= 3 / 5 * 0.99  # four batches at five a second: at least 0.6 s from first to last
