"""What ``batchnb serve`` runs: its settings, and the app built from them, in one process or several.

With ``--workers N`` uvicorn starts N processes, each of which builds the app
from the settings the command left in its environment
(``BATCHNB_SERVE_SETTINGS``, ``BATCHNB_CREDENTIALS``): an application factory,
:func:`app_from_environment`. The demo store stays one SQLite file in WAL
mode; a gateway keeps no state between batches, so any number of processes
(or hosts behind a load balancer) can serve it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import BatchValidationError, Problem

__all__ = ["ServeSettings", "app_from_environment", "build_app", "open_files_for"]

SETTINGS_VARIABLE = "BATCHNB_SERVE_SETTINGS"
#: api key -> token, as JSON: every tenant the server accepts (the demo API's tenants).
CREDENTIALS_VARIABLE = "BATCHNB_CREDENTIALS"


@dataclass
class ServeSettings:
    """Everything but credentials that decides what ``batchnb serve`` runs.

    >>> ServeSettings(upstream="https://api.example", upstream_cacert="ca.pem").connection()
    Connection(verify='ca.pem')
    """

    upstream: str | None = None
    upstream_idempotency: bool = False
    db: str = "batchnb-demo.sqlite3"
    idempotency_ttl: float = 24 * 3600.0
    limits: dict[str, Any] = field(default_factory=dict)
    #: how the upstream is reached: a CA file or directory, a client certificate and its key
    #: (paths), a proxy URL (never one holding a password: the settings travel in the environment).
    upstream_cacert: str | None = None
    upstream_cert: str | None = None
    upstream_key: str | None = None
    upstream_proxy: str | None = None

    def connection(self) -> Any:
        """How the upstream is reached (the environment read too, as httpx reads it)."""
        from ._connect import Connection

        cert: Any = self.upstream_cert
        if self.upstream_cert and self.upstream_key:
            cert = (self.upstream_cert, self.upstream_key)
        return Connection(verify=self.upstream_cacert or True, cert=cert, proxy=self.upstream_proxy)


#: the command line's names for the connection settings, to say which option is wrong.
CONNECTION_OPTIONS = {
    "verify": "--upstream-cacert",
    "cert": "--upstream-cert",
    "key": "--upstream-key",
    "proxy": "--upstream-proxy",
}


def build_app(settings: ServeSettings, credentials: Mapping[str, str] | None) -> Any:
    """The batch app in front of the upstream, or of the demo API on its SQLite file."""
    from ._secrets import mask_logger
    from .server import Limits, create_app

    mask_logger("uvicorn.access")
    limits = Limits(**settings.limits)
    if settings.upstream is not None:
        connection = settings.connection()
        connection.check(CONNECTION_OPTIONS)
        app = create_app(
            upstream=settings.upstream,
            credentials=credentials,
            limits=limits,
            idempotency=settings.upstream_idempotency,
            connection=connection,
        )
    else:
        from .demo import create_demo_app

        db = Path(settings.db)
        if not db.parent.is_dir():
            raise BatchValidationError(
                [Problem("--db", f"{settings.db}: the directory {str(db.parent)!r} does not exist")]
            )
        app = create_demo_app(
            db=db, credentials=credentials or {}, limits=limits, idempotency_ttl=settings.idempotency_ttl
        )
    return app


#: files a server process opens besides its connections: the listening socket, SQLite's files, logs, its event loop.
SPARE_FILES = 64


def open_files_for(limits: Any, *, gateway: bool) -> None:
    """Let this process (and the workers it starts) open a file for every connection ``limits`` let it hold.

    A cap above what the process may open would let connections take every
    file and leave none for the next request, or the database. The soft
    limit is raised as far as the hard one allows; past that, the flag is refused.

    >>> open_files_for(bn.Limits(max_connections=10), gateway=False)   # 74 files: within the usual limit
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    upstream = limits.max_parallel * limits.max_concurrent_batches if gateway else 0
    need = limits.max_connections + upstream + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    try:
        if hard != resource.RLIM_INFINITY and need > hard:
            raise ValueError(need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError):
        also = f", {upstream} to the upstream" if upstream else ""
        allowed = f"at most {hard}" if hard != resource.RLIM_INFINITY else "fewer"
        raise BatchValidationError(
            [
                Problem(
                    "--max-connections",
                    f"{limits.max_connections} connections{also} and {SPARE_FILES} other files need {need} open "
                    f"files; this system lets a process open {allowed} (ulimit -Hn): lower --max-connections",
                )
            ]
        ) from None


