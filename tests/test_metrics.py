"""
The metrics in one process: what requests, caches, storage failures and collections add to
the page, the flush that carries a process's counts into the shared values, and the pool
master's directory with its worker counts. The page is read back and parsed.
"""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.memory import STANDALONE, MemoryRegistry
from twistreg import metrics
from twistreg.config import ConfigError, MetricsSettings, load_settings
from twistreg.gc.report import BLOBS, Report
from twistreg.lru import BoundedLRU
from twistreg.metrics import DIRECTORY_VARIABLE, PoolMetrics, exposition
from twistreg.storage.interface import StorageUnavailable

METRICS_ON = STANDALONE + "  metrics:\n    enabled: true\n"


def samples(page: bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample of a page, by name and labels."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(page.decode())
            for sample in family.samples}


def value(page: bytes, name: str, **labels: str) -> float:
    return samples(page).get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def served(tmp_path):
    registry = MemoryRegistry(tmp_path, METRICS_ON)
    registry.site.metrics = metrics.RequestTally()
    yield registry
    registry.close()


def page_of(registry: MemoryRegistry) -> bytes:
    r = registry.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=")
    return r.body


def test_requests_counted_by_route_family_method_and_status(served):
    before = page_of(served)
    for _ in range(3):
        assert served.request("GET", "/v1/_ping").status == 200
    assert served.request("GET", "/v2/").status == 200
    assert served.request("GET", "/nowhere").status == 404
    assert served.request("PUT", "/v1/images/" + "a" * 64 + "/json", b"{}").status == 400
    after = page_of(served)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("twistreg_http_requests_total", route="ping", method="GET", status="200") == 3
    assert grew("twistreg_http_requests_total", route="base", method="GET", status="200") == 1
    assert grew("twistreg_http_requests_total", route="none", method="GET", status="404") == 1
    assert grew("twistreg_http_requests_total", route="images", method="PUT", status="400") == 1
    # The scrape before this one is counted too, under its own family.
    assert grew("twistreg_http_requests_total", route="metrics", method="GET",
                status="200") == 1
    assert grew("twistreg_http_request_duration_seconds_count", route="ping", method="GET") == 3
    assert grew("twistreg_http_request_duration_seconds_bucket", route="ping", method="GET",
                le="+Inf") == 3
    assert grew("twistreg_http_request_bytes_total", route="images") == 2
    assert grew("twistreg_http_response_bytes_total", route="ping") == 3 * len(
        served.request("GET", "/v1/_ping").body)


def test_no_page_unless_enabled(tmp_path):
    registry = MemoryRegistry(tmp_path)
    try:
        assert registry.request("GET", "/metrics").status == 404
        assert registry.site.metrics is None
    finally:
        registry.close()


def test_no_page_on_the_registry_listeners_with_an_endpoint_of_its_own(tmp_path):
    registry = MemoryRegistry(tmp_path, METRICS_ON + "    listen: tcp:0\n")
    try:
        assert registry.request("GET", "/metrics").status == 404
    finally:
        registry.close()


def test_counts_wait_for_the_flush():
    tally = metrics.RequestTally()
    clock = MemoryReactorClock()
    before = value(exposition(), "twistreg_http_requests_total", route="flushed",
                   method="other", status="204")

    class Finished:
        route_family, method, code, sentLength = "flushed", b"BREW", 204, 0
        content = None
        started = 0.0

    job = metrics.start_flushing(clock)
    tally.record(Finished())
    assert tally._slots[("flushed", "other", 204)].requests == 1
    clock.advance(metrics.FLUSH_INTERVAL)
    assert tally._slots[("flushed", "other", 204)].requests == 0
    job.stop()
    assert value(exposition(), "twistreg_http_requests_total", route="flushed",
                 method="other", status="204") == before + 1


def test_cache_hits_and_misses_by_cache_name():
    before = exposition()
    lru = BoundedLRU(100, name="test_cache")
    assert lru.get("a") is None
    lru.keep("a", b"value", 5)
    assert lru.get("a") == b"value"
    assert lru.get("a") == b"value"
    after = exposition()
    assert value(after, "twistreg_cache_hits_total", cache="test_cache") - value(
        before, "twistreg_cache_hits_total", cache="test_cache") == 2
    assert value(after, "twistreg_cache_misses_total", cache="test_cache") - value(
        before, "twistreg_cache_misses_total", cache="test_cache") == 1


