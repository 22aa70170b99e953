"""Rate limits as APIs state them: when to come back, how fast to go.

Three pieces, used by both modes:

- :func:`advise` reads an answer's headers: ``Retry-After`` (seconds or an
  HTTP date), the IETF ``RateLimit-Policy`` / ``RateLimit`` fields
  (draft-ietf-httpapi-ratelimit-headers, with its older forms), and the
  common ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``; the standard
  ones are preferred. What it returns is what the API said: callers bound it
  (:func:`retry_wait`), since an API may say ``Retry-After: 99999999``.
- :func:`parse_rate` turns ``"50/s"``, ``"3000/min"``, ``"100000/h"`` or a
  number into requests per second.
- :class:`Throttle` spaces operations at a rate (a next-start clock), and
  adapts when it was given none: unpaced until the API first answers 429,
  then paced at what the API granted, cut on a later 429 (by the share of
  answers refused, by half at most; at most once per round trip), raised a
  step after each second or so of successes.

:class:`PacedDispatcher` puts a throttle in front of a dispatcher (the
client's direct mode): each operation is paced, and one answered 429 or 503
(which did not run) is sent again after what the answer says, until
``retry_for`` seconds have passed since it was first sent.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, TypeGuard

from . import _json
from ._exceptions import BatchValidationError, Problem

__all__ = ["Advice", "PacedDispatcher", "Throttle", "advise", "parse_rate", "retry_after", "retry_wait"]

#: a reset of 10**9 or more is a Unix time (a delay that long would be 31 years;
#: as a date, it is September 2001); 10**12 or more, a Unix time in milliseconds.
EPOCH_SECONDS = 1e9
EPOCH_MILLISECONDS = 1e12
#: a header value longer than this is not read (an honest one is a few dozen characters).
MAX_FIELD = 1024
#: members of a list field read at most (policies, limits).
MAX_MEMBERS = 16
#: a hint shorter than this says nothing about when: the wait doubles from ``backoff`` instead.
MIN_HINT = 0.05
#: the slowest an adaptive throttle goes, in requests per second.
MIN_RATE = 0.1
#: seconds of successes that make up a "run" after which the adaptive rate rises a step.
RUN_SECONDS = 1.0
#: each step, as a share of the rate set by the last cut.
STEP = 0.05
#: how much larger each step is than the one before, while no 429 comes.
GROWTH = 2.0
#: a wait this long or longer says a quota is spent (see Throttle.limited).
LONG_WAIT = 2.0
#: seconds of recent answers that measure what the API grants.
HORIZON = 2.0
#: seconds of operations that may go out together once paced (see Throttle.most_at_once).
BURST = 0.1

_DIGITS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:/\s*(s|min|h))?\s*", re.ASCII)
_PER = {"s": 1.0, "min": 60.0, "h": 3600.0}
#: HTTP's white space around a value: str.strip() would also drop a no-break space or any Unicode space.
_OWS = " \t"


# ---------------------------------------------------------------- reading headers


@dataclass(frozen=True)
class Advice:
    """What an answer's headers say: seconds before the next request, and the stated requests per second.

    >>> advise({"Retry-After": "2", "RateLimit-Policy": '"default";q=50;w=1'})
    Advice(wait=2.0, rate=50.0)
    """

    wait: float | None = None
    rate: float | None = None


def advise(headers: Mapping[str, str], *, now: float | None = None) -> Advice:
    """When to come back and how fast to go, from an answer's headers (unbounded: see :func:`retry_wait`).

    >>> advise({"RateLimit": '"default";r=0;t=3'}).wait
    3.0
    >>> advise({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}).wait
    5.0

    The wait is ``Retry-After`` if the answer has one, else the reset of
    the IETF fields (``RateLimit: "p";r=0;t=N``, or the older
    ``RateLimit-Remaining: 0`` / ``RateLimit-Reset: N``), else
    ``X-RateLimit-Reset`` (a delay in seconds, or a Unix time when it is
    10**9 or more), when the remaining quota is 0 or not said. The rate is
    ``q/w`` of the IETF policy that ran out (else the one with the shortest
    window), when the API states one.
    """
    lower = {k.lower(): v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str)}
    now = time.time() if now is None else now
    policies = _policies(lower)
    remaining = _ietf_remaining(lower, now)
    wait = _retry_after(lower.get("retry-after"), now)
    if wait is None:
        wait = _exhausted_wait(remaining)
    if wait is None:
        wait = _exhausted_wait(_split_remaining(lower, "ratelimit-", now))
    if wait is None:
        wait = _exhausted_wait(_split_remaining(lower, "x-ratelimit-", now))
    spent = {name for name, (left, _reset) in remaining.items() if left is not None and left <= 0}
    chosen = [p for p in policies if p[0] in spent] or sorted(policies, key=lambda p: p[2])[:1]
    rate = min((q / w for _name, q, w in chosen), default=None)
    return Advice(wait, rate)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None.

    >>> retry_after({"Retry-After": "2"})
    2.0
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    return _retry_after(value, time.time())


def retry_wait(
    hint: float | None,
    attempt: int,
    *,
    backoff: float,
    max_backoff: float,
    left: float = math.inf,
    paced: float = 0.0,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when it would start past ``left``.

    >>> retry_wait(1.0, 1, backoff=0.5, max_backoff=30)
    1.0
    >>> retry_wait(99999999.0, 1, backoff=0.5, max_backoff=30)
    30.0
    >>> retry_wait(20.0, 1, backoff=0.5, max_backoff=30, left=5) is None
    True
    >>> retry_wait(1.0, 1, backoff=0.5, max_backoff=30, left=5, paced=10.0) is None  # the throttle's turn is later
    True

    The API's hint if it gave one (bounded by ``max_backoff``), else a wait
    that doubles from ``backoff`` with jitter; a hint of (next to) nothing
    counts as none, so an API that answers ``Retry-After: 0`` forever gets
    a few requests, not thousands. ``paced`` is how long the throttle holds
    the next start (:meth:`Throttle.delay`): the attempt starts after both.
    """
    if hint is not None and hint >= MIN_HINT:
        wait = float(min(hint, max_backoff))
    else:
        wait = min(backoff * 2 ** min(attempt - 1, 64), max_backoff) * (0.5 + random.random() / 2)
    return wait if max(wait, paced) <= left else None


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None or len(value) > MAX_FIELD:
        return None
    value = value.strip(_OWS)
    if _DIGITS.fullmatch(value):
        return max(0.0, float(value))
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if date.tzinfo is None:  # "-0000": a time in UTC whose zone was not said
        date = date.replace(tzinfo=UTC)
    try:
        return max(0.0, date.timestamp() - now)
    except (OverflowError, ValueError, OSError):
        return None


