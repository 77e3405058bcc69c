# -*- test-case-name: tests.test_body,tests.test_routing -*-
"""
The twisted.web Site around the Klein app: streaming bodies, the access log, the JSON
answers for what happens before routing (over-size bodies, undecodable paths), and a hosted
WSGI application at the root or beside the registry routes.
"""

from __future__ import annotations

import time
from typing import IO

from twisted.internet import defer
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from twistreg.compat import BadRequestChannel
from twistreg.metrics import NO_ROUTE, RequestTally
from twistreg.registry.rules import Registry
from twistreg.web import responses
from twistreg.web.body import (
    V1_EARLY_ANSWERS,
    EarlyAnswers,
    RegistryRequest,
    path_segments,
)
from twistreg.web.capacity import LINGERING, Overloaded, connection_capacity
from twistreg.web.dispatch import RoutedResource
from twistreg.web.health import HealthResource, registry_checks
from twistreg.web.routing import PolicyRoutes
from twistreg.web.scrape import MetricsPage
from twistreg.web.v1 import build_routes
from twistreg.web.v1.errors import render_error as render_v1_error
from twistreg.web.v2 import build_v2_routes
from twistreg.web.v2.errors import V2_EARLY_ANSWERS
from twistreg.web.v2.errors import render_error as render_v2_error
from twistreg.web.wsgi import PrefixMount, WSGIContainer, mount_prefix


@implementer(IResource)
class RegistryResource:
    """
    The registry as one leaf resource: C{/v2} and below go to the V2 routes when they are
    on, everything else to the V1 routes; each protocol answers its own errors. C{/_health}
    and the metrics page (when served here) are answered first, by no protocol.
    """

    isLeaf = True

    def __init__(self, registry: Registry) -> None:
        self.v1 = RoutedResource(build_routes(registry), render_v1_error)
        self.v2 = (RoutedResource(build_v2_routes(registry), render_v2_error)
                   if registry.settings.v2 else None)
        # Answered before either protocol's routes: no access policy applies to them.
        self._pages: dict[bytes, IResource] = {
            b"/_health": HealthResource(registry_checks(registry), registry.clock)}
        metrics = registry.settings.metrics
        if metrics.enabled and metrics.listen is None:
            self._pages[metrics.path.encode("ascii")] = MetricsPage()

    def _for_path(self, segments: list[bytes]) -> RoutedResource:
        if self.v2 is not None and segments[:1] == [b"v2"]:
            return self.v2
        return self.v1

    def render(self, request: IRequest) -> object:
        page = self._pages.get(request.path)
        if page is not None:
            return page.render(request)
        return self._for_path(request.postpath).render(request)

    def routes_for(self, target: bytes) -> PolicyRoutes:
        """The route table that a request target (path and query, as received) goes to."""
        return self._for_path(path_segments(target)).routes

    def early_answers(self, target: bytes) -> EarlyAnswers:
        """How the protocol of a request target answers before routing."""
        return V2_EARLY_ANSWERS if self.routes_for(target) is not self.v1.routes else (
            V1_EARLY_ANSWERS)

    @property
    def upload_methods(self) -> frozenset[bytes]:
        """The methods of the routes whose body streams into storage, in either protocol."""
        methods = self.v1.routes.upload_methods
        return methods if self.v2 is None else methods | self.v2.routes.upload_methods

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        raise RuntimeError("the registry answers every path below it")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise RuntimeError("the registry answers every path below it")


def registry_resource(registry: Registry) -> RegistryResource:
    """The registry as an C{IResource}, for a Site or another application's tree."""
    return RegistryResource(registry)


#: The first byte of a TLS record carrying a handshake (0x16) or of an SSLv2-style hello
#: (0x80): never the first byte of an HTTP request line, which starts with a method token.
_TLS_HELLO_FIRST_BYTES = frozenset({0x16, 0x80})


class RegistryChannel(BadRequestChannel):
    """
    A connection whose answer to a request twisted.web cannot parse is JSON too, and that
    tells its Site when it ends (the Site counts connections: L{twistreg.web.capacity}).
    """

    _first_bytes = True

    def dataReceived(self, data: bytes) -> None:
        if self._first_bytes and data:
            self._first_bytes = False
            if data[0] in _TLS_HELLO_FIRST_BYTES:
                # A TLS client on a plain port (skopeo and podman try HTTPS first) would
                # wait, with no line ending to come, until its handshake times out: it
                # gets its answer at once and falls back to plain HTTP.
                self._respondToBadRequestAndDisconnect()
                return
        super().dataReceived(data)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.site.connection_closed()

    def bad_request_answer(self, head: bool) -> bytes:
        if any(getattr(request, "answered_early", False) for request in self.requests):
            return b""  # that request has its answer; the connection only closes
        return responses.raw_json_answer(400, "Bad request", {}, with_body=not head)