def test_storage_errors_by_kind():
    before = exposition()
    StorageUnavailable("S3 answered 500")
    StorageUnavailable("S3 sent nothing for 10 s", timed_out=True)
    StorageUnavailable("S3 sent nothing for 10 s", timed_out=True)
    after = exposition()
    for kind, grown in (("failure", 1), ("timeout", 2)):
        assert value(after, "twistreg_storage_errors_total", kind=kind) - value(
            before, "twistreg_storage_errors_total", kind=kind) == grown


def test_gc_runs_and_bytes_reclaimed():
    before = exposition()
    report = Report()
    report.removed(BLOBS, "blobs/x", 1000)
    metrics.record_gc(report)
    dry = Report(dry_run=True)
    dry.removed(BLOBS, "blobs/y", 5000)
    metrics.record_gc(dry)
    after = exposition()
    assert value(after, "twistreg_gc_runs_total") - value(before, "twistreg_gc_runs_total") == 1
    assert value(after, "twistreg_gc_reclaimed_bytes_total") - value(
        before, "twistreg_gc_reclaimed_bytes_total") == 1000


def test_the_pool_directory_sums_the_master_and_forgets_dead_workers(tmp_path):
    assert DIRECTORY_VARIABLE not in os.environ
    pool = PoolMetrics(str(tmp_path))
    try:
        directory = pool.directory
        assert os.path.dirname(directory) == str(tmp_path)
        assert os.listdir(directory) == [f"counter_{os.getpid()}.db"]  # the master's own
        assert os.environ[DIRECTORY_VARIABLE] == directory
        # A worker's live gauge file, as prometheus_client names it.
        gauge = os.path.join(directory, "gauge_livesum_4242.db")
        open(gauge, "wb").close()
        for kind, pid in (("spawn", 4242), ("spawn", 4343), ("ready", 4242),
                          ("recycle", 4242), ("exit", 4242)):
            pool.worker_event(kind, pid)
        assert not os.path.exists(gauge)
        metrics.record_gc(Report())
        page = exposition(directory)
        assert value(page, "twistreg_worker_starts_total") == 2
        assert value(page, "twistreg_worker_recycles_total") == 1
        assert value(page, "twistreg_worker_exits_total") == 1
        assert value(page, "twistreg_gc_runs_total") == 1
    finally:
        pool.close()
    assert not os.path.exists(directory)
    assert DIRECTORY_VARIABLE not in os.environ


def test_config_keys(tmp_path):
    def load(text: str) -> MetricsSettings:
        path = tmp_path / "config.yml"
        path.write_text("dev:\n  metrics:\n" + text)
        return load_settings(str(path), environ={}, system_config_path=None).metrics

    assert load("    enabled: true\n") == MetricsSettings(enabled=True)
    assert load("    enabled: true\n    path: /prom/metrics\n    listen: tcp:9100\n") == (
        MetricsSettings(enabled=True, path="/prom/metrics", listen="tcp:9100"))
    assert load_settings(None, environ={}, system_config_path=None).metrics == (
        MetricsSettings(enabled=False, path="/metrics", listen=None))
    for bad in ("metrics", "/_health", "/a b", "/m?x=1"):
        with pytest.raises(ConfigError, match="config key metrics.path must be a path"):
            load(f"    path: '{bad}'\n")


def test_an_upload_is_in_flight_until_its_request_ends(served):
    """A V1 layer body half sent counts; once its connection is lost, it no longer does."""
    image = "c" * 64
    assert served.request("PUT", f"/v1/images/{image}/json",
                          f'{{"id": "{image}"}}'.encode()).status == 200
    before = value(page_of(served), "twistreg_uploads_in_flight", protocol="v1")
    peer = IPv4Address("TCP", "127.0.0.1", 39999)
    protocol = served.site.buildProtocol(peer)
    protocol.makeConnection(StringTransport(hostAddress=served.address, peerAddress=peer))
    protocol.dataReceived(
        f"PUT /v1/images/{image}/layer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Length: 1000\r\n\r\n".encode() + b"x" * 100)
    served.clock.advance(0)
    assert value(page_of(served), "twistreg_uploads_in_flight", protocol="v1") == before + 1
    protocol.connectionLost(Failure(ConnectionDone("the client went")))
    served.clock.advance(0)
    assert value(page_of(served), "twistreg_uploads_in_flight", protocol="v1") == before
