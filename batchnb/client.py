"""Clients for the Batch API 2.3: :class:`AsyncClient` and its sync twin :class:`Client`.

``submit`` takes what the analyst has — a :class:`~batchnb.Batch`, a list of
operations, or a DataFrame — splits it to the server's limits, sends the
batches concurrently with safe retries, and gives back what they put in: a
Batch gives a list of :class:`~batchnb.Response`, anything else a DataFrame
aligned to its rows.

A client holds configuration and credentials only: each submit keeps its
own state, so concurrent submits on one client never mix.

The sync :class:`Client` works everywhere, a Jupyter cell included (which
already runs an event loop): each call runs the async twin to completion.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import ssl
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    TypeAlias,
    TypedDict,
    Unpack,
    cast,
    overload,
)

import httpx

from . import _json, _rules
from ._connect import Connection, mask_url
from ._dispatch import HTTPDispatcher, ResponseTooLarge, UnreadableResponse, read_bounded
from ._exceptions import BatchValidationError, Problem, TransportError, http_error
from ._ratelimit import PacedDispatcher, Throttle, parse_rate
from ._secrets import mask_headers, mask_logger, scrub
from ._senders import MAX_ANSWER_BYTES, BatchEndpoint, InProcessEngine, Sender, Trace, deadline, retry_after
from ._submission import Submission, with_values
from ._submission import SubmitOptions as _Settings  # the submit's own settings, made from the arguments
from ._sync import run_sync
from .auth import as_auth, auth_problem, describe
from .model import BATCH_PATH, Batch, Operation, Response
from .plan import Plan

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AsyncClient", "Client", "ClientOptions", "SubmitOptions"]

DEFAULT_LIMITS = {"maxRequests": _rules.DEFAULT_MAX_REQUESTS, "maxDepth": _rules.DEFAULT_MAX_DEPTH}

Body = Sequence[Hashable] | Mapping[str, Hashable] | Callable[[dict[str, Any]], Any] | str | Literal[False] | None
#: what ``submit`` takes: a Batch (its responses come back), or operations, or a frame of them (a frame comes back).
Work: TypeAlias = "Batch | pd.DataFrame | Iterable[Operation | Mapping[str, Any]]"
Verify: TypeAlias = "bool | str | os.PathLike[str] | ssl.SSLContext"
Cert: TypeAlias = "str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]]"


class ClientOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Client` and :class:`AsyncClient` but the credentials, for a checker.

    >>> options: ClientOptions = {"concurrency": 8, "timeout": 120.0}
    >>> Client("https://api.example", token="t", **options).concurrency
    8

    :class:`~batchnb.LocalServer` takes them for the clients it makes (each
    with a tenant's credentials).
    """

    headers: Mapping[str, str] | None
    credentials_in: Literal["header", "query"]
    auth: httpx.Auth | Callable[[], Mapping[str, str]] | None
    timeout: float
    mode: Literal["batch", "direct"]
    concurrency: int
    retries: int
    retry_for: float
    max_requests: int | None
    max_depth: int | None
    backoff: float
    max_backoff: float
    max_answer_bytes: int
    transport: httpx.AsyncBaseTransport | None
    verify: Verify
    cert: Cert | None
    proxy: str | httpx.Proxy | None
    trust_env: bool
    http2: bool
    event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None


class SubmitOptions(TypedDict, total=False):
    """The keyword arguments of ``submit`` and ``plan`` (both twins) but ``dry_run``, for a checker.

    >>> options: SubmitOptions = {"method": "POST", "path": "/api/2.1/scheduling/companies", "body": ["name"]}
    >>> sorted(options)
    ['body', 'method', 'path']

    :meth:`AsyncClient.submit` says what each one does.
    """

    method: str | None
    path: str | None
    body: Body
    name: str | Literal[False] | None
    headers: str | Mapping[str, str] | Literal[False] | None
    parent: str | Literal[False] | None
    nulls: Literal["omit", "null"]
    journal: str | None
    resume: bool
    progress: bool | None
    concurrency: int | None
    retries: int | None
    retry_operations: bool
    rate: float | str | None
    batch_rate: float | None
    retry_for: float | None
    bodies: Literal["parsed", "json", "none"]
    known: Any
    idempotency: bool | Literal["auto"]
    parallel: int


