"""Running a :class:`~batchnb.Plan`: concurrency, cross-batch references, retries, journal, progress.

The rules that keep bulk writes safe live here:

- a batch answered 429 or 503 was not run: it is retried after what the
  answer says (``Retry-After``, the RateLimit headers; else exponential
  backoff with jitter), until ``retry_for`` seconds have passed; so are the
  operations answered 429 or 503 inside a batch that ran (``retry_operations``);
- a :class:`~batchnb._ratelimit.Throttle` paces the operations of every batch
  sent (a batch of 50 spends 50), and learns from the 429s; once it paces, a
  batch goes out in parts of a tenth of a second's operations (a server runs
  a batch's operations back to back: a whole one is a burst), cut only
  between operations that do not refer to each other;
- a batch whose outcome is unknown (connection dropped after sending, read
  timeout, truncated answer, 5xx other than 503) is resent only if every
  operation in it is GET, PUT or DELETE; otherwise its rows come back with no
  status and the error "outcome unknown: not resent because it contains POST";
- a batch refused as a whole (400, 401, 413, 415) runs nothing: its rows say
  so, further batches are not started, and the error is raised at the end
  with the whole result attached;
- with an auth flow, operations answered 401 inside a batch did not run:
  when the flow can be told that their token is spent (``invalidate``, as
  :class:`~batchnb.auth.ClientCredentials` has), they go again once, with
  their dependents that answered 424 because of them. An operation sent
  with the run's credentials that is answered 401 after that (or at all,
  when the flow cannot be told; in direct mode the flow resends each
  refused operation itself) cannot be cured: the run stops sending, the
  rows not sent say "not run: unauthorized (…)", and
  :class:`~batchnb.AuthenticationError` is raised at the end. So does a
  token endpoint that refuses the client. Operations that carry their own
  ``Authorization`` are the user's: their 401 is only theirs.

What a batch *means* (which operations cannot run because an earlier batch's
result failed, and which depend on those) is the engine's: see
:func:`batchnb._engine.prepare`. Batches go out through a
:class:`~batchnb._senders.Sender`.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from typing import Any

from . import _rules
from ._engine import prepare, result_lookup
from ._exceptions import AuthenticationError, BatchHTTPError, TransportError, http_error
from ._journal import Journal
from ._keys import RunKeys, keyed
from ._ratelimit import Throttle, advise, retry_wait
from ._senders import Sender, own_authorization, retry_after
from ._text import plural
from .model import Operation, Response, is_idempotent
from .plan import Plan, PlannedBatch

__all__ = ["Runner"]


def _unknown_reason(ops: list[Operation]) -> str:
    methods = {o.method for top in ops for _p, o in top.walk() if not _rules.is_idempotent_method(o.method)}
    return (
        f"outcome unknown: not resent because it contains {'/'.join(sorted(methods))}" if methods else "outcome unknown"
    )


def _placeholder(op: Operation, error: str) -> Response:
    """A response with no status for ``op`` and its children: not run, or outcome unknown."""
    resp = Response(op.method, op.path, None, op.name, None, None, error=error, row=op.row)
    resp.responses = [_placeholder(c, error) for c in op.requests]
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
        batch_rate: float | None = None,
        retry_for: float = 300.0,
        throttle: Throttle | None = None,
        journal: Journal | None = None,
        progress: Any = None,
        known: dict[str, Response] | None = None,
        first_batch: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        keys: RunKeys | None = None,
    ) -> None:
        self.send = send
        #: the run's idempotency keys, when the API honours them (None: it does not, or they are off).
        self.keys = keys
        self.concurrency = max(1, concurrency)
        self.retries = max(0, retries)
        self.retry_operations = retry_operations
        #: batches per second (the pace of operations is the throttle's).
        self.batch_rate = batch_rate
        #: seconds within which what was not run (429, 503) is sent again.
        self.retry_for = retry_for
        self.throttle = throttle
        self.journal = journal
        self.progress = progress
        self.results: dict[str, Response] = dict(known or {})
        self.first_batch = first_batch
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.fatal: BatchHTTPError | None = None
        #: why the run stopped sending, when operations were refused with its credentials (401).
        self._unauthorized: str | None = None
        #: the run signs with an auth flow: a 401 it could not cure stops it.
        self._flow = getattr(send, "auth", None) is not None
        #: the flow can be told a token is spent: operations refused with it go again once.
        self._refreshes = bool(getattr(send, "refreshes", False))
        # Direct mode's dispatcher already sent each operation answered 429 or 503 again, for the whole
        # retry_for: sending it again here would give it a second retry_for.
        self._sender_retries = bool(getattr(send, "retries", False))
        #: how many batches reached the server (answered, or lost after sending).
        self.delivered = 0
        #: why the last batch that never left could not be delivered.
        self.undelivered: TransportError | None = None
        self.outcomes: dict[int, list[Response]] = {}
        self._in_flight: dict[int, PlannedBatch] = {}
        self._next_start = 0.0
        self._lookup = result_lookup(self.results, defer_missing=True)

    # ------------------------------------------------------------ orchestration

    async def run(self, plan: Plan, *, on_first_answer: Callable[[], None] | None = None) -> list[Response]:
        """Every top-level response, in the plan's operation order.

        ``on_first_answer`` is called once, when the first batch has been
        answered: by then every slot holds a batch, and work on the side
        (building the next chunk) keeps no batch waiting to be sent.
        """
        done = {b.index: asyncio.Event() for b in plan.batches}
        sem = asyncio.Semaphore(self.concurrency)
        first_answer = on_first_answer

        async def one(b: PlannedBatch) -> None:
            nonlocal first_answer
            try:
                for d in sorted(b.depends_on):
                    await done[d].wait()
                async with sem:
                    if self.fatal is not None:
                        self.outcomes[b.index] = [_placeholder(op, self._stopped()) for op in b.operations]
                    else:
                        await self._pace()
                        # Left in place if cancelled: settle() then reports its outcome as unknown.
                        self._in_flight[b.index] = b
                        self.outcomes[b.index] = await self._run_batch(b)
                        self._in_flight.pop(b.index, None)
                    self._record(b, self.outcomes[b.index])
                    if first_answer is not None:
                        call, first_answer = first_answer, None
                        call()
            finally:
                done[b.index].set()

        tasks = [asyncio.ensure_future(one(b)) for b in plan.batches]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # Cancelled, or one batch raised (the journal's disk full, say): every other batch stops here,
            # before this raises, so that nothing is sent after the submit has failed.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._settle_interrupted(plan)
            raise
        return self.collect(plan)

    def not_run(self, plan: Plan) -> list[Response]:
        """Responses for a plan that is not sent because an earlier batch was refused."""
        for b in plan.batches:
            self.outcomes[b.index] = [_placeholder(op, self._stopped()) for op in b.operations]
        return self.collect(plan)

    def _stopped(self) -> str:
        """Why a batch is not sent after the run stopped."""
        if isinstance(self.fatal, AuthenticationError):
            return f"not run: unauthorized ({self._unauthorized or self.fatal.message})"
        return f"not run: {self.fatal}"

    def collect(self, plan: Plan) -> list[Response]:
        out: list[Response] = []
        for b in plan.batches:
            resps = self.outcomes.get(b.index)
            if resps is None:
                resps = [_placeholder(op, "not run: interrupted before it was sent") for op in b.operations]
            out.extend(resps)
        return out

    def _settle_interrupted(self, plan: Plan) -> None:
        for b in plan.batches:
            if b.index in self.outcomes:
                continue
            if b.index in self._in_flight:
                reason = "outcome unknown: interrupted while the batch was in flight"
                if not b.resendable:
                    reason += " (not resent on resume because it contains POST)"
                self.outcomes[b.index] = [_placeholder(op, reason) for op in b.operations]

    async def _pace(self) -> None:
        if not self.batch_rate:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + 1.0 / self.batch_rate
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
        prepared = prepare(b.operations, self._lookup, extra_headers=self.keys.headers_for if self.keys else None)
        if self.journal is not None:
            recorded = self.keys.recorded(b.operations) if self.keys is not None else None
            self.journal.sent(number, b.rows, b.resendable, keys=recorded)
        server: list[Response] = []
        if prepared.sendable:
            budget = _Budget(self.retry_for)
            server, attempts = await self._send_with_retries(prepared.sendable, budget)
            for top in server:
                for _p, r in top.walk():
                    if r.attempts is None:
                        r.attempts = attempts
            if self._refreshes and self.fatal is None:
                server = await self._resend_unauthorized(prepared.sendable, server)
            if self._flow:
                self._stop_if_unauthorized(prepared.sendable, server)
            if self.retry_operations or self.keys is not None:
                server = await self._retry_operations(prepared.sendable, server, budget)
        return prepared.merge(server)

    async def _send_with_retries(
        self, ops: list[Operation], budget: _Budget | None = None
    ) -> tuple[list[Response], int]:
        """``ops`` sent as one batch, or in parts once the throttle paces (see
        :meth:`~batchnb._ratelimit.Throttle.most_at_once`), each again while it may be.

        A part is cut only where no later operation refers to an earlier one
        of the batch, so each stands on its own; a part that could not be
        delivered leaves the rest unsent. The attempts returned are the most
        any part took (each part's responses say their own).
        """
        budget = budget if budget is not None else _Budget(self.retry_for)
        most = self.throttle.most_at_once() if self.throttle is not None else None
        if most is None or _size(ops) <= most:
            return await self._send_batch(ops, budget)
        out: list[Response] = []
        attempts = 0
        start = 0
        # Parts are cut as they go: the throttle's pace, and so the part's size, changes with each answer.
        cuts = _cuts(ops)
        while start < len(ops):
            end = _part_end(ops, start, most, cuts)
            part = ops[start:end]
            if self.fatal is not None:
                out.extend(_placeholder(op, self._stopped()) for op in part)
            else:
                responses, n = await self._send_batch(part, budget)
                for top in responses:
                    for _p, r in top.walk():
                        if r.attempts is None:
                            r.attempts = n
                attempts = max(attempts, n)
                out.extend(responses)
                if all(r.status is None for r in responses):
                    # Not delivered (or its outcome unknown): the rest of the batch is not sent after it.
                    why = responses[0].error or "an earlier part of the batch was not answered"
                    why = why if why.startswith("not run") else "not run: an earlier part of the batch was not answered"
                    out.extend(_placeholder(op, why) for op in ops[end:])
                    break
            start = end
            if self.throttle is not None:
                most = self.throttle.most_at_once() or len(ops)
        return out, attempts

    async def _send_batch(self, ops: list[Operation], budget: _Budget) -> tuple[list[Response], int]:
        """``ops`` sent as one batch, again while it may be; ``budget`` ends the time for 429 and 503."""
        resendable = is_idempotent(ops) or (self.keys is not None and keyed(ops))
        throttle = self.throttle
        size = sum(1 for top in ops for _p in top.walk())
        attempt = 0
        while True:
            attempt += 1
            can_retry = attempt <= self.retries
            if throttle is not None:
                await throttle.wait(size)
            sent_at = time.monotonic()
            until = budget.start(sent_at)
            try:
                reply = await self.send(ops)
            except AuthenticationError as exc:  # the auth flow could not get a token: nothing was sent
                if self.fatal is None:
                    self.fatal = exc
                return [_placeholder(op, f"not run: unauthorized ({exc.message})") for op in ops], attempt
            except TransportError as exc:
                # Not transient (a certificate, a proxy's 407, a host that does not resolve): the same next time.
                if (not exc.sent or resendable) and can_retry and exc.transient:
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                if exc.sent:
                    self.delivered += 1
                else:
                    self.undelivered = exc
                reason = (
                    f"not run: {exc}"
                    if not exc.sent
                    else (f"{_unknown_reason(ops)} ({exc})" if not resendable else f"outcome unknown: {exc}")
                )
                return [_placeholder(op, reason) for op in ops], attempt
            self.delivered += 1
            status = reply.status
            if status == 200:
                if reply.responses is not None:
                    if throttle is not None:
                        answers = ((r.status, r.headers) for top in reply.responses for _p, r in top.walk())
                        throttle.observe(sent_at, answers, most=self.max_backoff)
                    return reply.responses, attempt
                if resendable and can_retry:
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                reason = _unknown_reason(ops) if not resendable else "outcome unknown: the answer could not be read"
                return [_placeholder(op, reason) for op in ops], attempt
            wait = retry_after(reply.headers)
            if status in (429, 503):
                advice = advise(reply.headers)
                if throttle is not None and status == 429:
                    throttle.limited(sent_at, advice, most=self.max_backoff)
                pause = retry_wait(
                    advice.wait,
                    attempt,
                    backoff=self.backoff,
                    max_backoff=self.max_backoff,
                    left=until - time.monotonic(),
                    paced=throttle.delay() if throttle is not None else 0.0,
                )
                if pause is not None:
                    await asyncio.sleep(pause)
                    continue
                return [
                    _placeholder(
                        op,
                        f"not run: the server answered {status} {plural(attempt, 'time')} (retry_for={self.retry_for:g} s)",
                    )
                    for op in ops
                ], attempt
            if status >= 500:
                if resendable and can_retry:
                    await asyncio.sleep(self._delay(attempt, wait))
                    continue
                reason = _unknown_reason(ops) if not resendable else f"outcome unknown: the server answered {status}"
                return [_placeholder(op, reason) for op in ops], attempt
            err = http_error(status, reply.body, wait)
            if self.fatal is None:
                self.fatal = err
            return [_placeholder(op, f"not run: the server refused the batch: {err}") for op in ops], attempt

    async def _retry_operations(self, ops: list[Operation], server: list[Response], budget: _Budget) -> list[Response]:
        """Resend top-level operations answered 429/503 inside a batch that ran (``retry_operations``),
        and keyed ones answered 409 (their key was still in use by an earlier attempt).

        Operations that answered 424 only because they depend on one of those
        go again with them; references to operations that did succeed are
        filled in here, so the resent batch stands on its own.
        """
        # The batch's time, counted from when it was first sent: not a second retry_for of its own.
        until = budget.start(time.monotonic())
        passes = 0
        while True:
            passes += 1
            # 429 and 503 while there is time; a key still in use (409) a few times, as it always was.
            again_now = self.retry_operations and not self._sender_retries and time.monotonic() < until
            statuses = {429, 503} if again_now else set()
            if self.keys is not None and passes <= self.retries:
                statuses.add(409)
            if not statuses:
                break
            again, waiting = _again(ops, server, functools.partial(_retry, statuses=statuses))
            if not any(_retry(ops[i], server[i], statuses) for i in again):
                break
            hints = [advise(server[i].headers or {}).wait for i in again]
            hint = max([d for d in hints if d is not None], default=None)
            pause = retry_wait(
                hint,
                passes,
                backoff=self.backoff,
                max_backoff=self.max_backoff,
                left=until - time.monotonic(),
                paced=self.throttle.delay() if self.throttle is not None else 0.0,
            )
            if pause is None:
                break
            await asyncio.sleep(pause)
            await self._send_again(ops, server, again, waiting, budget)
        return server

    async def _resend_unauthorized(self, ops: list[Operation], server: list[Response]) -> list[Response]:
        """Send again, once, top-level operations answered 401 with the run's credentials (the sender has
        told the auth flow that their token is spent), with the operations that answered 424 because of them."""
        again, waiting = _again(ops, server, _unauthorized)
        if again:
            await self._send_again(ops, server, again, waiting)
        return server

    async def _send_again(
        self,
        ops: list[Operation],
        server: list[Response],
        again: list[int],
        waiting: set[str],
        budget: _Budget | None = None,
    ) -> None:
        """Send the top-level operations at ``again`` once more, their answers put in their places in ``server``.

        The results of the others (those not ``waiting``) are filled into
        references here, so that what is sent again stands on its own.
        """
        for top in server:
            for _p, r in top.walk():
                if r.name and r.name not in waiting and r.status is not None:
                    self.results[r.name] = r
        prepared = prepare([ops[i] for i in again], self._lookup)
        redo, sent_attempts = await self._send_with_retries(prepared.sendable, budget) if prepared.sendable else ([], 0)
        resent = {id(x) for top in redo for _p, x in top.walk()}
        for i, r in zip(again, prepared.merge(redo)):
            before = server[i].attempts or 1
            for _p, x in r.walk():
                if id(x) in resent:
                    x.attempts = before + sent_attempts
            server[i] = r

    def _stop_if_unauthorized(self, ops: list[Operation], server: list[Response]) -> None:
        """Stop the run when an operation sent with its credentials is refused and the flow cannot cure it."""
        refused = next((r for op, r in zip(ops, server) if _unauthorized(op, r)), None)
        if refused is None or self.fatal is not None:
            return
        from .results import _error_text

        why = _error_text(refused)
        why = why[len("HTTP 401: ") :] if why.startswith("HTTP 401: ") else why
        self._unauthorized = why
        self.fatal = AuthenticationError(
            401, f"operations were refused with the run's credentials ({why}); the run stopped sending"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.backoff * 2.0 ** (attempt - 1), self.max_backoff)
        return base * (0.5 + random.random() / 2)


class _Budget:
    """A batch's time for answers of 429 and 503: ``seconds`` from when it was first sent, whatever goes again.

    >>> b = _Budget(300.0); b.start(10.0), b.start(99.0)
    (310.0, 310.0)
    """

    __slots__ = ("seconds", "until")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until: float | None = None

    def start(self, at: float) -> float:
        """The end of the budget, counted from ``at`` if nothing was sent before."""
        if self.until is None:
            self.until = at + self.seconds
        return self.until


def _size(ops: list[Operation]) -> int:
    """Requests in ``ops``, children included (what the server runs, and the throttle counts)."""
    return sum(1 for top in ops for _p in top.walk())


def _cuts(ops: list[Operation]) -> list[bool]:
    """``cuts[i]``: whether a batch may be split before ``ops[i]`` (no operation from there on refers to one before)."""
    where = {o.name: i for i, top in enumerate(ops) for _p, o in top.walk() if o.name}
    earliest = [
        min((where[n] for _p, o in top.walk() for n in o.referenced_names() if n in where), default=i)
        for i, top in enumerate(ops)
    ]
    cuts = [True] * (len(ops) + 1)
    lowest = len(ops)
    for i in range(len(ops) - 1, -1, -1):
        lowest = min(lowest, earliest[i])
        cuts[i] = lowest >= i
    return cuts


def _part_end(ops: list[Operation], start: int, most: int, cuts: list[bool]) -> int:
    """Where the part of ``ops`` that begins at ``start`` ends: at most ``most`` requests, unless references tie more."""
    end, size = start, 0
    while end < len(ops):
        n = sum(1 for _p in ops[end].walk())
        if end > start and size + n > most and cuts[end]:
            break
        size += n
        end += 1
    return end


def _retry(op: Operation, r: Response, statuses: set[int]) -> bool:
    """Whether an operation's answer says it may be sent again: not run (429, 503), or a key still in use (409)."""
    if r.status == 409:
        return 409 in statuses and keyed([op])
    return r.status in statuses


def _again(
    ops: list[Operation], server: list[Response], refused: Callable[[Operation, Response], bool]
) -> tuple[list[int], set[str]]:
    """The top-level operations to send again: those ``refused``, and those answered 424 only because they
    reference one of them; and the names that wait with them."""
    again: list[int] = []
    waiting: set[str] = set()
    for i, (op, r) in enumerate(zip(ops, server)):
        if refused(op, r) or (r.status == 424 and _refers_to(op, waiting)):
            again.append(i)
            waiting |= {o.name for _p, o in op.walk() if o.name}
    return again, waiting


def _unauthorized(op: Operation, r: Response) -> bool:
    """Whether ``op``, sent with the run's credentials, was answered 401 (did not run)."""
    return r.status == 401 and not own_authorization(op)


def _refers_to(op: Operation, names: set[str]) -> bool:
    """Whether ``op`` (or a child) references one of ``names``."""
    if not names:
        return False
    return any(o.referenced_names() & names for _p, o in op.walk())
