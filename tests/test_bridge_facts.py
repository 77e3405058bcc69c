"""
The facts the V1 ⇄ V2 bridge keeps of each V1 layer (twistreg/registry/layerfacts.py): written
in the background once a pushed image is complete, and by C{python -m twistreg bridge} for
layers stored before, on a tree 0.9.1 wrote, locally and on S3.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, ensureDeferred

from tests.server import ROOT, wait_until
from tests.test_compat_091 import FILES as FILES_0_9_1
from tests.test_compat_091 import LAYERS as LAYERS_0_9_1
from tests.test_layerfiles import make_tar, member
from tests.threads import HeldPool, InlineThreadsReactor
from twistreg import checksums
from twistreg.bridge.command import Report, fill_tree
from twistreg.checksums import GZIP_LAYER, TAR_LAYER, LayerFacts, payload_checksum
from twistreg.config import load_settings
from twistreg.layout import (
    image_inprogress_key,
    image_json_key,
    image_layer_facts_key,
    image_layer_key,
)
from twistreg.registry.auth import Authorizer
from twistreg.registry.images import Images
from twistreg.registry.layerfacts import Outcome, Stopped, fill_layer_facts, read_layer_facts
from twistreg.storage.local import LocalStorage
from twistreg.walking import INTERRUPTED

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


def test_the_push_itself_computes_no_facts(tree, images, monkeypatch):
    """Inflating costs ten times what storing does: the layer PUT never does it."""
    given: list[int] = []
    update = checksums.LayerFactsHasher.update
    monkeypatch.setattr(checksums.LayerFactsHasher, "update",
                        lambda self, chunk: (given.append(len(chunk)), update(self, chunk)))
    push(images, BASE, GZIPPED, complete=False)
    assert given == [] and facts_of(tree) is None


def test_a_complete_image_gets_its_facts_from_one_read_of_its_layer(tree, images):
    layer = gzip.compress(make_tar(member("big", data=os.urandom(3 << 20))))
    push(images, BASE, layer, complete=False)
    assert facts_of(tree) is None and tree.reads_of(image_layer_key(BASE)) == []
    body = json.dumps({"id": BASE}).encode()
    done(images.put_checksum(BASE, payload_checksum(body, layer)))
    assert len(tree.reads_of(image_layer_key(BASE))) == 1
    assert facts_of(tree).digest == sha256(layer)
    written = [event for event in tree.events if event[0] in ("commit", "put", "remove")]
    assert written[-2:] == [("remove", image_inprogress_key(BASE)),
                            ("put", image_layer_facts_key(BASE))]


def test_unreadable_facts_read_as_none(tree, events):
    done(tree.put_content(image_layer_facts_key(BASE), b'{"digest": "md5:x"}'))
    assert facts_of(tree) is None
    assert events[0]["key"] == image_layer_facts_key(BASE)


# -- for layers stored before ----------------------------------------------------------------


def write(storage, key: str, data: bytes) -> None:
    done(storage.put_content(key, data))


def store_image(storage, image_id: str, layer: bytes | None, in_progress: bool = False) -> None:
    """An image as a 0.9.1 push or the mirror leaves it: json, layer, no facts."""
    write(storage, image_json_key(image_id), json.dumps({"id": image_id}).encode())
    if layer is not None:
        write(storage, image_layer_key(image_id), layer)
    if in_progress:
        write(storage, image_inprogress_key(image_id), b"true")


def store_0_9_1_tree(storage) -> None:
    for key, content in FILES_0_9_1.items():
        write(storage, key, content.encode())
    for image_id, layer in LAYERS_0_9_1.items():
        write(storage, image_layer_key(image_id), layer)


class Recorded:
    """A progress display that keeps what it was shown."""

    def __init__(self) -> None:
        self.totals: list[int] = []
        self.notes: list[str] = []

    def phase(self, name: str, total: int) -> None:
        self.totals.append(total)

    def advance(self, note: str = "") -> None:
        self.notes.append(note)

    def close(self) -> None:
        pass


def fill(storage, reactor=None, stopping=None, progress=None) -> Report:
    return done(fill_tree(storage, reactor or InlineThreadsReactor(),
                          stopping or threading.Event(), progress or Recorded()))


def test_fill_a_tree_0_9_1_wrote(tree):
    store_0_9_1_tree(tree)
    shown = Recorded()
    report = fill(tree, progress=shown)
    assert (report.written, report.images, report.interrupted) == (2, 2, False)
    for image_id, layer in LAYERS_0_9_1.items():
        assert facts_of(tree, image_id) == LayerFacts(
            digest=sha256(layer), size=len(layer), compression="none", diff_id=sha256(layer),
            media_type=TAR_LAYER, empty=False, problem=None)
    assert report.summary("local") == "wrote the layer facts of 2 images in local storage"
    assert (shown.totals, shown.notes) == ([2], ["1 layer facts written", "2 layer facts written"])
    again = fill(tree)
    assert (again.written, again.counts[Outcome.PRESENT]) == (0, 2)
    assert again.summary("local") == (
        "nothing to do: every complete image in local storage has its layer facts")


def test_fill_reads_each_layer_once(tree):
    store_image(tree, BASE, GZIPPED)
    store_image(tree, OTHER, TAR)
    fill(tree)
    opened = [key for kind, key in tree.events if kind in ("open", "stream")]
    assert opened == [image_layer_key(BASE), image_layer_key(OTHER)]
    assert tree.reads_of(image_layer_key(BASE)) == ["open"]
    assert tree.read_bytes == len(GZIPPED) + len(TAR)


def test_fill_skips_what_it_must_not_touch(tree):
    """Images in progress (their push writes the facts), without a layer, without json."""
    store_image(tree, BASE, GZIPPED, in_progress=True)
    store_image(tree, OTHER, None)
    lone = "c" * 64
    write(tree, image_layer_key(lone), TAR)
    write(tree, "images/not-an-id/layer", TAR)
    report = fill(tree)
    assert report.images == 3
    assert (report.counts[Outcome.IN_PROGRESS], report.counts[Outcome.NO_LAYER]) == (1, 2)
    assert report.summary("s3") == ("nothing to do: every complete image in s3 storage has its"
                                    " layer facts; 1 image in progress skipped")
    for image_id in (BASE, OTHER, lone, "not-an-id"):
        assert facts_of(tree, image_id) is None
    assert tree.reads_of(image_layer_key(BASE)) == []


def test_fill_counts_layers_that_cannot_be_bridged(tree):
    store_image(tree, BASE, bz2.compress(TAR))
    store_image(tree, OTHER, GZIPPED[:-8])
    assert fill(tree).summary("local") == (
        "wrote the layer facts of 2 images in local storage; 2 layers cannot be bridged")
    assert fill(tree).summary("local") == (
        "nothing to do: every complete image in local storage has its layer facts;"
        " 2 layers cannot be bridged")


def test_fill_never_rewrites_facts(tree):
    """Facts there (a push wrote them) stay as they are, even if they would differ."""
    store_image(tree, BASE, TAR)
    pushed = LayerFacts(sha256(b"x"), 1, "none", sha256(b"x"), TAR_LAYER, False, None)
    write(tree, image_layer_facts_key(BASE), pushed.to_json())
    assert fill(tree).counts[Outcome.PRESENT] == 1
    assert facts_of(tree) == pushed
    assert tree.reads_of(image_layer_key(BASE)) == []


def test_fill_keeps_facts_written_while_it_read(tree):
    """Written by another run (or a push) while the layer was read: those stay."""
    store_image(tree, BASE, TAR)
    pool = HeldPool()
    result = ensureDeferred(fill_layer_facts(tree, InlineThreadsReactor(pool), BASE,
                                             threading.Event()))
    meanwhile = LayerFacts(sha256(b"y"), 1, "none", sha256(b"y"), TAR_LAYER, False, None)
    write(tree, image_layer_facts_key(BASE), meanwhile.to_json())
    pool.run_next()
    assert done(result) == (Outcome.PRESENT, meanwhile)
    assert facts_of(tree) == meanwhile


def test_fill_rewrites_unreadable_facts(tree):
    store_image(tree, BASE, TAR)
    write(tree, image_layer_facts_key(BASE), b"{}")
    assert fill(tree).written == 1
    assert facts_of(tree).digest == sha256(TAR)


def test_an_interrupted_fill_writes_nothing_half_and_resumes(tree):
    """Stopped in the middle of a layer: that layer gets no facts; a second run goes on."""
    for image_id in (BASE, OTHER):
        store_image(tree, image_id, GZIPPED)
    stopping = threading.Event()
    pool = HeldPool()
    run = ensureDeferred(fill_tree(tree, InlineThreadsReactor(pool), stopping, Recorded()))
    pool.run_next()  # BASE read
    stopping.set()
    pool.run_next()  # OTHER's read sees the stop before its first MiB
    report = done(run)
    assert (report.interrupted, report.written) == (True, 1)
    assert facts_of(tree, OTHER) is None
    assert sorted(os.listdir(tree.root + f"/images/{OTHER}")) == ["json", "layer"]
    resumed = fill(tree)
    assert (resumed.written, resumed.counts[Outcome.PRESENT]) == (1, 1)
    assert facts_of(tree, OTHER) == facts_of(tree, BASE)


def test_a_layer_being_read_is_given_up_between_pieces(tree):
    store_image(tree, BASE, b"\0" * (3 << 20))
    stopping = threading.Event()
    pool = HeldPool()
    result = ensureDeferred(fill_layer_facts(tree, InlineThreadsReactor(pool), BASE,
                                             stopping))
    stopping.set()
    pool.run_next()
    with pytest.raises(Stopped):
        done(result)
    assert tree.read_bytes == 1 << 20


# -- the command -----------------------------------------------------------------------------


def command_env() -> dict[str, str]:
    """The environment of C{python -m twistreg} from the source tree, no config around."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    env.pop("SETTINGS_FLAVOR", None)
    return env


