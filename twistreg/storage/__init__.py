# -*- test-case-name: tests.test_storage_local,tests.test_service -*-
"""Storage drivers behind L{IStorage}."""

from __future__ import annotations

from twistreg.config import ConfigError, Settings
from twistreg.storage.interface import IStorage
from twistreg.storage.local import LocalStorage


def open_storage(settings: Settings) -> IStorage:
    """The storage driver the settings name."""
    if settings.storage == "local":
        return LocalStorage(settings.storage_path)
    raise ConfigError(f"storage driver '{settings.storage}' is not available in this version")
