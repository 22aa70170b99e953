"""What the examples in batchnb's docstrings run against: one demo server for the session, started on first use.

pytest collects those examples from the package (``--doctest-modules``), so their fixtures live here, at the
root, where they reach ``batchnb/`` as well as ``tests/``; the package's build (``[tool.setuptools.packages.find]``)
takes ``batchnb*`` only, so this file never ships. An example that names ``server``, ``client`` or ``result`` gets
the server (marked ``server``); the others run without it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from _pytest.doctest import DoctestItem

import batchnb as bn

#: the names an example finds ready; those in SERVER_NAMES need the session's server.
SERVER_NAMES = ("server", "client", "result")
_NEEDS_SERVER = re.compile(r"\b(?:" + "|".join(SERVER_NAMES) + r")\b")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server: a docstring example run against the session's demo server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, DoctestItem) and item.dtest is not None and _needs_server(item):
            item.add_marker(pytest.mark.server)


def _needs_server(item: DoctestItem) -> bool:
    assert item.dtest is not None
    return any(_NEEDS_SERVER.search(example.source) for example in item.dtest.examples)


def companies() -> pd.DataFrame:
    """Three companies to create: what the examples submit."""
    return pd.DataFrame({"name": ["Riverside Clinic", "Hilltop Dental", "Harbour Physio"]})


@pytest.fixture(scope="session")
def doctest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bn.LocalServer]:
    """The demo server the examples use, on 127.0.0.1 with its SQLite file in a temporary directory."""
    with bn.LocalServer(tmp_path_factory.mktemp("doctest") / "demo.sqlite3") as srv:
        yield srv


@pytest.fixture()
def example_basics(tmp_path: Path) -> dict[str, Any]:
    """What every example finds: ``asyncio``, ``bn`` (batchnb), ``pd`` (pandas), ``df`` (three companies to add)
    and ``tmp``, a directory of its own for the files it writes."""
    return {"asyncio": asyncio, "bn": bn, "pd": pd, "df": companies(), "tmp": tmp_path}


@pytest.fixture()
def example_names(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What an example that uses the server finds: ``server``, its ``client``, and ``result``, the three companies added."""
    server: bn.LocalServer = request.getfixturevalue("doctest_server")
    client = server.client
    result = client.submit(companies(), method="POST", path="/api/2.1/scheduling/companies", body=["name"])
    return {"server": server, "client": client, "result": result}


@pytest.fixture(autouse=True)
def _doctest_globals(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    """Fresh names for each example: :func:`example_basics`, and :func:`example_names` where it uses the server."""
    if not isinstance(request.node, DoctestItem):
        return
    doctest_namespace.update(request.getfixturevalue("example_basics"))
    for name in SERVER_NAMES:
        doctest_namespace.pop(name, None)
    if request.node.get_closest_marker("server") is not None:
        doctest_namespace.update(request.getfixturevalue("example_names"))
