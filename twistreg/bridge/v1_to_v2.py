# -*- test-case-name: tests.test_bridge_v1_to_v2 -*-
"""
V1 images pulled over V2: for a V1 tag, a manifest and an image config made from the V1
ancestry, whose layer blobs are the V1 layer files themselves (never copied: a small file
under L{layout.bridged_blob_key} names the V1 image whose layer a blob is).

The manifest is built once per V1 image and stored as any V2 manifest (its bytes, its
revision link), so that later pulls get the same bytes and a pull by digest finds it; the
V1 tag is read on every request, so a tag moved or deleted with V1 is moved or deleted in
the V2 view at once.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from twisted.internet.interfaces import IReactorThreads

from twistreg import layout
from twistreg.checksums import GZIP_LAYER, LayerFacts
from twistreg.errors import RegistryError
from twistreg.oci.errors import ManifestUnknown
from twistreg.oci.manifests import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_GZIP_LAYER,
    OCI_MANIFEST,
    Manifest,
)
from twistreg.oci.names import Digest, is_tag, parse_digest
from twistreg.oci.repositories import Repositories
from twistreg.registry.documents import parse_json
from twistreg.registry.layerfacts import fill_layer_facts, read_layer_facts
from twistreg.registry.tags import Tags
from twistreg.storage.interface import IStorage, KeyNotFound

#: What a V1 image json holds that an image config does not (docker drops the same).
_V1_ONLY = ("id", "parent", "Size", "parent_id", "layer_id", "throwaway", "checksum")


def v2_image(images: list[tuple[dict[str, Any], LayerFacts]]) -> tuple[bytes, bytes]:
    """
    The image config and manifest of a V1 image, given its ancestry base first: each
    image's json and its layer's facts.  Deterministic: the same images give the same bytes.

    A Docker schema2 manifest when every layer is gzip, else an OCI one (schema2 has no plain
    tar type that every client takes); empty layers are history entries only.
    """
    top = images[-1][0]
    history = []
    diff_ids = []
    layers = []
    for document, facts in images:
        container = document.get("container_config")
        command = container.get("Cmd") if isinstance(container, dict) else None
        entry: dict[str, Any] = {"created": document.get("created", "1970-01-01T00:00:00Z")}
        if isinstance(command, list):
            entry["created_by"] = " ".join(str(part) for part in command)
        if facts.empty:
            entry["empty_layer"] = True
        else:
            diff_ids.append(facts.diff_id)
            layers.append(facts)
        history.append(entry)
    docker = all(facts.media_type == GZIP_LAYER for facts in layers)
    config = {key: value for key, value in top.items() if key not in _V1_ONLY}
    config.setdefault("architecture", "amd64")
    config.setdefault("os", "linux")
    config["history"] = history
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                   "size": len(config_bytes), "digest": str(Digest.of(config_bytes))},
        "layers": [{"mediaType": facts.media_type if docker or facts.media_type != GZIP_LAYER
                    else OCI_GZIP_LAYER, "size": facts.size, "digest": facts.digest}
                   for facts in layers],
    }
    return config_bytes, json.dumps(manifest, sort_keys=True, indent=3).encode()


class V1View:
    """The V2 view of the V1 tags of one storage."""

    def __init__(self, storage: IStorage, reactor: IReactorThreads, tags: Tags,
                 repositories: Repositories) -> None:
        self._storage = storage
        self._reactor = reactor
        self._tags = tags
        self._repositories = repositories

    async def manifest(self, name: str, tag: str) -> tuple[bytes, Manifest] | None:
        """
        The manifest of the V1 tag C{tag} of repository C{name} (a one-part name is
        C{library/<name>} in V1); None when V1 has no such tag.

        @raise ManifestUnknown: the V1 image cannot be served over V2 (a layer in bzip2 or
            xz, not a tar, or missing; an image still being pushed).
        """
        try:
            repository = layout.parse_repository(name)
        except RegistryError:
            return None
        image_id = await self._tags.get_tag(repository, tag)
        if image_id is None or not layout.is_image_id(image_id):
            return None
        made = await self._made(name, image_id)
        if made is not None:
            return made
        ancestry = await self._ancestry(image_id)
        config, body = v2_image([(document, facts) for _, document, facts in ancestry])
        config_digest = Digest.of(config)
        if not await self._storage.exists(layout.blob_data_key(config_digest)):
            await self._storage.put_content(layout.blob_data_key(config_digest), config)
        await self._repositories.link_blob(name, config_digest)
        for ancestor, _, facts in ancestry:
            if not facts.empty:
                await self._link_layer(name, parse_digest(facts.digest), ancestor)
        manifest = await self._repositories.put_manifest(name, Digest.of(body), body, None)
        await self._storage.put_content(layout.bridged_manifest_key(image_id),
                                        str(manifest.digest).encode())
        return body, manifest

    async def tags(self, name: str) -> list[str] | None:
        """
        The V1 tags of repository C{name} that are V2 tags too (V1 took any name); None when
        V1 has no such repository.
        """
        try:
            repository = layout.parse_repository(name)
        except RegistryError:
            return None
        tags = await self._tags.list_tags(repository)
        return None if tags is None else sorted(tag for tag in tags if is_tag(tag))

    async def _made(self, name: str, image_id: str) -> tuple[bytes, Manifest] | None:
        """The manifest made before for this V1 image, when repository C{name} has it."""
        try:
            stored = await self._storage.get_content(layout.bridged_manifest_key(image_id))
            digest = parse_digest(stored.decode("ascii"))
        except (KeyNotFound, UnicodeDecodeError, RegistryError):
            return None
        try:
            return await self._repositories.get_manifest(name, digest)
        except RegistryError:
            return None  # made for another repository: linked into this one now

    async def _link_layer(self, name: str, digest: Digest, image_id: str) -> None:
        """
        Make the layer of V1 image C{image_id} a blob of C{name} without copying it (unless
        the blob is stored already, pushed over V2 or bridged before).
        """
        await self._repositories.link_blob(name, digest)
        if await self._repositories.blob_size(name, digest) is None:
            await self._storage.put_content(layout.bridged_blob_key(digest), image_id.encode())

    async def _ancestry(self, image_id: str) -> list[tuple[str, dict[str, Any], LayerFacts]]:
        """Each image of the ancestry, base first: its id, its json, its layer's facts."""
        try:
            ancestry = parse_json(await self._storage.get_content(
                layout.image_ancestry_key(image_id)))
        except (KeyNotFound, ValueError):
            ancestry = None
        if not (isinstance(ancestry, list) and ancestry
                and all(isinstance(a, str) and layout.is_image_id(a) for a in ancestry)):
            raise ManifestUnknown(f"V1 image {image_id} has no readable ancestry")
        images = []
        for ancestor in reversed(ancestry):
            try:
                document = parse_json(await self._storage.get_content(
                    layout.image_json_key(ancestor)))
            except (KeyNotFound, ValueError):
                document = None
            if not isinstance(document, dict):
                raise ManifestUnknown(f"V1 image {ancestor} has no readable json")
            facts = await read_layer_facts(self._storage, ancestor)
            if facts is None:
                # Not computed yet (a push just completed, or a tree from before): now.
                _, facts = await fill_layer_facts(self._storage, self._reactor, ancestor,
                                                  threading.Event())
            if facts is None:
                raise ManifestUnknown(f"V1 image {ancestor} has no layer, or is being pushed")
            if not facts.bridgeable:
                raise ManifestUnknown(
                    f"the layer of V1 image {ancestor} cannot be served to V2 clients:"
                    f" {facts.problem}")
            images.append((ancestor, document, facts))
        return images
