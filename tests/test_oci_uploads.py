"""
Tests for L{twistreg.oci.uploads}: upload sessions and monolithic uploads over local storage
with a thread pool that runs at once (tests/threads.py), and over a real S3 (SeaweedFS).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from tests.threads import HeldPool, InlineThreadsReactor
from twistreg.layout import (
    blob_data_key,
    layer_link_key,
    upload_chunks_key,
    upload_key,
    upload_state_key,
)
from twistreg.oci.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    ChunkOutOfOrder,
    DigestInvalid,
    NameInvalid,
)
from twistreg.oci.names import Digest
from twistreg.oci.uploads import MAX_CHUNKS, Uploads
from twistreg.storage.interface import StorageUnavailable
from twistreg.storage.local import LocalStorage

NAME = "library/busybox"
UPLOAD_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def done(coroutine: Any) -> Any:
    """The result of work that local storage and an inline pool finish at once."""
    results: list = []
    defer.ensureDeferred(coroutine).addBoth(results.append)
    assert results, "still waiting"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def send(sink: Any, pieces: Iterable[bytes]) -> int:
    for piece in pieces:
        assert sink.write(piece) is None
    return done(sink.commit())


class Registry:
    """An L{Uploads} over a fresh directory, with the path of every key."""

    def __init__(self, root: str, reactor: Any = None) -> None:
        self.root = root
        self.reactor = InlineThreadsReactor() if reactor is None else reactor
        self.storage = LocalStorage(root)
        self.uploads = Uploads(self.storage, self.reactor)

    def path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def read(self, key: str) -> bytes:
        with open(self.path(key), "rb") as f:
            return f.read()

    def files(self) -> list[str]:
        """Every file under the root, temporary ones included."""
        return sorted(os.path.relpath(os.path.join(directory, name), self.root)
                      for directory, _, names in os.walk(self.root) for name in names)

    def chunk(self, upload_id: str, pieces: Iterable[bytes], start: int | None = None) -> int:
        return send(done(self.uploads.open_chunk(NAME, upload_id, start)), pieces)

    def chunk_files(self, upload_id: str) -> list[str]:
        directory = self.path(upload_chunks_key(upload_id))
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(str(tmp_path))


def test_two_chunks_then_complete(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    assert done(registry.uploads.size(NAME, upload_id)) == 0
    assert registry.chunk(upload_id, [b"hello", b" "]) == 6
    assert registry.chunk(upload_id, [b"world"], start=6) == 11
    assert done(registry.uploads.size(NAME, upload_id)) == 11
    digest = Digest.of(b"hello world")
    assert done(registry.uploads.complete(NAME, upload_id, digest)) == 11
    assert registry.read(blob_data_key(digest)) == b"hello world"
    assert registry.read(layer_link_key(NAME, digest)) == str(digest).encode()
    assert not os.path.exists(registry.path(upload_key(upload_id)))
    with pytest.raises(BlobUploadUnknown):
        done(registry.uploads.size(NAME, upload_id))
    assert not [path for path in registry.files() if ".tmp-" in path]


def test_one_chunk_completes_by_a_move(registry: Registry, monkeypatch) -> None:
    """The chunk's own file becomes the blob: no byte is read or written again."""
    upload_id = done(registry.uploads.start(NAME))
    data = os.urandom(300000)
    registry.chunk(upload_id, [data[:100000], data[100000:]])
    [chunk] = registry.chunk_files(upload_id)
    inode = os.stat(registry.path(f"{upload_chunks_key(upload_id)}/{chunk}")).st_ino

    def refused(*args: Any) -> None:
        raise AssertionError("read or written again")

    monkeypatch.setattr(registry.storage, "open_writer", refused)
    monkeypatch.setattr(registry.storage, "stream", refused)
    digest = Digest.of(data)
    assert done(registry.uploads.complete(NAME, upload_id, digest)) == 300000
    assert os.stat(registry.path(blob_data_key(digest))).st_ino == inode
    assert registry.read(blob_data_key(digest)) == data
    assert registry.files() == sorted([blob_data_key(digest), layer_link_key(NAME, digest)])


