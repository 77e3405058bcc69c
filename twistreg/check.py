# -*- test-case-name: tests.test_check -*-
"""
C{python -m twistreg check}: read everything storage holds and say what is wrong with it,
without changing a byte unless asked to (C{--repair} moves what is wrong aside).

What it finds:
  - L{CORRUPT}: bytes that do not match what was recorded of them: a V1 layer against its
    payload checksum (or tarsum) and its layer facts, a V2 blob against its digest;
  - L{TORN}: an object a writer left half-written: a V1 image with files but no json, a layer
    without its checksum once the push is over, a blob directory without its data;
  - L{ORPHANED}: a link or record naming bytes that are not stored: a repository's blob or
    manifest link, a bridged blob or a V1 view of a V2 image whose layer is gone;
  - L{TEMPORARY}: files of writers that died mid-write (local storage).

Safe while servers run: an image still being pushed is left alone, and what a push is
writing is younger than the check's view of it. Repair moves a file to
C{twistreg/quarantine/<time>/<its key>}, never deletes bytes: a client can push the object
again, and an operator can look at what was wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from typing import Any

import attrs
from twisted.internet import threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime

from twistreg import layout
from twistreg.bridge.v2_to_v1 import BridgedImage
from twistreg.checksums import PayloadHasher, tarsum
from twistreg.commands import add_storage_command, walk_storage
from twistreg.oci.errors import DigestInvalid
from twistreg.oci.names import parse_digest
from twistreg.oci.repositories import Repositories
from twistreg.registry.images import parse_checksums
from twistreg.registry.layerfacts import hash_stored, image_ids, read_layer_facts
from twistreg.storage.interface import IStorage, KeyNotFound
from twistreg.walking import INTERRUPTED, Pace, Progress, Stopped

CORRUPT = "corrupt"
TORN = "torn"
ORPHANED = "orphaned"
TEMPORARY = "temporary"
KINDS = (CORRUPT, TORN, ORPHANED, TEMPORARY)


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{check} to the subcommands of C{python -m twistreg}."""
    add_storage_command(
        commands, "check", _check,
        help="verify every layer and blob, find torn, orphaned and temporary files",
        description="Read every V1 layer and V2 blob and check it against its checksum or"
        " digest; find objects writers left half-written, links and records naming what is"
        " not stored, and temporary files of dead writers. Changes nothing unless --repair"
        " is given: then what is wrong moves under twistreg/quarantine/. Safe while servers"
        " run; exit status 1 when something is wrong.",
    )
    parser = commands.choices["check"]
    parser.add_argument("--repair", action="store_true",
                        help="move what is wrong aside (twistreg/quarantine/<time>/)")


#: Where repair moves what is wrong, under the time of the run.
QUARANTINE = "twistreg/quarantine"


@attrs.frozen
class Finding:
    """Something wrong: its kind, the key (a file, or a directory for a torn one), and why."""

    kind: str
    key: str
    why: str


@attrs.define
class CheckReport:
    """
    What a check found and did.

    @ivar checked: how many objects of each sort were read (V1 layers, blobs, links ...).
    @ivar moved: with repair, where each moved key went.
    """

    findings: list[Finding] = attrs.field(factory=list)
    checked: dict[str, int] = attrs.field(factory=dict)
    moved: dict[str, str] = attrs.field(factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, sort: str) -> None:
        self.checked[sort] = self.checked.get(sort, 0) + 1

    def found(self, kind: str, key: str, why: str) -> None:
        self.findings.append(Finding(kind, key, why))

    def as_dict(self) -> dict[str, Any]:
        """The report as C{--json} prints it."""
        return {"checked": self.checked,
                "findings": [attrs.asdict(finding) for finding in self.findings],
                "moved": self.moved, "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted}

    def summary(self, storage_name: str) -> str:
        counts = {kind: sum(f.kind == kind for f in self.findings) for kind in KINDS}
        found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) or "nothing wrong"
        checked = ", ".join(f"{n} {sort}" for sort, n in self.checked.items()) or "nothing"
        moved = f"; {len(self.moved)} moved aside" if self.moved else ""
        return (f"checked {checked} in {storage_name} storage in {self.seconds:.1f} s:"
                f" {found}{moved}")


