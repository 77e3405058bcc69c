# -*- test-case-name: tests.test_service -*-
"""
The services that serve a registry: what the plugin, the system service and embedding
applications start.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistreg.config import ConfigError, Settings, require_supported_storage
from twistreg.registry.images import Images
from twistreg.registry.index import Index
from twistreg.registry.tags import Tags
from twistreg.storage import open_storage
from twistreg.storage.local import LocalStorage
from twistreg.web.app import Registry
from twistreg.web.site import RegistrySite

log = Logger()


def build_registry(settings: Settings, reactor) -> Registry:
    """
    The registry's rules over the storage C{settings} name: no global state, so two
    registries in one process do not meet.

    @raise ConfigError: the settings name a storage driver that cannot be used.
    """
    require_supported_storage(settings)
    storage = open_storage(settings)
    return Registry(
        settings=settings,
        storage=storage,
        images=Images(storage, reactor),
        tags=Tags(storage, reactor),
        index=Index(storage),
        clock=reactor,
    )


def open_access_log(target: str | None) -> IO[str] | None:
    """The access log stream: C{-} is stdout, a path is appended to, None is no log."""
    if target is None:
        return None
    if target == "-":
        return sys.stdout
    return open(target, "a", buffering=1, encoding="utf-8")


class RegistryService(service.Service):
    """
    Serves the registry in this process on every endpoint of the settings.

    @param reactor: the reactor to listen with (an embedding application's own).
    @ivar ports: the listening ports, once started.
    """

    def __init__(self, settings: Settings, reactor) -> None:
        self.settings = settings
        self._reactor = reactor
        self.registry = build_registry(settings, reactor)
        self.site = RegistrySite(
            self.registry, open_access_log(settings.server.access_log), reactor=reactor
        )
        self.ports: list[IListeningPort] = []
        self._endpoints = [parse_endpoint(reactor, d) for d in settings.server.endpoints()]

    def startService(self) -> None:
        """
        Listen on every endpoint, then sweep what crashed uploads left behind.

        @raise Exception: why an endpoint cannot listen (TCP, UNIX and TLS endpoints listen
            at once, so this is raised here and no port stays open).
        """
        super().startService()
        failures: list[Failure] = []
        for endpoint in self._endpoints:
            endpoint.listen(self.site).addCallbacks(self._listening, failures.append)
        if failures:
            self.stopService()
            failures[0].raiseException()
        self._sweep()

    def _listening(self, port: IListeningPort) -> None:
        self.ports.append(port)
        log.info(
            "twistreg serving {storage} storage {path} on {address}",
            storage=self.settings.storage,
            path=self.settings.storage_path,
            address=describe_address(port.getHost()),
        )

    def _sweep(self) -> None:
        storage = self.registry.storage
        if not isinstance(storage, LocalStorage):
            return
        threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), storage.sweep_temporary
        ).addCallbacks(
            lambda count: count and log.info("removed {count} stale temporary files", count=count),
            lambda failure: log.failure("sweeping temporary files failed", failure),
        )

    def stopService(self) -> defer.Deferred:
        """Stop listening; in-flight requests are left to finish."""
        if self.running:
            super().stopService()
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def parse_endpoint(reactor, description: str) -> IStreamServerEndpoint:
    """A server endpoint from its string, or the one-line configuration error."""
    try:
        return serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"invalid listen endpoint {description!r}: {error}") from None


def describe_address(address) -> str:
    """C{host:port} for IP addresses, the path for UNIX sockets."""
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{address.port}"
    name = getattr(address, "name", address)
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
