"""The resource that answers from a route table (twistreg.web.dispatch), on a real Site."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest

from twistreg.web.dispatch import RoutedResource

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Routes:
    """Answers every request with what the test put in C{answer_with}."""

    def __init__(self) -> None:
        self.answer_with: object = b"ok"
        self.paths: list[bytes] = []

    def answer(self, request: IRequest) -> bytes | defer.Deferred:
        self.paths.append(request.path)
        if isinstance(self.answer_with, Exception):
            raise self.answer_with
        return self.answer_with


class Errors:
    """Renders a failure as C{<status> <type name>}, and records what it rendered."""

    def __init__(self) -> None:
        self.rendered: list[Failure] = []

    def __call__(self, request: IRequest, failure: Failure) -> bytes | None:
        self.rendered.append(failure)
        if failure.check(defer.CancelledError):
            return None
        if failure.check(ZeroDivisionError):
            raise RuntimeError("the renderer itself broke")
        request.setResponseCode(418)
        return type(failure.value).__name__.encode()


def connect(routes: Routes, errors: Errors) -> tuple[object, StringTransport]:
    site = server.Site(RoutedResource(routes, errors))
    transport = StringTransport(peerAddress=PEER, hostAddress=IPv4Address("TCP", "127.0.0.1", 80))
    protocol = site.buildProtocol(PEER)
    protocol.makeConnection(transport)
    return protocol, transport


def body(transport: StringTransport) -> bytes:
    """What follows the headers (chunked: twisted.web frames answers without a length)."""
    return transport.value().partition(b"\r\n\r\n")[2]


def get(protocol, path: bytes = b"/x") -> None:
    protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: example\r\n\r\n")


def test_an_answer_ready_at_once_is_written_at_once():
    routes, errors = Routes(), Errors()
    protocol, transport = connect(routes, errors)
    get(protocol, b"/a/b")
    assert routes.paths == [b"/a/b"]
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert b"ok" in body(transport)
    assert errors.rendered == []


def test_a_later_answer_is_written_when_it_comes():
    routes, errors = Routes(), Errors()
    routes.answer_with = later = defer.Deferred()
    protocol, transport = connect(routes, errors)
    get(protocol)
    assert transport.value() == b""
    later.callback(b"late")
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    assert b"late" in body(transport)


def test_a_client_that_leaves_cancels_the_work_done_for_it():
    routes, errors = Routes(), Errors()
    cancelled = []
    routes.answer_with = defer.Deferred(cancelled.append)
    protocol, transport = connect(routes, errors)
    get(protocol)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(cancelled) == 1
    assert transport.value() == b""
    # Nobody is left to answer: the renderer is not asked.
    assert errors.rendered == []


def test_what_a_route_raises_is_rendered_by_the_renderer():
    routes, errors = Routes(), Errors()
    routes.answer_with = KeyError("x")
    protocol, transport = connect(routes, errors)
    get(protocol)
    assert transport.value().startswith(b"HTTP/1.1 418 ")
    assert b"KeyError" in body(transport)


def test_a_later_failure_is_rendered_too():
    routes, errors = Routes(), Errors()
    routes.answer_with = later = defer.Deferred()
    protocol, transport = connect(routes, errors)
    get(protocol)
    later.errback(ValueError("late"))
    assert transport.value().startswith(b"HTTP/1.1 418 ")
    assert b"ValueError" in body(transport)


def test_a_renderer_that_breaks_leaves_the_request_to_processing_failed():
    routes, errors = Routes(), Errors()
    routes.answer_with = ZeroDivisionError()
    protocol, transport = connect(routes, errors)
    get(protocol)
    # twisted.web's own 500 (twistreg's request factory makes it JSON).
    assert transport.value().startswith(b"HTTP/1.1 500 ")
    errors_logged = [f for f in errors.rendered if f.check(ZeroDivisionError)]
    assert len(errors_logged) == 1


def test_an_answer_that_comes_after_the_client_left_is_dropped():
    routes, errors = Routes(), Errors()
    routes.answer_with = later = defer.Deferred(lambda d: None)
    protocol, transport = connect(routes, errors)
    get(protocol)
    protocol.connectionLost(Failure(ConnectionDone()))
    # Cancelled: the Deferred failed with CancelledError, which nobody is left to hear.
    assert later.called and errors.rendered == [] and transport.value() == b""
