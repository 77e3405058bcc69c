"""
The S3 driver against a real S3 server (SeaweedFS on 127.0.0.1, tests/services.py), driven
from the test thread into the reactor's (the C{in_reactor} fixture).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time

import pytest
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistreg.config import ConfigError, S3Settings
from twistreg.storage.interface import (
    IMaintainable,
    IRedirectable,
    IStaleUploads,
    IStorage,
    IWriter,
    KeyNotFound,
    StorageUnavailable,
)
from twistreg.storage.s3 import S3Storage

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB


def s3_settings(server, prefix: str, **changes) -> S3Settings:
    values = dict(
        bucket=server.bucket, access_key=server.access_key, secret_key=server.secret_key,
        secure=False, host=server.host, port=server.port, path_style=True,
        prefix=prefix.lstrip("/"), part_size=PART, timeout=2.0,
    )
    values.update(changes)
    return S3Settings(**values)


@pytest.fixture
def storage(seaweedfs, s3_prefix, in_reactor):
    made = in_reactor(S3Storage, s3_settings(seaweedfs, s3_prefix), reactor)
    yield made
    in_reactor(made.client.close)


@pytest.fixture
def bucket(seaweedfs, s3_prefix):
    """What is in the bucket under the test's prefix, through boto3."""
    client = seaweedfs.boto3_client()
    prefix = s3_prefix.lstrip("/") + "/"

    class Bucket:
        def keys(self) -> list[str]:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=seaweedfs.bucket, Prefix=prefix)
            return sorted(item["Key"][len(prefix):] for page in pages
                          for item in page.get("Contents", []))

        def get(self, key: str) -> bytes:
            return client.get_object(Bucket=seaweedfs.bucket, Key=prefix + key)["Body"].read()

        def put(self, key: str, data: bytes) -> None:
            client.put_object(Bucket=seaweedfs.bucket, Key=prefix + key, Body=data)

        def uploads(self) -> list[str]:
            found = client.list_multipart_uploads(Bucket=seaweedfs.bucket, Prefix=prefix)
            return [upload["Key"][len(prefix):] for upload in found.get("Uploads", [])]

    return Bucket()


@implementer(IConsumer)
class Collector:
    """A consumer that keeps what it is sent; C{slow} pauses its producer after each write."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.producer = None

    def registerProducer(self, producer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def data(self) -> bytes:
        return b"".join(self.chunks)


def test_interfaces(storage, in_reactor) -> None:
    for interface in (IStorage, IMaintainable, IRedirectable, IStaleUploads):
        verifyObject(interface, storage)
    verifyObject(IWriter, in_reactor(storage.open_writer, "images/a/layer"))


def test_modified_is_the_objects_last_modified(storage, in_reactor) -> None:
    before = time.time()
    in_reactor(storage.put_content, "images/abc/json", b"{}")
    # Last-Modified has whole seconds.
    assert before - 1 <= in_reactor(storage.modified, "images/abc/json") <= time.time() + 1
    with pytest.raises(KeyNotFound):
        in_reactor(storage.modified, "images/abc/layer")


def test_keys_are_091s(storage, bucket, in_reactor) -> None:
    """The prefix, then the relative key: what 0.9.1's s3 driver wrote."""
    in_reactor(storage.put_content, "images/abc/json", b"{}")
    in_reactor(storage.put_content, "repositories/library/foo/tag_latest", b"abc")
    assert bucket.keys() == ["images/abc/json", "repositories/library/foo/tag_latest"]
    bucket.put("repositories/library/foo/tag_old", b"def")
    assert in_reactor(storage.get_content, "repositories/library/foo/tag_old") == b"def"


def test_small_keys(storage, in_reactor) -> None:
    key = "repositories/foo/bar/tag_x"
    in_reactor(storage.put_content, key, b"id")
    assert in_reactor(storage.get_content, key) == b"id"
    assert in_reactor(storage.exists, key) is True
    assert in_reactor(storage.size, key) == 2
    assert in_reactor(storage.list_directory, "repositories/foo/bar") == ["tag_x"]
    assert in_reactor(storage.list_directory, "repositories/foo") == ["bar"]
    in_reactor(storage.remove, key)
    assert in_reactor(storage.exists, key) is False


def test_missing_keys(storage, in_reactor) -> None:
    with pytest.raises(KeyNotFound):
        in_reactor(storage.get_content, "images/a/json")
    with pytest.raises(KeyNotFound):
        in_reactor(storage.size, "images/a/json")
    assert in_reactor(storage.exists, "images/a/json") is False
    assert in_reactor(storage.list_directory, "images/a") == []
    in_reactor(storage.remove, "images/a/json")


