# -*- test-case-name: tests.test_oci_repositories -*-
"""
The V2 repositories over L{IStorage}, in the Go registry's tree: which blobs and manifests a
repository holds, its tags, the catalog, and the referrers index twistreg keeps beside it.

The tree is shared with the Go registry and a write can be cut short, so every key read may
be missing or hold junk: a link that is not a digest, or names another one, counts as absent,
and a stored descriptor that does not parse is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable
from typing import Any, Callable, TypeVar

from twisted.internet import defer
from twisted.logger import Logger

from twistreg import layout
from twistreg.lru import BoundedLRU
from twistreg.oci.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    quoted,
)
from twistreg.oci.manifests import (
    Manifest,
    parse_manifest,
    parse_stored_manifest,
    referrer_descriptor,
)
from twistreg.oci.names import Digest, is_name, is_tag, parse_digest, parse_name
from twistreg.registry.documents import parse_json
from twistreg.storage.interface import IStorage, KeyNotFound

log = Logger()

#: The most storage requests one call keeps in flight: a manifest's blobs, a repository's
#: tags or a subject's referrers are checked together (on S3 each is a round trip), but a
#: manifest may name thousands.
_PARALLEL = 16

_T = TypeVar("_T")
_R = TypeVar("_R")


async def _each(function: Callable[[_T], Awaitable[_R]], items: Iterable[_T]) -> list[_R]:
    """C{function} of every item, L{_PARALLEL} at a time; the results in order."""
    semaphore = defer.DeferredSemaphore(_PARALLEL)
    calls = [
        semaphore.run(lambda item: defer.ensureDeferred(function(item)), item) for item in items
    ]
    try:
        return await defer.gatherResults(calls, consumeErrors=True)
    except defer.FirstError as error:
        error.subFailure.raiseException()


def _require_tag(tag: str) -> None:
    """Refuse a tag outside the grammar before it makes a key (C{..} would leave its place)."""
    if not is_tag(tag):
        raise ManifestUnknown(f"invalid tag {quoted(tag)}")


def _is_repository(entries: list[str]) -> bool:
    """Whether a directory with these entries is a repository (as the Go registry sees it)."""
    return layout.V2_LAYERS in entries or layout.V2_MANIFESTS in entries


def _is_referrer(descriptor: Any, digest: Digest) -> bool:
    """Whether a stored referrers entry is a descriptor of the manifest it is named after."""
    return (
        isinstance(descriptor, dict)
        and descriptor.get("digest") == str(digest)
        and isinstance(descriptor.get("mediaType"), str)
        and type(descriptor.get("size")) is int
        and isinstance(descriptor.get("artifactType", ""), str)
        and isinstance(descriptor.get("annotations", {}), dict)
    )


#: Bytes of manifests kept per process (most are a few KiB).
MANIFESTS_BUDGET = 4 << 20


class Repositories:
    """
    The rules of V2 repositories over one storage. Names, tags and digests reaching these
    methods come from the routes, which have parsed them; names and tags are checked again
    here, as they become keys.
    """

    def __init__(self, storage: IStorage,
                 before_tag: Callable[[str, str], Awaitable[object]] | None = None) -> None:
        """
        @param before_tag: what a manifest PUT by tag calls, once the manifest is stored
            and before the tag is written (the V1 tag of that name goes:
            L{twistreg.bridge.tagspace}).
        """
        self._storage = storage
        self._before_tag = before_tag
        #: Manifests by digest, bytes and parse: what a digest names never changes (whether
        #: a repository has it is asked of storage every time).
        self._manifests = BoundedLRU(MANIFESTS_BUDGET, name="v2_manifests")

    # Links: a file holding a digest, the Go registry's way of saying "this repository has it".

    async def _read_link(self, key: str) -> Digest | None:
        try:
            content = await self._storage.get_content(key)
        except KeyNotFound:
            return None
        try:
            return parse_digest(content.decode("ascii"))
        except (UnicodeDecodeError, DigestInvalid):
            return None

    async def _links(self, key: str, digest: Digest) -> bool:
        """
        Whether the link at C{key} names C{digest}. The Go registry would follow a link to
        another digest; none of its own writes makes one, so here it is junk.
        """
        return await self._read_link(key) == digest

    async def _link(self, key: str, digest: Digest) -> None:
        await self._storage.put_content(key, layout.link_content(digest))

    # Blobs.

    async def _blob_size(self, name: str, digest: Digest) -> int | None:
        location = await self._blob_location(name, digest)
        return None if location is None else location[1]

    async def _blob_location(self, name: str, digest: Digest) -> tuple[str, int] | None:
        if not await self._links(layout.layer_link_key(name, digest), digest):
            return None
        return await self.stored_location(digest)

    async def stored_location(self, digest: Digest) -> tuple[str, int] | None:
        """
        Where the bytes of a blob are stored, and their size, whichever repository links it:
        its data in the Go tree, or the V1 layer file of a blob the bridge serves; None when
        neither is there.
        """
        for key in (layout.blob_data_key(digest), await self._bridged_layer_key(digest)):
            if key is None:
                continue
            try:
                return key, await self._storage.size(key)
            except KeyNotFound:
                pass
        return None

    async def _bridged_layer_key(self, digest: Digest) -> str | None:
        """The V1 layer file a bridged blob is (L{layout.bridged_blob_key}), if it is one."""
        try:
            image_id = (await self._storage.get_content(layout.bridged_blob_key(digest)))
        except KeyNotFound:
            return None
        text = image_id.decode("ascii", "replace")
        return layout.image_layer_key(text) if layout.is_image_id(text) else None

    async def blob_location(self, name: str, digest: Digest) -> tuple[str, int] | None:
        """
        Where the bytes of a blob of repository C{name} are stored, and their size: its data
        in the Go tree, or the V1 layer file of a blob the bridge serves; None as for
        L{blob_size}.
        """
        parse_name(name)
        return await self._blob_location(name, digest)

    async def blob_size(self, name: str, digest: Digest) -> int | None:
        """
        The size of a blob of repository C{name}: None unless the repository links it and its
        bytes are stored (garbage collection may have removed them under a stale link).
        """
        parse_name(name)
        return await self._blob_size(name, digest)

    async def link_blob(self, name: str, digest: Digest) -> None:
        """Make a stored blob part of repository C{name} (an upload completed, a mount)."""
        parse_name(name)
        await self._link(layout.layer_link_key(name, digest), digest)

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        """
        Take a blob out of repository C{name}; its bytes stay for other repositories until
        garbage collection.

        @raise BlobUnknown: the repository does not link it.
        """
        parse_name(name)
        key = layout.layer_link_key(name, digest)
        if not await self._links(key, digest):
            raise BlobUnknown(f"blob {digest} unknown to repository {quoted(name)}")
        await self._storage.remove(key)

    async def mount_blob(self, name: str, digest: Digest, source: str) -> int | None:
        """
        Link into C{name} a blob that repository C{source} has, without its bytes travelling.

        @return: the blob's size; None when C{source} lacks it, is not a repository name or
            lacks its bytes: the client then uploads it (V2-NOTES), as with the Go registry,
            which ignores a C{from} it cannot parse.
        """
        parse_name(name)
        if not is_name(source):
            return None
        size = await self._blob_size(source, digest)
        if size is not None:
            await self._link(layout.layer_link_key(name, digest), digest)
        return size

    # Manifests.

    async def _has_manifest(self, name: str, digest: Digest) -> bool:
        return await self._links(
            layout.revision_link_key(name, digest), digest
        ) and await self._storage.exists(layout.blob_data_key(digest))

    async def _require_references(self, name: str, manifest: Manifest) -> None:
        """
        @raise ManifestBlobUnknown: C{manifest} names blobs or child manifests that the
            repository lacks; C{detail} lists their digests, in the manifest's order.
        """
        blobs = list(dict.fromkeys(blob.digest for blob in manifest.blobs))
        children = list(dict.fromkeys(child.digest for child in manifest.manifests))
        sizes = await _each(lambda digest: self._blob_size(name, digest), blobs)
        present = await _each(lambda digest: self._has_manifest(name, digest), children)
        missing = [digest for digest, size in zip(blobs, sizes) if size is None]
        missing += [digest for digest, found in zip(children, present) if not found]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ManifestBlobUnknown(
                f"repository {quoted(name)} has no blob or manifest {missing[0]}{more}",
                detail={"digests": [str(digest) for digest in missing]},
            )

    async def put_manifest(
        self, name: str, reference: str | Digest, body: bytes, content_type: str | None
    ) -> Manifest:
        """
        Store a pushed manifest in repository C{name}, under its digest and, for a tag
        C{reference}, that tag. The bytes are written first, then the revision link, the
        referrers entry, and the tag last (its index, then its current link, as the Go
        registry does), so that nothing a reader finds names what is not there yet.

        @raise ManifestInvalid: what L{parse_manifest} refuses.
        @raise DigestInvalid: C{reference} is a digest, not the body's.
        @raise ManifestBlobUnknown: the manifest names blobs or child manifests the
            repository lacks.
        """
        parse_name(name)
        if not isinstance(reference, Digest):
            _require_tag(reference)
        manifest = parse_manifest(body, content_type)
        if isinstance(reference, Digest) and reference != manifest.digest:
            raise DigestInvalid(
                f"manifest pushed as {reference} has the digest {manifest.digest}"
            )
        await self._require_references(name, manifest)
        digest = manifest.digest
        data_key = layout.blob_data_key(digest)
        if not await self._storage.exists(data_key):
            await self._storage.put_content(data_key, body)
        await self._link(layout.revision_link_key(name, digest), digest)
        if manifest.subject is not None:
            entry = json.dumps(referrer_descriptor(manifest), separators=(",", ":"))
            await self._storage.put_content(
                layout.referrer_key(name, manifest.subject.digest, digest), entry.encode()
            )
        if isinstance(reference, str):
            if self._before_tag is not None:
                await self._before_tag(name, reference)
            await self._link(layout.v2_tag_index_key(name, reference, digest), digest)
            await self._link(layout.v2_tag_current_key(name, reference), digest)
        return manifest

    async def _stored_manifest(self, name: str, digest: Digest) -> tuple[bytes, Manifest] | None:
        """A manifest of C{name} and its parse; None when it is missing or cannot be served."""
        if not await self._links(layout.revision_link_key(name, digest), digest):
            return None
        kept = self._manifests.get(digest)
        if kept is not None:
            return kept
        try:
            body = await self._storage.get_content(layout.blob_data_key(digest))
        except KeyNotFound:
            return None
        try:
            manifest = parse_stored_manifest(body)
        except ManifestInvalid as error:
            # A schema1 manifest the Go registry took from an old client, or junk.
            log.warn(
                "stored manifest {digest} of {name} cannot be served: {reason}",
                digest=str(digest), name=name, reason=error.message,
            )
            return None
        if manifest.digest != digest:
            log.warn("stored manifest {digest} of {name} has other bytes",
                     digest=str(digest), name=name)
            return None
        self._manifests.keep(digest, (body, manifest), len(body))
        return body, manifest

    async def get_manifest(
        self, name: str, reference: str | Digest
    ) -> tuple[bytes, Manifest]:
        """
        A manifest of repository C{name} by tag or digest: its bytes as stored and their
        parse.

        @raise NameUnknown: there is no such repository.
        @raise ManifestUnknown: the repository has no such tag or manifest.
        """
        parse_name(name)
        if isinstance(reference, Digest):
            digest: Digest | None = reference
        else:
            _require_tag(reference)
            digest = await self._read_link(layout.v2_tag_current_key(name, reference))
        found = None if digest is None else await self._stored_manifest(name, digest)
        if found is not None:
            return found
        if not await self._exists(name):
            raise NameUnknown(f"repository {quoted(name)} unknown")
        if isinstance(reference, Digest):
            raise ManifestUnknown(f"repository {quoted(name)} has no manifest {reference}")
        raise ManifestUnknown(f"repository {quoted(name)} has no tag {quoted(reference)}")

    async def delete_manifest(self, name: str, digest: Digest) -> None:
        """
        Take a manifest out of repository C{name}: the tags that name it go first, so that
        none is left naming what is gone, then its referrers entry and its revision link.
        Its bytes stay until garbage collection.

        @raise ManifestUnknown: the repository has no such manifest.
        """
        parse_name(name)
        revision = layout.revision_link_key(name, digest)
        if not await self._links(revision, digest):
            raise ManifestUnknown(f"repository {quoted(name)} has no manifest {digest}")
        for tag, current in await self._current_links(name):
            if current == digest:
                await self._storage.remove_tree(layout.v2_tag_key(name, tag))
        subject = await self._subject(digest)
        if subject is not None:
            await self._storage.remove(layout.referrer_key(name, subject, digest))
        await self._storage.remove(revision)

    async def _subject(self, digest: Digest) -> Digest | None:
        """The subject of a stored manifest; None without one, or when it is unreadable."""
        try:
            manifest = parse_stored_manifest(
                await self._storage.get_content(layout.blob_data_key(digest))
            )
        except (KeyNotFound, ManifestInvalid):
            return None
        return None if manifest.subject is None else manifest.subject.digest

    # Tags.

    async def _current_links(self, name: str) -> list[tuple[str, Digest]]:
        """
        The tags of C{name}, sorted, with the digests they name now. A tag's directory is not
        enough: it may be half-written or junk, and some stores keep emptied directories
        (SeaweedFS lists them after their last object is removed), so a tag is listed only
        when its current link reads, at the cost of one read per tag.
        """
        entries = await self._storage.list_directory(layout.v2_tags_key(name))
        tags = sorted(entry for entry in entries if is_tag(entry))
        currents = await _each(
            lambda tag: self._read_link(layout.v2_tag_current_key(name, tag)), tags
        )
        return [(tag, current) for tag, current in zip(tags, currents) if current is not None]

    async def current_tags(self, name: str) -> list[tuple[str, Digest]]:
        """The tags of repository C{name}, sorted, with the digests they name now."""
        parse_name(name)
        return await self._current_links(name)

    async def delete_tag(self, name: str, tag: str) -> None:
        """
        Remove a tag (its current link and its history); the manifest stays.

        @raise ManifestUnknown: the repository has no such tag.
        """
        parse_name(name)
        _require_tag(tag)
        if await self._read_link(layout.v2_tag_current_key(name, tag)) is None:
            raise ManifestUnknown(f"repository {quoted(name)} has no tag {quoted(tag)}")
        await self._storage.remove_tree(layout.v2_tag_key(name, tag))

    async def tags(self, name: str) -> list[str]:
        """
        The tags of repository C{name}, in plain string order (the routes page over it).

        @raise NameUnknown: the repository has no manifests directory.
        """
        parse_name(name)
        names = [tag for tag, _ in await self._current_links(name)]
        if not names:
            entries = await self._storage.list_directory(layout.v2_repository_key(name))
            if layout.V2_MANIFESTS not in entries:
                raise NameUnknown(f"repository {quoted(name)} unknown")
        return names

    # Repositories.

    async def _exists(self, name: str) -> bool:
        return _is_repository(
            await self._storage.list_directory(layout.v2_repository_key(name))
        )

    async def exists(self, name: str) -> bool:
        """
        Whether repository C{name} exists: it has links to blobs or manifests. (Where emptied
        directories remain, on local storage or SeaweedFS, a repository whose every link was
        removed still exists, as it does for the Go registry.)
        """
        parse_name(name)
        return await self._exists(name)

    async def catalog(self) -> list[str]:
        """
        Every repository's name, sorted. Names nest, and a repository may have others below
        it (C{a} and C{a/b}), so the tree is walked level by level; directories that cannot
        be part of a name (the Go registry's C{_} entries, junk) are not entered.
        """
        names: list[str] = []
        level = [""]
        while level:
            listings = await _each(
                lambda prefix: self._storage.list_directory(
                    layout.v2_repository_key(prefix) if prefix else layout.V2_REPOSITORIES
                ),
                level,
            )
            below: list[str] = []
            for prefix, entries in zip(level, listings):
                if prefix and _is_repository(entries):
                    names.append(prefix)
                for entry in entries:
                    child = f"{prefix}/{entry}" if prefix else entry
                    if layout.is_v2_name_component(entry) and is_name(child):
                        below.append(child)
            level = below
        return sorted(names)

    # Referrers.

    async def _referrer(self, name: str, subject: Digest, entry: str) -> dict[str, Any] | None:
        """
        The descriptor a referrers entry holds, when it is one of the manifest it is named
        after and that manifest is still in the repository (the Go registry deletes manifests
        without knowing this index).
        """
        text = layout.referrer_of_entry(entry)
        if text is None:
            return None
        try:
            digest = parse_digest(text)
            content = await self._storage.get_content(layout.referrer_key(name, subject, digest))
            descriptor = parse_json(content)
        except (DigestInvalid, KeyNotFound, ValueError):
            return None
        if not _is_referrer(descriptor, digest):
            return None
        if not await self._links(layout.revision_link_key(name, digest), digest):
            return None
        return descriptor

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None
    ) -> list[dict[str, Any]]:
        """
        The descriptors of the manifests of C{name} whose subject is C{subject}, sorted by
        digest, only those of C{artifact_type} when it is given. A subject nothing refers to
        (or that does not exist) has an empty list, as the spec says.
        """
        parse_name(name)
        entries = await self._storage.list_directory(layout.referrers_key(name, subject))
        found = await _each(lambda entry: self._referrer(name, subject, entry), entries)
        return sorted(
            (
                descriptor
                for descriptor in found
                if descriptor is not None
                and (artifact_type is None or descriptor.get("artifactType") == artifact_type)
            ),
            key=lambda descriptor: descriptor["digest"],
        )
