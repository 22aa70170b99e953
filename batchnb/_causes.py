"""The failures of a result grouped by cause: what the HTML report and ``batchnb run`` show first.

Fifty failed rows are rarely fifty problems. A cause is a status and the
API's reason (the field and message of its error), read with what differs
from row to row set aside: ids, numbers and quoted values. Twenty-five rows
refused with ``400 name: 'Acme 12' is taken`` and ``400 name: 'Acme 13' is
taken`` are one cause, ``400 name: '…' is taken``.

    >>> import pandas as pd
    >>> result = pd.DataFrame({"status": [201, 400, 400, 404], "ok": [True, False, False, False],
    ...                        "error": [None, "400 name: 'Acme 12' is taken", "400 name: 'Acme 13' is taken",
    ...                                  "HTTP 404"]})
    >>> for cause in failure_causes(result):
    ...     print(cause)
    400 name: '…' is taken — 2 rows: 1, 2
    404 — 1 row: 3
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._text import plural

__all__ = ["Cause", "failure_causes", "failure_text", "reason"]

#: how many row labels a cause lists before it stops with "…".
SHOWN_LABELS = 10

_MASKS = (
    # Quoted values first: what is inside may hold numbers or ids of its own.
    (re.compile(r"'[^']*'"), "'…'"),
    (re.compile(r'"[^"]*"'), '"…"'),
    (re.compile(r"“[^”]*”"), "“…”"),
    # UUIDs, the demo API's ids, placeholders of a stable view (batchnb._stable's patterns).
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\b(?:co|sv|st|ap)_[0-9a-f]{12}\b|<id\d+>"), "<id>"),
    # Other APIs' ids: a long word holding letters and at least three digits (ord_8f3k29x0).
    (re.compile(r"\b(?=[\w-]*[A-Za-z])(?=(?:[\w-]*\d){3})[\w-]{8,}\b"), "<id>"),
    # Numbers standing alone (not the 2 of address2, which is part of a name).
    (re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?![\w])"), "<n>"),
)


def reason(status: int | None, error: str) -> str:
    """A row's error without its status in front (the status is shown next to it, once).

    >>> reason(400, "400 address.zip: must be 5 digits"), reason(401, "HTTP 401: invalid_token"), reason(404, "HTTP 404")
    ('address.zip: must be 5 digits', 'invalid_token', '')
    >>> reason(409, "name taken")
    'name taken'
    """
    if status is not None:
        for lead in (f"{status} ", f"HTTP {status}: ", f"HTTP {status}"):
            if error.startswith(lead):
                return error[len(lead) :].strip()
    return error.strip()


def _mask(text: str) -> str:
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return text


@dataclass
class Cause:
    """One cause of failure: its status, what the API said, and the rows that failed so.

    >>> print(Cause(400, "name: must not be empty", [0, 17, 51]))
    400 name: must not be empty — 3 rows: 0, 17, 51
    """

    status: int | None
    #: the reason as every row of the group says it, or masked ('…', <id>, <n>) where they differ.
    text: str
    labels: list[Hashable] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The status and the reason: ``400 name: must not be empty``, or ``no status: connection reset``."""
        if self.status is None:
            said = self.text or "the operation did not run"
            return said if said.startswith("no status") else f"no status: {said}"
        return f"{self.status} {self.text}".rstrip()

    def labels_text(self, shown: int = SHOWN_LABELS) -> str:
        """The first labels of the rows: ``0, 17, 51, …``."""
        more = ", …" if len(self.labels) > shown else ""
        return ", ".join(str(label) for label in self.labels[:shown]) + more

    def rows_text(self, shown: int = SHOWN_LABELS) -> str:
        """How many rows, and the first labels: ``3 rows: 0, 17, 51``."""
        return f"{plural(len(self.labels), 'row')}: {self.labels_text(shown)}"

    def __str__(self) -> str:
        return f"{self.title} — {self.rows_text()}"


def failure_text(status: Any, error: Any) -> str:
    """A failed row's status and error, the status said once.

    >>> failure_text(400, "400 address.zip: must be 5 digits"), failure_text(None, "connection reset")
    ('400 address.zip: must be 5 digits', 'no status: connection reset')
    """
    code = _status(status)
    return Cause(code, reason(code, _text(error))).title


def _status(value: Any) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _ok(result: pd.DataFrame) -> np.ndarray:
    """Which rows succeeded: the ``ok`` column, else a 2xx status (as the report reads it)."""
    if "ok" in result.columns:
        return result["ok"].fillna(False).astype(bool).to_numpy()
    if "status" not in result.columns:
        return np.zeros(len(result), dtype=bool)  # no status: nothing ran
    status = pd.to_numeric(result["status"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return (status >= 200) & (status < 300)


def failure_causes(result: pd.DataFrame) -> list[Cause]:
    """The rows that are not ok, grouped by cause: most rows first, then in order of first appearance."""
    failed = result[~_ok(result)]
    statuses = failed["status"].tolist() if "status" in failed.columns else [None] * len(failed)
    errors = failed["error"].tolist() if "error" in failed.columns else [None] * len(failed)
    groups: dict[tuple[int | None, str], Cause] = {}
    said: dict[tuple[int | None, str], set[str]] = {}
    for label, status, error in zip(failed.index.tolist(), statuses, errors):
        code = _status(status)
        why = reason(code, _text(error))
        key = (code, _mask(why))
        cause = groups.get(key)
        if cause is None:
            cause = groups[key] = Cause(code, why)
            said[key] = set()
        cause.labels.append(label)
        said[key].add(why)
    for key, cause in groups.items():
        if len(said[key]) > 1:
            cause.text = key[1]
    # sorted() is stable: among causes of as many rows, the first seen comes first.
    return sorted(groups.values(), key=lambda c: -len(c.labels))
