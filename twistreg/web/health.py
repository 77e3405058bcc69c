# -*- test-case-name: tests.test_health -*-
"""
C{GET /_health}, for load balancers: 200 when the storage, Redis and the search database (those
configured) answer within L{HEALTH_TIMEOUT}, else 503; the same JSON either way, each part
C{"ok"} or what went wrong.

It is no route of either protocol: a load balancer has no credentials, and a check of the
node's dependencies has no access policy to declare.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from twistreg.layout import HEALTH_PROBE_KEY
from twistreg.registry.rules import Registry
from twistreg.storage.interface import KeyNotFound
from twistreg.web.responses import json_body

#: Seconds each dependency has to answer: a load balancer's own check waits a few seconds.
HEALTH_TIMEOUT = 2.0

#: A check: returns when the dependency answers, raises why it does not.
Check = Callable[[], Awaitable[object]]


def registry_checks(registry: Registry) -> dict[str, Check]:
    """
    What a registry depends on: its storage (a write and a removal, or a read when it is
    read-only: what a push or a pull needs), each Redis it uses (PING) and its search
    database (C{SELECT 1}), those configured.
    """
    storage = registry.storage

    async def storage_answers() -> None:
        if registry.settings.readonly:
            await storage.exists(HEALTH_PROBE_KEY)
            return
        await storage.put_content(HEALTH_PROBE_KEY, b"ok")
        try:
            await storage.remove(HEALTH_PROBE_KEY)
        except KeyNotFound:
            pass  # another process's check removed it first

    checks: dict[str, Check] = {"storage": storage_answers}
    if registry.redis:
        async def redis_answers() -> None:
            for client in registry.redis:
                await client.ping()

        checks["redis"] = redis_answers
    search = registry.search
    if search is not None:
        checks["search"] = search.ping
    return checks


def _reason(failure: Failure, timeout: float) -> str:
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"no answer within {timeout:g} s"
    return " ".join(str(failure.value).split()) or failure.type.__name__


def check_health(checks: Mapping[str, Check], clock,
                 timeout: float = HEALTH_TIMEOUT) -> defer.Deferred[dict[str, str]]:
    """Run every check at once, each cut at C{timeout}: C{"ok"} or the reason, by name."""

    def one(check: Check) -> defer.Deferred[str]:
        running = defer.ensureDeferred(check())
        running.addTimeout(timeout, clock)
        return running.addCallbacks(lambda _: "ok", lambda failure: _reason(failure, timeout))

    names = list(checks)
    answers = defer.gatherResults([one(checks[name]) for name in names])
    return answers.addCallback(lambda results: dict(zip(names, results)))


class HealthResource(Resource):
    """The C{/_health} answer of one registry."""

    isLeaf = True

    def __init__(self, checks: Mapping[str, Check], clock,
                 timeout: float = HEALTH_TIMEOUT) -> None:
        super().__init__()
        self._checks = checks
        self._clock = clock
        self._timeout = timeout

    def render(self, request: IRequest) -> object:
        request.route_family = "health"
        if request.method not in (b"GET", b"HEAD"):
            return _answer(request, 405, {"error": "Method not allowed"})
        d = check_health(self._checks, self._clock, self._timeout)
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(results: dict[str, str]) -> None:
            if request.finished or gone:
                return  # the load balancer gave up first
            healthy = all(value == "ok" for value in results.values())
            body = _answer(request, 200 if healthy else 503, results)
            if request.method != b"HEAD":
                request.write(body)
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET


def _answer(request: IRequest, status: int, document: Mapping[str, str]) -> bytes:
    return json_body(request, document, status)
