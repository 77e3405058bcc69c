"""
L{twistreg.oci.repositories}: the V2 repositories' rules over a real storage, with manifests
built as clients push them. Local storage answers at once, so every call is checked
synchronously; the main flow runs on S3 too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from twisted.internet import defer, reactor
from twisted.python.failure import Failure

from tests.test_storage_s3 import s3_settings
from twistreg.layout import (
    blob_data_key,
    layer_link_key,
    referrer_key,
    revision_link_key,
    v2_tag_current_key,
    v2_tag_index_key,
    v2_tags_key,
)
from twistreg.oci.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
)
from twistreg.oci.manifests import (
    DOCKER_MANIFEST,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_stored_manifest,
)
from twistreg.oci.names import Digest, parse_digest
from twistreg.oci.repositories import Repositories
from twistreg.storage.local import LocalStorage
from twistreg.storage.s3 import S3Storage

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


def digest_of(data: bytes) -> Digest:
    return Digest.of(data)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(digest_of(data)), "size": len(data), **extra}


def encode(document: dict[str, Any]) -> bytes:
    # Indented: a registry keeps the bytes as pushed, never a re-encoding of them.
    return json.dumps(document, indent=3).encode()


def call_now(function: Callable[..., Any], *args: Any) -> Any:
    """Run a coroutine or Deferred that must complete at once; its result, or its exception."""
    results: list[Any] = []
    defer.ensureDeferred(function(*args)).addBoth(results.append)
    assert results, "did not complete at once"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Registry:
    """
    L{Repositories} over a storage, each call run to its end by C{call}; helpers to store
    blobs and build the manifests clients push.
    """

    def __init__(self, storage: Any, call: Callable[..., Any]) -> None:
        self.storage = storage
        self.repositories = Repositories(storage)
        self.call = call

    def __getattr__(self, method: str) -> Callable[..., Any]:
        function = getattr(self.repositories, method)
        return lambda *args: self.call(function, *args)

    def read(self, key: str) -> bytes:
        return self.call(self.storage.get_content, key)

    def write(self, key: str, data: bytes) -> None:
        self.call(self.storage.put_content, key, data)

    def has(self, key: str) -> bool:
        return self.call(self.storage.exists, key)

    def blob(self, name: str, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """Store and link a blob, as a completed upload does; its descriptor."""
        self.write(blob_data_key(digest_of(data)), data)
        self.link_blob(name, digest_of(data))
        return descriptor(media_type, data, **extra)

    def image(self, name: str, seed: str, media_type: str = OCI_MANIFEST) -> bytes:
        """An image manifest whose config and two layers are blobs of C{name}."""
        config_type, layer_type = (
            (OCI_CONFIG, OCI_LAYER) if media_type == OCI_MANIFEST else (DOCKER_CONFIG, DOCKER_LAYER)
        )
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        return encode({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": self.blob(name, config_type, config),
            "layers": [
                self.blob(name, layer_type, f"{seed} base layer".encode()),
                self.blob(name, layer_type, f"{seed} top layer".encode()),
            ],
        })

    def artifact(self, name: str, subject: bytes, artifact_type: str, content: bytes) -> bytes:
        """An artifact manifest (an SBOM, a signature) whose subject is the manifest C{subject}."""
        return encode({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": self.blob(name, OCI_EMPTY, b"{}"),
            "layers": [self.blob(name, artifact_type, content)],
            "subject": descriptor(OCI_MANIFEST, subject),
            "annotations": {"org.opencontainers.image.created": "2024-01-02T03:04:05Z"},
        })


def index_of(*children: tuple[bytes, str]) -> bytes:
    """An OCI index of image manifests, each with its architecture."""
    return encode({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, child, platform={"architecture": arch, "os": "linux"})
            for child, arch in children
        ],
    })


@pytest.fixture
def local(tmp_path: Path) -> Registry:
    return Registry(LocalStorage(str(tmp_path)), call_now)


@pytest.fixture
def s3(seaweedfs, s3_prefix, in_reactor):
    storage = in_reactor(S3Storage, s3_settings(seaweedfs, s3_prefix), reactor)
    yield Registry(storage, in_reactor)
    in_reactor(storage.client.close)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def registry(request) -> Registry:
    return request.getfixturevalue(request.param)


def test_main_flow(registry: Registry) -> None:
    """Push an image, a Docker image, an index over both and an SBOM; read, list, delete."""
    name = "team/app"
    amd64 = registry.image(name, "amd64")
    arm64 = registry.image(name, "arm64", DOCKER_MANIFEST)
    pushed = registry.put_manifest(name, "v1", amd64, None)
    assert (pushed.media_type, pushed.digest) == (OCI_MANIFEST, digest_of(amd64))
    registry.put_manifest(name, digest_of(arm64), arm64, DOCKER_MANIFEST)
    index = index_of((amd64, "amd64"), (arm64, "arm64"))
    registry.put_manifest(name, "multi", index, OCI_INDEX)
    sbom = registry.artifact(name, amd64, SBOM, b'{"spdxVersion": "SPDX-2.3"}')
    registry.put_manifest(name, digest_of(sbom), sbom, OCI_MANIFEST)
    registry.image("team/app/cache", "cache")  # blobs only: a repository all the same

    body, manifest = registry.get_manifest(name, "v1")
    assert (body, manifest.digest) == (amd64, digest_of(amd64))
    body, manifest = registry.get_manifest(name, digest_of(arm64))
    assert (body, manifest.media_type) == (arm64, DOCKER_MANIFEST)
    body, manifest = registry.get_manifest(name, "multi")
    assert body == index
    assert [child.digest for child in manifest.manifests] == [digest_of(amd64), digest_of(arm64)]
    assert registry.tags(name) == ["multi", "v1"]
    assert registry.catalog() == ["team/app", "team/app/cache"]
    expected = {
        "mediaType": OCI_MANIFEST,
        "digest": str(digest_of(sbom)),
        "size": len(sbom),
        "artifactType": SBOM,
        "annotations": {"org.opencontainers.image.created": "2024-01-02T03:04:05Z"},
    }
    assert registry.referrers(name, digest_of(amd64), None) == [expected]
    assert registry.referrers(name, digest_of(amd64), SBOM) == [expected]
    assert registry.referrers(name, digest_of(amd64), SIGNATURE) == []

    registry.delete_tag(name, "multi")
    assert registry.tags(name) == ["v1"]
    assert registry.get_manifest(name, digest_of(index))[0] == index
    registry.delete_manifest(name, digest_of(amd64))
    assert registry.tags(name) == []
    with pytest.raises(ManifestUnknown):
        registry.get_manifest(name, digest_of(amd64))
    with pytest.raises(ManifestUnknown):
        registry.get_manifest(name, "v1")
    registry.delete_manifest(name, digest_of(sbom))
    assert registry.referrers(name, digest_of(amd64), None) == []
    with pytest.raises(NameUnknown):
        registry.get_manifest("team/none", "v1")


def test_the_tree_is_the_go_registrys(local: Registry, tmp_path: Path) -> None:
    """
    After a push by tag, the files and their contents are those distribution 2.8 writes
    (paths spelled out here, not built by the layout, so that a wrong builder shows).
    """
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = b"layer bytes"
    config_hex, layer_hex = hashlib.sha256(config).hexdigest(), hashlib.sha256(layer).hexdigest()
    body = encode({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": local.blob("library/busybox", DOCKER_CONFIG, config),
        "layers": [local.blob("library/busybox", DOCKER_LAYER, layer)],
    })
    hex_ = hashlib.sha256(body).hexdigest()
    local.put_manifest("library/busybox", "latest", body, DOCKER_MANIFEST)

    files = {
        os.path.relpath(os.path.join(directory, file), tmp_path): Path(directory, file).read_bytes()
        for directory, _, names in os.walk(tmp_path)
        for file in names
    }
    repo = "docker/registry/v2/repositories/library/busybox"
    assert files == {
        f"docker/registry/v2/blobs/sha256/{config_hex[:2]}/{config_hex}/data": config,
        f"docker/registry/v2/blobs/sha256/{layer_hex[:2]}/{layer_hex}/data": layer,
        f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data": body,
        f"{repo}/_layers/sha256/{config_hex}/link": f"sha256:{config_hex}".encode(),
        f"{repo}/_layers/sha256/{layer_hex}/link": f"sha256:{layer_hex}".encode(),
        f"{repo}/_manifests/revisions/sha256/{hex_}/link": f"sha256:{hex_}".encode(),
        f"{repo}/_manifests/tags/latest/current/link": f"sha256:{hex_}".encode(),
        f"{repo}/_manifests/tags/latest/index/sha256/{hex_}/link": f"sha256:{hex_}".encode(),
    }


class RecordingStorage:
    """A storage that records the keys written, in order, and can hold reads back."""

    def __init__(self, storage: LocalStorage) -> None:
        self._storage = storage
        self.written: list[str] = []
        self.held: list[tuple[defer.Deferred[bytes], str]] | None = None
        self.most_held = 0

    def __getattr__(self, method: str) -> Any:
        return getattr(self._storage, method)

    def put_content(self, key: str, data: bytes) -> defer.Deferred[None]:
        self.written.append(key)
        return self._storage.put_content(key, data)

    def get_content(self, key: str) -> defer.Deferred[bytes]:
        if self.held is None:
            return self._storage.get_content(key)
        later: defer.Deferred[bytes] = defer.Deferred()
        self.held.append((later, key))
        self.most_held = max(self.most_held, len(self.held))
        return later

    def release(self) -> None:
        """Answer the reads held back, and those they lead to, in order."""
        assert self.held is not None
        while self.held:
            later, key = self.held.pop(0)
            self._storage.get_content(key).chainDeferred(later)


def test_a_tag_is_written_last(tmp_path: Path) -> None:
    """Nothing names a manifest before its bytes and revision link are stored."""
    storage = RecordingStorage(LocalStorage(str(tmp_path)))
    registry = Registry(storage, call_now)
    image = registry.image("app", "amd64")
    sbom = registry.artifact("app", image, SBOM, b"sbom")
    storage.written.clear()
    registry.put_manifest("app", "sbom", sbom, None)
    sbom_digest = digest_of(sbom)
    assert storage.written == [
        blob_data_key(sbom_digest),
        revision_link_key("app", sbom_digest),
        referrer_key("app", digest_of(image), sbom_digest),
        v2_tag_index_key("app", "sbom", sbom_digest),
        v2_tag_current_key("app", "sbom"),
    ]
    storage.written.clear()
    registry.put_manifest("app", "again", sbom, None)
    assert blob_data_key(sbom_digest) not in storage.written  # stored once


def test_blob_checks_are_bounded(tmp_path: Path) -> None:
    """A manifest's blobs are checked together (on S3 each is a round trip), 16 at a time."""
    storage = RecordingStorage(LocalStorage(str(tmp_path)))
    registry = Registry(storage, call_now)
    body = encode({
        "schemaVersion": 2,
        "config": registry.blob("app", OCI_CONFIG, b"{}"),
        "layers": [registry.blob("app", OCI_LAYER, b"layer %d" % n) for n in range(40)],
    })
    storage.held = []
    pushed = defer.ensureDeferred(
        registry.repositories.put_manifest("app", "v1", body, OCI_MANIFEST))
    assert storage.most_held == 16
    storage.release()
    assert storage.most_held == 16
    assert call_now(lambda: pushed).digest == digest_of(body)


