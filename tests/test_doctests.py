"""The examples in the docstrings: every one runs, or says why not and has a test here that does the same.

``--doctest-modules`` runs the examples of each module against one demo server for the session (the root
``conftest.py``). It does not reach the methods of the classes presented as ``batchnb.X`` (``Client.submit``,
``Composer.fill``, …): their examples run here. The few examples that cannot run in a doctest (a Dask cluster, a
process of their own) are listed in ``SKIPPED`` with why; each has an equivalent test below or in the module named.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import batchnb

PACKAGE = Path(batchnb.__file__).parent

_DASK = "needs dask.distributed workers"
_PROCESS = "starts a process of its own"

#: every example left as ``+SKIP``, by its first line (directive left out), with why and where it runs instead.
SKIPPED: dict[str, str] = {
    # batchnb/_dask_limits.py
    "async def start(in_flight: ClusterLimit) -> None:": f"{_DASK}: test_a_cluster_limit_lends_its_leases_across_tasks",
    "async def one_at_a_time() -> None:": f"{_DASK}: test_a_cluster_limit_lends_its_leases_across_tasks",
    "async def back_off() -> float:": f"{_DASK}: test_a_cluster_value_is_read_where_it_was_written",
    # batchnb/dask.py, the module: the guide's example is the same (tests/test_dask.py)
    'staff = dd.read_csv("staff-*.csv")': f"{_DASK}: test_the_guides_dask_example_runs_on_a_local_cluster",
    'result = batchnb.dask.submit(staff, "http://api.example", token=TOKEN,': (
        f"{_DASK}: test_the_guides_dask_example_runs_on_a_local_cluster"
    ),
    "batchnb.dask.join(staff, result)": f"{_DASK}: test_the_guides_dask_example_runs_on_a_local_cluster",
    # batchnb/dask.py, submit
    'result = batchnb.dask.submit(ddf, "http://127.0.0.1:8000", token=TOKEN, method="POST",': (
        f"{_DASK}: test_results_line_up_with_their_input_partition_by_partition (tests/test_dask.py)"
    ),
    # batchnb/demo/company.py
    "with CompanyAPI(token_ttl=20, rate=50) as api:": f"{_PROCESS}: test_a_company_api_serves_a_client_over_tls",
    "with CompanyAPI(tls=True, token_ttl=20, rate=50) as api:": (
        f"{_PROCESS}: test_a_company_api_serves_a_client_over_tls"
    ),
}


def _normalize(line: str) -> str:
    code = line.strip().removeprefix(">>>").removeprefix("...")
    code = re.sub(r"#\s*doctest:.*$", "", code)
    return " ".join(code.split())


def _skips() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "+SKIP" in line:
                found.append((str(path.relative_to(PACKAGE.parent)), number, _normalize(line)))
    return found


def test_every_skipped_example_is_listed_with_its_reason() -> None:
    unlisted = [f"{path}:{number}: {code}" for path, number, code in _skips() if code not in SKIPPED]
    assert not unlisted, "an example skipped without a reason in SKIPPED:\n" + "\n".join(unlisted)


def test_the_list_of_skipped_examples_is_short_and_current() -> None:
    used = {code for _, _, code in _skips()}
    assert not set(SKIPPED) - used, f"listed but no longer skipped: {sorted(set(SKIPPED) - used)}"
    assert len(SKIPPED) <= 10
    assert all(reason.strip() for reason in SKIPPED.values())


# ---------------------------------------------------------------- the methods --doctest-modules does not reach


def _modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages([str(PACKAGE)], "batchnb.")]
    return [batchnb, *(importlib.import_module(name) for name in names)]


def _method_examples() -> list[doctest.DocTest]:
    """Examples of the methods of classes whose ``__module__`` is not where they are defined (the public ones)."""
    finder = doctest.DocTestFinder()
    modules = _modules()  # all imported first: batchnb's lazy names are then in its namespace
    collected = {test.name for module in modules for test in finder.find(module)}
    examples = []
    for module in modules:
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ == module.__name__:
                continue
            defined_here = [
                f
                for f in vars(cls).values()
                if inspect.isfunction(inspect.unwrap(f)) and inspect.unwrap(f).__globals__ is vars(module)
            ]
            if not defined_here:
                continue
            name = f"{cls.__module__}.{cls.__qualname__}"
            for test in finder.find(cls, name, module=False, globs=vars(module)):
                member = vars(cls).get(test.name.removeprefix(name + "."))
                if member is None or isinstance(member, property):
                    continue  # the class's own docstring and its properties: --doctest-modules runs them
                if test.examples and test.name not in collected:
                    collected.add(test.name)
                    examples.append(test)
    return sorted(examples, key=lambda test: test.name)


METHOD_EXAMPLES = _method_examples()


def test_the_public_methods_have_examples_to_run() -> None:
    names = {test.name for test in METHOD_EXAMPLES}
    assert {"batchnb.Client.submit", "batchnb.AsyncClient.limits", "batchnb.Composer.fill"} <= names


@pytest.mark.parametrize("test", METHOD_EXAMPLES, ids=[test.name.removeprefix("batchnb.") for test in METHOD_EXAMPLES])
def test_method_example(test: doctest.DocTest, request: pytest.FixtureRequest, example_basics: dict[str, Any]) -> None:
    names = dict(example_basics)
    if any(re.search(r"\b(?:server|client|result)\b", example.source) for example in test.examples):
        names.update(request.getfixturevalue("example_names"))
    test.globs = {**test.globs, **names}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)  # as --doctest-modules (pytest's default flags)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert not runner.failures, "".join(out)


# ---------------------------------------------------------------- what the skipped examples show, run here


@pytest.fixture()
def dask_client() -> Iterator[Any]:
    """A ``dask.distributed`` client of a cluster in this process (threads, no dashboard)."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        yield client


