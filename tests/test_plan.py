"""Splitting operations into batches (batchnb.plan): units stay whole, chains stay together, the rest is the client's."""

import pytest

from batchnb import BatchValidationError, Client, Operation, ref
from batchnb.plan import batch_fill, make_plan
from tests.support import count

API = "/api/2.1/scheduling"


def companies(n, prefix="co"):
    return [Operation("POST", f"{API}/companies", {"name": f"{prefix} {i}"}, name=f"{prefix}-{i}") for i in range(n)]


def paths(batch):
    return [op.path for op in batch.operations]


def test_dry_run_plans_without_sending(fresh_server):
    ops = companies(3) + [
        Operation("POST", f"{API}/companies/{ref(f'co-{i % 3}', '$.id')}/services", {"name": f"s{i}"})
        for i in range(30)
    ]
    plan = Client(fresh_server.url, **fresh_server.credentials(), max_requests=10).submit(ops, dry_run=True)
    assert plan.calls == 4 and plan.operations == 33
    assert all(b.size <= 10 for b in plan.batches)
    assert plan.client_resolved  # the chain did not fit: the client resolves some references
    assert count(fresh_server.db) == 0
    frame = plan.to_frame()
    assert list(frame["operations"]) == [b.size for b in plan.batches]


def test_an_operation_travels_with_its_children_and_is_refused_when_they_cannot_fit():
    family = Operation("POST", "/p", {}, row="r7", requests=[Operation("POST", f"/p/c{i}", {}) for i in range(4)])
    plan = make_plan([Operation("GET", "/a"), family], max_requests=5)
    assert [b.size for b in plan.batches] == [1, 5]  # never split between batches
    with pytest.raises(BatchValidationError) as info:
        make_plan([Operation("GET", "/a"), family], max_requests=4)
    assert info.value.pointers == ["row 'r7'"]
    assert info.value.problems[0].message == (
        "travels with its children as one unit: 5 operations (nested included); the limit is 4 per batch"
    )
    family.row = None
    with pytest.raises(BatchValidationError) as info:
        make_plan([Operation("GET", "/a"), family], max_requests=4)
    assert info.value.pointers == ["requests[1]"]


def test_an_operation_nested_too_deep_is_refused_with_its_pointer():
    op = Operation("GET", "/0")
    for depth in range(1, 3):
        op = Operation("GET", f"/{depth}", requests=[op])
    with pytest.raises(BatchValidationError) as info:
        make_plan([Operation("GET", "/a"), op], max_depth=2)
    assert info.value.pointers == ["requests[1]"]
    assert info.value.problems[0].message == "nested 3 levels deep; the limit is 2"
    assert make_plan([op], max_depth=3).calls == 1


def test_a_chain_that_fits_stays_in_one_batch():
    ops = [
        Operation("POST", "/a", {}, name="a"),
        Operation("GET", "/x1"),
        Operation("POST", f"/b/{ref('a', '$.id')}", {}, name="b"),
        Operation("GET", "/x2"),
        Operation("POST", f"/c/{ref('b', '$.id')}", {}),
    ]
    plan = make_plan(ops, max_requests=3)
    assert [paths(b) for b in plan.batches] == [
        ["/a", "/b/${result=a:$.id}", "/c/${result=b:$.id}"],
        ["/x1", "/x2"],
    ]
    assert plan.client_resolved == [] and all(not b.depends_on for b in plan.batches)


def test_client_resolved_lists_the_references_that_cross_batches():
    ops = (
        [Operation("POST", "/co", {}, name="co")]
        + [Operation("POST", f"/co/{ref('co', '$.id')}/s{i}", {}, name=f"s{i}") for i in range(5)]
        + [Operation("GET", f"/s/{ref('s4', '$.id')}")]
    )
    plan = make_plan(ops, max_requests=3)
    assert [b.size for b in plan.batches] == [3, 3, 1]
    # Batch 1 needs "co" from batch 0; batch 2 needs "s4" from batch 1 (the rest travel with what they need).
    assert plan.client_resolved == [(1, "co"), (2, "s4")]
    assert [sorted(b.depends_on) for b in plan.batches] == [[], [0], [1]]
    assert "2 references filled in by the client across batches" in repr(plan)
    assert plan.from_known == []  # none of them from before this submit


def test_names_from_an_earlier_run_are_filled_in_by_the_client():
    ops = [Operation("GET", f"/co/{ref('co', '$.id')}"), Operation("GET", "/x")]
    plan = make_plan(ops, known={"co"})
    assert plan.calls == 1 and plan.client_resolved == [(0, "co")] and plan.from_known == [(0, "co")]
    assert plan.batches[0].depends_on == set()


def test_a_batch_is_resendable_only_when_nothing_in_it_is_a_post():
    ops = [
        Operation("GET", "/a"),
        Operation("PUT", "/b", {}),
        Operation("DELETE", "/c"),
        Operation("GET", "/d", requests=[Operation("POST", "/d/e", {})]),
    ]
    plan = make_plan(ops, max_requests=3)
    assert [b.idempotent for b in plan.batches] == [True, False]
    frame = plan.to_frame()
    assert frame["resendable"].tolist() == [True, False]
    assert frame["operations"].tolist() == [3, 2]