def digest_text(seed: str) -> str:
    return str(digest_of(seed.encode()))


# Blobs.


def test_a_blob_is_a_repositorys_through_its_link(local: Registry) -> None:
    data = b"layer"
    digest = digest_of(data)
    assert local.blob_size("app", digest) is None
    local.write(blob_data_key(digest), data)
    assert local.blob_size("app", digest) is None  # stored, but not the repository's
    local.link_blob("app", digest)
    assert local.blob_size("app", digest) == len(data)
    assert local.blob_size("other", digest) is None
    local.unlink_blob("app", digest)
    assert local.blob_size("app", digest) is None
    assert local.read(blob_data_key(digest)) == data  # garbage collection's to remove
    with pytest.raises(BlobUnknown) as raised:
        local.unlink_blob("app", digest)
    assert raised.value.message == f"blob {digest} unknown to repository 'app'"


def test_a_link_to_bytes_gone_is_no_blob(local: Registry) -> None:
    digest = digest_of(b"collected")
    local.link_blob("app", digest)
    assert local.blob_size("app", digest) is None


@pytest.mark.parametrize("junk", [
    b"", b"sha256:zz", b"\xff\xfe", b"md5:d41d8cd98f00b204e9800998ecf8427e",
    b"SHA256:" + b"ab" * 32,
])
def test_a_junk_link_is_absent(local: Registry, junk: bytes) -> None:
    """A half-written or foreign link names nothing: blob, manifest and tag alike."""
    image = local.image("app", "x")
    local.put_manifest("app", "v1", image, None)
    config = parse_stored_manifest(image).config
    assert config is not None
    local.write(layer_link_key("app", config.digest), junk)
    local.write(revision_link_key("app", digest_of(image)), junk)
    assert local.blob_size("app", config.digest) is None
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", digest_of(image))
    local.write(revision_link_key("app", digest_of(image)), f"{digest_of(image)}".encode())
    local.write(v2_tag_current_key("app", "v1"), junk)
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", "v1")
    assert local.tags("app") == []


