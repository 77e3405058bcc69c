"""
The image rules (R3–R10) called directly, over a temporary local storage, with a reactor
whose thread pool runs jobs at once: no sockets, no threads, no waiting.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from tests.tempdirs import TemporaryDirectories
from tests.threads import InlineThreadsReactor
from twistreg.checksums import payload_checksum
from twistreg.config import load_settings
from twistreg.errors import RegistryError
from twistreg.registry.auth import Authorizer
from twistreg.registry.images import Images, LayerUpload
from twistreg.storage.interface import StorageUnavailable
from twistreg.storage.local import LocalStorage

BASE = "a" * 64
CHILD = "b" * 64


def make_layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1400000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class ImagesTestCase(TemporaryDirectories, SynchronousTestCase):
    """Images over a fresh storage, standalone; helpers to run its coroutines."""

    def setUp(self) -> None:
        self.root = self.temporary_directory()
        self.storage = LocalStorage(self.root)
        self.reactor = InlineThreadsReactor()
        settings = load_settings(None, environ={}, system_config_path=None)
        self.images = Images(
            self.storage, self.reactor, Authorizer(settings, self.storage, self.reactor, None)
        )

    def done(self, coroutine):
        return self.successResultOf(ensureDeferred(coroutine))

    def refused(self, coroutine) -> tuple[int, str]:
        error = self.failureResultOf(ensureDeferred(coroutine), RegistryError).value
        return error.status, error.message

    def stored(self, key: str) -> bytes:
        return self.successResultOf(self.storage.get_content(key))

    def put(self, key: str, data: bytes) -> None:
        self.successResultOf(self.storage.put_content(key, data))

    def push(self, image_id: str, layer: bytes, parent: str | None = None) -> bytes:
        """R8, R4 and R5 of one image; its json."""
        image_json = {"id": image_id}
        if parent:
            image_json["parent"] = parent
        body = json.dumps(image_json).encode()
        self.done(self.images.put_json(image_id, body, None, None))
        upload = self.done(self.images.begin_layer_upload(image_id))
        for start in range(0, len(layer), 7000):
            upload.write(layer[start : start + 7000])
        self.done(upload.commit())
        self.done(self.images.put_checksum(image_id, payload_checksum(body, layer)))
        return body


class UploadTests(ImagesTestCase):
    def test_upload_completes_with_inline_threads(self) -> None:
        """R4's checksum is computed in the reactor's pool and stored when the body ends."""
        body = json.dumps({"id": BASE}).encode()
        layer = bytes(range(256)) * 300
        self.done(self.images.put_json(BASE, body, None, None))
        upload = self.done(self.images.begin_layer_upload(BASE))
        for start in range(0, len(layer), 7000):
            self.assertIsNone(upload.write(layer[start : start + 7000]))
        self.done(upload.commit())
        self.assertEqual(json.loads(self.stored(f"images/{BASE}/_checksum")),
                         [payload_checksum(body, layer)])
        self.assertEqual(self.stored(f"images/{BASE}/layer"), layer)
        self.assertGreater(self.reactor.pool.jobs, 0)

    def test_aborted_upload_changes_nothing(self) -> None:
        self.done(self.images.put_json(BASE, json.dumps({"id": BASE}).encode(), None, None))
        upload = self.done(self.images.begin_layer_upload(BASE))
        upload.write(b"half a layer")
        upload.abort()
        self.assertFalse(self.successResultOf(self.storage.exists(f"images/{BASE}/layer")))
        self.assertFalse(self.successResultOf(self.storage.exists(f"images/{BASE}/_checksum")))


class FileListTests(ImagesTestCase):
    def test_file_list_parsed_in_the_pool(self) -> None:
        """R9 reads the layer through the reactor's pool and caches the list as C{_files}."""
        self.push(BASE, make_layer({"etc/hello.txt": b"hello world!"}))
        jobs = self.reactor.pool.jobs
        self.done(self.images.check_file_list(BASE, None))
        body = self.done(self.images.get_files(BASE))
        self.assertEqual(json.loads(body),
                         [["etc/hello.txt", "f", False, 12, 1400000000, 420, 0, 0]])
        self.assertEqual(self.stored(f"images/{BASE}/_files"), body)
        self.assertEqual(self.reactor.pool.jobs, jobs + 1)

    def test_diff_computed_in_the_pool(self) -> None:
        self.push(BASE, make_layer({"a": b"1", "b": b"2"}))
        self.push(CHILD, make_layer({"a": b"changed", "c": b"new"}), parent=BASE)
        diff = json.loads(self.done(self.images.get_diff(CHILD)))
        self.assertEqual(sorted(diff["changed"]), ["a"])
        self.assertEqual(sorted(diff["created"]), ["c"])
        self.assertEqual(diff["deleted"], {})

    def test_listing_checks(self) -> None:
        """R9/R10 step 5: the cached answer or the layer must exist, each route its own."""
        self.done(self.images.put_json(BASE, json.dumps({"id": BASE}).encode(), None, None))
        self.successResultOf(self.storage.remove(f"images/{BASE}/_inprogress"))
        for check in (self.images.check_file_list, self.images.check_diff):
            self.assertEqual(self.refused(check(BASE, None)), (404, "Image not found"))
        self.put(f"images/{BASE}/_diff", b"{}")
        self.done(self.images.check_diff(BASE, None))
        self.done(self.images.check_diff(BASE, None))
        self.assertEqual(self.refused(self.images.check_file_list(BASE, None)),
                         (404, "Image not found"))
        self.assertEqual(self.refused(self.images.check_file_list(BASE, None)),
                         (404, "Image not found"))
        self.put(f"images/{BASE}/layer", b"")
        self.done(self.images.check_file_list(BASE, None))

    def test_listing_checks_in_progress(self) -> None:
        self.done(self.images.put_json(BASE, json.dumps({"id": BASE}).encode(), None, None))
        for check in (self.images.check_file_list, self.images.check_diff):
            self.assertEqual(self.refused(check(BASE, None)),
                             (400, "Image is being uploaded, retry later"))
            self.assertEqual(self.refused(check("A" * 64, None)), (404, "Invalid image ID"))

    def test_not_a_tar(self) -> None:
        self.push(BASE, b"not a tar at all" * 100)
        self.assertEqual(self.refused(self.images.get_files(BASE)),
                         (400, "Layer format not supported"))


