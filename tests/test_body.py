"""
Request bodies and what twisted.web answers on its own (twistreg/web/body.py, site.py): a
body that will be refused is answered before it is read, every answer is JSON, odd request
targets and Host headers are routed or refused cleanly.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from tests.memory import MemoryRegistry
from tests.routes import image_json
from tests.server import Server
from twistreg.web.body import BODY_LIMIT, LINGER_SECONDS
from twistreg.web.site import RegistrySite

IMAGE = "c3" * 32


class Connection:
    """One connection to a registry's Site, fed raw bytes, its answer read as they come."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self.clock = registry.clock
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        self.transport = StringTransport(peerAddress=peer,
                                         hostAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.protocol = registry.site.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers, body


@pytest.fixture
def registry(tmp_path: Path):
    running = MemoryRegistry(tmp_path)
    yield running
    running.close()


def put_head(path: str, length: int | None, *extra: str) -> bytes:
    size = ["Transfer-Encoding: chunked"] if length is None else [f"Content-Length: {length}"]
    return ("\r\n".join([f"PUT {path} HTTP/1.1", "Host: r", *size, *extra]) + "\r\n\r\n").encode()


def test_an_announced_body_over_the_cap_gets_413_before_it_is_read(registry):
    connection = Connection(registry)
    connection.send(put_head("/v1/repositories/foo/bar/tags/x", 100 * 1024 * 1024,
                             "Expect: 100-continue"))
    status, headers, body = connection.answer()
    assert (status, json.loads(body)) == (413, {"error": "Request body too large"})
    assert headers["Connection"] == "close"
    assert headers["Content-Type"] == "application/json"
    assert b"100 Continue" not in connection.transport.value()
    # What the client still sends is dropped, until the linger time is over.
    answered = connection.transport.value()
    connection.send(b"x" * 1024 * 1024)
    assert connection.transport.value() == answered
    assert not connection.transport.disconnecting
    registry.clock.advance(LINGER_SECONDS)
    assert connection.transport.disconnecting


def test_a_chunked_body_is_cut_off_at_the_cap(registry):
    connection = Connection(registry)
    connection.send(put_head("/v1/repositories/foo/bar/tags/x", None))
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"x" * 1024 * 1024)
    for _ in range(BODY_LIMIT // (1024 * 1024)):
        connection.send(chunk)
    assert connection.transport.value() == b""
    connection.send(chunk)
    status, headers, body = connection.answer()
    assert (status, json.loads(body)) == (413, {"error": "Request body too large"})
    # The end of the body closes the connection at once.
    connection.send(b"0\r\n\r\n")
    assert connection.transport.disconnecting


def test_a_layer_for_an_unknown_image_is_refused_before_its_body(registry):
    """R4's checks run as the body starts: a 404 without reading the body, nothing kept."""
    connection = Connection(registry)
    connection.send(put_head(f"/v1/images/{IMAGE}/layer", 1 << 30))
    status, _, body = connection.answer()
    assert (status, json.loads(body)) == (404, {"error": "Image not found"})
    assert not (registry.storage / "images" / IMAGE).exists()


def test_a_complete_layer_is_refused_before_its_body(registry):
    assert registry.request("PUT", f"/v1/images/{IMAGE}/json", image_json(IMAGE)).status == 200
    assert registry.request("PUT", f"/v1/images/{IMAGE}/layer", b"layer").status == 200
    (registry.storage / "images" / IMAGE / "_inprogress").unlink()
    connection = Connection(registry)
    connection.send(put_head(f"/v1/images/{IMAGE}/layer", 1 << 30))
    status, _, body = connection.answer()
    assert (status, json.loads(body)) == (409, {"error": "Image already exists"})
    assert (registry.storage / "images" / IMAGE / "layer").read_bytes() == b"layer"


def test_the_early_answer_is_in_the_access_log(tmp_path):
    running = MemoryRegistry(tmp_path)
    lines = []
    running.site._access_log = type("Log", (), {"write": lines.append, "flush": lambda s: 0})()
    connection = Connection(running)
    connection.send(put_head("/v1/repositories/foo/bar/tags/x", BODY_LIMIT + 1))
    running.close()
    assert len(lines) == 1 and '"PUT /v1/repositories/foo/bar/tags/x HTTP/1.1" 413 ' in lines[0]


def test_an_absolute_form_target_is_routed_like_its_path(registry):
    response = registry.request("GET", "http://registry.example:5000/v1/_ping")
    assert (response.status, response.body) == (200, b"{}")
    response = registry.request("PUT", "http://elsewhere/v1/repositories/foo/bar/images", b"[]")
    assert response.status == 204
    # The target's host replaces the Host header.
    assert response.headers["X-Docker-Endpoints"] == "elsewhere"


@pytest.mark.parametrize("host", ["a..b", "a" * 64, ".", "a b", "[::1", ""])
def test_odd_host_headers_get_json(registry, host):
    response = registry.request("GET", "/v1/_ping", headers={"Host": host})
    assert response.headers["Content-Type"] == "application/json"
    assert response.status in (200, 400)
    if response.status == 400:
        assert response.json() == {"error": "Invalid Host header"}


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/_ping\r\n\r\n",
    b"PUT /v1/images/x/json HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"PUT /v1/images/x/json HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v1/_ping HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_what_twisted_refuses_is_answered_in_json(registry, raw):
    connection = Connection(registry)
    connection.send(raw)
    status, headers, body = connection.answer()
    assert (status, json.loads(body)) == (400, {"error": "Bad request"})
    assert headers["Content-Type"] == "application/json"
    assert connection.transport.disconnecting


@pytest.mark.parametrize("hello", [
    bytes.fromhex("160301020001") + b"\x03\x03" + bytes(32),  # TLS 1.x ClientHello
    bytes.fromhex("8080010301"),  # an SSLv2-style hello
])
def test_a_tls_client_on_the_plain_port_is_answered_at_once(registry, hello):
    """skopeo and podman try HTTPS first: no line ending would ever come."""
    connection = Connection(registry)
    connection.send(hello)
    status, _, body = connection.answer()
    assert (status, json.loads(body)) == (400, {"error": "Bad request"})
    assert connection.transport.disconnecting


def test_an_exception_outside_the_routes_is_a_json_500(tmp_path):
    class Broken(Resource):
        isLeaf = True

        def render(self, request):
            raise RuntimeError("broken")

    site = RegistrySite(None, None, wsgi=None)
    site.resource = Broken()
    transport = StringTransport()
    protocol = site.buildProtocol(None)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: r\r\n\r\n")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert json.loads(body) == {"error": "Internal server error"}


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.integration
def test_413_before_a_100_mib_body_and_bounded_memory(tmp_path, storage):
    """The answer comes before the body is sent; the server reads it without keeping it."""
    server = Server(tmp_path, storage).start()
    try:
        before = _rss(server.pid)
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            size = 100 * 1024 * 1024
            client.sendall(put_head("/v1/repositories/foo/bar/tags/x", size))
            answer = client.recv(65536)
            assert answer.startswith(b"HTTP/1.1 413 ")
            assert answer.endswith(b'{"error": "Request body too large"}')
            chunk = b"x" * (1024 * 1024)
            deadline = time.monotonic() + 60
            sent = 0
            try:
                while sent < size and time.monotonic() < deadline:
                    client.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the linger time ended on a slow machine: the server closed
            client.shutdown(socket.SHUT_WR)
            while client.recv(65536):
                pass
        assert _rss(server.pid) - before <= 2 * 1024 * 1024
    finally:
        server.stop()
