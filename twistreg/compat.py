# -*- test-case-name: tests.test_compat -*-
"""
The private Twisted APIs twistreg relies on, in one place: one function per use, each saying
why it is needed and which public API would replace it.

Everything else in twistreg uses Twisted's public API only, so a Twisted release that moves
one of these breaks this module (and tests/test_compat.py), nowhere else.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints
from twisted.web import http


def endpoint_keywords(description: str) -> dict[str, str]:
    """
    The C{name=value} arguments of an endpoint string (C{backlog=...}).

    Needed because a server endpoint keeps the backlog it was given to itself, and the master
    binds the socket with it (it must never call the endpoint's C{listen}, which would accept).
    Public replacement: none; an endpoint exposing its parameters, or parsing the string here.
    """
    _args, keywords = endpoints._parse(description)
    return keywords


def unix_endpoint_parameters(endpoint: endpoints.UNIXServerEndpoint) -> tuple[Any, int, bool]:
    """
    The socket path, file mode and lock-file flag of a C{unix:} server endpoint.

    Needed for the master to bind the socket the way the endpoint would, without listening
    on it. Public replacement: none (the endpoint's attributes are private).
    """
    return endpoint._address, endpoint._mode, bool(endpoint._wantPID)


def tcp_endpoint_parameters(
    endpoint: endpoints.TCP4ServerEndpoint | endpoints.TCP6ServerEndpoint
    | endpoints.SSL4ServerEndpoint,
) -> tuple[str, int]:
    """
    The interface and port of a C{tcp:}, C{tcp6:} or C{ssl:} server endpoint.

    Needed for the master to bind the socket itself (see L{unix_endpoint_parameters}).
    Public replacement: none (the endpoint's attributes are private).
    """
    return endpoint._interface, int(endpoint._port)


def ssl_context_factory(endpoint: endpoints.SSL4ServerEndpoint) -> Any:
    """
    The TLS context factory of an C{ssl:} server endpoint (certificates already read).

    Needed because a worker adopts a plain listening socket and wraps its factory in TLS
    itself, with the certificates the endpoint string names. Public replacement: building
    the context with C{twisted.internet.ssl} from the endpoint string's own arguments.
    """
    return endpoint._sslContextFactory


def port_from_listening_descriptor(port_class: type, reactor: Any, fd: int, *args: Any) -> Any:
    """
    An instance of C{port_class} (a C{tcp.Port} or C{unix.Port} subclass) over an inherited,
    listening descriptor: C{args} are the address family (TCP only) and the factory.

    Needed because the worker's ports accept a bounded batch per wake-up and consult the
    scoreboard (twistreg.server.listeners), and C{reactor.adoptStreamPort} can only make
    Twisted's own port class. Public replacement: an C{adoptStreamPort} that takes a port
    class, or a public accept-batch setting on adopted ports.
    """
    return port_class._fromListeningDescriptor(reactor, fd, *args)


def request_line(channel: Any) -> tuple[bytes | None, bytes | None, bytes | None]:
    """
    The method, request target and version of the request whose headers an C{HTTPChannel}
    has just parsed, while its body is still arriving.

    Needed to decide at C{gotLength} time, before a byte of the body is stored, which route
    the body is for (a layer streams into storage after its authorization). The channel
    keeps them until the body is complete; the Request gets them only then. Public
    replacement: none (a C{Request.gotLength} that is given the request line).
    """
    return (getattr(channel, "_command", None), getattr(channel, "_path", None),
            getattr(channel, "_version", None))


class BadRequestChannel(http.HTTPChannel):
    """
    An C{HTTPChannel} whose answer to a request it cannot parse (a malformed request line
    or header, C{Content-Length: abc}, bad chunking) is L{bad_request_answer}.

    Needed because twisted.web writes a bare C{400 Bad Request} from the private
    C{_respondToBadRequestAndDisconnect}, and clients of the registry expect a JSON body on
    every error; its private C{_maybeChooseTransferDecoder} lets a C{ValueError} escape for
    a C{Content-Length} of thousands of digits. Public replacement: none (a channel
    attribute for that answer).
    """

    def bad_request_answer(self, head: bool) -> bytes:
        """
        The bytes sent before the connection closes; twisted.web's own by default.

        @param head: whether the request was a HEAD (its answer has no body).
        """
        return b"HTTP/1.1 400 Bad Request\r\n\r\n"

    def _respondToBadRequestAndDisconnect(self, line: bytes = b"") -> None:
        method = getattr(self, "_command", None) or line.split(b" ", 1)[0]
        self.transport.write(self.bad_request_answer(method == b"HEAD"))
        self.loseConnection()

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        # twisted.web checks a Content-Length with isdigit() and then int(), which refuses
        # thousands of digits: the ValueError would escape the channel.
        try:
            return super()._maybeChooseTransferDecoder(header, data)
        except ValueError:
            self._respondToBadRequestAndDisconnect()
            self.length = None
            return False

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header over C{MAX_LENGTH}: answered, not dropped silently."""
        self._respondToBadRequestAndDisconnect(line)
