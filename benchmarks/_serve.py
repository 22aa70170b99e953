"""Start ``batchnb serve`` in a subprocess on a free loopback port, for the benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

TOKEN = "bench-token"


@contextlib.contextmanager
def serve(max_requests: int = 50) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BATCHNB_API_KEY": "bench", "BATCHNB_TOKEN": TOKEN}
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchnb.cli", "serve", "--port", str(port), "--db", str(Path(tmp) / "bench.sqlite3"),
             "--log-level", "warning", "--max-requests", str(max_requests)],
            env=env, stdout=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(400):
                try:
                    httpx.get(url + "/api/2.3/batch")
                    break
                except httpx.HTTPError:
                    time.sleep(0.025)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
