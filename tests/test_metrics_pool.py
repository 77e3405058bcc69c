"""
Metrics and health with real processes: a pool of two workers whose requests are summed on
one page, the metrics on an endpoint of their own (served by the master, or by the single
process), and C{/_health} of a server whose storage stops taking writes.
"""

from __future__ import annotations

import http.client
import re
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.server import Server
from tests.test_metrics import value

pytestmark = pytest.mark.integration

# Debug mode: every answer names its worker (X-Twistreg-Worker).
CONFIG = "dev:\n  debug: true\n  standalone: true\n  metrics:\n    enabled: true\n"


@pytest.fixture
def start(tmp_path, storage):
    servers: list[Server] = []

    def start(config: str, workers: int) -> Server:
        path = tmp_path / "config.yml"
        path.write_text(config)
        server = Server(tmp_path, storage, "--config", str(path), workers=workers)
        servers.append(server)
        server.start()
        if workers:
            server.wait_for_workers(workers)
        return server

    yield start
    for server in servers:
        server.stop()  # graceful: the master removes its metrics directory
        server.kill_all()


def scrape(port: int, path: str = "/metrics") -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        return response.read()
    finally:
        connection.close()


def wait_for_value(port: int, name: str, expected: float, timeout: float = 10,
                   **labels: str) -> bytes:
    """The page once C{name} reached C{expected}: peers flush every second."""
    deadline = time.monotonic() + timeout
    while True:
        page = scrape(port)
        if value(page, name, **labels) >= expected:
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} {labels} stayed below {expected}:\n{page.decode()}")
        time.sleep(0.1)


def test_two_workers_on_one_page(start):
    server = start(CONFIG, workers=2)
    workers = server.worker_pids()[:2]
    with ThreadPoolExecutor(8) as executor:
        answers = list(executor.map(lambda _: server.request("GET", "/v1/_ping"), range(200)))
    assert [a.status for a in answers] == [200] * 200
    answered = Counter(a.headers["X-Twistreg-Worker"] for a in answers)
    assert set(answered) == {str(pid) for pid in workers}
    page = wait_for_value(server.port, "twistreg_http_requests_total", 200, route="ping",
                          method="GET", status="200")
    assert value(page, "twistreg_http_requests_total", route="ping", method="GET",
                 status="200") == 200
    assert value(page, "twistreg_http_request_duration_seconds_count", route="ping",
                 method="GET") == 200
    assert value(page, "twistreg_worker_starts_total") == 2
    assert value(page, "twistreg_worker_exits_total") == 0
    # The master made the directory, each process writes its own files there, and the
    # directory goes when the master stops.
    (directory,) = [path for path in Path(tempfile.gettempdir()).glob("twistreg-metrics-*")
                    if (path / f"counter_{server.pid}.db").exists()]
    for pid in workers:
        assert (directory / f"counter_{pid}.db").exists()
    server.stop()
    assert not directory.exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_endpoint_of_its_own(start, workers):
    server = start(CONFIG + "    listen: tcp:0:interface=127.0.0.1\n", workers=workers)
    server.wait_for(lambda: "metrics served at /metrics on" in server.text())
    port = int(re.search(r"metrics served at /metrics on 127\.0\.0\.1:(\d+)",
                         server.text()).group(1))
    assert server.request("GET", "/metrics").status == 404
    for _ in range(5):
        assert server.request("GET", "/v1/_ping").status == 200
    page = wait_for_value(port, "twistreg_http_requests_total", 5, route="ping",
                          method="GET", status="200")
    assert value(page, "twistreg_worker_starts_total") == workers
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/v1/_ping")
    assert connection.getresponse().status == 404


def test_health_fails_when_storage_stops_taking_writes(start, storage):
    server = start(CONFIG, workers=1)
    r = server.request("GET", "/_health")
    assert (r.status, r.json()) == (200, {"storage": "ok"})
    # The storage directory replaced by a file: nothing can be written below it.
    shutil.rmtree(storage)
    storage.write_text("not a directory")
    r = server.request("GET", "/_health")
    assert r.status == 503
    assert set(r.json()) == {"storage"} and r.json()["storage"] != "ok"
