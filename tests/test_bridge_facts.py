"""
The facts the V1 ⇄ V2 bridge keeps of each V1 layer (twistreg/bridge/facts.py): written by the
layer PUT in the pass that computes the payload checksum.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os

import pytest
from twisted.internet.defer import Deferred, ensureDeferred

from tests.test_layerfiles import make_tar, member
from tests.threads import InlineThreadsReactor
from twistreg import checksums
from twistreg.bridge.facts import read_layer_facts
from twistreg.checksums import GZIP_LAYER, TAR_LAYER, LayerFacts, payload_checksum
from twistreg.config import load_settings
from twistreg.layout import (
    image_checksum_key,
    image_inprogress_key,
    image_layer_facts_key,
    image_layer_key,
)
from twistreg.registry.auth import Authorizer
from twistreg.registry.images import Images
from twistreg.storage.local import LocalStorage

BASE = "a" * 64
OTHER = "b" * 64
TAR = make_tar(member("etc/hello", data=b"hello world\n" * 1000, mtime=1400000000))
EMPTY_TAR = make_tar()
GZIPPED = gzip.compress(TAR, mtime=0)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def done(result):
    """The result of a coroutine or Deferred that has nothing left to wait for."""
    deferred = ensureDeferred(result) if not isinstance(result, Deferred) else result
    results: list = []
    deferred.addBoth(results.append)
    assert results, "still waiting"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


class RecordingStorage:
    """Local storage that records what is read and written, in order."""

    def __init__(self, root: str) -> None:
        self._storage = LocalStorage(root)
        self.events: list[tuple[str, str]] = []
        self.read_bytes = 0

    def __getattr__(self, name: str):
        return getattr(self._storage, name)

    def get_content(self, key: str):
        self.events.append(("get", key))
        return self._storage.get_content(key)

    def put_content(self, key: str, data: bytes):
        self.events.append(("put", key))
        return self._storage.put_content(key, data)

    def remove(self, key: str):
        self.events.append(("remove", key))
        return self._storage.remove(key)

    def stream(self, key: str, consumer, offset: int, length: int):
        self.events.append(("stream", key))
        return self._storage.stream(key, consumer, offset, length)

    def open_file(self, key: str):
        self.events.append(("open", key))
        recorder = self

        class Counted(io.RawIOBase):
            def __init__(self, file) -> None:
                self._file = file

            def read(self, size: int = -1) -> bytes:
                data = self._file.read(size)
                recorder.read_bytes += len(data)
                return data

            def close(self) -> None:
                self._file.close()
                super().close()

        return self._storage.open_file(key).addCallback(Counted)

    def open_writer(self, key: str):
        events = self.events

        class Writer:
            def __init__(self, writer) -> None:
                self._writer = writer

            def write(self, data: bytes):
                return self._writer.write(data)

            def commit(self):
                events.append(("commit", key))
                return self._writer.commit()

            def abort(self):
                return self._writer.abort()

        return self._storage.open_writer(key).addCallback(Writer)

    def reads_of(self, key: str) -> list[str]:
        return [kind for kind, read in self.events
                if read == key and kind in ("get", "stream", "open")]


@pytest.fixture
def tree(tmp_path) -> RecordingStorage:
    return RecordingStorage(str(tmp_path / "storage"))


@pytest.fixture
def images(tree) -> Images:
    settings = load_settings(None, environ={}, system_config_path=None)
    reactor = InlineThreadsReactor()
    return Images(tree, reactor, Authorizer(settings, tree, reactor, None))


def push(images: Images, image_id: str, layer: bytes, *, complete: bool = True) -> None:
    """R8, R4 (the layer in pieces, as it comes off a socket) and R5."""
    body = json.dumps({"id": image_id}).encode()
    done(images.put_json(image_id, body, None, None))
    upload = done(images.begin_layer_upload(image_id))
    for start in range(0, len(layer), 7000):
        upload.write(layer[start : start + 7000])
    done(upload.commit())
    if complete:
        done(images.put_checksum(image_id, payload_checksum(body, layer)))


def facts_of(storage, image_id: str = BASE) -> LayerFacts | None:
    return done(read_layer_facts(storage, image_id))


# -- at push ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "compression", "diff_id", "media_type", "empty"),
    [
        (GZIPPED, "gzip", sha256(TAR), GZIP_LAYER, False),
        (TAR, "none", sha256(TAR), TAR_LAYER, False),
        (b"", "none", sha256(b""), TAR_LAYER, True),
        (EMPTY_TAR, "none", sha256(EMPTY_TAR), TAR_LAYER, True),
        (gzip.compress(EMPTY_TAR), "gzip", sha256(EMPTY_TAR), GZIP_LAYER, True),
    ],
    ids=["gzip", "plain", "zero-bytes", "empty-tar", "gzip-empty-tar"],
)
def test_push_keeps_the_facts(tree, images, layer, compression, diff_id, media_type, empty):
    push(images, BASE, layer)
    assert facts_of(tree) == LayerFacts(
        digest=sha256(layer), size=len(layer), compression=compression, diff_id=diff_id,
        media_type=media_type, empty=empty, problem=None)


@pytest.mark.parametrize(
    ("layer", "compression", "problem"),
    [
        (bz2.compress(TAR), "bzip2", "bzip2 layers have no media type V2 clients pull"),
        (lzma.compress(TAR), "xz", "xz layers have no media type V2 clients pull"),
        (GZIPPED[:20] + bytes(200) + GZIPPED[220:], "gzip", "corrupt gzip stream ("),
        (GZIPPED[: len(GZIPPED) // 2], "gzip", "truncated gzip stream"),
        (b"some layer bytes", "none", "not a tar archive"),
    ],
    ids=["bzip2", "xz", "corrupt-gzip", "truncated-gzip", "not-a-tar"],
)
def test_push_of_a_layer_that_cannot_be_bridged(tree, images, layer, compression, problem):
    """The push succeeds as in 0.9.1 (R5 accepts the payload checksum); the facts say why."""
    push(images, BASE, layer)
    assert done(tree.get_content(image_layer_key(BASE))) == layer
    assert not done(tree.exists(image_inprogress_key(BASE)))
    facts = facts_of(tree)
    assert facts is not None and facts.problem is not None
    assert facts.problem.startswith(problem)
    assert (facts.digest, facts.size, facts.compression, facts.diff_id, facts.media_type) == (
        sha256(layer), len(layer), compression, None, None)


def test_push_computes_the_facts_in_one_pass(tree, images, monkeypatch):
    """The hasher is given every byte once, in the pool, and the layer is never read back."""
    given: list[int] = []
    update = checksums.LayerFactsHasher.update
    monkeypatch.setattr(checksums.LayerFactsHasher, "update",
                        lambda self, chunk: (given.append(len(chunk)), update(self, chunk)))
    layer = gzip.compress(make_tar(member("big", data=os.urandom(3 << 20))))
    push(images, BASE, layer)
    assert sum(given) == len(layer)
    assert images._reactor.pool.jobs > 0
    assert tree.reads_of(image_layer_key(BASE)) == []
    assert facts_of(tree).digest == sha256(layer)


def test_facts_are_written_after_the_layer_and_its_checksum(tree, images):
    push(images, BASE, GZIPPED, complete=False)
    written = [event for event in tree.events if event[0] in ("commit", "put")]
    assert written[-3:] == [("commit", image_layer_key(BASE)),
                            ("put", image_checksum_key(BASE)),
                            ("put", image_layer_facts_key(BASE))]


def test_a_layer_pushed_again_never_keeps_the_old_facts(tree, images):
    """While an image is in progress its layer can be pushed again: the old facts go first."""
    push(images, BASE, GZIPPED, complete=False)
    upload = done(images.begin_layer_upload(BASE))
    assert facts_of(tree) is None
    upload.write(TAR)
    upload.abort()
    assert facts_of(tree) is None
    upload = done(images.begin_layer_upload(BASE))
    upload.write(TAR)
    done(upload.commit())
    assert facts_of(tree).digest == sha256(TAR)


def test_unreadable_facts_read_as_none(tree, events):
    done(tree.put_content(image_layer_facts_key(BASE), b'{"digest": "md5:x"}'))
    assert facts_of(tree) is None
    assert events[0]["key"] == image_layer_facts_key(BASE)



@pytest.mark.integration
def test_a_push_to_the_server_keeps_the_facts(server, backend):
    """Through HTTP, into local storage or an S3 multipart upload."""
    body = json.dumps({"id": BASE}).encode()
    assert server.request("PUT", f"/v1/images/{BASE}/json", body).status == 200
    assert server.request("PUT", f"/v1/images/{BASE}/layer", GZIPPED).status == 200
    r = server.request("PUT", f"/v1/images/{BASE}/checksum", headers={
        "X-Docker-Checksum-Payload": payload_checksum(body, GZIPPED)})
    assert r.status == 200
    stored = LayerFacts.from_json(backend.read(f"images/{BASE}/_layer_facts"))
    assert (stored.digest, stored.diff_id, stored.size, stored.empty) == (
        sha256(GZIPPED), sha256(TAR), len(GZIPPED), False)

