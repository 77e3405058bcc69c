# -*- test-case-name: tests.test_bridge_facts -*-
"""
C{python -m twistreg bridge}: give every stored V1 layer the facts the bridge serves it to V2
clients by (L{twistreg.registry.layerfacts}): layers pushed before twistreg computed them,
stored by 0.9.1, kept by the mirror, or whose image a server completed and then stopped
before it had computed them.

Safe while servers run, and resumable: each image's facts are written whole or not at all, an
interruption (Ctrl-C, TERM) gives up the layer being read, and a run skips the images that
have theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import attrs

from twistreg.checksums import LayerFacts
from twistreg.commands import add_storage_command, walk_storage
from twistreg.registry.layerfacts import Outcome, fill_layer_facts, image_ids
from twistreg.storage.interface import IStorage
from twistreg.walking import INTERRUPTED, Progress, Stopped


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add C{bridge} to the subcommands of C{python -m twistreg}."""
    add_storage_command(
        commands, "bridge", _bridge,
        help="compute the V2 facts of stored V1 layers that lack them",
        description="Read once every layer of a complete image that has no _layer_facts file"
        " and write one: its V2 digest, diff id, size, media type and emptiness. Safe while"
        " servers run; an interrupted run goes on where it stopped.",
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@attrs.define
class Report:
    """What a run found and did, image by image."""

    images: int
    seen: int = 0
    counts: dict = attrs.field(factory=lambda: dict.fromkeys(Outcome, 0))
    #: Layers whose facts (written or found) say they cannot be bridged.
    unbridgeable: int = 0
    interrupted: bool = False

    def add(self, outcome: Outcome, facts: LayerFacts | None) -> None:
        self.seen += 1
        self.counts[outcome] += 1
        if facts is not None and not facts.bridgeable:
            self.unbridgeable += 1

    @property
    def written(self) -> int:
        return self.counts[Outcome.WRITTEN]

    def as_dict(self) -> dict[str, Any]:
        """The report as C{--json} prints it."""
        return {"images": self.images, "seen": self.seen, "unbridgeable": self.unbridgeable,
                "interrupted": self.interrupted,
                **{outcome.name.lower(): count for outcome, count in self.counts.items()}}

    def summary(self, storage: str) -> str:
        """The line a complete run ends with."""
        if self.written:
            parts = [f"wrote the layer facts of {_plural(self.written, 'image')} in {storage}"
                     " storage"]
        else:
            parts = [f"nothing to do: every complete image in {storage} storage has its layer"
                     " facts"]
        if self.counts[Outcome.IN_PROGRESS]:
            parts.append(f"{_plural(self.counts[Outcome.IN_PROGRESS], 'image')} in progress"
                         " skipped")
        if self.unbridgeable:
            parts.append(f"{_plural(self.unbridgeable, 'layer')} cannot be bridged")
        return "; ".join(parts)


async def fill_tree(storage: IStorage, reactor, stopping: threading.Event,
                    progress: Progress) -> Report:
    """
    L{fill_layer_facts} for every image of the tree, one after the other, until done or
    C{stopping} is set (then the report says it was interrupted).

    @param reactor: its thread pool reads the layers.
    """
    ids = await image_ids(storage)
    report = Report(images=len(ids))
    progress.phase("images", len(ids))
    for image_id in ids:
        if stopping.is_set():
            report.interrupted = True
            break
        try:
            outcome, facts = await fill_layer_facts(storage, reactor, image_id, stopping)
        except Stopped:
            report.interrupted = True
            break
        report.add(outcome, facts)
        progress.advance(f"{report.written} layer facts written")
    return report


async def _bridge(reactor, options: argparse.Namespace) -> None:
    storage, report = await walk_storage(
        reactor, "bridge", options, lambda settings, storage, stopping, progress: fill_tree(
            storage, reactor, stopping, progress))
    if options.json:
        print(json.dumps(report.as_dict()))
    if report.interrupted:
        print(f"twistreg bridge: interrupted after writing the layer facts of"
              f" {_plural(report.written, 'image')}; run it again to go on", file=sys.stderr)
        raise SystemExit(INTERRUPTED)
    if not options.json:
        print(report.summary(storage.name))
