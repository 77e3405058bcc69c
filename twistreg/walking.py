# -*- test-case-name: tests.test_walking -*-
"""
What the work that walks a whole storage shares (C{gc}, C{check}, C{bridge}, and the
server's collections): sharing the reactor while thousands of objects go by, stopping
between two objects when asked, and showing where it is: a bar on a terminal, a line every
few seconds in a log or a pipe.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol, TextIO, TypeVar

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore, IReactorTime

T = TypeVar("T")
R = TypeVar("R")

#: Seconds of work between two returns to the reactor: local storage answers in the
#: reactor's thread, so a walk would otherwise keep it from serving.
SLICE = 0.01
#: Storage calls kept in flight: S3 answers over the network.
PARALLEL = 16
#: Seconds between two progress lines when the output is no terminal.
LINE_INTERVAL = 10.0
#: The exit status of a run interrupted by a signal (a shell's, for SIGINT).
INTERRUPTED = 130


class Stopped(Exception):
    """The walk was asked to stop (Ctrl-C, TERM, the server stopping)."""


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


class Progress(Protocol):
    """How a walk says where it is: phases of a known number of steps."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, note: str = "") -> None: ...

    def close(self) -> None: ...


class Silent:
    """No progress shown (the server's walks)."""

    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, note: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """A line every C{interval} seconds, for a log or a pipe, where a bar would be noise."""

    def __init__(self, stream: TextIO, clock: IReactorTime, command: str,
                 interval: float = LINE_INTERVAL) -> None:
        self._stream = stream
        self._clock = clock
        self._command = command
        self._interval = interval
        self._next = clock.seconds() + interval
        self._name = ""
        self._total = self._done = 0

    def phase(self, name: str, total: int) -> None:
        self._name, self._total, self._done = name, total, 0

    def advance(self, note: str = "") -> None:
        self._done += 1
        now = self._clock.seconds()
        if now < self._next:
            return
        self._next = now + self._interval
        print(f"{self._command}: {self._name}: {self._done} of {self._total}"
              + (f", {note}" if note else ""), file=self._stream, flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """
    A progress bar per phase on a terminal, drawn again every C{interval} seconds: tqdm
    draws on a step only, and one large layer can take minutes.
    """

    def __init__(self, stream: TextIO, clock: IReactorTime, command: str,
                 interval: float = 0.5) -> None:
        self._stream = stream
        self._command = command
        self._bar: Any = None
        self._redraw = task.LoopingCall(self._refresh)
        self._redraw.clock = clock
        self._redraw.start(interval, now=False)

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def phase(self, name: str, total: int) -> None:
        # Imported here: the server needs no progress bar.
        from tqdm import tqdm

        if self._bar is not None:
            self._bar.close()
        self._bar = tqdm(total=total, file=self._stream, desc=f"{self._command}: {name}",
                         dynamic_ncols=True)

    def advance(self, note: str = "") -> None:
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._redraw.running:
            self._redraw.stop()
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_on(stream: TextIO, clock: IReactorTime, command: str) -> Progress:
    """A bar when C{stream} is a terminal, lines otherwise."""
    if stream.isatty():
        return BarProgress(stream, clock, command)
    return LineProgress(stream, clock, command)


async def until_shutdown(reactor: IReactorCore,
                         walk: Callable[[threading.Event], Coroutine[Any, Any, T]]) -> T:
    """
    Run C{walk(stopping)}: when the reactor is asked to stop (a signal) before it is done,
    C{stopping} is set, and the reactor waits for the walk to end between two objects.
    """
    stopping = threading.Event()
    finished: defer.Deferred[None] = defer.Deferred()

    def interrupted() -> defer.Deferred[None] | None:
        if finished.called:
            return None
        stopping.set()
        return finished

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        return await walk(stopping)
    finally:
        finished.callback(None)