def bridge_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "twistreg", "bridge", *options]


def run_command(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(bridge_command(*options), cwd=tmp_path, env=command_env(),
                          capture_output=True, text=True, timeout=120)


def storage_options(backend) -> list[str]:
    """Where the C{backend} fixture's storage is, as the command's options say it."""
    if backend.kind == "local":
        return ["--storage-path", str(backend.root)]
    return ["--config", str(backend.config), "--flavor", "dev"]


@pytest.mark.integration
def test_the_command_on_a_tree_0_9_1_wrote(tmp_path, backend):
    for key, content in FILES_0_9_1.items():
        backend.write(key, content.encode())
    for image_id, layer in LAYERS_0_9_1.items():
        backend.write(f"images/{image_id}/layer", layer)
    backend.write(f"images/{BASE}/json", json.dumps({"id": BASE}).encode())
    backend.write(f"images/{BASE}/layer", GZIPPED)
    backend.write(f"images/{OTHER}/json", json.dumps({"id": OTHER}).encode())
    backend.write(f"images/{OTHER}/_inprogress", b"true")
    backend.write(f"images/{OTHER}/layer", TAR)
    first = run_command(tmp_path, *storage_options(backend))
    assert (first.returncode, first.stdout, first.stderr) == (
        0, f"wrote the layer facts of 3 images in {backend.kind} storage;"
           " 1 image in progress skipped\n", "")
    for image_id, layer in LAYERS_0_9_1.items():
        stored = LayerFacts.from_json(backend.read(f"images/{image_id}/_layer_facts"))
        assert (stored.digest, stored.diff_id, stored.media_type) == (
            sha256(layer), sha256(layer), TAR_LAYER)
    stored = LayerFacts.from_json(backend.read(f"images/{BASE}/_layer_facts"))
    assert (stored.digest, stored.diff_id, stored.media_type, stored.size) == (
        sha256(GZIPPED), sha256(TAR), GZIP_LAYER, len(GZIPPED))
    assert backend.read(f"images/{OTHER}/_layer_facts") is None
    second = run_command(tmp_path, *storage_options(backend))
    assert (second.returncode, second.stdout, second.stderr) == (
        0, f"nothing to do: every complete image in {backend.kind} storage has its layer facts;"
           " 1 image in progress skipped\n", "")
    third = run_command(tmp_path, *storage_options(backend), "--json")
    assert (third.returncode, json.loads(third.stdout)) == (0, {
        "images": 4, "seen": 4, "unbridgeable": 0, "interrupted": False, "written": 0,
        "present": 3, "in_progress": 1, "no_layer": 0})


@pytest.mark.integration
def test_a_missing_storage_path_is_one_line(tmp_path):
    missing = tmp_path / "typo"
    result = run_command(tmp_path, "--storage-path", str(missing))
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"twistreg bridge: storage path {missing} does not exist\n")


