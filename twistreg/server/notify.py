# -*- test-case-name: tests.test_notify -*-
"""
systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per state change
to the socket that C{NOTIFY_SOCKET} names, so that a C{Type=notify} unit knows when twistreg
serves, reloads and stops.
"""

from __future__ import annotations

import socket
import time
from collections.abc import MutableMapping

from twisted.logger import Logger

log = Logger()


class Notifier:
    """
    Tells the service manager about state changes; does nothing without one.

    @param address: the manager's datagram socket: a path, or C{@name} in the abstract
        namespace; C{None} sends nothing.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier:
        """
        The manager C{NOTIFY_SOCKET} names, taken out of C{environ} (as sd_notify's
        C{unset_environment}): only the service's main process may notify (systemd's
        C{NotifyAccess=main}), so the processes it starts must not inherit the socket.
        """
        return cls(environ.pop("NOTIFY_SOCKET", None))

    def notify(self, *assignments: str) -> bool:
        """
        Send C{assignments} (C{"READY=1"}, C{"STATUS=..."}) in one datagram, without blocking
        the event loop; whether they were sent (a failure is logged, never raised: the
        service runs on without its manager).
        """
        if self.address is None:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(assignments).encode(), target)
        except OSError as error:
            log.warn("cannot notify the service manager at {address}: {error}",
                     address=self.address, error=error)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Serving: start-up, or a reload, is complete."""
        return self.notify("READY=1", *_status(status))

    def reloading(self) -> bool:
        """
        A reload began; L{ready} ends it. systemd >= 253 matches the reload to its request by
        C{MONOTONIC_USEC}, which it requires beside C{RELOADING=1}.
        """
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                           "STATUS=reloading")

    def stopping(self) -> bool:
        """Stopping: requests in flight are finishing."""
        return self.notify("STOPPING=1", "STATUS=stopping")


def monotonic_usec() -> int:
    """C{CLOCK_MONOTONIC} in microseconds, the clock systemd compares C{MONOTONIC_USEC} with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _status(status: str | None) -> tuple[str, ...]:
    return () if status is None else (f"STATUS={status}",)