@pytest.mark.parametrize("pieces", [[b"abc"], [b"a", b"bc"]], ids=["one chunk", "two chunks"])
def test_a_wrong_digest_publishes_nothing_and_keeps_the_session(registry: Registry,
                                                                 pieces: list[bytes]) -> None:
    upload_id = done(registry.uploads.start(NAME))
    for piece in pieces:
        registry.chunk(upload_id, [piece])
    wrong = Digest.of(b"abd")
    with pytest.raises(DigestInvalid) as raised:
        done(registry.uploads.complete(NAME, upload_id, wrong))
    assert (raised.value.status, raised.value.code) == (400, "DIGEST_INVALID")
    assert str(Digest.of(b"abc")) in raised.value.message
    assert not os.path.exists(registry.path(blob_data_key(wrong)))
    assert not os.path.exists(registry.path(layer_link_key(NAME, wrong)))
    assert not [path for path in registry.files() if not path.startswith("twistreg/")]
    # The session stays for the client to complete it right (or cancel it).
    assert done(registry.uploads.size(NAME, upload_id)) == 3
    assert done(registry.uploads.complete(NAME, upload_id, Digest.of(b"abc"))) == 3
    assert registry.read(blob_data_key(Digest.of(b"abc"))) == b"abc"


def test_a_chunk_out_of_order_is_416(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    with pytest.raises(ChunkOutOfOrder) as raised:
        done(registry.uploads.open_chunk(NAME, upload_id, 3))
    assert raised.value.status == 416
    registry.chunk(upload_id, [b"12345"], start=0)
    for start in (0, 4, 6, -1):
        with pytest.raises(ChunkOutOfOrder) as raised:
            done(registry.uploads.open_chunk(NAME, upload_id, start))
        assert raised.value.message == f"chunk starts at byte {start}; the upload holds 5 bytes"
    assert registry.chunk(upload_id, [b"678"], start=5) == 8


def test_a_chunk_recorded_meanwhile_makes_the_later_one_out_of_order(registry: Registry):
    """Two bodies for the same offset: the second to end is refused and leaves nothing."""
    upload_id = done(registry.uploads.start(NAME))
    first = done(registry.uploads.open_chunk(NAME, upload_id, 0))
    second = done(registry.uploads.open_chunk(NAME, upload_id, 0))
    first.write(b"first")
    second.write(b"second!")
    assert done(first.commit()) == 5
    with pytest.raises(ChunkOutOfOrder):
        done(second.commit())
    assert len(registry.chunk_files(upload_id)) == 1
    digest = Digest.of(b"first")
    assert done(registry.uploads.complete(NAME, upload_id, digest)) == 5
    assert registry.read(blob_data_key(digest)) == b"first"


@pytest.mark.parametrize("pieces", [[b"abc"], [b"a", b"bc"]], ids=["one chunk", "two chunks"])
def test_a_sha512_digest(registry: Registry, pieces: list[bytes]) -> None:
    """Chunks are hashed with sha256: a sha512 blob is assembled and hashed again."""
    upload_id = done(registry.uploads.start(NAME))
    for piece in pieces:
        registry.chunk(upload_id, [piece])
    digest = Digest.of(b"abc", "sha512")
    with pytest.raises(DigestInvalid):
        done(registry.uploads.complete(NAME, upload_id, Digest.of(b"abd", "sha512")))
    assert done(registry.uploads.complete(NAME, upload_id, digest)) == 3
    assert registry.read(blob_data_key(digest)) == b"abc"
    assert blob_data_key(digest).split("/")[4] == "sha512"
    assert registry.read(layer_link_key(NAME, digest)) == str(digest).encode()
    assert not os.path.exists(registry.path(upload_key(upload_id)))


def test_an_empty_session_completes_to_the_empty_blob(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    # A final PUT without a body is an empty chunk: it records nothing.
    assert registry.chunk(upload_id, [], start=0) == 0
    assert registry.chunk_files(upload_id) == []
    with pytest.raises(DigestInvalid):
        done(registry.uploads.complete(NAME, upload_id, Digest.of(b"x")))
    empty = Digest.of(b"")
    assert done(registry.uploads.complete(NAME, upload_id, empty)) == 0
    assert registry.read(blob_data_key(empty)) == b""
    assert registry.read(layer_link_key(NAME, empty)) == str(empty).encode()


def test_an_empty_final_chunk_keeps_a_single_chunk_movable(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"data"])
    assert registry.chunk(upload_id, [b""], start=4) == 4
    [chunk] = registry.chunk_files(upload_id)
    inode = os.stat(registry.path(f"{upload_chunks_key(upload_id)}/{chunk}")).st_ino
    done(registry.uploads.complete(NAME, upload_id, Digest.of(b"data")))
    assert os.stat(registry.path(blob_data_key(Digest.of(b"data")))).st_ino == inode


def test_a_stored_blob_is_linked_not_written_again(registry: Registry) -> None:
    digest = Digest.of(b"same bytes")
    done(registry.storage.put_content(blob_data_key(digest), b"same bytes"))
    inode = os.stat(registry.path(blob_data_key(digest))).st_ino
    for pieces in ([b"same bytes"], [b"same", b" bytes"]):
        upload_id = done(registry.uploads.start(NAME))
        for piece in pieces:
            registry.chunk(upload_id, [piece])
        assert done(registry.uploads.complete(NAME, upload_id, digest)) == 10
        assert not os.path.exists(registry.path(upload_key(upload_id)))
    monolithic = done(registry.uploads.open_blob("other/repo", digest))
    assert send(monolithic, [b"same bytes"]) == 10
    assert os.stat(registry.path(blob_data_key(digest))).st_ino == inode
    assert registry.read(layer_link_key("other/repo", digest)) == str(digest).encode()
    # Its bytes are still checked: a link to a blob is not had for the asking.
    upload_id = done(registry.uploads.start("third"))
    done(registry.uploads.open_chunk("third", upload_id, None)).write(b"other bytes")
    with pytest.raises(DigestInvalid):
        done(registry.uploads.complete("third", upload_id, digest))
    monolithic = done(registry.uploads.open_blob("third", digest))
    monolithic.write(b"other bytes")
    with pytest.raises(DigestInvalid):
        done(monolithic.commit())
    assert not os.path.exists(registry.path(layer_link_key("third", digest)))


def test_monolithic_upload(registry: Registry) -> None:
    data = os.urandom(50000)
    digest = Digest.of(data)
    sink = done(registry.uploads.open_blob(NAME, digest))
    assert send(sink, [data[:20000], data[20000:]]) == 50000
    assert registry.read(blob_data_key(digest)) == data
    assert registry.read(layer_link_key(NAME, digest)) == str(digest).encode()
    assert registry.files() == sorted([blob_data_key(digest), layer_link_key(NAME, digest)])


def test_monolithic_upload_with_a_wrong_digest(registry: Registry) -> None:
    digest = Digest.of(b"expected", "sha512")
    sink = done(registry.uploads.open_blob(NAME, digest))
    sink.write(b"received")
    with pytest.raises(DigestInvalid) as raised:
        done(sink.commit())
    assert str(Digest.of(b"received", "sha512")) in raised.value.message
    assert registry.files() == []


def test_an_aborted_chunk_leaves_nothing(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"kept"])
    state = registry.read(upload_state_key(upload_id))
    sink = done(registry.uploads.open_chunk(NAME, upload_id, 4))
    sink.write(b"dropped")
    sink.abort()
    assert registry.read(upload_state_key(upload_id)) == state
    assert len(registry.chunk_files(upload_id)) == 1
    assert not [path for path in registry.files() if ".tmp-" in path]


