"""A cache bounded by what its entries weigh, not by how many there are."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SizedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SizedCache(Generic[K, V]):
    """A least-recently-used cache bounded by the total weight of its entries, not their number.

    A string key weighs its length: a million distinct one-megabyte strings
    cannot pile up in memory, however few entries that is.

    >>> cache = SizedCache(100, len)
    >>> cache.get("abc", str.upper), cache.get("abc", str.lower), cache.weight
    ('ABC', 'ABC', 3)
    """

    def __init__(self, max_weight: int, weigh: Callable[[K], int]) -> None:
        self._max = max_weight
        self._weigh = weigh
        self._weight = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[K], V]) -> V:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        value = make(key)
        weight = self._weigh(key)
        if weight <= self._max // 16:  # one entry never takes over the cache
            with self._lock:
                if key not in self._items:
                    self._items[key] = (value, weight)
                    self._weight += weight
                while self._weight > self._max:
                    _key, (_value, w) = self._items.popitem(last=False)
                    self._weight -= w
        return value

    @property
    def weight(self) -> int:
        return self._weight
