"""API regression tests: assertions on result frames, and pytest fixtures with the embedded server.

    >>> from batchnb.testing import assert_ok, assert_statuses, assert_result
    >>> assert_ok(result)
    >>> assert_statuses(result, {0: 201, 2: "2xx"})     # rows by label (or by operation name)
    >>> result.to_csv(tmp / "expected.csv")              # once, from a run you checked
    >>> again = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
    >>> assert_result(again, tmp / "expected.csv")       # new ids and durations are no difference

A failed assertion raises :class:`AssertionError` (what pytest and nbval
report as a failure) whose message is a short table of the rows that differ:
row label, operation name, expected, got, and the row's error. A mistake in
how an assertion is called (a status that is not one, an expected file that
cannot be read) raises :class:`~batchnb.BatchValidationError` instead.

**The fixtures are opt-in.** batchnb registers no ``pytest11`` entry point:
one would load this module, pandas and all, into every pytest run of every
project in the environment. Ask for them with ``pytest -p batchnb.testing``,
``addopts = "-p batchnb.testing"`` in your pytest configuration, or
``pytest_plugins = ["batchnb.testing"]`` in your top-level ``conftest.py``:

- ``batchnb_server``: a :class:`~batchnb.LocalServer` on a free loopback port
  with the demo API on a **fresh SQLite file for each test** (in the test's
  ``tmp_path``, kept by pytest for a look after a failure);
- ``batchnb_session_server``: one for the whole session, its database shared
  by every test that uses it (faster; tests see each other's data);
- ``batchnb_client``: ``batchnb_server.client``, a :class:`~batchnb.Client`
  with its credentials (``batchnb_server.credentials()`` gives them, for a
  client of your own).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compare import VOLATILE, Expected, frame_differences, message, ok_differences, rows_differ, status_differences
from ._nbval import SANITIZE_CONFIG
from ._text import plural

if TYPE_CHECKING:
    import pandas as pd
    from pytest import TempPathFactory

    from .client import Client
    from .local import LocalServer

__all__ = ["assert_ok", "assert_result", "assert_statuses", "sanitize_config"]


def assert_ok(result: pd.DataFrame) -> None:
    """Assert that every row of ``result`` succeeded (a 2xx status).

    >>> import pandas as pd
    >>> assert_ok(pd.DataFrame({"name": ["a"], "status": [201], "ok": [True]}))
    >>> assert_ok(pd.DataFrame({"name": ["a", "b"], "status": [201, 404], "ok": [True, False],
    ...                         "error": [None, "no such company"]}))
    Traceback (most recent call last):
    ...
    AssertionError: 1 of 2 rows not ok:
      row  name  expected  got  error
      1    b     2xx       404  no such company

    Raises :class:`AssertionError` (not a :class:`~batchnb.BatchError`: it is
    what pytest reports as a failed test), listing the rows that are not ok.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, then this message
    diffs = ok_differences(result)
    if diffs:
        raise AssertionError(message(f"{len(diffs)} of {plural(len(result), 'row')} not ok", diffs))


def assert_statuses(result: pd.DataFrame, expected: Mapping[Any, Any] | pd.Series) -> None:
    """Assert the status of some rows, each named by its operation name or its row label.

    >>> import pandas as pd
    >>> result = pd.DataFrame({"name": ["add-company", "bad-row"], "status": [201, 400], "ok": [True, False],
    ...                        "error": [None, "400 name: must not be empty"]})
    >>> assert_statuses(result, {"add-company": 201, "bad-row": "4xx"})
    >>> assert_statuses(result, {"add-company": 201, 1: 201})
    Traceback (most recent call last):
    ...
    AssertionError: 1 of 2 statuses not as expected:
      row  name     expected  got  error
      1    bad-row  201       400  400 name: must not be empty

    ``expected`` is a mapping or a Series; each key is a row label or an
    operation name (a key that is the label of one row and the name of
    another is refused as ambiguous). A status is a number (``201``), a class
    (``"4xx"``) or ``None`` for an operation that did not run. Rows that are
    not named are not checked. Raises :class:`AssertionError` (what pytest
    reports as a failed test) when a status differs or a key names no row,
    :class:`~batchnb.BatchValidationError` when ``expected`` cannot be read.
    """
    __tracebackhide__ = True
    checked, diffs = status_differences(result, expected)
    if diffs:
        raise AssertionError(message(f"{len(diffs)} of {plural(checked, 'status', 'statuses')} not as expected", diffs))


