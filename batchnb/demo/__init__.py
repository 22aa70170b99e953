"""The demo: a Scheduling API on SQLite behind the batch server, the spec's worked examples, a CSV.

    >>> from batchnb.demo import create_demo_app
    >>> app = create_demo_app(db=":memory:", credentials={"demo": "demo-token"})

It is what ``batchnb serve`` and :class:`batchnb.LocalServer` run by default,
so that everything works on a laptop with no account anywhere. The batch
server itself (:mod:`batchnb.server`) knows nothing of it.

The demo API keeps its data in a :class:`Store` (SQLite), which
:func:`batchnb.demo.scheduling.scheduling_app` serves:

    >>> from batchnb.demo import Store
    >>> with Store(":memory:") as store:
    ...     store.create("key-a", "company", {"name": "Salon"})["name"]
    'Salon'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .._exceptions import BatchValidationError, Problem
from ..server import BatchApp, Keyring, Limits, create_app
from ._store import Store

__all__ = ["DEFAULT_DB", "Store", "create_demo_app"]

#: where ``batchnb serve`` keeps the demo's data unless told otherwise.
DEFAULT_DB = "batchnb-demo.sqlite3"


def create_demo_app(
    *,
    db: str | Path = DEFAULT_DB,
    credentials: Mapping[str, str],
    limits: Limits = Limits(),
    idempotency_ttl: float = 24 * 3600.0,
) -> BatchApp:
    """The batch server in front of the demo Scheduling API, stored in the SQLite file ``db``.

    >>> app = create_demo_app(db=":memory:", credentials={"demo": "demo-token", "other": "other-token"})

    ``credentials`` maps api keys to tokens: they are the demo API's tenants,
    each of which sees only its own data. The store closes when the server stops.
    The demo API honours ``Idempotency-Key`` on POST and PATCH, per tenant;
    a key is kept ``idempotency_ttl`` seconds (a day).
    """
    if not credentials:
        raise BatchValidationError(
            [Problem("credentials", "the demo API needs at least one api key and token (its tenants)")]
        )
    from ._openapi import describe
    from .scheduling import scheduling_app

    store = Store(db)
    api = scheduling_app(store, Keyring(credentials), key_ttl=idempotency_ttl)
    # Each batch's writes are committed once, before its answer is sent (Store.group);
    # its operations call the API directly, without ASGI's messages (SchedulingApp.dispatch).
    return create_app(
        api=api,
        credentials=credentials,
        limits=limits,
        on_shutdown=store.close,
        idempotency=True,
        group_writes=store.group,
        dispatch=api.dispatch,
        describe_api=lambda: describe(api),
    )
