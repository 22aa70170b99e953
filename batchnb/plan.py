"""Splitting any number of operations into batches that fit the server's limits.

An operation always travels with its children. Operations linked by a
reference travel together when the whole chain fits in one batch; when it
does not, the chain is cut into consecutive batches and the client fills in
the references that cross a cut from the results of the earlier batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _rules
from ._exceptions import BatchValidationError, Problem
from ._text import plural
from .model import Operation, is_idempotent

__all__ = ["Plan", "PlannedBatch", "batch_fill", "make_plan"]


@dataclass
class PlannedBatch:
    """One HTTP call of a plan: its operations (children attached) and what it waits for.

    >>> from batchnb.plan import make_plan
    >>> plan = make_plan([Operation("POST", "/c", name="co"), Operation("GET", "/c/${result=co:$.id}")], max_requests=1)
    >>> [(b.index, b.size, sorted(b.depends_on), sorted(b.client_refs)) for b in plan.batches]
    [(0, 1, [], []), (1, 1, [0], ['co'])]
    """

    index: int
    operations: list[Operation]
    size: int
    #: batches whose results this one needs before it can be sent.
    depends_on: set[int] = field(default_factory=set)
    #: names from other batches (or earlier runs) that the client fills in.
    client_refs: set[str] = field(default_factory=set)

    @property
    def rows(self) -> list[Any]:
        """The row labels (or positions) this batch carries, depth first."""
        return [op.row for top in self.operations for _p, op in top.walk()]

    #: every POST and PATCH goes with an idempotency key the API honours.
    keyed: bool = False

    @property
    def idempotent(self) -> bool:
        """True when the batch holds only GET, PUT and DELETE: resending it changes nothing."""
        return is_idempotent(self.operations)

    @property
    def resendable(self) -> bool:
        """True when resending the batch cannot create anything twice (idempotent, or keyed)."""
        return self.keyed or self.idempotent

    @property
    def delivery(self) -> str:
        """What a run promises for this batch's operations, in words.

        >>> PlannedBatch(0, [Operation("POST", "/c")], 1).delivery
        'at most once (POST without an idempotency key; outcome unknown if the connection drops)'
        """
        if self.idempotent:
            return "at least once (GET, PUT and DELETE: repeating them is harmless)"
        if self.keyed:
            return "exactly once (every POST and PATCH has an idempotency key the API honours)"
        methods = "/".join(
            sorted(
                {
                    o.method
                    for top in self.operations
                    for _p, o in top.walk()
                    if not _rules.is_idempotent_method(o.method)
                }
            )
        )
        return f"at most once ({methods} without an idempotency key; outcome unknown if the connection drops)"


@dataclass
class Plan:
    """How a submit will run: the HTTP calls, their rows, and the references the client resolves.

    >>> plan = client.submit(df, method="POST", path="/api/2.1/scheduling/companies", body=["name"], dry_run=True)
    >>> plan.calls, plan.to_frame()["operations"].tolist()
    (1, [3])
    """

    batches: list[PlannedBatch]
    max_requests: int
    max_depth: int
    #: names whose results came from before this submit (filled in by the client).
    known: frozenset[str] = frozenset()
    #: operations the server runs at once in each batch (``submit(parallel=…)``).
    parallel: int = 1

    @property
    def calls(self) -> int:
        """How many HTTP calls (batches) the submit will make."""
        return len(self.batches)

    @property
    def operations(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def client_resolved(self) -> list[tuple[int, str]]:
        """(batch, name) for every reference the client fills in across batches."""
        return [(b.index, n) for b in self.batches for n in sorted(b.client_refs)]

    @property
    def from_known(self) -> list[tuple[int, str]]:
        """(batch, name) for every reference filled in from earlier results (``submit(known=…)``, a resumed journal)."""
        return [(b, n) for b, n in self.client_resolved if n in self.known]

    def to_frame(self) -> Any:
        """One row per batch: its size, first and last row, and what it waits for."""
        import pandas as pd

        return pd.DataFrame(
            {
                "operations": [b.size for b in self.batches],
                "rows": [b.rows for b in self.batches],
                "depends_on": [sorted(b.depends_on) for b in self.batches],
                "client_refs": [sorted(b.client_refs) for b in self.batches],
                "resendable": [b.resendable for b in self.batches],
                "delivery": [b.delivery for b in self.batches],
            },
            index=pd.RangeIndex(len(self.batches), name="batch"),
        )

    def __repr__(self) -> str:
        return f"Plan({self.summary})"

    @property
    def summary(self) -> str:
        """The plan in one sentence."""
        cross, known = len(self.client_resolved), len(self.from_known)
        earlier = f", {known} of them from earlier results" if known else ""
        fill = batch_fill(self.max_requests, self.parallel)
        filled = f" (filled to {fill}, a multiple of parallel={self.parallel})" if fill < self.max_requests else ""
        return (
            f"{plural(self.operations, 'operation')} in {plural(self.calls, 'HTTP call')} of at most {self.max_requests}{filled}; "
            f"{plural(cross, 'reference')} filled in by the client across batches{earlier}"
        )


#: one unit (an operation with its children): its size, the names it holds, the names it needs, its depth.
_Unit = tuple[int, set[str], set[str], int]


def _names_and_refs(op: Operation) -> _Unit:
    """One unit (an operation with its children): its size, the names it holds,
    the names it needs from outside, and its depth."""
    if not op.requests:  # most operations: one, with no children
        own = {op.name} if op.name else set()
        return 1, own, op.referenced_names() - own, 1
    names: set[str] = set()
    used: set[str] = set()
    for _p, o in op.walk():
        if o.name:
            names.add(o.name)
        used |= o.referenced_names()
    shape = _rules.measure([op], lambda o: o.requests)
    return shape.size, names, used - names, shape.depth


def batch_fill(max_requests: int, parallel: int = 1) -> int:
    """How many operations a batch is filled to: the largest multiple of ``parallel`` within ``max_requests``.

    >>> batch_fill(50, 16), batch_fill(50, 1), batch_fill(50, 30), batch_fill(50, 64)
    (48, 50, 30, 50)

    The server runs ``parallel`` of a batch's operations at once, so a batch
    of n takes ceil(n / parallel) rounds of the API's latency: 50 with
    parallel=16 take 4 rounds (the last with 2 in flight), 48 take 3, every
    round full. Never fewer than ``parallel``: with ``parallel`` at or above
    ``max_requests`` the whole batch is one round anyway.
    """
    if parallel <= 1 or parallel >= max_requests:
        return max_requests
    return max_requests // parallel * parallel


def make_plan(
    operations: Iterable[Operation],
    *,
    max_requests: int = _rules.DEFAULT_MAX_REQUESTS,
    max_depth: int = _rules.DEFAULT_MAX_DEPTH,
    known: Iterable[str] = (),
    parallel: int = 1,
    concurrency: int = 1,
) -> Plan:
    """Split top-level operations (children attached) into batches within the limits.

    ``known`` names ran before (an earlier run being resumed); references to
    them are filled in by the client.

    >>> ops = [Operation("POST", "/c", name=f"c{i}") for i in range(3)]
    >>> make_plan(ops, max_requests=2).calls
    2

    ``parallel`` is how many of a batch's operations the server runs at
    once: batches are then filled to :func:`batch_fill` operations (48 of
    50 with parallel=16), so that no round of the API's latency runs a few
    operations alone. A chain of linked operations that fits in
    ``max_requests`` still travels whole, in a batch of its own if need be.

    >>> [b.size for b in make_plan([Operation("GET", f"/t/{i}") for i in range(100)], parallel=16).batches]
    [48, 48, 4]

    ``concurrency`` is how many batches will be in flight at once. With
    ``parallel``, a last round of batches that would leave some of them idle
    (48 and 32 operations for 4 at once, the last 0.3 s of a run spent on two
    of four) is spread over all of them, in whole rounds of ``parallel``.

    >>> [b.size for b in make_plan([Operation("GET", f"/t/{i}") for i in range(2000)], parallel=16, concurrency=4).batches][-6:]
    [48, 48, 48, 32, 32, 16]
    """
    ops = list(operations)
    known = set(known)
    problems: list[Problem] = []
    info = [_names_and_refs(op) for op in ops]
    owner: dict[str, int] = {}
    for u, (size, names, _used, depth) in enumerate(info):
        where = _where(ops[u], u)
        if size > max_requests:
            problems.append(
                Problem(where, f"travels with its children as one unit: {_rules.too_many(size, max_requests)}")
            )
        if depth > max_depth:
            problems.append(Problem(where, _rules.too_deep(depth, max_depth)))
        for n in names:
            owner.setdefault(n, u)
    if problems:
        raise BatchValidationError(problems)

    # Units linked by references form chains (union-find over top-level operations).
    parent = list(range(len(ops)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, (_s, _n, used, _d) in enumerate(info):
        for name in used:
            v = owner.get(name)
            if v is not None:
                ru, rv = find(u), find(v)
                if ru != rv:
                    parent[max(ru, rv)] = min(ru, rv)

    chains: dict[int, list[int]] = {}
    for u in range(len(ops)):
        chains.setdefault(find(u), []).append(u)

    groups: list[list[int]] = []
    for members in chains.values():
        total = sum(info[u][0] for u in members)
        if total <= max_requests:
            groups.append(members)
            continue
        chunk: list[int] = []
        filled = 0
        for u in members:
            if filled + info[u][0] > max_requests:
                groups.append(chunk)
                chunk, filled = [], 0
            chunk.append(u)
            filled += info[u][0]
        groups.append(chunk)
    groups.sort(key=lambda g: g[0])

    fill = batch_fill(max_requests, parallel)
    packed = _pack(groups, info, fill)
    if 1 < parallel < max_requests and concurrency > 1:
        packed = _spread_last_round(packed, info, parallel, concurrency, fill)
    batches = [_make(i, [u for g in batch for u in g], ops, info) for i, batch in enumerate(packed)]
    batch_of: dict[int, int] = {}
    for b in batches:
        for op in b.operations:
            batch_of[id(op)] = b.index
    for b, units in zip(batches, _units_of(batches, ops)):
        for u in units:
            for name in info[u][2]:
                v = owner.get(name)
                if v is None:
                    if name in known:
                        b.client_refs.add(name)
                    continue
                other = batch_of[id(ops[v])]
                if other != b.index:
                    b.depends_on.add(other)
                    b.client_refs.add(name)
    return Plan(batches, max_requests, max_depth, frozenset(known), parallel)


def _pack(groups: list[list[int]], info: list[_Unit], fill: int) -> list[list[list[int]]]:
    """Groups (of units, in order) into batches of at most ``fill`` operations; a larger group goes alone."""
    packed: list[list[list[int]]] = []
    current: list[list[int]] = []
    filled = 0
    for g in groups:
        size = sum(info[u][0] for u in g)
        if current and filled + size > fill:
            packed.append(current)
            current, filled = [], 0
        current.append(g)
        filled += size
    if current:
        packed.append(current)
    return packed


def _spread_last_round(
    packed: list[list[list[int]]], info: list[_Unit], parallel: int, concurrency: int, fill: int
) -> list[list[list[int]]]:
    """The batches of a last round that would leave some of ``concurrency`` slots idle, spread over all of them.

    Filled to whole rounds of ``parallel`` still: 48 + 32 operations for 4
    slots become 32 + 32 + 16, two rounds of the API's latency at most
    instead of three.
    """
    left = len(packed) % concurrency
    if left == 0:
        return packed
    tail = [g for batch in packed[-left:] for g in batch]
    total = sum(info[u][0] for g in tail for u in g)
    spread = min(fill, parallel * -(-total // (parallel * concurrency)))
    return packed[:-left] + _pack(tail, info, spread)


def _make(index: int, units: list[int], ops: list[Operation], info: list[_Unit]) -> PlannedBatch:
    units = sorted(units)
    return PlannedBatch(index, [ops[u] for u in units], sum(info[u][0] for u in units))


def _units_of(batches: list[PlannedBatch], ops: list[Operation]) -> list[list[int]]:
    position = {id(op): i for i, op in enumerate(ops)}
    return [[position[id(op)] for op in b.operations] for b in batches]


def _where(op: Operation, position: int) -> str:
    return f"row {op.row!r}" if op.row is not None else f"requests[{position}]"