def _seconds(value: Any, now: float) -> float | None:
    """A reset as seconds from now: a delay, or a Unix time (seconds or milliseconds) when it is that large."""
    if isinstance(value, str):
        value = value.strip(_OWS)
        if not _DIGITS.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if value >= EPOCH_MILLISECONDS:
        value = value / 1000.0 - now
    elif value >= EPOCH_SECONDS:
        value = value - now
    return max(0.0, float(value))


def _count(value: Any) -> float | None:
    if isinstance(value, str):
        value = value.strip(_OWS).split(",", 1)[0].split(";", 1)[0].strip(_OWS)
        if not _DIGITS.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _exhausted_wait(remaining: Mapping[str, tuple[float | None, float | None]]) -> float | None:
    """The longest reset among quotas that ran out (or say nothing of what remains)."""
    waits = [reset for left, reset in remaining.values() if reset is not None and (left is None or left <= 0)]
    return max(waits) if waits else None


def _split_remaining(lower: Mapping[str, str], prefix: str, now: float) -> dict[str, tuple[float | None, float | None]]:
    """``{prefix}remaining`` and ``{prefix}reset`` (the older IETF draft, or the common X- form)."""
    reset = lower.get(prefix + "reset")
    if reset is None or len(reset) > MAX_FIELD:
        return {}
    left = lower.get(prefix + "remaining")
    return {"": (None if left is None or len(left) > MAX_FIELD else _count(left), _seconds(reset, now))}