class TimedRequest(RegistryRequest):
    """
    Remembers when the request began, for the access log's duration, and the route family
    that answered it, for the metrics (set when a route matches).
    """

    route_family = NO_ROUTE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()


class RegistrySite(server.Site):
    """
    A Site serving C{registry}: its requests stream layer bodies into storage, and it writes
    one access log line per request to C{access_log} (when given).

    @param wsgi: a WSGI application to serve under C{wsgi_mount}, beside the registry; with
        no C{registry}, it serves the whole site (C{wsgi_mount} C{/}).
    @param metrics: counts every request answered, when metrics are on.
    @ivar wsgi_prefix: the mount's path segments, which the requests read to spool the
        application's bodies; C{None} without one.
    """

    def __init__(
        self,
        registry: Registry | None,
        access_log: IO[str] | None = None,
        *,
        wsgi: WSGIContainer | None = None,
        wsgi_mount: str = "/",
        metrics: RequestTally | None = None,
        **kwargs,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.routes: RegistryResource | None = None
        self.wsgi = wsgi
        self.wsgi_prefix = None if wsgi is None else mount_prefix(wsgi_mount)
        super().__init__(self._root(), requestFactory=TimedRequest, **kwargs)
        # Plain HTTP/1.1 channels (no HTTP/2 negotiation) answering bad requests in JSON.
        self.protocol = RegistryChannel
        self.noisy = False
        self._access_log = access_log
        self.capacity = connection_capacity()
        self.connections = 0
        self.overloaded = 0

    def buildProtocol(self, addr):
        """
        A channel; past the process's capacity, the 503 answer; past what may linger with
        that answer, nothing (the connection is closed at once).
        """
        if self.connections < self.capacity:
            self.connections += 1
            return super().buildProtocol(addr)
        if self.overloaded >= LINGERING:
            return None
        self.overloaded += 1
        return Overloaded(self.reactor, self._overload_closed)

    def connection_closed(self) -> None:
        self.connections -= 1

    def _overload_closed(self) -> None:
        self.overloaded -= 1

    def _root(self) -> IResource:
        if self.registry is not None:
            self.routes = registry_resource(self.registry)
        if self.wsgi is None:
            return self.routes
        if self.routes is None:
            return self.wsgi
        return PrefixMount(self.wsgi_prefix, self.wsgi, self.routes)

    @property
    def upload_methods(self) -> frozenset[bytes]:
        """The methods of the routes whose body streams into storage (see L{open_upload})."""
        return frozenset() if self.routes is None else self.routes.upload_methods

    def early_answers(self, target: bytes) -> EarlyAnswers:
        """How a request to C{target} is answered before routing (its protocol's way)."""
        if self.routes is None:
            return V1_EARLY_ANSWERS
        return self.routes.early_answers(target)

    def open_upload(self, request: IRequest, method: bytes, target: bytes,
                    authorization: str | None) -> defer.Deferred | None:
        """
        Called by the request as its body starts: when the route streams its body into
        storage, its policy's checks (authorization first) and its sink; else None.

        @param target: the request's path and query, as received.
        """
        assert self.routes is not None
        return self.routes.routes_for(target).open_upload(request, method, target,
                                                          authorization)

    def log(self, request: TimedRequest) -> None:
        if self.metrics is not None:
            self.metrics.record(request)
        if self._access_log is None:
            return
        self._access_log.write(access_log_line(request) + "\n")
        self._access_log.flush()


def _text(value: bytes | None) -> str:
    return "-" if value is None else value.decode("latin-1").replace('"', "%22")


def access_log_line(request: TimedRequest) -> str:
    """One line: client, time, request, status, bytes, duration, user agent, X-Docker-Size."""
    client = request.getClientAddress()
    host = getattr(client, "host", "-")
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    duration = time.monotonic() - request.started
    line = _text(request.method) + " " + _text(request.uri) + " " + _text(request.clientproto)
    return (
        f'{host} - - [{when}] "{line}" {request.code} {request.sentLength} {duration:.6f} '
        f'"{_text(request.getHeader(b"User-Agent"))}" '
        f"{_text(request.responseHeaders.getRawHeaders(b'X-Docker-Size', [None])[0])}"
    )
