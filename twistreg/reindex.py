# -*- test-case-name: tests.test_search,tests.test_reindex -*-
"""
C{python -m twistreg reindex}: rebuild the search index from the storage tree.

The index only follows what the routes do, so anything else that changes the tree (a restore,
another server, files copied by hand) leaves it stale; this makes it match the tree again.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from twisted.internet import task
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)

from twistreg.config import ConfigError, load_settings, require_supported_storage
from twistreg.logs import line_log_observer
from twistreg.registry.search import open_search_index, walk
from twistreg.storage import open_storage
from twistreg.storage.interface import IMaintainable


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{reindex} and its options to the subcommands of C{python -m twistreg}."""
    parser = commands.add_parser(
        "reindex",
        help="rebuild the search index from the storage tree",
        description="Replace every row of the search index with the repositories found in"
        " storage. Safe while servers run; pushes made during the rebuild may need another.",
    )
    parser.add_argument("--config", metavar="FILE", help="the config file (as twist twistreg)")
    parser.add_argument("--flavor", metavar="NAME", help="the config flavor")
    parser.add_argument("--storage-path", metavar="DIR", help="overrides storage_path")
    parser.set_defaults(run=run)


def run(options: argparse.Namespace) -> None:
    """Rebuild the index the options' settings name; print one line, exit 0 or 1."""
    # Config and index warnings (ignored keys, names too long to index) go to stderr.
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                line_log_observer(sys.stderr), [LogLevelFilterPredicate(LogLevel.warn)]
            )
        ],
        redirectStandardIO=False,
    )
    task.react(_reindex, (options,))


async def _reindex(reactor, options: argparse.Namespace) -> None:
    try:
        settings = load_settings(
            options.config, options.flavor, {"storage_path": options.storage_path}
        )
        require_supported_storage(settings)
        storage = open_storage(settings, reactor)
        # A storage path with a typo would be created, and an empty index built from it.
        if IMaintainable.providedBy(storage):
            storage.check_present()
        index = open_search_index(settings, reactor)
    except ConfigError as error:
        _fail(str(error))
    if index is None:
        _fail("search is disabled: the config sets no search_backend")
    try:
        await index.open()
        count = await index.rebuild(await walk(storage, reactor))
    except (ConfigError, OSError, index.database_error) as error:
        _fail(f"{index.description}: {error}")
    finally:
        index.close()
    noun = "repository" if count == 1 else "repositories"
    print(f"reindexed {count} {noun} in {index.description}")


def _fail(message: str) -> NoReturn:
    """End the command with status 1 and C{message} on one line (driver messages span lines)."""
    print("twistreg reindex: " + " ".join(message.split()), file=sys.stderr)
    raise SystemExit(1)
