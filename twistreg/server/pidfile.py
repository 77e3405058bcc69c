# -*- test-case-name: tests.test_arbiter,tests.test_service -*-
"""C{--pidfile}: C{twist} has none, and init scripts want the master's PID."""

from __future__ import annotations

import contextlib
import os

from twisted.application import service

from twistreg.config import ConfigError


class PidFile(service.Service):
    """
    Writes this process's PID when started and removes the file when stopped (only if it
    still holds this PID: a newer server may have taken the name).

    @param pid: the PID to write (default: this process's), for tests.
    """

    def __init__(self, path: str, pid: int | None = None) -> None:
        self.path = os.path.abspath(path)
        self._pid = pid

    def startService(self) -> None:
        """
        @raise ConfigError: the file cannot be written (one line naming it, not the
            temporary file beside it).
        """
        super().startService()
        pid = self._pid or os.getpid()
        temporary = f"{self.path}.{pid}.tmp"
        try:
            with open(temporary, "w", encoding="ascii") as f:
                f.write(f"{pid}\n")
            # Atomic: a reader never sees an empty or half-written file.
            os.replace(temporary, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ConfigError(f"cannot write the pidfile {self.path}: {error.strerror}") from None

    def stopService(self) -> None:
        super().stopService()
        pid = self._pid or os.getpid()
        try:
            with open(self.path, encoding="ascii") as f:
                if f.read().strip() != str(pid):
                    return
            os.unlink(self.path)
        except (OSError, ValueError):
            pass
