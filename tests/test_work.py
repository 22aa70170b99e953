"""A batch's work budget (batchnb._work): one count of units, shared by the threads filling in its references."""

from __future__ import annotations

import threading
import time

import pytest

from batchnb import _work
from batchnb._work import OutOfTime, OutOfWork, Slice, Work, spend


def test_units_spent_in_metered_blocks_add_up_and_what_is_not_used_goes_back():
    work = Work(10_000)
    for _ in range(4):
        with work.metered():
            spend(1_000)
            spend(1)
    assert work.spent == 4_004 and work.left == 5_996


def test_the_block_that_needs_more_than_is_left_is_refused_and_nothing_is_left_after_it():
    work = Work(3_000)
    with work.metered():
        spend(2_000)
    with pytest.raises(OutOfWork, match="budget of 3000 units is spent"):
        with work.metered():
            spend(1_500)
    assert work.left == 0
    with pytest.raises(OutOfWork):
        with work.metered():
            spend(1)


def test_outside_a_metered_block_nothing_is_counted_or_refused():
    spend(10**12)


def test_threads_share_one_budget():
    work = Work(1_000_000)
    refused: list[int] = []

    def busy() -> None:
        try:
            with work.metered():
                for _ in range(400_000):
                    spend(1)
        except OutOfWork:
            refused.append(1)

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # 1,200,000 units were asked for, 1,000,000 given: one thread at least was refused, and no unit was lost.
    assert refused and work.left == 0


def test_a_stopped_budget_stops_the_work_at_its_next_units():
    work = Work(10**9)
    work.stop()
    with pytest.raises(OutOfTime):
        with work.metered():
            for _ in range(10_000):
                spend(1)


def test_a_deadline_stops_the_work():
    work = Work(10**9, deadline=time.monotonic() - 1)
    with pytest.raises(OutOfTime):
        with work.metered():
            spend(1)


def test_a_slice_ends_the_block_and_gives_back_what_it_spent():
    work = Work(100_000)
    with pytest.raises(Slice):
        with work.metered(slice_units=2_000):
            for _ in range(100_000):
                spend(1)
    assert work.left == 100_000
    with work.metered(slice_units=2_000):
        spend(100)
    assert work.spent == 100


def test_every_cost_is_a_positive_whole_number():
    assert all(isinstance(v, int) and v > 0 for v in _work.COSTS.values())
