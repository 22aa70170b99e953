"""What one batch may ask of the server: :class:`Limits`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import rules

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """What one batch may ask of the server; ``GET /api/2.3/batch`` announces them.

    >>> Limits(max_requests=100).to_wire()["maxRequests"]
    100
    """

    max_requests: int = rules.DEFAULT_MAX_REQUESTS
    max_depth: int = rules.DEFAULT_MAX_DEPTH
    max_body_bytes: int = 1024 * 1024
    max_response_bytes: int = 10 * 1024 * 1024
    operation_timeout: float = 30.0
    batch_timeout: float = 300.0
    max_concurrent_batches: int = 32

    def to_wire(self) -> dict[str, Any]:
        """The limits as ``GET /api/2.3/batch`` answers them."""
        return {
            "version": "2.3",
            "maxRequests": self.max_requests,
            "maxDepth": self.max_depth,
            "maxBodyBytes": self.max_body_bytes,
            "maxResponseBytes": self.max_response_bytes,
            "operationTimeout": self.operation_timeout,
            "batchTimeout": self.batch_timeout,
        }
