"""Cluster-wide limits for batchnb.dask, waited for on the worker's event loop, never in a thread.

A partition runs its batches as coroutines on an event loop of its own, in
the task's thread. ``distributed.Semaphore.acquire`` called from there
blocks a thread until a lease is free; through ``asyncio.to_thread`` that
thread is one of the loop's default executor (a handful of threads). When
every one of them waits for a lease, the batches that hold leases cannot
get a thread to give theirs back: every worker waits for ever. So every call
on a semaphore or a variable runs here as a coroutine on the loop the
worker talks to the scheduler with; waiting for a lease takes no thread, and
releasing one never waits behind a waiter.

In a task's coroutine (not run as a doctest: it needs a ``dask.distributed`` scheduler):

    >>> async def start(in_flight: ClusterLimit) -> None:   # doctest: +SKIP
    ...     await in_flight.acquire()        # no thread waits
    ...     in_flight.release_after(0.5)     # a start counted for half a second more
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import distributed

T = TypeVar("T")


async def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[T]]) -> T:
    """Await ``call()`` on ``loop`` (another thread's) from this loop, without blocking a thread."""

    async def run() -> T:
        return await call()

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


class ClusterLimit:
    """A named ``distributed.Semaphore``: every task that names it shares its leases, cluster-wide.

    Create it inside a task (on a worker) or where a ``distributed.Client`` is
    current; ``acquire`` and ``release`` are coroutines of any event loop.

    Not run as a doctest (it needs a ``dask.distributed`` scheduler):

    >>> async def one_at_a_time() -> None:                               # doctest: +SKIP
    ...     limit = ClusterLimit("batchnb-in-flight-3f9c", max_leases=4)
    ...     await limit.acquire()
    ...     await limit.release()
    """

    def __init__(self, name: str, max_leases: int) -> None:
        self._semaphore = distributed.Semaphore(max_leases=max_leases, name=name)
        # The worker's loop (the client's, outside a worker): the semaphore's calls run there.
        io_loop: Any = self._semaphore.loop  # a running tornado IOLoop
        self._loop: asyncio.AbstractEventLoop = io_loop.asyncio_loop

    async def acquire(self) -> None:
        """Wait for a lease: a coroutine on the worker's loop, so no thread waits."""

        async def acquire() -> bool:
            got: bool = await self._semaphore.acquire()
            return got

        future = asyncio.run_coroutine_threadsafe(acquire(), self._loop)
        try:
            await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # Cancelled as the lease came: give it back once it has.
            future.add_done_callback(self._give_back)
            raise

    def _give_back(self, future: concurrent.futures.Future[bool]) -> None:
        if not future.cancelled() and future.exception() is None and future.result():
            self.release_after(0.0)

    async def release(self) -> None:
        """Give a lease back."""

        async def release() -> Any:
            return await self._semaphore.release()

        await _on_loop(self._loop, release)

    def release_after(self, seconds: float) -> None:
        """Give a lease back ``seconds`` from now, whatever this task does meanwhile (it may have ended)."""

        async def later() -> None:
            await asyncio.sleep(seconds)
            await self._semaphore.release()

        asyncio.run_coroutine_threadsafe(later(), self._loop)


class ClusterValue:
    """A named ``distributed.Variable`` read and written from any event loop, without blocking a thread.

    Not run as a doctest (it needs a ``dask.distributed`` scheduler):

    >>> async def back_off() -> float:                                   # doctest: +SKIP
    ...     backoff = ClusterValue("batchnb-backoff-3f9c")
    ...     await backoff.set(time.time() + 2.0)
    ...     return await backoff.get()
    """

    def __init__(self, name: str) -> None:
        # The worker's client, made here (in the task's thread, where the worker is known).
        client = distributed.get_client()
        self._variable = distributed.Variable(name, client=client)
        io_loop: Any = client.loop  # a running tornado IOLoop: its asyncio_loop is the worker's event loop
        self._loop: asyncio.AbstractEventLoop = io_loop.asyncio_loop

    async def get(self) -> Any:
        return await _on_loop(self._loop, lambda: self._variable.get(asynchronous=True))

    async def set(self, value: Any) -> None:
        await _on_loop(self._loop, lambda: self._variable.set(value, asynchronous=True))
