"""
C{GET /_health}: 200 when every configured dependency answers, 503 naming what did not; no
route of either protocol, so no credentials are asked. Time is the memory clock's.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from tests.memory import STANDALONE, MemoryRegistry
from twistreg.web.health import HEALTH_TIMEOUT, HealthResource, check_health, registry_checks


def render(resource: HealthResource, method: bytes = b"GET") -> DummyRequest:
    request = DummyRequest([b"_health"])
    request.method = method
    result = resource.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request


def answer(request: DummyRequest) -> tuple[int, dict]:
    assert request.finished
    return request.responseCode or 200, json.loads(b"".join(request.written))


def test_a_healthy_registry_answers_200(tmp_path):
    registry = MemoryRegistry(tmp_path)
    try:
        r = registry.request("GET", "/_health")
        assert (r.status, r.json()) == (200, {"storage": "ok"})
        assert r.headers["Content-Type"] == "application/json"
        # The probe it wrote is gone again.
        assert not (registry.storage / "twistreg" / "health-check").exists()
        assert registry.request("POST", "/_health").status == 405
    finally:
        registry.close()


def test_no_credentials_are_asked(tmp_path):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$2y$05$0jdQKw3P4d4zkw0C9dnLeOmgHz1d5dc7bEGzm6Ja8Md6t8f0L3uC6\n")
    config = STANDALONE + f"  auth:\n    htpasswd:\n      path: {htpasswd}\n"
    registry = MemoryRegistry(tmp_path, config)
    try:
        assert registry.request("GET", "/v2/").status == 401
        assert registry.request("GET", "/_health").status == 200
    finally:
        registry.close()


def test_a_failing_dependency_is_named_with_a_503():
    async def fine() -> None:
        pass

    async def refused() -> None:
        raise ConnectionRefusedError("Connection refused")

    resource = HealthResource({"storage": fine, "redis": refused}, MemoryReactorClock())
    status, body = answer(render(resource))
    assert status == 503
    assert body == {"storage": "ok", "redis": "Connection refused"}


def test_a_silent_dependency_fails_after_the_timeout():
    clock = MemoryReactorClock()
    never: defer.Deferred[None] = defer.Deferred()
    resource = HealthResource({"storage": lambda: never}, clock)
    request = render(resource)
    clock.advance(HEALTH_TIMEOUT - 0.1)
    assert not request.finished
    clock.advance(0.1)
    assert answer(request) == (503, {"storage": f"no answer within {HEALTH_TIMEOUT:g} s"})


def test_an_answer_after_the_load_balancer_left_is_not_written():
    clock = MemoryReactorClock()
    slow: defer.Deferred[None] = defer.Deferred()
    request = render(HealthResource({"storage": lambda: slow}, clock))
    request.processingFailed(Failure(ConnectionDone("gone")))
    slow.callback(None)
    assert (request.finished, request.written) == (0, [])


def test_the_checks_of_what_is_configured(tmp_path):
    registry = MemoryRegistry(tmp_path)
    try:
        assert set(registry_checks(registry.registry)) == {"storage"}
    finally:
        registry.close()

    pinged = []

    class Redis:
        def __init__(self, name: str) -> None:
            self.name = name

        async def ping(self) -> None:
            pinged.append(self.name)

    class Search:
        def ping(self) -> defer.Deferred[None]:
            pinged.append("search")
            return defer.succeed(None)

    class Configured:
        storage = registry.registry.storage
        settings = registry.registry.settings
        redis = (Redis("cache_lru"), Redis("cache"))
        search = Search()

    checks = registry_checks(Configured())  # type: ignore[arg-type]
    results = check_health(checks, MemoryReactorClock())
    assert results.result == {"storage": "ok", "redis": "ok", "search": "ok"}
    assert pinged == ["cache_lru", "cache", "search"]
