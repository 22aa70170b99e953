"""Shared fixtures: a real batch server (uvicorn on 127.0.0.1) with the demo API on a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchnb import LocalServer

#: what a test needs beyond this process: each keeps it out of the fast lane (``pytest -m "not slow"``).
HEAVY = ("browser", "dask", "notebook", "subprocess", "soak")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
        if any(item.get_closest_marker(name) for name in HEAVY):
            item.add_marker(pytest.mark.slow)


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
