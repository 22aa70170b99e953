"""Optional libraries: imported when needed, with the extra to install named when missing."""

from __future__ import annotations

import importlib
from typing import Any

from ._exceptions import MissingDependency

__all__ = ["require"]


def require(module: str, extra: str, what: str) -> Any:
    """Import ``module``, or raise :class:`~batchnb.MissingDependency` naming the extra to install.

    >>> require("json", "core", "reading JSON").dumps(1)
    '1'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module.split('.')[0]}", extra) from None
