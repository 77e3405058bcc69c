# -*- test-case-name: tests.test_index -*-
"""
The index emulation of a standalone registry: image lists and tokens (R22–R24).

docker 1.x talks to an index before and after a push; a standalone registry answers those
calls itself.  Nothing about users is stored anywhere.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

from twistreg.errors import RegistryError
from twistreg.layout import Repository, index_images_key
from twistreg.registry.documents import parse_json
from twistreg.registry.search import SearchIndex
from twistreg.storage.interface import IStorage, KeyNotFound

_SIGNATURE_ALPHABET = string.ascii_uppercase + string.digits


def make_token(repository: Repository, access: str) -> str:
    """An C{X-Docker-Token} value; standalone mode never checks it, docker only echoes it."""
    signature = "".join(secrets.choice(_SIGNATURE_ALPHABET) for _ in range(16))
    return f'Token signature={signature},repository="{repository.key}",access={access}'


def _parse_image_list(body: bytes) -> list[dict[str, Any]]:
    """R22 steps 3–5: a JSON list of objects, each with a string C{id}."""
    try:
        images = parse_json(body)
    except ValueError:
        raise RegistryError(400, "Error Decoding JSON") from None
    if not isinstance(images, list) or not all(
        isinstance(image, dict) and isinstance(image.get("id"), str) for image in images
    ):
        raise RegistryError(400, "Invalid data")
    return images


def merge_image_lists(
    new: list[dict[str, Any]], stored: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """
    Fold the new list then the stored one by id: an entry replaces the one kept so far
    unless that one has a checksum.  Only C{id} and C{checksum} are kept, in order of first
    appearance.
    """
    kept: dict[str, dict[str, Any]] = {}
    for image in new + stored:
        image_id = image.get("id")
        if not isinstance(image_id, str):
            continue
        if image_id in kept and "checksum" in kept[image_id]:
            continue
        kept[image_id] = {k: image[k] for k in ("id", "checksum") if k in image}
    return list(kept.values())


class Index:
    """
    The index routes' rules over one storage.

    @param search: the search index pushes register repositories in, if search is on.
    """

    def __init__(self, storage: IStorage, search: SearchIndex | None = None) -> None:
        self._storage = storage
        self._search = search

    async def put_images(self, repository: Repository, body: bytes) -> None:
        """R22: record the images of a push; the first list is stored verbatim."""
        images = _parse_image_list(body)
        key = index_images_key(repository)
        try:
            stored = parse_json(await self._storage.get_content(key))
        except KeyNotFound:
            await self._storage.put_content(key, body)
            if self._search is not None:
                await self._search.register(repository.key)
            return
        except ValueError:
            stored = []
        if not isinstance(stored, list):
            stored = []
        merged = merge_image_lists(images, [i for i in stored if isinstance(i, dict)])
        await self._storage.put_content(key, json.dumps(merged, sort_keys=True).encode())
        if self._search is not None:
            await self._search.set_pushed(repository.key)

    async def get_images(self, repository: Repository, bridged: list[str] = ()) -> bytes | None:
        """
        R23: the stored list, raw; None when there is none.

        @param bridged: the ids of images pushed with V2 to the repository, listed after
            the stored ones (the list is then rewritten, as R22 does).
        """
        try:
            stored = await self._storage.get_content(index_images_key(repository))
        except KeyNotFound:
            stored = None
        if not bridged:
            return stored
        try:
            images = [] if stored is None else _parse_image_list(stored)
        except RegistryError:
            images = []  # unreadable: what V2 pushed is still listed
        return json.dumps(merge_image_lists(images, [{"id": i} for i in bridged])).encode()