@pytest.mark.integration
def test_the_command_interrupted_then_resumed(tmp_path):
    """
    SIGINT while a layer is read (a sparse 64 GiB file: minutes of reading) ends the run at
    once, with what was written complete and nothing of that layer; a second run goes on.
    """
    root = tmp_path / "storage"
    storage = LocalStorage(str(root))
    ids = ["1" * 64, "2" * 64, "3" * 64]
    for image_id in ids:
        store_image(storage, image_id, GZIPPED)
    huge = root / "images" / ids[1] / "layer"
    with open(huge, "r+b") as file:
        file.truncate(64 << 30)
    process = subprocess.Popen(
        bridge_command("--storage-path", str(root)), cwd=tmp_path, env=command_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (root / "images" / ids[0] / "_layer_facts").exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        time.sleep(0.2)  # well into the huge layer
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert time.monotonic() - interrupted < 10
    assert (process.returncode, out, err) == (
        INTERRUPTED, "", "twistreg bridge: interrupted after writing the layer facts of 1"
        " image; run it again to go on\n")
    assert sorted(os.listdir(root / "images" / ids[1])) == ["json", "layer"]
    assert not (root / "images" / ids[2] / "_layer_facts").exists()
    os.truncate(huge, 0)
    huge.write_bytes(GZIPPED)
    resumed = run_command(tmp_path, "--storage-path", str(root))
    assert (resumed.returncode, resumed.stdout) == (
        0, "wrote the layer facts of 2 images in local storage\n")
    assert all(facts_of(storage, image_id).digest == sha256(GZIPPED) for image_id in ids)


@pytest.mark.integration
def test_a_push_to_the_server_keeps_the_facts(server, backend):
    """Through HTTP, into local storage or an S3 multipart upload; the facts follow."""
    body = json.dumps({"id": BASE}).encode()
    assert server.request("PUT", f"/v1/images/{BASE}/json", body).status == 200
    assert server.request("PUT", f"/v1/images/{BASE}/layer", GZIPPED).status == 200
    r = server.request("PUT", f"/v1/images/{BASE}/checksum", headers={
        "X-Docker-Checksum-Payload": payload_checksum(body, GZIPPED)})
    assert r.status == 200
    # Computed in the background once the image is complete.
    wait_until(lambda: backend.read(f"images/{BASE}/_layer_facts") is not None)
    stored = LayerFacts.from_json(backend.read(f"images/{BASE}/_layer_facts"))
    assert (stored.digest, stored.diff_id, stored.size, stored.empty) == (
        sha256(GZIPPED), sha256(TAR), len(GZIPPED), False)

