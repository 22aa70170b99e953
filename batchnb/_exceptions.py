"""The one exception hierarchy of batchnb.

    BatchError                      anything batchnb raises on purpose
    ├── BatchValidationError        bad input, found before anything is sent;
    │   │                           carries every Problem with its pointer
    │   ├── RefSyntaxError          a ${result=…} reference that does not parse
    │   └── MissingDependency       an optional library is not installed; names
    │                               the extra to install (also an ImportError)
    ├── BatchHTTPError              the server refused a whole batch (4xx/5xx)
    │   ├── AuthenticationError     401
    │   ├── PayloadTooLargeError    413
    │   ├── UnsupportedMediaTypeError 415
    │   └── RateLimitedError        429 (``retry_after`` seconds, when known)
    ├── TransportError              the batch could not be delivered, or its
    │                               answer could not be read
    ├── SubmitInterrupted           Ctrl-C during a submit; ``partial`` holds
    │                               the result so far
    ├── LocalServerError            the embedded server did not start, or is
    │                               not running (also a RuntimeError)
    └── WaitTimeout                 a wait ran out of time; the work goes on
                                    (also a TimeoutError)

A pointer names the offending input the way a user would look for it:
``requests[2].requests[0].method`` for a batch, ``row 17, column body`` for a
DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._text import plural

__all__ = [
    "AuthenticationError",
    "BatchError",
    "BatchHTTPError",
    "BatchValidationError",
    "LocalServerError",
    "MissingDependency",
    "PayloadTooLargeError",
    "Problem",
    "RateLimitedError",
    "RefSyntaxError",
    "SubmitInterrupted",
    "TransportError",
    "UnsupportedMediaTypeError",
    "WaitTimeout",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, and where.

    >>> Problem("requests[2].method", "unknown method 'FETCH'")
    Problem(pointer='requests[2].method', message="unknown method 'FETCH'")
    """

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer}: {self.message}" if self.pointer else self.message

    def to_wire(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


class BatchError(Exception):
    """Base class of every error batchnb raises on purpose.

    >>> issubclass(BatchValidationError, BatchError)
    True
    """

    #: results that were already final when the error happened (a DataFrame or
    #: a list of responses), so that an interrupted run loses nothing.
    partial: Any = None


class BatchValidationError(BatchError, ValueError):
    """Bad input: every problem found, each with a pointer, before anything is sent.

    >>> err = BatchValidationError([Problem("requests[0].path", "missing")])
    >>> err.problems[0].pointer
    'requests[0].path'
    """

    def __init__(self, problems: Iterable[Problem], message: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        self.message = message or _summarise(self.problems)
        super().__init__(self.message)

    @property
    def pointers(self) -> list[str]:
        """The pointers of every problem, in order."""
        return [p.pointer for p in self.problems]


class RefSyntaxError(BatchValidationError):
    """A ``${result=NAME:JSONPATH}`` reference that cannot be parsed; the message says why.

    >>> from batchnb import ref
    >>> ref("add company", "$.id")
    Traceback (most recent call last):
    ...
    batchnb.RefSyntaxError: 'add company' is not a valid name: use letters, digits, '_', '.', '-'
    """

    def __init__(self, message: str, pointer: str = "") -> None:
        super().__init__([Problem(pointer, message)], message)


class MissingDependency(BatchValidationError, ImportError):
    """An optional library is not installed; the message names the extra that brings it.

    >>> str(MissingDependency("summary() needs matplotlib", "notebook"))
    "summary() needs matplotlib: pip install 'batchnb[notebook]'"
    """

    def __init__(self, what: str, extra: str) -> None:
        message = f"{what}: pip install 'batchnb[{extra}]'"
        super().__init__([Problem("", message)], message)
        self.extra = extra


def _summarise(problems: list[Problem], limit: int = 20) -> str:
    n = len(problems)
    head = f"{plural(n, 'problem')} in the input, nothing was sent:"
    lines = [f"  - {p}" for p in problems[:limit]]
    if n > limit:
        lines.append(f"  … and {n - limit} more (see .problems)")
    return "\n".join([head, *lines])


class BatchHTTPError(BatchError):
    """The server refused the whole batch; nothing in it ran.

    ``status`` is the HTTP status, ``code`` and ``message`` come from the
    server's error body, ``problems`` from its ``details`` pointers.

    >>> err = BatchHTTPError(400, "bad batch", [Problem("requests[0].method", "bad")])
    >>> print(err)
    HTTP 400: bad batch
      - requests[0].method: bad
    """

    def __init__(
        self,
        status: int,
        message: str,
        problems: Iterable[Problem] = (),
        *,
        code: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        text = f"HTTP {status}: {message}"
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems[:20])
        super().__init__(text)

    @property
    def pointers(self) -> list[str]:
        return [p.pointer for p in self.problems]


class AuthenticationError(BatchHTTPError):
    """401: no credentials, or wrong ones. Nothing ran.

    >>> AuthenticationError(401, "Authentication is required").status
    401
    """


class PayloadTooLargeError(BatchHTTPError):
    """413: too many operations, too deep, or too many bytes for the server.

    >>> PayloadTooLargeError(413, "too many operations").status
    413
    """


class UnsupportedMediaTypeError(BatchHTTPError):
    """415: the batch was not sent as ``application/json``.

    >>> UnsupportedMediaTypeError(415, "use application/json").status
    415
    """


class RateLimitedError(BatchHTTPError):
    """429: too many batches at once; come back after ``retry_after`` seconds.

    >>> RateLimitedError(429, "slow down", retry_after=2.0).retry_after
    2.0
    """

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class TransportError(BatchError):
    """The batch could not be delivered, or its answer could not be read.

    ``sent`` tells whether the request may have reached the server: when it
    is True, the outcome of the batch is unknown. ``transient`` tells whether
    trying again may help: False for a certificate that does not verify, a
    proxy that refuses, a host that does not resolve (these are not
    retried). The httpx exception, when there is one, is the ``__cause__``.

    >>> TransportError("connection refused", sent=False).transient
    True
    """

    def __init__(self, message: str, *, sent: bool, transient: bool = True) -> None:
        self.sent = sent
        self.transient = transient
        super().__init__(message)


_BY_STATUS: dict[int, type[BatchHTTPError]] = {
    401: AuthenticationError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitedError,
}


def http_error(status: int, body: Any, retry_after: float | None = None) -> BatchHTTPError:
    """The typed exception for a batch-level error answer (``body`` as parsed JSON)."""
    code = None
    message = f"the server answered HTTP {status}"
    problems: list[Problem] = []
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code") if isinstance(err.get("code"), str) else None
        if isinstance(err.get("message"), str):
            message = err["message"]
        for d in err.get("details") or []:
            if isinstance(d, dict):
                problems.append(Problem(str(d.get("pointer", "")), str(d.get("message", ""))))
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls = _BY_STATUS.get(status, BatchHTTPError)
    if cls is RateLimitedError:
        return RateLimitedError(status, message, problems, code=code, retry_after=retry_after)
    return cls(status, message, problems, code=code)


class SubmitInterrupted(BatchError):
    """A submit was interrupted (Ctrl-C, the notebook's stop button).

    ``partial`` holds the result so far: finished rows with their outcome,
    rows in flight marked "outcome unknown", the rest "not run".

    >>> SubmitInterrupted("stopped", partial=None).partial is None
    True
    """

    def __init__(self, message: str, *, partial: Any) -> None:
        super().__init__(message)
        self.partial = partial


class LocalServerError(BatchError, RuntimeError):
    """The embedded server did not start, or was used while it is not running.

    >>> issubclass(LocalServerError, RuntimeError)
    True
    """


class WaitTimeout(BatchError, TimeoutError):
    """A wait ran out of time; what it waited for is still going on.

    >>> issubclass(WaitTimeout, TimeoutError)
    True
    """
