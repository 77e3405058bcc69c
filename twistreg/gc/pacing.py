# -*- test-case-name: tests.test_gc -*-
"""
How a collection shares the reactor: local storage answers in the reactor's thread, so a walk
of thousands of objects hands the reactor back every few milliseconds; S3 answers over the
network, so several calls are kept in flight. And it stops when asked.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")
R = TypeVar("R")

#: Seconds of work between two returns to the reactor.
SLICE = 0.01
#: Storage calls kept in flight.
PARALLEL = 16


class Stopped(Exception):
    """The collection was asked to stop (Ctrl-C, TERM, the server stopping)."""


class Pace:
    """
    @param clock: what tells the time and runs the pause (the reactor).
    @param stopping: once set, the next L{breathe} raises L{Stopped}.
    """

    def __init__(self, clock: IReactorTime, stopping: threading.Event | None = None) -> None:
        self.clock = clock
        self.stopping = stopping if stopping is not None else threading.Event()
        self._since = clock.seconds()

    async def breathe(self) -> None:
        """Return to the reactor when this slice is spent; L{Stopped} when asked to stop."""
        if self.stopping.is_set():
            raise Stopped()
        if self.clock.seconds() - self._since >= SLICE:
            await task.deferLater(self.clock, 0, lambda: None)
            self._since = self.clock.seconds()

    async def each(self, function: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
        """C{function} of every item, L{PARALLEL} at once, pausing as L{breathe} does."""
        todo = list(enumerate(items))
        results: list[R] = [None] * len(todo)  # type: ignore[list-item]
        queue = iter(todo)

        async def worker() -> None:
            for index, item in queue:
                results[index] = await function(item)
                await self.breathe()

        workers = [defer.ensureDeferred(worker()) for _ in range(min(PARALLEL, len(todo)))]
        try:
            await defer.gatherResults(workers, consumeErrors=True)
        except defer.FirstError as error:
            error.subFailure.raiseException()
        return results