def _argument_problems(
    base_url: Any,
    credentials_in: str,
    mode: str,
    api_key: str | None,
    token: str | None,
    auth: Any,
    headers: Mapping[str, str] | None,
) -> list[Problem]:
    problems = []
    url = base_url if isinstance(base_url, str) else ""
    scheme, sep, rest = url.partition("://")
    if not isinstance(base_url, str) or not url.strip():
        problems.append(Problem("base_url", "is required: the server's address, such as 'http://127.0.0.1:8000'"))
    elif not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        shown = mask_url(url) if sep else mask_url(f"http://{url}").removeprefix("http://")
        guess = f"'http://{shown}'" if not sep else "'http://…' or 'https://…'"
        problems.append(Problem("base_url", f"{shown!r} is not an http(s) URL: write {guess}"))
    if api_key and not token:
        problems.append(Problem("token", "api_key was given without a token: the server needs both"))
    if credentials_in not in ("header", "query"):
        problems.append(Problem("credentials_in", f"must be 'header' or 'query', not {credentials_in!r}"))
    elif credentials_in == "query" and not (api_key and token):
        problems.append(Problem("credentials_in", "'query' needs both api_key and token"))
    wrong = auth_problem(auth)
    if wrong is not None:
        problems.append(Problem("auth", wrong))
    elif auth is not None and (token or api_key):
        problems.append(Problem("auth", "was given with token/api_key: the auth flow sets the credentials; pass one"))
    elif auth is not None and any(k.lower() == "authorization" for k in headers or {}):
        problems.append(Problem("auth", "was given with an Authorization header in headers=; pass one"))
    if mode not in ("batch", "direct"):
        problems.append(Problem("mode", f"must be 'batch' or 'direct', not {mode!r}"))
    return problems


def _number_problem(
    name: str, value: Any, what: str, *, least: float, above: bool = False, whole: bool = False
) -> Problem | None:
    """``value`` judged as the number ``name`` must be (None passes: the default applies), or the problem that names it.

    >>> _number_problem("concurrency", 0, "a whole number, 1 or more", least=1, whole=True).message
    'must be a whole number, 1 or more, not 0'
    """
    if value is None:
        return None
    kind = numbers.Integral if whole else numbers.Real
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)
        or value < least
        or (above and value == least)
    ):
        return Problem(name, f"must be {what}, not {value!r}")
    return None


def _setting_problems(**given: Any) -> list[Problem]:
    """The numeric settings of a client or a submit, each judged by its own rule (those not given pass)."""
    rules_of: dict[str, dict[str, Any]] = {
        "timeout": dict(what="a positive number of seconds", least=0, above=True),
        "concurrency": dict(what="a whole number, 1 or more", least=1, whole=True),
        "retries": dict(what="a whole number, 0 or more", least=0, whole=True),
        "retry_for": dict(what="a number of seconds, 0 or more", least=0),
        "backoff": dict(what="a number of seconds, 0 or more", least=0),
        "max_backoff": dict(what="a number of seconds, 0 or more", least=0),
        "max_requests": dict(what="a whole number, 1 or more", least=1, whole=True),
        "max_depth": dict(what="a whole number, 1 or more", least=1, whole=True),
        "batch_rate": dict(what="a positive number of batches per second", least=0, above=True),
        "max_answer_bytes": dict(what="a whole number of bytes, 1 or more", least=1, whole=True),
    }
    found = (_number_problem(name, value, **rules_of[name]) for name, value in given.items())
    return [p for p in found if p is not None]


def _batch_rate_problem(batch_rate: Any) -> Problem | None:
    return next(iter(_setting_problems(batch_rate=batch_rate)), None)
    if (
        isinstance(batch_rate, bool)
        or not isinstance(batch_rate, (int, float))
        or not math.isfinite(batch_rate)
        or batch_rate <= 0
    ):
        return Problem("batch_rate", f"must be a positive number of batches per second, not {batch_rate!r}")
    return None


#: the most a limits answer may take once decoded (a dozen small fields; a gzip bomb is refused).
MAX_LIMITS_BYTES = 64 * 1024
#: the announced counts the client acts on: each a whole number from 1 up to the largest JSON carries exactly.
_ANNOUNCED_COUNTS = ("maxRequests", "maxDepth", "maxParallel")
_MOST_COUNT = 2**53 - 1