class Checker:
    """One check over one storage (see the module's docstring)."""

    def __init__(self, storage: IStorage, reactor: IReactorThreads, pace: Pace,
                 progress: Progress, report: CheckReport) -> None:
        self._storage = storage
        self._reactor = reactor
        self._pace = pace
        self._progress = progress
        self._report = report
        self._repositories = Repositories(storage)

    async def run(self) -> None:
        await self._phase("V1 images", await image_ids(self._storage), self._image)
        await self._phase("V2 blobs", await self._blob_directories(), self._blob)
        names = await self._repositories.catalog()
        await self._phase("V2 repositories", names, self._links)
        await self._phase("bridged blobs", await self._listed(
            f"{layout.BRIDGED_BLOBS}/sha256"), self._bridged_blob)
        await self._phase("V1 views of V2 images", await self._listed(layout.BRIDGED_IMAGES),
                          self._bridged_image)
        temporary = getattr(self._storage, "dead_temporary_files", None)
        if temporary is not None:
            for key in await self._reactor_thread(temporary):
                self._report.found(TEMPORARY, key, "left by a writer that died")

    async def _phase(self, name: str, items: list[str], check: Any) -> None:
        self._progress.phase(name, len(items))

        async def one(item: str) -> None:
            await check(item)
            self._progress.advance()

        await self._pace.each(one, items)

    async def _listed(self, directory: str) -> list[str]:
        return sorted(await self._storage.list_directory(directory))

    async def _reactor_thread(self, function: Any) -> Any:
        return await threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                               function)

    async def _read_through(self, key: str, *hashers: Any) -> None:
        class Both:
            def update(self, chunk: bytes) -> None:
                for hasher in hashers:
                    hasher.update(chunk)

        await hash_stored(self._storage, self._reactor, key, Both(), self._pace.stopping)

    # V1

    async def _image(self, image_id: str) -> None:
        storage, report = self._storage, self._report
        if await storage.exists(layout.image_inprogress_key(image_id)):
            return  # a push in flight: its files come one after the other
        try:
            document = await storage.get_content(layout.image_json_key(image_id))
        except KeyNotFound:
            entries = await storage.list_directory(layout.IMAGES + "/" + image_id)
            if entries:
                report.found(TORN, f"{layout.IMAGES}/{image_id}",
                             f"files ({', '.join(sorted(entries))}) but no json")
            return
        layer_key = layout.image_layer_key(image_id)
        if not await storage.exists(layer_key):
            return  # json alone: a push that stopped before its layer, as 0.9.1 leaves it
        report.count("V1 layers")
        try:
            checksums = parse_checksums(
                await storage.get_content(layout.image_checksum_key(image_id)))
        except KeyNotFound:
            report.found(TORN, layer_key, "a layer without its _checksum")
            return
        payload = PayloadHasher(document)
        raw = hashlib.sha256()
        await self._read_through(layer_key, payload, raw)
        sha256 = [c for c in checksums if c.startswith("sha256:")]
        if sha256 and payload.checksum() not in sha256:
            report.found(CORRUPT, layer_key,
                         f"payload checksum {payload.checksum()}, {sha256[0]} recorded")
        elif not sha256 and not await self._tarsum_matches(document, layer_key, checksums):
            report.found(CORRUPT, layer_key, "its tarsum is none of those recorded")
        facts = await read_layer_facts(storage, image_id)
        if facts is not None and facts.digest != "sha256:" + raw.hexdigest():
            report.found(CORRUPT, layout.image_layer_facts_key(image_id),
                         f"names digest {facts.digest}, the layer has sha256:{raw.hexdigest()}")

    async def _tarsum_matches(self, document: bytes, layer_key: str,
                              checksums: list[str]) -> bool:
        recorded = [c for c in checksums if c.startswith("tarsum+sha256:")]
        if not recorded:
            return True  # nothing recorded that can be checked
        layer = await self._storage.open_file(layer_key)

        def compute() -> str:
            with layer:
                return tarsum(document, layer)

        try:
            return await self._reactor_thread(compute) in recorded
        except Exception:
            return False  # not a tar: the tarsum recorded cannot be its

    # V2

    async def _blob_directories(self) -> list[str]:
        root = f"{layout.V2_BLOBS}/sha256"
        found = []
        for prefix in await self._listed(root):
            found += [f"{root}/{prefix}/{hex_digest}"
                      for hex_digest in await self._listed(f"{root}/{prefix}")]
        return found

    async def _blob(self, directory: str) -> None:
        hex_digest = directory.rsplit("/", 1)[1]
        data = f"{directory}/data"
        if not await self._storage.exists(data):
            self._report.found(TORN, directory, "a blob directory without data")
            return
        self._report.count("V2 blobs")
        digest = hashlib.sha256()
        await self._read_through(data, digest)
        if digest.hexdigest() != hex_digest:
            self._report.found(CORRUPT, data, f"its bytes have sha256:{digest.hexdigest()}")

    async def _links(self, name: str) -> None:
        for directory in (layout.layer_links_key(name, "sha256"),
                          layout.revisions_key(name, "sha256")):
            for hex_digest in await self._listed(directory):
                key = f"{directory}/{hex_digest}/link"
                self._report.count("V2 links")
                try:
                    digest = parse_digest((await self._storage.get_content(key)).decode("ascii"))
                except (KeyNotFound, UnicodeDecodeError, DigestInvalid):
                    self._report.found(TORN, f"{directory}/{hex_digest}", "no readable link")
                    continue
                if digest.hex != hex_digest:
                    self._report.found(TORN, f"{directory}/{hex_digest}",
                                       f"its link names {digest}")
                elif await self._repositories.stored_location(digest) is None:
                    self._report.found(ORPHANED, f"{directory}/{hex_digest}",
                                       f"links {digest}, which is not stored")

    async def _bridged_blob(self, hex_digest: str) -> None:
        key = f"{layout.BRIDGED_BLOBS}/sha256/{hex_digest}"
        self._report.count("bridged blobs")
        image_id = (await self._storage.get_content(key)).decode("ascii", "replace")
        if not (layout.is_image_id(image_id)
                and await self._storage.exists(layout.image_layer_key(image_id))):
            self._report.found(ORPHANED, key, f"names V1 image {image_id!r}, without a layer")

    async def _bridged_image(self, image_id: str) -> None:
        key = layout.bridged_image_key(image_id)
        self._report.count("V1 views")
        try:
            image = BridgedImage.from_json(await self._storage.get_content(key))
        except KeyNotFound:
            image = None
        directory = key.rpartition("/")[0]
        if image is None:
            self._report.found(TORN, directory, "no readable V1 image")
        elif await self._repositories.stored_location(image.layer) is None:
            self._report.found(ORPHANED, directory, f"its layer {image.layer} is not stored")


