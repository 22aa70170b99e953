"""How a submit's batches reach the API: a :class:`Sender`, and its two kinds.

- :class:`BatchEndpoint` posts each batch to a server's ``/api/2.3/batch``;
- :class:`InProcessEngine` runs each batch here, with the engine, sending
  every operation to the API itself (``mode="direct"``, for an API that has
  no batch endpoint). Operations go straight to the engine: no wire round trip.

Either way the runner gets a :class:`Reply`, and its retry rules do not care
which one it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import httpx
import orjson

from . import _json
from ._connect import Connection, Unreached, proxy_refused, unreached
from ._exceptions import TransportError
from .auth import refreshes
from ._ratelimit import retry_after  # noqa: F401 - its older home; the runner and client import it from here
from .engine import Dispatcher, ResponseTooLarge, UnreadableResponse, execute, read_bounded
from .model import BATCH_PATH, Operation, Response

#: the most a batch's answer may take once decoded, here in the notebook's memory.
MAX_ANSWER_BYTES = 256 * 1024 * 1024

__all__ = ["BatchEndpoint", "InProcessEngine", "Reply", "Sender", "retry_after"]


@dataclass
class Reply:
    """What one batch got back: a status, headers, and the responses when it ran.

    ``responses`` is None when the answer is not a batch response that
    matches what was sent (then its outcome is unknown); ``body`` is the
    parsed answer, for batch-level errors.
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
    kernel), and its responses parsed only as deep as the batch that was sent.
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

    async def __call__(self, ops: list[Operation]) -> Reply:
        batch: dict[str, Any] = {"requests": [op.to_wire() for op in ops]}
        if self._parallel > 1:
            batch["parallel"] = self._parallel
        content = _json.dumps(batch)
        request = self._http.build_request(
            "POST", self._url, content=content, headers=self._headers, params=self._query
        )
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
        except (ResponseTooLarge, UnreadableResponse) as exc:
            raise TransportError(f"the server's answer could not be read: {exc}", sent=True) from None
        finally:
            await r.aclose()
        try:
            body = _json.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace") if r.status_code != 200 else None
        responses = _responses_for(body, ops) if r.status_code == 200 else None
        sent_with = r.request.headers.get("authorization")
        if self.refreshes and sent_with and responses is not None and _refused(ops, responses):
            # The token this batch went with (the last request the flow sent) is spent.
            self.auth.invalidate(sent_with)  # type: ignore[union-attr]
        return Reply(r.status_code, dict(r.headers), responses, body)

    def _unreached(self, exc: httpx.HTTPError) -> Unreached:
        proxy = self._connection.proxy_for(self._url) if self._connection is not None else None
        return unreached(exc, self._url, proxy)


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
    ) -> None:
        self._dispatch = dispatch
        #: the dispatcher's auth flow: it refreshes and resends each refused operation itself, once.
        self.auth = getattr(dispatch, "auth", None)
        self._headers = dict(headers)
        self._query = dict(query)
        self._timeout = timeout
        self._parallel = parallel

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


def _responses_for(body: Any, ops: list[Operation]) -> list[Response] | None:
    """The server's responses, if they match what was sent in shape; else None."""
    if not isinstance(body, dict) or not isinstance(body.get("responses"), list):
        return None

    def same_shape(o: list[Operation], r: Any) -> bool:
        # On the raw answer first, so that nothing is parsed deeper than what was sent.
        if not isinstance(r, list) or len(o) != len(r) or not all(isinstance(x, dict) for x in r):
            return False
        return all(same_shape(a.requests, b.get("responses") or []) for a, b in zip(o, r))

    if not same_shape(ops, body["responses"]):
        return None
    return [Response.from_wire(r) for r in body["responses"]]
