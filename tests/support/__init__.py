"""Helpers shared by the tests: counting rows, a free port, waiting with a deadline.

Misbehaving loopback servers live in :mod:`tests.support.faults`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = ["count", "free_port", "listening", "stop", "wait_for_http", "wait_until"]

T = TypeVar("T")


def count(db: Path, table: str = "companies") -> int:
    """Rows in ``table`` of the SQLite file ``db``, through a connection of its own."""
    with sqlite3.connect(db) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], T], timeout: float, message: str | Callable[[], str], *, interval: float = 0.01
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    When ``timeout`` seconds pass first, raise ``AssertionError(message)``;
    ``message`` may be a function, called then, to say what was seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float, output: Callable[[], str] = lambda: "") -> None:
    """Wait until ``url`` answers 200 while ``proc`` (the process serving it) runs.

    Fails at once if ``proc`` ends, and after ``timeout`` seconds otherwise;
    either way the message ends with the last lines of ``output()`` (say,
    the process's log).
    """

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the process serving {url} exited with {proc.returncode}:\n{output()[-3000:]}")
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, lambda: f"{url} did not answer within {timeout} s:\n{output()[-3000:]}", interval=0.05)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask ``proc`` to end with ``sig``; kill it if it has not within ``timeout`` seconds."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def listening(args: list[str], what: str, cwd: Path | None = None) -> Iterator[str]:
    """Run ``args``, a server that prints ``listening PORT`` first; yield its loopback URL, kill it after."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        if not first.startswith("listening "):
            rest = proc.stdout.read() if proc.poll() is not None and proc.stdout else ""
            raise RuntimeError(f"{what} did not start: {first}{rest}")
        yield f"http://127.0.0.1:{int(first.split()[1])}"
    finally:
        proc.kill()
        proc.wait(10)


def interrupted_when(submit: Any, ready: Callable[[], Any], message: str, timeout: float = 60) -> Any:
    """Start the coroutine ``submit``, cancel it once ``ready()`` holds, and return the ``.partial`` it raises with.

    ``ready`` is polled off the event loop, which keeps sending meanwhile.
    """
    import asyncio

    import pytest

    from batchnb import SubmitInterrupted

    async def go() -> Any:
        task = asyncio.ensure_future(submit)
        await asyncio.to_thread(wait_until, ready, timeout, message)
        task.cancel()
        with pytest.raises(SubmitInterrupted) as info:
            await task
        return info.value.partial

    return asyncio.run(go())
