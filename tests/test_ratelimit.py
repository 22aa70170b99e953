"""Rate limits as APIs state them: headers read, rate= parsed, the pace kept and adapted (a fake clock, no sleeping)."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from batchnb import BatchValidationError
from batchnb._dispatch import DispatchResult
from batchnb._engine import KEPT_HEADERS
from batchnb._ratelimit import (
    EPOCH_SECONDS,
    Advice,
    PacedDispatcher,
    Throttle,
    advise,
    parse_rate,
    retry_after,
    retry_wait,
)
from batchnb._senders import retry_after as old_home

NOW = 1_800_000_000.0


# ---------------------------------------------------------------- reading headers


def test_retry_after_keeps_its_old_home_and_meaning():
    assert old_home is retry_after
    assert retry_after({"Retry-After": "2"}) == 2.0 and retry_after({"retry-after": "0.5"}) == 0.5
    date = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    assert 3500 < retry_after({"Retry-After": date}) <= 3600


def test_retry_after_comes_first():
    headers = {"Retry-After": "4", "RateLimit": '"default";r=0;t=9', "X-RateLimit-Reset": "7"}
    assert advise(headers, now=NOW).wait == 4.0


def test_ietf_fields_latest_draft():
    headers = {"RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400', "RateLimit": '"burst";r=0;t=12'}
    advice = advise(headers, now=NOW)
    assert advice.wait == 12.0 and advice.rate == pytest.approx(100 / 60)  # the policy that ran out
    # Nothing ran out: no wait; the rate is the shortest window's.
    advice = advise({**headers, "RateLimit": '"burst";r=5;t=12'}, now=NOW)
    assert advice.wait is None and advice.rate == pytest.approx(100 / 60)


def test_ietf_fields_older_drafts():
    # -07: a dictionary, and a policy whose item is the quota.
    assert advise({"RateLimit": "limit=10, remaining=0, reset=5", "RateLimit-Policy": "10;w=1"}, now=NOW) == Advice(
        5.0, 10.0
    )
    # -00 to -06: three fields, the policies in RateLimit-Limit.
    older = {"RateLimit-Limit": "10, 10;w=1", "RateLimit-Remaining": "0", "RateLimit-Reset": "7"}
    assert advise(older, now=NOW) == Advice(7.0, 10.0)
    assert advise({**older, "RateLimit-Remaining": "3"}, now=NOW).wait is None


def test_x_ratelimit_reset_as_seconds_or_as_a_unix_time():
    assert advise({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}, now=NOW).wait == 5.0
    assert advise({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 30)}, now=NOW).wait == 30.0
    assert advise({"X-RateLimit-Reset": str(int(NOW * 1000) + 2500)}, now=NOW).wait == 2.5  # milliseconds
    assert advise({"X-RateLimit-Reset": str(int(NOW) - 30)}, now=NOW).wait == 0.0  # already past
    assert advise({"X-RateLimit-Reset": str(EPOCH_SECONDS - 1)}, now=NOW).wait == EPOCH_SECONDS - 1  # a delay
    assert advise({"X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "5"}, now=NOW).wait is None


def test_the_standard_is_preferred_over_x_ratelimit():
    headers = {"RateLimit": '"p";r=0;t=3', "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "60"}
    assert advise(headers, now=NOW).wait == 3.0


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "nan"},
        {"Retry-After": "inf"},
        {"Retry-After": "1e309"},
        {"Retry-After": "\uff11\uff10"},  # full-width digits: float() reads them, HTTP does not
        {"Retry-After": "2" * 5000},
        {"Retry-After": "Mon, 99 Foo 99999 99:99:99 GMT"},
        {"RateLimit": '"p";r=0;t=' + "9" * 400},
        {"RateLimit": "x" * 100_000},
        {"RateLimit": ", ".join(f'"p{i}";r=0;t={i}' for i in range(10_000))},
        {"RateLimit-Policy": '"p";q=0;w=0', "RateLimit": '"p";r=0'},
        {"RateLimit-Policy": '"p";q=-5;w=1'},
        {"X-RateLimit-Reset": "-inf"},
        {"X-RateLimit-Reset": "1e999"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"},
        {"RateLimit": '"unterminated;r=0;t=5'},
        {b"Retry-After": b"5"},
    ],
)
def test_hostile_values_are_read_as_nothing_or_as_finite_numbers(headers):
    advice = advise(headers, now=NOW)
    for value in (advice.wait, advice.rate):
        assert value is None or (math.isfinite(value) and value >= 0)
    assert advice.rate is None or advice.rate > 0


def test_a_hostile_wait_is_bounded_by_max_backoff_and_the_time_left():
    huge = advise({"Retry-After": "99999999"}, now=NOW).wait
    assert huge == 99999999.0  # read as said ...
    assert retry_wait(huge, 1, backoff=0.5, max_backoff=30) == 30.0  # ... waited as bounded
    assert retry_wait(huge, 1, backoff=0.5, max_backoff=30, left=10) is None  # past retry_for: give up
    epoch = advise({"RateLimit": f'"p";r=0;t={int(NOW) + 10**9}'}, now=NOW).wait
    assert retry_wait(epoch, 1, backoff=0.5, max_backoff=2) == 2.0


def test_a_hint_of_nothing_counts_as_none():
    waits = [retry_wait(0.0, attempt, backoff=0.5, max_backoff=30) for attempt in range(1, 12)]
    assert waits[0] >= 0.25 and waits[-1] >= 15  # doubling, so an API answering "0" forever gets few requests


def test_the_gateway_keeps_the_rate_limit_headers():
    for name in ("retry-after", "ratelimit", "ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining"):
        assert name in KEPT_HEADERS


# ---------------------------------------------------------------- rate=


@pytest.mark.parametrize(
    "value, per_second",
    [
        ("50/s", 50.0),
        ("3000/min", 50.0),
        ("100000/h", 100000 / 3600),
        (" 20 / s ", 20.0),
        ("7", 7.0),
        (2.5, 2.5),
        (3, 3.0),
    ],
)
def test_rates_as_apis_state_them(value, per_second):
    assert parse_rate(value) == pytest.approx(per_second)


@pytest.mark.parametrize(
    "value", ["fast", "", "50/d", "50/", "/s", "1e3/s", "-5/s", "0/s", 0, -1, math.nan, math.inf, True, [50], "５０/s"]
)
def test_anything_else_is_refused_naming_rate(value):
    with pytest.raises(BatchValidationError) as info:
        parse_rate(value)
    assert info.value.problems[0].pointer == "rate" and "50/s" in str(info.value)


def test_none_is_no_rate():
    assert parse_rate(None) is None


# ---------------------------------------------------------------- the pace


class Clock:
    def __init__(self) -> None:
        self.t = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.t


def test_a_fixed_rate_spaces_operations_and_a_batch_spends_its_size():
    clock = Clock()
    t = Throttle(10.0, clock=clock)
    assert [t.reserve() for _ in range(3)] == [0.0, pytest.approx(0.1), pytest.approx(0.2)]
    assert t.reserve(50) == pytest.approx(0.3)
    assert t.reserve(1) == pytest.approx(5.3)  # the batch of 50 spent 5 seconds
    clock.t += 60  # idle: no credit piles up
    assert t.reserve() == 0.0 and t.reserve() == pytest.approx(0.1)


def test_with_no_rate_and_no_429_nothing_is_slowed_down_not_even_the_clock_read():
    clock = Clock()
    t = Throttle(clock=clock)
    assert all(t.reserve(50) == 0.0 for _ in range(1000))
    assert clock.reads == 0 and t.rate is None


def burst(t: Throttle, clock: Clock, ok: int, spacing: float = 0.001) -> None:
    for _ in range(ok):
        t.succeeded(clock.t)
        clock.t += spacing


def test_the_first_429_paces_at_what_the_api_let_through_and_holds_for_its_wait():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 50)  # 50 in 50 ms, then a 429 "come back in 1 s"
    t.limited(clock.t, Advice(wait=1.0))
    assert t.rate == pytest.approx(50, rel=0.01)
    assert t.reserve() == pytest.approx(1.0) and t.reserve() == pytest.approx(1.0 + 1 / t.rate)


@pytest.mark.parametrize(
    ("wait", "most", "rate"),
    [
        (1.0, 30.0, 1.0),  # "come back in a second": one a second
        (0.0, 30.0, 10.0),  # "come back now": no wait says anything; ten a second until answers say more
        (None, 30.0, 1.0),  # no hint: a second
        (99999999.0, 0.2, 5.0),  # a wait bounded by max_backoff is the wait kept
    ],
)
def test_a_429_before_anything_got_through_paces_at_one_per_wait_not_at_the_slowest(
    wait: float | None, most: float, rate: float
) -> None:
    # Nothing got through to count: the pace is the one the API says it lets through once the wait is
    # over. From "none got through" it was 0.1 a second: ten seconds between retries, and a
    # retry_for of 1 s that took 30.
    clock = Clock()
    t = Throttle(clock=clock)
    t.limited(clock.t, Advice(wait=wait), most=most)
    assert t.rate == pytest.approx(rate)


def test_delay_says_when_the_next_start_is_without_booking_it():
    clock = Clock()
    t = Throttle(clock=clock)
    assert t.delay() == 0.0  # never limited
    burst(t, clock, 50)
    t.limited(clock.t, Advice(wait=1.0))
    assert t.delay() == pytest.approx(1.0) and t.delay() == pytest.approx(1.0)  # asking books nothing
    assert t.reserve() == pytest.approx(1.0) and t.delay() == pytest.approx(1.0 + 1 / t.rate)
    assert retry_wait(0.5, 1, backoff=0.5, max_backoff=30, left=0.9, paced=t.delay()) is None


def test_the_stated_policy_sets_the_rate():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 5)
    t.limited(clock.t, advise({"RateLimit-Policy": '"d";q=3000;w=60', "RateLimit": '"d";r=0;t=1'}))
    assert t.rate == 50.0
    for _ in range(5000):  # a long run of successes never goes past what the API states
        clock.t += 0.02
        t.succeeded(clock.t)
    assert t.rate == 50.0


def test_a_given_rate_is_never_exceeded():
    clock = Clock()
    t = Throttle(20.0, clock=clock)
    burst(t, clock, 20)
    t.limited(clock.t, Advice(wait=1.0, rate=100.0))
    assert t.rate <= 20.0
    for _ in range(2000):
        clock.t += 0.05
        t.succeeded(clock.t)
    assert t.rate == 20.0


def test_halved_at_most_once_per_round_trip():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 100, spacing=0.01)
    t.limited(clock.t, Advice(wait=1.0))
    first = t.rate
    clock.t += 5  # seconds with nothing granted: the cut is not held up by what was granted
    sent = clock.t
    clock.t += 0.05
    t.limited(sent, Advice(wait=1.0))
    assert t.rate == pytest.approx(first / 2)
    for _ in range(20):  # answers to requests sent before that cut: no further cut
        t.limited(sent, Advice(wait=1.0))
    assert t.rate == pytest.approx(first / 2)
    clock.t += 0.01
    t.limited(clock.t, Advice(wait=1.0))  # sent after it: cut again
    assert t.rate == pytest.approx(first / 4)


def test_a_batch_partly_refused_cuts_by_the_share_refused():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 100, spacing=0.01)
    t.limited(clock.t, Advice(wait=1.0))
    before = t.rate
    clock.t += 5
    t.observe(clock.t, [(201, {})] * 45 + [(429, {"Retry-After": "1"})] * 5)
    assert t.rate == pytest.approx(before * 0.9)


def test_a_refusal_just_after_a_cut_is_one_among_a_seconds_answers():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 50, spacing=0.02)  # a second at 50/s
    t.limited(clock.t, Advice(wait=1.0))
    clock.t += 1
    burst(t, clock, 50, spacing=0.02)
    t.limited(clock.t, Advice(wait=1.0))  # one refused among a second's answers
    cut = t.rate
    clock.t += 0.1  # a batch of 5 sent after that cut, one refused (the window still holds what went before)
    t.observe(clock.t, [(201, {})] * 4 + [(429, {"Retry-After": "1"})])
    assert t.rate == pytest.approx(cut * (1 - 1 / 54), rel=0.01)  # not a fifth less


def test_once_paced_a_batch_goes_out_in_parts_of_a_tenth_of_a_second():
    assert Throttle().most_at_once() is None  # no 429 seen: nothing is split
    assert Throttle(50).most_at_once() == 5
    assert Throttle(3000 / 60).most_at_once() == 5
    assert Throttle(10_000).most_at_once() == 1000
    assert Throttle(0.2).most_at_once() == 1
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 100, spacing=0.01)
    t.limited(clock.t, Advice(wait=1.0))
    assert t.most_at_once() == int(t.rate / 10)


def test_successes_raise_the_rate_step_by_step():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 10)
    t.limited(clock.t, Advice(wait=1.0))
    rates = [t.rate]
    for _ in range(10):  # ten seconds of successes at the current pace
        for _ in range(int(t.rate) + 1):
            clock.t += 1 / t.rate
            t.succeeded(clock.t)
        rates.append(t.rate)
    assert rates == sorted(rates) and rates[-1] > 2 * rates[0]


def test_a_long_wait_is_a_spent_quota_it_holds_without_cutting():
    clock = Clock()
    t = Throttle(clock=clock)
    burst(t, clock, 3000, spacing=0.0001)  # a minute's quota in a third of a second
    t.limited(clock.t, Advice(wait=59.0), most=30.0)
    rate = t.rate
    assert rate == pytest.approx(3000 / 59, rel=0.02)
    assert t.reserve() == pytest.approx(30.0)  # the hold, bounded by max_backoff
    clock.t += 30
    t.limited(clock.t, Advice(wait=29.0), most=30.0)  # still spent: hold again, same pace
    assert t.rate == rate and t.reserve() == pytest.approx(29.0, abs=0.1)


class FixedWindow:
    """At most ``n`` requests in each second (as many APIs count), 429 + Retry-After past it."""

    def __init__(self, n: int) -> None:
        self.n, self.window, self.used = n, None, 0

    def __call__(self, t: float) -> tuple[int, dict[str, str]]:
        window = int(t)
        if window != self.window:
            self.window, self.used = window, 0
        if self.used < self.n:
            self.used += 1
            return 201, {}
        return 429, {"Retry-After": str(max(1, math.ceil(window + 1 - t)))}


@pytest.mark.parametrize("in_flight", [4, 16])
def test_a_run_with_no_rate_settles_near_the_apis_limit(in_flight):
    """A simulation on a fake clock: operations in flight, each sent again after its 429's wait."""
    import heapq

    clock = Clock()
    clock.t = 0.0
    api, t, rows = FixedWindow(50), Throttle(clock=clock), 1000
    events: list[tuple[float, int, int]] = [(0.0, i, 0) for i in range(in_flight)]  # (time, worker, attempt)
    todo, done, seq, limited = rows, 0, in_flight, 0
    while events and done < rows:
        clock.t, _w, attempt = heapq.heappop(events)
        if attempt == 0:
            if todo == 0:
                continue
            todo -= 1
        delay = t.reserve()
        clock.t += delay
        sent = clock.t
        status, headers = api(sent + 0.001)
        clock.t = sent + 0.003
        seq += 1
        if status == 201:
            t.succeeded(sent)
            done += 1
            heapq.heappush(events, (clock.t, seq, 0))
        else:
            limited += 1
            advice = advise(headers)
            t.limited(sent, advice, most=30)
            heapq.heappush(
                events, (clock.t + retry_wait(advice.wait, attempt + 1, backoff=0.5, max_backoff=30), seq, attempt + 1)
            )
    assert done == rows
    assert 40 <= t.rate <= 60, t.rate
    # Few requests refused: the pace, not the 429s, does the limiting (ideal 20 s of simulated time).
    assert limited < rows * 0.1 and clock.t < 20 * 1.25


