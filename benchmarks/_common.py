"""What the benchmark scripts share: a ``batchnb serve`` subprocess, best-of timing, the ratio line."""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(max_requests: int = 50) -> Iterator[tuple[str, str]]:
    """``batchnb serve`` in its own process (as in production) on a free loopback port: (url, token)."""
    with served(max_requests) as (url, token, _pid):
        yield url, token


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process ``pid`` has used so far, where /proc tells it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def served(max_requests: int = 50) -> Iterator[tuple[str, str, int]]:
    """:func:`serve`, also giving the server's process id: (url, token, pid)."""
    token = secrets.token_urlsafe(18)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="batchnb-bench-") as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchnb.cli",
                "serve",
                "--port",
                str(port),
                "--db",
                str(Path(tmp) / "bench.sqlite3"),
                "--log-level",
                "warning",
                "--max-requests",
                str(max_requests),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Credentials through the environment: arguments show in ps.
            env={**os.environ, "BATCHNB_API_KEY": "bench", "BATCHNB_TOKEN": token},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, url)
            yield url, token, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(proc: subprocess.Popen, url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/api/2.3/batch", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not answer within {seconds:g} s")


def best_of(fn: Callable[[Any], Any], arg: Any, repeat: int) -> float:
    """The fastest of ``repeat`` timed calls (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times)


def report(baseline_label: str, base: float, measured_label: str, ours: float, target: float) -> int:
    """Print both times and their ratio against the target; the exit status says whether it is met."""
    ratio = ours / base
    width = max(len(baseline_label), len(measured_label))
    print(f"baseline  {baseline_label:<{width}}: {base:.3f} s")
    print(f"measured  {measured_label:<{width}}: {ours:.3f} s")
    print(f"ratio: {ratio:.2f}x ({'within' if ratio <= target else 'NOT within'} {target:g}x)")
    return 0 if ratio <= target else 1