def test_a_link_to_another_digest_is_absent(local: Registry) -> None:
    """The Go registry never writes one; following it would serve bytes of another digest."""
    local.write(blob_data_key(digest_of(b"a")), b"a")
    local.write(layer_link_key("app", digest_of(b"b")), str(digest_of(b"a")).encode())
    assert local.blob_size("app", digest_of(b"b")) is None
    local.write(layer_link_key("app", digest_of(b"a")), str(digest_of(b"a")).encode() + b"\n")
    assert local.blob_size("app", digest_of(b"a")) is None  # as strict as the Go registry


def test_mount(local: Registry) -> None:
    data = b"shared layer"
    local.blob("base/image", OCI_LAYER, data)
    assert local.mount_blob("app", digest_of(data), "base/image") == len(data)
    assert local.blob_size("app", digest_of(data)) == len(data)
    assert local.read(layer_link_key("app", digest_of(data))) == str(digest_of(data)).encode()


@pytest.mark.parametrize("source", ["base/none", "app"])
def test_a_mount_from_where_the_blob_is_not_is_none(local: Registry, source: str) -> None:
    """The caller opens an upload instead; nothing is linked."""
    data = b"shared layer"
    local.write(blob_data_key(digest_of(data)), data)
    assert local.mount_blob("app", digest_of(data), source) is None
    assert local.blob_size("app", digest_of(data)) is None


