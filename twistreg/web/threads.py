# -*- test-case-name: tests.test_threads -*-
"""
The threads a hosted WSGI application runs in: as many as it needs, and no more running at
once than keeps it moving.

Python runs one thread at a time.  Two threads running a CPU-bound application at once each
wait for the other, and every hand-over of the interpreter between them (and the reactor) is
a few system calls: with 16 threads each taking the next request, a trivial Flask application
served a third fewer requests than with one.  But an application that waits (a database, a
remote call) needs several threads, or its requests queue behind one that sleeps.

So a call goes to a thread already running, which takes it when its current call returns;
while calls wait, the reactor looks every L{CHECK_SECONDS}, and wakes one more thread when
the process left the CPU idle meanwhile (the running threads are waiting, not computing), or
when a call has waited L{LONGEST_WAIT} seconds all the same.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: How often the reactor looks at waiting calls.
CHECK_SECONDS = 0.002
#: Below this share of one CPU used by the process between two looks, its threads are
#: taken to be waiting: another one is woken.
BUSY_SHARE = 0.75
#: A call that waited this long gets another thread, however busy the process is.
LONGEST_WAIT = 0.1


class CallThreads:
    """
    A fixed set of threads running calls in the order submitted.

    L{submit}, L{stop} and the checks run in the reactor's thread; the calls in the others.

    @param wall: seconds on a clock that never goes back.
    @param cpu: CPU seconds the process has used, all its threads together.
    """

    def __init__(self, size: int, name: str, reactor: IReactorTime, *,
                 wall: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self._reactor = reactor
        self._wall = wall
        self._cpu = cpu
        self._lock = threading.Lock()
        self._waiting: deque[tuple[float, Callable[..., None], tuple]] = deque()
        self._parked: list[threading.Lock] = []
        self._running = size  # each thread parks itself as it starts
        self._stopping = False
        self._check: IDelayedCall | None = None
        self._cpu_mark = (0.0, 0.0)
        # Daemons: a process that never called stop() still exits.
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, call: Callable[..., None], *args: Any) -> None:
        """Run C{call(*args)} in one of the threads."""
        with self._lock:
            self._waiting.append((self._wall(), call, args))
            woken = self._unpark() if self._running == 0 else None
        if woken is not None:
            woken.release()
        elif self._check is None:
            self._cpu_mark = (self._wall(), self._cpu())
            self._check = self._reactor.callLater(CHECK_SECONDS, self._look)

    def _unpark(self) -> threading.Lock | None:
        """A parked thread to wake (counted running from now), under the lock."""
        if not self._parked:
            return None
        self._running += 1
        return self._parked.pop()

    def _look(self) -> None:
        """Calls are waiting: wake one more thread if those running are not computing."""
        self._check = None
        then, cpu_then = self._cpu_mark
        now, cpu_now = self._wall(), self._cpu()
        self._cpu_mark = (now, cpu_now)
        idle = cpu_now - cpu_then < BUSY_SHARE * (now - then)
        with self._lock:
            if not (self._waiting and self._parked):
                return  # the running threads take what waits as they return
            starved = now - self._waiting[0][0] >= LONGEST_WAIT
            woken = self._unpark() if idle or starved else None
        if woken is not None:
            woken.release()
        self._check = self._reactor.callLater(CHECK_SECONDS, self._look)

    def _work(self) -> None:
        parked = threading.Lock()
        parked.acquire()
        while True:
            with self._lock:
                if self._waiting:
                    _, call, args = self._waiting.popleft()
                elif self._stopping:
                    self._running -= 1
                    return
                else:
                    self._running -= 1
                    self._parked.append(parked)
                    call = None
            if call is None:
                parked.acquire()  # released by whoever counted this thread running again
                continue
            call(*args)

    def stop(self) -> None:
        """Let the threads run the calls waiting, then end; wait for them."""
        if self._check is not None:
            self._check.cancel()
            self._check = None
        with self._lock:
            self._stopping = True
            woken = [self._unpark() for _ in range(len(self._parked))]
        for lock in woken:
            lock.release()
        for thread in self._threads:
            thread.join()
