# -*- test-case-name: tests.test_arbiter,tests.test_pool -*-
"""
Listening sockets shared by a master and its workers.

The master turns each endpoint string into a bound, listening socket of its own (it never
accepts on it); each worker adopts the inherited descriptor with a port that takes one
connection per wake-up, so that a burst is spread over the workers instead of being swallowed
by whichever woke first (DESIGN.md decision 6).
"""

from __future__ import annotations

import os
import socket
import stat

import attrs
from twisted.internet import abstract, tcp, unix
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.lockfile import FilesystemLock

from twistreg import compat
from twistreg.server.scoreboard import AcceptBalancer

DEFAULT_BACKLOG = 2048
"""gunicorn's backlog; Twisted's endpoints default to 50, too short for a pool."""

FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}
_FAMILY_NAMES = {number: name for name, number in FAMILIES.items()}


class UnsupportedListener(ValueError):
    """An endpoint workers cannot adopt (tcp, tcp6, ssl, unix and systemd can be shared)."""


@attrs.frozen
class ListenSpec:
    """
    What a listening socket is, parsed from an endpoint string by Twisted's own parser.

    @ivar description: the endpoint string, kept so a worker can build the TLS context from it.
    @ivar kind: C{"tcp"}, C{"ssl"} (TCP, with TLS added by the worker) or C{"unix"}.
    @ivar family: C{"INET"}, C{"INET6"} or C{"UNIX"}.
    @ivar host: the interface for TCP (C{""} is every IPv4 interface).
    @ivar path: the socket file for UNIX.
    @ivar inherited_fd: a socket this process inherited already listening (systemd socket
        activation): the master hands it on instead of binding one.
    """

    description: str
    kind: str
    family: str
    backlog: int
    host: str = ""
    port: int = 0
    path: str = ""
    mode: int = 0o666
    lockfile: bool = False
    inherited_fd: int | None = None


def parse_listen(reactor, description: str) -> ListenSpec:
    """
    Parse an endpoint string the way C{serverFromString} does, without listening.

    @raise ValueError: the string is malformed (Twisted's message), or names an endpoint
        that cannot be shared with workers (L{UnsupportedListener}).
    """
    try:
        endpoint = serverFromString(reactor, description)
    except (KeyError, TypeError, IndexError) as error:
        # Twisted's parsers report some malformed strings with these (systemd: an index
        # that was not passed is an IndexError).
        raise ValueError(f"{description!r}: {str(error) or type(error).__name__}") from None
    except ValueError as error:
        raise ValueError(f"{description!r}: {error}") from None
    given = compat.endpoint_keywords(description).get("backlog")
    if isinstance(endpoint, UNIXServerEndpoint):
        path, mode, lockfile = compat.unix_endpoint_parameters(endpoint)
        return ListenSpec(
            description=description,
            kind="unix",
            family="UNIX",
            backlog=int(given) if given else DEFAULT_BACKLOG,
            path=os.fsdecode(path),
            mode=mode,
            lockfile=lockfile,
        )
    if isinstance(endpoint, AdoptedStreamServerEndpoint):
        family = _FAMILY_NAMES.get(endpoint.addressFamily)
        if family is not None:
            return ListenSpec(
                description=description,
                kind="unix" if family == "UNIX" else "tcp",
                family=family,
                backlog=0,
                inherited_fd=endpoint.fileno,
            )
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        interface, port = compat.tcp_endpoint_parameters(endpoint)
        # As tcp.Port does: an IPv6 interface makes an IPv6 socket, whatever the prefix.
        ipv6 = isinstance(endpoint, TCP6ServerEndpoint) or abstract.isIPv6Address(interface)
        return ListenSpec(
            description=description,
            kind="ssl" if isinstance(endpoint, SSL4ServerEndpoint) else "tcp",
            family="INET6" if ipv6 else "INET",
            backlog=int(given) if given else DEFAULT_BACKLOG,
            host=interface,
            port=port,
        )
    raise UnsupportedListener(
        f"{description!r} cannot be shared with worker processes"
        " (use tcp:, tcp6:, ssl:, unix: or systemd:, or --workers 0)"
    )


class ListeningSocket:
    """A socket the master bound and listens on, never to accept on."""

    def __init__(self, spec: ListenSpec, sock: socket.socket, lock: FilesystemLock | None):
        self.spec = spec
        self.socket = sock
        self._lock = lock

    def fileno(self) -> int:
        return self.socket.fileno()

    def address(self) -> str:
        """C{host:port} with the real port, or the UNIX socket's path."""
        name = self.socket.getsockname()
        if self.spec.kind == "unix":
            return self.spec.path or os.fsdecode(name)
        return f"{name[0]}:{name[1]}"

    def close(self) -> None:
        """
        Close the socket; a UNIX socket's file goes too (workers hold no claim on it), unless
        it was inherited (systemd keeps it).
        """
        if self.socket.fileno() == -1:
            return
        self.socket.close()
        if self.spec.kind == "unix" and self.spec.inherited_fd is None:
            try:
                os.unlink(self.spec.path)
            except FileNotFoundError:
                pass
            if self._lock is not None:
                self._lock.unlock()


