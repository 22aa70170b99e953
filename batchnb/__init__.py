"""batchnb: bulk API work from a notebook, with the Batch API 2.3.

    >>> import batchnb as bn
    >>> df = pd.DataFrame({"name": ["Riverside Clinic", "Hilltop Dental"]})
    >>> with bn.LocalServer() as server:
    ...     result = server.client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
    >>> result[["status", "ok"]]
       status    ok
    0     201  True
    1     201  True

The public surface is what ``__all__`` lists, presented as ``batchnb.X``;
modules whose names start with an underscore are private (the rule:
docs/architecture.md; every public name: the API reference, docs/api/).
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    AuthenticationError,
    BatchError,
    BatchHTTPError,
    BatchValidationError,
    LocalServerError,
    MissingDependency,
    PayloadTooLargeError,
    Problem,
    RateLimitedError,
    RefSyntaxError,
    SubmitInterrupted,
    TransportError,
    UnsupportedMediaTypeError,
    WaitTimeout,
)
from ._refs import ref
from .auth import ClientCredentials
from .client import AsyncClient, Client
from .model import Batch, Operation, Response
from .plan import Plan, PlannedBatch

if TYPE_CHECKING:
    # The lazy names below, as a type checker sees them (at run time they load on first use).
    from ._display import summary
    from .demo import create_demo_app
    from .frames import from_frame, read_csv
    from .local import LocalServer
    from .results import expand, to_frame
    from .server.app import create_app
    from .server.limits import Limits
    from .widgets import Composer

__version__ = "0.1.0"

__all__ = [
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
]

# These need optional extras (server: uvicorn; notebook: ipywidgets,
# matplotlib) or pandas; they load on first use so that `import batchnb` stays light.
#: the extra that brings what each lazy name needs, named when it is missing.
_EXTRAS = {"Composer": "notebook", "LocalServer": "server", "summary": "notebook"}
_LAZY = {
    "Composer": "batchnb.widgets",
    "Limits": "batchnb.server.limits",
    "LocalServer": "batchnb.local",
    "create_app": "batchnb.server.app",
    "create_demo_app": "batchnb.demo",
    "expand": "batchnb.results",
    "from_frame": "batchnb.frames",
    "read_csv": "batchnb.frames",
    "summary": "batchnb._display",
    "to_frame": "batchnb.results",
}


def _present(value: Any) -> Any:
    # Reprs, help() and tracebacks say batchnb.Client, not batchnb.client.Client.
    with contextlib.suppress(AttributeError, TypeError):  # a value whose module cannot be set stays as it is
        value.__module__ = __name__
    return value


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            if name in _EXTRAS and exc.name and not exc.name.startswith("batchnb"):
                raise MissingDependency(f"batchnb.{name} needs {exc.name.split('.')[0]}", _EXTRAS[name]) from None
            raise
        value = _present(getattr(module, name))
        globals()[name] = value
        return value
    if name == "__test__":
        # For doctest: the examples of the lazy names, which now say they live here.
        found = {}
        for lazy in _LAZY:
            try:
                found[lazy] = __getattr__(lazy)
            except ImportError:  # an extra that is not installed
                continue
        return found
    raise AttributeError(f"module 'batchnb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _present_all() -> None:
    for name in __all__:
        if name not in _LAZY:
            _present(globals()[name])


_present_all()


def _register_display() -> None:
    """Draw batches and plans as HTML tables in IPython, without the model knowing how."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None:
        return

    def html_of(obj: Any) -> str:
        from . import _display

        return _display.batch_html(obj) if isinstance(obj, Batch) else _display.plan_html(obj)

    formatter = shell.display_formatter.formatters["text/html"]
    formatter.for_type(Batch, html_of)
    formatter.for_type(Plan, html_of)


_register_display()