#: blocks this large or larger are taken from the system and given back the moment they are freed.
RETURNED_BLOCK_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number


def settle_heap() -> None:
    """In the server's own process, just before it serves: keep what exists now out of the cyclic collector's walks,
    and give large blocks back to the system when they are freed.

    Modules and the app live as long as the process; without this, every
    full collection walks them again while batches come and go.

    glibc raises the size from which it maps a block of its own (and unmaps
    it when freed) to the largest block freed so far, up to 32 MiB: after one
    batch's answer of a few megabytes, every later answer, and the buffer of
    each client that is slow to read one, came from the heap and stayed in
    the process once freed. Fixed at :data:`RETURNED_BLOCK_BYTES`, the memory
    of answers nobody read goes back when their connections are dropped.
    """
    gc.collect()
    gc.freeze()
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, RETURNED_BLOCK_BYTES)
    except (OSError, AttributeError):  # not glibc: its own allocator's ways
        pass


#: seconds a thread may hold the interpreter while the event loop's thread waits for it (Python's default: 0.005).
SWITCH_INTERVAL = 0.001


def favour_the_loop() -> None:
    """In the server's own process: hand the interpreter to the event loop's thread within a millisecond.

    Costly references are compiled and filled in on worker threads, in
    pure Python. Each time the loop's thread comes back from the system (a
    socket read, a send) it waits for the interpreter, by default up to
    5 ms: answering one small request takes several such returns, and
    another client's ``GET /api/2.3/batch`` waited 60 ms behind a batch of
    24,000 distinct JSONPaths. The worker threads lose little by switching
    more often.

    >>> import sys
    >>> before = sys.getswitchinterval()
    >>> favour_the_loop(); sys.getswitchinterval()
    0.001
    >>> sys.setswitchinterval(before)
    """
    sys.setswitchinterval(SWITCH_INTERVAL)


def to_environment(settings: ServeSettings, credentials: Mapping[str, str] | None) -> dict[str, str]:
    """The variables that carry the settings to worker processes.

    A proxy password is not among them: a worker reads it from ``HTTPS_PROXY``
    in its environment, as httpx does, or not at all.
    """
    if settings.upstream_proxy and "@" in settings.upstream_proxy.partition("://")[2].split("/")[0]:
        raise BatchValidationError(
            [
                Problem(
                    "--upstream-proxy",
                    "a proxy URL holding a user and password is not handed to --workers processes: "
                    "set HTTPS_PROXY (or HTTP_PROXY) in the environment instead, where each worker reads it",
                )
            ]
        )
    env = {SETTINGS_VARIABLE: json.dumps(asdict(settings))}
    if credentials:
        env[CREDENTIALS_VARIABLE] = json.dumps(dict(credentials))
    return env


def credentials_from_environment() -> dict[str, str] | None:
    """Tenants from ``BATCHNB_CREDENTIALS`` (a JSON object of api key -> token), if set."""
    text = os.environ.get(CREDENTIALS_VARIABLE)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BatchValidationError([Problem(CREDENTIALS_VARIABLE, "must be a JSON object of api keys to tokens")])
    return value


def app_from_environment() -> Any:
    """The application factory each worker process calls (``uvicorn --factory``).

    >>> os.environ["BATCHNB_SERVE_SETTINGS"] = '{"upstream": "https://api.example"}'   # what batchnb serve sets
    >>> type(app_from_environment()).__name__                                          # nothing is reached yet
    'BatchApp'
    >>> del os.environ["BATCHNB_SERVE_SETTINGS"]
    """
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    app = build_app(settings, credentials_from_environment())
    settle_heap()
    favour_the_loop()
    return app
