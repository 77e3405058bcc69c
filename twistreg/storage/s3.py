# -*- test-case-name: tests.test_storage_s3 -*-
"""
S3 storage (AWS S3, Ceph RGW, MinIO, SeaweedFS): the 0.9.1 keys under C{storage_path}.

Small keys are single PUTs and GETs. A layer goes up as a multipart upload whose parts are
sent while the body arrives (one part in flight, one filling: the client is paused beyond
that) and appears only when the upload completes; it comes down as a ranged GET piped to
the client; it moves by a server-side copy. Existence is always proven with HEAD or GET,
never by a listing: some S3-compatible stores list a deleted prefix for a while.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote
from xml.sax.saxutils import escape

from twisted.internet import defer
from twisted.internet.interfaces import IConsumer
from twisted.logger import Logger
from zope.interface import implementer

from twistreg.config import ConfigError, MiB, S3Settings
from twistreg.storage.interface import (
    IMaintainable,
    IRedirectable,
    IStaleUploads,
    IStorage,
    IWriter,
    KeyNotFound,
    StorageUnavailable,
)
from twistreg.storage.s3client import (
    BodyPipe,
    Discard,
    S3Client,
    content_length,
    xml_elements,
    xml_text,
)

log = Logger()
T = TypeVar("T")

_PROBE_KEY = ".twistreg-write-check"
_S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _deferred(method: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., defer.Deferred[T]]:
    """IStorage's methods return Deferreds; these are written as coroutines."""

    @functools.wraps(method)
    def start(*args: Any, **kwargs: Any) -> defer.Deferred[T]:
        return defer.ensureDeferred(method(*args, **kwargs))

    return start


@implementer(IWriter)
class _MultipartWriter:
    """
    A layer on its way up: a single PUT when it fits in one part, else a multipart upload
    completed on L{commit}.
    """

    def __init__(self, storage: S3Storage, object_key: str) -> None:
        self._storage = storage
        self._client = storage.client
        self._key = object_key
        self._part_size = storage.client.settings.part_size
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._upload_id: str | None = None
        self._parts: list[tuple[int, str]] = []
        self._in_flight: defer.Deferred[None] | None = None
        self._waiting: list[defer.Deferred[None]] = []
        self._failure: Exception | None = None
        self._aborted = False

    def write(self, data: bytes) -> defer.Deferred[None] | None:
        if self._failure is not None:
            raise self._failure
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size < self._part_size:
            return None
        if self._in_flight is None:
            self._send_part()
            return None
        # One part in flight and one full: the body waits for the first to be stored.
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiting)
        return waiting

    def _take_pending(self) -> list[bytes]:
        """The body's pieces so far, as they arrived (a part is sent without joining them)."""
        pieces = self._pending
        self._pending = []
        self._pending_size = 0
        return pieces

    def _send_part(self) -> None:
        data = self._take_pending()
        number = len(self._parts) + 1
        self._parts.append((number, ""))
        self._in_flight = defer.ensureDeferred(self._upload_part(number, data))
        self._in_flight.addCallbacks(self._part_sent, self._part_failed)

    async def _upload_part(self, number: int, data: list[bytes]) -> None:
        # Parts go one at a time: the first one starts the upload.
        if self._upload_id is None:
            self._upload_id = await self._storage.start_multipart(self._key)
        response = await self._client.call(
            "PUT", self._key, query={"partNumber": str(number), "uploadId": self._upload_id},
            body=data, sign_body=False)
        etag = response.headers.get("etag")
        if not etag:
            raise StorageUnavailable(f"S3 stored part {number} of {self._key} without an ETag")
        self._parts[number - 1] = (number, etag)

    def _part_sent(self, _: None) -> None:
        self._in_flight = None
        if self._pending_size >= self._part_size and not self._aborted:
            self._send_part()
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(None)

    def _part_failed(self, failure) -> None:
        self._in_flight = None
        self._failure = failure.value if isinstance(failure.value, Exception) else (
            StorageUnavailable(str(failure.value)))
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.errback(failure)

    async def commit(self) -> None:
        # A part that ends may send the next one: wait until none is on its way.
        while self._in_flight is not None:
            await self._in_flight
        if self._failure is not None:
            raise self._failure
        if not self._parts:
            await self._client.call("PUT", self._key, body=self._take_pending(), sign_body=False,
                                    headers=self._storage.put_headers)
            return
        if self._pending_size:
            self._send_part()
            while self._in_flight is not None:
                await self._in_flight
            if self._failure is not None:
                raise self._failure
        assert self._upload_id is not None
        await self._storage.complete_multipart(self._key, self._upload_id, self._parts)

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        self._pending = []
        self._pending_size = 0
        if self._failure is None:
            self._failure = StorageUnavailable("upload aborted")
        if self._parts:
            defer.ensureDeferred(self._abort_upload())

    async def _abort_upload(self) -> None:
        # A part still on its way ends first (its outcome is the writer's already).
        while self._in_flight is not None:
            await self._in_flight
        if self._upload_id is not None:
            await self._storage.abort_multipart(self._key, self._upload_id)


