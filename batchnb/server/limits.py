"""What one batch may ask of the server: :class:`Limits`.

Each limit is declared once, here, with its default, what it bounds, and
the name ``GET /api/2.3/batch`` announces it under when a client can act
on it; ``batchnb serve`` makes a flag of each (``--max-requests``, …).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from .. import _dispatch, _engine, _jsonpath, _rules
from .._exceptions import BatchValidationError, Problem

__all__ = ["Limits"]

#: the problems one error answer lists, at most: the first ones, with ``detailCount`` saying how many there were.
MAX_ERROR_DETAILS = 100


def _limit(default: Any, help: str, wire: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "wire": wire})


@dataclass(frozen=True)
class Limits:
    """What one batch may ask of the server; ``GET /api/2.3/batch`` announces them.

    >>> Limits(max_requests=100).to_wire()["maxRequests"]
    100
    >>> [name for name, _default, _help in Limits.described()][:2]
    ['max_requests', 'max_depth']
    """

    max_requests: int = _limit(
        _rules.DEFAULT_MAX_REQUESTS, "operations in one batch, nested ones included", "maxRequests"
    )
    max_depth: int = _limit(_rules.DEFAULT_MAX_DEPTH, "levels of nesting", "maxDepth")
    max_body_bytes: int = _limit(1024 * 1024, "bytes of one batch request", "maxBodyBytes")
    head_timeout: float = _limit(
        10.0,
        "seconds to receive a request's line and headers, from the connection's or the head's first byte (then 408, and the connection closes)",
    )
    body_timeout: float = _limit(
        10.0,
        "seconds to receive a request's body once its headers are in, whether it is read or answered already "
        "(then 408 if it is not answered yet, and the connection closes)",
        "bodyTimeout",
    )
    keep_alive_timeout: float = _limit(5.0, "seconds a kept-alive connection may stay idle between requests")
    write_timeout: float = _limit(
        30.0,
        "seconds an answer may wait in the server for its client to read it (then the connection is dropped)",
    )
    max_connections: int = _limit(
        256,
        "connections held at once, each process (then a new one takes the place of one whose request was answered, "
        "or is answered 503 and closed)",
    )
    max_response_bytes: int = _limit(
        _dispatch.DEFAULT_MAX_RESPONSE_BYTES,
        "bytes of one operation's answer, once decoded (then 502)",
        "maxResponseBytes",
    )
    max_answer_bytes: int = _limit(
        _engine.DEFAULT_MAX_ANSWER_BYTES,
        "bytes of one batch's answer (an answer that does not fit is its operation's 502; what has not started then answers 503)",
        "maxAnswerBytes",
    )
    max_resolved_bytes: int = _limit(
        _engine.DEFAULT_MAX_RESOLVED_BYTES,
        "bytes that references fill into one operation (then 413)",
        "maxResolvedBytes",
    )
    max_jsonpath_length: int = _limit(
        _jsonpath.MAX_QUERY_LENGTH,
        f"characters of one reference's JSONPath (at most {_jsonpath.MAX_QUERY_LENGTH}; then 400)",
        "maxJsonPathLength",
    )
    max_jsonpath_nesting: int = _limit(
        _jsonpath.MAX_QUERY_NESTING,
        f"levels of brackets, parentheses, !, && and || nested in one JSONPath (at most {_jsonpath.MAX_QUERY_NESTING}; then 400)",
        "maxJsonPathNesting",
    )
    max_jsonpath_nodes: int = _limit(
        _jsonpath.DEFAULT_MAX_NODES,
        "units of work one reference's JSONPath may cost in a result: nodes visited, selected or tested, "
        "regular expressions (then 424)",
        "maxJsonPathNodes",
    )
    max_batch_work: int = _limit(
        _engine.DEFAULT_MAX_BATCH_WORK,
        "units of work (about a microsecond each) filling in one batch's references may cost, all operations "
        "together: a JSONPath node visited, selected or tested, a regular expression run (and its characters "
        "times its pattern's size / 128), 256 bytes filled in (then the operation answers 424, as does every later "
        "one with references)",
        "maxBatchWork",
    )
    max_parallel: int = _limit(
        16,
        "operations of one batch in flight at once, when the batch asks for it (its 'parallel' field)",
        "maxParallel",
    )
    operation_timeout: float = _limit(30.0, "seconds one operation may take (then 504)", "operationTimeout")
    batch_timeout: float = _limit(
        300.0, "seconds one batch may take (what has not started answers 503)", "batchTimeout"
    )
    max_concurrent_batches: int = _limit(32, "batches running at once (then 429 with Retry-After)")

    def __post_init__(self) -> None:
        problems = []
        for name in _SECONDS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                problems.append(Problem(name, f"must be a positive number of seconds, not {value!r}"))
        if isinstance(self.max_connections, bool) or not (
            isinstance(self.max_connections, int) and self.max_connections >= 1
        ):
            problems.append(
                Problem("max_connections", f"must be a whole number of at least 1, not {self.max_connections!r}")
            )
        # Past these, the JSONPath library's parser would run out of stack: they can be lowered, not raised.
        for name, ceiling in (
            ("max_jsonpath_length", _jsonpath.MAX_QUERY_LENGTH),
            ("max_jsonpath_nesting", _jsonpath.MAX_QUERY_NESTING),
        ):
            if getattr(self, name) > ceiling:
                problems.append(Problem(name, f"must be at most {ceiling}"))
        if not isinstance(self.max_batch_work, int) or self.max_batch_work < 1:
            problems.append(
                Problem("max_batch_work", f"must be a whole number of units, 1 or more, not {self.max_batch_work!r}")
            )
        if problems:
            raise BatchValidationError(problems)

    def to_wire(self) -> dict[str, Any]:
        """The limits as ``GET /api/2.3/batch`` answers them."""
        out: dict[str, Any] = {"version": "2.3"}
        for f in fields(self):
            if f.metadata.get("wire"):
                out[f.metadata["wire"]] = getattr(self, f.name)
        return out

    @classmethod
    def described(cls) -> Iterator[tuple[str, Any, str]]:
        """(name, default, what it bounds) for every limit, in order."""
        for f in fields(cls):
            yield f.name, f.default, f.metadata["help"]


#: the limits that bound a connection in time: each a positive, finite number of seconds.
_SECONDS = ("head_timeout", "body_timeout", "keep_alive_timeout", "write_timeout")
