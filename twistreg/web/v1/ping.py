# -*- test-case-name: tests.test_routes_images -*-
"""R1 and R2: the ping docker uses to find a V1 registry, and the banner at C{/}."""

from __future__ import annotations

import platform
import sys
from typing import Any

from twistreg.config import Settings
from twistreg.web import responses
from twistreg.web.v1.routes import Policy, RouteCall, RouteTable


def _debug_body() -> dict[str, Any]:
    """R1's debug body: the host, the command line and the loaded modules' versions."""
    versions = {
        name: module.__version__
        for name, module in list(sys.modules.items())
        if not name.startswith("_") and isinstance(getattr(module, "__version__", None), str)
    }
    versions["python"] = sys.version
    return {"host": list(platform.uname()), "launch": sys.argv, "versions": versions}


def _standalone_header(settings: Settings) -> bytes:
    if settings.mirroring_source:
        return b"mirror"
    return b"True" if settings.standalone else b"False"


def add_ping_routes(v1: RouteTable) -> None:
    """R1, R2: open to everyone."""
    settings = v1.registry.settings

    @v1.route(("/v1/_ping", "/_ping"), "GET", Policy(None))
    def ping(call: RouteCall) -> bytes:
        call.request.setHeader(b"X-Docker-Registry-Standalone", _standalone_header(settings))
        if not settings.debug:
            return responses.json_body(call.request, {})
        call.request.setHeader(b"X-Docker-Registry-Config", settings.flavor.encode())
        return responses.json_body(call.request, _debug_body())

    @v1.route("/", "GET", Policy(None))
    def banner(call: RouteCall) -> bytes:
        return responses.json_body(call.request, settings.issue if settings.issue else True)
