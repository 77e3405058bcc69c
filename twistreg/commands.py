# -*- test-case-name: tests.test_reindex,tests.test_purge -*-
"""What the commands of C{python -m twistreg} share: options, logging, storage, errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from twisted.internet import defer, task
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
)

from twistreg.config import Settings, load_settings, require_supported_storage
from twistreg.logs import line_log_observer
from twistreg.storage import open_storage
from twistreg.storage.interface import IMaintainable, IStorage


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
