# -*- test-case-name: tests.test_search,tests.test_reindex -*-
"""
C{python -m twistreg reindex}: rebuild the search index from the storage tree.

The index only follows what the routes do, so anything else that changes the tree (a restore,
another server, files copied by hand) leaves it stale; this makes it match the tree again.
"""

from __future__ import annotations

import argparse
import json
import sys

from twistreg.commands import add_storage_command, fail, open_existing_storage
from twistreg.config import ConfigError
from twistreg.registry.search import open_search_index, walk
from twistreg.storage.interface import StorageUnavailable
from twistreg.walking import progress_on


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{reindex} to the subcommands of C{python -m twistreg}."""
    add_storage_command(
        commands, "reindex", _reindex,
        help="rebuild the search index from the storage tree",
        description="Replace every row of the search index with the repositories found in"
        " storage. Safe while servers run; pushes made during the rebuild may need another.",
    )


async def _reindex(reactor, options: argparse.Namespace) -> None:
    try:
        settings, storage = open_existing_storage(options, reactor)
        index = open_search_index(settings, reactor)
    except ConfigError as error:
        fail("reindex", str(error))
    if index is None:
        fail("reindex", "search is disabled: the config sets no search_backend")
    progress = progress_on(sys.stderr, reactor, "reindex")
    try:
        await index.open()
        count = await index.rebuild(await walk(storage, reactor, progress))
    except (ConfigError, OSError, StorageUnavailable, index.database_error) as error:
        fail("reindex", f"{index.description}: {error}")
    finally:
        progress.close()
        index.close()
    if options.json:
        print(json.dumps({"repositories": count, "database": index.description}))
        return
    noun = "repository" if count == 1 else "repositories"
    print(f"reindexed {count} {noun} in {index.description}")
