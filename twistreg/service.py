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
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from twistreg.config import Settings, require_supported_storage
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

    def startService(self) -> defer.Deferred:
        """
        Listen on every endpoint, then sweep what crashed uploads left behind.

        @return: a Deferred that fails when an endpoint cannot listen.
        """
        super().startService()
        listening = [
            serverFromString(self._reactor, description).listen(self.site)
            for description in self.settings.server.endpoints()
        ]
        self._sweep()
        return defer.gatherResults(listening, consumeErrors=True).addCallback(self._listening)

    def _listening(self, ports: list[IListeningPort]) -> None:
        self.ports = ports
        for port in ports:
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
        super().stopService()
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


def describe_address(address) -> str:
    """C{host:port} for IP addresses, the path for UNIX sockets."""
    host = getattr(address, "host", None)
    if host is not None:
        return f"{host}:{address.port}"
    return str(getattr(address, "name", address))
