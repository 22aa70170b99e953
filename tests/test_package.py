"""The package as a whole: its public surface, its exceptions, and how its modules depend on each other."""

from __future__ import annotations

import ast
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import batchnb

PACKAGE = Path(batchnb.__file__).resolve().parent


def test_import_is_light():
    code = "import sys, batchnb; print(sorted(m for m in ('pandas', 'starlette', 'ipywidgets', 'matplotlib', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("name", batchnb.__all__)
def test_every_public_name_is_presented_as_batchnb_and_has_an_example(name):
    value = getattr(batchnb, name)
    assert value.__module__ == "batchnb", f"{name} says it lives in {value.__module__}"
    assert ">>>" in (value.__doc__ or ""), f"{name} has no example in its docstring"


def test_every_exception_is_a_batch_error():
    exceptions = [
        getattr(batchnb, n)
        for n in batchnb.__all__
        if isinstance(getattr(batchnb, n), type) and issubclass(getattr(batchnb, n), BaseException)
    ]
    assert len(exceptions) >= 10
    assert all(issubclass(e, batchnb.BatchError) for e in exceptions)
    assert issubclass(batchnb.RefSyntaxError, batchnb.BatchValidationError)
    with pytest.raises(batchnb.BatchError):
        batchnb.ref("not a name", "$.id")


@pytest.mark.parametrize("method", ["__init__", "submit", "send", "limits"])
def test_the_sync_and_async_twins_have_the_same_explicit_signature(method):
    sync = inspect.signature(getattr(batchnb.Client, method))
    asynchronous = inspect.signature(getattr(batchnb.AsyncClient, method))
    assert list(sync.parameters) == list(asynchronous.parameters)
    for name, parameter in sync.parameters.items():
        assert parameter.kind is not inspect.Parameter.VAR_KEYWORD, f"{method}(**{name}) hides its parameters"
        assert parameter.default == asynchronous.parameters[name].default, name


def test_submit_shows_every_parameter_in_help():
    names = set(inspect.signature(batchnb.Client.submit).parameters)
    assert {
        "method",
        "path",
        "body",
        "name",
        "headers",
        "parent",
        "nulls",
        "dry_run",
        "journal",
        "resume",
        "progress",
        "concurrency",
        "retries",
        "retry_operations",
        "rate",
        "bodies",
    } <= names


# ---------------------------------------------------------------- how modules depend on each other


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The batchnb modules ``module`` imports at run time (typing-only imports left out), function-level ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("batchnb"))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("batchnb"):
                # `from . import rules` imports the module batchnb._rules; `from .model import Batch`, batchnb.model.
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)

    Visitor().visit(tree)
    return found


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return {
        name: {d for d in _imports(path, name, set(modules)) if d in modules and d != name}
        for name, path in modules.items()
    }


@pytest.mark.slow
def test_no_import_cycle_in_the_package():
    graph = _module_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.slow
def test_the_server_never_imports_the_demo_and_the_model_never_draws():
    graph = _module_graph()
    for module, deps in graph.items():
        if module.startswith("batchnb.server"):
            assert not {d for d in deps if d.startswith("batchnb.demo")}, module
    assert "batchnb._display" not in graph["batchnb.model"] | graph["batchnb.plan"]
    assert "batchnb.frames" not in graph["batchnb.results"]


def _public_modules() -> list[str]:
    """The rule: a module is public unless a part of its dotted name starts with an underscore.

    Found with pkgutil on the package's files, without importing them (some need an extra)."""
    names = ["batchnb"]

    def walk(path: list[str], prefix: str) -> None:
        for info in pkgutil.iter_modules(path):
            if info.name.startswith("_"):
                continue  # private, and so is everything below it
            names.append(prefix + info.name)
            if info.ispkg:
                walk([str(Path(path[0]) / info.name)], f"{prefix}{info.name}.")

    walk([str(PACKAGE)], "batchnb.")
    return sorted(names)


