"""
The private Twisted APIs of twistreg.compat against the Twisted installed: a release that
renames one fails here first.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp, unix
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web import resource, server

from twistreg import compat


def test_endpoint_keywords():
    assert compat.endpoint_keywords("tcp:5000:backlog=50:interface=127.0.0.1") == {
        "backlog": "50", "interface": "127.0.0.1"}
    assert compat.endpoint_keywords("unix:/run/x.sock") == {}


def test_unix_endpoint_parameters(tmp_path):
    endpoint = serverFromString(MemoryReactorClock(),
                                f"unix:{tmp_path}/s.sock:mode=640:lockfile=1")
    path, mode, lockfile = compat.unix_endpoint_parameters(endpoint)
    assert (path, mode, lockfile) == (f"{tmp_path}/s.sock", 0o640, True)


def test_tcp_endpoint_parameters():
    endpoint = serverFromString(MemoryReactorClock(), "tcp:5001:interface=127.0.0.2")
    assert compat.tcp_endpoint_parameters(endpoint) == ("127.0.0.2", 5001)


def test_ssl_context_factory(tmp_path):
    pytest.importorskip("OpenSSL")
    from tests.tls import make_certificate

    key, cert = make_certificate(tmp_path)
    endpoint = serverFromString(MemoryReactorClock(), f"ssl:0:privateKey={key}:certKey={cert}")
    context = compat.ssl_context_factory(endpoint).getContext()
    assert context.get_cert_store() is not None


@pytest.mark.parametrize("family", ["INET", "UNIX"])
def test_port_from_listening_descriptor(tmp_path, family):
    from twisted.internet import reactor

    class TCPPort(tcp.Port):
        pass

    class UNIXPort(unix.Port):
        pass

    if family == "INET":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        args: tuple = (socket.AF_INET,)
        port_class: type = TCPPort
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / "s.sock"))
        args = ()
        port_class = UNIXPort
    listener.listen(1)
    listener.setblocking(False)
    try:
        factory = server.Site(resource.Resource())
        port = compat.port_from_listening_descriptor(port_class, reactor, listener.fileno(),
                                                     *args, factory)
        assert type(port) is port_class and port.factory is factory
        port.startListening()
        try:
            assert port.getHost() is not None and port.fileno() != listener.fileno()
        finally:
            port.stopReading()
            port.connectionLost(Failure(ConnectionDone()))
    finally:
        listener.close()
