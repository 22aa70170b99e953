"""The embedded server: a real ``batchnb serve`` on a free loopback port, in a background thread.

    >>> with LocalServer() as server:
    ...     result = server.client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
    >>> result.status.tolist()
    [201, 201, 201]

It is the same ASGI app and the same uvicorn as ``batchnb serve``, with the
demo Scheduling API on a SQLite file; notebooks and tests use it so that
everything runs with no account anywhere.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Unpack, cast

from ._connect import Cert, Connection, Verify
from ._exceptions import BatchValidationError, LocalServerError, Problem
from ._extras import require
from ._secrets import mask_logger
from .client import AsyncClient, Client, ClientOptions
from .server import Limits

__all__ = ["LocalServer"]


class LocalServer:
    """Start the batch server with the demo API in this process; stop it on exit.

    >>> server = LocalServer().start()
    >>> server.url                         # a free port, another each time
    'http://127.0.0.1:...'
    >>> server.client.limits()["version"]
    '2.3'
    >>> server.stop()

    ``tenants`` names the api keys the demo API knows (each gets a fresh random
    token, never shown); ``server.client`` is authenticated as the first,
    ``server.client_for(key)`` as any other. ``db`` is the SQLite file (a
    temporary one by default). With ``upstream``, it is a gateway in front of
    that HTTP API instead; ``upstream_idempotency`` says the API honours
    ``Idempotency-Key``, and ``upstream_verify``, ``upstream_cert``,
    ``upstream_proxy`` how it is reached (as ``Client``'s ``verify``, ``cert``,
    ``proxy``; the environment counts too). With no ``tenants`` (``tenants=()``),
    a gateway is open on loopback and passes each batch's credentials on to
    the upstream, which judges them.
    """

    def __init__(
        self,
        db: str | Path | None = None,
        *,
        tenants: tuple[str, ...] = ("demo", "other"),
        limits: Limits = Limits(),
        upstream: str | None = None,
        upstream_idempotency: bool = False,
        upstream_verify: Verify = True,
        upstream_cert: Cert | None = None,
        upstream_proxy: str | None = None,
        log_level: str = "warning",
        **client_options: Unpack[ClientOptions],
    ) -> None:
        self._upstream_connection = Connection(verify=upstream_verify, cert=upstream_cert, proxy=upstream_proxy)
        if upstream is not None:
            self._upstream_connection.check(
                {"verify": "upstream_verify", "cert": "upstream_cert", "proxy": "upstream_proxy"}
            )
        self._tmp = None
        if db is None and upstream is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="batchnb-")
            db = Path(self._tmp.name) / "demo.sqlite3"
        self.db = Path(db) if db is not None else None
        self._credentials = {key: secrets.token_urlsafe(18) for key in tenants}
        self.tenants = tenants
        self.limits = limits
        self._upstream = upstream
        self._upstream_idempotency = upstream_idempotency
        self._log_level = log_level
        self._client_options = client_options
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def __repr__(self) -> str:
        state = f"running at {self.url}" if self.running else "stopped"
        return f"LocalServer({state}, db={str(self.db)!r}, {len(self.tenants)} tenants)"

    @property
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:PORT``)."""
        if self.port is None:
            raise LocalServerError("the server is not running; call start() or use it in a with block")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start serving; returns once the server answers."""
        uvicorn = require("uvicorn", "server", "LocalServer")
        from .server._bounds import uvicorn_options

        if self.running:
            return self
        if self._upstream is not None:
            from .server import create_app

            app = create_app(
                upstream=self._upstream,
                credentials=self._credentials,
                limits=self.limits,
                idempotency=self._upstream_idempotency,
                connection=self._upstream_connection,
            )
        else:
            from .demo import create_demo_app

            db = cast(Path, self.db)  # without an upstream there is always a file (a temporary one by default)
            app = create_demo_app(db=db, credentials=self._credentials, limits=self.limits)
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on a socket that says it is TCP, and without it
        # an answer's body waited for the client's delayed ACK (40 ms a request).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level=self._log_level, access_log=False, lifespan="on", **uvicorn_options(self.limits)
        )
        mask_logger("uvicorn.access")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="batchnb-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise LocalServerError("the embedded server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and remove the temporary database (if it made one)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None
        self._server = None
        self.port = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def credentials(self, api_key: str | None = None) -> Mapping[str, str]:
        """Client keyword arguments (``api_key``, ``token``) for a tenant; keep them out of outputs."""
        if not self.tenants:
            message = "this server has no tenants (tenants=()): a client brings its own credentials"
            raise BatchValidationError([Problem("tenants", message)])
        key = api_key or self.tenants[0]
        if key not in self._credentials:
            raise BatchValidationError(
                [
                    Problem(
                        "api_key",
                        f"{key!r} is not a tenant of this server (it has {', '.join(map(repr, self.tenants))})",
                    )
                ]
            )
        return {"api_key": key, "token": self._credentials[key]}

    @property
    def client(self) -> Client:
        """A :class:`Client` authenticated as the first tenant."""
        return self.client_for(self.tenants[0] if self.tenants else "")

    def client_for(self, api_key: str, **options: Unpack[ClientOptions]) -> Client:
        """A :class:`Client` authenticated as tenant ``api_key``."""
        tenant = self.credentials(api_key)
        return Client(self.url, api_key=tenant["api_key"], token=tenant["token"], **self._options_for(options))

    def async_client(self, api_key: str | None = None, **options: Unpack[ClientOptions]) -> AsyncClient:
        """An :class:`AsyncClient` authenticated as a tenant (the first by default)."""
        tenant = self.credentials(api_key)
        return AsyncClient(self.url, api_key=tenant["api_key"], token=tenant["token"], **self._options_for(options))

    def _options_for(self, options: ClientOptions) -> ClientOptions:
        """The server's client options, and the call's over them."""
        merged = ClientOptions(**self._client_options)
        merged.update(options)
        return merged
