"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from tests.server import Server


@pytest.fixture
def storage(tmp_path):
    path = tmp_path / "storage"
    path.mkdir()
    return path


@pytest.fixture
def server(tmp_path, storage):
    """A standalone registry with built-in defaults over a fresh storage directory."""
    running = Server(tmp_path, storage).start()
    yield running
    running.stop()
