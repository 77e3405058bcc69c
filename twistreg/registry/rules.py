# -*- test-case-name: tests.test_routes_images,tests.test_routes_repositories -*-
"""
One registry's rules over one storage, gathered for the web layer that serves them.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from twistreg.bridge.tagspace import TagSpace
from twistreg.bridge.v1_to_v2 import V1View
from twistreg.bridge.v2_to_v1 import V2View
from twistreg.config import Settings
from twistreg.oci.repositories import Repositories
from twistreg.oci.uploads import Uploads
from twistreg.registry.auth import Authorizer
from twistreg.registry.images import Images
from twistreg.registry.index import Index
from twistreg.registry.mirror import Mirror
from twistreg.registry.search import SearchIndex
from twistreg.registry.tags import Tags
from twistreg.storage.interface import IStorage


@attrs.frozen
class Registry:
    """
    What the routes serve: the settings and the registry's rules over one storage.

    @ivar mirror: the upstream registry, in mirror mode.
    @ivar search: the search index, when search is on.
    @ivar repositories: the V2 repositories, when the V2 API is on.
    @ivar uploads: the V2 upload sessions, when the V2 API is on.
    @ivar tag_space: one tag namespace for both protocols, when the V2 API is on.
    @ivar v1_view: V1 tags served to V2 clients, when the V2 API is on.
    @ivar v2_view: V2 tags served to V1 clients, when the V2 API is on.
    @ivar redis: the Redis clients of C{cache_lru} and C{cache}, those configured (what
        C{/_health} asks).
    """

    settings: Settings
    storage: IStorage
    auth: Authorizer
    images: Images
    tags: Tags
    index: Index
    clock: IReactorTime
    mirror: Mirror | None = None
    search: SearchIndex | None = None
    repositories: Repositories | None = None
    uploads: Uploads | None = None
    tag_space: TagSpace | None = None
    v1_view: V1View | None = None
    v2_view: V2View | None = None
    redis: tuple[Any, ...] = ()