@implementer(IStorage, IMaintainable, IRedirectable, IStaleUploads)
class S3Storage:
    """
    IStorage over one bucket and key prefix.

    @param reactor: runs the connections and time limits.
    """

    name = "s3"
    #: The largest object L{move} copies with one CopyObject. S3 takes up to 5 GiB, but a
    #: store answers a copy only once it is done: SeaweedFS copied 400 MiB/s here, so 5 GiB
    #: would outlast C{s3_timeout} (10 s). Larger objects go in ranges of this size.
    copy_limit = 256 * MiB
    #: The ranges a larger object is copied in (UploadPartCopy).
    copy_part_size = 256 * MiB

    def __init__(self, settings: S3Settings, reactor) -> None:
        if not settings.bucket:
            raise ConfigError("storage s3 needs a bucket: set s3_bucket (or boto_bucket)")
        self.client = S3Client(settings, reactor)
        self._clock = reactor
        self.put_headers: Mapping[str, str] = (
            {"x-amz-server-side-encryption": "AES256"} if settings.encrypt else {})

    def _key(self, key: str) -> str:
        return self.client.object_key(key)

    @_deferred
    async def get_content(self, key: str) -> bytes:
        return (await self.client.call("GET", self._key(key))).body

    @_deferred
    async def put_content(self, key: str, data: bytes) -> None:
        await self.client.call("PUT", self._key(key), body=data, headers=self.put_headers)

    @_deferred
    async def exists(self, key: str) -> bool:
        try:
            await self.client.call("HEAD", self._key(key))
        except KeyNotFound:
            return False
        return True

    @_deferred
    async def size(self, key: str) -> int:
        return content_length(await self.client.call("HEAD", self._key(key)))

    @_deferred
    async def modified(self, key: str) -> float:
        """C{Last-Modified} of a HEAD: whole seconds, which is all a grace period needs."""
        response = await self.client.call("HEAD", self._key(key))
        try:
            return email.utils.parsedate_to_datetime(response.headers["last-modified"]).timestamp()
        except (KeyError, TypeError, ValueError):
            raise StorageUnavailable(
                f"S3 answered a HEAD of {key} without a Last-Modified date") from None

    @_deferred
    async def remove(self, key: str) -> None:
        await self.client.call("DELETE", self._key(key), expect=(204, 200, 404))

    @_deferred
    async def remove_tree(self, key: str) -> None:
        for object_key in await self._list(self._key(key) + "/", delimiter=False):
            await self.client.call("DELETE", object_key, expect=(204, 200, 404))

    @_deferred
    async def list_directory(self, key: str) -> list[str]:
        directory = self._key(key).rstrip("/") + "/"
        names = {
            name[len(directory):].rstrip("/")
            for name in await self._list(directory, delimiter=True)
        }
        names.discard("")
        return sorted(names)

    async def _list(self, prefix: str, *, delimiter: bool) -> list[str]:
        """Keys (and with C{delimiter}, sub-prefixes) under C{prefix}, page after page."""
        found: list[str] = []
        query = {"list-type": "2", "prefix": prefix}
        if delimiter:
            query["delimiter"] = "/"
        while True:
            body = (await self.client.call("GET", query=query)).body
            for element in xml_elements(body, "Contents"):
                found.append(xml_text(element, "Key") or "")
            for element in xml_elements(body, "CommonPrefixes"):
                found.append(xml_text(element, "Prefix") or "")
            token = [xml_text(e, "NextContinuationToken") for e in
                     xml_elements(body, "ListBucketResult")]
            truncated = [xml_text(e, "IsTruncated") for e in
                         xml_elements(body, "ListBucketResult")]
            if not (truncated and truncated[0] == "true" and token and token[0]):
                return found
            query["continuation-token"] = token[0]

    def open_writer(self, key: str) -> defer.Deferred[IWriter]:
        return defer.succeed(_MultipartWriter(self, self._key(key)))

    async def start_multipart(self, object_key: str) -> str:
        """Start a multipart upload of C{object_key}; its id."""
        response = await self.client.call(
            "POST", object_key, query={"uploads": ""}, headers=self.put_headers)
        found = [xml_text(element, "UploadId") or "" for element in
                 xml_elements(response.body, "InitiateMultipartUploadResult")]
        if not found or not found[0]:
            raise StorageUnavailable(f"S3 started no multipart upload for {object_key}")
        return found[0]

    async def complete_multipart(self, object_key: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> None:
        """Publish the C{(number, ETag)} parts of an upload as the object."""
        listed = "".join(
            f"<Part><PartNumber>{number}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
            for number, etag in parts)
        body = (f'<CompleteMultipartUpload xmlns="{_S3_XMLNS}">{listed}'
                "</CompleteMultipartUpload>").encode()
        response = await self.client.call("POST", object_key, query={"uploadId": upload_id},
                                          body=body)
        # S3 may answer 200 and put the error in the body.
        if xml_elements(response.body, "Error"):
            raise StorageUnavailable(f"S3 could not complete the upload of {object_key}")

    async def abort_multipart(self, object_key: str, upload_id: str) -> None:
        """Drop an unfinished upload's parts; a failure is logged (the purge finds it later)."""
        try:
            await self.client.call("DELETE", object_key, query={"uploadId": upload_id},
                                   expect=(204, 200, 404))
        except Exception as failure:
            log.warn("could not abort the upload of {key}: {why}", key=object_key, why=failure)

    @_deferred
    async def move(self, source: str, destination: str) -> None:
        """
        A server-side copy, then the source deleted: no byte passes through the registry.
        CopyObject takes objects up to L{copy_limit}; larger ones are copied in ranges
        (UploadPartCopy) of a multipart upload, which appears only when complete.
        """
        source_key, target = self._key(source), self._key(destination)
        size = content_length(await self.client.call("HEAD", source_key))
        copy_source = {"x-amz-copy-source": quote(f"{self.client.bucket}/{source_key}",
                                                  safe="/~")}
        if size > self.copy_limit:
            await self._copy_in_parts(copy_source, target, size)
        else:
            response = await self.client.call("PUT", target,
                                              headers={**self.put_headers, **copy_source})
            # Like a completed upload, a copy may fail after its 200.
            if xml_elements(response.body, "Error"):
                raise StorageUnavailable(f"S3 could not copy {source_key} to {target}")
        await self.client.call("DELETE", source_key, expect=(204, 200, 404))

    async def _copy_in_parts(self, copy_source: Mapping[str, str], target: str,
                             size: int) -> None:
        upload_id = await self.start_multipart(target)
        # S3 takes 10,000 parts at most.
        part_size = max(self.copy_part_size, -(-size // 10000))
        parts: list[tuple[int, str]] = []
        try:
            for number, first in enumerate(range(0, size, part_size), 1):
                last = min(first + part_size, size) - 1
                response = await self.client.call(
                    "PUT", target, query={"partNumber": str(number), "uploadId": upload_id},
                    headers={**copy_source, "x-amz-copy-source-range": f"bytes={first}-{last}"})
                etag = [xml_text(element, "ETag") for element in
                        xml_elements(response.body, "CopyPartResult")]
                if not etag or not etag[0]:
                    raise StorageUnavailable(f"S3 copied part {number} of {target} without an"
                                             " ETag")
                parts.append((number, etag[0]))
            await self.complete_multipart(target, upload_id, parts)
        except BaseException:
            await self.abort_multipart(target, upload_id)
            raise

    @_deferred
    async def stream(self, key: str, consumer: IConsumer, offset: int, length: int) -> None:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        response = await self.client.open("GET", self._key(key), headers=headers)
        if response.code == 404:
            response.deliverBody(Discard())
            raise KeyNotFound(key)
        if not (response.code == 206 or (response.code == 200 and offset == 0)):
            response.deliverBody(Discard())
            raise StorageUnavailable(f"S3 answered {response.code} to a ranged GET of {key}")
        pipe = BodyPipe(consumer, length, self._clock, self.client.settings.timeout)
        response.deliverBody(pipe)
        await pipe.done

    @_deferred
    async def open_file(self, key: str) -> BinaryIO:
        """The object in a temporary file (parsed in a thread, in bounded memory)."""
        size = await self.size(key)
        spool = tempfile.TemporaryFile()
        try:
            if size:
                await self.stream(key, _FileConsumer(spool), 0, size)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool  # type: ignore[return-value]

    def redirect_url(self, key: str) -> str:
        return self.client.presign(self._key(key), self.client.settings.redirect_expires)

    @_deferred
    async def purge_stale_uploads(self) -> int:
        """Abort multipart uploads under the prefix older than C{s3_upload_max_age}."""
        oldest = self._clock.seconds() - self.client.settings.upload_max_age
        query = {"uploads": "", "prefix": self.client.prefix}
        aborted = 0
        while True:
            body = (await self.client.call("GET", query=query)).body
            for upload in xml_elements(body, "Upload"):
                key, upload_id = xml_text(upload, "Key"), xml_text(upload, "UploadId")
                started = _timestamp(xml_text(upload, "Initiated") or "")
                if key and upload_id and started is not None and started < oldest:
                    await self.client.call("DELETE", key, query={"uploadId": upload_id},
                                           expect=(204, 200, 404))
                    aborted += 1
            result = xml_elements(body, "ListMultipartUploadsResult")
            if not result or xml_text(result[0], "IsTruncated") != "true":
                return aborted
            query["key-marker"] = xml_text(result[0], "NextKeyMarker") or ""
            query["upload-id-marker"] = xml_text(result[0], "NextUploadIdMarker") or ""

    def check_present(self) -> None:
        """The bucket exists and the credentials open it (blocking: start-up only)."""
        status = self.client.call_blocking("GET", query={"list-type": "2", "max-keys": "1",
                                                          "prefix": self.client.prefix})
        self._refuse(status, "list")

    def check_writable(self) -> None:
        """The bucket takes a write and a delete under the prefix (blocking: start-up)."""
        self.check_present()
        probe = self._key(_PROBE_KEY)
        self._refuse(self.client.call_blocking("PUT", probe, body=b"ok"), "write to")
        self._refuse(self.client.call_blocking("DELETE", probe), "delete from")

    def _refuse(self, status: int, action: str) -> None:
        where = f"S3 bucket {self.client.bucket} at {self.client.endpoint}"
        if status < 300:
            return
        if status == 404:
            raise ConfigError(f"{where} does not exist")
        if status in (401, 403):
            raise ConfigError(f"{where} refused the credentials to {action} it ({status})")
        raise ConfigError(f"{where} answered {status} when asked to {action} it")


@implementer(IConsumer)
class _FileConsumer:
    """A consumer writing into a file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def registerProducer(self, producer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self._file.write(data)


def _timestamp(text: str) -> float | None:
    """Seconds since the epoch of an S3 time (C{2026-12-04T20:03:15.000Z})."""
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