async def check(storage: IStorage, reactor: IReactorThreads | IReactorTime, *, repair: bool,
                progress: Progress, stopping: threading.Event | None = None) -> CheckReport:
    """
    Check the whole storage (see the module's docstring); with C{repair}, then move what was
    found aside. C{stopping} set stops it between two objects (C{interrupted}).
    """
    report = CheckReport()
    started = time.monotonic()
    pace = Pace(reactor, stopping)
    try:
        await Checker(storage, reactor, pace, progress, report).run()
    except Stopped:
        report.interrupted = True
    if repair and not report.interrupted:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(reactor.seconds()))
        for finding in report.findings:
            report.moved.update(await _move_aside(storage, finding, f"{QUARANTINE}/{stamp}"))
    report.seconds = time.monotonic() - started
    return report


async def _move_aside(storage: IStorage, finding: Finding, quarantine: str) -> dict[str, str]:
    """
    Move the file a finding names, or every file of the directory it names, under
    C{quarantine}; the directory goes (a link's, an image's: the object is its directory).
    """
    moved = {}
    entries = await storage.list_directory(finding.key)
    for key in [f"{finding.key}/{entry}" for entry in entries] if entries else [finding.key]:
        try:
            await storage.move(key, f"{quarantine}/{key}")
        except KeyNotFound:
            continue  # gone meanwhile, a directory below, or an empty directory
        moved[key] = f"{quarantine}/{key}"
    if entries or finding.kind == TORN:
        await storage.remove_tree(finding.key)
    return moved


async def _check(reactor, options: argparse.Namespace) -> None:
    storage, report = await walk_storage(
        reactor, "check", options, lambda settings, storage, stopping, progress: check(
            storage, reactor, repair=options.repair, progress=progress, stopping=stopping))
    if options.json:
        print(json.dumps(report.as_dict()))
    else:
        for finding in report.findings:
            moved = any(key == finding.key or key.startswith(finding.key + "/")
                        for key in report.moved)
            print(f"{finding.kind}: {finding.key}: {finding.why}"
                  + (" (moved aside)" if moved else ""))
        print(report.summary(storage.name))
    if report.interrupted:
        print("twistreg check: interrupted; run it again to check everything", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    if report.findings:
        raise SystemExit(1)
