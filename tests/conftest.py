"""Fixtures shared by the tests, the C{integration} marker, and clean-up of the temp dir."""

from __future__ import annotations

import os
import shutil

import pytest

from tests import postgres
from tests.server import Server

INTEGRATION = "integration: starts real processes or uses real sockets"


def pytest_configure(config: pytest.Config) -> None:
    # `pytest -m "not integration"` runs the fast in-memory tests, `-m integration` the rest.
    config.addinivalue_line("markers", INTEGRATION)


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Remember whether a phase of the test failed, for L{_tmp_path_removed_unless_failed}."""
    outcome = yield
    if outcome.get_result().failed:
        item.stash[_FAILED] = True


@pytest.fixture(autouse=True)
def _tmp_path_removed_unless_failed(request: pytest.FixtureRequest):
    """
    Remove a test's C{tmp_path} (server storage, layers of hundreds of MiB, sockets) once it
    passed or skipped; a failed test keeps it for inspection, in pytest's basetemp.

    Autouse fixtures are set up first, so this runs after every other fixture of the test,
    servers included, has been torn down.
    """
    yield
    path = request.node.funcargs.get("tmp_path")
    if path is not None and not request.node.stash.get(_FAILED, False):
        shutil.rmtree(path, ignore_errors=True)


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


@pytest.fixture(scope="session")
def postgresql():
    """
    A real PostgreSQL on 127.0.0.1 for the session (tests/postgres.py). Without one the tests
    using it are skipped, with the reason, except on CI (C{CI=true}), where they fail.
    """
    reason = postgres.unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs PostgreSQL: {reason}")
        pytest.skip(reason)
    server = postgres.PostgresServer(postgres.find_binaries()).start()
    yield server
    server.stop()
