"""
HUP with a configuration that cannot work, against a real master and its workers: the old
workers serve on, the log says "reload failed" once, systemd hears READY again.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.server import Server
from tests.test_notify import ServiceManager
from tests.test_pool import alive

pytestmark = pytest.mark.integration

GOOD = "dev:\n  standalone: true\n"


@pytest.fixture
def manager():
    made = ServiceManager()
    yield made
    made.close()


@pytest.fixture
def pool(tmp_path, storage, manager):
    config = tmp_path / "config.yml"
    config.write_text(GOOD)
    server = Server(tmp_path, storage, "--config", str(config), workers=2,
                    env={"NOTIFY_SOCKET": manager.address})
    try:
        server.start()
        server.wait_for_workers(2)
        assert manager.wait_for("READY")["STATUS"] == "serving (worker generation 0)"
        yield server, config
    finally:
        server.kill_all()


def failed_reloads(server: Server) -> list[str]:
    return re.findall(r"reload failed: (.*)", server.text())


def spawned(server: Server, generation: int) -> int:
    return len(re.findall(rf"worker \d+ spawned \(generation {generation}\)", server.text()))


def test_a_configuration_the_master_refuses(pool, manager):
    server, config = pool
    old = server.worker_pids()
    config.write_text(
        "dev:\n  storage: s3\n  s3_bucket: bucket\n  s3_access_key: k\n  s3_secret_key: s\n"
        "  s3_secure: false\n  boto_host: 127.0.0.1\n  boto_port: 9\n"
        "  boto_calling_format: OrdinaryCallingFormat\n")
    server.signal(signal.SIGHUP)
    assert "RELOADING" in manager.wait_for("RELOADING")
    assert manager.wait_for("READY")["STATUS"] == "serving (worker generation 0)"
    server.wait_for(lambda: failed_reloads(server))
    assert failed_reloads(server) == [
        "cannot reach S3 at http://127.0.0.1:9: [Errno 111] Connection refused;"
        " generation 0 serves on"]
    assert spawned(server, 1) == 0
    assert all(alive(pid) for pid in old)
    assert server.request("GET", "/v1/_ping").status == 200


def test_workers_that_cannot_load_the_new_configuration(pool, manager):
    server, config = pool
    old = server.worker_pids()
    # The master finds the module (it does not import the application); workers fail on it.
    config.write_text(GOOD + "  server:\n    wsgi: tests.wsgi_app:nothing\n"
                             "    wsgi_mount: /ui\n")
    server.signal(signal.SIGHUP)
    manager.wait_for("RELOADING")
    assert manager.wait_for("READY")["STATUS"] == "serving (worker generation 0)"
    server.wait_for(lambda: failed_reloads(server))
    assert failed_reloads(server) == [
        "worker failed to load the application: cannot load the WSGI application"
        " 'tests.wsgi_app:nothing': AttributeError: module 'tests.wsgi_app' has no attribute"
        " 'nothing'; generation 0 serves on"]
    assert all(alive(pid) for pid in old)
    assert server.request("GET", "/v1/_ping").status == 200
    # Fixed, the next HUP works: a new generation, and the failed one was never retried.
    config.write_text(GOOD)
    server.signal(signal.SIGHUP)
    manager.wait_for("RELOADING")
    assert manager.wait_for("READY")["STATUS"] == "serving (worker generation 2)"
    server.wait_for(lambda: set(old) <= set(server.worker_pids("exited")))
    assert spawned(server, 1) <= 2 and spawned(server, 2) == 2
    assert len(failed_reloads(server)) == 1
    assert server.request("GET", "/v1/_ping").status == 200
