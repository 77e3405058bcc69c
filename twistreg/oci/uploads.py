# -*- test-case-name: tests.test_oci_uploads -*-
"""
Blob uploads: sessions (POST, PATCH, PUT) whose state and chunks live in storage only, so
that any process continues a session another began, and monolithic uploads that stream
straight into place.

A session is a directory holding its state (JSON: the repository, the start time, and the
chunks recorded so far with their offset, size and sha256) and its chunks, each a key of its
own, hashed while it streams in and never read again for that.  Completing a session
publishes the blob: a single chunk whose sha256 is the digest is moved into place (a rename
on local storage); otherwise the chunks are streamed in order into the blob's writer and
hashed with the digest's algorithm, and the blob appears only when the digest matches.

Storage has no compare-and-swap: a chunk reads the state again just before recording
itself, which leaves the time of one state write for two requests appending to one session
at once (clients send a session's chunks one after the other).  Each chunk has a name of its
own, so a state never records bytes it did not hash.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistreg.checksums import BackgroundHasher, DigestHasher, feed
from twistreg.layout import (
    V2_UPLOADS,
    blob_data_key,
    is_upload_id,
    layer_link_key,
    link_content,
    upload_chunk_key,
    upload_chunk_name,
    upload_chunk_started,
    upload_chunks_key,
    upload_key,
    upload_state_key,
)
from twistreg.oci.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    ChunkOutOfOrder,
    DigestInvalid,
)
from twistreg.oci.names import Digest, parse_name
from twistreg.storage.interface import IStorage, IWriter, KeyNotFound

log = Logger()

#: The most chunks a session records: its state is read whole at every request.
MAX_CHUNKS = 10000


@attrs.frozen
class _Chunk:
    name: str
    offset: int
    size: int
    sha256: str


@attrs.frozen
class _State:
    """What a session's state key holds."""

    repository: str
    started: float
    chunks: tuple[_Chunk, ...] = ()

    @property
    def size(self) -> int:
        last = self.chunks[-1] if self.chunks else None
        return 0 if last is None else last.offset + last.size

    def with_chunk(self, chunk: _Chunk) -> _State:
        return attrs.evolve(self, chunks=(*self.chunks, chunk))

    def to_json(self) -> bytes:
        return json.dumps({
            "repository": self.repository,
            "started": self.started,
            "chunks": [attrs.asdict(chunk) for chunk in self.chunks],
        }).encode()

    @classmethod
    def parse(cls, data: bytes) -> _State:
        """
        @raise ValueError: not a state this module wrote (cut short, or not ours): its chunk
            names would make keys, and its offsets must follow each other.
        """
        try:
            document = json.loads(data)
            state = cls(_text(document["repository"]), _number(document["started"]))
            for entry in document["chunks"]:
                chunk = _Chunk(_text(entry["name"]), _count(entry["offset"]),
                               _count(entry["size"]), _text(entry["sha256"]))
                if upload_chunk_started(chunk.name) is None or chunk.offset != state.size:
                    raise ValueError("not a chunk of this state")
                state = state.with_chunk(chunk)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an upload state: {error}") from None
        return state


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(value)
    return value


def _mismatch(digest: Digest, actual: str) -> DigestInvalid:
    return DigestInvalid(f"digest {digest} is not that of the content ({actual})")


class _HashedBody:
    """A body hashed as it streams into a writer (or only hashed, when C{writer} is None)."""

    def __init__(self, writer: IWriter | None, hasher: BackgroundHasher) -> None:
        self._writer = writer
        self._hasher = hasher
        self.size = 0

    def write(self, data: bytes) -> defer.Deferred[None] | None:
        """Hash and store one piece of the body; a Deferred result asks for a pause."""
        self.size += len(data)
        return feed(self._hasher, self._writer, data)

    def abort(self) -> None:
        """Forget the body: nothing of it stays in storage."""
        self._hasher.stop()
        if self._writer is not None:
            self._writer.abort()

    async def _publish(self, digest: Digest | None) -> str:
        """
        Commit the writer once the body is hashed, when its digest is C{digest} (any, for
        None); whatever fails, nothing of the body stays.

        @return: the body's digest (C{<algorithm>:<hex>}).
        @raise DigestInvalid: the body's digest is not C{digest}.
        """
        try:
            actual = await self._hasher.checksum()
            if digest is not None and actual != str(digest):
                raise _mismatch(digest, actual)
            if self._writer is not None:
                await self._writer.commit()
        except BaseException:
            self.abort()
            raise
        return actual