def _limits_problem(announced: Any) -> str | None:
    """What makes a server's announced limits unusable, naming the field, or None.

    >>> _limits_problem({"maxRequests": 50, "maxDepth": 4}) is None
    True
    >>> _limits_problem({"maxRequests": "abc"})
    'maxRequests is "abc", not a whole number from 1 to 9007199254740991'
    >>> _limits_problem([1, 2])
    'its answer is a list, not a JSON object'
    """
    if not isinstance(announced, dict):
        return f"its answer is {_json_kind(announced)}, not a JSON object"
    for name in _ANNOUNCED_COUNTS:
        if name not in announced:
            continue
        value = announced[name]
        whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        if isinstance(value, bool) or not whole or not 1 <= value <= _MOST_COUNT:
            return f"{name} is {_shown(value)}, not a whole number from 1 to {_MOST_COUNT}"
    if "idempotency" in announced and not isinstance(announced["idempotency"], bool):
        return f"idempotency is {_shown(announced['idempotency'])}, not true or false"
    return None


def _shown(value: Any) -> str:
    """A value as the server wrote it (JSON), cut short."""
    try:
        text = _json.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}…"


def _json_kind(value: Any) -> str:
    kinds = {type(None): "null", bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), "a number")


def _unusable_limits(url: str, problem: str) -> TransportError:
    return TransportError(
        f"the limits the server announces (GET {mask_url(url)}) cannot be used: {problem}", sent=False, transient=False
    )


