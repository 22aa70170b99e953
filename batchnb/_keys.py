"""Idempotency keys for one run: what lets a POST or PATCH be sent again safely.

Every POST and PATCH of a run gets a key derived from the run's id and the
operation's row, so it is the same in every attempt and after a resume (the
journal records the run's id). A key the user set (a ``headers`` column, the
Composer) is never replaced. When the API honours keys, a batch whose every
POST and PATCH carries one may be resent when its outcome is unknown: the
API answers a repeat with the first answer instead of acting twice.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Iterable, Mapping

from . import rules
from .journal import row_key
from .model import Operation

__all__ = ["HEADER", "RunKeys", "keyed", "new_run_id"]

HEADER = "Idempotency-Key"
_LOWER = HEADER.lower()


def new_run_id() -> str:
    """A fresh id for a run (it names every key the run sends).

    >>> len(new_run_id())
    16
    """
    return secrets.token_hex(8)


def user_key(op: Operation) -> str | None:
    """The key the operation carries already, if any (any case of the header's name)."""
    for name, value in (op.headers or {}).items():
        if name.lower() == _LOWER:
            return value
    return None


def keyed(ops: Iterable[Operation]) -> bool:
    """Whether every POST and PATCH among ``ops`` (children included) carries a key.

    >>> keyed([Operation("GET", "/x"), Operation("POST", "/y", headers={"Idempotency-Key": '"k"'})])
    True
    >>> keyed([Operation("POST", "/y")])
    False
    """
    return all(rules.is_idempotent_method(o.method) or user_key(o) is not None for top in ops for _p, o in top.walk())


class RunKeys:
    """The keys of one run, one per POST and PATCH, derived from the run's id and each row.

    >>> keys = RunKeys("0123456789abcdef")
    >>> ops = [Operation("POST", "/c", row="r1"), Operation("GET", "/c", row="r2")]
    >>> keys.assign(ops)
    >>> keys.headers_for(ops[0])
    {'Idempotency-Key': '"0123456789abcdef-6f62ce5f23ca8ce2"'}
    >>> keys.headers_for(ops[1]) is None
    True
    """

    def __init__(self, run_id: str, *, unique_rows: bool = False) -> None:
        self.run_id = run_id
        # With a label per row (a frame with a unique index) no row is a
        # label's second one, and a million labels need not be remembered.
        self._unique_rows = unique_rows
        self._seen: dict[str, int] = {}
        self._keys: dict[int, str] = {}

    def assign(self, ops: Iterable[Operation]) -> None:
        """Give a key to every POST and PATCH among ``ops`` that has none, in run order.

        Two rows with one label get different keys (the second counts as the label's second row).
        """
        for top in ops:
            for op in _each(top):
                if rules.is_idempotent_method(op.method) or (op.headers and user_key(op) is not None):
                    continue
                label = row_key(op.row)
                n = 0 if self._unique_rows else self._seen.get(label, 0)
                if not self._unique_rows:
                    self._seen[label] = n + 1
                digest = hashlib.blake2b(f"{label}#{n}".encode(), digest_size=8, key=self.run_id.encode()).hexdigest()
                self._keys[id(op)] = f'"{self.run_id}-{digest}"'

    def forget(self, ops: Iterable[Operation]) -> None:
        """Drop the keys of operations that have been sent (a large run goes a chunk at a time)."""
        for top in ops:
            for op in _each(top):
                self._keys.pop(id(op), None)

    def headers_for(self, op: Operation) -> Mapping[str, str] | None:
        """The header to add to ``op`` as it is sent, or None."""
        key = self._keys.get(id(op))
        return {HEADER: key} if key is not None else None

    def recorded(self, ops: Iterable[Operation]) -> dict[str, Any]:
        """Row key -> the key each operation goes with (for the journal, before the batch leaves)."""
        out = {}
        for top in ops:
            for _p, op in top.walk():
                key = self._keys.get(id(op)) or user_key(op)
                if key is not None:
                    out[row_key(op.row)] = key
        return out


def _each(top: Operation) -> Iterable[Operation]:
    """``top`` and every operation under it (most have none: no generator for them)."""
    return (top,) if not top.requests else [op for _p, op in top.walk()]