def test_rows_are_the_labels_each_batch_carries_children_included():
    ops = [
        Operation("GET", "/a", row="x", requests=[Operation("GET", "/a/b", row="x-child")]),
        Operation("GET", "/c", row=3),
    ]
    plan = make_plan(ops, max_requests=2)
    assert [b.rows for b in plan.batches] == [["x", "x-child"], [3]]


# ---------------------------------------------------------------- batches filled to a multiple of parallel


def gets(n):
    return [Operation("GET", f"/t/{i}") for i in range(n)]


@pytest.mark.parametrize(
    ("parallel", "sizes"),
    [
        (1, [50, 50]),  # one at a time: every batch as full as the server allows
        (16, [48, 48, 4]),  # 3 full rounds of 16 each, where 50 would take a 4th round for 2
        (30, [30, 30, 30, 10]),  # never fewer than parallel: one full round each
        (50, [50, 50]),
        (64, [50, 50]),  # more at once than a batch holds: one round anyway
    ],
)
def test_with_parallel_batches_are_filled_to_a_multiple_of_it(parallel, sizes):
    plan = make_plan(gets(100), max_requests=50, parallel=parallel)
    assert [b.size for b in plan.batches] == sizes
    assert plan.operations == 100 and plan.parallel == parallel
    assert batch_fill(50, parallel) == sizes[0]


def test_a_chain_that_fits_the_limit_stays_whole_even_past_the_fill():
    chain = [Operation("POST", "/c", {}, name="c0")] + [
        Operation("POST", f"/c/{ref(f'c{i}', '$.id')}", {}, name=f"c{i + 1}") for i in range(49)
    ]
    plan = make_plan(gets(10) + chain + gets(10), max_requests=50, parallel=16)
    assert [b.size for b in plan.batches] == [10, 50, 10]  # the chain of 50 has a batch of its own
    assert plan.client_resolved == []  # no reference crosses a batch
    assert "of at most 50 (filled to 48, a multiple of parallel=16)" in plan.summary


def test_submit_fills_batches_to_a_multiple_of_what_the_server_runs_at_once(server):
    client = Client(server.url, **server.credentials())
    ops = [Operation("GET", f"{API}/companies") for _ in range(100)]
    assert [b.size for b in client.submit(ops, dry_run=True).batches] == [50, 50]
    assert [b.size for b in client.submit(ops, parallel=16, concurrency=1, dry_run=True).batches] == [48, 48, 4]
    # 4 batches at once (the client's default): one round, spread over all four, 2 rounds of 16 at most.
    assert [b.size for b in client.submit(ops, parallel=16, dry_run=True).batches] == [32, 32, 32, 4]


def test_the_fill_follows_the_parallel_the_server_allows_not_the_one_asked(tmp_path):
    from batchnb import LocalServer
    from batchnb.server import Limits

    with LocalServer(db=tmp_path / "seven.sqlite3", limits=Limits(max_parallel=7)) as local:
        plan = local.client.submit(gets(100), parallel=16, concurrency=1, dry_run=True)
    assert [b.size for b in plan.batches] == [49, 49, 2]  # 7 at once: rounds of 7, not of 16
    assert plan.parallel == 7


def test_direct_mode_fills_batches_to_the_parallel_asked():
    client = Client("http://127.0.0.1:9", mode="direct")  # a dry run sends nothing
    plan = client.submit(gets(100), parallel=16, concurrency=1, dry_run=True)
    assert [b.size for b in plan.batches] == [48, 48, 4] and plan.parallel == 16


@pytest.mark.parametrize(
    ("rows", "tail"),
    [
        (2000, [48] * 40 + [32, 32, 16]),  # 48 + 32 on two of four slots become two rounds of 16 on three
        (1920, [48] * 40),  # whole rounds: nothing to spread
        (100, [32, 32, 32, 4]),  # a single round, spread over the four
        (20, [16, 4]),
    ],
)
def test_a_last_round_that_would_leave_slots_idle_is_spread_over_them(rows, tail):
    plan = make_plan(gets(rows), max_requests=50, parallel=16, concurrency=4)
    assert [b.size for b in plan.batches] == tail
    assert [op.path for b in plan.batches for op in b.operations] == [f"/t/{i}" for i in range(rows)]


def test_spreading_keeps_chains_whole_and_never_passes_the_limits():
    chain = [Operation("POST", "/c", {}, name="c0")] + [
        Operation("POST", f"/c/{ref(f'c{i}', '$.id')}", {}, name=f"c{i + 1}") for i in range(39)
    ]
    plan = make_plan(gets(20) + chain, max_requests=50, parallel=16, concurrency=4)
    # One round: 60 operations over 4 slots are batches of 16, but the chain of 40 travels whole, alone.
    assert [b.size for b in plan.batches] == [16, 4, 40] and plan.client_resolved == []
    assert [op.name for op in plan.batches[2].operations] == [f"c{i}" for i in range(40)]
    # Without parallel, or with parallel at or above the limit, batches stay as full as the server allows.
    assert [b.size for b in make_plan(gets(100), max_requests=50, concurrency=4).batches] == [50, 50]
    assert [b.size for b in make_plan(gets(100), max_requests=50, parallel=64, concurrency=4).batches] == [50, 50]
