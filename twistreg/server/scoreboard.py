# -*- test-case-name: tests.test_arbiter -*-
"""
Balancing a shared listening socket: each worker's open connections on a scoreboard in
shared memory, and a worker that is busier than its least busy peer waits a moment before
accepting, so that the peer takes the connection.

Without it, the worker that wakes first takes a whole burst of keep-alive connections while
the others are still being scheduled (measured: 100/0 splits with 10 connections on 2 cores).
The wait is short and bounded, and peers whose event loop stopped updating the board are
ignored, so a stuck worker cannot hold the others back (unlike SO_REUSEPORT, which keeps
sending it connections).
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time
from collections.abc import Callable

_HEADER = struct.Struct("=i12x")
"""How many slots are in use (the highest slot given out, plus one): peers scan no further."""
_SLOT = struct.Struct("=iid")
"""pid (0: free), open connections, last update (time.monotonic(), shared by all processes)."""
SLOTS = 256
SIZE = _HEADER.size + SLOTS * _SLOT.size


class Scoreboard:
    """
    A shared array of worker slots, on a file descriptor the master passes to every worker.

    @param fd: the descriptor of a file of C{SIZE} bytes (see L{create}).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, SIZE)

    @classmethod
    def create(cls) -> Scoreboard:
        """A new, empty board in anonymous shared memory (a memfd where there is one)."""
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("twistreg-scoreboard", os.MFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            with tempfile.TemporaryFile() as f:
                fd = os.dup(f.fileno())
        os.ftruncate(fd, SIZE)
        return cls(fd)

    def assign(self, slot: int) -> None:
        """The master gives C{slot} to a new worker: it starts empty."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"scoreboard slot {slot} out of range")
        self.clear(slot)
        in_use = _HEADER.unpack_from(self._map, 0)[0]
        if slot >= in_use:
            _HEADER.pack_into(self._map, 0, slot + 1)

    def write(self, slot: int, pid: int, connections: int, now: float) -> None:
        _SLOT.pack_into(self._map, _HEADER.size + slot * _SLOT.size, pid, connections, now)

    def clear(self, slot: int) -> None:
        self.write(slot, 0, 0, 0.0)

    def read(self, slot: int) -> tuple[int, int, float]:
        return _SLOT.unpack_from(self._map, _HEADER.size + slot * _SLOT.size)

    def least_busy_peer(self, slot: int, now: float, fresh: float) -> int | None:
        """The fewest connections among the other live slots updated in the last C{fresh} s."""
        in_use = min(_HEADER.unpack_from(self._map, 0)[0], SLOTS)
        slots = self._map[_HEADER.size : _HEADER.size + in_use * _SLOT.size]
        least = None
        for index, (pid, connections, seen) in enumerate(_SLOT.iter_unpack(slots)):
            if (pid and index != slot and now - seen <= fresh
                    and (least is None or connections < least)):
                least = connections
        return least

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


class AcceptBalancer:
    """
    One worker's use of the board: it publishes its connection count and asks, before each
    accept, whether to let a less busy peer take the connection.

    @param slack: connections more than the least busy peer that are still fine. Below 2,
        short connections (one request each) make counts jitter enough to defer often, which
        cost a third of the throughput of a C{Connection: close} load in measurements.
    @param delay: seconds to wait before trying to accept again (the reactor's timers have
        millisecond resolution).
    @param max_deferrals: waits in a row before accepting anyway (a peer may be slow to wake,
        or busy).
    @param fresh: seconds after which a silent peer no longer counts (stuck or dead).
    """

    def __init__(
        self,
        board: Scoreboard,
        slot: int,
        pid: int,
        *,
        slack: int = 2,
        delay: float = 0.001,
        max_deferrals: int = 2,
        fresh: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board = board
        self.slot = slot
        self.pid = pid
        self.delay = delay
        self.connections = 0
        self._slack = slack
        self._max_deferrals = max_deferrals
        self._fresh = fresh
        self._now = now
        self._deferrals = 0
        self._withdrawn = False

    def count(self, connections: int) -> None:
        self.connections = connections
        self.touch()

    def touch(self) -> None:
        """Publish the count with a new timestamp (also proves this worker is alive)."""
        if not self._withdrawn:
            self.board.write(self.slot, self.pid, self.connections, self._now())

    def withdraw(self) -> None:
        """No longer accepting (draining): peers stop deferring to this worker."""
        self._withdrawn = True
        self.board.clear(self.slot)

    def should_defer(self) -> bool:
        now = self._now()
        if not self._withdrawn:
            self.board.write(self.slot, self.pid, self.connections, now)
        least = self.board.least_busy_peer(self.slot, now, self._fresh)
        if (least is not None and self.connections > least + self._slack
                and self._deferrals < self._max_deferrals):
            self._deferrals += 1
            return True
        self._deferrals = 0
        return False
