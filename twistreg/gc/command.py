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

from twistreg.commands import add_storage_command, fail, open_existing_storage
from twistreg.config import ConfigError
from twistreg.gc import report as kinds
from twistreg.gc.collector import Rules, collect
from twistreg.gc.report import Report
from twistreg.purge import purge_stale
from twistreg.storage.interface import StorageUnavailable
from twistreg.walking import INTERRUPTED, Pace, progress_on, until_shutdown


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
    try:
        settings, storage = open_existing_storage(options, reactor)
    except ConfigError as error:
        fail("gc", str(error))
    progress = progress_on(sys.stderr, reactor, "gc")

    async def walk(stopping: threading.Event) -> Report:
        report = await collect(
            storage, reactor, Rules(grace=settings.gc.grace, untagged=settings.gc.untagged),
            dry_run=options.dry_run, pace=Pace(reactor, stopping), progress=progress)
        if not (report.dry_run or report.interrupted):
            for _ in range(await purge_stale(settings, storage, reactor)):
                report.removed(kinds.UPLOADS, "", 0)
        return report

    try:
        report = await until_shutdown(reactor, walk)
    except (OSError, StorageUnavailable) as error:
        fail("gc", f"{storage.name} storage: {error}")
    finally:
        progress.close()
    if options.json:
        print(json.dumps(report.as_dict()))
    else:
        for entry in report.listed:
            print(f"would remove {entry['key']} ({entry['kind']}, {entry['bytes']} bytes)")
        print(report.summary(storage.name))
    if report.interrupted:
        print("twistreg gc: interrupted; run it again to go on", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
