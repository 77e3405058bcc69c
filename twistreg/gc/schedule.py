# -*- test-case-name: tests.test_gc -*-
"""
Collections run by the server, every C{gc.interval} seconds, in the process that does the
background work (the master of a pool, or the one process): workers only serve.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistreg.config import Settings
from twistreg.gc.collector import Rules, collect
from twistreg.gc.report import Report
from twistreg.metrics import record_gc
from twistreg.storage.interface import IStorage
from twistreg.walking import Pace

log = Logger()


class Collector:
    """
    Runs a collection every C{gc.interval} seconds (the first one interval after start), one
    at a time, never while the registry is read-only; L{stop} ends the one running between
    two objects.

    @param readonly: whether the registry is read-only now (a reload may change it).
    """

    def __init__(self, reactor, storage: IStorage, settings: Settings,
                 readonly: Callable[[], bool] | None = None) -> None:
        self._reactor = reactor
        self._storage = storage
        self._settings = settings
        self._readonly = readonly if readonly is not None else (lambda: settings.readonly)
        self._stopping = threading.Event()
        self._loop = task.LoopingCall(self._collect)
        self._loop.clock = reactor

    def start(self) -> None:
        if self._settings.gc.interval:
            self._loop.start(self._settings.gc.interval, now=False)

    def stop(self) -> None:
        self._stopping.set()
        if self._loop.running:
            self._loop.stop()

    def _collect(self) -> defer.Deferred[None] | None:
        if self._readonly():
            return None
        gc = self._settings.gc
        running = defer.ensureDeferred(collect(
            self._storage, self._reactor, Rules(grace=gc.grace, untagged=gc.untagged),
            pace=Pace(self._reactor, self._stopping)))
        return running.addCallbacks(self._done, self._failed)

    def _done(self, report: Report) -> None:
        record_gc(report)
        log.info("{summary}", summary=report.summary(self._storage.name))

    def _failed(self, failure: Failure) -> None:
        # The next interval tries again.
        log.warn("garbage collection failed: {why}", why=failure.getErrorMessage())
