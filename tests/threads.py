"""
Reactor stand-ins for code that hands work to C{reactor.getThreadPool()} through
L{twisted.internet.threads.deferToThreadPool}: what such code needs of a reactor is
C{getThreadPool()} and C{callFromThread}.
"""

from __future__ import annotations

import queue
from typing import Any, Callable

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


class InlinePool:
    """A thread pool that runs each job at once, in the caller's thread; it counts them."""

    def __init__(self) -> None:
        self.jobs = 0

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], object], f: Callable, *args: Any, **kwargs: Any
    ) -> None:
        self.jobs += 1
        try:
            result = f(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)

    def callInThread(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        self.callInThreadWithCallback(lambda ok, result: None, f, *args, **kwargs)

    def start(self) -> None:
        """Nothing to start: no thread."""

    def stop(self) -> None:
        """Nothing to stop."""


class HeldPool:
    """A thread pool that keeps each job until the test runs it with L{run_next}."""

    def __init__(self) -> None:
        self.held: list[tuple] = []

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable, *args: Any, **kwargs: Any
    ) -> None:
        self.held.append((onResult, f, args, kwargs))

    def run_next(self) -> None:
        onResult, f, args, kwargs = self.held.pop(0)
        InlinePool().callInThreadWithCallback(onResult, f, *args, **kwargs)


class InlineThreadsReactor(Clock):
    """
    A reactor (and clock) whose thread pool is C{pool} (an L{InlinePool} unless given) and whose
    C{callFromThread} calls at once: work handed to threads is done when the call returns.
    """

    def __init__(self, pool: Any = None) -> None:
        super().__init__()
        self.pool = InlinePool() if pool is None else pool

    def getThreadPool(self) -> Any:
        return self.pool

    def callFromThread(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class RealThreadsReactor:
    """
    A real L{ThreadPool}, its results delivered to the test's thread by L{run_until}: the
    reactor thread of a test without a running reactor.
    """

    def __init__(self) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=4, name="test-pool")
        self.pool.start()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()

    def getThreadPool(self) -> ThreadPool:
        return self.pool

    def callFromThread(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        self._calls.put((f, args, kwargs))

    def run_until(self, done: Callable[[], bool], timeout: float = 30) -> None:
        """Run what the pool's threads sent back until C{done()} is true."""
        while not done():
            f, args, kwargs = self._calls.get(timeout=timeout)
            f(*args, **kwargs)

    def stop(self) -> None:
        self.pool.stop()
