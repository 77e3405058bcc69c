# -*- test-case-name: tests.test_embedding -*-
"""
twistreg inside another Twisted application: the registry as a resource for the
application's own tree, or as a service for its own C{MultiService}.

Both read their configuration as C{twist twistreg} does (a 0.9.1 config file, a flavor, and
overrides keyed as the config keys: C{storage_path}, C{server.listen}, C{server.workers} ...)
and use the reactor they are given. Nothing here is global: each call builds its own storage,
HTTP client and search index, so registries over different storage do not meet, and importing
this module starts, listens on and logs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.web.resource import IResource

from twistreg.config import load_settings
from twistreg.service import build_registry, check_storage, make_service, start_registry
from twistreg.web.site import registry_resource as _resource

__all__ = ["registry_resource", "registry_service"]


def registry_resource(
    reactor,
    config: str | None = None,
    flavor: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> IResource:
    """
    The registry's routes as an C{IResource}, to put beside the application's own (docker
    clients want them at the root of a host and port: C{/v1/...}, C{/_ping}). Its background
    work (the stale upload sweep, filling a new search index) starts at once.

    Layer uploads stream straight into storage only under twistreg's own Site (see
    L{registry_service}); under another Site twisted.web buffers each body in a temporary
    file first, and it is copied into storage when complete. The C{server.*} keys do not apply.

    @param config: the config file; C{None} looks where C{twist twistreg} does
        (C{$DOCKER_REGISTRY_CONFIG}, C{/etc/twistreg/config.yml}, built-in defaults).
    @raise twistreg.config.ConfigError: the configuration cannot be used, or the storage
        cannot be written (one line).
    """
    settings = load_settings(config, flavor, overrides)
    check_storage(settings, reactor)
    registry = build_registry(settings, reactor)
    start_registry(registry, reactor)
    return _resource(registry)


def registry_service(
    reactor,
    config: str | None = None,
    flavor: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> IService:
    """
    The registry served on the endpoints of its configuration (C{server.listen} or
    C{server.port}), with its WSGI application if C{server.wsgi} names one: in this process
    when C{server.workers} is 0, else by a pool of that many worker processes (unset: one per
    CPU), which read the same configuration. Set it in the application's own C{MultiService}.

    Signal handling stays the application's: see
    L{twistreg.server.signals.install_master_signals} for the pool's (HUP, TTIN, ...).

    @raise twistreg.config.ConfigError: the configuration cannot be used, or the storage
        cannot be written (one line).
    """
    return make_service(load_settings(config, flavor, overrides), reactor, overrides=overrides)