#: The supported surface: every public module and its ``__all__``, as the API reference (docs/api/) lists them.
#: Users build on these names; every other module is private and may change in any release. A change here is a
#: change of what batchnb supports: it belongs in CHANGELOG.md ("Renamed (update your code)" when a name goes).
SURFACE: dict[str, set[str]] = {
    "batchnb": {
        "AsyncClient",
        "AuthenticationError",
        "Batch",
        "BatchError",
        "BatchHTTPError",
        "BatchValidationError",
        "Client",
        "ClientCredentials",
        "Composer",
        "Limits",
        "LocalServer",
        "LocalServerError",
        "MissingDependency",
        "Operation",
        "PayloadTooLargeError",
        "Plan",
        "PlannedBatch",
        "Problem",
        "RateLimitedError",
        "RefSyntaxError",
        "Response",
        "SubmitInterrupted",
        "TransportError",
        "UnsupportedMediaTypeError",
        "WaitTimeout",
        "create_app",
        "create_demo_app",
        "expand",
        "from_frame",
        "read_csv",
        "ref",
        "summary",
        "to_frame",
    },
    "batchnb.auth": {"ClientCredentials"},
    "batchnb.cli": {"main"},
    "batchnb.client": {"AsyncClient", "Client", "ClientOptions", "SubmitOptions"},
    "batchnb.dask": {"Cancelled", "Superseded", "by_key", "join", "read_csv", "submit"},
    "batchnb.demo": {"DEFAULT_DB", "Store", "create_demo_app"},
    "batchnb.demo.company": {"CompanyAPI", "CompanyApp"},
    "batchnb.demo.examples": {"API", "chained", "mixed", "nested", "three_services"},
    "batchnb.demo.idempotency": {"HEADER", "METHODS", "POINTER", "fingerprint", "parse_key"},
    "batchnb.demo.scheduling": {"API_PREFIX", "MAX_BODY_BYTES", "SchedulingApp", "scheduling_app"},
    "batchnb.frames": {"SkippedRowsWarning", "from_frame", "read_csv"},
    "batchnb.local": {"LocalServer"},
    "batchnb.model": {"BATCH_PATH", "Batch", "Operation", "Response", "check_batch", "is_idempotent"},
    "batchnb.plan": {"Plan", "PlannedBatch", "batch_fill", "make_plan"},
    "batchnb.results": {"expand", "to_frame"},
    "batchnb.server": {"BatchApp", "DispatchResult", "Dispatcher", "Keyring", "Limits", "create_app"},
    "batchnb.server.app": {"BatchApp", "create_app"},
    "batchnb.server.auth": {"Keyring"},
    "batchnb.server.limits": {"Limits"},
    "batchnb.testing": {"assert_ok", "assert_result", "assert_statuses", "sanitize_config"},
    "batchnb.widgets": {"Composer"},
}


def test_the_public_modules_are_the_supported_ones():
    assert _public_modules() == sorted(SURFACE), (
        "a module was made public or private: update SURFACE, the API reference and the changelog"
    )


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_each_public_module_exports_exactly_its_supported_names(module):
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # an extra that is not installed
        pytest.skip(str(exc))
    exported = list(getattr(mod, "__all__", ()))
    assert len(exported) == len(set(exported)), f"{module}.__all__ lists a name twice"
    assert set(exported) == SURFACE[module], (
        f"{module}.__all__ changed: added {sorted(set(exported) - SURFACE[module])}, "
        f"gone {sorted(SURFACE[module] - set(exported))}"
    )
    assert all(hasattr(mod, name) for name in exported), f"{module}.__all__ names what it does not hold"


def test_every_public_module_has_its_page_in_the_api_reference():
    import re

    pages = sorted((PACKAGE.parent / "docs" / "api").glob("*.md"))
    documented = {
        target
        for page in pages
        for target in re.findall(r"^\.\. automodule::\s*(\S+)", page.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert documented == set(SURFACE), (
        f"no page for {sorted(set(SURFACE) - documented)}; a page for what is not public: "
        f"{sorted(documented - set(SURFACE))}"
    )


def _commented_constants(module: object) -> set[str]:
    """The module-level names of ``module``'s source that a ``#:`` comment documents (the line above them)."""
    import re

    source = inspect.getsource(module)  # type: ignore[arg-type]
    return set(re.findall(r"^#:.*\n(?:#:.*\n)*(\w+)\s*(?::[^=\n]*)?=", source, re.MULTILINE))


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_every_name_a_public_module_exports_has_an_example(module):
    """A class or function shows an example (``>>>``) in its docstring; a constant, which cannot carry a docstring,
    says what it is in a ``#:`` comment where it is defined (the API reference shows that comment)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # an extra that is not installed
        pytest.skip(str(exc))
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} has no __all__"
    missing = [
        name
        for name in exported
        if (inspect.isclass(getattr(mod, name)) or inspect.isroutine(getattr(mod, name)))
        and ">>>" not in (getattr(mod, name).__doc__ or "")
    ]
    assert not missing, f"{module}: no example for {missing}"
    constants = [name for name in exported if not (inspect.isclass(getattr(mod, name)) or callable(getattr(mod, name)))]
    uncommented = [name for name in constants if name not in _commented_constants(mod)]
    assert not uncommented, f"{module}: no #: comment says what {uncommented} is"


def test_a_request_through_httpx_looks_for_no_module(server):
    """httpcore imports sniffio on every request and does without it, but a failed import is not remembered:
    were it missing, every request would search ``sys.path`` again (a dependency for that reason)."""
    import asyncio
    import importlib.abc

    import httpx

    looked_for: list[str] = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # asked only for modules not imported yet
            looked_for.append(name)
            return None

    async def get(http: httpx.AsyncClient) -> None:
        assert (await http.get(server.url + "/api/2.3/batch")).status_code == 200

    async def main() -> None:
        async with httpx.AsyncClient(trust_env=False) as http:
            await get(http)  # whatever the first request imports, it imports once
            sys.meta_path.insert(0, watch)
            try:
                for _ in range(3):
                    await get(http)
            finally:
                sys.meta_path.remove(watch)

    watch = Watch()
    asyncio.run(main())
    assert looked_for == []


def test_every_lazy_name_is_typed_for_checkers_as_it_loads_at_run_time():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), "only imports belong in the TYPE_CHECKING block"
                module = "batchnb" + ("." + imp.module if imp.module else "")
                typed.update({a.name: module for a in imp.names})
    assert typed == batchnb._LAZY, "the TYPE_CHECKING block and _LAZY must name the same modules for the same names"