@pytest.mark.parametrize("source", ["../base", "base/Image", "base/"])
def test_a_mount_from_no_name_is_none(local: Registry, source: str) -> None:
    """Whatever a link at the key such a name would make holds, it is not looked at."""
    data = b"shared layer"
    local.write(blob_data_key(digest_of(data)), data)
    local.write(layer_link_key(source, digest_of(data)), str(digest_of(data)).encode())
    assert local.mount_blob("app", digest_of(data), source) is None
    assert local.blob_size("app", digest_of(data)) is None


def test_a_mount_of_a_blob_whose_bytes_are_gone_is_none(local: Registry) -> None:
    local.link_blob("base", digest_of(b"collected"))
    assert local.mount_blob("app", digest_of(b"collected"), "base") is None
    assert not local.has(layer_link_key("app", digest_of(b"collected")))


# Manifests.


def test_a_docker_image_by_tag(local: Registry) -> None:
    body = local.image("library/busybox", "x", DOCKER_MANIFEST)
    pushed = local.put_manifest("library/busybox", "latest", body, DOCKER_MANIFEST)
    assert (pushed.media_type, pushed.digest, pushed.size) == (
        DOCKER_MANIFEST, digest_of(body), len(body))
    by_tag = local.get_manifest("library/busybox", "latest")
    by_digest = local.get_manifest("library/busybox", digest_of(body))
    assert by_tag == by_digest == (body, pushed)