# ---------------------------------------------------------------- direct mode's dispatcher


class Scripted:
    def __init__(self, answers: list[DispatchResult]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self, method, path, headers, body):
        self.calls += 1
        return self.answers.pop(0)


@pytest.mark.slow
def test_the_paced_dispatcher_sends_a_429_again_after_its_wait():
    inner = Scripted([DispatchResult(429, {"retry-after": "0"}), DispatchResult(503, {}), DispatchResult(201, {})])
    paced = PacedDispatcher(inner, Throttle(), backoff=0.001, max_backoff=0.01)
    assert asyncio.run(paced("POST", "/x", [], b"{}")).status == 201 and inner.calls == 3


def test_the_paced_dispatcher_gives_up_after_retry_for_with_the_last_answer():
    inner = Scripted([DispatchResult(429, {"retry-after": "99999999"})] * 5)
    paced = PacedDispatcher(inner, Throttle(), retry_for=5, max_backoff=30)
    started = time.monotonic()
    assert asyncio.run(paced("POST", "/x", [], b"{}")).status == 429
    assert inner.calls == 1 and time.monotonic() - started < 5  # 30 s would pass retry_for: no wait at all


def test_the_paced_dispatcher_without_retry_only_paces():
    inner = Scripted([DispatchResult(429, {"retry-after": "0"})])
    paced = PacedDispatcher(inner, Throttle(), retry=False)
    assert asyncio.run(paced("GET", "/x", [], None)).status == 429 and inner.calls == 1


def test_each_attempt_is_bounded_by_the_timeout():
    async def slow(method, path, headers, body):
        await asyncio.sleep(5)

    result = asyncio.run(PacedDispatcher(slow, Throttle(), timeout=0.05)("GET", "/x", [], None))
    assert result.status == 504 and b"longer than 0.05 s" in result.body
