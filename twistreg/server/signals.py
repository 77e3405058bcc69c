# -*- test-case-name: tests.test_arbiter,tests.test_pool -*-
"""
The master's signals, as gunicorn's: TERM graceful stop, INT and QUIT quick stop, HUP rolling
restart, TTIN and TTOU one worker more or less, USR1 reopen log files.

Installing process-wide handlers is the program's decision (the plugin's), never a library
service's: embedding applications call L{install_master_signals} themselves if they want it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

from twisted.internet.error import ReactorNotRunning

from twistreg.server.arbiter import PreforkService


def install_master_signals(
    reactor,
    pool: PreforkService,
    stop_process: Callable[[], object] | None = None,
    reopen_logs: Callable[[], object] | None = None,
) -> None:
    """
    Map the signals to C{pool} once the reactor runs (C{reactor.run()} replaces INT and
    TERM handlers installed before it). TERM keeps Twisted's handler: it stops the reactor,
    whose shutdown stops the pool gracefully. SIGCHLD stays Twisted's.

    @param stop_process: stops the program after a quick stop was asked for (default:
        C{reactor.stop}).
    @param reopen_logs: reopens the master's own log file on USR1 (the workers reopen theirs).
    """

    def stop() -> None:
        try:
            (stop_process or reactor.stop)()
        except ReactorNotRunning:
            pass

    def quick() -> None:
        pool.quick()
        stop()

    actions: dict[int, Callable[[], None]] = {
        signal.SIGINT: quick,
        signal.SIGQUIT: quick,
        signal.SIGHUP: pool.reload,
        signal.SIGTTIN: lambda: pool.resize(+1),
        signal.SIGTTOU: lambda: pool.resize(-1),
        signal.SIGUSR1: lambda: (reopen_logs and reopen_logs(), pool.reopen_logs()),
    }

    def install() -> None:
        for number, action in actions.items():
            signal.signal(number, _deferred(reactor, action))

    reactor.callWhenRunning(install)


def _deferred(reactor, action: Callable[[], None]):
    """A handler that only schedules C{action}: the reactor runs it, not the signal frame."""

    def handler(_signum, _frame) -> None:
        reactor.callFromThread(action)

    return handler
