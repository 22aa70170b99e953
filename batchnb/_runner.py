"""Running a :class:`~batchnb.plan.Plan`: concurrency, cross-batch references, retries, journal, progress.

The rules that keep bulk writes safe live here:

- a batch answered 429 or 503 was not run: it is retried after ``Retry-After``
  (else exponential backoff with jitter), up to ``retries`` times;
- a batch whose outcome is unknown (connection dropped after sending, read
  timeout, truncated answer, 5xx other than 503) is resent only if every
  operation in it is GET, PUT or DELETE; otherwise its rows come back with no
  status and the error "outcome unknown: not resent because it contains POST";
- a batch refused as a whole (400, 401, 413, 415) runs nothing: its rows say
  so, further batches are not started, and the error is raised at the end
  with the whole result attached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any, Awaitable, Callable

from . import refs
from ._exceptions import BatchHTTPError, TransportError, http_error
from .engine import result_lookup
from .journal import Journal, row_key
from .model import IDEMPOTENT_METHODS, Operation, Response, is_idempotent, referenced_names
from .plan import Plan, PlannedBatch

#: sends one batch (wire ops) and returns (status, headers, parsed body); raises TransportError.
Sender = Callable[[list[dict[str, Any]]], Awaitable[tuple[int, dict[str, str], Any]]]

def _unknown_reason(ops: list[Operation]) -> str:
    methods = {o.method for top in ops for _p, o in top.walk()} - IDEMPOTENT_METHODS
    return f"outcome unknown: not resent because it contains {'/'.join(sorted(methods))}" if methods else "outcome unknown"


def _placeholder(op: Operation, status: int | None, error: str, body: Any = None) -> Response:
    resp = Response(op.method, op.path, status, op.name, None, body, error=error, row=op.row)
    resp.responses = [_placeholder(c, status, error, body) for c in op.requests]
    return resp


class Runner:
    """Runs the batches of a plan through ``send``; one instance per submit."""

    def __init__(
        self,
        send: Sender,
        *,
        concurrency: int = 4,
        retries: int = 3,
        retry_operations: bool = False,
        rate: float | None = None,
        journal: Journal | None = None,
        progress: Any = None,
        known: dict[str, Response] | None = None,
        first_batch: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.send = send
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.retry_operations = retry_operations
        self.rate = rate
        self.journal = journal
        self.progress = progress
        self.results: dict[str, Response] = dict(known or {})
        self.first_batch = first_batch
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fatal: BatchHTTPError | None = None
        self.outcomes: dict[int, list[Response]] = {}
        self._in_flight: dict[int, PlannedBatch] = {}
        self._next_start = 0.0
        self._lookup = result_lookup(self.results, defer_missing=True)

    # ------------------------------------------------------------ orchestration

    async def run(self, plan: Plan) -> list[Response]:
        """Every top-level response, in the plan's operation order."""
        done = {b.index: asyncio.Event() for b in plan.batches}
        sem = asyncio.Semaphore(self.concurrency)

        async def one(b: PlannedBatch) -> None:
            try:
                for d in sorted(b.depends_on):
                    await done[d].wait()
                async with sem:
                    if self.fatal is not None:
                        self.outcomes[b.index] = [_placeholder(op, None, f"not run: {self.fatal}") for op in b.operations]
                    else:
                        await self._pace()
                        # Left in place if cancelled: settle() then reports its outcome as unknown.
                        self._in_flight[b.index] = b
                        self.outcomes[b.index] = await self._run_batch(b)
                        self._in_flight.pop(b.index, None)
                    self._record(b, self.outcomes[b.index])
            finally:
                done[b.index].set()

        tasks = [asyncio.ensure_future(one(b)) for b in plan.batches]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._settle_interrupted(plan)
            raise
        return self.collect(plan)

    def not_run(self, plan: Plan) -> list[Response]:
        """Responses for a plan that is not sent because an earlier batch was refused."""
        for b in plan.batches:
            self.outcomes[b.index] = [_placeholder(op, None, f"not run: {self.fatal}") for op in b.operations]
        return self.collect(plan)

    def collect(self, plan: Plan) -> list[Response]:
        out: list[Response] = []
        for b in plan.batches:
            resps = self.outcomes.get(b.index)
            if resps is None:
                resps = [_placeholder(op, None, "not run: interrupted before it was sent") for op in b.operations]
            out.extend(resps)
        return out

    def _settle_interrupted(self, plan: Plan) -> None:
        for b in plan.batches:
            if b.index in self.outcomes:
                continue
            if b.index in self._in_flight:
                reason = "outcome unknown: interrupted while the batch was in flight"
                if not b.idempotent:
                    reason += " (not resent on resume because it contains POST)"
                self.outcomes[b.index] = [_placeholder(op, None, reason) for op in b.operations]

    async def _pace(self) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + 1.0 / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    def _record(self, b: PlannedBatch, responses: list[Response]) -> None:
        number = self.first_batch + b.index
        for top in responses:
            for _p, r in top.walk():
                if r.batch is None:
                    r.batch = number
                if r.name and (r.name not in self.results or r.status is not None):
                    self.results[r.name] = r
        if self.journal is not None:
            self.journal.done(number, responses)
        if self.progress is not None:
            flat = [r for top in responses for _p, r in top.walk()]
            self.progress.update(len(flat))
            self.progress.failed += sum(1 for r in flat if not r.ok)
            self.progress.set_postfix(failed=self.progress.failed, refresh=False)

    # ------------------------------------------------------------ one batch

    async def _run_batch(self, b: PlannedBatch) -> list[Response]:
        number = self.first_batch + b.index
        prepared = [self._prepare(op) for op in b.operations]
        # Operations of this batch that depend on a locally skipped one cannot be sent either.
        dropped = {o.name for (sent, _l), top in zip(prepared, b.operations) if sent is None for _p, o in top.walk() if o.name}
        dropped |= {n for sent, _l in prepared if sent is not None for n in _dropped_names(sent)}
        changed = True
        while changed:
            changed = False
            for i, (sent, local) in enumerate(prepared):
                if sent is None:
                    continue
                pruned = _prune(sent, dropped, local)
                if pruned is not sent:
                    prepared[i] = (pruned, local)
                    changed = True
                    if pruned is None:
                        dropped |= {o.name for _p, o in sent.walk() if o.name}
                    else:
                        dropped |= _dropped_names(pruned)
        to_send = [sent for sent, _l in prepared if sent is not None]
        if self.journal is not None:
            self.journal.sent(number, b.rows, b.idempotent)
        server: list[Response] = []
        attempts = 0
        if to_send:
            server, attempts = await self._send_with_retries(to_send)
            if self.retry_operations:
                server = await self._retry_operations(to_send, server, attempts)
        it = iter(server)
        out = []
        for (sent, local), op in zip(prepared, b.operations):
            if sent is None:
                out.append(local[id(op)])
            else:
                out.append(_merge(op, sent, next(it), local, attempts))
        return out

    def _prepare(self, op: Operation) -> tuple[Operation | None, dict[int, Response]]:
        """The operation with earlier batches' references filled in (None: it cannot run)."""
        local: dict[int, Response] = {}
        return self._prepare_one(op, local), local

    def _prepare_one(self, op: Operation, local: dict[int, Response]) -> Operation | None:
        try:
            path = refs.render(op.path, self._lookup, encode=refs.segment, partial=True)
            headers = {k: refs.render(v, self._lookup, partial=True) for k, v in op.headers.items()} if op.headers else op.headers
            body = refs.resolve_json(op.body, self._lookup, partial=True)
        except refs.Unresolved as exc:
            # Not sent: a failed dependency, or one whose outcome is unknown (424 either way).
            local[id(op)] = _placeholder(op, 424, f"not run: {exc}", {"error": {"code": "failed_dependency", "message": f"not run: {exc}"}})
            return None
        children = []
        for c in op.requests:
            sent = self._prepare_one(c, local)
            if sent is not None:
                children.append(sent)
        new = Operation.__new__(Operation)
        new.__dict__.update(op.__dict__)
        new.path, new.headers, new.body, new.requests = path, headers, body, children
        new._origin = op  # type: ignore[attr-defined]
        return new

    async def _send_with_retries(self, ops: list[Operation]) -> tuple[list[Response], int]:
        wire = [op.to_wire() for op in ops]
        resendable = is_idempotent(ops)
        attempt = 0
        while True:
            attempt += 1
            can_retry = attempt <= self.retries
            try:
                status, headers, body = await self.send(wire)
            except TransportError as exc:
                if (not exc.sent or resendable) and can_retry:
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                reason = f"not run: {exc}" if not exc.sent else (_unknown_reason(ops) if not resendable else f"outcome unknown: {exc}")
                return [_placeholder(op, None, reason) for op in ops], attempt
            if status == 200:
                parsed = _parse_responses(body, ops)
                if parsed is not None:
                    return parsed, attempt
                if resendable and can_retry:
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                reason = _unknown_reason(ops) if not resendable else "outcome unknown: the answer could not be read"
                return [_placeholder(op, None, reason) for op in ops], attempt
            retry_after = _retry_after(headers)
            if status in (429, 503):
                if can_retry:
                    await asyncio.sleep(self._delay(attempt, retry_after))
                    continue
                return [_placeholder(op, None, f"not run: the server answered {status} {attempt} times") for op in ops], attempt
            if status >= 500:
                if resendable and can_retry:
                    await asyncio.sleep(self._delay(attempt, retry_after))
                    continue
                reason = _unknown_reason(ops) if not resendable else f"outcome unknown: the server answered {status}"
                return [_placeholder(op, None, reason) for op in ops], attempt
            err = http_error(status, body, retry_after)
            if self.fatal is None:
                self.fatal = err
            return [_placeholder(op, None, f"not run: the server refused the batch: {err}") for op in ops], attempt

    async def _retry_operations(self, ops: list[Operation], server: list[Response], attempts: int) -> list[Response]:
        """Resend top-level operations answered 429/503 inside a batch that ran.

        Operations that answered 424 only because they depend on one of those
        go again with them; references to operations that did succeed are
        filled in here, so the resent batch stands on its own.
        """
        for r in server:
            r.attempts = attempts
        for _ in range(self.retries):
            again: list[int] = []
            waiting: set[str] = set()
            for i, (op, r) in enumerate(zip(ops, server)):
                names = {o.name for _p, o in op.walk() if o.name}
                if r.status in (429, 503) or (r.status == 424 and _refers_to(op, waiting)):
                    again.append(i)
                    waiting |= names
            if not any(server[i].status in (429, 503) for i in again):
                break
            for top in server:
                for _p, r in top.walk():
                    if r.name and r.name not in waiting and r.status is not None:
                        self.results[r.name] = r
            delays = [_retry_after(server[i].headers or {}) for i in again]
            await asyncio.sleep(max([d for d in delays if d is not None], default=self.backoff))
            local: dict[int, Response] = {}
            prepared = [(i, self._prepare_one(ops[i], local)) for i in again]
            to_send = [(i, p) for i, p in prepared if p is not None]
            redo, sent_attempts = await self._send_with_retries([p for _i, p in to_send]) if to_send else ([], 0)
            for (i, p), r in zip(to_send, redo):
                merged = _merge(ops[i], p, r, local, (server[i].attempts or 1) + sent_attempts)
                server[i] = merged
            for i, p in prepared:
                if p is None:
                    server[i] = local[id(ops[i])]
        return server

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)
        return base * (0.5 + random.random() / 2)