class FailingCommits(LocalStorage):
    """Local storage whose writers fail to publish, as a full disk or a lost S3 would."""

    def open_writer(self, key: str) -> defer.Deferred:
        writer = super().open_writer(key).result

        def commit() -> defer.Deferred:
            return defer.fail(StorageUnavailable("disk full"))

        writer.commit = commit
        return defer.succeed(writer)


def test_a_chunk_whose_commit_fails_leaves_the_state_as_it_was(tmp_path) -> None:
    registry = Registry(str(tmp_path))
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"kept"])
    state = registry.read(upload_state_key(upload_id))
    failing = Uploads(FailingCommits(str(tmp_path)), registry.reactor)
    sink = done(failing.open_chunk(NAME, upload_id, None))
    sink.write(b"lost")
    with pytest.raises(StorageUnavailable):
        done(sink.commit())
    assert registry.read(upload_state_key(upload_id)) == state
    assert len(registry.chunk_files(upload_id)) == 1
    assert not [path for path in registry.files() if ".tmp-" in path]


def test_a_session_continues_in_another_process(tmp_path) -> None:
    """Nothing but storage is shared: each step may go to another process."""
    root = str(tmp_path)
    first, second = Registry(root), Registry(root)
    upload_id = done(first.uploads.start(NAME))
    assert second.chunk(upload_id, [b"part one, "]) == 10
    assert first.chunk(upload_id, [b"part two"], start=10) == 18
    assert done(second.uploads.size(NAME, upload_id)) == 18
    digest = Digest.of(b"part one, part two")
    assert done(second.uploads.complete(NAME, upload_id, digest)) == 18
    assert first.read(blob_data_key(digest)) == b"part one, part two"


