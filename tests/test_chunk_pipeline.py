"""The chunk pipeline alone: a runner that answers at once, chunks in order, shaping beside the sending."""

from __future__ import annotations

import asyncio
import threading

import pytest

from batchnb._chunk_pipeline import ChunkPipeline
from batchnb.model import Operation, Response


class Plan:
    """As much of a plan as the pipeline reads: its operations and how many calls send them."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops
        self.calls = 1


class Runner:
    """Answers every operation 200 at once; ``cancel_at`` raises CancelledError on that chunk, once it answered."""

    def __init__(self, cancel_at: int | None = None, fatal_after: int | None = None) -> None:
        self.fatal: object = None
        self.first_batch = 0
        self.outcomes: dict[int, list[Response]] = {}
        self.sent: list[list[str]] = []
        self.not_sent: list[list[str]] = []
        self._cancel_at = cancel_at
        self._fatal_after = fatal_after

    async def run(self, plan, *, on_first_answer=None):
        self.sent.append([op.path for op in plan.ops])
        self.outcomes[len(self.sent)] = []
        if on_first_answer is not None:
            on_first_answer()
        if len(self.sent) == self._cancel_at:
            raise asyncio.CancelledError
        if len(self.sent) == self._fatal_after:
            self.fatal = RuntimeError("refused")
        return [Response(op.method, op.path, 200) for op in plan.ops]

    def not_run(self, plan):
        self.not_sent.append([op.path for op in plan.ops])
        return [Response(op.method, op.path, None, error="not run") for op in plan.ops]

    def collect(self, plan):
        return [Response(op.method, op.path, None, error="in flight") for op in plan.ops]


def chunks(n: int, size: int = 2) -> list[list[Operation]]:
    return [[Operation("GET", f"/c{c}/r{r}") for r in range(size)] for c in range(n)]


class Steps:
    """The submission's side of the pipeline: prepare, shape and sent, each noting where it ran."""

    def __init__(self) -> None:
        self.shaped_in: list[str] = []
        self.prepared_in: list[str] = []
        self.sent: list[Plan] = []

    def prepare(self, upcoming):
        self.prepared_in.append(threading.current_thread().name)
        chunk = next(upcoming, None)
        return None if chunk is None else (chunk, Plan(chunk))

    def shape(self, ops, responses):
        self.shaped_in.append(threading.current_thread().name)
        return [(r.path, r.status, r.error) for r in responses]

    def pipeline(self, runner: Runner) -> ChunkPipeline:
        return ChunkPipeline(runner, prepare=self.prepare, shape=self.shape, sent=self.sent.append)


def send(pipeline: ChunkPipeline, work: list[list[Operation]]):
    upcoming = iter(work)
    first = next(upcoming)
    return asyncio.run(pipeline.run(upcoming, (first, Plan(first))))


def test_chunks_go_in_order_and_are_shaped_beside_the_one_in_flight():
    steps, runner = Steps(), Runner()
    pipeline = steps.pipeline(runner)
    try:
        pieces = send(pipeline, chunks(3))
    finally:
        pipeline.close()
    assert pieces == [[(f"/c{c}/r{r}", 200, None) for r in range(2)] for c in range(3)]
    assert runner.sent == [[f"/c{c}/r0", f"/c{c}/r1"] for c in range(3)]
    # Every chunk but the last is shaped, and every next one prepared, by the submit's own thread.
    assert all(name.startswith("batchnb-submit") for name in steps.shaped_in[:2] + steps.prepared_in)
    assert steps.shaped_in[2] == threading.main_thread().name
    assert len(steps.sent) == 3 and runner.first_batch == 3 and runner.outcomes == {}


def test_after_a_fatal_refusal_the_chunks_left_are_not_run():
    steps, runner = Steps(), Runner(fatal_after=1)
    pipeline = steps.pipeline(runner)
    try:
        pieces = send(pipeline, chunks(3))
    finally:
        pipeline.close()
    assert len(runner.sent) == 1 and runner.not_sent == [["/c1/r0", "/c1/r1"], ["/c2/r0", "/c2/r1"]]
    assert [status for piece in pieces for _path, status, _error in piece] == [200, 200, None, None, None, None]
    assert len(steps.sent) == 3  # a chunk not run is done too: its keys are forgotten


def test_an_interruption_keeps_the_finished_chunks_then_the_one_in_flight():
    steps, runner = Steps(), Runner(cancel_at=2)
    pipeline = steps.pipeline(runner)
    try:
        with pytest.raises(asyncio.CancelledError):
            send(pipeline, chunks(3))
        pieces = pipeline.finished_so_far()
    finally:
        pipeline.close()
    assert pieces == [
        [("/c0/r0", 200, None), ("/c0/r1", 200, None)],
        [("/c1/r0", None, "in flight"), ("/c1/r1", None, "in flight")],
    ]


def test_an_empty_first_chunk_still_ends():
    steps, runner = Steps(), Runner()
    pipeline = steps.pipeline(runner)
    try:
        pieces = send(pipeline, [[]])
    finally:
        pipeline.close()
    assert pieces == [[]]
