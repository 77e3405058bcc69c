# -*- test-case-name: tests.test_gc_command -*-
"""
C{python -m twistreg gc}: one garbage collection over the storage a configuration names,
safe while servers run on it (L{twistreg.gc.collector}), then the upload sessions and
unfinished uploads that dead writers left (L{twistreg.purge}).

Ctrl-C or TERM stops it between two objects; what went, went, and a rerun marks again and
goes on (marking again is what keeps a rerun safe).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TextIO

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from twistreg.commands import add_storage_command, fail, open_existing_storage
from twistreg.config import ConfigError
from twistreg.gc import report as kinds
from twistreg.gc.collector import Progress, Rules, collect
from twistreg.gc.pacing import Pace
from twistreg.purge import purge_stale
from twistreg.storage.interface import StorageUnavailable

#: Seconds between two progress lines when standard error is no terminal.
LINE_INTERVAL = 10.0
#: The exit status of a run interrupted by a signal (a shell's, for SIGINT).
INTERRUPTED = 130


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{gc} to the subcommands of C{python -m twistreg}."""
    add_storage_command(
        commands, "gc", _gc,
        help="remove what no tag reaches (V1 and V2), while servers run",
        description="Remove the V1 images, V2 manifests, blob links, blobs and bridge records"
        " that no tag reaches and that were written more than gc.grace seconds ago (untagged"
        " manifests: gc.untagged), then stale upload sessions. Safe while servers run;"
        " an interrupted run can be run again.",
    )
    parser = commands.choices["gc"]
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would go, remove nothing")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object")


class LineProgress:
    """A line every C{interval} seconds, for a log or a pipe."""

    def __init__(self, stream: TextIO, clock: IReactorTime,
                 interval: float = LINE_INTERVAL) -> None:
        self._stream = stream
        self._clock = clock
        self._interval = interval
        self._next = clock.seconds() + interval
        self._name = ""
        self._total = self._done = 0

    def phase(self, name: str, total: int) -> None:
        self._name, self._total, self._done = name, total, 0

    def advance(self) -> None:
        self._done += 1
        now = self._clock.seconds()
        if now >= self._next:
            self._next = now + self._interval
            print(f"gc: {self._name}: {self._done} of {self._total}", file=self._stream,
                  flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """A progress bar per phase on a terminal (tqdm)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar = None

    def phase(self, name: str, total: int) -> None:
        # Imported here: the other commands need no progress bar.
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=total, file=self._stream, desc=f"gc: {name}",
                         dynamic_ncols=True)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_on(stream: TextIO, clock: IReactorTime) -> LineProgress | BarProgress:
    """A bar when C{stream} is a terminal, lines otherwise."""
    return BarProgress(stream) if stream.isatty() else LineProgress(stream, clock)


async def _gc(reactor, options: argparse.Namespace) -> None:
    try:
        settings, storage = open_existing_storage(options, reactor)
    except ConfigError as error:
        fail("gc", str(error))
    stopping = threading.Event()
    finished: defer.Deferred[None] = defer.Deferred()

    def interrupted() -> defer.Deferred[None] | None:
        # The reactor stops (a signal) before the run is done: the run stops between two
        # objects, and the reactor waits for that.
        if finished.called:
            return None
        stopping.set()
        return finished

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    progress: Progress = progress_on(sys.stderr, reactor)
    try:
        report = await collect(storage, reactor,
                               Rules(grace=settings.gc.grace, untagged=settings.gc.untagged),
                               dry_run=options.dry_run, pace=Pace(reactor, stopping),
                               progress=progress)
        if not (report.dry_run or report.interrupted):
            for _ in range(await purge_stale(settings, storage, reactor)):
                report.removed(kinds.UPLOADS, "", 0)
    except (OSError, StorageUnavailable) as error:
        fail("gc", f"{storage.name} storage: {error}")
    finally:
        progress.close()  # type: ignore[attr-defined]
        finished.callback(None)
    if options.json:
        print(json.dumps(report.as_dict()))
    else:
        for entry in report.listed:
            print(f"would remove {entry['key']} ({entry['kind']}, {entry['bytes']} bytes)")
        print(report.summary(storage.name))
    if report.interrupted:
        print("twistreg gc: interrupted; run it again to go on", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
