"""Shared fixtures: a real batch server (uvicorn on 127.0.0.1) with the demo API on a SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from batchnb import LocalServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    db = tmp_path_factory.mktemp("db") / "demo.sqlite3"
    with LocalServer(db) as srv:
        yield srv


@pytest.fixture()
def fresh_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A server with an empty database, for tests that count rows."""
    with LocalServer(tmp_path / "demo.sqlite3") as srv:
        yield srv
