"""How a submit's batches reach the API: a :class:`Sender`, and its two kinds.

- :class:`BatchEndpoint` posts each batch to a server's ``/api/2.3/batch``;
- :class:`InProcessEngine` runs each batch here, with the engine, sending
  every operation to the API itself (``mode="direct"``, for an API that has
  no batch endpoint). Operations go straight to the engine: no wire round trip.

Either way the runner gets a :class:`Reply`, and its retry rules do not care
which one it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from . import _json
from ._answers import read_answer
from ._connect import Connection, Unreached, proxy_refused, unreached
from ._dispatch import Dispatcher, ResponseTooLarge, UnreadableResponse, read_bounded
from ._engine import DEFAULT_MAX_ANSWER_BYTES, execute
from ._exceptions import TransportError
from ._ratelimit import retry_after  # its older home: the runner and client import it from here
from .auth import refreshes
from .model import BATCH_PATH, Operation, Response

#: the most a batch's answer may take once decoded, here in the notebook's memory: twice what a
#: server answers at most by default, so that no full answer of one is refused, nor a pretty-printed one.
MAX_ANSWER_BYTES = 2 * DEFAULT_MAX_ANSWER_BYTES

__all__ = ["BatchEndpoint", "InProcessEngine", "Reply", "Sender", "retry_after"]


@dataclass
class Reply:
    """What one batch got back: a status, headers, and the responses when it ran.

    ``responses`` is None when the answer is not a batch response that
    matches what was sent (then its outcome is unknown); ``body`` is the
    parsed answer of a batch-level error (any status but 200).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    responses: list[Response] | None = None
    body: Any = None


class Sender(Protocol):
    """Sends one batch; raises :class:`~batchnb.TransportError` when it could not be delivered."""

    async def __call__(self, ops: list[Operation]) -> Reply: ...


