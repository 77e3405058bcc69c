# -*- test-case-name: tests.test_checksums -*-
"""
Checksums computed while bodies stream: V1's payload checksum (contract §8), V2's content
digests, the thread-pool runner both use, and tarsum v0 for tools.
"""

from __future__ import annotations

import hashlib
import math
import tarfile
from typing import BinaryIO, Protocol

from twisted.internet import defer, threads
from twisted.python.failure import Failure

from twistreg.tarfiles import open_layer

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


class DigestHasher:
    """
    A V2 content digest (C{<algorithm>:<hex>}) computed while a blob streams in, so the blob
    is never re-read to check the digest the client gave.

    @param algorithm: a C{hashlib} name (C{sha256}, C{sha512}).
    """

    __slots__ = ("_algorithm", "_hash")

    def __init__(self, algorithm: str = "sha256") -> None:
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def checksum(self) -> str:
        """The digest as a client writes it, to compare with the one it sent."""
        return f"{self._algorithm}:{self._hash.hexdigest()}"


class Hasher(Protocol):
    """What L{BackgroundHasher} runs: L{PayloadHasher}, L{DigestHasher}."""

    def update(self, chunk: bytes) -> None: ...

    def checksum(self) -> str: ...


class BackgroundHasher:
    """
    A checksum computed in the reactor's thread pool while the reactor receives and writes
    the body: hashlib releases the GIL on large buffers, so the hash runs beside the rest
    instead of after it.

    Chunks wait in a queue until a batch's worth is there (1 MiB, or half of C{limit} if
    that is less; or the checksum is asked for); whatever is queued when the pool is free
    then goes there as one batch, so the thread hops are one per batch, not one per chunk
    read from the socket, and batches run one after the other because the hash depends on
    the order.  At most C{limit} bytes wait to be
    hashed; past that, L{update} returns a Deferred that fires when the pool has caught up,
    so the caller can pause the client.

    @param reactor: provides the thread pool (C{getThreadPool}) and delivers its results
        (C{callFromThread}); a test reactor may run both synchronously.
    @param hasher: fed the body in order, in the pool's threads; asked for its checksum once.
    """

    def __init__(self, reactor, hasher: Hasher, limit: int = 4 * _CHUNK) -> None:
        self._reactor = reactor
        self._hasher = hasher
        self._limit = limit
        self._batch = max(1, min(_CHUNK, limit // 2))
        self._queue: list[bytes] = []
        self._queued = 0
        self._hashing = False
        self._stopped = False
        self._flushing = False
        self._caught_up: defer.Deferred[None] | None = None
        self._idle: list[defer.Deferred[None]] = []
        self._failure: Failure | None = None

    def update(self, chunk: bytes) -> defer.Deferred[None] | None:
        """Queue C{chunk}; a Deferred result asks the caller to wait for it."""
        if self._stopped:
            return None
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._next_batch()
        if self._queued <= self._limit:
            return None
        if self._caught_up is None:
            self._caught_up = defer.Deferred()
        return self._caught_up

    async def checksum(self) -> str:
        """The checksum, once every queued chunk is hashed."""
        self._flushing = True
        self._next_batch()
        if self._hashing:
            idle: defer.Deferred[None] = defer.Deferred()
            self._idle.append(idle)
            await idle
        if self._failure is not None:
            self._failure.raiseException()
        return self._hasher.checksum()

    def stop(self) -> None:
        """Forget the rest: what is queued is never hashed, and nobody is kept waiting."""
        self._stopped = True
        self._queue.clear()
        self._queued = 0
        self._resume_caller()

    def _next_batch(self) -> None:
        if self._hashing or not self._queue or self._stopped:
            return
        if self._queued < self._batch and not self._flushing:
            return
        batch, self._queue = self._queue, []
        # Set before the hop: a synchronous pool reports back before deferToThreadPool returns.
        self._hashing = True
        threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._hash, batch
        ).addBoth(self._hashed, batch)

    def _hash(self, batch: list[bytes]) -> None:
        for chunk in batch:
            self._hasher.update(chunk)

    def _hashed(self, result: None | Failure, batch: list[bytes]) -> None:
        self._hashing = False
        if isinstance(result, Failure):
            # Nothing in hashlib fails on bytes; should the pool, the checksum says so.
            self._failure = result
            self.stop()
        if not self._stopped:
            self._queued -= sum(map(len, batch))
        if self._queued <= self._limit // 2:
            self._resume_caller()
        self._next_batch()
        if not self._hashing:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)

    def _resume_caller(self) -> None:
        if self._caught_up is not None:
            caught_up, self._caught_up = self._caught_up, None
            caught_up.callback(None)


class Writer(Protocol):
    """What L{feed} writes to: a storage writer (L{twistreg.storage.interface.IWriter})."""

    def write(self, data: bytes) -> defer.Deferred[None] | None: ...


def feed(hasher: BackgroundHasher, writer: Writer | None,
         data: bytes) -> defer.Deferred[None] | None:
    """
    Give one piece of a body to its hasher and to the writer storing it (None when the
    bytes are only hashed), so that both go at the pace of the slower.

    @return: None when both took it, else a Deferred firing once both can take more; it
        fails with the first failure as it is (a storage failure stays a 503, not the 500 of
        a C{FirstError}).
    """
    waits = [hasher.update(data)]
    if writer is not None:
        waits.append(writer.write(data))
    waiting = [wait for wait in waits if wait is not None]
    if not waiting:
        return None
    if len(waiting) == 1:
        return waiting[0]
    return defer.gatherResults(waiting, consumeErrors=True).addCallbacks(
        lambda _: None,
        lambda failure: failure.value.subFailure if failure.check(defer.FirstError)
        else failure)


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
    @raise twistreg.tarfiles.LayerFormatError: the layer is not a readable tar.
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
