# -*- test-case-name: tests.test_gc -*-
"""
What a V2 repository keeps: the manifests its tags name now (a tag's history is no reason),
the children of a kept index, the referrers of a kept manifest (a signature or SBOM lives as
long as its subject), manifests pushed less than C{gc.untagged} seconds ago, and the blobs
kept manifests name.
"""

from __future__ import annotations

import attrs

from twistreg import layout
from twistreg.oci.errors import DigestInvalid, ManifestInvalid, ManifestTooLarge
from twistreg.oci.manifests import parse_stored_manifest
from twistreg.oci.names import Digest, is_tag, parse_digest
from twistreg.storage.interface import IStorage, KeyNotFound
from twistreg.walking import Pace


@attrs.frozen
class References:
    """
    What one stored manifest refers to.

    @ivar opaque: the manifest is stored but not one twistreg reads (a schema1 manifest the Go
        registry took): what it names is unknown, so its repository keeps every blob.
    """

    children: frozenset[Digest] = frozenset()
    blobs: frozenset[Digest] = frozenset()
    subject: Digest | None = None
    opaque: bool = False


class ManifestReader:
    """What stored manifests refer to, each read once per collection (its bytes never change)."""

    def __init__(self, storage: IStorage) -> None:
        self._storage = storage
        self._known: dict[Digest, References] = {}

    async def references(self, digest: Digest) -> References:
        known = self._known.get(digest)
        if known is not None:
            return known
        try:
            manifest = parse_stored_manifest(
                await self._storage.get_content(layout.blob_data_key(digest)))
        except KeyNotFound:
            found = References()  # its bytes are gone: it keeps nothing
        except (ManifestInvalid, ManifestTooLarge):
            found = References(opaque=True)
        else:
            found = References(
                children=frozenset(child.digest for child in manifest.manifests),
                blobs=frozenset(blob.digest for blob in manifest.blobs),
                subject=None if manifest.subject is None else manifest.subject.digest,
            )
        self._known[digest] = found
        return found

    def subject(self, digest: Digest) -> Digest | None:
        """The subject of a manifest read before; None without one."""
        known = self._known.get(digest)
        return None if known is None else known.subject


async def digests_under(storage: IStorage, directory: str) -> set[Digest]:
    """The digests a C{<algorithm>/<hex>} directory holds an entry for."""
    found = set()
    for algorithm in await storage.list_directory(directory):
        for entry in await storage.list_directory(f"{directory}/{algorithm}"):
            try:
                found.add(Digest(algorithm, entry))
            except DigestInvalid:
                pass
    return found


async def blob_digests(storage: IStorage, pace: Pace) -> set[Digest]:
    """Every digest C{blobs/} holds a directory for (C{<algorithm>/<xx>/<hex>})."""
    found: set[Digest] = set()
    for algorithm in await storage.list_directory(layout.V2_BLOBS):
        top = f"{layout.V2_BLOBS}/{algorithm}"
        prefixes = [f"{top}/{prefix}" for prefix in await storage.list_directory(top)]
        listings = await pace.each(storage.list_directory, prefixes)
        for entries in listings:
            for entry in entries:
                try:
                    found.add(Digest(algorithm, entry))
                except DigestInvalid:
                    pass
    return found


async def _read_link(storage: IStorage, key: str) -> Digest | None:
    try:
        return parse_digest((await storage.get_content(key)).decode("ascii"))
    except (KeyNotFound, UnicodeDecodeError, DigestInvalid):
        return None


async def modified(storage: IStorage, key: str) -> float | None:
    """When C{key} was written; None when it holds nothing (it went, or is being written)."""
    try:
        return await storage.modified(key)
    except KeyNotFound:
        return None


@attrs.define
class RepositoryMark:
    """
    One repository as read once.

    @ivar kept: the revisions kept.
    @ivar manifests: the revisions that may go (unreached and older than the limits).
    @ivar links: the blob links that may go (unreferenced and older than the grace).
    @ivar remaining: the digests of the revisions and links that stay.
    """

    name: str
    tags: list[str]
    kept: set[Digest]
    manifests: set[Digest]
    links: set[Digest]
    remaining: set[Digest]


class V2Marker:
    """
    Marks repositories.

    @param now: the time ages are measured from.
    @param bridged: digests of manifests made for kept V1 images: kept wherever they are.
    """

    def __init__(self, storage: IStorage, pace: Pace, reader: ManifestReader, *, now: float,
                 grace: float, untagged: float, bridged: set[Digest]) -> None:
        self._storage = storage
        self._pace = pace
        self._reader = reader
        self._now = now
        self._grace = grace
        self._untagged = max(untagged, grace)
        self._bridged = bridged

    def _old(self, written: float | None, limit: float) -> bool:
        # Nothing there (a write in flight) counts as young.
        return written is not None and self._now - written >= limit

    async def _tags(self, name: str) -> tuple[list[str], set[Digest]]:
        tags = [entry for entry in await self._storage.list_directory(layout.v2_tags_key(name))
                if is_tag(entry)]
        currents = await self._pace.each(
            lambda tag: _read_link(self._storage, layout.v2_tag_current_key(name, tag)), tags)
        return tags, {digest for digest in currents if digest is not None}

    async def mark(self, name: str) -> RepositoryMark:
        """Read repository C{name} now and say what it keeps."""
        storage = self._storage
        revisions = await digests_under(
            storage, f"{layout.v2_repository_key(name)}/{layout.V2_MANIFESTS}/revisions")
        links = await digests_under(
            storage, f"{layout.v2_repository_key(name)}/{layout.V2_LAYERS}")
        tags, roots = await self._tags(name)
        # A revision is its link: the Go registry's delete leaves the directory.
        ordered = sorted(revisions, key=str)
        written = dict(zip(ordered, await self._pace.each(
            lambda digest: modified(storage, layout.revision_link_key(name, digest)), ordered)))
        revisions = {digest for digest in ordered if written[digest] is not None}
        ordered = sorted(revisions, key=str)
        references = dict(zip(ordered, await self._pace.each(self._reader.references, ordered)))
        roots = (roots | self._bridged) & revisions
        young = {digest for digest in revisions
                 if not self._old(written[digest], self._untagged)}
        kept = closure(roots | young, references)
        manifests = revisions - kept
        if any(references[digest].opaque for digest in kept):
            unreferenced: list[Digest] = []
        else:
            referenced = set().union(*(references[digest].blobs for digest in kept))
            unreferenced = sorted(links - referenced, key=str)
        link_written = await self._pace.each(
            lambda digest: modified(storage, layout.layer_link_key(name, digest)), unreferenced)
        old_links = {digest for digest, time in zip(unreferenced, link_written)
                     if self._old(time, self._grace)}
        # Listed but gone: some S3 stores list a removed key for a while.
        gone = {digest for digest, time in zip(unreferenced, link_written) if time is None}
        return RepositoryMark(name, tags, kept, manifests, old_links,
                              (revisions - manifests) | (links - old_links - gone))



def closure(roots: set[Digest], references: dict[Digest, References]) -> set[Digest]:
    """
    The revisions C{roots} reach: an index's children, and the referrers of what is kept
    (manifests whose subject is kept), until nothing more is reached.
    """
    kept = set(roots)
    while True:
        reached = {child for digest in kept for child in references[digest].children
                   if child in references}
        reached |= {digest for digest, refs in references.items() if refs.subject in kept}
        if reached <= kept:
            return kept
        kept |= reached
