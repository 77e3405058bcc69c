"""
Local files sent by the kernel (twistreg/web/sendfile.py), over real sockets in this process
(the C{in_reactor} fixture): whole and ranged, to slow and vanishing clients, and the
connection serving on afterwards.
"""

from __future__ import annotations

import http.client
import os
import socket
import time

import pytest
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from twisted.web.test.requesthelper import DummyChannel

from tests.routes import new_id, push
from tests.server import Server
from twistreg.web import sendfile
from twistreg.web.sendfile import kernel_socket, send_file

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


class FileResource(Resource):
    """GET /<offset>/<length>: that part of the file, by the kernel."""

    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.outcomes: list[object] = []
        self.sent: list[int] = []

    def render_GET(self, request: Request):
        offset, length = (int(part) for part in request.postpath)
        request.setHeader(b"Content-Length", b"%d" % length)
        transport = kernel_socket(request)
        assert transport is not None
        done = send_file(request, transport, open(self.path, "rb"), offset, length)

        def ended(outcome):
            self.sent.append(request.sentLength)
            self.outcomes.append(outcome if outcome is None else outcome.type)
            if outcome is None:
                request.finish()

        done.addBoth(ended)
        return NOT_DONE_YET


@pytest.fixture
def served(tmp_path, in_reactor, monkeypatch):
    data = os.urandom(MiB) * 24
    path = tmp_path / "layer"
    path.write_bytes(data)
    calls: list[int] = []
    real = os.sendfile

    def counting(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(sendfile.os, "sendfile", counting)
    resource = FileResource(str(path))
    port = in_reactor(reactor.listenTCP, 0, Site(resource), interface="127.0.0.1")
    yield port.getHost().port, data, resource, calls
    in_reactor(port.stopListening)


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_whole_ranged_and_the_connection_serves_on(served) -> None:
    port, data, resource, calls = served
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for offset, length in ((0, len(data)), (12345, 5 * MiB), (len(data) - 1, 1)):
        connection.request("GET", f"/{offset}/{length}")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == data[offset:offset + length]
    # The reactor's thread notes the end just after the last bytes left.
    wait_for(lambda: len(resource.outcomes) == 3)
    assert resource.outcomes == [None, None, None]
    assert resource.sent == [len(data), 5 * MiB, 1]
    assert calls, "os.sendfile was not used"


def test_a_slow_reader_is_sent_as_it_reads(served) -> None:
    port, data, resource, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", f"/0/{len(data)}")
    response = connection.getresponse()
    received = bytearray()
    while chunk := response.read(MiB):
        received += chunk
        if len(received) < 4 * MiB:
            time.sleep(0.05)
    assert bytes(received) == data
    wait_for(lambda: resource.outcomes)
    assert resource.outcomes == [None]


def test_a_client_that_goes_away(served) -> None:
    port, data, resource, _ = served
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(f"GET /0/{len(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(65536)
    sock.close()
    wait_for(lambda: resource.outcomes)
    assert resource.outcomes[0] is not None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/0/10")
    assert connection.getresponse().read() == data[:10]


def test_only_plain_connections() -> None:
    request = Request(DummyChannel())
    assert kernel_socket(request) is None
    request.channel.transport = StringTransport()
    assert kernel_socket(request) is None


def test_the_socket_under_a_workers_connection_counter(served, in_reactor) -> None:
    """A worker's connections are wrapped (twistreg.server.drain): the socket is beneath."""
    tcp = in_reactor(lambda: _connected_transport(served[0]))
    request = Request(DummyChannel())
    request.channel.transport = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
    request.channel.transport.makeConnection(tcp)
    try:
        assert kernel_socket(request) is tcp
    finally:
        in_reactor(tcp.loseConnection)


def _connected_transport(port: int):
    """A client TCP transport (a FileDescriptor) connected to C{port}."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                           Protocol()).addCallback(lambda protocol: protocol.transport)


def test_workers_send_layers_whole_and_ranged(tmp_path, storage) -> None:
    """Through the process pool's wrapped connections, keep-alive included."""
    server = Server(tmp_path, storage, workers=2).start()
    try:
        image_id, layer = new_id(), os.urandom(MiB) * 16
        push(server, image_id, layer)
        connection = server.connection()
        for headers, status, expected in (
            ({}, 200, layer),
            ({"Range": "bytes=1000-"}, 206, layer[1000:]),
            ({"Range": "bytes=5-9"}, 206, layer[5:10]),
        ):
            connection.request("GET", f"/v1/images/{image_id}/layer", headers=headers)
            response = connection.getresponse()
            assert (response.status, response.read() == expected) == (status, True)
        connection.request("GET", "/v1/_ping")
        assert connection.getresponse().status == 200
    finally:
        server.stop()