def test_by_digest_no_tag(local: Registry) -> None:
    body = local.image("app", "x")
    local.put_manifest("app", digest_of(body), body, OCI_MANIFEST)
    assert local.get_manifest("app", digest_of(body))[0] == body
    assert local.tags("app") == []


def test_a_digest_not_the_bodys(local: Registry) -> None:
    body = local.image("app", "x")
    other = digest_of(b"other")
    with pytest.raises(DigestInvalid) as raised:
        local.put_manifest("app", other, body, OCI_MANIFEST)
    assert raised.value.message == f"manifest pushed as {other} has the digest {digest_of(body)}"
    assert not local.has(revision_link_key("app", digest_of(body)))
    assert not local.has(blob_data_key(digest_of(body)))


def test_an_invalid_manifest(local: Registry) -> None:
    with pytest.raises(ManifestInvalid):
        local.put_manifest("app", "v1", b'{"schemaVersion": 2}', None)
    assert local.catalog() == []


def test_blobs_the_repository_lacks(local: Registry) -> None:
    """
    Blobs missing, or stored but linked only in another repository: refused, each listed,
    nothing written.
    """
    config = local.blob("app", OCI_CONFIG, b"{}")
    elsewhere = local.blob("other", OCI_LAYER, b"other's layer")
    body = encode({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [
            descriptor(OCI_LAYER, b"never pushed"),
            elsewhere,
            descriptor(OCI_LAYER, b"never pushed"),
            descriptor(OCI_LAYER, b"foreign", urls=["https://example.com/layer"]),
        ],
    })
    with pytest.raises(ManifestBlobUnknown) as raised:
        local.put_manifest("app", "v1", body, None)
    missing = [digest_text("never pushed"), elsewhere["digest"]]
    assert raised.value.detail == {"digests": missing}
    assert raised.value.message == (
        f"repository 'app' has no blob or manifest {missing[0]} and 1 more")
    assert not local.has(blob_data_key(digest_of(body)))
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", "v1")
    local.blob("app", OCI_LAYER, b"never pushed")
    local.mount_blob("app", parse_digest(elsewhere["digest"]), "other")
    local.put_manifest("app", "v1", body, None)  # the foreign layer is fetched elsewhere
    assert local.get_manifest("app", "v1")[0] == body


def test_an_index_needs_its_children_in_the_repository(local: Registry) -> None:
    amd64, arm64 = local.image("app", "amd64"), local.image("app", "arm64")
    index = index_of((amd64, "amd64"), (arm64, "arm64"))
    local.put_manifest("app", digest_of(amd64), amd64, None)
    assert local.image("other", "arm64") == arm64
    local.put_manifest("other", digest_of(arm64), arm64, None)  # another repository's
    with pytest.raises(ManifestBlobUnknown) as raised:
        local.put_manifest("app", "latest", index, OCI_INDEX)
    assert raised.value.detail == {"digests": [str(digest_of(arm64))]}
    local.put_manifest("app", digest_of(arm64), arm64, None)
    pushed = local.put_manifest("app", "latest", index, OCI_INDEX)
    assert pushed.media_type == OCI_INDEX
    body, manifest = local.get_manifest("app", "latest")
    assert body == index
    assert [child.platform for child in manifest.manifests] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux"}]


def test_unknown_repository_tag_and_digest(local: Registry) -> None:
    with pytest.raises(NameUnknown) as unknown_name:
        local.get_manifest("app", "v1")
    assert unknown_name.value.message == "repository 'app' unknown"
    local.blob("app", OCI_LAYER, b"a layer")  # a repository from its first blob on
    with pytest.raises(ManifestUnknown) as unknown_tag:
        local.get_manifest("app", "v1")
    assert unknown_tag.value.message == "repository 'app' has no tag 'v1'"
    digest = digest_of(b"none")
    with pytest.raises(ManifestUnknown) as unknown_digest:
        local.get_manifest("app", digest)
    assert unknown_digest.value.message == f"repository 'app' has no manifest {digest}"


