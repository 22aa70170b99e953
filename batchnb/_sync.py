"""Running a coroutine to completion from sync code — a script, or a Jupyter cell.

A Jupyter cell already runs inside an event loop, where ``asyncio.run`` fails.
There the coroutine runs in a worker thread with a loop of its own while the
caller waits; elsewhere ``asyncio.run`` runs it directly. Either way an
interrupt (Ctrl-C, or the notebook's stop button) cancels the coroutine,
which gets the chance to hand back what it finished.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``make()`` and return its result, with or without a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        box: dict[str, Any] = {}
        # The result is not the task's: Python 3.11's asyncio.run, as it ends, formats a repr of its
        # task, result included, and the repr of a result frame reads (parses) the bodies it shows.
        asyncio.run(_into(box, make))
        return cast(T, box["result"])
    return _run_in_thread(make)


async def _wrap(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


async def _into(box: dict[str, Any], make: Callable[[], Awaitable[T]]) -> None:
    box["result"] = await make()


def _run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    box: dict[str, Any] = {}
    ready = threading.Event()
    ctx = contextvars.copy_context()

    def worker() -> None:
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(_wrap(make))
            box["loop"], box["task"] = loop, task
            ready.set()
            box["result"] = loop.run_until_complete(task)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            ready.set()
            loop.close()

    thread = threading.Thread(target=ctx.run, args=(worker,), name="batchnb-sync", daemon=True)
    thread.start()
    try:
        # Short joins keep the waiting thread interruptible by KeyboardInterrupt.
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        ready.wait()
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        error = box.get("error")
        if isinstance(error, Exception) and not isinstance(error, asyncio.CancelledError):
            raise error from None
        raise
    if "error" in box:
        error = box["error"]
        if isinstance(error, asyncio.CancelledError):
            raise KeyboardInterrupt from None
        raise error
    return cast(T, box["result"])