def assert_result(
    result: pd.DataFrame,
    expected: pd.DataFrame | str | Path,
    ignore: Iterable[Any] = VOLATILE,
    *,
    patterns: Iterable[str] = (),
    strict: bool = False,
) -> None:
    """Assert that ``result`` matches a stored one: a frame, or a CSV file written from one.

    >>> import pandas as pd
    >>> stored = pd.DataFrame({"name": ["a", "b"], "status": [201, 201], "body": [{"id": "co_000000000000"}, {}]})
    >>> today = pd.DataFrame({"name": ["a", "b"], "status": [201, 409], "duration": [0.2, 0.3],
    ...                       "body": [{"id": "co_4ba06eb22da7"}, {}], "error": [None, "409 name: taken"]})
    >>> assert_result(today, stored)
    Traceback (most recent call last):
    ...
    AssertionError: 1 of 2 rows differs from the expected frame:
      row  name  expected  got  error
      1    b     201       409  409 name: taken

    Every column ``expected`` has is compared, except ``ignore`` (by default
    the columns that change between identical runs: ``duration``,
    ``attempts``, ``batch``); a column named by a JSONPath (``$.address.city``)
    is that query on the body. A body (or any JSON object or list) compares
    field by field, and each field that differs is named by its JSONPath
    (``$.address.city``) with both values; a field the result has and the
    expected side lacks (one the API added) differs only with
    ``strict=True``. Ids compare by the part they play, not their
    value (the same placeholders as ``result.batchnb.stable()``; ``patterns``
    adds your API's id formats), and types are set aside (``201`` and
    ``"201"``, a body and its JSON text), so a CSV written by
    ``result.to_csv("expected.csv")`` or ``batchnb run -o`` works as is.

    Rows pair by label (a frame's index; a CSV's first column headed ``row``
    or not headed), else by ``name`` when each is distinct, else by position;
    a row on one side only is a difference. Raises :class:`AssertionError`
    (what pytest reports as a failed test) listing what differs,
    :class:`~batchnb.BatchValidationError` when ``expected`` cannot be read or
    names a column the result does not have.
    """
    __tracebackhide__ = True
    wanted = Expected.of(expected)
    total, diffs = frame_differences(result, wanted, ignore=ignore, patterns=patterns, strict=strict)
    if diffs:
        raise AssertionError(message(rows_differ(diffs, total, wanted.source), diffs))


def sanitize_config() -> Path:
    """The nbval sanitizer that ships with batchnb (``batchnb sanitize-config`` prints the same path).

    >>> sanitize_config().name
    'nbval-sanitize.cfg'

    It replaces, in stored and fresh outputs alike, what batchnb prints that
    changes from run to run: the demo API's ids, UUIDs, ISO timestamps,
    loopback ports, the embedded server's temporary files, and durations in
    reports, reprs and progress bars. Nothing else: a status, a field or a
    count that changes still fails the notebook.
    """
    return SANITIZE_CONFIG


# ---------------------------------------------------------------- the pytest plugin (opt-in)

try:
    import pytest
except ImportError:  # the assertions need no pytest; only the fixtures do
    pytest = None  # type: ignore[assignment]  # the fixtures below are then not defined

if pytest is not None:

    @pytest.fixture
    def batchnb_server(tmp_path: Path) -> Iterator[LocalServer]:
        """The embedded server with the demo API on a fresh SQLite file, for one test.

        >>> def test_creates_a_company(batchnb_server):
        ...     result = batchnb_server.client.submit(df, method="POST", path="/api/2.1/scheduling/companies",
        ...                                           body=["name"])
        ...     assert_ok(result)
        >>> test_creates_a_company(server)     # pytest passes the fixture; here, a running server
        """
        from .local import LocalServer

        with LocalServer(tmp_path / "batchnb-demo.sqlite3") as server:
            yield server

    @pytest.fixture(scope="session")
    def batchnb_session_server(tmp_path_factory: TempPathFactory) -> Iterator[LocalServer]:
        """The embedded server with the demo API, one for the whole session (tests share its data).

        >>> def test_lists(batchnb_session_server):
        ...     batch = bn.Batch([bn.Operation("GET", "/api/2.1/scheduling/companies")])
        ...     assert batchnb_session_server.client.submit(batch)[0].status == 200
        >>> test_lists(server)                 # pytest passes the fixture; here, a running server
        """
        from .local import LocalServer

        with LocalServer(tmp_path_factory.mktemp("batchnb") / "demo.sqlite3") as server:
            yield server

    @pytest.fixture
    def batchnb_client(batchnb_server: LocalServer) -> Client:
        """A client of ``batchnb_server`` (fresh data for each test), authenticated as its first tenant.

        >>> def test_one(batchnb_client):
        ...     assert_ok(batchnb_client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"]))
        >>> test_one(client)                   # pytest passes the fixture; here, a client of a running server
        """
        return batchnb_server.client
