# -*- test-case-name: tests.test_storage_local,tests.test_service,tests.test_plugin -*-
"""
Local filesystem storage: the 0.9.1 tree under C{storage_path}.

Small keys are read and written in the reactor thread: they are a few hundred bytes on a
local disk, as with C{twisted.web.static}.  Every write goes to a temporary file in the
target's directory and is renamed over it, so readers never see half a file.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from typing import BinaryIO

from twisted.internet import defer, threads
from twisted.internet.interfaces import IConsumer, IPullProducer, IReactorThreads
from twisted.logger import Logger
from zope.interface import implementer

from twistreg.config import ConfigError
from twistreg.layout import IMAGES, REPOSITORIES, TWISTREG_V1, TWISTREG_V2, V2_ROOT
from twistreg.storage.interface import (
    ILocalFiles,
    IMaintainable,
    IStaleUploads,
    IStorage,
    IWriter,
    KeyNotFound,
    StorageUnavailable,
)

log = Logger()

TEMP_PREFIX = ".tmp-"
_CHUNK = 1024 * 1024
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)


def _temp_name(path: str) -> str:
    """A hidden name beside C{path} that says which process owns it (see L{sweep_temporary})."""
    directory, base = os.path.split(path)
    return os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}-{base}")


def _owner_alive(name: str) -> bool:
    """Whether the process that created the temporary file C{name} still runs."""
    try:
        pid = int(name[len(TEMP_PREFIX):].split("-", 1)[0])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _open_new(path: str) -> int:
    """Create C{path} with mode 0666 & ~umask, as 0.9.1 did (never mkstemp's 0600)."""
    try:
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as error:
        _refuse_without_descriptors(error)
        raise


def _open_existing(path: str, key: str) -> BinaryIO:
    """
    The file of C{key}, to read.

    @raise KeyNotFound: there is none.
    @raise StorageUnavailable: the process has no file descriptor left (a 503, not a 500).
    """
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise KeyNotFound(key) from None
    except OSError as error:
        if _missing(error):
            raise KeyNotFound(key) from None
        _refuse_without_descriptors(error)
        raise


def _refuse_without_descriptors(error: OSError) -> None:
    if error.errno in (errno.EMFILE, errno.ENFILE):
        raise StorageUnavailable("no file descriptor left") from None


def _missing(error: OSError) -> bool:
    return error.errno in _MISSING


@implementer(IWriter)
class _FileWriter:
    """Writes into a temporary file and renames it over the target on commit."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._temp = _temp_name(path)
        self._file: BinaryIO | None = os.fdopen(_open_new(self._temp), "wb")

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)

    def commit(self) -> defer.Deferred[None]:
        assert self._file is not None
        try:
            self._file.close()
            self._file = None
            os.replace(self._temp, self._path)
        except BaseException:
            self.abort()
            raise
        return defer.succeed(None)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass


@implementer(IPullProducer)
class _RangeProducer:
    """Sends C{length} bytes of an open file to a consumer, one chunk per pull."""

    def __init__(self, file: BinaryIO, length: int, consumer: IConsumer) -> None:
        self._file = file
        self._remaining = length
        self._consumer = consumer
        self.done: defer.Deferred[None] = defer.Deferred(lambda _: self.stopProducing())

    def start(self) -> None:
        self._consumer.registerProducer(self, False)

    def resumeProducing(self) -> None:
        chunk = self._file.read(min(_CHUNK, self._remaining)) if self._remaining else b""
        if not chunk:
            self._finish()
            if self._remaining:
                self.done.errback(OSError("file shrank while being sent"))
            else:
                self.done.callback(None)
            return
        self._remaining -= len(chunk)
        self._consumer.write(chunk)

    def stopProducing(self) -> None:
        """The consumer went away (client disconnect) or the caller cancelled."""
        if not self.done.called:
            self._finish()
            self.done.errback(defer.CancelledError())

    def _finish(self) -> None:
        self._file.close()
        self._consumer.unregisterProducer()


@implementer(IStorage, IMaintainable, IStaleUploads, ILocalFiles)
class LocalStorage:
    """
    IStorage over a directory.

    @param root: the C{storage_path}; created when missing (see L{check_writable}).
    @param reactor: runs L{purge_stale_uploads}'s walk in its thread pool (default: the
        global reactor).
    """

    name = "local"

    def __init__(self, root: str, reactor: IReactorThreads | None = None) -> None:
        self.root = os.path.abspath(root)
        self._reactor = reactor

    def _path(self, key: str) -> str:
        path = os.path.normpath(os.path.join(self.root, key))
        # Defence in depth: the layout never builds such keys.
        if not path.startswith(self.root + os.sep):
            raise ValueError(f"key {key!r} leaves the storage root")
        return path

    def get_content(self, key: str) -> defer.Deferred[bytes]:
        return defer.maybeDeferred(self._read, key)

    def _read(self, key: str) -> bytes:
        with _open_existing(self._path(key), key) as f:
            return f.read()

    def put_content(self, key: str, data: bytes) -> defer.Deferred[None]:
        writer = _FileWriter(self._path(key))
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def exists(self, key: str) -> defer.Deferred[bool]:
        return defer.succeed(os.path.isfile(self._path(key)))

    def size(self, key: str) -> defer.Deferred[int]:
        try:
            return defer.succeed(os.stat(self._path(key)).st_size)
        except OSError as e:
            if _missing(e):
                return defer.fail(KeyNotFound(key))
            raise

    def modified(self, key: str) -> defer.Deferred[float]:
        try:
            status = os.stat(self._path(key))
        except OSError as e:
            if _missing(e):
                return defer.fail(KeyNotFound(key))
            raise
        if not stat.S_ISREG(status.st_mode):
            return defer.fail(KeyNotFound(key))
        return defer.succeed(status.st_mtime)

    def remove(self, key: str) -> defer.Deferred[None]:
        try:
            os.unlink(self._path(key))
        except OSError as e:
            if not _missing(e):
                raise
        return defer.succeed(None)

    def remove_tree(self, key: str) -> defer.Deferred[None]:
        shutil.rmtree(self._path(key), ignore_errors=True)
        return defer.succeed(None)

    def list_directory(self, key: str) -> defer.Deferred[list[str]]:
        try:
            return defer.succeed(sorted(os.listdir(self._path(key))))
        except OSError as e:
            if _missing(e):
                return defer.succeed([])
            raise

    def open_writer(self, key: str) -> defer.Deferred[IWriter]:
        return defer.succeed(_FileWriter(self._path(key)))

    def move(self, source: str, destination: str) -> defer.Deferred[None]:
        """A rename: one filesystem, so no byte is copied."""
        return defer.maybeDeferred(self._move, source, destination)

    def _move(self, source: str, destination: str) -> None:
        path = self._path(source)
        # A rename would move a whole directory too: a key is a file, nothing else.
        if os.path.isdir(path):
            raise KeyNotFound(source)
        target = self._path(destination)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.replace(path, target)
        except OSError as error:
            if _missing(error):
                raise KeyNotFound(source) from None
            raise

    def stream(
        self, key: str, consumer: IConsumer, offset: int, length: int
    ) -> defer.Deferred[None]:
        try:
            file = _open_existing(self._path(key), key)
        except (KeyNotFound, StorageUnavailable) as error:
            return defer.fail(error)
        file.seek(offset)
        producer = _RangeProducer(file, length, consumer)
        producer.start()
        return producer.done

    def open_file(self, key: str) -> defer.Deferred[BinaryIO]:
        return defer.maybeDeferred(_open_existing, self._path(key), key)

    def check_present(self) -> None:
        if not os.path.isdir(self.root):
            what = "is not a directory" if os.path.exists(self.root) else "does not exist"
            raise ConfigError(f"storage path {self.root} {what}")

    def check_writable(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise ConfigError(f"storage path {self.root} is not a directory")
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"cannot create storage path {self.root}: {error.strerror}") from None
        # Created and removed as uploads do theirs: what a push needs, whatever the reason
        # it is refused (mode, read-only mount, immutable directory, full disk quota).
        probe = _temp_name(os.path.join(self.root, "write-check"))
        try:
            os.close(_open_new(probe))
            os.unlink(probe)
        except OSError as error:
            raise ConfigError(
                f"cannot write to storage path {self.root}: {error.strerror}") from None

    def purge_stale_uploads(self) -> defer.Deferred[int]:
        """L{sweep_temporary} in a thread."""
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), self.sweep_temporary)

    def sweep_temporary(self) -> int:
        """
        Delete temporary files left by processes that died mid-write (blocking: run it in a
        thread at start-up).  Files of live processes are in-flight uploads and stay.

        @return: how many files were removed.
        """
        removed = 0
        for key in self.dead_temporary_files():
            try:
                os.unlink(self._path(key))
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def dead_temporary_files(self) -> list[str]:
        """The keys of the temporary files of processes that died mid-write (blocking)."""
        found = []
        for top in (IMAGES, REPOSITORIES, V2_ROOT, TWISTREG_V1, TWISTREG_V2):
            for directory, _dirs, files in os.walk(os.path.join(self.root, top)):
                found += [os.path.relpath(os.path.join(directory, name), self.root)
                          for name in files
                          if name.startswith(TEMP_PREFIX) and not _owner_alive(name)]
        return sorted(found)
