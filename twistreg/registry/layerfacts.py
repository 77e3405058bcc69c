# -*- test-case-name: tests.test_bridge_facts -*-
"""
The facts the bridge serves a V1 layer to V2 clients by (L{LayerFacts}: its digest, diff id,
size, media type, emptiness), kept beside the layer in C{images/<id>/_layer_facts}.

An image gets them once it is complete (R5), from L{fill_layer_facts}, in the background:
inflating a gzip layer costs ten times what storing it does, and a push must not wait for
it. Layers stored otherwise (before twistreg computed them, by 0.9.1, by the mirror) get
theirs from C{python -m twistreg bridge}, which runs it over the whole tree.
"""

from __future__ import annotations

import enum
import threading
from typing import BinaryIO, Protocol

from twisted.internet import threads
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from twistreg.checksums import LayerFacts, LayerFactsHasher
from twistreg.layout import (
    IMAGES,
    image_inprogress_key,
    image_json_key,
    image_layer_facts_key,
    image_layer_key,
    is_image_id,
)
from twistreg.storage.interface import IStorage, KeyNotFound
from twistreg.walking import Stopped

log = Logger()

_READ_SIZE = 1 << 20


class Fed(Protocol):
    """What reads a stored value through: a hasher."""

    def update(self, chunk: bytes) -> None: ...


async def read_layer_facts(storage: IStorage, image_id: str) -> LayerFacts | None:
    """
    The facts stored for an image's layer; None when there are none, or when the file cannot
    be read as facts (they can always be computed again from the layer).
    """
    key = image_layer_facts_key(image_id)
    try:
        stored = await storage.get_content(key)
    except KeyNotFound:
        return None
    try:
        return LayerFacts.from_json(stored)
    except ValueError as error:
        log.warn("unreadable {key}: {error}", key=key, error=error)
        return None


class Outcome(enum.Enum):
    """What L{fill_layer_facts} found, or did, for one image."""

    #: The facts were computed from the layer and written.
    WRITTEN = "written"
    #: Readable facts were there already (a push wrote them, or an earlier run).
    PRESENT = "present"
    #: The image is in progress: its push writes them, when it stores the layer.
    IN_PROGRESS = "in progress"
    #: No layer to describe: the image has none, or no json (it does not exist).
    NO_LAYER = "no layer"


async def image_ids(storage: IStorage) -> list[str]:
    """The ids of the images in the tree, in order (the names in C{images/} that are ids)."""
    return sorted(entry for entry in await storage.list_directory(IMAGES) if is_image_id(entry))


async def fill_layer_facts(
    storage: IStorage, reactor: IReactorThreads, image_id: str, stopping: threading.Event
) -> tuple[Outcome, LayerFacts | None]:
    """
    Give a complete image's layer its facts when it has none: read the layer once, in the
    reactor's thread pool, a MiB at a time.

    Safe while servers run: an image in progress is left to its push, and a complete image's
    layer cannot change (R4 and R8 answer 409), so facts found at the end, whoever wrote
    them, are kept, and facts written here are the ones a push would have written.

    @param stopping: once set, the layer being read is given up on (L{Stopped}), nothing
        written; on S3, once the layer being fetched into a temporary file has arrived.
    @return: what was found or done, and the image's facts when there are some.
    @raise Stopped: C{stopping} was set while the layer was read.
    """
    facts = await read_layer_facts(storage, image_id)
    if facts is not None:
        return Outcome.PRESENT, facts
    if await storage.exists(image_inprogress_key(image_id)):
        return Outcome.IN_PROGRESS, None
    if not await storage.exists(image_json_key(image_id)):
        return Outcome.NO_LAYER, None
    try:
        layer = await storage.open_file(image_layer_key(image_id))
    except KeyNotFound:
        return Outcome.NO_LAYER, None

    hasher = LayerFactsHasher()
    await _hash_file(reactor, layer, hasher, stopping)
    facts = hasher.facts()
    present = await read_layer_facts(storage, image_id)
    if present is not None:
        return Outcome.PRESENT, present
    await storage.put_content(image_layer_facts_key(image_id), facts.to_json())
    return Outcome.WRITTEN, facts


async def hash_stored(storage: IStorage, reactor: IReactorThreads, key: str, hasher: Fed,
                      stopping: threading.Event | None = None) -> None:
    """
    Feed the value of C{key} to C{hasher}, read once, a MiB at a time, in the reactor's
    thread pool.

    @raise KeyNotFound: there is no such value.
    @raise Stopped: C{stopping} was set while it was read.
    """
    await _hash_file(reactor, await storage.open_file(key), hasher, stopping)


async def _hash_file(reactor: IReactorThreads, file: BinaryIO, hasher: Fed,
                     stopping: threading.Event | None) -> None:
    def read() -> None:
        with file:
            while chunk := file.read(_READ_SIZE):
                if stopping is not None and stopping.is_set():
                    raise Stopped()
                hasher.update(chunk)

    await threads.deferToThreadPool(reactor, reactor.getThreadPool(), read)
