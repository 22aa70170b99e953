"""Idempotency keys for one run: what lets a POST or PATCH be sent again safely.

Every POST and PATCH of a run gets a key: the run's id and a number, counted
in the order the operations are sent. An operation keeps its key in every
attempt of the run; a run that continues another (resume) sends each row it
sends again with the key the journal recorded for it, and numbers the rest
under an id of its own. A key the user set (a ``headers`` column, the
Composer) is never replaced. When the API honours keys, a batch whose every
POST and PATCH carries one may be resent when its outcome is unknown: the
API answers a repeat with the first answer instead of acting twice.

Numbered keys sort in the order they are sent, so an API that indexes its
keys (the demo keeps them in SQLite) adds each batch's keys at one end of
its index, writing a page or two per batch rather than a page per key; and
they say nothing of the rows (no label reaches the API).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from . import _rules
from ._journal import row_key
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
    return all(_rules.is_idempotent_method(o.method) or user_key(o) is not None for top in ops for _p, o in top.walk())


class RunKeys:
    """The keys of one run, one per POST and PATCH, numbered in the order they are given.

    >>> keys = RunKeys("0123456789abcdef")
    >>> ops = [Operation("POST", "/c", row="r1"), Operation("GET", "/c", row="r2"), Operation("PATCH", "/c/1", row="r3")]
    >>> keys.assign(ops)
    >>> keys.headers_for(ops[0]), keys.headers_for(ops[2])
    ({'Idempotency-Key': '"0123456789abcdef-0000000000000000"'}, {'Idempotency-Key': '"0123456789abcdef-0000000000000001"'})
    >>> keys.headers_for(ops[1]) is None
    True

    ``recorded`` (row key -> key) are the keys a journal recorded for rows an
    earlier run sent: a row among them gets its recorded key back, once (a
    second row with the same label is another operation, and gets a new key).
    """

    def __init__(self, run_id: str, *, recorded: Mapping[str, str] | None = None) -> None:
        self.run_id = run_id
        self._recorded = dict(recorded or {})
        self._next = 0
        self._keys: dict[int, str] = {}

    def assign(self, ops: Iterable[Operation]) -> None:
        """Give a key to every POST and PATCH among ``ops`` that has none, in run order."""
        for top in ops:
            for op in _each(top):
                if _rules.is_idempotent_method(op.method) or (op.headers and user_key(op) is not None):
                    continue
                key = self._recorded.pop(row_key(op.row), None) if self._recorded else None
                if key is None:
                    key = f'"{self.run_id}-{self._next:016x}"'
                    self._next += 1
                self._keys[id(op)] = key

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
