# -*- test-case-name: tests.test_arbiter,tests.test_service -*-
"""Log files that several processes append to, and that SIGUSR1 reopens after rotation."""

from __future__ import annotations

from typing import IO


class ReopenableStream:
    """A log file opened for appending, which USR1 reopens (after a logrotate move)."""

    def __init__(self, path: str) -> None:
        self.name = self._path = path
        self._file: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> None:
        old, self._file = self._file, open(self._path, "a", encoding="utf-8")
        old.close()

    def close(self) -> None:
        self._file.close()
