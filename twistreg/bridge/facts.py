# -*- test-case-name: tests.test_bridge_facts -*-
"""
The facts the bridge serves a V1 layer to V2 clients by (L{LayerFacts}: its digest, diff id,
size, media type, emptiness), kept beside the layer in C{images/<id>/_layer_facts}.

The layer PUT writes them as the layer streams in (L{twistreg.registry.images.LayerUpload}).
"""

from __future__ import annotations

from twisted.logger import Logger

from twistreg.checksums import LayerFacts
from twistreg.layout import image_layer_facts_key
from twistreg.storage.interface import IStorage, KeyNotFound

log = Logger()


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
