# -*- test-case-name: tests.test_lru -*-
"""
Values that never change, kept in a process's memory within a byte budget, least recently
used out first: what a complete V1 image holds, and V2 manifests by digest.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from twistreg.metrics import Count, count

#: What an unnamed cache counts into: nothing ever flushes it.
_NOT_COUNTED = Count("cache_hits", ("unnamed",))


class BoundedLRU:
    """
    An LRU of values, each with its size in bytes.

    @param max_age: seconds a value is served before it must be read again (so that a value
        removed from storage by hand or by a collector stops being served soon after); None:
        for as long as it stays within the budget.
    @param clock: what ages the values; required with C{max_age}.
    @param name: the C{cache} label of its hits and misses in the metrics; None: not counted.
    """

    def __init__(self, budget: int, max_age: float | None = None,
                 clock: IReactorTime | None = None, *, name: str | None = None) -> None:
        if max_age is not None and clock is None:
            raise ValueError("an age limit needs a clock")
        self._hits = self._misses = _NOT_COUNTED
        if name is not None:
            self._hits, self._misses = count("cache_hits", name), count("cache_misses", name)
        self._clock = clock
        self._budget = budget
        self._max_age = max_age
        self._used = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int, float | None]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        """The value kept under C{key}, or None."""
        entry = self._entries.get(key)
        if entry is None:
            self._misses.inc()
            return None
        value, _, expiry = entry
        if expiry is not None and expiry <= self._clock.seconds():
            self._drop(key)
            self._misses.inc()
            return None
        self._entries.move_to_end(key)
        self._hits.inc()
        return value

    def keep(self, key: Hashable, value: Any, size: int) -> None:
        """Keep C{value} (about C{size} bytes), evicting the least recently used."""
        if size > self._budget:
            return
        if key in self._entries:
            self._drop(key)
        while self._used + size > self._budget:
            self._drop(next(iter(self._entries)))
        expiry = None if self._max_age is None else self._clock.seconds() + self._max_age
        self._entries[key] = (value, size, expiry)
        self._used += size

    def _drop(self, key: Hashable) -> None:
        _, size, _ = self._entries.pop(key)
        self._used -= size
