# -*- test-case-name: tests.test_bridge_v2_to_v1 -*-
"""
V2 images pulled over V1: for a V2 tag, one V1 image per layer, whose ids are derived from
the chain of layers (as docker derived V1 ids from a V2 image), whose json carries the image
config's fields, and whose layer is the V2 blob itself.

What a V1 image is made of is kept once, under L{layout.bridged_image_key}, since the V1
image routes name an image by its id alone; the V2 tag is read on every request, so a tag
moved or deleted with V2 is moved or deleted in the V1 view at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger

from twistreg import layout
from twistreg.bridge.tagspace import v2_names
from twistreg.checksums import GZIP_LAYER, TAR_LAYER, PayloadHasher
from twistreg.errors import RegistryError
from twistreg.layout import Repository
from twistreg.lru import BoundedLRU
from twistreg.oci.manifests import (
    DOCKER_CONFIG,
    INDEXES,
    MANIFEST_LIMIT,
    OCI_CONFIG,
    OCI_GZIP_LAYER,
    Manifest,
)
from twistreg.oci.names import Digest, parse_digest
from twistreg.oci.repositories import Repositories
from twistreg.registry.documents import parse_json
from twistreg.registry.layerfacts import hash_stored
from twistreg.storage.interface import IStorage, KeyNotFound

log = Logger()

#: Layers a V1 client unpacks: docker 1.x took gzip and plain tar (not zstd).
V1_LAYERS = (GZIP_LAYER, OCI_GZIP_LAYER, TAR_LAYER)
#: What an image config holds that a V1 image json does not (docker dropped the same).
_CONFIG_ONLY = ("history", "rootfs", "os.version", "os.features", "variant")
#: The history fields a V1 json kept for an image below the top.
_HISTORY_FIELDS = ("created", "author", "comment")
#: Bytes of V1 images and of the V1 images of V2 manifests kept per process: both never
#: change once made (a digest names fixed bytes).
VIEW_BUDGET = 4 << 20
#: Seconds they are served before they are read again, so that what a collector removed
#: stops being served soon after.
VIEW_MAX_AGE = 60.0


class NotBridgeable(Exception):
    """A V2 manifest that V1 clients cannot be served; the message says why."""


@attrs.frozen
class BridgedImage:
    """
    A V1 image made for one layer of a V2 image.

    @ivar document: its json, exactly as served.
    @ivar ancestry: its id first, then its parents' up to the base.
    @ivar layer: the V2 blob that is its layer, and that blob's size.
    @ivar repository: the V2 repository it was first made for.
    @ivar manifest: the V2 image manifest it was made from.
    """

    image_id: str
    document: bytes
    ancestry: tuple[str, ...]
    layer: Digest
    size: int
    repository: str
    manifest: Digest

    def to_json(self) -> bytes:
        return json.dumps({
            "id": self.image_id, "json": self.document.decode("utf-8"),
            "ancestry": list(self.ancestry), "layer": str(self.layer), "size": self.size,
            "repository": self.repository, "manifest": str(self.manifest),
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, stored: bytes) -> BridgedImage | None:
        """A stored record; None for one that does not read (cut short, or junk)."""
        try:
            record = parse_json(stored)
            image = cls(record["id"], record["json"].encode("utf-8"), tuple(record["ancestry"]),
                        parse_digest(record["layer"]), record["size"], record["repository"],
                        parse_digest(record["manifest"]))
        except (ValueError, TypeError, KeyError, AttributeError, RegistryError):
            return None
        valid = (layout.is_image_id(image.image_id) and image.ancestry[:1] == (image.image_id,)
                 and all(layout.is_image_id(ancestor) for ancestor in image.ancestry)
                 and isinstance(image.size, int) and isinstance(image.repository, str))
        return image if valid else None


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _chain_ids(diff_ids: list[str]) -> Iterator[str]:
    """The chain id of each layer (the image spec's): a layer's identity with all below it."""
    chain = None
    for diff_id in diff_ids:
        chain = diff_id if chain is None else (
            "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest())
        yield chain


def _history(config: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """
    The history entry of each layer: those not marked C{empty_layer}, in order, when there
    is one per layer; else none (a config may carry no history, or a wrong one).
    """
    history = config.get("history")
    entries = [entry for entry in history if isinstance(entry, dict)
               and not entry.get("empty_layer")] if isinstance(history, list) else []
    return entries if len(entries) == count else [{} for _ in range(count)]


def _lower_document(config: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The json of an image below the top: what its history entry says of it."""
    document: dict[str, Any] = {key: entry[key] for key in _HISTORY_FIELDS
                                if isinstance(entry.get(key), str)}
    document.setdefault("created", config.get("created", "1970-01-01T00:00:00Z"))
    if isinstance(entry.get("created_by"), str):
        document["container_config"] = {"Cmd": [entry["created_by"]]}
    for key in ("architecture", "os"):
        if key in config:
            document[key] = config[key]
    return document


def v1_images(repository: str, manifest: Manifest, config_bytes: bytes) -> list[BridgedImage]:
    """
    The V1 images of a V2 image manifest and its config, base first. Deterministic: the same
    manifest gives the same ids and bytes.

    An image's id is the sha256 of its json (without the id) and the chain id of its layer,
    as docker's V1 ids were: images that share their lower layers and history share their
    ids, and the top image's id also depends on the whole config.

    @raise NotBridgeable: the manifest is no container image, or a layer is one that V1
        clients cannot unpack.
    """
    try:
        config = parse_json(config_bytes)
    except ValueError:
        config = None
    if manifest.config is None or manifest.config.media_type not in (DOCKER_CONFIG, OCI_CONFIG):
        raise NotBridgeable("it is not a container image")
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not (isinstance(diff_ids, list) and len(diff_ids) == len(manifest.layers)
            and manifest.layers and all(isinstance(d, str) for d in diff_ids)):
        raise NotBridgeable("its config does not list one diff id per layer")
    for layer in manifest.layers:
        if layer.media_type not in V1_LAYERS or layer.urls:
            raise NotBridgeable(f"V1 clients cannot take its layer of type {layer.media_type}")
    images: list[BridgedImage] = []
    top = len(manifest.layers) - 1
    for index, (layer, chain, entry) in enumerate(zip(
            manifest.layers, _chain_ids(diff_ids), _history(config, len(manifest.layers)))):
        if index == top:
            document = {k: v for k, v in config.items() if k not in _CONFIG_ONLY}
        else:
            document = _lower_document(config, entry)
        document.pop("id", None)
        if images:
            document["parent"] = images[-1].image_id
        else:
            document.pop("parent", None)
        image_id = hashlib.sha256(_canonical({**document, "layer_id": chain})).hexdigest()
        document["id"] = image_id
        ancestry = (image_id, *(images[-1].ancestry if images else ()))
        images.append(BridgedImage(image_id, _canonical(document), ancestry, layer.digest,
                                   layer.size, repository, manifest.digest))
    return images


class V2View:
    """The V1 view of the V2 tags of one storage."""

    def __init__(self, storage: IStorage, reactor: IReactorThreads | IReactorTime,
                 repositories: Repositories, platform: tuple[str, ...]) -> None:
        self._storage = storage
        self._reactor = reactor
        self._repositories = repositories
        self._platform = platform
        #: image id → L{BridgedImage}; manifest digest → its V1 images (empty: none).
        self._kept = BoundedLRU(VIEW_BUDGET, VIEW_MAX_AGE, reactor, name="v1_views")

    async def tag(self, repository: Repository, tag: str) -> str | None:
        """The V1 image id of the V2 tag C{tag}; None when there is none V1 can serve."""
        for name in v2_names(repository):
            try:
                _, manifest = await self._repositories.get_manifest(name, tag)
            except RegistryError:
                continue
            images = await self._images_of(name, manifest.digest)
            return images[-1].image_id if images else None
        return None

    async def tags(self, repository: Repository) -> dict[str, str] | None:
        """
        The V2 tags of a V1 repository, with the V1 image id of each (tags V1 cannot serve
        are left out); None when no V2 repository of its name has a tag (what is left of a
        repository whose tags were deleted is none to V1).
        """
        found: dict[str, str] | None = None
        for name in v2_names(repository):
            current = await self._repositories.current_tags(name)
            if not current:
                continue
            found = {} if found is None else found
            for tag, digest in current:
                images = await self._images_of(name, digest)
                if images and tag not in found:
                    found[tag] = images[-1].image_id
        return found

    async def image_ids(self, repository: Repository) -> list[str]:
        """The V1 images of every V2 tag of a V1 repository, each once, bases first."""
        ids: dict[str, None] = {}
        for name in v2_names(repository):
            for _, digest in await self._repositories.current_tags(name):
                ids.update(dict.fromkeys(image.image_id
                                         for image in await self._images_of(name, digest)))
        return list(ids)

    async def image(self, image_id: str) -> BridgedImage | None:
        """The V1 image of that id made for a V2 image; None when there is none."""
        kept = self._kept.get(image_id)
        if kept is not None:
            return kept
        try:
            image = BridgedImage.from_json(
                await self._storage.get_content(layout.bridged_image_key(image_id)))
        except KeyNotFound:
            return None
        if image is not None and image.image_id == image_id:
            self._kept.keep(image_id, image, len(image.document) + 80 * len(image.ancestry))
            return image
        return None

    async def layer_location(self, image: BridgedImage) -> tuple[str, int] | None:
        """Where the layer of a made V1 image is stored, and its size."""
        return await self._repositories.stored_location(image.layer)

    async def checksum(self, image: BridgedImage) -> str | None:
        """
        The payload checksum of a made V1 image (0.9.1's C{_checksum}: the json and the
        layer), computed from one read of the layer the first time it is asked for and kept.
        None when the layer is gone.
        """
        key = layout.bridged_checksum_key(image.image_id)
        try:
            return (await self._storage.get_content(key)).decode("ascii")
        except (KeyNotFound, UnicodeDecodeError):
            pass
        location = await self.layer_location(image)
        if location is None:
            return None
        hasher = PayloadHasher(image.document)
        try:
            await hash_stored(self._storage, self._reactor, location[0], hasher)
        except KeyNotFound:
            return None
        checksum = hasher.checksum()
        await self._storage.put_content(key, checksum.encode("ascii"))
        return checksum

    async def _images_of(self, name: str, digest: Digest) -> tuple[BridgedImage, ...]:
        """
        The V1 images of a manifest of repository C{name} (for an index, its entry for the
        configured platform), base first, made and stored the first time; empty when V1
        clients cannot be served it.
        """
        kept = self._kept.get(digest)
        if kept is not None:
            return kept
        try:
            images = tuple(await self._make(name, digest))
        except NotBridgeable as reason:
            log.info("V2 manifest {digest} of {name} is not served to V1 clients: {reason}",
                     digest=str(digest), name=name, reason=str(reason))
            images = ()
        except (RegistryError, KeyNotFound):
            return ()  # gone meanwhile, or a blob missing: not kept, it may come back
        self._kept.keep(digest, images, 64 + sum(len(image.document) for image in images))
        return images

    async def _make(self, name: str, digest: Digest) -> list[BridgedImage]:
        """Read the manifest and its config, make its V1 images and store those not stored."""
        _, manifest = await self._repositories.get_manifest(name, digest)
        if manifest.media_type in INDEXES:
            entry = self._platform_entry(manifest)
            _, manifest = await self._repositories.get_manifest(name, entry)
        if manifest.config is None or manifest.config.size > MANIFEST_LIMIT:
            raise NotBridgeable("it is not a container image")
        location = await self._repositories.blob_location(name, manifest.config.digest)
        if location is None:
            raise KeyNotFound(str(manifest.config.digest))
        config = await self._storage.get_content(location[0])
        if Digest.of(config) != manifest.config.digest:
            raise NotBridgeable("its config does not have the digest the manifest names")
        images = v1_images(name, manifest, config)
        for image in images:
            # Each is looked at: a base is shared with other V2 images, and may have been
            # collected with the layer of one of them.
            key = layout.bridged_image_key(image.image_id)
            if not await self._storage.exists(key):
                await self._storage.put_content(key, image.to_json())
        return images

    def _platform_entry(self, index: Manifest) -> Digest:
        """The entry of an index for the configured platform (os, architecture, variant)."""
        wanted = self._platform
        for child in index.manifests:
            platform = child.platform or {}
            found = (platform.get("os"), platform.get("architecture"))
            if len(wanted) == 3:
                found += (platform.get("variant"),)
            if found == wanted:
                return child.digest
        raise NotBridgeable(f"its index has no entry for {'/'.join(wanted)}")
