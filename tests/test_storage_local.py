"""The local driver: atomic writes, 0.9.1 permissions, streaming reads, the temp sweep."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.tempdirs import TemporaryDirectories
from twistreg.config import ConfigError
from twistreg.storage.interface import (
    IMaintainable,
    IStorage,
    IWriter,
    KeyNotFound,
    StorageUnavailable,
)
from twistreg.storage.local import LocalStorage


class Consumer(StringTransport):
    """A consumer that pulls from a registered pull producer until it is told to stop."""

    def pump(self) -> None:
        while self.producer is not None:
            self.producer.resumeProducing()


class LocalStorageTests(TemporaryDirectories, SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.temporary_directory()
        self.storage = LocalStorage(self.root)

    def test_interfaces(self) -> None:
        verifyObject(IStorage, self.storage)
        verifyObject(IMaintainable, self.storage)
        verifyObject(IWriter, self.successResultOf(self.storage.open_writer("images/a/layer")))

    def test_content_round_trip(self) -> None:
        self.successResultOf(self.storage.put_content("repositories/foo/bar/tag_x", b"id"))
        self.assertEqual(
            self.successResultOf(self.storage.get_content("repositories/foo/bar/tag_x")), b"id")
        self.assertTrue(self.successResultOf(self.storage.exists("repositories/foo/bar/tag_x")))
        self.assertEqual(
            self.successResultOf(self.storage.list_directory("repositories/foo/bar")), ["tag_x"])
        self.assertEqual(self.successResultOf(self.storage.size("repositories/foo/bar/tag_x")), 2)

    def test_missing_keys(self) -> None:
        self.failureResultOf(self.storage.get_content("images/a/json"), KeyNotFound)
        self.failureResultOf(self.storage.size("images/a/json"), KeyNotFound)
        self.assertFalse(self.successResultOf(self.storage.exists("images/a/json")))
        self.assertEqual(self.successResultOf(self.storage.list_directory("images/a")), [])
        self.successResultOf(self.storage.remove("images/a/json"))

    def test_modified_is_the_files_mtime(self) -> None:
        self.successResultOf(self.storage.put_content("images/a/json", b"{}"))
        os.utime(os.path.join(self.root, "images/a/json"), (1000000000, 1000000000))
        self.assertEqual(self.successResultOf(self.storage.modified("images/a/json")),
                         1000000000)
        self.failureResultOf(self.storage.modified("images/a/layer"), KeyNotFound)
        # A directory holds no value.
        self.failureResultOf(self.storage.modified("images/a"), KeyNotFound)

    def test_too_long_name_is_missing(self) -> None:
        key = "repositories/foo/bar/tag_" + "x" * 300
        self.failureResultOf(self.storage.get_content(key), KeyNotFound)
        self.assertFalse(self.successResultOf(self.storage.exists(key)))

    def test_keys_cannot_leave_the_root(self) -> None:
        with pytest.raises(ValueError):
            self.storage.exists("../outside")

    def test_permissions_follow_umask(self) -> None:
        old = os.umask(0o022)
        try:
            self.successResultOf(self.storage.put_content("images/a/json", b"{}"))
        finally:
            os.umask(old)
        mode = stat.S_IMODE(os.stat(os.path.join(self.root, "images/a/json")).st_mode)
        self.assertEqual(mode, 0o644)

    def test_writer_is_invisible_until_commit(self) -> None:
        self.successResultOf(self.storage.put_content("images/a/layer", b"old"))
        writer = self.successResultOf(self.storage.open_writer("images/a/layer"))
        writer.write(b"new bytes")
        self.assertEqual(self.successResultOf(self.storage.get_content("images/a/layer")), b"old")
        self.successResultOf(writer.commit())
        self.assertEqual(
            self.successResultOf(self.storage.get_content("images/a/layer")), b"new bytes")
        self.assertEqual(os.listdir(os.path.join(self.root, "images/a")), ["layer"])

    def test_aborted_writer_leaves_nothing(self) -> None:
        writer = self.successResultOf(self.storage.open_writer("images/a/layer"))
        writer.write(b"partial")
        writer.abort()
        writer.abort()
        self.assertEqual(os.listdir(os.path.join(self.root, "images/a")), [])

    def test_stream_range(self) -> None:
        data = bytes(range(256)) * 10000
        self.successResultOf(self.storage.put_content("images/a/layer", data))
        consumer = Consumer()
        done = self.storage.stream("images/a/layer", consumer, 1000, 2000000)
        consumer.pump()
        self.successResultOf(done)
        self.assertEqual(consumer.value(), data[1000:2001000])

    def test_stream_stopped_by_consumer(self) -> None:
        self.successResultOf(self.storage.put_content("images/a/layer", b"x" * 5000000))
        consumer = Consumer()
        done = self.storage.stream("images/a/layer", consumer, 0, 5000000)
        consumer.producer.resumeProducing()
        consumer.producer.stopProducing()
        self.failureResultOf(done)

    def test_move_renames_without_copying(self) -> None:
        """The destination is the source's file itself (same inode), the old value replaced."""
        source, destination = "uploads/u/0", "blobs/ab/abcd/data"
        self.successResultOf(self.storage.put_content(source, b"blob"))
        self.successResultOf(self.storage.put_content(destination, b"older"))
        inode = os.stat(os.path.join(self.root, source)).st_ino
        self.successResultOf(self.storage.move(source, destination))
        self.assertEqual(self.successResultOf(self.storage.get_content(destination)), b"blob")
        self.assertEqual(os.stat(os.path.join(self.root, destination)).st_ino, inode)
        self.assertFalse(self.successResultOf(self.storage.exists(source)))
        self.assertEqual(os.listdir(os.path.join(self.root, "blobs/ab/abcd")), ["data"])

    def test_move_makes_the_destination_directories(self) -> None:
        self.successResultOf(self.storage.put_content("a/b", b"x"))
        self.successResultOf(self.storage.move("a/b", "c/d/e/f"))
        self.assertEqual(self.successResultOf(self.storage.get_content("c/d/e/f")), b"x")
        self.assertEqual(os.listdir(os.path.join(self.root, "a")), [])

    def test_move_of_a_missing_source(self) -> None:
        self.successResultOf(self.storage.put_content("c/d", b"kept"))
        self.failureResultOf(self.storage.move("a/b", "c/d"), KeyNotFound)
        self.failureResultOf(self.storage.move("c/d/e", "c/f"), KeyNotFound)
        self.assertEqual(self.successResultOf(self.storage.get_content("c/d")), b"kept")

    def test_move_of_a_directory_is_refused(self) -> None:
        """A directory is no key: it stays where it is."""
        self.successResultOf(self.storage.put_content("a/b/c", b"x"))
        self.failureResultOf(self.storage.move("a/b", "d"), KeyNotFound)
        self.assertEqual(self.successResultOf(self.storage.get_content("a/b/c")), b"x")
        self.assertFalse(os.path.exists(os.path.join(self.root, "d")))

    def test_sweep_removes_only_dead_owners(self) -> None:
        directory = os.path.join(self.root, "images", "a")
        os.makedirs(directory)
        dead = os.path.join(directory, ".tmp-999999999-ab-layer")
        alive = os.path.join(directory, f".tmp-{os.getpid()}-ab-layer")
        for path in (dead, alive):
            open(path, "wb").close()
        self.assertEqual(self.storage.sweep_temporary(), 1)
        self.assertEqual(sorted(os.listdir(directory)), [os.path.basename(alive)])

    def test_sweep_covers_the_v2_trees(self) -> None:
        """Blobs, upload chunks and bridge records are written through temporary files too."""
        directories = ("docker/registry/v2/blobs/sha256/ab/abcd", "twistreg/v2/uploads/u",
                       "twistreg/v1/bridge/images/ab")
        left = [os.path.join(self.root, directory, ".tmp-999999999-ab-data")
                for directory in directories]
        for path in left:
            os.makedirs(os.path.dirname(path))
            open(path, "wb").close()
        self.assertEqual(self.storage.sweep_temporary(), 3)
        self.assertFalse(any(os.path.exists(path) for path in left))


