"""Sending a submit's work chunk after chunk, the next one built and the last one shaped beside the one in flight.

While one chunk is in flight, a thread of the submit's own builds and plans
the next and shapes the last (chunks are independent rows), so the server is
not kept waiting between chunks. It starts once the chunk's first batch is
answered: by then every slot holds a batch, and the thread, which shares the
interpreter with the event loop, delays no batch's sending. One thread: its
work runs in the order given (tests/test_chunk_pipeline.py runs it with a runner of its own)::

    pipeline = ChunkPipeline(runner, prepare=prepare, shape=shape, sent=forget)
    pieces = await pipeline.run(chunks, first)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from .model import Operation, Response
from .plan import Plan

__all__ = ["ChunkPipeline", "Prepared"]

#: a chunk of operations and its plan, its keys given.
Prepared = tuple[list[Operation], Plan]


class _Runner(Protocol):
    """What the pipeline needs of a :class:`~batchnb._runner.Runner`."""

    fatal: Any
    first_batch: int
    outcomes: dict[int, list[Response]]

    async def run(self, plan: Plan, *, on_first_answer: Callable[[], None] | None = None) -> list[Response]: ...

    def not_run(self, plan: Plan) -> list[Response]: ...

    def collect(self, plan: Plan) -> list[Response]: ...


class ChunkPipeline:
    """Chunk after chunk through one runner; what comes back shaped into one piece of the result per chunk::

        pipeline = ChunkPipeline(runner, prepare=prepare, shape=shape, sent=forget)
        try:
            pieces = await pipeline.run(chunks, first)
        except asyncio.CancelledError:
            pieces = pipeline.finished_so_far()
        finally:
            pipeline.close()

    ``prepare`` takes the next chunk from the iterator and plans it (None when
    there is none); ``shape`` turns a chunk and its responses into a piece;
    ``sent`` is told of each plan once its chunk is done.
    """

    def __init__(
        self,
        runner: _Runner,
        *,
        prepare: Callable[[Iterator[list[Operation]]], Prepared | None],
        shape: Callable[[list[Operation], list[Response]], Any],
        sent: Callable[[Plan], None],
    ) -> None:
        self._runner = runner
        self._prepare = prepare
        self._shape = shape
        self._sent = sent
        self._helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchnb-submit")
        self._shaped: list[concurrent.futures.Future[Any]] = []  # chunk by chunk, in order
        self._to_shape: tuple[list[Operation], list[Response]] | None = None  # the chunk after those
        self._chunk: list[Operation] = []
        #: the plan of the chunk in flight (None between chunks).
        self._plan: Plan | None = None

    async def run(self, upcoming: Iterator[list[Operation]], first: Prepared) -> list[Any]:
        """Send ``first``, then every chunk ``upcoming`` holds; returns the shaped pieces, in order."""
        runner = self._runner
        ready: Prepared | None = first
        while ready is not None:
            self._chunk, plan = ready
            self._plan = plan
            following: list[concurrent.futures.Future[Prepared | None]] = []
            on_the_side = functools.partial(self._on_the_side, upcoming, following)
            if runner.fatal is not None:
                responses = runner.not_run(plan)
            else:
                responses = await runner.run(plan, on_first_answer=on_the_side)
            if not following:
                on_the_side()  # no batch was answered (none sent, or none to send)
            self._sent(plan)
            runner.first_batch += plan.calls
            runner.outcomes.clear()  # streaming: what is shaped is all that stays
            self._to_shape, self._plan = (self._chunk, responses), None
            ready = await asyncio.wrap_future(following[0])
        pieces = [await asyncio.wrap_future(job) for job in self._shaped]
        if self._to_shape is not None:
            pieces.append(self._shape(*self._to_shape))
        return pieces

    def _on_the_side(
        self, upcoming: Iterator[list[Operation]], following: list[concurrent.futures.Future[Prepared | None]]
    ) -> None:
        """Give the helper thread the last chunk to shape and the next to prepare (called on the event loop)."""
        if self._to_shape is not None:
            self._shaped.append(self._helper.submit(self._shape, *self._to_shape))
            self._to_shape = None
        following.append(self._helper.submit(self._prepare, upcoming))

    def finished_so_far(self) -> list[Any]:
        """After an interruption: the pieces shaped, then the chunk's in flight with what it got back."""
        pieces = [job.result() for job in self._shaped]
        if self._to_shape is not None:
            pieces.append(self._shape(*self._to_shape))
        if self._plan is not None:
            pieces.append(self._shape(self._chunk, self._runner.collect(self._plan)))
        return pieces

    def close(self) -> None:
        """Stop the helper thread; what it has not started is dropped."""
        self._helper.shutdown(wait=False, cancel_futures=True)
