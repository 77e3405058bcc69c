"""
Connections past what a process's file descriptors allow are answered 503 and closed
(twistreg/web/capacity.py), in memory and against a server started with a low limit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from tests.server import Server
from twistreg.web.capacity import LINGERING, RESERVE, Overloaded
from twistreg.web.site import RegistrySite

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


def connect(site: RegistrySite):
    protocol = site.buildProtocol(ADDRESS)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_past_the_capacity_a_connection_is_answered_503_and_closed() -> None:
    clock = MemoryReactorClock()
    site = RegistrySite(None, reactor=clock, wsgi=None)
    site.capacity = 2
    first, _ = connect(site)
    connect(site)
    refused, transport = connect(site)
    assert isinstance(refused, Overloaded)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close" in head
    assert json.loads(body) == {"error": "Too many connections"}
    clock.advance(5)
    assert transport.disconnecting
    refused.connectionLost(None)
    assert site.overloaded == 0
    first.connectionLost(None)
    assert site.connections == 1
    assert not isinstance(connect(site)[0], Overloaded)


def test_past_what_may_linger_a_connection_is_closed_at_once() -> None:
    site = RegistrySite(None, reactor=MemoryReactorClock(), wsgi=None)
    site.capacity = 0
    for _ in range(LINGERING):
        assert isinstance(connect(site)[0], Overloaded)
    assert site.buildProtocol(ADDRESS) is None


def test_the_capacity_follows_the_file_limit() -> None:
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 4096));"
        "from twistreg.web.capacity import connection_capacity; print(connection_capacity())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["872"]


def test_twist_twistreg_raises_its_soft_limit_to_the_hard_one() -> None:
    script = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096));"
        "from twistreg.web.capacity import raise_open_file_limit;"
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["4096", "4096"]


@pytest.mark.integration
def test_a_server_short_of_descriptors_answers_503_and_serves_on(tmp_path, storage) -> None:
    limit = RESERVE + 20  # room for 20 connections
    server = Server(tmp_path, storage, file_limit=limit).start()
    held: list[socket.socket] = []
    try:
        answers = []
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            held.append(sock)
            sock.sendall(b"GET /v1/_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(sock.recv(65536).split(b"\r\n", 1)[0])
        assert answers.count(b"HTTP/1.1 200 OK") == 20
        assert answers.count(b"HTTP/1.1 503 Service Unavailable") == 10
        for sock in held:
            sock.close()
        held.clear()
        assert server.request("GET", "/v1/_ping").status == 200
        assert "EMFILE" not in server.text() and "Traceback" not in server.text()
    finally:
        for sock in held:
            sock.close()
        server.stop()