# -- the checks at start ---------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """
    C{path}, a directory nobody can create files in, root included: root ignores permission
    bits, so it is made immutable (chattr +i) when this process is root, and mode 0555
    otherwise. Skips the test where neither is possible.
    """
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not possible here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)




def test_check_writable_creates_a_missing_directory_and_leaves_nothing(tmp_path):
    root = tmp_path / "a" / "b"
    LocalStorage(str(root)).check_writable()
    assert root.is_dir() and list(root.iterdir()) == []


def test_check_writable_refuses_a_read_only_directory(read_only_directory):
    with pytest.raises(ConfigError) as caught:
        LocalStorage(str(read_only_directory)).check_writable()
    assert str(caught.value) in (
        f"cannot write to storage path {read_only_directory}: Operation not permitted",
        f"cannot write to storage path {read_only_directory}: Permission denied")


def test_check_writable_refuses_a_directory_it_cannot_create(read_only_directory):
    root = read_only_directory / "storage"
    with pytest.raises(ConfigError) as caught:
        LocalStorage(str(root)).check_writable()
    assert str(caught.value).startswith(f"cannot create storage path {root}: ")


def test_check_writable_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as caught:
        LocalStorage(str(tmp_path / "file" / "storage")).check_writable()
    assert str(caught.value) == (
        f"cannot create storage path {tmp_path}/file/storage: Not a directory")
    with pytest.raises(ConfigError, match="^storage path .*/file is not a directory$"):
        LocalStorage(str(tmp_path / "file")).check_writable()


def test_check_present(tmp_path):
    LocalStorage(str(tmp_path)).check_present()
    with pytest.raises(ConfigError) as caught:
        LocalStorage(str(tmp_path / "missing")).check_present()
    assert str(caught.value) == f"storage path {tmp_path}/missing does not exist"
    assert not (tmp_path / "missing").exists()


def test_no_descriptor_left_is_unavailable_storage(tmp_path, monkeypatch) -> None:
    """EMFILE opening a storage file is a 503 (StorageUnavailable), not a 500."""
    import builtins

    from twisted.internet.defer import ensureDeferred

    storage = LocalStorage(str(tmp_path))
    (tmp_path / "images" / "a").mkdir(parents=True)
    (tmp_path / "images" / "a" / "json").write_bytes(b"{}")

    def no_descriptor(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(builtins, "open", no_descriptor)
    monkeypatch.setattr(os, "open", no_descriptor)
    for attempt in (storage.get_content("images/a/json"),
                    storage.open_file("images/a/json"),
                    storage.stream("images/a/json", StringTransport(), 0, 2),
                    ensureDeferred(_put(storage))):
        failures = []
        attempt.addErrback(failures.append)
        assert failures and failures[0].check(StorageUnavailable)


async def _put(storage: LocalStorage) -> None:
    await storage.put_content("images/a/ancestry", b"[]")
