# -*- test-case-name: tests.test_checksums -*-
"""
Layer checksums (contract §8): the payload checksum the server checks, and tarsum v0 for tools.
"""

from __future__ import annotations

import hashlib
import math
import queue
import tarfile
import threading
from typing import BinaryIO

from twisted.internet import defer

from twistreg.registry.layerfiles import open_layer

_CHUNK = 1 << 20

_TARSUM_FIELDS = (
    "name",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime",
    "typeflag",
    "linkname",
    "uname",
    "gname",
    "devmajor",
    "devminor",
)


class PayloadHasher:
    """
    The payload checksum computed while a layer streams in, so the layer is never re-read.

    @param image_json: the image JSON exactly as stored by R8.
    """

    __slots__ = ("_sha",)

    def __init__(self, image_json: bytes) -> None:
        self._sha = hashlib.sha256(image_json + b"\n")

    def update(self, chunk: bytes) -> None:
        # Called once per received chunk of multi-GiB layers: nothing but the hash here.
        self._sha.update(chunk)

    def checksum(self) -> str:
        """The value stored in C{_checksum} and compared verbatim by R5."""
        return "sha256:" + self._sha.hexdigest()


class BackgroundPayloadHasher:
    """
    The payload checksum computed in a thread of its own while the reactor receives and
    writes the layer: hashlib releases the GIL on large buffers, so the hash runs beside
    the rest instead of after it.

    At most C{limit} bytes wait to be hashed; past that, L{update} returns a Deferred that
    fires when the thread has caught up, so the caller can pause the client.

    @param reactor: where the thread's news is delivered (C{callFromThread}).
    """

    def __init__(self, reactor, image_json: bytes, limit: int = 4 * _CHUNK) -> None:
        self._reactor = reactor
        self._hasher = PayloadHasher(image_json)
        self._limit = limit
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._stopped = False
        self._caught_up: defer.Deferred[None] | None = None
        self._finished: defer.Deferred[None] = defer.Deferred()
        threading.Thread(target=self._run, name="twistreg-hash", daemon=True).start()

    def update(self, chunk: bytes) -> defer.Deferred[None] | None:
        """Queue C{chunk}; a Deferred result asks the caller to wait for it."""
        with self._lock:
            # Counted before the thread can see it, so the count never goes below zero.
            self._queued += len(chunk)
            waiting = self._queued > self._limit
            if waiting and self._caught_up is None:
                self._caught_up = defer.Deferred()
            caught_up = self._caught_up if waiting else None
        self._chunks.put(chunk)
        return caught_up

    async def checksum(self) -> str:
        """The checksum, once every queued chunk is hashed."""
        self._chunks.put(None)
        await self._finished
        return self._hasher.checksum()

    def stop(self) -> None:
        """Forget the rest: the thread ends without hashing what is queued."""
        self._stopped = True
        self._chunks.put(None)

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if not self._stopped:
                self._hasher.update(chunk)
            with self._lock:
                self._queued -= len(chunk)
                if self._caught_up is not None and self._queued <= self._limit // 2:
                    caught_up, self._caught_up = self._caught_up, None
                    self._reactor.callFromThread(caught_up.callback, None)
        self._reactor.callFromThread(self._finished.callback, None)


def payload_checksum(image_json: bytes, layer: bytes) -> str:
    """The payload checksum of a layer held in memory (tests and tools)."""
    hasher = PayloadHasher(image_json)
    hasher.update(layer)
    return hasher.checksum()


def tarsum(image_json: bytes, layer: BinaryIO) -> str:
    """
    Docker's tarsum v0 (C{tarsum+sha256:<hex>}), which docker 1.x sends and twistreg never checks.

    Extended headers are not members and their extra records (xattrs...) are not hashed; the
    name, sizes and times they carry are, as tarfile applies them to the member they describe.

    @param layer: a plain, gzip, bzip2 or xz tar stream, read once, forward only.
    @raise twistreg.registry.layerfiles.LayerFormatError: the layer is not a readable tar.
    """
    digests = []
    with open_layer(layer) as tar:
        for member in tar:
            sha = hashlib.sha256(_tarsum_header(member))
            # Content is whatever the archive holds after the header: regular files, and
            # members of unknown types, as docker's tar reader and 0.9.1's extractfile see it.
            if member.size > 0 and (member.isreg() or member.type not in tarfile.SUPPORTED_TYPES):
                content = tar.extractfile(member)
                while chunk := content.read(_CHUNK):
                    sha.update(chunk)
            digests.append(sha.hexdigest())
    digests.sort()
    return "tarsum+sha256:" + hashlib.sha256(image_json + "".join(digests).encode()).hexdigest()


def _tarsum_header(member: tarfile.TarInfo) -> bytes:
    name = member.name
    if member.isdir() and not name.endswith("/"):
        name += "/"
    values = (
        name,
        member.mode,
        member.uid,
        member.gid,
        member.size,
        # A pax mtime is fractional; docker hashes whole seconds (Go's Time.Unix floors).
        math.floor(member.mtime),
        member.type.decode("latin-1"),
        member.linkname,
        member.uname,
        member.gname,
        member.devmajor,
        member.devminor,
    )
    text = "".join(f"{field}{value}" for field, value in zip(_TARSUM_FIELDS, values))
    # surrogateescape gives back the raw header bytes of names that are not valid UTF-8.
    return text.encode("utf-8", "surrogateescape")
