"""A batch's work budget: what filling in its references may cost, counted in one unit, in any thread.

One *unit* is about a microsecond of work on one core (see :data:`COSTS`).
A :class:`Work` holds a batch's units, its deadline and a stop; each
operation's references are filled in under :meth:`Work.metered`, and the
code that does the work calls :func:`spend` as it goes:

    >>> work = Work(10_000)
    >>> with work.metered():
    ...     spend(2_500)
    >>> work.spent
    2500
    >>> with work.metered():
    ...     spend(8_000)
    Traceback (most recent call last):
    ...
    batchnb._work.OutOfWork: the batch's work budget of 10000 units is spent

Outside :meth:`Work.metered`, :func:`spend` costs nothing and refuses
nothing: the client filling in its own earlier results is not metered.

A meter takes units from its :class:`Work` a few hundred at a time, so that
threads filling in references for one batch share one budget without a lock
per node; what a meter took and did not use goes back when it closes. Each
time it takes more, it checks the deadline and the stop: a thread that a
batch has given up on ends within a millisecond or so of work.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["COSTS", "DEFAULT_UNITS", "OutOfTime", "OutOfWork", "Slice", "Work", "spend"]

#: units one batch's references may cost, unless the server says otherwise (about a second of work).
DEFAULT_UNITS = 1_000_000

#: what costs what, in units (about a microsecond each): what the docs and the limits' help say.
COSTS = {
    "node": 1,  # a JSONPath node visited, selected, or tested by a filter
    "regexp_call": 1,  # one match() / search()
    "regexp_steps": 128,  # ... and one more per this many characters read times instructions of the pattern
    "pattern_chars": 4,  # one per this many characters of a pattern compiled (once per pattern)
    "query_chars": 2,  # this many per character of a JSONPath compiled again (dropped from the cache since)
    "fill_bytes": 256,  # one per this many bytes of JSON a reference fills in
}

#: units a meter takes from its Work at a time.
_CHUNK = 512


class OutOfWork(Exception):
    """The batch's work budget is spent: what needed more does not run (424)."""

    def __init__(self, units: int) -> None:
        self.units = units
        super().__init__(f"the batch's work budget of {units} units is spent")


class OutOfTime(Exception):
    """The batch's deadline passed, or the batch gave up on this work: what needed more does not run (503)."""


class Slice(Exception):
    """The slice of work allowed on the event loop is over: the work goes on in a thread, from the start."""


class Work:
    """The units one batch's references may still cost, its deadline (``time.monotonic()``), and a stop.

    >>> Work(100).left
    100

    Thread-safe: meters in several threads draw on it at once.
    """

    def __init__(self, units: int, deadline: float | None = None) -> None:
        self.units = units
        self.deadline = deadline
        self._left = units
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def left(self) -> int:
        return self._left

    @property
    def spent(self) -> int:
        return self.units - self._left

    def stop(self) -> None:
        """Give up: every meter of this batch raises :class:`OutOfTime` the next time it takes units."""
        self._stopped = True

    @contextlib.contextmanager
    def metered(self, *, slice_units: int | None = None, slice_seconds: float | None = None) -> Iterator[None]:
        """Meter the work done in this block (in this thread) against this budget.

        With ``slice_units`` or ``slice_seconds``, the block may do that much
        and no more: past it, :class:`Slice` leaves the block, and the units it
        spent are given back (the work is to be done again elsewhere).
        """
        meter = _Meter(self, slice_units, slice_seconds)
        token = _METER.set(meter)
        try:
            yield
        except Slice:
            self._give(meter.taken)
            raise
        finally:
            _METER.reset(token)
            if not meter.sliced:
                self._give(max(meter.credit, 0))

    def _take(self, need: int) -> int:
        """Up to ``need`` units and a chunk more: fewer than ``need`` when that is all there is left."""
        with self._lock:
            got = min(need + _CHUNK, self._left)
            self._left -= got
        return got

    def _give(self, units: int) -> None:
        if units:
            with self._lock:
                self._left += units

    def _check(self) -> None:
        if self._stopped or (self.deadline is not None and time.monotonic() >= self.deadline):
            raise OutOfTime()


class _Meter:
    """The units one block of work has taken from its :class:`Work`, and may still spend before taking more."""

    __slots__ = ("_ends", "_slice_left", "_work", "credit", "sliced", "taken")

    def __init__(self, work: Work, slice_units: int | None, slice_seconds: float | None) -> None:
        if slice_seconds is not None and slice_units is None:
            slice_units = 1 << 62  # a slice bounded by time only
        self._work = work
        self.credit = 0
        self.taken = 0
        self.sliced = False
        self._slice_left = slice_units
        self._ends = None if slice_seconds is None else time.perf_counter() + slice_seconds

    def spend(self, units: int) -> None:
        self.credit -= units
        if self.credit < 0:
            self._refill()

    def _refill(self) -> None:
        work = self._work
        work._check()
        need = -self.credit
        if self._slice_left is not None:
            self._slice_left -= need + _CHUNK
            if self._slice_left < 0 or (self._ends is not None and time.perf_counter() >= self._ends):
                self.sliced = True
                raise Slice()
        got = work._take(need)
        self.taken += got
        self.credit += got
        if self.credit < 0:
            self.credit = 0  # what was left is spent too
            raise OutOfWork(work.units)


#: the meter of the work under way in this context (a thread, or a task on the loop), if any.
_METER: ContextVar[_Meter | None] = ContextVar("batchnb_work_meter", default=None)


def spend(units: int) -> None:
    """Count ``units`` of work against the batch being metered here, if any.

    Raises :class:`OutOfWork`, :class:`OutOfTime` or :class:`Slice` when
    the work must stop.
    """
    meter = _METER.get()
    if meter is not None:
        meter.spend(units)