DEEP = 100_000
DEEP_ARRAYS = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP


class HostileJsonTests(ImagesTestCase):
    """JSON nested 100,000 levels deep, or otherwise unusable, never escapes as a 500."""

    def put_json(self, body: bytes, image_id: str = BASE) -> tuple[int, str]:
        return self.refused(self.images.put_json(image_id, body, None, None))

    def test_image_json(self) -> None:
        """R8 step 3: 400 C{Invalid JSON}, and nothing stored."""
        for body in (
            DEEP_ARRAYS,
            DEEP_OBJECTS,
            b'{"id": "' + BASE.encode() + b'", "config": ' + DEEP_ARRAYS + b"}",
            b'{"id": "' + BASE.encode() + b'", "Size": 1e999999}',
            b'{"id": "' + BASE.encode() + b'", "Size": ' + b"9" * 5000 + b"}",
            b'{"id": "' + BASE.encode() + b'", "Size": NaN}',
        ):
            self.assertEqual(self.put_json(body), (400, "Invalid JSON"))
        self.assertEqual(os.listdir(self.root), [])

    def test_stored_ancestry(self) -> None:
        """R7 answers an unreadable ancestry as a missing one; R8 and R10 go on without it."""
        self.push(BASE, make_layer({"a": b"1"}))
        for stored in (DEEP_ARRAYS, b"[" * 300 + b"]" * 300, b"1e999999", b'{"a": 1}',
                       b'["' + BASE.encode() + b'", 5]'):
            self.put(f"images/{BASE}/ancestry", stored)
            self.assertTrue(self.done(self.images.check_ancestry(BASE)))
            self.assertEqual(self.refused(self.images.get_ancestry(BASE)),
                             (404, "Image not found"))
        self.push(CHILD, make_layer({"a": b"2"}), parent=BASE)
        self.assertEqual(self.done(self.images.get_ancestry(CHILD)), [CHILD, BASE])
        self.put(f"images/{CHILD}/ancestry", DEEP_OBJECTS)
        diff = json.loads(self.done(self.images.get_diff(CHILD)))
        self.assertEqual(sorted(diff["created"]), ["a"])  # diffed as a base image

    def test_stored_file_list(self) -> None:
        """R10 lists the layer again when the cached C{_files} does not read as a list."""
        self.push(BASE, make_layer({"a": b"1"}))
        self.push(CHILD, make_layer({"a": b"2", "b": b"3"}), parent=BASE)
        for stored in (DEEP_ARRAYS, b'[["a", "f"]]', b"[[1, 2, 3, 4, 5, 6, 7, 8]]", b'{"a": 1}'):
            self.put(f"images/{BASE}/_files", stored)
            self.put(f"images/{CHILD}/_files", stored)
            self.successResultOf(self.storage.remove(f"images/{CHILD}/_diff"))
            diff = json.loads(self.done(self.images.get_diff(CHILD)))
            self.assertEqual((sorted(diff["changed"]), sorted(diff["created"])), (["a"], ["b"]))
        self.assertEqual(json.loads(self.stored(f"images/{BASE}/_files"))[0][0], "a")

    def test_stored_checksum(self) -> None:
        """An unreadable C{_checksum} holds no checksum: R6 sends none, R5 finds no match."""
        body = json.dumps({"id": BASE}).encode()
        self.done(self.images.put_json(BASE, body, None, None))
        upload = self.done(self.images.begin_layer_upload(BASE))
        upload.write(b"layer")
        self.done(upload.commit())
        checksum = payload_checksum(body, b"layer")
        for stored in (DEEP_ARRAYS, b"[" * DEEP, b'{"a":' * DEEP):
            self.put(f"images/{BASE}/_checksum", stored)
            self.assertEqual(self.done(self.images.get_json(BASE))[2], [])
            self.assertEqual(self.refused(self.images.put_checksum(BASE, checksum)),
                             (400, "Checksum mismatch"))

    def test_legacy_plain_checksum(self) -> None:
        """0.9.1's plain-string C{_checksum} is still one entry."""
        self.done(self.images.put_json(BASE, json.dumps({"id": BASE}).encode(), None, None))
        self.put(f"images/{BASE}/_checksum", b"sha256:abc")
        self.assertEqual(self.done(self.images.get_json(BASE))[2], ["sha256:abc"])
        self.done(self.images.put_checksum(BASE, "sha256:abc"))


