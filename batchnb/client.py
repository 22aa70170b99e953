"""Clients for the Batch API 2.3: :class:`AsyncClient` and its sync twin :class:`Client`.

``submit`` takes what the analyst has — a :class:`~batchnb.Batch`, a list of
operations, or a DataFrame — splits it to the server's limits, sends the
batches concurrently with safe retries, and gives back what they put in: a
Batch gives a list of :class:`~batchnb.Response`, anything else a DataFrame
aligned to its rows.

The sync :class:`Client` works everywhere, a Jupyter cell included (which
already runs an event loop): each call runs the async twin to completion.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, overload

import httpx
import orjson

from ._exceptions import BatchValidationError, SubmitInterrupted, TransportError, http_error
from ._runner import Runner
from ._secrets import mask_headers, mask_logger
from ._sync import run_sync
from .engine import HTTPDispatcher, execute
from .journal import Journal, row_key
from .model import BATCH_PATH, Batch, Operation, Response, check_names_and_refs
from .plan import Plan, make_plan

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AsyncClient", "Client"]

DEFAULT_LIMITS = {"maxRequests": 50, "maxDepth": 4}


class _Progress:
    """A tqdm bar (a widget in Jupyter, text in a terminal) that also counts failures."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.failed = 0
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="op", desc="batchnb", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **kw: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kw)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class AsyncClient:
    """Async client for a Batch API 2.3 server.

    >>> async with AsyncClient("http://127.0.0.1:8000", token="demo-token") as client:   # doctest: +SKIP
    ...     result = await client.submit(df, path="/api/2.1/scheduling/companies", method="POST", body=["name"])

    Credentials: ``token`` is sent as ``Authorization: Bearer``; with
    ``auth="query"`` the ``apiKey`` and ``token`` query parameters are used
    instead. ``headers`` are added to every batch. ``mode="direct"`` runs the
    batches here, sending each operation to ``base_url`` itself (for an API
    with no batch endpoint). ``max_requests``/``max_depth`` override the
    limits the server announces. ``backoff`` is the first wait before a retry
    that has no ``Retry-After`` (doubling, with jitter, up to ``max_backoff``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: Literal["header", "query"] = "header",
        timeout: float = 60.0,
        mode: Literal["batch", "direct"] = "batch",
        concurrency: int = 4,
        retries: int = 3,
        max_requests: int | None = None,
        max_depth: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if auth not in ("header", "query"):
            raise ValueError("auth must be 'header' or 'query'")
        if auth == "query" and not (api_key and token):
            raise ValueError("auth='query' needs both api_key and token")
        if auth == "query":
            mask_logger("httpx")
        if mode not in ("batch", "direct"):
            raise ValueError("mode must be 'batch' or 'direct'")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._token = token
        self._auth = auth
        self._extra_headers = dict(headers or {})
        self.timeout = timeout
        self.mode = mode
        self.concurrency = concurrency
        self.retries = retries
        self._max_requests = max_requests
        self._max_depth = max_depth
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._limits: dict[str, Any] | None = None
        self._direct_known: dict[str, Response] = {}

    def __repr__(self) -> str:
        auth = "no credentials" if not self._token else ("token ***" if self._auth == "header" else "apiKey/token ***")
        extra = f", headers={mask_headers(self._extra_headers)}" if self._extra_headers else ""
        return f"{type(self).__name__}({self.base_url!r}, {auth}{extra}, mode={self.mode!r})"

    # ------------------------------------------------------------ plumbing

    def _credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        headers = dict(self._extra_headers)
        query: dict[str, str] = {}
        if self._token and self._auth == "header":
            headers["Authorization"] = f"Bearer {self._token}"
        elif self._token:
            query = {"apiKey": self._api_key or "", "token": self._token}
        return headers, query

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout, transport=self._transport, trust_env=False)
        return self._http

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
        from ._secrets import scrub

        return scrub(text, [s for s in (self._token, self._api_key) if s])

    async def _post_batch(self, wire: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
        headers, query = self._credentials()
        headers["Content-Type"] = "application/json"
        content = orjson.dumps({"requests": wire})
        try:
            r = await self._client().post(self.base_url + BATCH_PATH, content=content, headers=headers, params=query or None)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportError(f"could not connect to {self.base_url} ({type(exc).__name__})", sent=False) from None
        except httpx.TransportError as exc:
            raise TransportError(f"the connection failed after the batch was sent ({type(exc).__name__})", sent=True) from None
        try:
            body = orjson.loads(r.content) if r.content else None
        except orjson.JSONDecodeError:
            body = r.text if r.status_code != 200 else None
        return r.status_code, dict(r.headers), body

    async def limits(self) -> dict[str, Any]:
        """The server's limits (``GET /api/2.3/batch``), with this client's overrides.

        >>> await client.limits()     # doctest: +SKIP
        {'version': '2.3', 'maxRequests': 50, 'maxDepth': 4, ...}
        """
        if self._limits is None:
            limits = dict(DEFAULT_LIMITS)
            if self.mode == "batch" and (self._max_requests is None or self._max_depth is None):
                headers, query = self._credentials()
                try:
                    r = await self._client().get(self.base_url + BATCH_PATH, headers=headers, params=query or None)
                    if r.status_code == 200:
                        limits.update(r.json())
                except (httpx.HTTPError, ValueError):
                    pass  # an older server without the extension: the spec's defaults
            if self._max_requests is not None:
                limits["maxRequests"] = self._max_requests
            if self._max_depth is not None:
                limits["maxDepth"] = self._max_depth
            self._limits = limits
        return self._limits

    # ------------------------------------------------------------ sending

    async def send(self, batch: Batch) -> list[Response]:
        """Send ``batch`` as exactly one HTTP call and return its responses.

        >>> await client.send(Batch([Operation("GET", "/api/2.1/scheduling/companies")]))   # doctest: +SKIP

        Batch-level errors raise typed exceptions (:class:`AuthenticationError`,
        :class:`PayloadTooLargeError`, …) carrying the server's message and pointers.
        """
        wire = [op.to_wire() for op in batch.requests]
        if self.mode == "direct":
            return await self._run_direct(batch.requests, {})
        status, headers, body = await self._post_batch(wire)
        if status != 200:
            from ._runner import _retry_after

            raise http_error(status, body, _retry_after(headers))
        if not isinstance(body, dict) or not isinstance(body.get("responses"), list):
            raise TransportError("the server's answer is not a batch response", sent=True)
        return [Response.from_wire(r) for r in body["responses"]]

    async def _run_direct(self, ops: list[Operation], known: dict[str, Response]) -> list[Response]:
        headers, query = self._credentials()
        dispatch = HTTPDispatcher(self._client(), self.base_url)
        return await execute(ops, dispatch, headers=headers, query=query, timeout=self.timeout, results=known)

    async def _direct_sender(self, wire: list[dict[str, Any]]) -> tuple[int, dict[str, str], Any]:
        ops = Batch(wire, validate=False).requests
        responses = await self._run_direct(ops, dict(self._direct_known))
        return 200, {}, {"responses": [r.to_wire() for r in responses]}

    # ------------------------------------------------------------ submit

    @overload
    async def submit(self, work: Batch, **kw: Any) -> list[Response]: ...
    @overload
    async def submit(self, work: Any, **kw: Any) -> pd.DataFrame: ...

    async def submit(
        self,
        work: Any,
        *,
        dry_run: bool = False,
        journal: str | None = None,
        resume: bool = False,
        progress: bool | None = None,
        concurrency: int | None = None,
        retries: int | None = None,
        retry_operations: bool = False,
        rate: float | None = None,
        bodies: Literal["parsed", "json", "none"] = "parsed",
        **frame_options: Any,
    ) -> Any:
        """Run any number of operations; what comes back matches what went in.

        >>> result = await client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])  # doctest: +SKIP
        >>> df.join(result[["status", "error"]])                                                                     # doctest: +SKIP

        ``work`` is a Batch (→ list of Response), a list of operations (→ DataFrame)
        or a DataFrame (→ DataFrame with the input's index; ``frame_options`` go to
        :func:`batchnb.from_frame`). ``dry_run`` validates and returns the
        :class:`~batchnb.plan.Plan` without sending anything. ``journal`` appends
        each batch's outcome to a JSON Lines file; with ``resume`` only rows with
        no final outcome there are sent. ``retry_operations`` resends operations
        answered 429/503 inside a batch that ran. ``rate`` caps batches per second.
        ``bodies`` says how response bodies are kept: ``"parsed"`` (JSON as Python
        objects), ``"json"`` (as JSON text: several times less memory for a
        million rows; :func:`batchnb.expand` reads it all the same) or ``"none"``
        (only for rows that are not ok, where they explain the error).
        """
        if bodies not in ("parsed", "json", "none"):
            raise ValueError(f"bodies must be 'parsed', 'json' or 'none', not {bodies!r}")
        limits = await self.limits()
        ops, index, kind = self._operations_of(work, frame_options, stream=not dry_run, limits=limits)
        state = Journal(journal).read() if (journal and resume) else None
        done: dict[str, Response] = {}
        known: dict[str, Response] = {}
        if state is not None:
            done = dict(state.done)
            for key, resendable in state.in_flight.items():
                if not resendable:
                    done[key] = Response("", "", None, error="outcome unknown: the previous run was interrupted while its batch was in flight")
            for resp in state.done.values():
                for _p, r in resp.walk():
                    if r.name:
                        known[r.name] = r
        chunks = ops if isinstance(ops, _Chunks) else _Chunks([ops], len(ops))
        plan_of = lambda chunk: self._plan(chunk, done, known, limits)  # noqa: E731
        shape = lambda chunk, responses: self._shape(chunk, _keep_bodies(responses, bodies), done, chunks.index_of(chunk, index), kind)  # noqa: E731
        if dry_run:
            return plan_of(chunks.first())
        first_plan = plan_of(chunks.first())  # every problem is raised here, before anything is sent
        total = chunks.total if chunks.streaming else first_plan.operations
        show = progress if progress is not None else (total > int(limits["maxRequests"]))
        bar = _Progress(total, bool(show))
        jr = Journal(journal) if journal else None
        self._direct_known = known
        runner = Runner(
            self._direct_sender if self.mode == "direct" else self._post_batch,
            concurrency=concurrency or self.concurrency,
            retries=self.retries if retries is None else retries,
            retry_operations=retry_operations,
            rate=rate,
            journal=jr,
            progress=bar,
            known=known,
            first_batch=(state.last_batch + 1) if state is not None else 0,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
        )
        pieces: list[Any] = []
        chunk: list[Operation] = []
        plan: Plan | None = None
        try:
            for n, chunk in enumerate(chunks):
                plan = first_plan if n == 0 else plan_of(chunk)
                if runner.fatal is not None:
                    responses = runner.not_run(plan)
                else:
                    responses = await runner.run(plan)
                runner.first_batch += plan.calls
                runner.outcomes.clear()  # streaming: what is shaped below is all that stays
                pieces.append(shape(chunk, responses))
                plan = None
        except (asyncio.CancelledError, KeyboardInterrupt):
            if plan is not None:
                pieces.append(shape(chunk, runner.collect(plan)))
            partial = self._join(pieces, index, kind, missing="not run: interrupted before it was sent")
            raise SubmitInterrupted(
                "submit was interrupted: finished rows are in .partial; rows in flight have an unknown outcome"
                + (f"; resume with journal={journal!r}, resume=True" if journal else ""),
                partial=partial,
            ) from None
        finally:
            bar.close()
            if jr is not None:
                jr.close()
        result = self._join(pieces, index, kind)
        if runner.fatal is not None:
            runner.fatal.partial = result
            raise runner.fatal
        return result

    def _plan(self, ops: list[Operation], done: dict[str, Response], known: dict[str, Response], limits: dict[str, Any]) -> Plan:
        pending = [op for op in ops if row_key(op.row) not in done] if done else ops
        problems = check_names_and_refs(pending, known=known.keys())
        if problems:
            raise BatchValidationError(problems)
        return make_plan(pending, max_requests=int(limits["maxRequests"]), max_depth=int(limits["maxDepth"]), known=known.keys())

    @staticmethod
    def _join(pieces: list[Any], index: Any, kind: str, missing: str | None = None) -> Any:
        if kind == "responses":
            return [r for piece in pieces for r in piece]
        import pandas as pd

        from .results import to_frame

        frame = pd.concat(pieces) if len(pieces) > 1 else (pieces[0] if pieces else to_frame([]))
        if index is not None and missing is not None and len(frame) < len(index):
            frame = frame.reindex(index)
            frame["ok"] = frame["ok"].fillna(False).astype(bool)
            frame["error"] = frame["error"].where(frame["error"].notna(), missing)
        return frame

    def _operations_of(
        self, work: Any, frame_options: dict[str, Any], *, stream: bool = False, limits: dict[str, Any] | None = None
    ) -> tuple[Any, Any, str]:
        if isinstance(work, Batch):
            if frame_options:
                raise TypeError(f"unexpected options for a Batch: {sorted(frame_options)}")
            ops = _with_rows(work.requests)
            return ops, None, "responses"
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover
            pd = None
        if pd is not None and isinstance(work, pd.DataFrame):
            from .frames import from_frame

            size = _chunk_rows(limits or DEFAULT_LIMITS, self.concurrency)
            if stream and len(work) > size and _streamable(work, frame_options):
                return _Chunks.of_frame(work, frame_options, size), work.index, "frame"
            return from_frame(work, **frame_options), work.index, "frame"
        if isinstance(work, Iterable) and not isinstance(work, (str, bytes, Mapping)):
            if frame_options:
                raise TypeError(f"unexpected options for a list of operations: {sorted(frame_options)}")
            batch = Batch(list(work))  # validates every operation, with pointers
            return _with_rows(batch.requests), None, "frame"
        raise TypeError(f"submit takes a Batch, a list of operations or a DataFrame, not {type(work).__name__}")

    def _shape(self, ops: list[Operation], responses: list[Response], done: dict[str, Response], index: Any, kind: str) -> Any:
        if done:
            it = iter(responses)
            merged = []
            for op in ops:
                key = row_key(op.row)
                if key in done:
                    merged.append(_relabel(done[key], op))
                else:
                    merged.append(next(it))
            responses = merged
        if kind == "responses":
            return responses
        from .results import to_frame

        frame = to_frame(responses)
        if index is not None and len(frame) == len(index):
            frame = frame.reindex(index)
        return frame


def _keep_bodies(responses: list[Response], bodies: str) -> list[Response]:
    if bodies == "parsed":
        return responses
    for top in responses:
        for _p, r in top.walk():
            if r.body is None:
                continue
            if bodies == "none" and r.ok:
                r.body = None
            elif bodies == "json":
                r.body = orjson.dumps(r.body).decode()
    return responses


def _chunk_rows(limits: dict[str, Any], concurrency: int) -> int:
    """Rows built and sent at a time when streaming a large frame: many batches, bounded memory."""
    return max(10_000, int(limits["maxRequests"]) * max(concurrency, 1) * 50)


def _streamable(df: Any, options: dict[str, Any]) -> bool:
    """True when rows are independent (no names, parents or references): then the frame can
    be built and sent a chunk at a time, and every chunk checked before the first is sent."""
    body = options.get("body")
    if callable(body):
        return False
    data_fields = set(body.values() if isinstance(body, Mapping) else body) if isinstance(body, (Mapping, list, tuple)) else set()
    for opt in ("name", "parent"):
        value = options.get(opt)
        if value is False:
            continue
        if value is not None or (opt in df.columns and opt not in data_fields):
            return False
    for value in options.values():
        if isinstance(value, str) and "${" in value:
            return False
        if isinstance(value, Mapping) and any("${" in str(v) for v in value.values()):
            return False
    for column in df.columns:
        series = df[column]
        if series.dtype.kind in "biufcmM":
            continue
        if series.astype(str).str.contains("${", regex=False).any():
            return False
    return True


class _Chunks:
    """Operations a chunk at a time (a list of lists, or a frame built lazily)."""

    def __init__(self, chunks: Any, total: int, frame: Any = None, options: dict[str, Any] | None = None, size: int = 0) -> None:
        self._chunks = chunks
        self.total = total
        self._frame = frame
        self._options = options or {}
        self._size = size
        self._first: list[Operation] | None = None

    @classmethod
    def of_frame(cls, df: Any, options: dict[str, Any], size: int) -> _Chunks:
        from .frames import from_frame

        problems = []
        # Every chunk is checked before anything is sent; built again, one at a time, to send.
        for start in range(0, len(df), size):
            try:
                from_frame(df.iloc[start : start + size], **options)
            except BatchValidationError as exc:
                problems.extend(exc.problems)
        if problems:
            raise BatchValidationError(problems)
        return cls(None, len(df), df, options, size)

    @property
    def streaming(self) -> bool:
        return self._frame is not None

    def first(self) -> list[Operation]:
        if self._first is None:
            self._first = next(iter(self))
        return self._first

    def __iter__(self) -> Iterator[list[Operation]]:
        if self._frame is None:
            yield from self._chunks
            return
        from .frames import from_frame

        for start in range(0, len(self._frame), self._size):
            if start == 0 and self._first is not None:
                first, self._first = self._first, None
                yield first
            else:
                yield from_frame(self._frame.iloc[start : start + self._size], **self._options)

    def index_of(self, chunk: list[Operation], index: Any) -> Any:
        if self._frame is None:
            return index
        return [op.row for op in chunk]


def _with_rows(ops: list[Operation]) -> list[Operation]:
    """Number every operation (depth first) when it has no row label of its own."""
    counter = 0
    for top in ops:
        for _p, op in top.walk():
            if op.row is None:
                op.row = counter
            counter += 1
    return ops


def _relabel(resp: Response, op: Operation) -> Response:
    resp.row = op.row
    if not resp.method:
        resp.method, resp.path, resp.name = op.method, op.path, op.name
    kids = list(zip(op.requests, resp.responses))
    if resp.responses or not op.requests:
        resp.responses = [_relabel(r, o) for o, r in kids]
    else:
        resp.responses = [_relabel(Response("", "", None, error=resp.error), o) for o in op.requests]
    return resp


class Client:
    """The sync twin of :class:`AsyncClient`: same arguments, same methods, no ``await``.

    >>> client = Client("http://127.0.0.1:8000", token="demo-token")          # doctest: +SKIP
    >>> result = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"])  # doctest: +SKIP

    Works in scripts and inside a running Jupyter kernel alike. Ctrl-C during
    ``submit`` raises :class:`SubmitInterrupted` whose ``partial`` keeps what finished.
    """

    def __init__(self, base_url: str, **options: Any) -> None:
        self._options = options
        self._async = AsyncClient(base_url, **options)  # validates the options once

    @property
    def base_url(self) -> str:
        return self._async.base_url

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    def _call(self, attr: str, /, *args: Any, **kwargs: Any) -> Any:
        async def go() -> Any:
            # An httpx.AsyncClient belongs to the loop that made it: one per call.
            async with AsyncClient(self.base_url, **self._options) as client:
                client._limits = self._async._limits
                try:
                    return await getattr(client, attr)(*args, **kwargs)
                finally:
                    self._async._limits = client._limits

        return run_sync(go)

    def limits(self) -> dict[str, Any]:
        """The server's limits; see :meth:`AsyncClient.limits`."""
        return self._call("limits")

    def send(self, batch: Batch) -> list[Response]:
        """One batch, one HTTP call; see :meth:`AsyncClient.send`."""
        return self._call("send", batch)

    def submit(self, work: Any, **kwargs: Any) -> Any:
        """Run any number of operations; see :meth:`AsyncClient.submit`."""
        return self._call("submit", work, **kwargs)

    def close(self) -> None:
        """Nothing stays open between calls; kept for symmetry with :class:`AsyncClient`."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

