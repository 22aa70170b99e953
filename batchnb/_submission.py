"""One submit, from what the analyst handed over to what comes back.

A :class:`Submission` holds everything that belongs to one call of
``submit``: the operations (built from a frame, a chunk at a time when the
frame is large and its rows independent), what a journal says ran before,
the plan, the runner, the progress bar and the shaping of the result. The
client that starts it keeps only configuration, so two submits on one
client share nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import _json
from ._chunk_pipeline import ChunkPipeline, Prepared
from ._exceptions import BatchValidationError, Problem, SubmitInterrupted, TransportError
from ._journal import Journal, fingerprints, row_key
from ._json import RawJSON
from ._keys import RunKeys, new_run_id
from ._ratelimit import Throttle
from ._runner import Runner
from ._senders import Sender
from ._text import plural
from .model import Batch, Operation, Response, check_batch
from .plan import Plan, batch_fill, make_plan

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Submission", "SubmitOptions", "with_values"]

BODIES = ("parsed", "json", "none")


@dataclass(frozen=True)
class SubmitOptions:
    """How one submit runs (the client's defaults already applied)."""

    concurrency: int = 4
    retries: int = 3
    retry_operations: bool = False
    #: batches per second (None: no limit).
    batch_rate: float | None = None
    #: seconds within which what was not run (429, 503) is sent again.
    retry_for: float = 300.0
    #: paces the operations of each batch sent, and learns from 429s (None: not paced here).
    throttle: Throttle | None = None
    journal: str | None = None
    resume: bool = False
    progress: bool | None = None
    bodies: str = "parsed"
    backoff: float = 0.5
    max_backoff: float = 30.0
    #: "auto" (keys when the server says the API honours them), True (always), False (never).
    idempotency: bool | str = "auto"
    #: operations of a batch run at once (as the server will run them): batches are filled to a multiple of it.
    parallel: int = 1


class Submission:
    """One submit: operations in, a result out, every piece of state its own.

    Every problem of the input is raised by the constructor, before anything
    is sent (``await submission.run()`` sends; no sender is needed to find a problem):

    >>> Submission(df, {"method": "POST", "path": "/api/2.1/scheduling/companies"}, limits={}, sender=None,
    ...            options=SubmitOptions(bodies="xml"))
    Traceback (most recent call last):
    ...
    batchnb.BatchValidationError: 1 problem in the input, nothing was sent:
      - bodies: must be 'parsed', 'json' or 'none', not 'xml'
    """

    def __init__(
        self,
        work: Any,
        frame_options: Mapping[str, Any],
        limits: Mapping[str, Any],
        sender: Sender,
        options: SubmitOptions,
        *,
        stream: bool = True,
        known: Any = None,
    ) -> None:
        if options.bodies not in BODIES:
            raise BatchValidationError(
                [Problem("bodies", f"must be 'parsed', 'json' or 'none', not {options.bodies!r}")]
            )
        if options.idempotency not in ("auto", True, False):
            raise BatchValidationError(
                [Problem("idempotency", f"must be 'auto', True or False, not {options.idempotency!r}")]
            )
        self._limits = limits
        self._sender = sender
        self._options = options
        journaled = bool(options.journal)
        self._known: dict[str, Response] = _known_from(known)
        self._given = frozenset(self._known)
        frame_options = {**frame_options, "known": self._given} if self._given else dict(frame_options)
        ops, self._index, self._kind = _operations_of(
            work,
            frame_options,
            limits,
            options.concurrency,
            stream=stream,
            fingerprint=journaled,
            parallel=options.parallel,
        )
        self._chunks = (
            ops
            if isinstance(ops, _Chunks)
            else _Chunks([ops], len(ops), fingerprints=fingerprints(ops) if journaled else None)
        )
        self._done: dict[str, Response] = {}
        self._first_batch = 0
        self._resumed = False
        self._run_id = new_run_id()
        self._recorded_keys: dict[str, str] = {}
        if options.journal:
            self._open_journal(Journal(options.journal), resume=options.resume)
        honoured = options.idempotency is True or (options.idempotency == "auto" and limits.get("idempotency") is True)
        self._keys = RunKeys(self._run_id, recorded=self._recorded_keys) if honoured else None
        # Every problem is raised here, before anything is sent.
        self._first_plan = self._plan(self._chunks.first())

    def _open_journal(self, journal: Journal, *, resume: bool) -> None:
        where = f"journal {str(journal.path)!r}"
        exists = journal.path.exists() and journal.path.stat().st_size > 0
        if not resume:
            if exists:
                raise BatchValidationError(
                    [
                        Problem(
                            "journal",
                            f"{where} already holds a run: pass resume=True to continue it, or name another file",
                        )
                    ]
                )
            return
        if not exists:
            raise BatchValidationError(
                [
                    Problem(
                        "journal",
                        f"{where} does not exist: resume=True continues the run that wrote it; leave resume out to start one",
                    )
                ]
            )
        state = journal.read()
        state.check(self._chunks.fingerprints or {}, self._chunks.labels, where)
        self._resumed = True
        # A row sent before goes again with the key it went with; the rest are numbered under this run's own id.
        self._recorded_keys = state.keys
        self._done = dict(state.done)
        for key, resendable in state.in_flight.items():
            if not resendable:
                self._done[key] = Response(
                    "",
                    "",
                    None,
                    error="outcome unknown: the previous run was interrupted while its batch was in flight",
                )
        for resp in state.done.values():
            for _p, r in resp.walk():
                if r.name:
                    self._known.setdefault(r.name, r)
        self._first_batch = state.last_batch + 1

    @property
    def plan(self) -> Plan:
        """How the (first chunk of the) work will be split into HTTP calls; nothing is sent."""
        return self._first_plan

    def _plan(self, ops: list[Operation]) -> Plan:
        pending = self._pending(ops) if self._done else ops
        problems = [
            Problem(
                f"row {op.row!r}",
                f"is named {op.name!r}, like an operation of the earlier result given as known=; rename one of them",
            )
            for top in pending
            for _p, op in top.walk()
            if op.name and op.name in self._given
        ]
        problems += check_batch(pending, known=self._known.keys())
        if problems:
            raise BatchValidationError(problems)
        plan = make_plan(
            pending,
            max_requests=int(self._limits["maxRequests"]),
            max_depth=int(self._limits["maxDepth"]),
            known=self._known.keys(),
            parallel=self._options.parallel,
            concurrency=self._options.concurrency,
        )
        if self._keys is not None:
            for b in plan.batches:
                b.keyed = True  # every POST and PATCH gets a key the API honours
        return plan

    def _pending(self, ops: list[Operation]) -> list[Operation]:
        """The operations of ``ops`` that a resume sends: those with no final outcome in the journal, and
        those that answered 424 because one of them did not run (references point backwards: one pass)."""
        pending: list[Operation] = []
        going: set[str] = set()
        for op in ops:
            key = row_key(op.row)
            before = self._done.get(key)
            if before is not None:
                if not (before.status == 424 and going and any(o.referenced_names() & going for _p, o in op.walk())):
                    continue
                del self._done[key]
                for _p, r in before.walk():
                    if r.name:
                        self._known.pop(r.name, None)
            pending.append(op)
            going |= {o.name for _p, o in op.walk() if o.name}
        return pending

    async def run(self) -> Any:
        """Send every batch and return the result (responses for a Batch, else a DataFrame)."""
        bar = self._progress_bar()
        journal = self._start_journal()
        runner = self._runner(bar, journal)
        pipeline = ChunkPipeline(runner, prepare=self._prepare, shape=self._shape, sent=self._forget_keys)
        try:
            upcoming = iter(self._chunks)
            pieces = await pipeline.run(upcoming, self._keyed(next(upcoming), self._first_plan))
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise self._interrupted(pipeline.finished_so_far()) from None
        finally:
            pipeline.close()
            bar.close()
            if journal is not None:
                journal.close()
        return self._delivered(self._join(pieces), runner)

    # ------------------------------------------------------------ the steps of a run

    def _progress_bar(self) -> _Progress:
        """The run's bar: shown when asked for, else when the work is more than one batch."""
        chunks = self._chunks
        total = chunks.total if chunks.streaming else self._first_plan.operations
        show = self._options.progress
        if show is None:
            show = total > int(self._limits["maxRequests"])
        return _Progress(total, show)

    def _start_journal(self) -> Journal | None:
        """The journal this run records in (None: none asked for), started unless the run resumes it."""
        if not self._options.journal:
            return None
        journal = Journal(self._options.journal)
        if not self._resumed:
            journal.start(self._chunks.fingerprints or {}, run_id=self._run_id)
        return journal

    def _runner(self, bar: _Progress, journal: Journal | None) -> Runner:
        """The runner that sends this run's batches, as the options say."""
        opts = self._options
        return Runner(
            self._sender,
            concurrency=opts.concurrency,
            retries=opts.retries,
            retry_operations=opts.retry_operations,
            batch_rate=opts.batch_rate,
            retry_for=opts.retry_for,
            throttle=opts.throttle,
            journal=journal,
            progress=bar,
            known=self._known,
            first_batch=self._first_batch,
            backoff=opts.backoff,
            max_backoff=opts.max_backoff,
            keys=self._keys,
        )

    def _forget_keys(self, plan: Plan) -> None:
        """A chunk is done: the keys of its operations are no longer needed."""
        if self._keys is not None:
            self._keys.forget(_planned(plan))

    def _interrupted(self, pieces: list[Any]) -> SubmitInterrupted:
        """The error an interrupted run raises, with the rows finished so far in ``partial``."""
        partial = self._join(pieces, missing="not run: interrupted before it was sent")
        journal = self._options.journal
        resume = f"; resume with journal={journal!r}, resume=True" if journal else ""
        return SubmitInterrupted(
            "submit was interrupted: finished rows are in .partial; rows in flight have an unknown outcome" + resume,
            partial=partial,
        )

    def _delivered(self, result: Any, runner: Runner) -> Any:
        """``result``, unless the run was stopped (a batch refused) or not one batch arrived: then that error,
        with ``result`` in its ``partial``."""
        if runner.fatal is not None:
            runner.fatal.partial = result
            raise runner.fatal
        if runner.delivered == 0 and runner.undelivered is not None:
            # Not one batch arrived: that is no result, however many rows say "not run".
            why = runner.undelivered
            retries = self._options.retries
            tried = f"after {plural(retries, 'retry', 'retries')}" if why.transient else "not retried"
            error = TransportError(f"no batch was delivered: {why} ({tried})", sent=False, transient=why.transient)
            error.partial = result
            raise error from (why.__cause__ or why)
        return result

    def _prepare(self, upcoming: Iterator[list[Operation]]) -> Prepared | None:
        """The next chunk and its plan, its keys given, or None when there is none."""
        chunk = next(upcoming, None)
        return None if chunk is None else self._keyed(chunk, self._plan(chunk))

    def _keyed(self, chunk: list[Operation], plan: Plan) -> Prepared:
        """``chunk`` and its plan, every POST and PATCH in it given its key."""
        if self._keys is not None:
            # Also beside the event loop (see _prepare), which sends the chunk before
            # with its keys: each operation has its own entry, given chunk after chunk.
            self._keys.assign(_planned(plan))
        return chunk, plan

    # ------------------------------------------------------------ shaping the result

    def _shape(self, ops: list[Operation], responses: list[Response]) -> Any:
        if self._done:
            it = iter(responses)
            responses = [
                _relabel(self._done[row_key(op.row)], op) if row_key(op.row) in self._done else next(it) for op in ops
            ]
        # The journal's rows too: a resumed result keeps its bodies as the first run's did.
        responses = _keep_bodies(responses, self._options.bodies)
        if self._kind == "responses":
            return with_values(responses)
        from .results import _json_bodies, to_frame

        frame = to_frame(responses)
        if self._options.bodies == "parsed":
            frame = _json_bodies(frame)
        index = self._chunks.index_of(ops, self._index)
        if index is not None and len(frame) == len(index):
            frame = frame.reindex(index)
        return frame

    def _join(self, pieces: list[Any], missing: str | None = None) -> Any:
        if self._kind == "responses":
            return [r for piece in pieces for r in piece]
        from .results import _concat, to_frame

        frame = _concat(pieces) if len(pieces) > 1 else (pieces[0] if pieces else to_frame([]))
        index = self._index
        if index is not None and missing is not None and len(frame) < len(index):
            frame = frame.reindex(index)
            frame["ok"] = frame["ok"].fillna(False).astype(bool)
            frame["error"] = frame["error"].where(frame["error"].notna(), missing)
        return frame


# ---------------------------------------------------------------- what goes in


#: the keyword arguments of ``submit`` that describe how a frame's rows become operations.
FRAME_OPTIONS = ("method", "path", "body", "name", "headers", "parent", "nulls")


def _operations_of(
    work: Any,
    frame_options: dict[str, Any],
    limits: Mapping[str, Any],
    concurrency: int,
    *,
    stream: bool,
    fingerprint: bool,
    parallel: int = 1,
) -> tuple[Any, Any, str]:
    """The operations of ``work``, its index (for a frame), and what kind of result it wants."""
    if isinstance(work, Batch):
        _no_frame_options(frame_options, "a Batch")
        return _with_rows(work.requests), None, "responses"
    import pandas as pd  # a core dependency: imported here to keep `import batchnb` light

    if isinstance(work, pd.DataFrame):
        from .frames import from_frame

        size = _chunk_rows(limits, concurrency, parallel)
        if stream and len(work) > size and _streamable(work, frame_options):
            return _Chunks.of_frame(work, frame_options, size, fingerprint=fingerprint), work.index, "frame"
        return from_frame(work, **frame_options), work.index, "frame"
    if isinstance(work, Iterable) and not isinstance(work, (str, bytes, Mapping)):
        _no_frame_options(frame_options, "a list of operations")
        batch = Batch(list(work))  # validates every operation, with pointers
        return _with_rows(batch.requests), None, "frame"
    raise BatchValidationError(
        [Problem("work", f"submit takes a Batch, a list of operations or a DataFrame, not {type(work).__name__}")]
    )


def _no_frame_options(options: dict[str, Any], what: str) -> None:
    given = [k for k, v in options.items() if k not in ("nulls", "known") and v is not None]
    if given:
        raise BatchValidationError([Problem(k, f"applies to a DataFrame's rows, not to {what}") for k in given])


def _planned(plan: Plan) -> Iterator[Operation]:
    """The top-level operations of ``plan``, batch by batch, in the order they are sent."""
    return (op for b in plan.batches for op in b.operations)


def _chunk_rows(limits: Mapping[str, Any], concurrency: int, parallel: int = 1) -> int:
    """Rows built and sent at a time when streaming a large frame: many batches, bounded memory.

    Small enough that the first chunk, planned before anything is sent, and
    the last, shaped after everything came back, are a small part of the
    time; the others are built and shaped while the one before or after is
    in flight. A whole number of rounds of full batches (one batch for each
    of the ``concurrency`` slots), so that no chunk but the last ends with a
    short batch, or with a round that leaves slots idle.

    >>> _chunk_rows({"maxRequests": 50}, 4), _chunk_rows({"maxRequests": 50}, 4, parallel=16)
    (2000, 2112)
    """
    fill = batch_fill(int(limits["maxRequests"]), parallel)
    round_ = fill * max(concurrency, 1)
    rows = max(2_000, round_ * 10)
    return -(-rows // round_) * round_


def _streamable(df: Any, options: Mapping[str, Any]) -> bool:
    """True when rows are independent (no names, parents or references): then the frame can
    be built and sent a chunk at a time, and every chunk checked before the first is sent."""
    body = options.get("body")
    if callable(body):
        return False
    data_fields = (
        set(body.values() if isinstance(body, Mapping) else body) if isinstance(body, (Mapping, list, tuple)) else set()
    )
    for opt in ("name", "parent"):
        value = options.get(opt)
        if value is False:
            continue
        if value is not None or (opt in df.columns and opt not in data_fields):
            return False
    for value in options.values():
        if isinstance(value, str) and "${" in value:
            return False
        if isinstance(value, Mapping) and any("${" in str(v) for v in value.values()):
            return False
    for column in df.columns:
        series = df[column]
        if series.dtype.kind in "biufcmM":
            continue
        if series.astype(str).str.contains("${", regex=False).any():
            return False
    return True


class _Chunks:
    """Operations a chunk at a time (a list of lists, or a frame built lazily)."""

    def __init__(
        self,
        chunks: Any,
        total: int,
        frame: Any = None,
        options: Mapping[str, Any] | None = None,
        size: int = 0,
        fingerprints: dict[str, str] | None = None,
    ) -> None:
        self._chunks = chunks
        self.total = total
        self._frame = frame
        self._options = dict(options or {})
        self._size = size
        self._first: list[Operation] | None = None
        #: row key -> fingerprint of every operation (kept when a journal records the run).
        self.fingerprints = fingerprints

    @property
    def labels(self) -> dict[str, Any]:
        """Row key -> index label, to name a row in a message."""
        if self._frame is not None:
            return {row_key(label): label for label in self._frame.index}
        return {row_key(op.row): op.row for chunk in self._chunks for top in chunk for _p, op in top.walk()}

    @classmethod
    def of_frame(cls, df: Any, options: Mapping[str, Any], size: int, *, fingerprint: bool = False) -> _Chunks:
        from .frames import from_frame

        problems = []
        prints: dict[str, str] | None = {} if fingerprint else None
        # Every chunk is checked before anything is sent; built again, one at a time, to send.
        for start in range(0, len(df), size):
            try:
                ops = from_frame(_rows(df, start, size), **options)
            except BatchValidationError as exc:
                problems.extend(exc.problems)
                continue
            if prints is not None:
                prints.update(fingerprints(ops))
        if problems:
            raise BatchValidationError(problems)
        return cls(None, len(df), df, options, size, prints)

    @property
    def streaming(self) -> bool:
        return self._frame is not None

    def first(self) -> list[Operation]:
        if self._first is None:
            self._first = next(iter(self))
        return self._first

    def __iter__(self) -> Iterator[list[Operation]]:
        if self._frame is None:
            yield from self._chunks
            return
        from .frames import from_frame

        for start in range(0, len(self._frame), self._size):
            if start == 0 and self._first is not None:
                first, self._first = self._first, None
                yield first
            else:
                yield from_frame(_rows(self._frame, start, self._size), **self._options)

    def index_of(self, chunk: list[Operation], index: Any) -> Any:
        if self._frame is None:
            return index
        return [op.row for op in chunk]


def _rows(df: Any, start: int, size: int) -> Any:
    """Rows ``start`` to ``start + size`` of a frame, still able to name their lines in its CSV file."""
    part = df.iloc[start : start + size]
    source = df.attrs.get("batchnb.csv")
    if source is not None and df.index.equals(source.index):
        part.attrs["batchnb.csv"] = source.part(start, start + size, part.index)
    return part


def _with_rows(ops: list[Operation]) -> list[Operation]:
    """Number every operation (depth first) when it has no row label of its own."""
    counter = 0
    for top in ops:
        for _p, op in top.walk():
            if op.row is None:
                op.row = counter
            counter += 1
    return ops


def _known_from(earlier: Any) -> dict[str, Response]:
    """Named responses of an earlier result (a result frame, or responses), for ``submit(known=…)``."""
    if earlier is None:
        return {}
    known: dict[str, Response] = {}
    if isinstance(earlier, (list, tuple)) and all(isinstance(r, Response) for r in earlier):
        for top in earlier:
            for _p, r in top.walk():
                if r.name:
                    known[r.name] = r
        return known
    columns = getattr(earlier, "columns", None)
    if columns is None or not {"name", "status", "body"} <= set(columns):
        raise BatchValidationError(
            [
                Problem(
                    "known",
                    "must be an earlier result: the frame (with name, status and body columns) or the responses submit returned",
                )
            ]
        )
    # Only a column of text holds JSON text (bodies="json", or a result read back from a file); a parsed
    # column's string is a text body the API sent, whatever it looks like, and stays as it is.
    frame = cast("pd.DataFrame", earlier)  # a frame of results: its columns were checked just above
    texts = _holds_json_text(frame["body"])
    rows = zip(frame.index, frame["name"].tolist(), frame["status"].tolist(), frame["body"].tolist())
    for label, name, status, body in rows:
        if not isinstance(name, str):
            continue
        if texts and isinstance(body, str):
            try:
                body = _json.loads(body)
            except ValueError as exc:
                raise BatchValidationError(
                    [
                        Problem(
                            f"known, row {label!r}, column body",
                            f"is not JSON text, as a column of bodies kept as text holds: {exc}",
                        )
                    ]
                ) from None
        try:
            code: int | None = int(status)
        except (TypeError, ValueError):  # a missing status: NA, NaN or None
            code = None
        known[name] = Response("", "", code, name, body=body)
    return known


def _holds_json_text(bodies: Any) -> bool:
    """Whether a result's ``body`` column holds JSON text (every cell a string), not parsed values."""
    from pandas.api.types import infer_dtype

    from ._jsonarray import JSONDtype

    return not isinstance(bodies.dtype, JSONDtype) and infer_dtype(bodies, skipna=True) == "string"


# ---------------------------------------------------------------- what comes out


def _keep_bodies(responses: list[Response], bodies: str) -> list[Response]:
    """Each body as ``bodies`` says: as it came (JSON text until a cell is read), JSON text as ``str``, or none for rows that are ok."""
    if bodies == "parsed":
        return responses
    for top in responses:
        for _p, r in top.walk():
            body = r.body
            if body is None:
                continue
            if bodies == "none" and r.ok:
                r.body = None
            elif bodies == "json":
                r.body = body.text.decode() if isinstance(body, RawJSON) else _json.dumps(body).decode()
            elif isinstance(body, RawJSON):
                r.body = body.value()  # a row that is not ok: its body explains why, as objects in the frame
    return responses


def with_values(responses: list[Response]) -> list[Response]:
    """``responses`` with each body kept as JSON text read into Python values: what a list of responses hands back.

    >>> from batchnb._json import RawJSON
    >>> with_values([Response("GET", "/x", 200, body=RawJSON.of(b'{"id": 7}'))])[0].body
    {'id': 7}
    """
    for top in responses:
        for _p, r in top.walk():
            if isinstance(r.body, RawJSON):
                r.body = r.body.value()
    return responses


def _relabel(resp: Response, op: Operation) -> Response:
    """A journal's response put back on the operation it answered (labels come back from keys)."""
    resp.row = op.row
    if not resp.method:
        resp.method, resp.path, resp.name = op.method, op.path, op.name
    if resp.responses or not op.requests:
        resp.responses = [_relabel(r, o) for o, r in zip(op.requests, resp.responses)]
    else:
        resp.responses = [_relabel(Response("", "", None, error=resp.error), o) for o in op.requests]
    return resp


class _Progress:
    """A tqdm bar (a widget in Jupyter, text in a terminal) that also counts failures."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.failed = 0
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="op", desc="batchnb", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **kw: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kw)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