def test_a_directory_is_not_a_key(storage, in_reactor) -> None:
    in_reactor(storage.put_content, "images/a/json", b"{}")
    assert in_reactor(storage.exists, "images/a") is False
    with pytest.raises(KeyNotFound):
        in_reactor(storage.get_content, "images/a")


def test_remove_tree(storage, bucket, in_reactor) -> None:
    for name in ("tag_a", "tag_b", "json", "_index_images"):
        in_reactor(storage.put_content, f"repositories/foo/bar/{name}", b"x")
    in_reactor(storage.put_content, "repositories/foo/barn/tag_c", b"x")
    in_reactor(storage.remove_tree, "repositories/foo/bar")
    assert bucket.keys() == ["repositories/foo/barn/tag_c"]


def test_listings_page(seaweedfs, s3_prefix, bucket, in_reactor) -> None:
    """ListObjectsV2 pages are followed (a page of 2 here, 1000 on S3)."""
    for number in range(5):
        bucket.put(f"repositories/foo/r{number}/tag_latest", b"x")
    storage = S3Storage(s3_settings(seaweedfs, s3_prefix), reactor)
    names = in_reactor(storage._list, storage.client.object_key("repositories/foo/"),
                       delimiter=True)
    assert len(names) == 5
    assert in_reactor(storage.list_directory, "repositories/foo") == [
        f"r{number}" for number in range(5)]


def write_all(writer, chunks) -> defer.Deferred:
    """Feed C{chunks}, waiting whenever the writer asks; then commit."""

    async def run() -> None:
        for chunk in chunks:
            waiting = writer.write(chunk)
            if waiting is not None:
                await waiting
        await writer.commit()

    return defer.ensureDeferred(run())


