# -*- test-case-name: tests.test_reindex,tests.test_purge -*-
"""What the commands of C{python -m twistreg} share: options, logging, storage, errors."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

from twisted.internet import defer, task
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)

from twistreg.config import ConfigError, Settings, load_settings, require_supported_storage
from twistreg.logs import line_log_observer
from twistreg.storage import open_storage
from twistreg.storage.interface import IMaintainable, IStorage, StorageUnavailable
from twistreg.walking import Progress, progress_on, until_shutdown

T = TypeVar("T")


def add_storage_command(
    commands: argparse._SubParsersAction,
    name: str,
    main: Callable[[Any, argparse.Namespace], Coroutine[Any, Any, None]],
    *,
    help: str,
    description: str,
) -> None:
    """
    Add a command that works on the storage a configuration names: the options that say
    which (C{--config}, C{--flavor}, C{--storage-path}), and C{main(reactor, options)}, run
    on the reactor with warnings on stderr.
    """
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("--config", metavar="FILE", help="the config file (as twist twistreg)")
    parser.add_argument("--flavor", metavar="NAME", help="the config flavor")
    parser.add_argument("--storage-path", metavar="DIR", help="overrides storage_path")
    parser.add_argument("--json", action="store_true",
                        help="print the outcome as one JSON object, for scripts")

    def run(options: argparse.Namespace) -> None:
        log_warnings_to_stderr()
        task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))

    parser.set_defaults(run=run)


def log_warnings_to_stderr() -> None:
    """Config and driver warnings (ignored keys...) on stderr, one line each."""
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                line_log_observer(sys.stderr), [LogLevelFilterPredicate(LogLevel.warn)]
            )
        ],
        redirectStandardIO=False,
    )


def open_existing_storage(options: argparse.Namespace, reactor) -> tuple[Settings, IStorage]:
    """
    The settings and storage the options name, once the storage is known to exist: a storage
    path with a typo would otherwise be created, and a command would find nothing in it.

    @raise twistreg.config.ConfigError: one line saying what is wrong.
    """
    settings = load_settings(options.config, options.flavor,
                             {"storage_path": options.storage_path})
    require_supported_storage(settings)
    storage = open_storage(settings, reactor)
    if IMaintainable.providedBy(storage):
        storage.check_present()
    return settings, storage


def fail(command: str, message: str) -> NoReturn:
    """End the command with status 1 and C{message} on one line (driver messages span lines)."""
    print(f"twistreg {command}: " + " ".join(message.split()), file=sys.stderr)
    raise SystemExit(1)


async def walk_storage(
    reactor, command: str, options: argparse.Namespace,
    walk: Callable[[Settings, IStorage, threading.Event, Progress], Awaitable[T]],
) -> tuple[IStorage, T]:
    """
    Run C{walk(settings, storage, stopping, progress)} over the storage the options name,
    with a progress display on standard error, C{stopping} set on Ctrl-C or TERM
    (L{until_shutdown}); a configuration or storage problem ends the command with one line.

    @return: the storage walked, and what C{walk} returned.
    """
    try:
        settings, storage = open_existing_storage(options, reactor)
    except ConfigError as error:
        fail(command, str(error))
    progress = progress_on(sys.stderr, reactor, command)
    try:
        return storage, await until_shutdown(
            reactor, lambda stopping: walk(settings, storage, stopping, progress))
    except (OSError, StorageUnavailable) as error:
        fail(command, f"{storage.name} storage: {error}")
    finally:
        progress.close()