def _policies(lower: Mapping[str, str]) -> list[tuple[str, float, float]]:
    """(name, quota, window) of each ``RateLimit-Policy`` member that states both, in any draft's form."""
    out = []
    # The earliest drafts put policies in RateLimit-Limit: "10, 10;w=1, 1000;w=3600".
    members = _members(lower.get("ratelimit-policy")) + _members(lower.get("ratelimit-limit"))
    for name, item, params in members:
        quota = params.get("q", item if name == "" else None)  # the -07 form: the quota is the item itself
        window = params.get("w")
        if _number(quota) and _number(window) and quota > 0 and window > 0:
            out.append((name, float(quota), float(window)))
    return out


def _ietf_remaining(lower: Mapping[str, str], now: float) -> dict[str, tuple[float | None, float | None]]:
    """Per policy name: (remaining, seconds to reset) from the ``RateLimit`` field."""
    out: dict[str, tuple[float | None, float | None]] = {}
    members = _members(lower.get("ratelimit"))
    dictionary = {name: item for name, item, _p in members if name.startswith("=")}
    if dictionary:  # the -07 form: limit=100, remaining=0, reset=5
        left, reset = dictionary.get("=remaining"), dictionary.get("=reset")
        if reset is not None:
            out[""] = (_count(left), _seconds(reset, now))
        return out
    for name, _item, params in members:
        if "t" in params or "r" in params:
            out[name] = (_count(params.get("r")), _seconds(params.get("t"), now))
    return out


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_MEMBER = re.compile(
    r"""\s*(?:"(?P<string>[^"\\]{0,256})"|(?P<key>[a-z*][a-z0-9_.*-]{0,63})\s*=\s*(?P<value>[^;,]{0,64})|(?P<bare>[^;,"]{0,64}))""",
    re.ASCII,
)
_PARAM = re.compile(
    r"\s*;\s*(?P<key>[a-z*][a-z0-9_.*-]{0,63})(?:=(?P<value>\"[^\"\\]{0,256}\"|[^;,]{0,64}))?", re.ASCII
)


def _members(value: str | None) -> list[tuple[str, Any, dict[str, Any]]]:
    """A structured field's list (or dictionary) members as (name, item, params), read leniently and boundedly.

    A list member's name is its string or token; a dictionary member's is ``=key``.
    """
    if not value or len(value) > MAX_FIELD:
        return []
    out: list[tuple[str, Any, dict[str, Any]]] = []
    pos = 0
    while pos < len(value) and len(out) < MAX_MEMBERS:
        m = _MEMBER.match(value, pos)
        if m is None:
            break
        if m.group("string") is not None:
            name, item = m.group("string"), m.group("string")
        elif m.group("key") is not None:
            name, item = "=" + m.group("key"), _item(m.group("value"))
        else:
            bare = (m.group("bare") or "").strip(_OWS)
            item = _item(bare)
            name = bare if isinstance(item, str) else ""
        pos = m.end()
        params: dict[str, Any] = {}
        while len(params) < MAX_MEMBERS:
            p = _PARAM.match(value, pos)
            if p is None:
                break
            params[p.group("key")] = True if p.group("value") is None else _item(p.group("value"))
            pos = p.end()
        out.append((name, item, params))
        comma = value.find(",", pos)
        if comma < 0:
            break
        pos = comma + 1
    return out


def _item(text: str) -> Any:
    text = text.strip(_OWS)
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1]
    if _DIGITS.fullmatch(text):
        return float(text)
    return text


# ---------------------------------------------------------------- rate=


def parse_rate(value: Any, name: str = "rate") -> float | None:
    """Requests per second from ``"50/s"``, ``"3000/min"``, ``"100000/h"`` or a positive number; None stays None.

    >>> parse_rate("3000/min")
    50.0
    >>> parse_rate(2.5)
    2.5
    >>> parse_rate("fast")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    BatchValidationError: rate: 'fast' is not a rate: write a number of requests per second, or '50/s', ...
    """
    if value is None:
        return None
    per_second: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        per_second = float(value)
    elif isinstance(value, str):
        m = _RATE.fullmatch(value)
        if m is not None:
            per_second = float(m.group(1)) / _PER[m.group(2) or "s"]
    if per_second is None or not math.isfinite(per_second) or per_second <= 0:
        raise BatchValidationError(
            [
                Problem(
                    name,
                    f"{value!r} is not a rate: write a number of requests per second, or '50/s', '3000/min', '100000/h'",
                )
            ]
        )
    return per_second


