"""What any deployment of the batch server needs: the batch app, its limits, its credentials.

    >>> from batchnb.server import Limits, create_app
    >>> app = create_app(upstream="https://api.example", limits=Limits(max_requests=20))

The demo Scheduling API is not part of it: see :mod:`batchnb.demo`.
"""

from .app import BatchApp, create_app
from .auth import Keyring
from .limits import Limits

__all__ = ["BatchApp", "Keyring", "Limits", "create_app"]