def test_cancel(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"abc"])
    with pytest.raises(BlobUploadUnknown):
        done(registry.uploads.cancel("other", upload_id))
    assert done(registry.uploads.size(NAME, upload_id)) == 3
    done(registry.uploads.cancel(NAME, upload_id))
    assert registry.files() == []
    for call in (registry.uploads.cancel(NAME, upload_id),
                 registry.uploads.size(NAME, upload_id),
                 registry.uploads.complete(NAME, upload_id, Digest.of(b"abc"))):
        with pytest.raises(BlobUploadUnknown):
            done(call)


def test_a_chunk_of_a_session_cancelled_meanwhile(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    sink = done(registry.uploads.open_chunk(NAME, upload_id, 0))
    sink.write(b"late")
    done(registry.uploads.cancel(NAME, upload_id))
    with pytest.raises(BlobUploadUnknown):
        done(sink.commit())
    assert registry.files() == []


def test_sessions_of_another_repository_are_unknown(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"abc"])
    for other in ("library/other", "library"):
        for call in (registry.uploads.size(other, upload_id),
                     registry.uploads.open_chunk(other, upload_id, None),
                     registry.uploads.complete(other, upload_id, Digest.of(b"abc")),
                     registry.uploads.cancel(other, upload_id)):
            with pytest.raises(BlobUploadUnknown) as raised:
                done(call)
            assert (raised.value.status, raised.value.code) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert done(registry.uploads.size(NAME, upload_id)) == 3
    with pytest.raises(NameInvalid):
        done(registry.uploads.start("../x"))


