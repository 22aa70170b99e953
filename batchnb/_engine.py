"""The engine: runs a :class:`~batchnb.Batch` against an API, one operation at a time.

It is the only place that knows batch semantics — depth-first order, children
only after a 2xx parent, references resolved from earlier results, 424 for
what cannot run, per-operation headers, timing and timeouts. The server runs
it behind ``POST /api/2.3/batch``; the client runs the very same engine to
execute a batch against an API that has no batch endpoint.

An API is reached through a *dispatcher* (:mod:`batchnb._dispatch`): how an
operation gets to the API and back is the dispatcher's business, what a batch
does with the answer is this module's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import math
import re
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import quote

from . import _json, _jsonpath, _refs, _rules, _work
from ._connect import Unreached
from ._dispatch import (
    Dispatcher,
    DispatchResult,
    ResponseTooLarge,
    UnreadableResponse,
)
from ._timing import Timings
from .model import Batch, Operation, Response

__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_MAX_BATCH_WORK",
    "DEFAULT_MAX_RESOLVED_BYTES",
    "Prepared",
    "execute",
    "not_run",
    "prepare",
    "result_lookup",
]

T = TypeVar("T")

#: response headers worth handing back to the caller (the spec's extension).
KEPT_HEADERS = (
    "location",
    "content-type",
    "retry-after",
    "idempotent-replayed",
    # what an API says of a refused token (RFC 6750 §3), for the row's error
    "www-authenticate",
    # what the API says of its rate limits, so that a client behind a gateway can honour them
    "ratelimit-policy",
    "ratelimit",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)
#: bytes that references may fill into one operation (path, headers and body together).
DEFAULT_MAX_RESOLVED_BYTES = 1024 * 1024
#: bytes of a whole batch's answer.
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: units of work (about a microsecond each) filling in one batch's references may cost: see :mod:`batchnb._work`.
DEFAULT_MAX_BATCH_WORK = _work.DEFAULT_UNITS
#: what filling in one operation's references may cost on the event loop before it goes on in a thread:
#: a few milliseconds, so that other requests are answered meanwhile.
_LOOP_SLICE_UNITS = 2_000
_LOOP_SLICE_SECONDS = 0.005
#: bytes of an answer checked on the event loop (under a millisecond); a bigger one is checked in a thread.
_CHECK_ON_LOOP_BYTES = 64 * 1024
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
#: levels the batch answer wraps around one operation's body at the top level:
#: the answer object, its "responses" list, the response object.
_ANSWER_LEVELS = 3


# ---------------------------------------------------------------- execution


def encode_body(body: Any) -> tuple[bytes | None, str | None]:
    """Body bytes and their content type: JSON for data, a string verbatim."""
    if body is None:
        return None, None
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return _json.dumps(body), "application/json"


def carried_body(content: bytes, content_type: str | None, *, levels: int = 0) -> Any:
    """An answer's body as a batch's answer carries it: JSON kept as its text, else text, ``None`` when empty.

    >>> carried_body(b'{"id": 7}', "application/json")
    RawJSON({"id":7})
    >>> carried_body(b"<p>hi</p>", "text/html"), carried_body(b"{oops", None), carried_body(b"", None)
    ('<p>hi</p>', '{oops', None)

    JSON (said so by the content type, or with none) is kept as a
    :class:`~batchnb._json.RawJSON`: checked as :func:`~batchnb._json.loads`
    would read it, and read only when something asks for it. Raises
    :class:`~batchnb._json.TooDeep` for JSON that, with ``levels`` around
    it, nests deeper than an answer may.
    """
    if not content:
        return None
    ct = (content_type or "").lower()
    if "json" in ct or not ct:
        try:
            return _json.RawJSON.of(content, most_depth=_json.MAX_DEPTH - levels)
        except _json.TooDeep:
            raise
        except ValueError:
            pass
    return content.decode("utf-8", errors="replace")


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _label(pointer: str, op: Operation) -> str:
    return f"{pointer} ({op.name!r})" if op.name else pointer


def _parent_failed(pointer: str, op: Operation, resp: Response) -> str:
    if resp.status is None:
        return f"its parent {_label(pointer, op)} was not run"
    return f"its parent {_label(pointer, op)} answered {resp.status}"


@dataclass
class _Run:
    dispatch: Dispatcher
    headers: list[tuple[str, str]]
    query: str
    timeout: float
    deadline: float | None
    results: MutableMapping[str, Response]
    max_resolved_bytes: int
    max_jsonpath_nodes: int
    max_answer_bytes: int
    #: bytes of the batch's answer not yet spent.
    answer_room: int
    timings: Timings | None = None
    #: the operations passed the model's checks as they stand: what no reference changed is not checked again.
    checked: bool = False
    #: what an operation that never reached the API answers: "answer" (502, saying why) or "not run" (no status).
    unreached: str = "answer"
    #: what filling in references may still cost, for the whole batch (None: unmetered).
    work: _work.Work | None = None
    #: where filling in references goes on once it has taken its slice of the event loop (None: on the loop).
    executor: concurrent.futures.Executor | None = None
    #: keep JSON answers as their text (RawJSON), not parsed.
    raw_bodies: bool = False


async def execute(
    batch: Batch | list[Operation],
    dispatch: Dispatcher,
    *,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    deadline: float | None = None,
    results: MutableMapping[str, Response] | None = None,
    max_resolved_bytes: int = DEFAULT_MAX_RESOLVED_BYTES,
    max_jsonpath_nodes: int = _jsonpath.DEFAULT_MAX_NODES,
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    max_work: int | None = DEFAULT_MAX_BATCH_WORK,
    executor: concurrent.futures.Executor | None = None,
    parallel: int = 1,
    timings: Timings | None = None,
    checked: bool = False,
    unreached: str = "answer",
    raw_bodies: bool = False,
) -> list[Response]:
    """Run every operation of ``batch`` through ``dispatch`` and return their responses.

    >>> import asyncio, httpx
    >>> async def main():
    ...     async with httpx.AsyncClient() as http:
    ...         return await execute(batch, HTTPDispatcher(http, "https://api.example"), headers={"Authorization": "Bearer …"})

    ``headers`` and ``query`` are the batch's credentials, given to every
    operation that does not carry an ``Authorization`` of its own. ``timeout``
    bounds each operation (it then answers 504); ``deadline`` (a
    ``time.monotonic()`` value) bounds the whole batch: what has not started
    by then answers 503. ``results`` holds named responses of earlier batches
    (the client's cross-batch references) and receives this batch's.

    Bounds, each a clear status for the one operation it concerns: the
    values references fill into an operation (``max_resolved_bytes``, else
    413), the nodes one reference's JSONPath may visit (``max_jsonpath_nodes``,
    else 424), and the size of the whole answer (``max_answer_bytes``): an
    answer that does not fit is that operation's 502, and once the answer is
    full, what has not started answers 503.

    ``max_work`` is the batch's work budget: what filling in all its
    references may cost, in units of about a microsecond (nodes visited,
    regular expressions run, bytes filled in: see :mod:`batchnb._work`). The
    operation whose references need more answers 424, and so does every later
    one that has references; None meters nothing. The deadline covers
    filling in references too: what is still being filled in then answers 503.
    With an ``executor`` (a thread pool), an operation whose references take
    more than a few milliseconds to fill in is filled in there, so that the
    event loop goes on serving others meanwhile; the thread stops at the
    deadline, or when the batch is cancelled.

    ``parallel`` is how many operations may be in flight at once. With 1
    (the spec's order) they run one at a time, depth first. With more, an
    operation starts as soon as its parent and every operation it references
    have finished; answers keep their places, and what cannot run answers as
    it would in order (the same 424s, the same messages).

    ``checked`` says that every operation's path and headers passed the
    model's checks as they stand (a batch from :meth:`Batch.from_wire`):
    only what a reference fills in, or a non-ASCII path once encoded, is
    checked again before it is sent. Operations made any other way (the
    client's, with earlier batches' results filled in) are checked here.

    ``timings``, when given, receives the seconds each phase took (see
    :mod:`batchnb._timing`): resolving references, the API, carrying answers.

    An operation whose request never reached the API (``dispatch`` raised
    :class:`~batchnb._connect.Unreached`) answers 502 with the reason, as a
    batch server must (``unreached="answer"``); with ``unreached="not run"``
    (the client running batches itself) it has no status and the error
    "not run: <reason>".

    With ``raw_bodies`` a JSON answer's body is a
    :class:`~batchnb._json.RawJSON`, its text as the API wrote it: a server
    writes it into its answer without ever parsing it (a reference parses
    it when it reads it). Without, bodies are parsed, as Python objects.
    """
    ops = batch.requests if isinstance(batch, Batch) else list(batch)
    run = _Run(
        dispatch=dispatch,
        headers=list((headers or {}).items()),
        query="&".join(f"{k}={_refs.segment(v)}" for k, v in (query or {}).items()),
        timeout=timeout,
        deadline=deadline,
        results=results if results is not None else {},
        max_resolved_bytes=max_resolved_bytes,
        max_jsonpath_nodes=max_jsonpath_nodes,
        max_answer_bytes=max_answer_bytes,
        answer_room=max_answer_bytes,
        timings=timings,
        checked=checked,
        unreached=unreached,
        work=None if max_work is None else _work.Work(max_work, deadline),
        executor=executor,
        raw_bodies=raw_bodies,
    )
    if parallel > 1:
        return await _run_concurrently(ops, run, parallel)
    return await _run_list(ops, "requests", run)


async def _run_list(ops: list[Operation], prefix: str, run: _Run) -> list[Response]:
    out = []
    for i, op in enumerate(ops):
        pointer = f"{prefix}[{i}]"
        resp = await _run_one(op, pointer, run)
        if op.name:
            run.results[op.name] = resp
        if op.requests:
            if resp.ok:
                resp.responses = await _run_list(op.requests, f"{pointer}.requests", run)
            else:
                why = _parent_failed(pointer, op, resp)
                resp.responses = [not_run(c, why, run.results) for c in op.requests]
        out.append(resp)
    return out


@dataclass
class _Node:
    """One operation of a batch, in run order, with where it stands and what it waits for."""

    op: Operation
    pointer: str
    parent: int
    size: int = 1  # this operation and everything under it
    children: list[int] = field(default_factory=list)
    waits_for: set[int] = field(default_factory=set)


def _nodes(ops: list[Operation]) -> list[_Node]:
    """The batch's operations in run order (depth first), each with its parent and the operations it references."""
    nodes: list[_Node] = []
    stack = [(op, f"requests[{i}]", -1) for i, op in reversed(list(enumerate(ops)))]
    while stack:
        op, pointer, parent = stack.pop()
        here = len(nodes)
        nodes.append(_Node(op, pointer, parent))
        if parent >= 0:
            nodes[parent].children.append(here)
        stack.extend((c, f"{pointer}.requests[{j}]", here) for j, c in reversed(list(enumerate(op.requests))))
    for node in reversed(nodes):
        for child in node.children:
            node.size += nodes[child].size
    named: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if node.op.name:
            named.setdefault(node.op.name, i)
    for i, node in enumerate(nodes):
        # A name that is not in this batch is an earlier batch's result: nothing to wait for.
        node.waits_for = {named[n] for n in node.op.referenced_names() if named.get(n, i) != i}
    return nodes


async def _run_concurrently(ops: list[Operation], run: _Run, limit: int) -> list[Response]:
    """Up to ``limit`` operations in flight; each starts when its parent and its references have finished.

    ``limit`` runners at most take the operations that may start, the first
    in run order first. A runner that finishes an operation goes straight on
    to the next one, in the same step of the event loop: handing the slot to
    another waiting task would cost each operation a trip through the whole
    queue of ready tasks, which with many operations in flight (a gateway's
    answers arriving together) is milliseconds each.
    """
    nodes = _nodes(ops)
    answers: list[Response | None] = [None] * len(nodes)
    schedule = _Schedule(nodes)
    tasks: list[asyncio.Task[None]] = []
    active = 0

    def start_runners() -> None:
        nonlocal active
        for _ in range(min(limit - active, schedule.ready_count)):
            active += 1
            tasks.append(asyncio.ensure_future(runner()))

    async def runner() -> None:
        nonlocal active
        try:
            while (i := schedule.next()) is not None:
                node = nodes[i]
                if answers[i] is None:  # else its parent failed: answered with the parent's subtree
                    resp = await _run_one(node.op, node.pointer, run)
                    answers[i] = resp
                    if node.op.name:
                        run.results[node.op.name] = resp
                    if node.children and not resp.ok:
                        why = _parent_failed(node.pointer, node.op, resp)
                        for child in node.children:
                            skipped = not_run(nodes[child].op, why, run.results)
                            for j, r in zip(range(child, child + nodes[child].size), (r for _p, r in skipped.walk())):
                                answers[j] = r
                schedule.finish(i)
                if schedule.ready_count > 1:
                    start_runners()  # this runner takes the first; others take the rest
        finally:
            active -= 1

    start_runners()
    try:
        while not all(t.done() for t in tasks):
            await asyncio.gather(*(t for t in tasks if not t.done()))
        for t in tasks:
            t.result()  # an error in a runner that ended before the last gather
    finally:
        for t in tasks:
            t.cancel()
    if schedule.left:
        raise RuntimeError(f"{schedule.left} operation(s) wait for one another and could not start")
    for node, resp in zip(nodes, answers):
        assert resp is not None
        resp.responses = [answers[c] for c in node.children]  # type: ignore[misc]  # a frozen Response's children, set once as the tree is built
    return [answers[i] for i, node in enumerate(nodes) if node.parent < 0]  # type: ignore[misc]  # a frozen Response's children, set once as the tree is built


class _Schedule:
    """Which operations of a batch may start: those whose parent and referenced operations have all finished.

    >>> s = _Schedule(_nodes([Operation("GET", "/a", requests=[Operation("GET", "/a/b")]), Operation("GET", "/c")]))
    >>> s.next(), s.next(), s.next()  # /a and /c may start; /a/b waits for /a
    (0, 2, None)
    >>> s.finish(0); s.next()
    1
    """

    def __init__(self, nodes: list[_Node]) -> None:
        #: for each operation, how many of the operations it waits for have not finished.
        self._waiting: list[int] = []
        #: for each operation, the operations waiting for it.
        self._waiters: list[list[int]] = [[] for _ in nodes]
        for i, node in enumerate(nodes):
            before = set(node.waits_for)
            if node.parent >= 0:
                before.add(node.parent)
            self._waiting.append(len(before))
            for j in before:
                self._waiters[j].append(i)
        self._ready = [i for i, n in enumerate(self._waiting) if n == 0]  # in run order: a heap already
        self.left = len(nodes)

    @property
    def ready_count(self) -> int:
        return len(self._ready)

    def next(self) -> int | None:
        """The first operation (in run order) that may start, or None when none may yet."""
        return heapq.heappop(self._ready) if self._ready else None

    def finish(self, i: int) -> None:
        """Operation ``i`` has finished (answered, or answered for by its parent): what waited only for it may start."""
        self.left -= 1
        for k in self._waiters[i]:
            self._waiting[k] -= 1
            if self._waiting[k] == 0:
                heapq.heappush(self._ready, k)


def not_run(
    op: Operation,
    why: str,
    results: MutableMapping[str, Response] | None = None,
    *,
    status: int = 424,
    code: str = "failed_dependency",
) -> Response:
    """424 (or ``status``) for ``op`` and every operation under it: they cannot run because ``why``.

    >>> not_run(Operation("GET", "/x"), "its parent answered 500").status
    424
    """
    message = f"not run: {why}"
    resp = Response(op.method, op.path, status, op.name, 0.0, _error_body(code, message))
    if op.name and results is not None:
        results[op.name] = resp
    resp.responses = [not_run(c, why, results, status=status, code=code) for c in op.requests]
    return resp


def result_lookup(
    results: Mapping[str, Response], *, defer_missing: bool = False, max_nodes: int = _jsonpath.DEFAULT_MAX_NODES
) -> _refs.Lookup:
    """A reference lookup over named responses.

    A reference to a response that failed, has no known outcome, has no
    body or matches nothing raises :class:`_refs.Unresolved`; so does a
    JSONPath that would visit more than ``max_nodes`` nodes. A name with no
    response yet is unresolved too, unless ``defer_missing``: then it is
    left for the server, which runs it in the same batch (the client's
    cross-batch resolution).

    >>> lookup = result_lookup({"co": Response("POST", "/c", 201, body={"id": "co_1"})})
    >>> lookup(_refs.parse("${result=co:$.id}")[0])
    ['co_1']
    """

    def lookup(r: _refs.Ref) -> list[Any] | None:
        done = results.get(r.name)
        if done is None:
            if defer_missing:
                return None
            raise _refs.Unresolved(r, f"operation {r.name!r} did not run")
        if done.status is None:
            raise _refs.Unresolved(r, f"the outcome of {r.name!r} is unknown")
        if not done.ok:
            raise _refs.Unresolved(r, f"operation {r.name!r} answered {done.status}")
        if done.body is None:
            # Not '$' = null: an answer without a body holds nothing to fill in.
            raise _refs.Unresolved(r, f"operation {r.name!r} answered {done.status} with no body")
        body = done.body
        if isinstance(body, _json.RawJSON):
            try:
                body = body.value()  # read now that a reference needs it (then kept for the next one)
            except (ValueError, RecursionError):
                raise _refs.Unresolved(r, f"the answer of {r.name!r} cannot be read as JSON") from None
        values = r.find(body, max_nodes)
        if not values:
            raise _refs.Unresolved(r, f"{r.query} matched nothing in the result of {r.name!r}")
        return values

    return lookup


def _measured(lookup: _refs.Lookup, limit: int) -> _refs.Lookup:
    """``lookup``, refusing (413) once the values it gave come to more than ``limit`` bytes of JSON.

    Counted value by value, so that a value used a thousand times is
    refused after a few uses, not serialised a thousand times. The bytes
    count against the batch's work budget too, when one is metered.
    """
    used = 0

    def measured(r: _refs.Ref) -> list[Any] | None:
        nonlocal used
        values = lookup(r)
        for value in values or ():
            try:
                size = len(_json.dumps(value))
            except TypeError:
                raise _refs.Unresolved(r, "its value cannot be sent as JSON (nested too deeply)") from None
            try:
                _work.spend(1 + size // _work.COSTS["fill_bytes"])
            except _work.OutOfWork as exc:
                raise _refs.BudgetSpent(r, str(exc)) from None
            used += size
            if used > limit:
                raise _refs.Refused(
                    r, f"the values its references fill in come to more than {limit} bytes", 413, "resolved_too_large"
                )
        return values

    return measured


def _filled(op: Operation, run: _Run) -> tuple[str, dict[str, str], bytes | None, str | None]:
    """``op``'s path, headers and body (bytes, content type) with its references filled in, or :class:`_refs.Unresolved`."""
    lookup = _measured(result_lookup(run.results, max_nodes=run.max_jsonpath_nodes), run.max_resolved_bytes)
    path = _refs.render_path(op.path, lookup)
    headers = {k: _refs.render(v, lookup) for k, v in (op.headers or {}).items()}
    content, content_type = encode_body(op.body)
    if content is not None and b"${" in content:
        content, content_type = encode_body(_refs.resolve_json(op.body, lookup))
    return path, headers, content, content_type


def _filled_metered(op: Operation, run: _Run) -> tuple[str, dict[str, str], bytes | None, str | None]:
    assert run.work is not None
    with run.work.metered():
        return _filled(op, run)


async def _fill_in(op: Operation, run: _Run) -> tuple[str, dict[str, str], bytes | None, str | None] | Response:
    """``op`` with its references filled in (see :func:`_filled`), or the response that says why it cannot run.

    First on the event loop, for a slice of a few milliseconds: most
    references cost far less. Past it, from the start again in the
    executor's thread, while the loop serves others; given up (503) at the
    batch's deadline or when the batch is cancelled, and the thread stops at
    its next unit of work.
    """
    try:
        if run.work is None:
            return _filled(op, run)
        if run.executor is None:
            return _filled_metered(op, run)
        try:
            with run.work.metered(slice_units=_LOOP_SLICE_UNITS, slice_seconds=_LOOP_SLICE_SECONDS):
                return _filled(op, run)
        except _work.Slice:
            pass
        future = asyncio.get_running_loop().run_in_executor(run.executor, _filled_metered, op, run)
        try:
            if run.deadline is None:
                return await future
            async with asyncio.timeout(max(run.deadline - time.monotonic(), 0.0)):
                return await future
        except (TimeoutError, asyncio.CancelledError):
            run.work.stop()  # the thread ends at its next unit of work
            raise
    except _refs.Unresolved as exc:
        return _refused(op, op.path, exc.status, exc.code, f"not run: {exc}")
    except (_work.OutOfTime, TimeoutError):
        return _refused(op, op.path, 503, "deadline_exceeded", "not run: the batch ran out of time")


def _carried_size(body: Any, level: int) -> int | None:
    """Bytes ``body`` adds to the batch's answer at nesting ``level``, or None if the answer could not hold it.

    Serialised wrapped in as many levels as the answer puts around it:
    orjson refuses 255 levels, and the final answer must not fail there.
    """
    wrapped = body
    for _ in range(_ANSWER_LEVELS + 2 * level):
        wrapped = [wrapped]
    try:
        return len(_json.dumps(wrapped)) - 2 * (_ANSWER_LEVELS + 2 * level)
    except TypeError:
        return None


async def _bounded(coro: Awaitable[T], timeout: float) -> T:
    """``await coro``, raising TimeoutError once it has waited ``timeout`` seconds in all.

    The timer is armed only when ``coro`` first waits: an in-process API
    often answers without ever waiting, and a timer per operation (what
    ``asyncio.timeout`` arms) would cost more than some answers. Code that
    never waits cannot be interrupted by any timeout, so nothing is lost.
    """
    if not isinstance(coro, types.CoroutineType):  # any other awaitable: the plain way
        async with asyncio.timeout(timeout):
            return await coro
    started = time.monotonic()
    try:
        pending = coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    async with asyncio.timeout(max(timeout - (time.monotonic() - started), 0.0)):
        return await _resumed(coro, pending)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, T], pending: Any) -> Generator[Any, Any, T]:
    """Go on awaiting ``coro``, which has already handed ``pending`` (what it waits for) up to the event loop."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - a cancellation (the timeout's), handed on to where coro waits
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


def _refused(op: Operation, path: str, status: int, code: str, message: str) -> Response:
    return Response(op.method, path, status, op.name, 0.0, _error_body(code, message))


async def _run_one(op: Operation, pointer: str, run: _Run) -> Response:
    began = time.perf_counter()
    path, op_headers = op.path, op.headers or {}
    content, content_type = encode_body(op.body)
    check = not run.checked
    # Most operations hold no reference: "${" shows in the JSON text of one that does.
    if (
        "$" in path
        or (op_headers and "$" in "".join(op_headers.values()))
        or (content is not None and b"${" in content)
    ):
        check = True
        filled = await _fill_in(op, run)
        if isinstance(filled, Response):
            return filled
        path, op_headers, content, content_type = filled

    if not path.isascii():
        check = True
        # Non-ASCII text (a literal "/companies/東京") travels percent-encoded as UTF-8, as browsers do.
        path = _NON_ASCII.sub(lambda m: quote(m.group()), path)
    if check:
        problem = _rules.path_problem(path)
        if problem is None:
            problem = next(
                (f"header {k!r}: {m}" for k, v in op_headers.items() for m in _rules.header_problems(k, v)), None
            )
        if problem is not None:
            return _refused(op, path, 400, "invalid_operation", f"not run: resolved path or header {problem}")

    if run.deadline is not None and time.monotonic() >= run.deadline:
        return _refused(op, path, 503, "deadline_exceeded", "not run: the batch ran out of time")
    if run.answer_room <= 0:
        return _refused(
            op,
            path,
            503,
            "answer_full",
            f"not run: the batch's answer reached its limit of {run.max_answer_bytes} bytes",
        )

    own = {k.lower() for k in op_headers}
    send_headers = [(k, v) for k, v in run.headers if k.lower() not in own]
    send_headers.extend(op_headers.items())
    if content_type and "content-type" not in own:
        send_headers.append(("content-type", content_type))
    target = path
    if run.query and "authorization" not in own:
        target = f"{path}{'&' if '?' in path else '?'}{run.query}"

    timeout = run.timeout
    if run.deadline is not None:
        timeout = min(timeout, max(run.deadline - time.monotonic(), 0.001))
    started = time.perf_counter()
    result: DispatchResult | None = None
    rheaders: dict[str, str]
    try:
        result = await _bounded(run.dispatch(op.method, target, send_headers, content), timeout)
    except TimeoutError:
        status, rbody, rheaders = 504, _error_body("timeout", f"the operation took longer than {timeout:g} s"), {}
    except ResponseTooLarge as exc:
        status, rbody, rheaders = 502, _error_body("response_too_large", str(exc)), {}
    except UnreadableResponse as exc:
        status, rbody, rheaders = 502, _error_body("unreadable_response", str(exc)), {}
    except Unreached as exc:
        if run.unreached == "not run":
            return Response(op.method, path, None, op.name, None, None, error=f"not run: {exc.message}")
        # The message names the API's origin only: no path, no query, no credentials.
        status, rbody, rheaders = 502, _error_body("upstream_unreachable", exc.message), {}
    except Exception as exc:  # noqa: BLE001 - the API failing must not fail the batch
        # The exception text may hold the URL, and so credentials in its query: name the kind only.
        status, rbody, rheaders = (
            502,
            _error_body("upstream_error", f"the API could not be reached ({type(exc).__name__})"),
            {},
        )
    answered = time.perf_counter()
    if result is not None:
        status = result.status
        rheaders = {_TITLED[k]: result.headers[k] for k in KEPT_HEADERS if k in result.headers}
        ctype = result.headers.get("content-type")
        levels = _ANSWER_LEVELS + 2 * pointer.count(".requests[")
        carried = await _checked_body(result.body, ctype, levels, run)
        status, rbody, rheaders, size = _carry(status, carried, rheaders, run)
    else:
        size = _carried_size(rbody, 0) or 0
    run.answer_room -= len(path) + size
    duration = round((answered - started) * 1000, 3)
    if not math.isfinite(duration):
        duration = 0.0
    if run.timings is not None:
        run.timings.add("resolve", started - began)
        run.timings.add("api", answered - started)
        run.timings.add("carry", time.perf_counter() - answered)
    return Response(op.method, path, status, op.name, duration, rbody, rheaders)


async def _checked_body(content: bytes, content_type: str | None, levels: int, run: _Run) -> Any:
    """:func:`carried_body` of an answer, or the :class:`~batchnb._json.TooDeep` it raised.

    A big answer is checked in the batch's thread pool: checking a megabyte
    takes about 10 ms, and eight batches whose answers came back together
    held every other request of the server for as long as all of them took.
    """

    def check() -> Any:
        try:
            return carried_body(content, content_type, levels=levels)
        except _json.TooDeep as exc:
            return exc

    if run.executor is None or len(content) < _CHECK_ON_LOOP_BYTES:
        return check()
    return await asyncio.get_running_loop().run_in_executor(run.executor, check)


def _carry(status: int, body: Any, headers: dict[str, str], run: _Run) -> tuple[int, Any, dict[str, str], int]:
    """The API's answer as the batch's answer can carry it (itself, or a 502 that says why not), and its size there.

    ``body`` is what :func:`_checked_body` made of it. JSON is kept as its
    text (:class:`~batchnb._json.RawJSON`): checked, never turned into
    Python objects unless a reference reads it, and written into the batch's
    answer as it came (``raw_bodies``; else parsed here).
    """
    if isinstance(body, _json.TooDeep):
        message = f"the API answered {status}, nested too deeply for the batch's answer to carry"
        return _refused_answer(502, "unreadable_response", message)
    size = len(body.text) if isinstance(body, _json.RawJSON) else _carried_size(body, 0) or 0
    if size > run.answer_room:
        message = f"the API answered {status} with {size} bytes, more than the {run.max_answer_bytes} bytes the batch's answer may still hold"
        run.answer_room = 0  # full: what comes next would not fit either, so it does not start
        return _refused_answer(502, "answer_too_large", message)
    if isinstance(body, _json.RawJSON) and not run.raw_bodies:
        body = body.value()
    return status, body, headers, size


def _refused_answer(status: int, code: str, message: str) -> tuple[int, Any, dict[str, str], int]:
    body = _error_body(code, message)
    return status, body, {}, len(_json.dumps(body))


def _title(name: str) -> str:
    return "-".join("RateLimit" if p == "ratelimit" else p.capitalize() for p in name.split("-"))


_TITLED = {name: _title(name) for name in KEPT_HEADERS}


# ---------------------------------------------------------------- before a batch: what earlier batches decided


@dataclass
class Prepared:
    """A batch with the results of earlier batches applied, ready to be sent.

    ``sendable`` is what goes to the API: references to earlier results
    filled in, and without the operations that cannot run (a reference to a
    result that failed, matched nothing or has no known outcome), nor those
    that depend on them in this batch. Those answer 424 here, as the engine
    would answer them, and :meth:`merge` puts them back in place.

    >>> p = prepare([Operation("GET", "/x")], result_lookup({}, defer_missing=True))
    >>> [r.status for r in p.merge([Response("GET", "/x", 200)])]
    [200]
    """

    operations: list[Operation]
    sendable: list[Operation]
    _skipped: dict[int, Response]

    def merge(self, responses: list[Response]) -> list[Response]:
        """Responses to ``sendable`` (in its order) → responses to ``operations``, with every ``row`` set."""
        answered = iter(responses)
        return [self._merge(op, answered) for op in self.operations]

    def _merge(self, op: Operation, answered: Iterator[Response]) -> Response:
        skipped = self._skipped.get(id(op))
        if skipped is not None:
            for (_p, o), (_q, r) in zip(op.walk(), skipped.walk()):
                r.row = o.row
            return skipped
        resp = next(answered)
        resp.row = op.row
        kids = iter(resp.responses)
        resp.responses = [self._merge(child, kids) for child in op.requests]
        return resp


def _filled_problem(op: Operation, path: str, headers: Mapping[str, str] | None) -> str | None:
    """What the rules say of a path and headers that earlier results were filled into (None: nothing filled, or fine).

    These are the batch's own checks, which the server applies to what it is sent; what is still a
    reference (to this batch) stands for one segment.
    """
    if path != op.path:
        try:
            problem = _rules.path_problem(_refs.parse(path))
        except _refs.RefSyntaxError as exc:
            problem = str(exc)
        if problem is not None:
            return problem
    if headers and op.headers and headers != op.headers:
        for k, v in headers.items():
            if v != op.headers.get(k) and (messages := _rules.header_problems(k, v)):
                return f"{k!r}: {messages[0]}"
    return None


def prepare(
    ops: list[Operation],
    lookup: _refs.Lookup,
    *,
    max_resolved_bytes: int = DEFAULT_MAX_RESOLVED_BYTES,
    extra_headers: Callable[[Operation], Mapping[str, str] | None] | None = None,
) -> Prepared:
    """Fill in what earlier batches answered, and decide here what cannot run.

    ``lookup`` answers references to earlier results and returns None for
    names of this batch (see :func:`result_lookup` with ``defer_missing``).
    ``extra_headers(op)`` gives headers to add to an operation as it is sent
    (its idempotency key, say); the operation's own headers are kept.

    >>> from batchnb.model import Response
    >>> failed = {"co": Response("POST", "/c", 400)}
    >>> p = prepare([Operation("GET", "/c/${result=co:$.id}"), Operation("GET", "/x")], result_lookup(failed, defer_missing=True))
    >>> [op.path for op in p.sendable], p.merge([Response("GET", "/x", 200)])[0].status
    (['/x'], 424)
    """
    skipped: dict[int, Response] = {}
    dropped: set[str] = set()

    def visit(op: Operation) -> Operation | None:
        try:
            # References only point backwards, so one pass in run order sees every drop first.
            hit = sorted(op.referenced_names() & dropped) if dropped else ()
            if hit:
                first = next(r for _f, r in op.references() if r.name == hit[0])
                raise _refs.Unresolved(first, f"operation {hit[0]!r} could not run")
            measured = _measured(lookup, max_resolved_bytes)
            path = _refs.render_path(op.path, measured, partial=True)
            headers = (
                {k: _refs.render(v, measured, partial=True) for k, v in op.headers.items()}
                if op.headers
                else op.headers
            )
            body = _refs.resolve_json(op.body, measured, partial=True)
        except _refs.Unresolved as exc:
            skipped[id(op)] = not_run(op, str(exc), status=exc.status, code=exc.code)
            dropped.update(o.name for _p, o in op.walk() if o.name)
            return None
        unsafe = _filled_problem(op, path, headers)
        if unsafe is not None:
            # Sent, it would make the server refuse the whole batch: this operation alone does not run.
            skipped[id(op)] = not_run(op, f"resolved path or header {unsafe}", status=400, code="invalid_operation")
            dropped.update(o.name for _p, o in op.walk() if o.name)
            return None
        children = [c for c in (visit(child) for child in op.requests) if c is not None]
        extra = extra_headers(op) if extra_headers is not None else None
        if extra:
            headers = {**extra, **(headers or {})}
        return Operation._unchecked(op.method, path, body, op.name, headers, children, op.row)

    sendable = [s for s in (visit(op) for op in ops) if s is not None]
    return Prepared(list(ops), sendable, skipped)