def _retry_after(headers: dict[str, str]) -> float | None:
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


def _parse_responses(body: Any, ops: list[Operation]) -> list[Response] | None:
    """The server's responses, if they match what was sent in shape; else None."""
    if not isinstance(body, dict) or not isinstance(body.get("responses"), list):
        return None
    resps = [Response.from_wire(r) for r in body["responses"] if isinstance(r, dict)]

    def same_shape(o: list[Operation], r: list[Response]) -> bool:
        return len(o) == len(r) and all(same_shape(a.requests, b.responses) for a, b in zip(o, r))

    return resps if same_shape(ops, resps) else None


def _refers_to(op: Operation, names: set[str]) -> bool:
    """Whether ``op`` (or a child) references one of ``names``."""
    if not names:
        return False
    return any(referenced_names(o) & names for _p, o in op.walk())


def _dropped_names(op: Operation) -> set[str]:
    """Names inside the original operation that did not make it into the prepared one."""
    origin = getattr(op, "_origin", op)
    kept = {o.name for _p, o in op.walk() if o.name}
    return {o.name for _p, o in origin.walk() if o.name and o.name not in kept}


def _prune(op: Operation, dropped: set[str], local: dict[int, Response]) -> Operation | None:
    """``op`` without the parts that reference a dropped name (those answer 424 locally)."""
    hit = referenced_names(op) & dropped
    if hit:
        origin = getattr(op, "_origin", op)
        why = f"not run: it references {sorted(hit)[0]!r}, which could not run"
        local[id(origin)] = _placeholder(origin, 424, why, {"error": {"code": "failed_dependency", "message": why}})
        return None
    children = [_prune(c, dropped, local) for c in op.requests]
    if all(a is b for a, b in zip(children, op.requests)):
        return op
    new = dataclasses.replace(op, requests=[c for c in children if c is not None])
    new._origin = getattr(op, "_origin", op)  # type: ignore[attr-defined]
    return new


def _merge(op: Operation, sent: Operation, resp: Response, local: dict[int, Response], attempts: int) -> Response:
    """The response tree for ``op``, with locally skipped children put back in place."""
    resp.row = op.row
    if resp.attempts is None:
        resp.attempts = attempts
    children = iter(zip(sent.requests, resp.responses))
    merged = []
    for child in op.requests:
        if id(child) in local:
            merged.append(local[id(child)])
            continue
        s, r = next(children)
        merged.append(_merge(child, s, r, local, attempts))
    resp.responses = merged
    return resp


__all__ = ["Runner", "row_key"]