class OddBodiesTests(ImagesTestCase):
    """Whatever shape a client's JSON has, R8 answers with the contract's message."""

    def put_json(self, data) -> tuple[int, str]:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return self.refused(self.images.put_json(BASE, body, None, None))

    def test_not_an_object(self) -> None:
        for data in ([BASE], BASE, 5, None, True, {}, b'{"id": "' + BASE.encode() + b'"'):
            self.assertEqual(self.put_json(data), (400, "Invalid JSON"))

    def test_ids_of_other_types(self) -> None:
        self.assertEqual(self.put_json({"parent": BASE}), (400, "Missing key `id' in JSON"))
        for image_id in ([BASE], {"id": BASE}, 5, None, BASE.upper(), BASE + " "):
            self.assertEqual(self.put_json({"id": image_id}),
                             (400, "JSON data contains invalid id"))

    def test_parents_of_other_types(self) -> None:
        """R8 step 7: a truthy parent that is not an existing image's id is refused."""
        self.push(CHILD, make_layer({"a": b"1"}))
        for parent in ([CHILD], {"id": CHILD}, 5, True, "../" + CHILD, CHILD.upper(), "c" * 64):
            self.assertEqual(self.put_json({"id": BASE, "parent": parent}),
                             (400, "Image depends on a non existing parent"))
        for parent in ("", 0, None, [], {}, False):
            self.done(self.images.put_json(
                BASE, json.dumps({"id": BASE, "parent": parent}).encode(), None, None))
            self.assertEqual(self.done(self.images.get_ancestry(BASE)), [BASE])

    def test_odd_checksum_headers(self) -> None:
        """R5 compares whatever the header holds, odd bytes included, as a string."""
        body = json.dumps({"id": BASE}).encode()
        self.done(self.images.put_json(BASE, body, None, None))
        upload = self.done(self.images.begin_layer_upload(BASE))
        self.done(upload.commit())
        for header in ("\xe9\xff", "sha256:\x00", " " * 1000, "\ud800"):
            self.assertEqual(self.refused(self.images.put_checksum(BASE, header)),
                             (400, "Checksum mismatch"))
        self.done(self.images.put_checksum(BASE, payload_checksum(body, b"")))


class _Waiting:
    """A writer or hasher that asks the body to wait, then answers as it is told."""

    def __init__(self) -> None:
        self.waiting: Deferred[None] = Deferred()

    def update(self, data: bytes) -> Deferred[None]:
        return self.waiting

    write = update

    def stop(self) -> None:
        pass

    def abort(self) -> None:
        pass


class LayerUploadWaitTests(SynchronousTestCase):
    def test_a_storage_failure_while_both_wait_is_itself(self) -> None:
        """Not a FirstError: the web layer answers a storage failure 503, not 500."""
        writer, hasher = _Waiting(), _Waiting()
        upload = LayerUpload(None, "a" * 64, writer, hasher)  # type: ignore[arg-type]
        waiting = upload.write(b"x")
        assert waiting is not None
        writer.waiting.errback(StorageUnavailable("S3 refused"))
        hasher.waiting.callback(None)
        self.failureResultOf(waiting, StorageUnavailable)
