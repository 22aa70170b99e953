"""How a submit's batches reach the API: a :class:`Sender`, and its two kinds.

- :class:`BatchEndpoint` posts each batch to a server's ``/api/2.3/batch``;
- :class:`InProcessEngine` runs each batch here, with the engine, sending
  every operation to the API itself (``mode="direct"``, for an API that has
  no batch endpoint). Operations go straight to the engine: no wire round trip.

Either way the runner gets a :class:`Reply`, and its retry rules do not care
which one it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import httpx
import orjson

from . import _json
from ._exceptions import TransportError
from .engine import Dispatcher, execute
from .model import BATCH_PATH, Operation, Response

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
    """A Batch API 2.3 server: one ``POST /api/2.3/batch`` per batch."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        self._http = http
        self._url = base_url + BATCH_PATH
        self._headers = {**headers, "Content-Type": "application/json"}
        self._query = dict(query) or None

    async def __call__(self, ops: list[Operation]) -> Reply:
        content = _json.dumps({"requests": [op.to_wire() for op in ops]})
        try:
            r = await self._http.post(self._url, content=content, headers=self._headers, params=self._query)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportError(f"could not connect to {self._url} ({type(exc).__name__})", sent=False) from None
        except httpx.TransportError as exc:
            raise TransportError(f"the connection failed after the batch was sent ({type(exc).__name__})", sent=True) from None
        try:
            body = _json.loads(r.content) if r.content else None
        except orjson.JSONDecodeError:
            body = r.text if r.status_code != 200 else None
        responses = _responses_for(body, ops) if r.status_code == 200 else None
        return Reply(r.status_code, dict(r.headers), responses, body)


class InProcessEngine:
    """The engine in this process, each operation sent to the API by ``dispatch``."""

    def __init__(self, dispatch: Dispatcher, headers: Mapping[str, str], query: Mapping[str, str], timeout: float) -> None:
        self._dispatch = dispatch
        self._headers = dict(headers)
        self._query = dict(query)
        self._timeout = timeout

    async def __call__(self, ops: list[Operation]) -> Reply:
        responses = await execute(ops, self._dispatch, headers=self._headers, query=self._query, timeout=self._timeout)
        return Reply(200, {}, responses)


def _responses_for(body: Any, ops: list[Operation]) -> list[Response] | None:
    """The server's responses, if they match what was sent in shape; else None."""
    if not isinstance(body, dict) or not isinstance(body.get("responses"), list):
        return None
    resps = [Response.from_wire(r) for r in body["responses"] if isinstance(r, dict)]

    def same_shape(o: list[Operation], r: list[Response]) -> bool:
        return len(o) == len(r) and all(same_shape(a.requests, b.responses) for a, b in zip(o, r))

    return resps if same_shape(ops, resps) else None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None.

    >>> retry_after({"Retry-After": "2"})
    2.0
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
