"""How the gateway reaches its upstream: a connection of its own for each operation in flight.

httpx's connection pool (httpcore 1.0) looks at every connection it holds
each time a request starts or an answer is closed, asking each idle one
whether its socket is readable (and, for each idle one, counting them all
again), and it closes an idle connection as soon as it holds more than
``max_keepalive_connections`` connections in all, busy or not. One client for
the whole gateway, with 64 operations in flight against an API 100 ms away,
therefore opened a new connection for nine requests in ten (httpx's default
limits: 20 kept alive; the API counted 1,816 connections for 2,000 requests)
or, with its limits raised to what is in flight, spent about 9 ms of CPU a
request on that bookkeeping, where a request costs about 0.6 ms.

So :class:`UpstreamClients` keeps clients of one connection each, and
:class:`UpstreamDispatcher` lends one to each operation for as long as it
runs: a pool that never scans, connections kept alive and reused from one
operation (and batch) to the next, never more clients than operations in
flight at once. Every client comes from the one factory the gateway builds
its clients with, so the connection settings are the same for all of them;
the factory should share one ``ssl.SSLContext`` among them (httpx builds one
per client otherwise, about 15 ms of CPU each).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx

from .._connect import Connection, unreached
from .._dispatch import DEFAULT_MAX_RESPONSE_BYTES, DispatchResult, HTTPDispatcher
from ._h11 import OneConnection, Origin

__all__ = ["ONE_CONNECTION", "UpstreamClients", "UpstreamDispatcher"]

#: what is lent: a client, or a bare connection that requests are sent on as they are.
Upstream = httpx.AsyncClient | OneConnection
#: the limits of every lent client: one connection, kept alive.
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


class UpstreamClients:
    """Clients of one connection each, made by ``make`` (given :data:`ONE_CONNECTION`), lent one at a time.

    >>> import asyncio
    >>> clients = UpstreamClients(lambda limits: httpx.AsyncClient(limits=limits), most=64)
    >>> async def main():
    ...     async with clients.lend() as first:
    ...         pass
    ...     async with clients.lend() as again:  # the same client, its connection still open
    ...         reused = again is first
    ...     made = clients.made
    ...     await clients.aclose()
    ...     return reused, made
    >>> asyncio.run(main())
    (True, 1)

    At most ``most`` clients exist (the operations the gateway may have in
    flight: ``max_parallel * max_concurrent_batches``); past that, a borrower
    waits for one to come back, within its operation's timeout.
    """

    def __init__(self, make: Callable[[httpx.Limits], Upstream], *, most: int) -> None:
        self._make = make
        self._most = max(1, most)
        self._room = asyncio.Semaphore(self._most)
        #: clients not lent just now; the one given back last is lent first (its connection is the freshest).
        self._idle: list[Upstream] = []
        self._lent = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"UpstreamClients(lent={self._lent}, idle={len(self._idle)}, most={self._most})"

    @property
    def made(self) -> int:
        """How many clients exist (lent or idle): at most the operations that were in flight at once."""
        return self._lent + len(self._idle)

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[Upstream]:
        """A client for one operation, given back when it is done (closed instead, after :meth:`aclose`)."""
        http = await self.borrow()
        try:
            yield http
        finally:
            await self.give_back(http)

    async def borrow(self) -> Upstream:
        """A client for one operation; :meth:`give_back` it when done (what :meth:`lend` does for you).

        The pair, not :meth:`lend`, is what each operation of the gateway goes
        through: a context manager made from a generator is a few percent of
        the gateway's CPU an operation.
        """
        await self._room.acquire()
        self._lent += 1
        return self._idle.pop() if self._idle else self._make(ONE_CONNECTION)

    async def give_back(self, http: Upstream) -> None:
        """``http`` is free again: lent next (closed instead, after :meth:`aclose`)."""
        self._lent -= 1
        self._room.release()
        if self._closed:
            await http.aclose()
        else:
            self._idle.append(http)

    async def aclose(self) -> None:
        """Close the idle clients now, and each lent one when it is given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for http in idle:
            await http.aclose()


class UpstreamDispatcher:
    """An :class:`~batchnb._dispatch.HTTPDispatcher` for each operation, on a client lent by ``clients``.

    >>> d = UpstreamDispatcher(UpstreamClients(lambda limits: httpx.AsyncClient(limits=limits), most=16), "https://api.example")
    """

    def __init__(
        self,
        clients: UpstreamClients,
        base_url: str,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connection: Connection | None = None,
    ) -> None:
        self._clients = clients
        self._base = base_url
        self._origin = Origin.of(base_url)
        self._max = max_response_bytes
        #: names the proxy when a request cannot leave (see batchnb._connect.unreached).
        self._connection = connection

    async def __call__(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> DispatchResult:
        http = await self._clients.borrow()
        try:
            if isinstance(http, OneConnection):
                try:
                    return await http.fetch(self._origin, method, path, headers, body, self._max)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    raise unreached(exc, self._origin.base, None) from exc  # a bare connection: never a proxy
            dispatch = HTTPDispatcher(http, self._base, max_response_bytes=self._max, connection=self._connection)
            return await dispatch(method, path, headers, body)
        finally:
            await self._clients.give_back(http)
