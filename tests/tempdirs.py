"""Temporary directories for trial-style test cases, outside the working directory."""

from __future__ import annotations

import shutil
import tempfile


class TemporaryDirectories:
    """A mixin: C{temporary_directory()} makes a directory removed after the test."""

    def temporary_directory(self) -> str:
        path = tempfile.mkdtemp(prefix="twistreg-test-")
        self.addCleanup(shutil.rmtree, path, True)
        return path
