# -*- test-case-name: tests.test_storage_local,tests.test_service -*-
"""The storage seam: what the registry's rules need from a place that keeps bytes."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from twistreg.errors import RegistryError
from twistreg.metrics import count

#: The metrics' counts of storage failures, by kind.
_TIMEOUTS = count("storage_errors", "timeout")
_FAILURES = count("storage_errors", "failure")


class KeyNotFound(Exception):
    """The key names nothing stored."""


class StorageUnavailable(RegistryError):
    """
    The store cannot be reached, stays silent, or fails: every route answers C{503}.

    @ivar reason: what happened, for the log (never sent to the client).
    @ivar timed_out: the store stopped answering (not worth retrying).
    """

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        super().__init__(503, "Storage unavailable")
        self.reason = reason
        self.timed_out = timed_out
        # Counted here, the one place every driver's failure passes (C{/metrics}).
        (_TIMEOUTS if timed_out else _FAILURES).inc()

    def __str__(self) -> str:
        return self.reason


class IWriter(Interface):
    """
    A write in progress to one key: invisible to readers until L{commit}.
    """

    def write(data: bytes):
        """
        Append C{data}.

        @return: L{None} when the bytes are taken, or a Deferred that fires when the writer
            can take more (back-pressure for remote stores).
        """

    def commit():
        """Publish the written bytes atomically under the key. @return: a Deferred."""

    def abort():
        """Forget the written bytes; the key is unchanged. Safe to call twice."""


class IStorage(Interface):
    """
    A key/value store with directories, in the 0.9.1 layout.

    Keys are relative C{/}-separated paths built by L{twistreg.layout}.  Every method
    returns a Deferred; a missing key fails with L{KeyNotFound}.
    """

    name = Attribute("The driver's name, as in the C{storage} setting.")

    def get_content(key: str):
        """The whole value of a small key (json, tags, markers)."""

    def put_content(key: str, data: bytes):
        """Replace the value of C{key} atomically."""

    def exists(key: str):
        """Whether C{key} holds a value."""

    def size(key: str):
        """The size in bytes of the value of C{key}."""

    def modified(key: str):
        """
        When the value of C{key} was last written, in seconds since the epoch (the file's
        mtime, the object's C{Last-Modified}): garbage collection spares what is younger
        than its grace period, since a push may still be on its way to referencing it.
        """

    def remove(key: str):
        """Remove C{key}; a missing key is not an error."""

    def remove_tree(key: str):
        """Remove the directory C{key} and everything below it."""

    def list_directory(key: str):
        """The names of the entries of directory C{key}; empty when it does not exist."""

    def open_writer(key: str):
        """An L{IWriter} that publishes under C{key} when committed."""

    def move(source: str, destination: str):
        """
        Publish the value of C{source} under C{destination} atomically (replacing what was
        there) and remove C{source}: a finished upload takes its place without its bytes
        passing through the registry.  Readers of C{destination} see the old value or the
        new one, never a part; C{source} and C{destination} are different keys.

        @raise KeyNotFound: C{source} holds no value (nothing changed).
        """

    def stream(key: str, consumer, offset: int, length: int):
        """
        Write C{length} bytes of C{key} from C{offset} to the C{IConsumer}, as fast as the
        consumer takes them.  The Deferred fires when all is written.
        """

    def open_file(key: str):
        """A blocking, readable binary file object for C{key}, to parse in a thread."""


class IMaintainable(Interface):
    """
    Optional, beside L{IStorage}: checks that the server's master process does once at start
    (and a reload again), for every worker. Both methods block.
    """

    def check_present():
        """
        @raise twistreg.config.ConfigError: the storage does not exist (one line naming it).
        """

    def check_writable():
        """
        Create the storage if it is missing, then prove a file can be created and removed in
        it: a read-only storage would otherwise answer 500 to every push.

        @raise twistreg.config.ConfigError: one line naming the storage and the problem.
        """


class IStaleUploads(Interface):
    """
    Optional beside L{IStorage}: a driver where a writer that died leaves unfinished uploads
    behind (temporary files, multipart uploads). Cleaned at start, hourly, and by
    C{python -m twistreg purge-uploads}; never an upload a live writer is still sending.
    """

    def purge_stale_uploads():
        """@return: a Deferred firing with how many leftovers were removed."""


class ILocalFiles(Interface):
    """
    Optional beside L{IStorage}, a marker: C{open_file} opens the stored file itself, on this
    machine, so the kernel can send it to a socket (C{os.sendfile}) with no copy in between.
    """


class IRedirectable(Interface):
    """Optional beside L{IStorage}: a store clients can download from directly."""

    def redirect_url(key: str) -> str:
        """A URL that serves C{key} to anyone for a while (C{storage_redirect})."""
