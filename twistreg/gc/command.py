# -*- test-case-name: tests.test_gc,tests.test_gc_online -*-
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

from twistreg.commands import add_storage_command, walk_storage
from twistreg.config import Settings
from twistreg.gc import report as kinds
from twistreg.gc.collector import Rules, collect
from twistreg.gc.report import Report
from twistreg.purge import purge_stale
from twistreg.storage.interface import IStorage
from twistreg.walking import INTERRUPTED, Pace, Progress


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


async def _gc(reactor, options: argparse.Namespace) -> None:
    async def walk(settings: Settings, storage: IStorage, stopping: threading.Event,
                   progress: Progress) -> Report:
        report = await collect(
            storage, reactor, Rules(grace=settings.gc.grace, untagged=settings.gc.untagged),
            dry_run=options.dry_run, pace=Pace(reactor, stopping), progress=progress)
        if not (report.dry_run or report.interrupted):
            for _ in range(await purge_stale(settings, storage, reactor)):
                report.removed(kinds.UPLOADS, "", 0)
        return report

    storage, report = await walk_storage(reactor, "gc", options, walk)
    if options.json:
        print(json.dumps(report.as_dict()))
    else:
        for entry in report.listed:
            print(f"would remove {entry['key']} ({entry['kind']}, {entry['bytes']} bytes)")
        print(report.summary(storage.name))
    if report.interrupted:
        print("twistreg gc: interrupted; run it again to go on", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
