# -*- test-case-name: tests.test_storage_local,tests.test_service -*-
"""Storage drivers behind L{IStorage}."""

from __future__ import annotations

from twistreg.config import ConfigError, Settings
from twistreg.storage.interface import IStorage
from twistreg.storage.local import LocalStorage


def open_storage(settings: Settings, reactor) -> IStorage:
    """
    The storage driver the settings name.

    @param reactor: what the driver does its I/O with (S3's connections, local's threads).
    @raise ConfigError: the settings cannot make a driver (an S3 bucket missing...).
    """
    if settings.storage == "local":
        return LocalStorage(settings.storage_path, reactor)
    if settings.storage == "s3" and settings.s3 is not None:
        from twistreg.storage.s3 import S3Storage

        return S3Storage(settings.s3, reactor)
    raise ConfigError(f"storage driver '{settings.storage}' is not available in this version")
