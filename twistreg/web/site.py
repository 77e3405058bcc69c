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

from twistreg.compat import BadRequestChannel
from twistreg.registry.rules import Registry
from twistreg.web import responses
from twistreg.web.body import RegistryRequest
from twistreg.web.capacity import LINGERING, Overloaded, connection_capacity
from twistreg.web.dispatch import RoutedResource
from twistreg.web.v1 import build_routes
from twistreg.web.v1.errors import render_error
from twistreg.web.wsgi import PrefixMount, WSGIContainer, mount_prefix


def registry_resource(registry: Registry) -> RoutedResource:
    """The registry as an C{IResource}, for a Site or another application's tree."""
    return RoutedResource(build_routes(registry), render_error)


class RegistryChannel(BadRequestChannel):
    """
    A connection whose answer to a request twisted.web cannot parse is JSON too, and that
    tells its Site when it ends (the Site counts connections: L{twistreg.web.capacity}).
    """

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.site.connection_closed()

    def bad_request_answer(self, head: bool) -> bytes:
        if any(getattr(request, "answered_early", False) for request in self.requests):
            return b""  # that request has its answer; the connection only closes
        return responses.raw_json_answer(400, "Bad request", {}, with_body=not head)


class TimedRequest(RegistryRequest):
    """Remembers when the request began, for the access log's duration."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()


class RegistrySite(server.Site):
    """
    A Site serving C{registry}: its requests stream layer bodies into storage, and it writes
    one access log line per request to C{access_log} (when given).

    @param wsgi: a WSGI application to serve under C{wsgi_mount}, beside the registry; with
        no C{registry}, it serves the whole site (C{wsgi_mount} C{/}).
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
        **kwargs,
    ) -> None:
        self.registry = registry
        self.routes: RoutedResource | None = None
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
        return frozenset() if self.routes is None else self.routes.routes.upload_methods

    def open_upload(self, request: IRequest, method: bytes, target: bytes,
                    authorization: str | None) -> defer.Deferred | None:
        """
        Called by the request as its body starts: when the route streams its body into
        storage, its policy's checks (authorization first) and its sink; else None.

        @param target: the request's path and query, as received.
        """
        assert self.routes is not None
        return self.routes.routes.open_upload(request, method, target, authorization)

    def log(self, request: TimedRequest) -> None:
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
