# -*- test-case-name: tests.test_routes_images,tests.test_routes_repositories -*-
"""
One registry's rules over one storage, gathered for the web layer that serves them.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime

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
