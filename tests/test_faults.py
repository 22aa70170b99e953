"""The client against a server that fails in every way a network can.

The property that matters for bulk writes: whatever goes wrong, no POST runs
twice, every resendable operation ends ok, and every row ends with either a
final status or an honest "outcome unknown". The server counts executions
itself, so the client cannot fool the test by how it labels rows.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import batchnb
from batchnb import Batch, Operation
from tests.support.faults import DEFAULT_WEIGHTS, FaultyBatchServer, RecordingUpstream, Reply

CLIENT_TIMEOUT = 0.5
ROWS = 5000
BLOCK = 50  # one planned batch: a block is all POST or all GET/PUT/DELETE


def _workload(rows: int) -> tuple[list[Operation], set[str]]:
    """Alternating blocks of POST rows and idempotent rows; also the keys to pre-create."""
    ops: list[Operation] = []
    existing: set[str] = set()
    for i in range(rows):
        block, pos = divmod(i, BLOCK)
        key = f"k{i}"
        if block % 2 == 0:
            ops.append(Operation("POST", "/items", {"key": key}))
        else:
            method = ("PUT", "GET", "DELETE")[pos % 3]
            if method in ("GET", "DELETE"):
                existing.add(key)
            ops.append(Operation(method, f"/items/{key}", {"key": key, "v": i} if method == "PUT" else None))
    return ops, existing


async def _submit(server: FaultyBatchServer, work: object, **kw: object) -> object:
    async with batchnb.AsyncClient(
        server.url, token="fault-token", timeout=CLIENT_TIMEOUT, retries=12, concurrency=4
    ) as client:
        return await client.submit(work, retry_operations=True, progress=False, **kw)


def _check(server: FaultyBatchServer, ops: list[Operation], responses: list[batchnb.Response]) -> None:
    assert len(responses) == len(ops)
    unknown = 0
    for op, r in zip(ops, responses):
        key = op.body["key"] if op.method == "POST" else op.path.rsplit("/", 1)[1]
        where = f"{op.method} {key}: status={r.status} error={r.error!r}"
        # Every row ends with a final status, or says plainly that nobody knows.
        assert r.status is not None or (r.error or "").startswith("outcome unknown"), where
        if op.method == "POST":
            runs = server.executions[("POST", key)]
            assert runs <= 1, f"{where}: executed {runs} times"
            if r.status is None:
                unknown += 1
            else:
                assert r.status == 201, where
                assert runs == 1 and key in server.items, where
        else:
            # Resendable rows are retried until they succeed.
            assert r.ok, where
            assert server.executions[(op.method, key)] >= 1, where
            if op.method == "PUT":
                assert server.items[key] == op.body, where
            if op.method == "DELETE":
                assert key not in server.items, where
    posts = sum(1 for op in ops if op.method == "POST")
    # The faults that lose an answer hit only some batches: most POST rows must still be known.
    assert unknown < posts // 2, f"{unknown} of {posts} POST rows ended unknown"


@pytest.mark.slow
def test_every_fault_at_once_never_runs_a_post_twice() -> None:
    ops, existing = _workload(ROWS)
    with FaultyBatchServer(seed=20231, stall=CLIENT_TIMEOUT + 0.5) as server:
        for key in existing:
            server.items[key] = {"key": key}
        started = time.monotonic()
        responses = asyncio.run(asyncio.wait_for(_submit(server, Batch(ops)), timeout=240))
        elapsed = time.monotonic() - started
        # Every kind of fault was really exercised, or the test proves less than it claims.
        missing = [k for k in DEFAULT_WEIGHTS if server.faults[k] == 0]
        assert not missing, f"faults never injected: {missing} ({dict(server.faults)})"
        _check(server, ops, responses)
    print(
        f"\n{ROWS} rows through {server.batches_received} batch calls in {elapsed:.1f} s; faults: {dict(server.faults)}"
    )


@pytest.mark.slow
def test_post_batch_is_never_resent_after_an_unknown_outcome() -> None:
    # Only faults after which the operations ran: a client that resent any of
    # these POST batches would run a row twice.
    weights = {"drop_after_run": 1, "stall": 1, "truncated_json": 1, "truncated_body": 1}
    ops = [Operation("POST", "/items", {"key": f"p{i}"}) for i in range(200)]
    with FaultyBatchServer(seed=7, weights=weights, stall=CLIENT_TIMEOUT + 0.3) as server:
        responses = asyncio.run(asyncio.wait_for(_submit(server, Batch(ops)), timeout=60))
        assert server.batches_received == 4  # one call per batch of 50, none resent
        for op, r in zip(ops, responses):
            assert r.status is None and r.error.startswith("outcome unknown"), r.error
            assert "POST" in r.error
            assert server.executions[("POST", op.body["key"])] == 1


@pytest.mark.slow
def test_idempotent_batches_are_resent_until_they_succeed() -> None:
    weights = {"drop_after_run": 1, "stall": 1, "truncated_json": 1, "truncated_body": 1, "status_500": 1, "ok": 10}
    ops = [Operation("PUT", f"/items/q{i}", {"key": f"q{i}", "v": i}) for i in range(300)]
    with FaultyBatchServer(seed=11, weights=weights, stall=CLIENT_TIMEOUT + 0.3) as server:
        responses = asyncio.run(asyncio.wait_for(_submit(server, Batch(ops)), timeout=120))
        assert all(r.status == 200 for r in responses), [(r.status, r.error) for r in responses if not r.ok][:5]
        assert server.batches_received > 6  # faults forced resends
        assert all(server.items[f"q{i}"] == {"key": f"q{i}", "v": i} for i in range(300))


@pytest.mark.slow
def test_mixed_frame_with_fault_injection() -> None:
    pd = pytest.importorskip("pandas")
    ops, existing = _workload(1000)
    df = pd.DataFrame(
        {
            "method": [op.method for op in ops],
            "path": [op.path for op in ops],
            "key": [f"k{i}" for i in range(len(ops))],
        },
        index=pd.Index([f"row-{i}" for i in range(len(ops))], name="row"),
    )
    df["body"] = [op.body for op in ops]
    with FaultyBatchServer(seed=99, stall=CLIENT_TIMEOUT + 0.5) as server:
        for key in existing:
            server.items[key] = {"key": key}
        frame = asyncio.run(
            asyncio.wait_for(_submit(server, df, method="method", path="path", body="body"), timeout=120)
        )
        assert list(frame.index) == list(df.index)
        for label, op in zip(df.index, ops):
            row = frame.loc[label]
            key = op.body["key"] if op.method == "POST" else op.path.rsplit("/", 1)[1]
            if op.method == "POST":
                assert server.executions[("POST", key)] <= 1
                assert row["ok"] or str(row["error"]).startswith("outcome unknown"), (
                    label,
                    row["status"],
                    row["error"],
                )
            else:
                assert row["ok"], (label, row["status"], row["error"])


# ---------------------------------------------------------------- 429 inside a batch, with references
# The real server answers 429 for one operation when the API behind a gateway
# does; the client then resends that operation on its own. What it references,
# and what references it, must survive the resend.


def _rate_limited_once(prefix: str) -> tuple[RecordingUpstream, dict[str, int]]:
    seen: dict[str, int] = {}

    def respond(req: object) -> Reply:
        target = req.target  # type: ignore[attr-defined]  # an attribute set on the object by this test
        seen[target] = seen.get(target, 0) + 1
        if target.startswith(prefix) and seen[target] == 1:
            return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if target == "/a":
            return Reply(201, {"id": "A1"})
        return Reply(200, {"ok": target})

    return RecordingUpstream(respond), seen


@pytest.mark.slow
def test_an_operation_resent_after_429_keeps_its_references() -> None:
    up, seen = _rate_limited_once("/b/")
    with up, batchnb.LocalServer(upstream=up.url, tenants=("gate",)) as gw:
        batch = Batch(
            [Operation("POST", "/a", {}, name="a"), Operation("GET", "/b/${result=a:$.id}"), Operation("GET", "/c")]
        )
        out = gw.client_for("gate").submit(batch, retry_operations=True, progress=False)
    assert [r.status for r in out] == [201, 200, 200], [(r.status, r.error) for r in out]
    assert out[1].path == "/b/A1"
    assert seen == {"/a": 1, "/b/A1": 2, "/c": 1}


@pytest.mark.slow
def test_dependants_of_an_operation_resent_after_429_are_resent_with_it() -> None:
    up, seen = _rate_limited_once("/a")
    with up, batchnb.LocalServer(upstream=up.url, tenants=("gate",)) as gw:
        batch = Batch(
            [Operation("POST", "/a", {}, name="a"), Operation("GET", "/b/${result=a:$.id}"), Operation("GET", "/c")]
        )
        out = gw.client_for("gate").submit(batch, retry_operations=True, progress=False)
    assert out[0].status == 201 and out[0].attempts == 2, (out[0].status, out[0].attempts)
    assert out[1].status == 200 and out[1].path == "/b/A1", (out[1].status, out[1].body)
    assert seen == {"/a": 2, "/b/A1": 1, "/c": 1}