class AsyncClient:
    """Async client for a Batch API 2.3 server.

    >>> async def add_companies(df):
    ...     async with AsyncClient(server.url, **server.credentials()) as client:
    ...         return await client.submit(df, path="/api/2.1/scheduling/companies", method="POST", body=["name"])
    >>> asyncio.run(add_companies(df)).status.tolist()    # in a notebook: await add_companies(df)
    [201, 201, 201]

    Credentials: ``token`` is sent as ``Authorization: Bearer``; with
    ``credentials_in="query"`` the ``apiKey`` and ``token`` query parameters
    are used instead. Or ``auth``, an ``httpx.Auth`` (such as
    :class:`batchnb.auth.ClientCredentials`, OAuth2 tokens that refresh
    themselves) or a callable that returns headers for each request: it
    signs every batch (``mode="direct"``: every operation that has no
    ``Authorization`` of its own). Operations answered 401 inside a batch
    are sent again once after the auth flow was told (``invalidate``); a run
    whose operations are still refused stops sending and raises
    :class:`~batchnb.AuthenticationError`. ``headers`` are added to every batch. ``mode="direct"`` runs the
    batches here, sending each operation to ``base_url`` itself (for an API
    with no batch endpoint). ``max_requests``/``max_depth`` override the
    limits the server announces. ``backoff`` is the first wait before a retry
    that has no ``Retry-After`` (doubling, with jitter, up to ``max_backoff``).

    ``timeout`` is the most seconds one HTTP exchange may take, from
    connecting to the last byte of its answer: a batch (``mode="batch"``),
    an operation (``mode="direct"``), the limits. A server that sends its
    answer a byte at a time is cut off then, however steadily it sends; the
    batch's outcome is then unknown (and it is sent again only if that is
    safe, as after any lost answer). ``max_answer_bytes`` is the most a
    batch's answer may take once decoded (32 MiB by default: twice what a
    server answers at most by default); a larger one is not read, and its
    rows say so. Bodies stay JSON text until a cell is read.

    Connections follow httpx: ``verify`` (True, False, a CA file or
    directory, or an ``ssl.SSLContext``), ``cert`` (a client certificate: a
    file, or a ``(cert, key)`` pair), ``proxy`` (a URL or ``httpx.Proxy``),
    ``trust_env`` (read ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, as httpx does),
    ``http2`` and ``event_hooks`` (``{"request": [f], "response": [g]}``,
    plain or async functions). They apply to every request, whichever
    ``mode``, and are checked here: a CA file that does not exist is a
    :class:`~batchnb.BatchValidationError` before anything is sent. A
    ``transport`` given wins over them.

    >>> AsyncClient("https://api.example", verify="corp-ca.pem")
    Traceback (most recent call last):
    ...
    batchnb.BatchValidationError: 1 problem in the input, nothing was sent:
      - verify: 'corp-ca.pem' does not exist: give the CA bundle's file (PEM) or a directory of CA files
    >>> AsyncClient("https://api.example", proxy="http://proxy.corp:3128")
    AsyncClient('https://api.example', no credentials, mode='batch', proxy='http://proxy.corp:3128')

    What was not run because the API answered 429 or 503 (a whole batch, or
    operations inside one) is sent again after what the answer says
    (``Retry-After``, the ``RateLimit`` or ``X-RateLimit-*`` headers; never
    more than ``max_backoff`` at a time) until ``retry_for`` seconds have
    passed; ``retries`` counts the resends of a batch that failed to be
    delivered.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        credentials_in: Literal["header", "query"] = "header",
        auth: httpx.Auth | Callable[[], Mapping[str, str]] | None = None,
        timeout: float = 60.0,
        mode: Literal["batch", "direct"] = "batch",
        concurrency: int = 4,
        retries: int = 3,
        retry_for: float = 300.0,
        max_requests: int | None = None,
        max_depth: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Verify = True,
        cert: Cert | None = None,
        proxy: str | httpx.Proxy | None = None,
        trust_env: bool = True,
        http2: bool = False,
        event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None = None,
    ) -> None:
        connection = Connection(
            verify=verify, cert=cert, proxy=proxy, trust_env=trust_env, http2=http2, event_hooks=event_hooks
        )
        problems = _argument_problems(base_url, credentials_in, mode, api_key, token, auth, headers)
        problems += connection.problems()
        problems += _setting_problems(
            timeout=timeout,
            concurrency=concurrency,
            retries=retries,
            retry_for=retry_for,
            backoff=backoff,
            max_backoff=max_backoff,
            max_requests=max_requests,
            max_depth=max_depth,
            max_answer_bytes=max_answer_bytes,
        )
        if problems:
            raise BatchValidationError(problems)
        # httpx logs every request's URL: query credentials, or a password in the base URL, would be in it.
        mask_logger("httpx")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._token = token
        self._credentials_in = credentials_in
        self._auth_given = auth
        self._auth = as_auth(auth)
        self._extra_headers = dict(headers or {})
        self.timeout = timeout
        self.mode: Literal["batch", "direct"] = mode
        self.concurrency = concurrency
        self.retries = retries
        self.retry_for = retry_for
        self._max_requests = max_requests
        self._max_depth = max_depth
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_answer_bytes = max_answer_bytes
        self._transport = transport
        self.connection = connection
        self._http: httpx.AsyncClient | None = None
        self._limits: dict[str, Any] | None = None

    def __repr__(self) -> str:
        if self._auth is not None:
            auth = f"auth={describe(self._auth_given)}"
        elif not self._token:
            auth = "no credentials"
        else:
            auth = "token ***" if self._credentials_in == "header" else "apiKey/token ***"
        extra = f", headers={mask_headers(self._extra_headers)}" if self._extra_headers else ""
        settings = "".join(f", {k}={v}" for k, v in self.connection.settings().items())
        return f"{type(self).__name__}({mask_url(self.base_url)!r}, {auth}{extra}, mode={self.mode!r}{settings})"

    # ------------------------------------------------------------ plumbing

    def _credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        headers = dict(self._extra_headers)
        query: dict[str, str] = {}
        if self._token and self._credentials_in == "header":
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._token:
            query = {"apiKey": self._api_key or "", "token": self._token}
        return headers, query

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = self.connection.client(timeout=self.timeout, transport=self._transport)
        return self._http

    def _sender(
        self,
        parallel: int = 1,
        limits: Mapping[str, Any] | None = None,
        throttle: Throttle | None = None,
        retry: bool = False,
        retry_for: float | None = None,
    ) -> Sender:
        headers, query = self._credentials()
        if self.mode == "direct":
            # The engine runs here: as many at once as asked.
            dispatch: Any = HTTPDispatcher(self._client(), self.base_url, connection=self.connection, auth=self._auth)
            timeout = self.timeout
            if throttle is not None:
                # Each operation paced, and sent again right here when the API answers 429 or 503:
                # what depends on it simply waits. The dispatcher bounds each attempt by the timeout.
                dispatch = PacedDispatcher(
                    dispatch,
                    throttle,
                    retry=retry,
                    retry_for=self.retry_for if retry_for is None else retry_for,
                    backoff=self.backoff,
                    max_backoff=self.max_backoff,
                    timeout=self.timeout,
                )
                timeout = math.inf
            return InProcessEngine(
                dispatch, headers, query, timeout, parallel=parallel, max_answer_bytes=self.max_answer_bytes
            )
        return BatchEndpoint(
            self._client(),
            self.base_url,
            headers,
            query,
            parallel=self._parallel(parallel, limits),
            connection=self.connection,
            auth=self._auth,
            timeout=self.timeout,
            max_answer_bytes=self.max_answer_bytes,
        )

    def _parallel(self, parallel: int, limits: Mapping[str, Any] | None) -> int:
        """How many of a batch's operations will run at once, given what the server says it allows."""
        if self.mode == "direct" or limits is None:
            return parallel  # direct: the engine runs here, as many at once as asked
        # Held to what the server says it runs at once; one that says nothing runs them one at a time.
        return max(1, min(parallel, int(limits.get("maxParallel") or 1)))

    async def aclose(self) -> None:
        """Close the connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _scrub(self, text: str) -> str:
        return scrub(text, [s for s in (self._token, self._api_key) if s])

    async def limits(self) -> dict[str, Any]:
        """The server's limits (``GET /api/2.3/batch``), with this client's overrides.

        >>> limits = client.limits()     # AsyncClient: await client.limits()
        >>> limits["version"], limits["maxRequests"], limits["maxDepth"]
        ('2.3', 50, 4)

        A server that does not answer 200 (an older one, without the
        extension) or cannot be reached gets the spec's defaults; one whose
        answer cannot be used (not a JSON object, a ``maxRequests`` that is
        no whole number from 1 up, …) raises :class:`~batchnb.TransportError`
        naming the field and the server, before anything is sent.
        """
        if self._limits is None:
            limits = dict(DEFAULT_LIMITS)
            if self.mode == "batch" and (self._max_requests is None or self._max_depth is None):
                limits.update(await self._announced())
            if self._max_requests is not None:
                limits["maxRequests"] = self._max_requests
            if self._max_depth is not None:
                limits["maxDepth"] = self._max_depth
            self._limits = limits
        return self._limits

    async def _announced(self) -> dict[str, Any]:
        """What ``GET /api/2.3/batch`` announces, checked; nothing from a server that does not answer 200."""
        headers, query = self._credentials()
        url = self.base_url + BATCH_PATH
        http = self._client()
        trace = Trace()
        request = http.build_request("GET", url, headers=headers, params=query or None, extensions={"trace": trace})
        try:
            async with deadline(self.timeout, trace, f"GET {mask_url(url)}"):
                r = await http.send(request, stream=True, auth=self._auth)
                try:
                    if r.status_code != 200:
                        return {}  # an older server without the extension: the spec's defaults
                    raw = await read_bounded(r, MAX_LIMITS_BYTES)
                finally:
                    await r.aclose()
        except (httpx.HTTPError, TransportError):
            return {}  # not reached: the batches say why, each with its rows
        except (ResponseTooLarge, UnreadableResponse) as exc:
            raise _unusable_limits(url, f"its answer cannot be read ({exc})") from None
        try:
            announced = _json.loads(raw)
        except (ValueError, RecursionError):
            raise _unusable_limits(url, "its answer is not JSON") from None
        problem = _limits_problem(announced)
        if problem is not None:
            raise _unusable_limits(url, problem)
        return {k: int(v) if k in _ANNOUNCED_COUNTS else v for k, v in announced.items()}

    # ------------------------------------------------------------ sending

    async def send(self, batch: Batch) -> list[Response]:
        """Send ``batch`` as exactly one HTTP call and return its responses.

        >>> client.send(Batch([Operation("GET", "/api/2.1/scheduling/companies")]))   # AsyncClient: await client.send(...)
        [<Response GET /api/2.1/scheduling/companies → 200 ...ms>]

        Batch-level errors raise typed exceptions (:class:`AuthenticationError`,
        :class:`PayloadTooLargeError`, …) carrying the server's message and pointers.
        """
        reply = await self._sender(batch.parallel)(batch.requests)
        if reply.status != 200:
            raise http_error(reply.status, reply.body, retry_after(reply.headers))
        if reply.responses is None:
            raise TransportError("the server's answer is not a batch response", sent=True)
        return with_values(reply.responses)

    # ------------------------------------------------------------ submit

    @overload
    async def submit(  # type: ignore[overload-overlap]  # a Batch is iterable too: it is matched here first
        self, work: Batch, *, dry_run: Literal[False] = False, **options: Unpack[SubmitOptions]
    ) -> list[Response]: ...
    @overload
    async def submit(
        self,
        work: pd.DataFrame | Iterable[Operation | Mapping[str, Any]],
        *,
        dry_run: Literal[False] = False,
        **options: Unpack[SubmitOptions],
    ) -> pd.DataFrame: ...
    @overload
    async def submit(self, work: Work, *, dry_run: Literal[True], **options: Unpack[SubmitOptions]) -> Plan: ...

    async def submit(
        self,
        work: Work,
        *,
        method: str | None = None,
        path: str | None = None,
        body: Body = None,
        name: str | Literal[False] | None = None,
        headers: str | Mapping[str, str] | Literal[False] | None = None,
        parent: str | Literal[False] | None = None,
        nulls: Literal["omit", "null"] = "omit",
        dry_run: bool = False,
        journal: str | None = None,
        resume: bool = False,
        progress: bool | None = None,
        concurrency: int | None = None,
        retries: int | None = None,
        retry_operations: bool = True,
        rate: float | str | None = None,
        batch_rate: float | None = None,
        retry_for: float | None = None,
        bodies: Literal["parsed", "json", "none"] = "parsed",
        known: Any = None,
        idempotency: bool | Literal["auto"] = "auto",
        parallel: int = 1,
    ) -> list[Response] | pd.DataFrame | Plan:
        """Run any number of operations; what comes back matches what went in.

        >>> result = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
        >>> df.join(result[["status", "error"]])      # AsyncClient: result = await client.submit(...)
                       name  status error
        0  Riverside Clinic     201   NaN
        1    Hilltop Dental     201   NaN
        2    Harbour Physio     201   NaN

        ``work`` is a Batch (→ list of Response), a list of operations (→ DataFrame)
        or a DataFrame (→ DataFrame with the input's index).

        For a DataFrame, ``method``, ``path``, ``body``, ``name``, ``headers``,
        ``parent`` and ``nulls`` say how its rows become operations, as in
        :func:`batchnb.from_frame`.

        ``dry_run`` validates and returns the :class:`~batchnb.Plan` without
        sending anything. ``journal`` appends each batch's outcome to a JSON
        Lines file; with ``resume`` only rows with no final outcome there are
        sent. ``progress`` shows a bar (default: when there is more than one
        batch). ``concurrency`` and ``retries`` override the client's.
        ``retry_operations`` (on by default) sends operations answered 429 or
        503, which did not run, again after what the answer says, until
        ``retry_for`` seconds (the client's by default) have passed.

        ``rate`` is the most requests (operations) per second, as APIs state
        their limits: ``"50/s"``, ``"3000/min"``, ``"100000/h"`` or a number;
        a batch of 50 operations spends 50. With no ``rate`` nothing is
        slowed down until the API answers 429; from then on operations are
        paced at what the API lets through, cut on a later 429 (by half at
        most, once per round trip) and raised step by step after successes, so that a run finishes close to the
        API's limit. ``batch_rate`` caps batches per second. ``bodies`` says how
        response bodies are kept: ``"parsed"`` (the default: each body read as
        Python objects, ``result.body[i]["id"]``, from a ``json`` column that
        holds compact JSON text and parses a cell when it is read, about five
        times less memory than the objects), ``"json"`` (the text itself, a
        ``str`` per row; :func:`batchnb.expand` reads it all the same) or
        ``"none"`` (only for rows that are not ok, where they explain the error).

        ``known`` is an earlier result (its frame, or its responses): references
        to the names it holds are filled in from it, so that fixing three rows
        of three thousand and sending them again is one call. A dry run shows
        which references came from it (:attr:`Plan.from_known`).

        ``idempotency`` gives every POST and PATCH an ``Idempotency-Key``
        (``"auto"``: when the server says the API honours keys; ``True``:
        always; ``False``: never). With keys, a batch whose outcome is unknown
        is sent again with the same keys, and the API answers a repeat with
        its first answer: each row runs exactly once (the ``replayed`` column
        says which rows were answered that way). A key set by the user is
        never replaced.

        ``parallel`` lets the server run that many of a batch's operations at
        once (up to the ``maxParallel`` it announces; one at a time, in order,
        by default). An operation still starts only after its parent and every
        operation it references, and answers keep their places; for an API
        far away (100 ms a request), this is what makes a batch of 50 take
        less than 5 seconds.
        """
        frame_options = {
            "method": method,
            "path": path,
            "body": body,
            "name": name,
            "headers": headers,
            "parent": parent,
            "nulls": nulls,
        }
        # Checked before anything is sent (limits() asks the server).
        throttle = Throttle(parse_rate(rate, "rate"))
        problems = _setting_problems(
            batch_rate=batch_rate, retry_for=retry_for, concurrency=concurrency, retries=retries
        )
        if problems:
            raise BatchValidationError(problems)
        retry_for = self.retry_for if retry_for is None else float(retry_for)
        direct = self.mode == "direct"
        options = _Settings(
            concurrency=self.concurrency if concurrency is None else concurrency,
            retries=self.retries if retries is None else retries,
            retry_operations=retry_operations,
            batch_rate=batch_rate,
            retry_for=retry_for,
            # In direct mode the dispatcher paces each operation (and retries it) instead.
            throttle=None if direct else throttle,
            journal=journal,
            resume=resume,
            progress=progress,
            bodies=bodies,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            idempotency=idempotency,
        )
        limits = await self.limits()
        problem = _rules.parallel_problem(parallel)
        if problem:
            raise BatchValidationError([Problem("parallel", problem)])
        # Batches are filled to a multiple of what runs at once (48 of 50 with parallel=16).
        options = dataclasses.replace(options, parallel=self._parallel(parallel, limits))
        sender = self._sender(
            parallel,
            limits,
            throttle=throttle if direct else None,
            retry=retry_operations,
            retry_for=retry_for,
        )
        submission = Submission(work, frame_options, limits, sender, options, stream=not dry_run, known=known)
        if dry_run:
            return submission.plan
        result: list[Response] | pd.DataFrame = await submission.run()
        return result

    async def plan(self, work: Work, **options: Unpack[SubmitOptions]) -> Plan:
        """How :meth:`submit` would run ``work``, with the same arguments: nothing is sent.

        >>> plan = client.plan(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
        >>> plan.calls, plan.to_frame()["operations"].tolist()   # AsyncClient: plan = await client.plan(...)
        (1, [3])

        Every problem of the input is raised here, as ``submit`` would raise
        it; the server is asked only for its limits. ``submit(..., dry_run=True)``
        is the same call.
        """
        return await self.submit(work, dry_run=True, **options)


class Client:
    """The sync twin of :class:`AsyncClient`: same arguments, same methods, no ``await``.

    >>> client = Client(server.url, **server.credentials())
    >>> result = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
    >>> result[["status", "ok"]].value_counts().to_dict()
    {(201, True): 3}

    Works in scripts and inside a running Jupyter kernel alike. Ctrl-C during
    ``submit`` raises :class:`SubmitInterrupted` whose ``partial`` keeps what finished.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        credentials_in: Literal["header", "query"] = "header",
        auth: httpx.Auth | Callable[[], Mapping[str, str]] | None = None,
        timeout: float = 60.0,
        mode: Literal["batch", "direct"] = "batch",
        concurrency: int = 4,
        retries: int = 3,
        retry_for: float = 300.0,
        max_requests: int | None = None,
        max_depth: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: Verify = True,
        cert: Cert | None = None,
        proxy: str | httpx.Proxy | None = None,
        trust_env: bool = True,
        http2: bool = False,
        event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None = None,
    ) -> None:
        self._api_key, self._token = api_key, token
        self._options = ClientOptions(
            headers=headers,
            credentials_in=credentials_in,
            auth=auth,
            timeout=timeout,
            mode=mode,
            concurrency=concurrency,
            retries=retries,
            retry_for=retry_for,
            max_requests=max_requests,
            max_depth=max_depth,
            backoff=backoff,
            max_backoff=max_backoff,
            max_answer_bytes=max_answer_bytes,
            transport=transport,
            verify=verify,
            cert=cert,
            proxy=proxy,
            trust_env=trust_env,
            http2=http2,
            event_hooks=event_hooks,
        )
        self._async = AsyncClient(base_url, api_key=api_key, token=token, **self._options)  # checks them once

    # Read-only: each call builds its AsyncClient from the options given here, so a value set
    # on this object would be shown but not used.
    @property
    def base_url(self) -> str:
        """The API's address, without a trailing slash.

        >>> Client("https://api.example/", mode="direct").base_url
        'https://api.example'
        """
        return self._async.base_url

    @property
    def mode(self) -> Literal["batch", "direct"]:
        """``"batch"`` (batches to the API's batch endpoint) or ``"direct"`` (each operation sent here).

        >>> Client("https://api.example", mode="direct").mode
        'direct'
        """
        return self._async.mode

    @property
    def timeout(self) -> float:
        """Seconds one HTTP exchange may take, from connecting to the last byte of its answer."""
        return self._async.timeout

    @property
    def max_answer_bytes(self) -> int:
        """The most bytes a batch's answer may take once decoded.

        >>> Client("https://api.example", max_answer_bytes=1 << 20).max_answer_bytes
        1048576
        """
        return self._async.max_answer_bytes

    @property
    def concurrency(self) -> int:
        """How many batches are in flight at once."""
        return self._async.concurrency

    @property
    def retries(self) -> int:
        """How many times a batch that failed to be delivered is sent again."""
        return self._async.retries

    @property
    def retry_for(self) -> float:
        """Seconds during which what a 429 or 503 held back is sent again."""
        return self._async.retry_for

    @property
    def backoff(self) -> float:
        """The first wait (seconds) before a retry that has no ``Retry-After``."""
        return self._async.backoff

    @property
    def max_backoff(self) -> float:
        """The longest wait (seconds) between two retries."""
        return self._async.max_backoff

    @property
    def connection(self) -> Connection:
        """The connection settings (verify, cert, proxy, …) every request of this client uses."""
        return self._async.connection

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    def _call(self, attr: str, /, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            # An httpx.AsyncClient belongs to the loop that made it: one per call.
            async with AsyncClient(self.base_url, api_key=self._api_key, token=self._token, **self._options) as client:
                client._limits = self._async._limits
                try:
                    return await getattr(client, attr)(*args, **kwargs)
                finally:
                    self._async._limits = client._limits

        return run_sync(go)

    def limits(self) -> dict[str, Any]:
        """The server's limits; see :meth:`AsyncClient.limits`."""
        return cast("dict[str, Any]", self._call("limits"))

    def send(self, batch: Batch) -> list[Response]:
        """One batch, one HTTP call; see :meth:`AsyncClient.send`."""
        return cast("list[Response]", self._call("send", batch))

    @overload
    def submit(  # type: ignore[overload-overlap]  # a Batch is iterable too: it is matched here first
        self, work: Batch, *, dry_run: Literal[False] = False, **options: Unpack[SubmitOptions]
    ) -> list[Response]: ...
    @overload
    def submit(
        self,
        work: pd.DataFrame | Iterable[Operation | Mapping[str, Any]],
        *,
        dry_run: Literal[False] = False,
        **options: Unpack[SubmitOptions],
    ) -> pd.DataFrame: ...
    @overload
    def submit(self, work: Work, *, dry_run: Literal[True], **options: Unpack[SubmitOptions]) -> Plan: ...

    def submit(
        self,
        work: Work,
        *,
        method: str | None = None,
        path: str | None = None,
        body: Body = None,
        name: str | Literal[False] | None = None,
        headers: str | Mapping[str, str] | Literal[False] | None = None,
        parent: str | Literal[False] | None = None,
        nulls: Literal["omit", "null"] = "omit",
        dry_run: bool = False,
        journal: str | None = None,
        resume: bool = False,
        progress: bool | None = None,
        concurrency: int | None = None,
        retries: int | None = None,
        retry_operations: bool = True,
        rate: float | str | None = None,
        batch_rate: float | None = None,
        retry_for: float | None = None,
        bodies: Literal["parsed", "json", "none"] = "parsed",
        known: Any = None,
        idempotency: bool | Literal["auto"] = "auto",
        parallel: int = 1,
    ) -> list[Response] | pd.DataFrame | Plan:
        """Run any number of operations; see :meth:`AsyncClient.submit` for every argument.

        >>> result = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
        >>> result.status.tolist()
        [201, 201, 201]
        """
        return cast(
            "list[Response] | pd.DataFrame | Plan",
            self._call(
                "submit",
                work,
                method=method,
                path=path,
                body=body,
                name=name,
                headers=headers,
                parent=parent,
                nulls=nulls,
                dry_run=dry_run,
                journal=journal,
                resume=resume,
                progress=progress,
                concurrency=concurrency,
                retries=retries,
                retry_operations=retry_operations,
                rate=rate,
                batch_rate=batch_rate,
                retry_for=retry_for,
                bodies=bodies,
                known=known,
                idempotency=idempotency,
                parallel=parallel,
            ),
        )

    def plan(self, work: Work, **options: Unpack[SubmitOptions]) -> Plan:
        """How :meth:`submit` would run ``work``: nothing is sent; see :meth:`AsyncClient.plan`.

        >>> plan = client.plan(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])
        >>> plan
        Plan(3 operations in 1 HTTP call of at most 50; 0 references filled in by the client across batches)
        """
        return self.submit(work, dry_run=True, **options)

    def close(self) -> None:
        """Nothing stays open between calls; kept for symmetry with :class:`AsyncClient`."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