def chunks_of(size: int, chunk: int = 64 * 1024) -> list[bytes]:
    data = os.urandom(chunk)
    return [data] * (size // chunk) + ([data[: size % chunk]] if size % chunk else [])


@pytest.mark.parametrize("size", [0, 100, PART - 1, PART, 3 * PART + 12345])
def test_layer_round_trip(storage, bucket, in_reactor, size) -> None:
    chunks = chunks_of(size)
    writer = in_reactor(storage.open_writer, "images/a/layer")
    in_reactor(write_all, writer, chunks)
    stored = bucket.get("images/a/layer")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(b"".join(chunks)).digest()
    assert bucket.uploads() == []
    assert in_reactor(storage.size, "images/a/layer") == size
    if size:
        whole = Collector()
        in_reactor(storage.stream, "images/a/layer", whole, 0, size)
        assert whole.data() == stored
        part = Collector()
        in_reactor(storage.stream, "images/a/layer", part, size // 3, size // 2)
        assert part.data() == stored[size // 3: size // 3 + size // 2]
        with in_reactor(storage.open_file, "images/a/layer") as file:
            assert file.read() == stored


def test_a_layer_is_invisible_until_committed(storage, bucket, in_reactor) -> None:
    writer = in_reactor(storage.open_writer, "images/a/layer")

    async def half() -> None:
        for chunk in chunks_of(2 * PART + 1):
            waiting = writer.write(chunk)
            if waiting is not None:
                await waiting

    in_reactor(half)
    assert bucket.keys() == []
    assert in_reactor(storage.exists, "images/a/layer") is False
    in_reactor(writer.abort)
    deadline = time.monotonic() + 10
    while bucket.uploads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bucket.uploads() == []
    assert bucket.keys() == []
    in_reactor(writer.abort)


def test_at_most_two_parts_are_held(storage, in_reactor) -> None:
    """Past two parts (one sending, one full) the writer asks the body to wait."""
    writer = in_reactor(storage.open_writer, "images/a/layer")
    chunk = b"x" * PART
    asked: list[bool] = []

    def feed() -> None:
        asked.append(writer.write(chunk) is not None)
        asked.append(writer.write(chunk) is not None)

    in_reactor(feed)
    assert asked == [False, True]
    in_reactor(writer.abort)


def test_move_copies_on_the_server(storage, bucket, seaweedfs, s3_prefix, in_reactor) -> None:
    """CopyObject publishes the source's bytes over the older value; the source is gone."""
    chunks = chunks_of(2 * PART + 100)
    in_reactor(write_all, in_reactor(storage.open_writer, "uploads/u/0"), chunks)
    in_reactor(storage.put_content, "blobs/ab/data", b"older")
    in_reactor(storage.move, "uploads/u/0", "blobs/ab/data")
    assert bucket.keys() == ["blobs/ab/data"]
    assert bucket.get("blobs/ab/data") == b"".join(chunks)
    assert bucket.uploads() == []


def test_move_copies_in_parts_above_the_copy_limit(storage, bucket, seaweedfs, s3_prefix,
                                                    in_reactor) -> None:
    """Past CopyObject's limit (lowered here) the copy goes in ranges of a multipart upload."""
    storage.copy_limit = storage.copy_part_size = PART
    data = b"".join(chunks_of(2 * PART + 12345))
    bucket.put("uploads/u/0", data)
    in_reactor(storage.move, "uploads/u/0", "blobs/ab/data")
    assert bucket.keys() == ["blobs/ab/data"]
    assert bucket.get("blobs/ab/data") == data
    assert bucket.uploads() == []
    head = seaweedfs.boto3_client().head_object(
        Bucket=seaweedfs.bucket, Key=f"{s3_prefix.lstrip('/')}/blobs/ab/data")
    # A multipart object's ETag ends with its number of parts.
    assert head["ETag"].strip('"').endswith("-3")


def test_move_of_a_missing_source(storage, bucket, in_reactor) -> None:
    in_reactor(storage.put_content, "blobs/ab/data", b"kept")
    with pytest.raises(KeyNotFound):
        in_reactor(storage.move, "uploads/u/0", "blobs/ab/data")
    assert bucket.keys() == ["blobs/ab/data"]
    assert bucket.get("blobs/ab/data") == b"kept"


def test_stale_uploads_are_purged_fresh_ones_kept(seaweedfs, s3_prefix, bucket,
                                                  in_reactor) -> None:
    client = seaweedfs.boto3_client()
    key = s3_prefix.lstrip("/") + "/images/dead/layer"
    client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=key)
    fresh = S3Storage(s3_settings(seaweedfs, s3_prefix), reactor)
    assert in_reactor(fresh.purge_stale_uploads) == 0
    assert bucket.uploads() == ["images/dead/layer"]
    old = S3Storage(s3_settings(seaweedfs, s3_prefix, upload_max_age=0), reactor)
    time.sleep(1)
    assert in_reactor(old.purge_stale_uploads) == 1
    assert bucket.uploads() == []


def test_redirect_url_is_presigned(storage, bucket, in_reactor) -> None:
    import urllib.request

    in_reactor(storage.put_content, "images/a/layer", b"layer bytes")
    url = storage.redirect_url("images/a/layer")
    assert "X-Amz-Expires=1200" in url
    with urllib.request.urlopen(url) as answer:
        assert answer.read() == b"layer bytes"


def test_start_up_checks(seaweedfs, s3_prefix) -> None:
    S3Storage(s3_settings(seaweedfs, s3_prefix), reactor).check_writable()
    wrong = S3Storage(s3_settings(seaweedfs, s3_prefix, secret_key="wrong"), reactor)
    with pytest.raises(ConfigError, match=r"^S3 bucket twistreg at http://127.0.0.1:\d+ "
                                          r"refused the credentials to list it \(403\)$"):
        wrong.check_writable()
    missing = S3Storage(s3_settings(seaweedfs, s3_prefix, bucket="no-such-bucket"), reactor)
    with pytest.raises(ConfigError, match=r"^S3 bucket no-such-bucket at .* does not exist$"):
        missing.check_writable()


def refusing_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_unavailable_within_5_seconds(seaweedfs, in_reactor) -> None:
    storage = S3Storage(s3_settings(seaweedfs, "/x", port=refusing_port()), reactor)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        in_reactor(storage.get_content, "images/a/json")
    assert time.monotonic() - started < 5


class Silent(protocol.Protocol):
    """Accepts and reads, never answers."""


def test_a_silent_store_is_unavailable_after_the_timeout(seaweedfs, in_reactor) -> None:
    factory = protocol.Factory.forProtocol(Silent)
    port = in_reactor(reactor.listenTCP, 0, factory, interface="127.0.0.1")
    try:
        storage = S3Storage(
            s3_settings(seaweedfs, "/x", port=port.getHost().port, timeout=0.5), reactor)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as caught:
            in_reactor(storage.get_content, "images/a/json")
        assert caught.value.timed_out
        assert time.monotonic() - started < 3
    finally:
        in_reactor(port.stopListening)