# ---------------------------------------------------------------- pacing


class Throttle:
    """Spaces operations at a rate; with none given, adapts to the 429s the API answers (AIMD).

    >>> clock = iter([0.0, 0.0, 0.0]).__next__
    >>> t = Throttle(2.0, clock=clock)
    >>> t.reserve(), t.reserve(), t.reserve(3)
    (0.0, 0.5, 1.0)

    :meth:`reserve` books the next start of ``n`` operations and says how long
    to wait for it (a batch of 50 spends 50). With no ``rate``, nothing is
    paced, and reserving costs nothing, until the first 429: the throttle
    then paces at what the API granted (its stated ``q/w`` if it says,
    else the successes it let through over the time until it lets more), and
    holds every start until the answer's wait is over. A later 429 cuts the
    rate by the share of answers refused since the last cut, by half at most
    (never below what the API granted over the last seconds), at most once
    per round trip: a 429 to a request sent before the last cut changes
    nothing. A 429 whose wait is long (a quota of a minute or an hour spent)
    holds every start until then and leaves the rate as it is. Each second or so of successes raises the rate a step. A given
    ``rate`` is never exceeded.
    """

    def __init__(self, rate: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = rate
        #: operations per second now; None: not paced.
        self.rate = rate
        self._clock = clock
        self._next = -math.inf  # when the next operation may start
        self._cut_at = -math.inf
        self._stated: float | None = None
        self._step = 0.0
        self._run = 0  # successes since the last step or cut
        self._first: float | None = None  # the first answer's send time
        # Until a second cut: successes of what was sent before the first, and the time they took.
        self._before = 0
        self._span = 0.0
        self._estimating = False
        # Answers to what was sent since the last cut: the share refused says how far over the limit the pace is.
        self._ok_since = 0
        self._refused_since = 0
        self._peak = math.inf  # the rate that last drew a 429 (none yet: no bound on the steps' growth)
        # successes by tenth of a second, over the last HORIZON seconds: what the API grants.
        self._slots = [0] * int(HORIZON * 10)
        self._slot = 0

    def __repr__(self) -> str:
        rate = "unpaced" if self.rate is None else f"{self.rate:.3g}/s"
        return f"Throttle({rate})"

    @property
    def paced(self) -> bool:
        return self.rate is not None or self._next != -math.inf

    def most_at_once(self) -> int | None:
        """How many operations may go out together once paced (None: as many as there are).

        >>> Throttle().most_at_once() is None, Throttle(50).most_at_once(), Throttle(0.5).most_at_once()
        (True, 5, 1)

        A batch's operations run back to back on the server, and an API that
        counts requests in a sliding window sees them as one burst: a batch of
        50 booked for the second after the last one lands on a window that may
        still hold that one. Once paced, a batch goes out in parts of at most
        ``BURST`` seconds' worth of operations, so the pace the throttle keeps
        is the pace the API sees. Never bounded before then: with no 429 seen,
        nothing is split.
        """
        if self.rate is None:
            return None
        return max(1, int(self.rate * BURST))

    def reserve(self, n: int = 1) -> float:
        """Seconds to wait before ``n`` operations may start (0.0: now); the start is booked."""
        if self.rate is None and self._next == -math.inf:
            return 0.0  # never limited: not even the clock is read
        now = self._clock()
        start = max(now, self._next)
        if self.rate is not None:
            self._next = start + n / self.rate
        return start - now

    def delay(self) -> float:
        """Seconds before the next operation may start, as things stand (nothing is booked).

        >>> clock = iter([0.0, 0.0, 0.0]).__next__
        >>> t = Throttle(2.0, clock=clock)
        >>> t.reserve(4), t.delay()
        (0.0, 2.0)
        """
        if self._next == -math.inf:
            return 0.0
        return max(0.0, self._next - self._clock())

    async def wait(self, n: int = 1) -> None:
        """Sleep until ``n`` operations may start (see :meth:`reserve`)."""
        delay = self.reserve(n)
        if delay > 0:
            await asyncio.sleep(delay)

    def now(self) -> float:
        return self._clock()

    def succeeded(self, sent_at: float, n: int = 1) -> None:
        """``n`` operations sent at ``sent_at`` got an answer other than 429: the API let them through."""
        if n <= 0:
            return
        now = self._clock()
        if self._first is None:
            self._first = sent_at
        self._count(now, n)
        if self.rate is None or sent_at < self._cut_at:
            if self._cut_at == -math.inf or self._estimating:
                self._before += n
            if self._estimating and self.rate is not None:
                # Answers to what was sent before the first 429 are still coming (a batch of 50
                # answers late, and all at once): each one that got through says the API allows more.
                self.rate = max(self.rate, min(self._before / self._span, self._top()))
            return
        self._run += n
        self._ok_since += n
        if self._run >= max(1.0, self.rate * RUN_SECONDS):
            self._run = 0
            before, self.rate = self.rate, min(self.rate + self._step, self._top())
            if before < self._peak <= self.rate:
                # Back at the rate that last drew a 429: small steps again from here.
                self._step = max(self.rate * STEP, MIN_RATE)
            else:
                # Each step that met no 429 makes the next one larger: far from the limit, it is found in a few seconds.
                self._step *= GROWTH

    def limited(
        self,
        sent_at: float,
        advice: Advice = Advice(),
        *,
        most: float = math.inf,
        share: float | None = None,
        refused: int = 1,
    ) -> None:
        """``refused`` operations sent at ``sent_at`` were answered 429 with ``advice``; ``most`` bounds the hold.

        The rate is cut by the share refused, by half at most: ``share`` if
        given; by default, that of the answers to what was sent since the last
        cut, these included, or of the last second's if there were more (one
        429 among a hundred successes is a pace a little over the limit, not
        twice it; 3 of a batch of 5 that went out after 95 successes are 3 in
        a hundred too).
        """
        now = self._clock()
        if self._first is None:
            self._first = sent_at
        if advice.rate is not None:
            self._stated = advice.rate
        self._run = 0
        if sent_at < self._cut_at:
            return  # sent before the last cut, which answered it already
        if share is None:
            self._refused_since += max(1, refused)
            # Against the successes since the last cut, or of the last second if more: a cut just
            # made leaves a window that still holds what went before it (an API counting requests
            # over the last second refuses a few more), and one 429 just after a cut is one among
            # a second's answers, not one among the few since.
            ok = max(self._ok_since, self._recent(now, RUN_SECONDS))
            share = self._refused_since / (self._refused_since + ok)
        self._ok_since = self._refused_since = 0
        wait = min(advice.wait if advice.wait is not None else 0.0, most)
        # A long wait says a quota is spent until then (a window of a minute, an hour): not that
        # the pace is too fast. The pace stands, and every start waits until the quota is back.
        spent = advice.wait is not None and advice.wait >= LONG_WAIT
        if self.rate is None or self._cut_at == -math.inf:
            # The first 429: what got through did so over the time so far, or over the wait
            # until more may (a burst spends a second's quota in no time), whichever is longer.
            self._span = max(now - self._first, advice.wait if advice.wait is not None else RUN_SECONDS, 0.1)
            self._estimating = True
            if self._before:
                estimate = self._before / self._span
            else:
                # Nothing got through yet, but the API lets the next one through once its wait (as it
                # will be kept) is over: a pace from nothing would be the slowest there is, for a while.
                estimate = 1.0 / max(now - self._first, wait if advice.wait is not None else RUN_SECONDS, 0.1)
            rate = min(self._stated or estimate, self._top())
        elif spent:
            rate = self.rate
        else:
            self._estimating = False
            self._peak = self.rate
            rate = max(self.rate * max(0.5, 1.0 - share), min(self._granted(now), self.rate))
            if self._stated is not None:
                rate = min(rate, self._stated)
        first_cut = self._cut_at == -math.inf
        self.rate = max(rate, MIN_RATE)
        self._step = max(self.rate * STEP, MIN_RATE)
        self._cut_at = now
        if wait > 0 and (first_cut or spent) and self._next < now + wait:
            self._next = now + wait

    def observe(
        self,
        sent_at: float,
        answers: Iterable[tuple[int | None, Mapping[str, str] | None]],
        *,
        most: float = math.inf,
    ) -> None:
        """Feed the answers of operations sent together at ``sent_at``: (status, headers) each."""
        ok = 0
        limited: list[Advice] = []
        for status, headers in answers:
            if status == 429:
                limited.append(advise(headers or {}))
            elif status is not None and status != 503:
                ok += 1
        self.succeeded(sent_at, ok)
        if limited:
            waits = [a.wait for a in limited if a.wait is not None]
            rates = [a.rate for a in limited if a.rate is not None]
            advice = Advice(max(waits) if waits else None, min(rates) if rates else None)
            self.limited(sent_at, advice, most=most, refused=len(limited))

    def _top(self) -> float:
        """The most the rate may be: the given rate, and what the API states."""
        return min(x for x in (self.ceiling, self._stated, math.inf) if x is not None)

    def _count(self, now: float, n: int) -> None:
        slot = int(now * 10)
        size = len(self._slots)
        if slot != self._slot:
            for s in range(self._slot + 1, min(slot, self._slot + size) + 1):
                self._slots[s % size] = 0
            self._slot = slot
        self._slots[slot % size] += n

    def _recent(self, now: float, seconds: float) -> int:
        """Successes answered over the last ``seconds`` (at most ``HORIZON``)."""
        self._count(now, 0)
        slots = min(len(self._slots), max(1, int(seconds * 10)))
        return sum(self._slots[(self._slot - i) % len(self._slots)] for i in range(slots))

    def _granted(self, now: float) -> float:
        """Successes per second over the last ``HORIZON`` seconds (or since the first answer)."""
        self._count(now, 0)
        seen = now - self._first if self._first is not None else 0.0
        return sum(self._slots) / max(min(HORIZON, seen), 0.1)


# ---------------------------------------------------------------- direct mode


class PacedDispatcher:
    """A dispatcher in front of another: each operation paced by ``throttle``, 429 and 503 sent again.

    >>> async def api(op, **options): ...      # the dispatcher in front: an HTTPDispatcher, the in-process engine
    >>> paced = PacedDispatcher(api, Throttle(10.0), retry_for=300)
    >>> paced.throttle
    Throttle(10/s)

    An operation answered 429 or 503 did not run: it waits what the answer
    says (bounded by ``max_backoff``; else a wait doubling from ``backoff``)
    and goes again, until ``retry_for`` seconds after it was first sent;
    then its last answer stands. Each attempt is bounded by ``timeout``
    (else 504, as the engine answers), and the engine's own bound is off:
    waiting is not the API taking long. ``retry=False`` paces only.
    """

    def __init__(
        self,
        inner: Callable[..., Awaitable[Any]],
        throttle: Throttle,
        *,
        retry: bool = True,
        retry_for: float = 300.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 60.0,
    ) -> None:
        self._inner = inner
        #: the wrapped dispatcher's auth flow, for the sender and the runner to see (a 401 it could not cure stops the run).
        self.auth = getattr(inner, "auth", None)
        self.throttle = throttle
        #: whether operations answered 429 or 503 go again here, until ``retry_for``: then nobody else resends them.
        self.retries = retry
        self._retry_for = retry_for
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = timeout

    async def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None) -> Any:
        from ._dispatch import DispatchResult
        from ._engine import _bounded

        throttle = self.throttle
        first: float | None = None
        attempt = 0
        while True:
            await throttle.wait(1)
            attempt += 1
            sent = throttle.now()
            if first is None:
                first = sent
            try:
                result = await _bounded(self._inner(method, path, headers, body), self._timeout)
            except TimeoutError:
                message = f"the operation took longer than {self._timeout:g} s"
                return DispatchResult(
                    504,
                    {"content-type": "application/json"},
                    _json.dumps({"error": {"code": "timeout", "message": message}}),
                )
            status = result.status
            if status != 429 and status != 503:
                throttle.succeeded(sent)
                return result
            advice = advise(result.headers)
            if status == 429:
                throttle.limited(sent, advice, most=self._max_backoff)
            if not self.retries:
                return result
            left = first + self._retry_for - throttle.now()
            wait = retry_wait(
                advice.wait,
                attempt,
                backoff=self._backoff,
                max_backoff=self._max_backoff,
                left=left,
                paced=throttle.delay(),
            )
            if wait is None:
                return result
            await asyncio.sleep(wait)
