# -*- test-case-name: tests.test_gc -*-
"""
What V1 keeps: every image in the ancestry of a tag, and every image a repository's image
list (C{_index_images}) names, since a docker 1.x push writes that list before its images.
"""

from __future__ import annotations

from twistreg import layout
from twistreg.registry.documents import parse_json
from twistreg.storage.interface import IStorage, KeyNotFound
from twistreg.walking import Pace

_INDEX_IMAGES = "_index_images"


async def repository_directories(storage: IStorage) -> list[str]:
    """Every C{repositories/<ns>/<repo>} directory."""
    found = []
    for namespace in await storage.list_directory(layout.REPOSITORIES):
        directory = f"{layout.REPOSITORIES}/{namespace}"
        found.extend(f"{directory}/{name}" for name in await storage.list_directory(directory))
    return found


async def _read(storage: IStorage, key: str) -> bytes | None:
    try:
        return await storage.get_content(key)
    except KeyNotFound:
        return None


async def _roots_of(storage: IStorage, directory: str) -> tuple[set[str], set[str]]:
    """The image ids the tags of one repository name, and those its image list names."""
    tagged: set[str] = set()
    listed: set[str] = set()
    for entry in await storage.list_directory(directory):
        if layout.tag_of_entry(entry) is not None:
            content = await _read(storage, f"{directory}/{entry}")
            # Metadata files (tag<x>_json, 0.9.1's tag_<x>_json) are JSON objects.
            if content is not None and not content.startswith(b"{"):
                text = content.decode("ascii", "replace").strip()
                if layout.is_image_id(text):
                    tagged.add(text)
        elif entry == _INDEX_IMAGES:
            try:
                images = parse_json(await _read(storage, f"{directory}/{entry}") or b"[]")
            except ValueError:
                continue
            if isinstance(images, list):
                listed.update(image["id"] for image in images
                              if isinstance(image, dict) and layout.is_image_id(image.get("id")))
    return tagged, listed


class V1Marker:
    """
    Reads the V1 roots and follows ancestries; an image's ancestry is read once per
    collection (it cannot change once the image is complete).
    """

    def __init__(self, storage: IStorage, pace: Pace) -> None:
        self._storage = storage
        self._pace = pace
        self._ancestries: dict[str, tuple[str, ...]] = {}

    async def _ancestry(self, image_id: str) -> tuple[str, ...]:
        known = self._ancestries.get(image_id)
        if known is not None:
            return known
        try:
            ancestry = parse_json(await _read(
                self._storage, layout.image_ancestry_key(image_id)) or b"null")
        except ValueError:
            ancestry = None
        found = (image_id,)
        if isinstance(ancestry, list):
            found += tuple(a for a in ancestry if layout.is_image_id(a) and a != image_id)
        self._ancestries[image_id] = found
        return found

    async def kept(self, progress=None) -> set[str]:
        """
        The ids of every image a tag or image list reaches, read now.

        @param progress: told of each repository read.
        """
        directories = await repository_directories(self._storage)
        if progress is not None:
            progress.phase("V1 repositories", len(directories))

        async def read(directory: str) -> tuple[set[str], set[str]]:
            roots = await _roots_of(self._storage, directory)
            if progress is not None:
                progress.advance()
            return roots

        kept: set[str] = set()
        tagged: set[str] = set()
        for tags, listed in await self._pace.each(read, directories):
            kept |= listed
            tagged |= tags
        for ancestry in await self._pace.each(self._ancestry, sorted(tagged)):
            kept.update(ancestry)
        return kept


async def image_ids(storage: IStorage) -> list[str]:
    """The ids of the images stored."""
    return [entry for entry in await storage.list_directory(layout.IMAGES)
            if layout.is_image_id(entry)]


async def image_state(storage: IStorage, image_id: str) -> tuple[float | None, int]:
    """
    When anything of an image was last written (its newest file: a push in progress writes
    its json, then its layer, then its checksum), and the bytes its files hold; None when it
    has no file.
    """
    directory = f"{layout.IMAGES}/{image_id}"
    newest: float | None = None
    size = 0
    for entry in await storage.list_directory(directory):
        key = f"{directory}/{entry}"
        try:
            modified = await storage.modified(key)
            size += await storage.size(key)
        except KeyNotFound:
            continue
        newest = modified if newest is None else max(newest, modified)
    return newest, size
