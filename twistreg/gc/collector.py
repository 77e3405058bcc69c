# -*- test-case-name: tests.test_gc -*-
"""
One collection: mark, then sweep with a second look.

1. Mark: read every root (V1 tags and image lists, V2 tags, the manifests made for kept V1
   images) and follow them (ancestries; indexes, referrers, blobs). What nothing reaches and
   was written more than C{grace} seconds ago (manifests: C{untagged}) is a candidate.
2. Sweep: just before removing candidates, read their roots again (a repository's tags
   before its manifests and links go; every V1 root before images go; every repository's
   links before bytes go) and spare whatever is reached now or was written since.

A push writes its blobs before the manifest that names them, the manifest before its tag,
a V1 image before the tag that names it: until its tag exists, all it wrote is younger than
C{grace}, so never a candidate; once the tag exists, the second look sees it. Removal is
idempotent, so two collections at once (several nodes) remove nothing either would keep.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twistreg import layout
from twistreg.gc import report as kinds
from twistreg.gc.report import Report
from twistreg.gc.v1 import V1Marker, image_ids, image_state
from twistreg.gc.v2 import (
    ManifestReader,
    RepositoryMark,
    V2Marker,
    blob_digests,
    digests_under,
    modified,
)
from twistreg.oci.errors import DigestInvalid
from twistreg.oci.names import Digest, parse_digest
from twistreg.oci.repositories import Repositories
from twistreg.registry.documents import parse_json
from twistreg.storage.interface import IStorage, KeyNotFound
from twistreg.walking import Pace, Progress, Silent, Stopped

log = Logger()


@attrs.frozen
class Rules:
    """
    @ivar grace: seconds: nothing written more recently is removed.
    @ivar untagged: seconds a manifest nothing reaches is kept after its push.
    """

    grace: float = 3600.0
    untagged: float = 604800.0


async def _read(storage: IStorage, key: str) -> bytes | None:
    try:
        return await storage.get_content(key)
    except KeyNotFound:
        return None


async def _prune(storage: IStorage, directory: str) -> None:
    """Remove a directory left empty (local storage keeps them; S3 has none)."""
    if not await storage.list_directory(directory):
        await storage.remove_tree(directory)


def _parent(key: str) -> str:
    return key.rsplit("/", 1)[0]


class Collection:
    """One run over one storage: L{run} once."""

    def __init__(self, storage: IStorage, clock: IReactorTime, rules: Rules, *,
                 dry_run: bool = False, pace: Pace | None = None,
                 progress: Progress | None = None) -> None:
        self._storage = storage
        self._clock = clock
        self._rules = rules
        self._pace = pace if pace is not None else Pace(clock)
        self._progress = progress if progress is not None else Silent()
        self.report = Report(dry_run=dry_run)
        self._now = clock.seconds()
        self._reader = ManifestReader(storage)

    def _old(self, written: float | None) -> bool:
        return written is not None and self._now - written >= self._rules.grace

    async def run(self) -> Report:
        """Mark, then sweep (unless dry); an interruption ends it with what was done."""
        started = self._clock.seconds()
        try:
            await self._collect()
        except Stopped:
            self.report.interrupted = True
        self.report.seconds = self._clock.seconds() - started
        return self.report

    # -- marking -------------------------------------------------------------------------------

    async def _bridged_manifests(self, kept_images: set[str]) -> set[Digest]:
        """The manifests made for kept V1 images (a V1 tag pulled over V2)."""
        found = set()
        for image_id in await self._storage.list_directory(layout.BRIDGED_MANIFESTS):
            if image_id in kept_images:
                content = await _read(self._storage, layout.bridged_manifest_key(image_id))
                try:
                    found.add(parse_digest((content or b"").decode("ascii")))
                except (UnicodeDecodeError, DigestInvalid):
                    pass
        return found

    async def _linked(self) -> dict[Digest, list[str]]:
        """
        The digests some repository links now, as a manifest or as a blob, with the keys of
        those links. A listing may name links removed a moment ago (some S3 stores list a
        deleted key for a while): L{_confirmed} reads them.
        """
        names = await Repositories(self._storage).catalog()

        async def of(name: str) -> list[tuple[Digest, str]]:
            top = layout.v2_repository_key(name)
            revisions = await digests_under(
                self._storage, f"{top}/{layout.V2_MANIFESTS}/revisions")
            blobs = await digests_under(self._storage, f"{top}/{layout.V2_LAYERS}")
            return ([(digest, layout.revision_link_key(name, digest)) for digest in revisions]
                    + [(digest, layout.layer_link_key(name, digest)) for digest in blobs])

        linked: dict[Digest, list[str]] = {}
        for found in await self._pace.each(of, names):
            for digest, key in found:
                linked.setdefault(digest, []).append(key)
        return linked

    async def _confirmed(self, linked: dict[Digest, list[str]],
                         digests: set[Digest]) -> set[Digest]:
        """Those of C{digests} that a link listed in C{linked} really names now."""

        async def holds(digest: Digest) -> bool:
            for key in linked.get(digest, ()):
                if await self._storage.exists(key):
                    return True
            return False

        ordered = sorted(digests & set(linked), key=str)
        return {digest for digest, held in zip(ordered, await self._pace.each(holds, ordered))
                if held}

    async def _images_of_bridged_blobs(
        self, linked: set[Digest] | dict[Digest, list[str]]
    ) -> tuple[set[str], set[Digest]]:
        """
        The V1 images whose layer is a blob some repository links (kept with it), and the
        bridged blobs no repository links.
        """
        records = await digests_under(self._storage, layout.BRIDGED_BLOBS)
        if isinstance(linked, dict):
            linked = await self._confirmed(linked, records)
        images = set()
        for digest in sorted(records & linked, key=str):
            content = await _read(self._storage, layout.bridged_blob_key(digest))
            text = (content or b"").decode("ascii", "replace")
            if layout.is_image_id(text):
                images.add(text)
        return images, records - linked

    # -- the run -------------------------------------------------------------------------------

    async def _collect(self) -> None:
        storage, pace, progress = self._storage, self._pace, self._progress
        kept_images = await V1Marker(storage, pace).kept(progress)
        bridged = await self._bridged_manifests(kept_images)
        marker = V2Marker(storage, pace, self._reader, now=self._now, grace=self._rules.grace,
                          untagged=self._rules.untagged, bridged=bridged)
        names = await Repositories(storage).catalog()
        progress.phase("V2 repositories", len(names))

        async def mark(name: str) -> RepositoryMark:
            marked = await marker.mark(name)
            progress.advance()
            return marked

        marks = dict(zip(names, await pace.each(mark, names)))
        remaining = set().union(*(marked.remaining for marked in marks.values()))
        held_images, unlinked_records = await self._images_of_bridged_blobs(remaining)
        kept_images |= held_images

        images = await image_ids(storage)
        unkept = [image_id for image_id in images if image_id not in kept_images]
        progress.phase("V1 images", len(unkept))

        async def state(image_id: str) -> tuple[float | None, int]:
            found = await image_state(storage, image_id)
            progress.advance()
            return found

        old_images = {image_id: size for image_id, (written, size)
                      in zip(unkept, await pace.each(state, unkept)) if self._old(written)}
        self.report.keep(kinds.V1_IMAGES, len(images) - len(old_images))

        blobs = await blob_digests(storage, pace)
        unlinked = sorted(blobs - remaining - bridged, key=str)
        progress.phase("blobs", len(unlinked))

        async def blob_age(digest: Digest) -> float | None:
            written = await modified(storage, layout.blob_data_key(digest))
            progress.advance()
            return written

        ages = await pace.each(blob_age, unlinked)
        old_blobs = [digest for digest, written in zip(unlinked, ages) if self._old(written)]
        self.report.keep(kinds.BLOBS, len(blobs) - len(old_blobs))
        for marked in marks.values():
            self.report.keep(kinds.MANIFESTS, len(marked.kept))
            self.report.keep(kinds.BLOB_LINKS, len(marked.remaining - marked.kept))

        if self.report.dry_run:
            await self._list(marks, old_images, unlinked_records, old_blobs, set(images))
            return
        await self._sweep_repositories(marker, marks)
        await self._sweep_images(old_images)
        await self._sweep_bridge_records(unlinked_records, set(images))
        await self._sweep_blobs(old_blobs)
        await self._sweep_v1_views()

    async def _list(self, marks: dict[str, RepositoryMark], old_images: dict[str, int],
                    unlinked_records: set[Digest], old_blobs: list[Digest],
                    images: set[str]) -> None:
        """What a sweep would remove, as the first look sees it."""
        for name, marked in marks.items():
            for digest in sorted(marked.manifests, key=str):
                self.report.removed(kinds.MANIFESTS, layout.revision_link_key(name, digest), 0)
            for digest in sorted(marked.links, key=str):
                self.report.removed(kinds.BLOB_LINKS, layout.layer_link_key(name, digest), 0)
        for image_id, size in sorted(old_images.items()):
            self.report.removed(kinds.V1_IMAGES, f"{layout.IMAGES}/{image_id}", size)
        for digest in sorted(unlinked_records, key=str):
            key = layout.bridged_blob_key(digest)
            if self._old(await modified(self._storage, key)):
                self.report.removed(kinds.BRIDGE_RECORDS, key, 0)
        for digest in old_blobs:
            key = layout.blob_data_key(digest)
            self.report.removed(kinds.BLOBS, key, await self._size(key))

    async def _size(self, key: str) -> int:
        try:
            return await self._storage.size(key)
        except KeyNotFound:
            return 0

    # -- sweeping: each step reads its roots again first ---------------------------------------

    async def _sweep_repositories(self, marker: V2Marker,
                                  marks: dict[str, RepositoryMark]) -> None:
        async def sweep(first: RepositoryMark) -> None:
            again = await marker.mark(first.name)
            for digest in sorted(first.manifests & again.manifests, key=str):
                await self._remove_manifest(again, digest)
            for digest in sorted(first.links & again.links, key=str):
                key = layout.layer_link_key(first.name, digest)
                await self._storage.remove(key)
                await _prune(self._storage, _parent(key))
                self.report.removed(kinds.BLOB_LINKS, key, 0)

        await self._pace.each(sweep, [marked for marked in marks.values()
                                      if marked.manifests or marked.links])

    async def _remove_manifest(self, marked: RepositoryMark, digest: Digest) -> None:
        """Its tag history and referrers entry, then its revision link."""
        storage, name = self._storage, marked.name
        for tag in marked.tags:
            await storage.remove(layout.v2_tag_index_key(name, tag, digest))
        subject = self._reader.subject(digest)
        if subject is not None:
            await storage.remove(layout.referrer_key(name, subject, digest))
        key = layout.revision_link_key(name, digest)
        await storage.remove(key)
        await _prune(storage, _parent(key))
        self.report.removed(kinds.MANIFESTS, key, 0)

    async def _kept_images_now(self) -> set[str]:
        kept = await V1Marker(self._storage, self._pace).kept()
        held, _ = await self._images_of_bridged_blobs(await self._linked())
        return kept | held

    async def _sweep_images(self, old_images: dict[str, int]) -> None:
        if not old_images:
            return
        kept = await self._kept_images_now()

        async def sweep(image_id: str) -> None:
            written, size = await image_state(self._storage, image_id)
            if written is None or not self._old(written):
                return
            # The json first: from then on the image does not exist, and a tag naming it is
            # refused.
            await self._storage.remove(layout.image_json_key(image_id))
            await self._storage.remove_tree(f"{layout.IMAGES}/{image_id}")
            self.report.removed(kinds.V1_IMAGES, f"{layout.IMAGES}/{image_id}", size)
            record = layout.bridged_manifest_key(image_id)
            if await self._storage.exists(record):
                await self._storage.remove(record)
                self.report.removed(kinds.BRIDGE_RECORDS, record, 0)

        await self._pace.each(sweep, sorted(set(old_images) - kept))

    async def _sweep_bridge_records(self, unlinked: set[Digest], images: set[str]) -> None:
        if unlinked:
            linked = await self._confirmed(await self._linked(), unlinked)
            for digest in sorted(unlinked - linked, key=str):
                await self._pace.breathe()
                key = layout.bridged_blob_key(digest)
                if self._old(await modified(self._storage, key)):
                    await self._storage.remove(key)
                    self.report.removed(kinds.BRIDGE_RECORDS, key, 0)
        # Manifests made for V1 images that are gone (removed by hand, or by another run).
        for image_id in await self._storage.list_directory(layout.BRIDGED_MANIFESTS):
            if layout.is_image_id(image_id) and image_id not in images:
                key = layout.bridged_manifest_key(image_id)
                if (self._old(await modified(self._storage, key))
                        and not await self._storage.exists(layout.image_json_key(image_id))):
                    await self._storage.remove(key)
                    self.report.removed(kinds.BRIDGE_RECORDS, key, 0)

    async def _sweep_blobs(self, old_blobs: list[Digest]) -> None:
        if not old_blobs:
            return
        candidates = set(old_blobs)
        kept = (await self._confirmed(await self._linked(), candidates)
                | await self._bridged_manifests(await self._kept_images_now()))

        async def sweep(digest: Digest) -> None:
            key = layout.blob_data_key(digest)
            if not self._old(await modified(self._storage, key)):
                return
            size = await self._size(key)
            await self._storage.remove(key)
            await _prune(self._storage, layout.blob_key(digest))
            self.report.removed(kinds.BLOBS, key, size)

        await self._pace.each(sweep, [digest for digest in old_blobs if digest not in kept])

    async def _sweep_v1_views(self) -> None:
        """
        The V1 view of a layer of a V2 image goes with the layer's bytes. Not with the
        manifest it was made from: V1 images are shared by the V2 images whose lower layers
        and history are the same, and one of those may stay.
        """
        storage = self._storage
        for image_id in await storage.list_directory(layout.BRIDGED_IMAGES):
            await self._pace.breathe()
            key = layout.bridged_image_key(image_id)
            content = await _read(storage, key)
            try:
                record = parse_json(content) if content is not None else None
                layer = parse_digest(record["layer"])
            except (ValueError, TypeError, KeyError, DigestInvalid):
                continue
            stored = (await storage.exists(layout.blob_data_key(layer))
                      or await storage.exists(layout.bridged_blob_key(layer)))
            if not stored and self._old(await modified(storage, key)):
                await storage.remove_tree(layout.bridged_image_directory(image_id))
                self.report.removed(kinds.BRIDGE_RECORDS, key, 0)


async def collect(storage: IStorage, clock: IReactorTime, rules: Rules, *,
                  dry_run: bool = False, pace: Pace | None = None,
                  progress: Progress | None = None) -> Report:
    """One collection over C{storage} (see the module's docstring); its report."""
    return await Collection(storage, clock, rules, dry_run=dry_run, pace=pace,
                            progress=progress).run()
