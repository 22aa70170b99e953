"""batchnb: bulk API work from a notebook, with the Batch API 2.3.

    >>> import batchnb as bn
    >>> with bn.LocalServer() as server:                       # doctest: +SKIP
    ...     result = server.client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])

The public surface is what ``__all__`` lists; everything else is private.
"""

from __future__ import annotations

from typing import Any

from ._exceptions import (
    AuthenticationError,
    BatchError,
    BatchHTTPError,
    BatchValidationError,
    PayloadTooLargeError,
    Problem,
    RateLimitedError,
    SubmitInterrupted,
    TransportError,
    UnsupportedMediaTypeError,
)
from .client import AsyncClient, Client
from .model import Batch, Operation, Response
from .plan import Plan
from .refs import ref

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Batch",
    "BatchError",
    "BatchHTTPError",
    "BatchValidationError",
    "Client",
    "Composer",
    "LocalServer",
    "Operation",
    "PayloadTooLargeError",
    "Plan",
    "Problem",
    "RateLimitedError",
    "Response",
    "SubmitInterrupted",
    "TransportError",
    "UnsupportedMediaTypeError",
    "create_app",
    "expand",
    "from_frame",
    "ref",
    "summary",
    "to_frame",
]

# These need optional extras (server: starlette/uvicorn; notebook: ipywidgets,
# matplotlib) or pandas; they load on first use so that `import batchnb` stays light.
_LAZY = {
    "LocalServer": ("batchnb.local", "LocalServer"),
    "create_app": ("batchnb.server.app", "create_app"),
    "from_frame": ("batchnb.frames", "from_frame"),
    "to_frame": ("batchnb.results", "to_frame"),
    "expand": ("batchnb.results", "expand"),
    "Composer": ("batchnb.widgets", "Composer"),
    "summary": ("batchnb._display", "summary"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'batchnb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
