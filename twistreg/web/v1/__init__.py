# -*- test-case-name: tests.test_policies -*-
"""
The V1 API, one module per route family: images, repositories (tags), the emulated index,
search, and ping; each route declares its policy (L{twistreg.web.v1.routes.Policy}).
"""

from __future__ import annotations

from twistreg.registry.rules import Registry
from twistreg.web.v1.images import add_image_routes
from twistreg.web.v1.index import add_index_routes
from twistreg.web.v1.ping import add_ping_routes
from twistreg.web.v1.repositories import add_repository_routes
from twistreg.web.v1.routes import RouteTable
from twistreg.web.v1.search import add_search_routes

__all__ = ["build_routes"]


def build_routes(registry: Registry) -> RouteTable:
    """
    Every V1 route of C{registry}, in the matching order of docs/api.md; the index
    routes exist in standalone mode only, search when it is on.
    """
    v1 = RouteTable(registry)
    for add_family in (add_ping_routes, add_image_routes, add_repository_routes,
                       add_index_routes, add_search_routes):
        add_family(v1)
    return v1