class BatchEndpoint:
    """A Batch API 2.3 server: one ``POST /api/2.3/batch`` per batch.

    Its answer is read as untrusted input: at most ``max_answer_bytes``
    once decoded (a few compressed bytes may not inflate to gigabytes in the
    kernel), its responses parsed only as deep as the batch that was sent,
    and their bodies kept as text (see :mod:`batchnb._answers`). ``timeout``
    bounds each exchange, from connecting to the answer's last byte (None:
    only httpx's own timeouts, which a server sending a byte now and then
    never trips).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        *,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        parallel: int = 1,
        connection: Connection | None = None,
        auth: httpx.Auth | None = None,
        timeout: float | None = None,
    ) -> None:
        self._http = http
        #: what ``http`` was made with: names the proxy when one refuses.
        self._connection = connection
        #: signs each batch (a batch refused 401 as a whole ran nothing: the flow may send it again).
        self.auth = auth
        #: whether operations answered 401 inside a batch may go again: the flow was told their token is spent.
        self.refreshes = refreshes(auth)
        self._url = base_url + BATCH_PATH
        self._headers = {**headers, "Content-Type": "application/json"}
        self._query = dict(query) or None
        self._max = max_answer_bytes
        #: how many of a batch's operations the server may run at once (1: one at a time, in order).
        self._parallel = parallel
        self._timeout = timeout

    async def __call__(self, ops: list[Operation]) -> Reply:
        batch: dict[str, Any] = {"requests": [op.to_wire() for op in ops]}
        if self._parallel > 1:
            batch["parallel"] = self._parallel
        content = _json.dumps(batch)
        trace = Trace()
        request = self._http.build_request(
            "POST",
            self._url,
            content=content,
            headers=self._headers,
            params=self._query,
            extensions={"trace": trace},
        )
        async with deadline(self._timeout, trace, "the batch"):
            try:
                r = await self._http.send(request, stream=True, auth=self.auth)
                refused = proxy_refused(r)
                if refused is not None:
                    await r.aclose()
                    raise refused
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError) as exc:
                failure = self._unreached(exc)
                raise TransportError(failure.message, sent=False, transient=failure.transient) from exc
            except httpx.TransportError as exc:
                raise TransportError(
                    f"the connection failed after the batch was sent ({type(exc).__name__})", sent=True
                ) from exc
            try:
                raw = await read_bounded(r, self._max)
            except httpx.TransportError as exc:
                raise TransportError(
                    f"the connection failed after the batch was sent ({type(exc).__name__})", sent=True
                ) from None
            except ResponseTooLarge:
                # The same answer would come again: not retried.
                raise TransportError(
                    f"the server's answer is larger than {self._max} bytes once decoded, the most this client "
                    "reads (max_answer_bytes=): the batch was sent, and what it did cannot be read here",
                    sent=True,
                    transient=False,
                ) from None
            except UnreadableResponse as exc:
                raise TransportError(f"the server's answer could not be read: {exc}", sent=True) from None
            finally:
                await r.aclose()
        body: Any = None
        responses: list[Response] | None = None
        if r.status_code == 200:
            responses = read_answer(raw, ops)
        else:
            try:
                body = _json.loads(raw) if raw else None
            except (orjson.JSONDecodeError, RecursionError):
                body = raw.decode("utf-8", "replace")
        sent_with = r.request.headers.get("authorization")
        if self.refreshes and sent_with and responses is not None and _refused(ops, responses):
            # The token this batch went with (the last request the flow sent) is spent.
            self.auth.invalidate(sent_with)  # type: ignore[union-attr]  # only a flow that refreshes (checked above) is told
        return Reply(r.status_code, dict(r.headers), responses, body)

    def _unreached(self, exc: httpx.HTTPError) -> Unreached:
        proxy = self._connection.proxy_for(self._url) if self._connection is not None else None
        return unreached(exc, self._url, proxy)


class Trace:
    """httpcore's ``trace`` extension for one request: whether any of it was written yet.

    A request whose transport tells nothing (a transport of the user's own)
    counts as written: its outcome is then unknown, never assumed.
    """

    def __init__(self) -> None:
        self._told = False
        self._writing = False

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        self._told = True
        if ".send_request_headers." in event:  # http11.… or http2.…: the request starts to leave
            self._writing = True

    @property
    def sent(self) -> bool:
        """Whether the request may have reached the server."""
        return self._writing or not self._told


@contextlib.asynccontextmanager
async def deadline(seconds: float | None, trace: Trace, what: str) -> AsyncIterator[None]:
    """Bound an exchange, from connecting to the answer's last byte: past ``seconds``, :class:`TransportError`.

    httpx's timeouts bound each read and each write: a server that sends a
    byte every few seconds never trips them, however long the whole answer
    takes. This bounds it all.
    """
    if seconds is None or seconds == float("inf"):
        yield
        return
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        sent = trace.sent
        where = "its answer did not arrive" if sent else "it could not be sent"
        raise TransportError(
            f"{what} took longer than timeout={seconds:g} s: {where} in that time", sent=sent
        ) from None


def own_authorization(op: Operation) -> bool:
    """Whether ``op`` carries credentials of its own (then the batch's are not its to refresh)."""
    return any(k.lower() == "authorization" for k in op.headers or {})


def _refused(ops: list[Operation], responses: list[Response]) -> bool:
    """Whether an operation sent with the batch's credentials was answered 401."""
    return any(r.status == 401 and not own_authorization(op) for op, r in zip(ops, responses))


class InProcessEngine:
    """The engine in this process, each operation sent to the API by ``dispatch``.

    An operation that never reached the API (see :class:`~batchnb._connect.Unreached`)
    is "not run", with no status; when not one operation of the batch reached
    it, the batch was not delivered: :class:`~batchnb.TransportError`, as a
    batch endpoint that cannot be reached gives, and the runner's rules for
    that apply (retried when the failure is transient, never sent twice).
    """

    def __init__(
        self,
        dispatch: Dispatcher,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        timeout: float,
        *,
        parallel: int = 1,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._dispatch = dispatch
        #: the dispatcher's auth flow: it refreshes and resends each refused operation itself, once.
        self.auth = getattr(dispatch, "auth", None)
        #: whether the dispatcher sends operations answered 429 or 503 again itself, for the whole ``retry_for``.
        self.retries = bool(getattr(dispatch, "retries", False))
        self._headers = dict(headers)
        self._query = dict(query)
        self._timeout = timeout
        self._parallel = parallel
        self._max = max_answer_bytes

    async def __call__(self, ops: list[Operation]) -> Reply:
        tally = _Tally(self._dispatch)
        responses = await execute(
            ops,
            tally,
            headers=self._headers,
            query=self._query,
            timeout=self._timeout,
            parallel=self._parallel,
            unreached="not run",
            max_answer_bytes=self._max,
            raw_bodies=True,  # kept as text until a cell is read, as a batch endpoint's answers are
        )
        if tally.reached == 0 and tally.failure is not None:
            failure = tally.failure
            raise TransportError(failure.message, sent=False, transient=failure.transient) from failure.__cause__
        return Reply(200, {}, responses)


class _Tally:
    """A dispatcher that counts the operations that reached the API, and keeps the first failure to reach it."""

    def __init__(self, dispatch: Dispatcher) -> None:
        self._dispatch = dispatch
        self.reached = 0
        self.failure: Unreached | None = None

    async def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> Any:
        try:
            result = await self._dispatch(method, path, headers, body)
        except Unreached as exc:
            if self.failure is None:
                self.failure = exc
            raise
        except BaseException:
            self.reached += 1  # sent, or may have been: its outcome is the engine's to tell
            raise
        self.reached += 1
        return result
