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
from ._exceptions import TransportError
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
    ) -> None:
        self._http = http
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
            r = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportError(f"could not connect to {self._url} ({type(exc).__name__})", sent=False) from None
        except httpx.TransportError as exc:
            raise TransportError(
                f"the connection failed after the batch was sent ({type(exc).__name__})", sent=True
            ) from None
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
        return Reply(r.status_code, dict(r.headers), responses, body)


class InProcessEngine:
    """The engine in this process, each operation sent to the API by ``dispatch``."""

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
        self._headers = dict(headers)
        self._query = dict(query)
        self._timeout = timeout
        self._parallel = parallel

    async def __call__(self, ops: list[Operation]) -> Reply:
        responses = await execute(
            ops,
            self._dispatch,
            headers=self._headers,
            query=self._query,
            timeout=self._timeout,
            parallel=self._parallel,
        )
        return Reply(200, {}, responses)


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
