# -*- test-case-name: tests.test_completed -*-
"""
What never changes once an image is complete, kept in each process's memory.

Once an image's in-progress marker is gone, its json, ancestry and checksums cannot be
written again (R5, R8 and the checksum PUT answer 409), and once its layer is there too,
the layer cannot be replaced.  Reading them for every pull costs a handful of storage
calls; keeping them here costs a few KiB per image, within a byte budget (least recently
used first out).  Entries are dropped after L{MAX_AGE} all the same, so that an image
removed from storage by hand or by a collector stops being served soon after.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from twisted.internet.interfaces import IReactorTime

#: Bytes of values kept per process (a V1 image's json is 1 to 3 KiB).
BUDGET = 2 << 20
#: Seconds an entry is served before it is read from storage again.
MAX_AGE = 60.0


class CompletedImages:
    """An LRU of immutable values, each with its size in bytes and an age limit."""

    def __init__(self, clock: IReactorTime, budget: int = BUDGET,
                 max_age: float = MAX_AGE) -> None:
        self._clock = clock
        self._budget = budget
        self._max_age = max_age
        self._used = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int, float]] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        """The value kept under C{key}, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, size, expiry = entry
        if expiry <= self._clock.seconds():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def keep(self, key: Hashable, value: Any, size: int) -> None:
        """Keep C{value} (about C{size} bytes), evicting the least recently used."""
        if size > self._budget:
            return
        if key in self._entries:
            self._drop(key)
        while self._used + size > self._budget:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (value, size, self._clock.seconds() + self._max_age)
        self._used += size

    def _drop(self, key: Hashable) -> None:
        _, size, _ = self._entries.pop(key)
        self._used -= size