@pytest.mark.dask
def test_a_cluster_limit_lends_its_leases_across_tasks(dask_client: Any) -> None:
    from batchnb._dask_limits import ClusterLimit

    async def start(in_flight: ClusterLimit) -> None:
        await in_flight.acquire()
        in_flight.release_after(0.5)

    async def one_at_a_time() -> list[str]:
        limit = ClusterLimit("batchnb-in-flight-test", max_leases=1)
        await start(limit)  # the lease comes back half a second later, whatever this task does
        waited = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0.1)
        order = ["waiting" if not waited.done() else "got it at once"]
        await asyncio.wait_for(waited, 5)
        order.append("got it")
        await limit.release()
        return order

    assert asyncio.run(one_at_a_time()) == ["waiting", "got it"]


@pytest.mark.dask
def test_a_cluster_value_is_read_where_it_was_written(dask_client: Any) -> None:
    from batchnb._dask_limits import ClusterValue

    def in_a_task(name: str) -> float:
        async def back_off() -> float:
            backoff = ClusterValue(name)
            await backoff.set(1234.5)
            value: float = await backoff.get()
            return value

        return asyncio.run(back_off())

    assert dask_client.submit(in_a_task, "batchnb-backoff-test").result(timeout=30) == 1234.5


@pytest.mark.subprocess
def test_a_company_api_serves_a_client_over_tls() -> None:
    from batchnb.demo.company import CompanyAPI

    with CompanyAPI(tls=True, token_ttl=20, rate=50) as api:
        assert api.url.startswith("https://127.0.0.1:") and api.token_url.startswith(api.url)
        assert api.client_id and api.client_secret not in repr(api)
        client = batchnb.Client(
            api.url,
            mode="direct",
            verify=api.ca_file,
            auth=batchnb.auth.ClientCredentials(api.token_url, api.client_id, api.client_secret),
        )
        result = client.submit([batchnb.Operation("POST", "/api/things", {"key": 1})])
    assert result["status"].tolist() == [201]
