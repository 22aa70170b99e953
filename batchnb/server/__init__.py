"""What any deployment of the batch server needs: the batch app, its limits, its credentials.

    >>> from batchnb.server import Limits, create_app
    >>> app = create_app(upstream="https://api.example", limits=Limits(max_requests=20))

In front of an API in this process, ``create_app(api=..., dispatch=...)`` may
also take a :class:`Dispatcher`: how the engine calls that API for one
operation without ASGI's messages, answering a :class:`DispatchResult`.

    >>> from batchnb.server import DispatchResult
    >>> async def dispatch(method, path, headers, body):
    ...     return DispatchResult(200, {"content-type": "application/json"}, b"{}")

The demo Scheduling API is not part of it: see :mod:`batchnb.demo`.
"""

from .._dispatch import Dispatcher, DispatchResult
from .app import BatchApp, create_app
from .auth import Keyring
from .limits import Limits

__all__ = ["BatchApp", "DispatchResult", "Dispatcher", "Keyring", "Limits", "create_app"]