class ChunkSink(_HashedBody):
    """
    One chunk of a session on its way into storage (a PATCH body, or a final PUT's), under
    a key of its own; the web layer feeds it with L{write} and ends it with L{commit} or
    L{abort}.
    """

    def __init__(self, uploads: Uploads, name: str, upload_id: str, chunk: str, offset: int,
                 writer: IWriter, hasher: BackgroundHasher) -> None:
        super().__init__(writer, hasher)
        self._uploads = uploads
        self._name = name
        self._upload_id = upload_id
        self._chunk = chunk
        self._offset = offset

    async def commit(self) -> int:
        """
        Publish the chunk and record it in the session's state; an empty chunk leaves the
        session as it was (a final PUT without a body).

        @return: the session's size with this chunk.
        @raise BlobUploadUnknown: the session ended while the chunk arrived.
        @raise ChunkOutOfOrder: another chunk was recorded meanwhile.
        """
        if self.size == 0:
            self.abort()
            return self._offset
        try:
            sha256 = await self._publish(None)
        except Exception:
            # Removing a session (cancelled, purged) may take a chunk's temporary file with
            # it: then the session is what the client is told about.
            await self._uploads._session(self._name, self._upload_id)
            raise
        return await self._uploads._record(
            self._name, self._upload_id, _Chunk(self._chunk, self._offset, self.size, sha256))


class BlobSink(_HashedBody):
    """A monolithic upload's body streaming straight to its blob's key."""

    def __init__(self, uploads: Uploads, name: str, digest: Digest, writer: IWriter | None,
                 hasher: BackgroundHasher) -> None:
        super().__init__(writer, hasher)
        self._uploads = uploads
        self._name = name
        self._digest = digest

    async def commit(self) -> int:
        """
        Publish the blob and link it into the repository when the body's digest is the one
        given.

        @return: the blob's size.
        @raise DigestInvalid: it is not; nothing was published.
        """
        await self._publish(self._digest)
        await self._uploads._link(self._name, self._digest, self.size)
        return self.size


