# -*- test-case-name: tests.test_bridge_tagspace -*-
"""
One tag namespace per repository for both protocols: before a push through one protocol
writes a tag, the tag of that name is taken out of the other protocol's tree, so the latest
push wins in both views. Nothing else of the other's is touched: its images, manifests and
blobs stay, served by digest or by id.

Taking out before writing means two pushes of one tag through both protocols at the same
moment can leave both tags, never neither; each view then serves its own protocol's.
"""

from __future__ import annotations

from twistreg import layout
from twistreg.errors import RegistryError
from twistreg.layout import Repository
from twistreg.oci.names import is_name, is_tag
from twistreg.registry.tags import remove_tag
from twistreg.storage.interface import IStorage


def v1_repository(name: str) -> Repository | None:
    """The V1 repository of a V2 name (a one-part name is C{library/<name>} in V1)."""
    try:
        return layout.parse_repository(name)
    except RegistryError:
        return None


def v2_names(repository: Repository) -> tuple[str, ...]:
    """
    The V2 names of a V1 repository, the first preferred: C{library/x} is also plain C{x},
    as V2 clients push it.
    """
    names = [repository.key]
    if repository.namespace == "library":
        names.append(repository.name)
    return tuple(name for name in names if is_name(name))


class TagSpace:
    """Takes a tag out of one protocol's tree: before the other writes it, or deletes it."""

    def __init__(self, storage: IStorage) -> None:
        self._storage = storage

    async def take_from_v2(self, repository: Repository, tag: str) -> bool:
        """Remove the V2 tags C{tag} of a V1 repository; whether there were any."""
        found = False
        for name in v2_names(repository):
            found = await self.take_from_v2_name(name, tag) or found
        return found

    async def take_all_from_v2(self, repository: Repository) -> bool:
        """Remove every V2 tag of a V1 repository (R15 deletes it); whether there were any."""
        found = False
        for name in v2_names(repository):
            for tag in await self._storage.list_directory(layout.v2_tags_key(name)):
                found = await self.take_from_v2_name(name, tag) or found
        return found

    async def take_from_v2_name(self, name: str, tag: str) -> bool:
        """Remove the V2 tag C{tag} of repository C{name}; whether there was one."""
        if not is_tag(tag) or not await self._storage.exists(
                layout.v2_tag_current_key(name, tag)):
            return False
        await self._storage.remove_tree(layout.v2_tag_key(name, tag))
        return True

    async def take_from_v1(self, name: str, tag: str) -> bool:
        """Remove the V1 tag C{tag} of a V2 repository; whether there was one."""
        repository = v1_repository(name)
        if repository is None or not await self._storage.exists(
                layout.tag_key(repository, tag)):
            return False
        await remove_tag(self._storage, repository, tag)
        return True
