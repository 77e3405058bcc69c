# -*- test-case-name: tests.test_purge -*-
"""
C{python -m twistreg purge-uploads}: remove what writers that died left behind.

Servers do this at start and every hour; the command is for a cluster where all nodes were
lost at once, or for a cron job. Uploads still being written are never touched: temporary
files of live processes (local storage), multipart uploads younger than
C{s3_upload_max_age} (S3, a day by default), V2 upload sessions younger than
C{v2_upload_max_age} (a day by default).
"""

from __future__ import annotations

import argparse
import json

from twistreg.commands import add_storage_command, fail, open_existing_storage
from twistreg.config import ConfigError, Settings
from twistreg.oci.uploads import Uploads
from twistreg.storage.interface import IStaleUploads, IStorage, StorageUnavailable


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{purge-uploads} to the subcommands of C{python -m twistreg}."""
    add_storage_command(
        commands, "purge-uploads", _purge,
        help="remove unfinished uploads of writers that died",
        description="Remove the temporary files (local storage) or abort the multipart"
        " uploads older than s3_upload_max_age (S3) that crashed writers left behind, and"
        " the V2 upload sessions older than v2_upload_max_age. Safe while servers run.",
    )


async def purge_stale(settings: Settings, storage: IStorage, reactor) -> int:
    """Remove what dead writers left (see the module's docstring); how many uploads went."""
    count = 0
    if IStaleUploads.providedBy(storage):
        count = await storage.purge_stale_uploads()
    if settings.v2:
        count += await Uploads(storage, reactor).purge_stale(settings.v2_upload_max_age)
    return count


async def _purge(reactor, options: argparse.Namespace) -> None:
    try:
        settings, storage = open_existing_storage(options, reactor)
    except ConfigError as error:
        fail("purge-uploads", str(error))
    try:
        count = await purge_stale(settings, storage, reactor)
    except (OSError, StorageUnavailable) as error:
        fail("purge-uploads", f"{storage.name} storage: {error}")
    if options.json:
        print(json.dumps({"removed": count, "storage": storage.name}))
        return
    noun = "upload" if count == 1 else "uploads"
    print(f"removed {count} stale {noun} from {storage.name} storage")