class Untouchable:
    """A storage that fails the test when asked anything."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"storage asked for {name}")


@pytest.mark.parametrize("upload_id", [
    "../x", "../../../../etc", "not-a-uuid", "", UPLOAD_ID.upper(), UPLOAD_ID + "/../x",
    UPLOAD_ID.replace("-", ""), "0f8fad5b-d9cb-169f-a165-70867728950e", UPLOAD_ID + "\n",
])
def test_hostile_ids_make_no_key(upload_id: str) -> None:
    uploads = Uploads(Untouchable(), InlineThreadsReactor())  # type: ignore[arg-type]
    for call in (uploads.size(NAME, upload_id), uploads.open_chunk(NAME, upload_id, None),
                 uploads.complete(NAME, upload_id, Digest.of(b"")),
                 uploads.cancel(NAME, upload_id)):
        with pytest.raises(BlobUploadUnknown):
            done(call)


def test_a_state_that_does_not_parse_is_an_unknown_session(registry: Registry) -> None:
    upload_id = done(registry.uploads.start(NAME))
    for junk in (b"", b"{", b"[]", b'{"repository": "library/busybox"}',
                 b'{"repository": "library/busybox", "started": 0, "chunks": '
                 b'[{"name": "../../x", "offset": 0, "size": 1, "sha256": "x"}]}',
                 b'{"repository": "library/busybox", "started": 0, "chunks": '
                 b'[{"name": "1-' + b"a" * 32 + b'", "offset": 5, "size": 1, "sha256": "x"}]}'):
        done(registry.storage.put_content(upload_state_key(upload_id), junk))
        with pytest.raises(BlobUploadUnknown):
            done(registry.uploads.size(NAME, upload_id))


def test_purge_removes_sessions_started_too_long_ago(registry: Registry) -> None:
    clock = registry.reactor
    old = done(registry.uploads.start(NAME))
    registry.chunk(old, [b"old"])
    clock.advance(100)
    recent = done(registry.uploads.start(NAME))
    # A chunk is recent, but the session is as old as its start.
    clock.advance(49)
    registry.chunk(old, [b"er"])
    assert done(registry.uploads.purge_stale(150)) == 0
    clock.advance(2)
    assert done(registry.uploads.purge_stale(150)) == 1
    assert os.listdir(registry.path("twistreg/v2/uploads")) == [recent]
    with pytest.raises(BlobUploadUnknown):
        done(registry.uploads.size(NAME, old))
    clock.advance(100)
    assert done(registry.uploads.purge_stale(150)) == 1
    assert os.listdir(registry.path("twistreg/v2/uploads")) == []


def test_purge_ages_a_session_without_state_by_its_newest_chunk(registry: Registry) -> None:
    clock = registry.reactor
    clock.advance(1000)
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"a"])
    clock.advance(100)
    registry.chunk(upload_id, [b"b"])
    os.unlink(registry.path(upload_state_key(upload_id)))
    clock.advance(150)
    assert done(registry.uploads.purge_stale(200)) == 0
    clock.advance(51)
    assert done(registry.uploads.purge_stale(200)) == 1
    assert registry.files() == []


def test_purge_ages_an_empty_session_from_when_it_first_saw_it(registry: Registry) -> None:
    """Neither state nor chunk (a crash, or a start in progress): timed from the first look."""
    clock = registry.reactor
    os.makedirs(registry.path(upload_key(UPLOAD_ID)))
    os.makedirs(registry.path("twistreg/v2/uploads/not-ours"))
    clock.advance(1000)
    assert done(registry.uploads.purge_stale(10)) == 0
    clock.advance(10)
    assert done(registry.uploads.purge_stale(10)) == 0
    # Another process's purge has not seen it before.
    other = Uploads(registry.storage, clock)
    assert done(other.purge_stale(10)) == 0
    clock.advance(1)
    # Removed, but no session was (an S3 store may list it for a while after).
    assert done(registry.uploads.purge_stale(10)) == 0
    assert os.listdir(registry.path("twistreg/v2/uploads")) == ["not-ours"]
    # A purge forgets what it saw once it is gone: the next one of that id is new to it.
    assert done(other.purge_stale(10)) == 0
    os.makedirs(registry.path(upload_key(UPLOAD_ID)))
    clock.advance(100)
    assert done(other.purge_stale(10)) == 0
    assert sorted(os.listdir(registry.path("twistreg/v2/uploads"))) == [UPLOAD_ID, "not-ours"]


def test_a_session_holds_at_most_max_chunks(registry: Registry, monkeypatch) -> None:
    monkeypatch.setattr("twistreg.oci.uploads.MAX_CHUNKS", 2)
    upload_id = done(registry.uploads.start(NAME))
    registry.chunk(upload_id, [b"a"])
    registry.chunk(upload_id, [b"b"])
    with pytest.raises(BlobUploadInvalid) as raised:
        done(registry.uploads.open_chunk(NAME, upload_id, None))
    assert raised.value.message == "upload holds 2 chunks, the most it may: complete it"
    assert MAX_CHUNKS == 10000


class CountingStorage(LocalStorage):
    """Local storage that counts the bytes its writers took."""

    written = 0

    def open_writer(self, key: str) -> defer.Deferred:
        writer = super().open_writer(key).result
        write = writer.write

        def counted(data: bytes) -> None:
            CountingStorage.written += len(data)
            return write(data)

        writer.write = counted
        return defer.succeed(writer)


def test_bodies_wait_for_the_hasher(tmp_path) -> None:
    """
    Memory stays bounded: a chunk's body is asked to pause while the pool is behind, and
    assembling the chunks stops reading them until the pool catches up.
    """
    pool = HeldPool()
    storage = CountingStorage(str(tmp_path))
    uploads = Uploads(storage, InlineThreadsReactor(pool))
    piece = os.urandom(1 << 20)
    upload_id = done(uploads.start(NAME))
    for _ in range(2):
        sink = done(uploads.open_chunk(NAME, upload_id, None))
        waits = [sink.write(piece) for _ in range(6)]
        assert waits[:4] == [None] * 4 and waits[4] is not None
        committing = defer.ensureDeferred(sink.commit())
        while pool.held:
            pool.run_next()
        assert committing.called
    digest = Digest.of(piece * 12, "sha512")
    CountingStorage.written = 0
    completing = defer.ensureDeferred(uploads.complete(NAME, upload_id, digest))
    assert 0 < CountingStorage.written <= 5 << 20
    while pool.held:
        pool.run_next()
    assert completing.result == 12 << 20
    with open(os.path.join(tmp_path, blob_data_key(digest)), "rb") as blob:
        assert hashlib.sha512(blob.read()).hexdigest() == digest.hex


# -- over a real S3 --------------------------------------------------------------------------


@pytest.fixture
def s3(seaweedfs, s3_prefix, in_reactor):
    from twisted.internet import reactor

    from tests.test_storage_s3 import s3_settings
    from twistreg.storage.s3 import S3Storage

    storage = in_reactor(S3Storage, s3_settings(seaweedfs, s3_prefix), reactor)
    yield storage, Uploads(storage, reactor)
    in_reactor(storage.client.close)


async def _send(sink: Any, pieces: Iterable[bytes]) -> int:
    for piece in pieces:
        waiting = sink.write(piece)
        if waiting is not None:
            await waiting
    return await sink.commit()


def _pieces(data: bytes, size: int = 65536) -> list[bytes]:
    return [data[start:start + size] for start in range(0, len(data), size)]


@pytest.mark.integration
def test_s3_chunks_then_complete(s3, in_reactor) -> None:
    storage, uploads = s3
    data = os.urandom(12 << 20)
    for digest, halves in ((Digest.of(data), 2), (Digest.of(data), 1),
                           (Digest.of(data, "sha512"), 1)):
        upload_id = in_reactor(uploads.start, NAME)
        step = len(data) // halves
        for start in range(0, len(data), step):
            sink = in_reactor(uploads.open_chunk, NAME, upload_id, start)
            assert in_reactor(_send, sink, _pieces(data[start:start + step])) == start + step
        assert in_reactor(uploads.complete, NAME, upload_id, digest) == len(data)
        assert in_reactor(storage.get_content, blob_data_key(digest)) == data
        assert in_reactor(storage.get_content, layer_link_key(NAME, digest)) == (
            str(digest).encode())
        # SeaweedFS lists a prefix whose keys were deleted: the keys are what counts.
        assert in_reactor(storage.exists, upload_state_key(upload_id)) is False
        assert in_reactor(storage.list_directory, upload_chunks_key(upload_id)) == []
    upload_id = in_reactor(uploads.start, NAME)
    sink = in_reactor(uploads.open_chunk, NAME, upload_id, None)
    in_reactor(_send, sink, [b"abc"])
    with pytest.raises(DigestInvalid):
        in_reactor(uploads.complete, NAME, upload_id, Digest.of(b"abd"))
    assert in_reactor(uploads.size, NAME, upload_id) == 3


@pytest.mark.integration
def test_s3_monolithic(s3, in_reactor) -> None:
    storage, uploads = s3
    data = os.urandom(7 << 20)
    digest = Digest.of(data)
    sink = in_reactor(uploads.open_blob, NAME, digest)
    assert in_reactor(_send, sink, _pieces(data)) == len(data)
    assert in_reactor(storage.get_content, blob_data_key(digest)) == data
    assert in_reactor(storage.exists, layer_link_key(NAME, digest)) is True
    wrong = Digest.of(b"something else")
    sink = in_reactor(uploads.open_blob, NAME, wrong)
    with pytest.raises(DigestInvalid):
        in_reactor(_send, sink, _pieces(data))
    assert in_reactor(storage.exists, blob_data_key(wrong)) is False
    assert in_reactor(storage.exists, layer_link_key(NAME, wrong)) is False
