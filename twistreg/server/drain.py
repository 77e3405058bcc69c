# -*- test-case-name: tests.test_arbiter,tests.test_pool -*-
"""
A worker's view of its connections: counting requests (for max-requests) and draining.

Draining must never cut a transfer, and should not make a keep-alive client lose a request: a
request that arrives during the drain is answered with C{Connection: close}; connections that
stay idle for a short linger are closed; the rest are waited for, up to the graceful timeout.
A request is in flight from its first line to its end, so an upload still streaming its body
into storage counts (its C{process()} only runs once the body is complete).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Request, Site

log = Logger()


class _TrackedConnection(ProtocolWrapper):
    """A connection, with the requests in flight on it."""

    def __init__(self, factory: WrappingFactory, wrappedProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self.requests: set[Request] = set()


class _TrackingFactory(WrappingFactory):
    protocol = _TrackedConnection
    noisy = False

    def __init__(self, tracker: ConnectionTracker, site: Site) -> None:
        super().__init__(site)
        self._tracker = tracker

    def registerProtocol(self, p) -> None:
        super().registerProtocol(p)
        self._tracker._on_count(len(self.protocols))

    def unregisterProtocol(self, p) -> None:
        super().unregisterProtocol(p)
        self._tracker._on_count(len(self.protocols))
        self._tracker._connection_closed()


class ConnectionTracker:
    """
    Wraps a Site so that its requests are counted and its connections can be drained.

    @param on_limit: called once, when C{max_requests} requests have finished.
    @param on_count: called with the number of open connections whenever it changes.
    @ivar factory: the protocol factory to listen with (the Site, wrapped).
    @ivar served: requests finished so far.
    """

    def __init__(
        self,
        clock: IReactorTime,
        site: Site,
        *,
        max_requests: int = 0,
        on_limit: Callable[[int], object] = lambda served: None,
        on_count: Callable[[int], object] = lambda connections: None,
        worker_header: bytes | None = None,
    ) -> None:
        base = site.requestFactory
        if not (isinstance(base, type) and issubclass(base, Request)):
            raise TypeError(f"the Site's requestFactory must be a Request class, not {base!r}")
        self._clock = clock
        self._max_requests = max_requests
        self._on_limit = on_limit
        self._on_count = on_count
        self._header = worker_header
        self.served = 0
        self.draining = False
        self._lingering = False
        self._finished_draining = False
        self._waiting: list[defer.Deferred[None]] = []
        self._calls: list = []
        self.factory = _TrackingFactory(self, site)
        site.requestFactory = _tracking(base, self)

    @property
    def connections(self) -> list[_TrackedConnection]:
        return list(self.factory.protocols)

    # -- called by the requests --------------------------------------------------------------

    def _started(self, request: Request) -> None:
        connection = _connection_of(request)
        if connection is not None:
            connection.requests.add(request)
        request.notifyFinish().addBoth(self._finished, request, connection)

    def _processing(self, request: Request) -> None:
        request._tracker_processing = True
        if self._header is not None:
            request.setHeader(b"X-Twistreg-Worker", self._header)
        if self.draining:
            _close_after(request)

    def _finished(self, _result, request: Request, connection: _TrackedConnection | None) -> None:
        self.served += 1
        if self._max_requests and self.served == self._max_requests:
            self._on_limit(self.served)
        if connection is None:
            return
        connection.requests.discard(request)
        if self.draining and self._lingering and not connection.requests:
            connection.loseConnection()

    def _connection_closed(self) -> None:
        if self.draining and not self.factory.protocols:
            self._done()

    # -- draining ----------------------------------------------------------------------------

    def drain(self, timeout: float, linger: float) -> defer.Deferred[None]:
        """
        Finish in-flight requests, closing each connection after its current request.

        @param timeout: give up after this many seconds (the rest are cut by the caller).
        @param linger: close connections idle for this long; a request arriving meanwhile is
            served, with C{Connection: close}.
        @return: fires when no connection is left, or at the timeout.
        """
        waiting: defer.Deferred[None] = defer.Deferred()
        if self._finished_draining:
            waiting.callback(None)
            return waiting
        self._waiting.append(waiting)
        if self.draining:
            return waiting
        self.draining = True
        for connection in self.connections:
            for request in connection.requests:
                if getattr(request, "_tracker_processing", False):
                    _close_after(request)
        self._calls = [
            self._clock.callLater(linger, self._close_idle),
            self._clock.callLater(timeout, self._timed_out),
        ]
        if not self.factory.protocols:
            self._done()
        return waiting

    def _close_idle(self) -> None:
        self._lingering = True
        for connection in self.connections:
            if not connection.requests:
                connection.loseConnection()

    def _timed_out(self) -> None:
        left = sum(len(connection.requests) for connection in self.connections)
        log.warn("drain timed out; cutting {count} requests in flight", count=left)
        self._done()

    def _done(self) -> None:
        if self._finished_draining:
            return
        self._finished_draining = True
        for call in self._calls:
            if call.active():
                call.cancel()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stop_now(self) -> None:
        """End a drain in progress at once (quick stop)."""
        if self.draining:
            self._done()


def _connection_of(request: Request) -> _TrackedConnection | None:
    transport = getattr(request.channel, "transport", None)
    return transport if isinstance(transport, _TrackedConnection) else None


def _close_after(request: Request) -> None:
    """End the connection after this response, and say so while the headers are unsent."""
    if not request.startedWriting:
        request.setHeader(b"Connection", b"close")
    if hasattr(request.channel, "persistent"):
        request.channel.persistent = False


def _tracking(base: type[Request], tracker: ConnectionTracker) -> type[Request]:
    """A subclass of the Site's request class that reports to C{tracker}."""

    class TrackedRequest(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            tracker._started(self)

        def process(self):
            tracker._processing(self)
            return super().process()

    TrackedRequest.__name__ = TrackedRequest.__qualname__ = base.__name__
    return TrackedRequest
