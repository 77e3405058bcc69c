# -*- test-case-name: tests.test_v2_routes,tests.test_policies -*-
"""
The V2 API (the OCI Distribution Specification), one module per route family: the base
endpoint and catalog, blobs and their uploads, manifests with tags and referrers; each route
declares its policy (L{twistreg.web.v2.routes.Policy}).
"""

from __future__ import annotations

from twistreg.registry.rules import Registry
from twistreg.web.v2.base import add_base_routes
from twistreg.web.v2.blobs import add_blob_routes
from twistreg.web.v2.manifests import add_manifest_routes
from twistreg.web.v2.routes import V2Routes

__all__ = ["build_v2_routes"]


def build_v2_routes(registry: Registry) -> V2Routes:
    """Every V2 route of C{registry}."""
    v2 = V2Routes(registry)
    for add_family in (add_base_routes, add_blob_routes, add_manifest_routes):
        add_family(v2)
    return v2