@pytest.mark.parametrize("tag", ["..", "a/b", "-x", "x" * 129, "sha256:" + "ab" * 32])
def test_a_tag_outside_the_grammar_makes_no_key(local: Registry, tag: str) -> None:
    body = local.image("app", "x")
    with pytest.raises(ManifestUnknown):
        local.put_manifest("app", tag, body, None)
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", tag)
    with pytest.raises(ManifestUnknown):
        local.delete_tag("app", tag)
    assert not local.has(blob_data_key(digest_of(body)))


@pytest.mark.parametrize("name", ["../x", "App", "a//b", "_layers", ""])
def test_a_name_outside_the_grammar_makes_no_key(local: Registry, name: str) -> None:
    digest = digest_of(b"x")
    for method, args in [
        ("blob_size", (digest,)), ("link_blob", (digest,)), ("unlink_blob", (digest,)),
        ("mount_blob", (digest, "app")), ("put_manifest", ("v1", b"{}", None)),
        ("get_manifest", ("v1",)), ("delete_manifest", (digest,)), ("delete_tag", ("v1",)),
        ("tags", ()), ("referrers", (digest, None)), ("exists", ()),
    ]:
        with pytest.raises(NameInvalid):
            getattr(local, method)(name, *args)
    assert local.call(local.storage.list_directory, "docker/registry/v2") == []


def test_a_tag_moves(local: Registry) -> None:
    """The current link follows the last push; the tag's index keeps every manifest it named."""
    first, second = local.image("app", "1"), local.image("app", "2")
    local.put_manifest("app", "latest", first, None)
    local.put_manifest("app", "latest", second, None)
    assert local.get_manifest("app", "latest")[0] == second
    assert local.get_manifest("app", digest_of(first))[0] == first
    for body in (first, second):
        assert local.read(v2_tag_index_key("app", "latest", digest_of(body))) == (
            str(digest_of(body)).encode())


def test_delete_manifest(local: Registry) -> None:
    """Its revision link and the tags naming it go; other tags, and the bytes, stay."""
    one, two = local.image("app", "1"), local.image("app", "2")
    for tag, body in [("a", one), ("b", one), ("c", two)]:
        local.put_manifest("app", tag, body, None)
    local.put_manifest("app", "d", one, None)
    local.put_manifest("app", "d", two, None)  # named one once: not a tag of it now
    local.delete_manifest("app", digest_of(one))
    assert local.tags("app") == ["c", "d"]
    assert not local.has(revision_link_key("app", digest_of(one)))
    assert local.call(local.storage.list_directory, v2_tags_key("app")) == ["c", "d"]
    assert local.read(blob_data_key(digest_of(one))) == one
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", digest_of(one))
    with pytest.raises(ManifestUnknown) as again:
        local.delete_manifest("app", digest_of(one))
    assert again.value.message == f"repository 'app' has no manifest {digest_of(one)}"
    assert local.get_manifest("app", "d")[0] == two


def test_delete_tag(local: Registry) -> None:
    body = local.image("app", "x")
    local.put_manifest("app", "v1", body, None)
    local.put_manifest("app", "v2", body, None)
    local.delete_tag("app", "v1")
    assert local.tags("app") == ["v2"]
    assert local.call(local.storage.list_directory, v2_tags_key("app")) == ["v2"]
    assert local.get_manifest("app", digest_of(body))[0] == body
    with pytest.raises(ManifestUnknown) as raised:
        local.delete_tag("app", "v1")
    assert raised.value.message == "repository 'app' has no tag 'v1'"


def test_tags(local: Registry) -> None:
    """Plain string order; directories that are no tag's, or whose link is junk, are no tags."""
    body = local.image("app", "x")
    for tag in ["v10", "v2", "V3", "_x", "latest", "1.0"]:
        local.put_manifest("app", tag, body, None)
    local.write(f"{v2_tags_key('app')}/.tmp-1-ab-x/current/link", str(digest_of(body)).encode())
    local.write(v2_tag_index_key("app", "half", digest_of(body)), str(digest_of(body)).encode())
    assert local.tags("app") == ["1.0", "V3", "_x", "latest", "v10", "v2"]


