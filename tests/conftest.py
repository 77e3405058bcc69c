"""
Fixtures shared by the tests, and the C{integration} marker. (A test's C{tmp_path} is
removed when it passes: C{tmp_path_retention_policy} in pyproject.toml.)
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from tests import postgres, services
from tests.backends import open_backend
from tests.test_storage_local import read_only

INTEGRATION = "integration: starts real processes or uses real sockets"


def pytest_configure(config: pytest.Config) -> None:
    # `pytest -m "not integration"` runs the fast in-memory tests, `-m integration` the rest.
    config.addinivalue_line("markers", INTEGRATION)


@pytest.fixture
def events():
    """The log events emitted while the test runs."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def read_only_directory(tmp_path):
    """A directory nobody may write to, root included (see L{read_only})."""
    path = tmp_path / "read-only"
    path.mkdir()
    with read_only(path):
        yield path


@pytest.fixture
def storage(tmp_path):
    path = tmp_path / "storage"
    path.mkdir()
    return path


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path):
    """Fresh storage: a directory, then a prefix in a real S3 (tests/backends.py)."""
    return open_backend(request, request.param, tmp_path)


@pytest.fixture
def server(tmp_path, backend):
    """A standalone registry with built-in defaults over the fresh storage of C{backend}."""
    running = backend.server(tmp_path).start()
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


def _unavailable(what: str, reason: str | None) -> None:
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs {what}: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def seaweedfs():
    """
    A real S3 for the session: SeaweedFS on 127.0.0.1 with the bucket C{twistreg}
    (tests/services.py). Without it the tests using it are skipped, with the reason, except on
    CI (C{CI=true}), where they fail.
    """
    _unavailable("SeaweedFS", services.unavailable_seaweedfs())
    server = services.SeaweedServer(services.weed_binary())
    try:
        yield server.start()
    finally:
        server.stop()
        server.remove()


@pytest.fixture
def s3_prefix(seaweedfs):
    """A key prefix in the SeaweedFS bucket of this test's own (C{/t-<n>-<random>})."""
    return seaweedfs.fresh_prefix()


@pytest.fixture(scope="session")
def redis_server():
    """
    A real Redis on 127.0.0.1 for the session (tests/services.py), without a password. Without
    one the tests using it are skipped, with the reason, except on CI (C{CI=true}), where they
    fail.
    """
    _unavailable("Redis", services.unavailable_redis())
    server = services.RedisServer(services.redis_binary())
    try:
        yield server.start()
    finally:
        server.stop()
        server.remove()


@pytest.fixture(scope="session")
def in_reactor():
    """
    The global reactor, running in a thread for the rest of the session, for tests of code
    that talks to real servers (S3, Redis) in this process: C{in_reactor(f, *args)} calls
    C{f} in the reactor thread and waits for its result (a Deferred or coroutine settles
    first).
    """
    import threading

    from twisted.internet import defer, reactor, threads

    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                              name="reactor", daemon=True)
    thread.start()

    def call(function, *args, **kwargs):
        def start():
            result = function(*args, **kwargs)
            if hasattr(result, "__await__") and not isinstance(result, defer.Deferred):
                result = defer.ensureDeferred(result)
            return result

        return threads.blockingCallFromThread(reactor, start)

    yield call
    reactor.callFromThread(reactor.stop)
    thread.join(10)


@pytest.fixture(scope="module")
def npm_client(tmp_path_factory):
    """The npm C{docker-registry-client} installed in a directory of its own."""
    if shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is missing")
        pytest.skip("npm is not installed")
    directory = tmp_path_factory.mktemp("npm")
    # npm's cache and logs (~/.npm by default) go in the directory too, removed with it.
    env = dict(os.environ, npm_config_cache=str(directory / ".npm"))
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund",
                    "docker-registry-client@3.4.0"], cwd=directory, env=env, check=True,
                   timeout=300, capture_output=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)