@implementer(IConsumer)
class _Feed:
    """
    What L{IStorage.stream} writes a chunk to: each piece goes to a body, and the stream
    (a pull or a push producer) is held while the body asks to wait.

    @ivar failure: why the body refused a piece; the stream was stopped.
    """

    def __init__(self, write: Callable[[bytes], defer.Deferred[None] | None]) -> None:
        self._write = write
        self._producer: Any = None
        self._streaming = False
        self._waits = 0
        self._pulling = False
        self.failure: Failure | None = None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer
        self._streaming = streaming
        if not streaming:
            self._pull()

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self.failure is not None:
            return
        try:
            waiting = self._write(data)
        except Exception:
            self._stop(Failure())
            return
        if waiting is None:
            return
        self._waits += 1
        if self._waits == 1 and self._streaming and self._producer is not None:
            self._producer.pauseProducing()
        waiting.addCallbacks(self._caught_up, self._refused)

    def _caught_up(self, _: None) -> None:
        self._waits -= 1
        if self._waits or self._producer is None or self.failure is not None:
            return
        if self._streaming:
            self._producer.resumeProducing()
        else:
            self._pull()

    def _refused(self, failure: Failure) -> None:
        self._waits -= 1
        self._stop(failure)

    def _stop(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure
            if self._producer is not None:
                self._producer.stopProducing()

    def _pull(self) -> None:
        # A wait that fires at once resumes from inside write(): the loop already running
        # goes on, rather than one more level of calls per piece.
        if self._pulling:
            return
        self._pulling = True
        try:
            while self._producer is not None and not self._waits and self.failure is None:
                self._producer.resumeProducing()
        finally:
            self._pulling = False


class Uploads:
    """
    The blob uploads of every repository over one storage.

    @param reactor: the clock of the sessions' start times (C{IReactorTime}) and the
        thread pool that hashes bodies (C{IReactorThreads}).
    """

    def __init__(self, storage: IStorage, reactor: IReactorTime) -> None:
        self._storage = storage
        self._reactor = reactor
        # Sessions that L{purge_stale} found with neither a state nor a chunk (one being
        # started, or what a crash left): when it first saw each. Only the purge's business.
        self._empty: dict[str, float] = {}

    def _hasher(self, algorithm: str) -> BackgroundHasher:
        return BackgroundHasher(self._reactor, DigestHasher(algorithm))

    async def start(self, name: str) -> str:
        """A new session for repository C{name}; its id (a UUID's text)."""
        parse_name(name)
        upload_id = str(uuid.uuid4())
        state = _State(name, self._reactor.seconds())
        await self._storage.put_content(upload_state_key(upload_id), state.to_json())
        return upload_id

    async def size(self, name: str, upload_id: str) -> int:
        """
        How many bytes the session holds.

        @raise BlobUploadUnknown: no such session in repository C{name}.
        """
        return (await self._session(name, upload_id)).size

    async def open_chunk(self, name: str, upload_id: str, start: int | None) -> ChunkSink:
        """
        The sink of the session's next chunk.

        @param start: where the client's C{Content-Range} says the chunk begins; None when it
            sent none (the chunk is appended).
        @raise BlobUploadUnknown: no such session in repository C{name}.
        @raise ChunkOutOfOrder: C{start} is not where the session ends.
        @raise BlobUploadInvalid: the session holds L{MAX_CHUNKS} chunks already.
        """
        state = await self._session(name, upload_id)
        if start is not None and start != state.size:
            raise ChunkOutOfOrder(
                f"chunk starts at byte {start}; the upload holds {state.size} bytes")
        if len(state.chunks) >= MAX_CHUNKS:
            raise BlobUploadInvalid(
                f"upload holds {MAX_CHUNKS} chunks, the most it may: complete it")
        chunk = upload_chunk_name(self._reactor.seconds(), uuid.uuid4().hex)
        writer = await self._storage.open_writer(upload_chunk_key(upload_id, chunk))
        return ChunkSink(self, name, upload_id, chunk, state.size, writer,
                         self._hasher("sha256"))

    async def complete(self, name: str, upload_id: str, digest: Digest) -> int:
        """
        Publish the session's bytes as the blob C{digest}, link it into C{name} and end the
        session.  A blob already stored is linked, not written again (its bytes are still
        checked against C{digest}).

        @return: the blob's size.
        @raise BlobUploadUnknown: no such session in repository C{name}.
        @raise DigestInvalid: C{digest} is not that of the session's bytes; nothing was
            published and the session stays, for the client to complete it again with
            another digest or cancel it.
        """
        state = await self._session(name, upload_id)
        blob = blob_data_key(digest)
        whole = None
        if len(state.chunks) == 1 and digest.algorithm == "sha256":
            # The chunk's recorded sha256 is the blob's digest: checked without a read.
            whole = state.chunks[0]
            if whole.sha256 != str(digest):
                raise _mismatch(digest, whole.sha256)
        stored = await self._storage.exists(blob)
        try:
            if whole is not None and not stored:
                await self._storage.move(upload_chunk_key(upload_id, whole.name), blob)
            elif whole is None:
                writer = None if stored else await self._storage.open_writer(blob)
                await self._assemble(upload_id, state, digest, writer)
        except KeyNotFound:
            # A chunk went away: another request completed or cancelled the session.
            raise BlobUploadUnknown() from None
        await self._link(name, digest, state.size)
        try:
            await self._end(upload_id)
        except Exception as failure:
            # The blob is in place: the leftover session is the purge's.
            log.warn("upload {upload_id} completed but not removed: {why}",
                     upload_id=upload_id, why=failure)
        return state.size

    async def open_blob(self, name: str, digest: Digest) -> BlobSink:
        """
        The sink of a monolithic upload (C{POST .../blobs/uploads/?digest=} with the body),
        writing straight to the blob's key; a blob already stored is only hashed.
        """
        parse_name(name)
        blob = blob_data_key(digest)
        writer = None
        if not await self._storage.exists(blob):
            writer = await self._storage.open_writer(blob)
        return BlobSink(self, name, digest, writer, self._hasher(digest.algorithm))

    async def cancel(self, name: str, upload_id: str) -> None:
        """
        End the session and drop its bytes.

        @raise BlobUploadUnknown: no such session in repository C{name}.
        """
        await self._session(name, upload_id)
        await self._end(upload_id)

    async def purge_stale(self, max_age: float) -> int:
        """
        Remove the sessions started more than C{max_age} seconds ago.  A session whose state
        is missing or unreadable is as old as its newest chunk (chunk names carry their
        time); a directory with no chunk either is as old as the first purge of this object
        that saw it so (a session being started has no state for a moment).

        @return: how many sessions were removed.
        """
        now = self._reactor.seconds()
        listed = [entry for entry in await self._storage.list_directory(V2_UPLOADS)
                  if is_upload_id(entry)]
        removed = 0
        for upload_id in listed:
            if now - await self._started(upload_id, now) > max_age:
                await self._end(upload_id)
                # An empty directory is no session (and some S3 stores list a prefix whose
                # keys are all deleted for a while): removed, not counted.
                if self._empty.pop(upload_id, None) is None:
                    removed += 1
        for gone in set(self._empty).difference(listed):
            del self._empty[gone]
        if removed:
            log.info("removed {count} stale upload sessions", count=removed)
        return removed

    async def _started(self, upload_id: str, now: float) -> float:
        """When the session began, or what tells its age best (see L{purge_stale})."""
        started = await self._stored_start(upload_id)
        if started is None:
            return self._empty.setdefault(upload_id, now)
        self._empty.pop(upload_id, None)
        return started

    async def _stored_start(self, upload_id: str) -> float | None:
        try:
            return _State.parse(
                await self._storage.get_content(upload_state_key(upload_id))).started
        except (KeyNotFound, ValueError):
            pass
        names = await self._storage.list_directory(upload_chunks_key(upload_id))
        return max((time for time in map(upload_chunk_started, names) if time is not None),
                   default=None)

    async def _session(self, name: str, upload_id: str) -> _State:
        """
        The state of session C{upload_id} of repository C{name}.

        @raise BlobUploadUnknown: none (an id the registry could not have made names no key).
        """
        parse_name(name)
        if not is_upload_id(upload_id):
            raise BlobUploadUnknown()
        try:
            state = _State.parse(await self._storage.get_content(upload_state_key(upload_id)))
        except (KeyNotFound, ValueError):
            raise BlobUploadUnknown() from None
        if state.repository != name:
            raise BlobUploadUnknown()
        return state

    async def _record(self, name: str, upload_id: str, chunk: _Chunk) -> int:
        """Add a committed chunk to the session's state, read again for that."""
        key = upload_chunk_key(upload_id, chunk.name)
        try:
            state = await self._session(name, upload_id)
            if state.size != chunk.offset:
                raise ChunkOutOfOrder(
                    f"chunk starts at byte {chunk.offset}; the upload holds {state.size}"
                    " bytes")
        except BaseException:
            await self._storage.remove(key)
            raise
        # A failed write may have landed: the chunk stays, recorded or not (the session's
        # removal takes it).
        await self._storage.put_content(upload_state_key(upload_id),
                                        state.with_chunk(chunk).to_json())
        return state.size + chunk.size

    async def _assemble(self, upload_id: str, state: _State, digest: Digest,
                        writer: IWriter | None) -> None:
        """Stream the chunks in order into C{writer}, committed only when C{digest} matches."""
        body = _HashedBody(writer, self._hasher(digest.algorithm))
        try:
            for chunk in state.chunks:
                consumer = _Feed(body.write)
                try:
                    await self._storage.stream(upload_chunk_key(upload_id, chunk.name),
                                               consumer, 0, chunk.size)
                finally:
                    if consumer.failure is not None:
                        consumer.failure.raiseException()
        except BaseException:
            body.abort()
            raise
        await body._publish(digest)

    async def _link(self, name: str, digest: Digest, size: int) -> None:
        await self._storage.put_content(layer_link_key(name, digest), link_content(digest))
        log.info("blob {digest} ({size} bytes) linked into {name}", digest=str(digest),
                 size=size, name=name)

    async def _end(self, upload_id: str) -> None:
        # The state first: from then on the session is unknown, whatever is left to remove.
        await self._storage.remove(upload_state_key(upload_id))
        await self._storage.remove_tree(upload_key(upload_id))
