# -*- test-case-name: tests.test_capacity -*-
"""
How many connections one process holds: as many as its file descriptors allow, less a
reserve for what else a process opens (listeners, logs, storage files, S3, Redis and database
connections).

Past that a new connection is answered C{503 {"error": "Too many connections"}} and closed,
so that C{accept} never meets C{EMFILE} (Twisted's listener would retry it in a loop). A
storage file that cannot be opened for want of a descriptor fails its request with a 503 too
(L{twistreg.storage.local}).
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from twisted.internet import protocol
from twisted.logger import Logger

from twistreg.web import responses

log = Logger()

#: Descriptors kept for everything but client connections.
RESERVE = 128
#: Seconds an answered connection still reads (and drops) what the client sends, so that the
#: client reads the answer rather than a reset.
LINGER_SECONDS = 2.0


def raise_open_file_limit() -> int:
    """
    Raise this process's soft limit on open files to its hard limit (workers inherit it):
    Linux starts most processes at 1,024, a few hundred idle keep-alive connections.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_capacity() -> int:
    """The connections this process may hold at once (see the module docstring)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - RESERVE)


#: Connections past the capacity that may linger at once (each holds a descriptor of the
#: reserve); beyond them a new connection is closed without an answer.
LINGERING = RESERVE // 2


class Overloaded(protocol.Protocol):
    """A connection past the capacity: the 503 answer at once, then closed."""

    def __init__(self, clock, closed: Callable[[], None]) -> None:
        self._clock = clock
        self._closed = closed

    def connectionMade(self) -> None:
        self.transport.write(responses.raw_json_answer(503, "Too many connections", {},
                                                       with_body=True))
        # Half-closed, so the client reads the answer; TLS cannot, and closes.
        getattr(self.transport, "loseWriteConnection", self.transport.loseConnection)()
        self._closing = self._clock.callLater(LINGER_SECONDS, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """Whatever the client sends is dropped."""

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self._closing.active():
            self._closing.cancel()
        self._closed()