def test_tags_of_a_repository_without_manifests(local: Registry) -> None:
    with pytest.raises(NameUnknown):
        local.tags("app")
    local.blob("app", OCI_LAYER, b"layer")
    with pytest.raises(NameUnknown):
        local.tags("app")  # the Go registry's answer too: it has no manifests directory
    body = local.image("app", "x")
    local.put_manifest("app", digest_of(body), body, None)
    assert local.tags("app") == []


def test_catalog(local: Registry) -> None:
    """
    Nested names, repositories below repositories, directories that are only parts of names;
    the Go registry's C{_} entries and junk that no name could address are not entered.
    """
    body = local.image("a", "x")
    local.put_manifest("a", "v1", body, None)
    local.image("a/b", "x")
    local.image("c/d/e", "x")
    local.image("c/d/e/f", "x")
    local.image("x1.y_z/w-v", "x")
    root = "docker/registry/v2/repositories"
    local.write(f"{root}/a/_uploads/u/_manifests/link", b"")
    local.write(f"{root}/Upper/_manifests/x", b"")
    local.write(f"{root}/c/.tmp-1/_layers/x", b"")
    local.write(f"{root}/c/file", b"")
    local.write(f"{root}/g/_junk/h/_layers/x", b"")
    local.write(f"{root}/{'n/' * 130}_layers/x", b"")  # a name over 255 characters
    assert local.catalog() == ["a", "a/b", "c/d/e", "c/d/e/f", "x1.y_z/w-v"]
    assert local.exists("a/b") and local.exists("c/d/e")
    assert not local.exists("c") and not local.exists("c/d") and not local.exists("g")


def test_an_empty_catalog(local: Registry) -> None:
    assert local.catalog() == []
    assert not local.exists("a")


# Referrers.


def test_referrers(local: Registry) -> None:
    image = local.image("app", "x")
    local.put_manifest("app", "v1", image, None)
    sbom = local.artifact("app", image, SBOM, b"sbom")
    signature = local.artifact("app", image, SIGNATURE, b"signature")
    pushed = local.put_manifest("app", digest_of(sbom), sbom, None)
    assert pushed.subject is not None and pushed.subject.digest == digest_of(image)
    local.put_manifest("app", "sig", signature, None)
    subject = digest_of(image)
    listed = local.referrers("app", subject, None)
    assert [entry["digest"] for entry in listed] == sorted(
        [str(digest_of(sbom)), str(digest_of(signature))])
    assert [entry["artifactType"] for entry in local.referrers("app", subject, SIGNATURE)] == [
        SIGNATURE]
    assert local.referrers("app", subject, "application/other") == []
    assert local.referrers("other", subject, None) == []
    assert local.referrers("app", digest_of(b"no such subject"), None) == []
    local.delete_manifest("app", digest_of(sbom))
    assert not local.has(referrer_key("app", subject, digest_of(sbom)))
    assert [entry["digest"] for entry in local.referrers("app", subject, None)] == [
        str(digest_of(signature))]


def test_referrers_skip_junk_and_manifests_gone(local: Registry) -> None:
    """
    Entries that do not parse, that name another manifest, writes in flight, and entries of
    manifests the Go registry deleted without knowing this index: none is listed.
    """
    image = local.image("app", "x")
    subject = digest_of(image)
    sbom = local.artifact("app", image, SBOM, b"sbom")
    local.put_manifest("app", digest_of(sbom), sbom, None)
    good = local.referrers("app", subject, None)
    assert len(good) == 1
    directory = referrer_key("app", subject, digest_of(sbom)).rpartition("/")[0]
    other = digest_of(b"other")
    local.write(referrer_key("app", subject, other), b"{not json")
    third = digest_of(b"third")
    local.write(revision_link_key("app", third), str(third).encode())
    local.write(referrer_key("app", subject, third), json.dumps(good[0]).encode())
    fourth = digest_of(b"fourth")
    local.write(revision_link_key("app", fourth), str(fourth).encode())
    local.write(referrer_key("app", subject, fourth),
                json.dumps({"digest": str(fourth), "mediaType": OCI_MANIFEST}).encode())
    local.write(f"{directory}/.tmp-1-ab-sha256-{other.hex}", json.dumps(good[0]).encode())
    local.write(f"{directory}/sha256-zz", json.dumps(good[0]).encode())
    assert local.referrers("app", subject, None) == good
    local.call(local.storage.remove, revision_link_key("app", digest_of(sbom)))
    assert local.referrers("app", subject, None) == []


