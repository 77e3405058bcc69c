# -*- test-case-name: tests.test_checksums -*-
"""
Checksums computed while bodies stream: V1's payload checksum (contract §8), V2's content
digests, what the bridge needs to know of a V1 layer (its V2 digest, diff id and media type),
the thread-pool runner they use, and tarsum v0 for tools.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
import zlib
from typing import BinaryIO, Generic, Protocol, TypeVar

import attrs
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


#: The media type of a gzip layer in a Docker schema2 manifest.
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
#: The media type of a plain tar layer: OCI's (schema2 has none that every client accepts).
TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"
#: What L{LayerFacts.compression} may say.
COMPRESSIONS = ("gzip", "bzip2", "xz", "none")

# The first bytes of each compressed format tarfile reads; anything else is taken as a tar.
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_SNIFF = max(len(magic) for magic, _ in _MAGIC)
_BLOCK = tarfile.BLOCKSIZE
# Inflated bytes asked of zlib per call: a MiB of gzip can inflate to a GiB of zeros.
_INFLATE_STEP = _CHUNK
_SHA256 = r"sha256:[0-9a-f]{64}"


def _check_bridgeable(facts: LayerFacts, attribute: attrs.Attribute, problem: str | None) -> None:
    if (problem is None) != (facts.diff_id is not None and facts.media_type is not None):
        raise ValueError("a layer has a diff id and a media type exactly when it is bridgeable")
    if problem is not None and facts.empty:
        raise ValueError("a layer that cannot be bridged is not known to be empty")


@attrs.frozen
class LayerFacts:
    """
    What the V1 ⇄ V2 bridge must know of a V1 layer to serve it as a blob, computed from its
    bytes as stored.

    @ivar digest: C{sha256:<hex>} of the bytes as stored: the blob's digest.
    @ivar size: how many bytes are stored.
    @ivar compression: C{gzip}, C{bzip2}, C{xz} or C{none}, as the first bytes say.
    @ivar diff_id: C{sha256:<hex>} of the uncompressed tar: the image config's C{diff_ids}.
    @ivar media_type: L{GZIP_LAYER} or L{TAR_LAYER}.
    @ivar empty: the layer holds no member (a zero-byte body, or nothing but zero blocks once
        uncompressed), so it becomes an C{empty_layer} history entry, not a layer.
    @ivar problem: why V2 clients cannot be given the layer, None when they can; then there
        is no C{diff_id} nor C{media_type}, and C{empty} is False.
    """

    digest: str = attrs.field(validator=attrs.validators.matches_re(_SHA256))
    size: int = attrs.field(validator=[attrs.validators.instance_of(int),
                                       attrs.validators.ge(0)])
    compression: str = attrs.field(validator=attrs.validators.in_(COMPRESSIONS))
    diff_id: str | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.matches_re(_SHA256)))
    media_type: str | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.in_((GZIP_LAYER, TAR_LAYER))))
    empty: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    problem: str | None = attrs.field(validator=[
        attrs.validators.optional(attrs.validators.instance_of(str)), _check_bridgeable])

    @property
    def bridgeable(self) -> bool:
        """Whether V2 clients can be given this layer."""
        return self.problem is None

    def to_json(self) -> bytes:
        """The stored form, one JSON object (docs/storage.md)."""
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, stored: bytes) -> LayerFacts:
        """
        Read what L{to_json} wrote; keys it does not know are left for later versions.

        @raise ValueError: C{stored} is no such document.
        """
        try:
            document = json.loads(stored)
            return cls(**{field.name: document[field.name] for field in attrs.fields(cls)})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a layer facts document: {error!r}") from None


class _TarStream:
    """
    The uncompressed layer going by: its sha256 (unless it is the stored bytes themselves),
    its first block, and whether any of its bytes is not zero.
    """

    __slots__ = ("_sha", "_first", "nonzero")

    def __init__(self, hashed: bool) -> None:
        self._sha = hashlib.sha256() if hashed else None
        self._first = b""
        self.nonzero = False

    def update(self, data: bytes) -> None:
        if self._sha is not None:
            self._sha.update(data)
        if len(self._first) < _BLOCK:
            self._first += data[: _BLOCK - len(self._first)]
        # Scans only until the first byte that is not zero: the first header, in a real layer.
        if not self.nonzero and data.count(0) != len(data):
            self.nonzero = True

    def digest(self) -> str:
        assert self._sha is not None
        return "sha256:" + self._sha.hexdigest()

    def problem(self) -> str | None:
        """Why this is no tar that V2 clients unpack; None when it is one, or holds nothing."""
        if not self.nonzero:
            return None
        if len(self._first) < _BLOCK or self._first.count(0) == _BLOCK:
            # Too short for a header, or data after an end-of-archive block.
            return "not a tar archive"
        try:
            tarfile.TarInfo.frombuf(self._first, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            return "not a tar archive"
        return None


class LayerFactsHasher:
    """
    L{LayerFacts} computed as a layer streams, in one pass: the bytes are hashed as they come,
    and a gzip stream is inflated piece by piece on the way and its output hashed, so memory
    stays bounded whatever the layer's size and however well it compresses.

    Bytes V2 clients cannot take (bzip2, xz, a corrupt or truncated gzip stream, no tar) are
    no error: 0.9.1 stored any bytes, and the facts say why the layer cannot be bridged.
    """

    __slots__ = ("_digest", "_size", "_head", "_compression", "_inflater", "_pending",
                 "_tar", "_problem")

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._size = 0
        self._head = b""
        self._compression: str | None = None
        # The gzip member being inflated: None between members.
        self._inflater = None
        self._pending = False
        self._tar = _TarStream(hashed=False)
        self._problem: str | None = None

    def update(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self._size += len(chunk)
        if self._compression is None:
            chunk = self._head + chunk
            if len(chunk) < _SNIFF:
                self._head = chunk
                return
            self._head = b""
            self._start(chunk)
        self._take(chunk)

    def _take(self, chunk: bytes) -> None:
        if self._problem is not None:
            return
        if self._compression == "gzip":
            self._inflate(chunk)
        else:
            self._tar.update(chunk)

    def _start(self, head: bytes) -> None:
        self._compression = next(
            (name for magic, name in _MAGIC if head.startswith(magic)), "none")
        if self._compression in ("bzip2", "xz"):
            self._problem = f"{self._compression} layers have no media type V2 clients pull"
        elif self._compression == "gzip":
            self._tar = _TarStream(hashed=True)

    def _inflate(self, data: bytes) -> None:
        try:
            while data or self._pending:
                if self._inflater is None:
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                inflated = self._inflater.decompress(data, _INFLATE_STEP)
                self._tar.update(inflated)
                # A full step may leave output inside zlib for input it already took.
                self._pending = len(inflated) == _INFLATE_STEP
                if self._inflater.eof:
                    # Members may follow one another (gzip files put end to end), as Go's
                    # reader takes them; anything else after the last fails the next header.
                    data, self._inflater, self._pending = self._inflater.unused_data, None, False
                else:
                    data = self._inflater.unconsumed_tail
        except zlib.error as error:
            self._problem = f"corrupt gzip stream ({error})"

    def facts(self) -> LayerFacts:
        """The facts of the layer, once every byte of it went through L{update}."""
        if self._compression is None:  # fewer bytes than a magic number
            head, self._head = self._head, b""
            self._start(head)
            self._take(head)
        digest = "sha256:" + self._digest.hexdigest()
        assert self._compression is not None
        problem = self._problem
        if problem is None and self._inflater is not None:
            problem = "truncated gzip stream"
        if problem is None:
            problem = self._tar.problem()
        if problem is not None:
            return LayerFacts(digest, self._size, self._compression, None, None, False, problem)
        gzipped = self._compression == "gzip"
        return LayerFacts(
            digest=digest,
            size=self._size,
            compression=self._compression,
            diff_id=self._tar.digest() if gzipped else digest,
            media_type=GZIP_LAYER if gzipped else TAR_LAYER,
            empty=not self._tar.nonzero,
            problem=None,
        )


class Hasher(Protocol):
    """What L{BackgroundHasher} runs: L{PayloadHasher}, L{DigestHasher}."""

    def update(self, chunk: bytes) -> None: ...

    def checksum(self) -> str: ...


H = TypeVar("H", bound=Hasher)


class BackgroundHasher(Generic[H]):
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

    def __init__(self, reactor, hasher: H, limit: int = 4 * _CHUNK) -> None:
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

    async def finish(self) -> H:
        """The hasher, once every queued chunk went through it: ask it for its results."""
        self._flushing = True
        self._next_batch()
        if self._hashing:
            idle: defer.Deferred[None] = defer.Deferred()
            self._idle.append(idle)
            await idle
        if self._failure is not None:
            self._failure.raiseException()
        return self._hasher

    async def checksum(self) -> str:
        """The checksum, once every queued chunk is hashed."""
        return (await self.finish()).checksum()

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