def bind(spec: ListenSpec) -> ListeningSocket:
    """
    Create, bind and listen, with the backlog of the spec; non-blocking for the workers.

    @raise CannotListenError: the address cannot be bound (in use, no permission, ...).
    """
    family = FAMILIES[spec.family]
    if spec.inherited_fd is not None:
        sock = socket.socket(family, socket.SOCK_STREAM, fileno=os.dup(spec.inherited_fd))
        sock.setblocking(False)
        return ListeningSocket(spec, sock, None)
    sock = socket.socket(family, socket.SOCK_STREAM)
    lock = None
    try:
        if spec.kind == "unix":
            lock = _claim_unix_path(spec)
            sock.bind(spec.path)
            os.chmod(spec.path, spec.mode)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(_socket_address(family, spec.host, spec.port))
        sock.listen(spec.backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if lock is not None:
            lock.unlock()
        where = spec.path if spec.kind == "unix" else spec.host
        raise CannotListenError(where, spec.port, error) from None
    return ListeningSocket(spec, sock, lock)


def _socket_address(family: int, host: str, port: int):
    if family == socket.AF_INET6:
        # Scope ids ("fe80::1%eth0") need getaddrinfo, as tcp.Port does.
        return socket.getaddrinfo(host or "::", port, family, 0, 0, socket.AI_NUMERICHOST)[0][4]
    return (host, port)


def _claim_unix_path(spec: ListenSpec) -> FilesystemLock | None:
    """With C{lockfile=1}, take the lock and remove a stale socket file, as unix.Port does."""
    if not spec.lockfile:
        return None
    lock = FilesystemLock(spec.path + ".lock")
    if not lock.lock():
        raise OSError(f"cannot acquire lock {spec.path}.lock")
    if not lock.clean:
        try:
            if stat.S_ISSOCK(os.stat(spec.path).st_mode):
                os.remove(spec.path)
        except OSError:
            pass
    return lock


# -- the worker's side ---------------------------------------------------------------------------


class _OneAcceptAtATime:
    """
    Accept at most C{accepts_per_wakeup} connections each time the socket is readable, and
    none while the C{balancer} says a less busy worker should take it.

    tcp.Port grows its batch from 100 under load, which lets one worker of a pool take a
    whole burst while the others sleep; the kernel wakes every worker, so a small batch
    spreads the connections, and the balancer gives a peer still being scheduled its turn.
    """

    accepts_per_wakeup = 1
    balancer: AcceptBalancer | None = None
    _deferred = None

    def doRead(self):
        if self.balancer is not None and self.balancer.should_defer():
            self.stopReading()
            self._deferred = self.reactor.callLater(self.balancer.delay, self._resume)
            return None
        if self.accepts_per_wakeup:
            self.numberAccepts = self.accepts_per_wakeup
        return super().doRead()

    def _resume(self) -> None:
        self._deferred = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def loseConnection(self, *args, **kwargs):
        if self._deferred is not None and self._deferred.active():
            self._deferred.cancel()
        return super().loseConnection(*args, **kwargs)

    stopListening = loseConnection


class _AdoptedTCPPort(_OneAcceptAtATime, tcp.Port):
    pass


class _AdoptedUNIXPort(_OneAcceptAtATime, unix.Port):
    def connectionLost(self, reason):
        # unix.Port unlinks its socket file when it stops listening; in a pool the file is the
        # master's, and the other workers still serve it.
        tcp.Port.connectionLost(self, reason)


def adopt(
    reactor,
    fd: int,
    spec,
    factory: IProtocolFactory,
    accepts_per_wakeup: int = 1,
    balancer: AcceptBalancer | None = None,
) -> IListeningPort:
    """
    Listen on an inherited socket: TLS is added here for C{ssl} endpoints, and the
    descriptor is closed once the port holds its own duplicate.

    @param spec: what the socket is: anything with the C{kind}, C{family} and C{description}
        of a L{ListenSpec}.
    @param accepts_per_wakeup: the accept batch (see L{_OneAcceptAtATime}); 0 keeps Twisted's.
    @param balancer: consulted before each accept (see L{twistreg.server.scoreboard}).
    """
    os.set_blocking(fd, False)
    if spec.kind == "ssl":
        factory = TLSMemoryBIOFactory(tls_context(reactor, spec.description), False, factory)
    if spec.kind == "unix":
        port = compat.port_from_listening_descriptor(_AdoptedUNIXPort, reactor, fd, factory)
    else:
        port = compat.port_from_listening_descriptor(_AdoptedTCPPort, reactor, fd,
                                                     FAMILIES[spec.family], factory)
    port.accepts_per_wakeup = accepts_per_wakeup
    port.balancer = balancer
    port.startListening()
    os.close(fd)
    return port


def tls_context(reactor, description: str):
    """The server TLS context an C{ssl:} endpoint string describes (certificates read now)."""
    return compat.ssl_context_factory(serverFromString(reactor, description))