# Manifests stored by others.


OCI_IMAGE_WITHOUT_TYPE = {
    "schemaVersion": 2,
    "config": descriptor(OCI_CONFIG, b"config"),
    "layers": [descriptor(OCI_LAYER, b"layer")],
}
OCI_INDEX_WITHOUT_TYPE = {
    "schemaVersion": 2,
    "manifests": [descriptor(OCI_MANIFEST, b"child")],
}


def test_parse_stored_manifest() -> None:
    """Without C{mediaType} its fields tell the type; with one, that field does."""
    image = parse_stored_manifest(encode(OCI_IMAGE_WITHOUT_TYPE))
    assert (image.media_type, image.layers[0].digest) == (OCI_MANIFEST, digest_of(b"layer"))
    index = parse_stored_manifest(encode(OCI_INDEX_WITHOUT_TYPE))
    assert (index.media_type, index.manifests[0].digest) == (OCI_INDEX, digest_of(b"child"))
    docker = parse_stored_manifest(encode(dict(OCI_IMAGE_WITHOUT_TYPE, mediaType=DOCKER_MANIFEST)))
    assert docker.media_type == DOCKER_MANIFEST
    with pytest.raises(ManifestInvalid):
        parse_stored_manifest(encode({"schemaVersion": 2, "layers": []}))
    with pytest.raises(ManifestInvalid) as schema1:
        parse_stored_manifest(encode({"schemaVersion": 1, "fsLayers": []}))
    assert "schema1" in schema1.value.message
    with pytest.raises(ManifestInvalid):  # the fields still have to agree with the type
        parse_stored_manifest(encode(dict(OCI_IMAGE_WITHOUT_TYPE, manifests=[])))


def stored_by_the_go_registry(local: Registry, name: str, tag: str, body: bytes) -> None:
    """What the Go registry writes for a push, written without twistreg."""
    digest = digest_of(body)
    local.write(blob_data_key(digest), body)
    for key in (revision_link_key(name, digest), v2_tag_index_key(name, tag, digest),
                v2_tag_current_key(name, tag)):
        local.write(key, str(digest).encode())


@pytest.mark.parametrize("document", [OCI_IMAGE_WITHOUT_TYPE, OCI_INDEX_WITHOUT_TYPE])
def test_a_stored_manifest_without_media_type_is_served(
    local: Registry, document: dict[str, Any]
) -> None:
    body = encode(document)
    stored_by_the_go_registry(local, "app", "v1", body)
    served, manifest = local.get_manifest("app", "v1")
    assert served == body
    assert manifest.media_type == (OCI_MANIFEST if "config" in document else OCI_INDEX)


def test_a_stored_manifest_that_cannot_be_served(local: Registry, events) -> None:
    """A schema1 manifest (old clients pushed them to the Go registry): unknown, and logged."""
    body = encode({"schemaVersion": 1, "name": "app", "tag": "v1", "fsLayers": []})
    stored_by_the_go_registry(local, "app", "v1", body)
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", "v1")
    [event] = [event for event in events if event.get("log_namespace") == Repositories.__module__]
    assert event["digest"] == str(digest_of(body)) and event["name"] == "app"
    assert "schema1" in event["reason"]


def test_stored_bytes_that_are_not_the_digests(local: Registry) -> None:
    body = local.image("app", "x")
    local.put_manifest("app", "v1", body, None)
    local.write(blob_data_key(digest_of(body)), body + b" ")
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", "v1")
    local.call(local.storage.remove, blob_data_key(digest_of(body)))
    with pytest.raises(ManifestUnknown):
        local.get_manifest("app", digest_of(body))
