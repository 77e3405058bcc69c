"""
L{twistreg.oci.manifests}: real manifests of each stored type, the types refused, and hostile
or malformed bodies, each refused with the exact code, status and message.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest

from twistreg.oci.errors import ManifestInvalid, ManifestTooLarge
from twistreg.oci.manifests import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    MANIFEST_LIMIT,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    parse_manifest,
    referrer_descriptor,
)
from twistreg.oci.names import Digest
from twistreg.registry.documents import MAX_DEPTH

ACCEPTED = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json"
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = sha256(b"config")
LAYER_1 = sha256(b"layer 1")
LAYER_2 = sha256(b"layer 2")
AMD64 = sha256(b"amd64 manifest")
ARM64 = sha256(b"arm64 manifest")
EMPTY_JSON = sha256(b"{}")
SBOM = sha256(b"sbom")

DOCKER_IMAGE = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 1469,
        "digest": CONFIG,
    },
    "layers": [
        {
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 2479,
            "digest": LAYER_1,
        },
        {
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 31357311,
            "digest": LAYER_2,
        },
    ],
}

OCI_IMAGE = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": CONFIG,
        "size": 7023,
    },
    "layers": [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": LAYER_1,
            "size": 32654,
            "annotations": {"org.opencontainers.image.title": "base.tar.gz"},
        },
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": LAYER_2, "size": 0},
    ],
    "annotations": {"com.example.key1": "value1", "com.example.key2": ""},
}

OCI_IMAGE_INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 7143,
            "digest": AMD64,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 7682,
            "digest": ARM64,
            "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        },
    ],
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
}

DOCKER_LIST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "manifests": [
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 525,
            "digest": AMD64,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 1124,
            "digest": ARM64,
            "platform": {
                "architecture": "amd64",
                "os": "windows",
                "os.version": "10.0.17763.5122",
                "os.features": ["win32k"],
                "features": [],
            },
        },
    ],
}

ARTIFACT = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.example.sbom.v1",
    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_JSON,
               "size": 2, "data": "e30="},
    "layers": [
        {"mediaType": "application/spdx+json", "digest": SBOM, "size": 4,
         "annotations": {"org.opencontainers.image.title": "sbom.spdx.json"}},
    ],
    "subject": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": AMD64,
        "size": 7143,
    },
    "annotations": {"org.opencontainers.image.created": "2024-02-03T04:05:06Z"},
}

SCHEMA1_SIGNED = {
    "schemaVersion": 1,
    "name": "library/hello-world",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": LAYER_1}],
    "history": [{"v1Compatibility": "{\"id\": \"e45a5af57b00\"}"}],
    "signatures": [{"header": {"alg": "ES256"}, "signature": "x", "protected": "y"}],
}


def encode(document: Any) -> bytes:
    return json.dumps(document, indent=3).encode()


def parsed(document: Any, content_type: str | None = None) -> Manifest:
    return parse_manifest(encode(document), content_type)


def refused(body: bytes, content_type: str | None = None) -> str:
    """The message of the MANIFEST_INVALID (400) that C{body} gets."""
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(body, content_type)
    assert type(caught.value) is ManifestInvalid
    assert (caught.value.status, caught.value.code) == (400, "MANIFEST_INVALID")
    return caught.value.message


def refused_document(document: Any, content_type: str | None = None) -> str:
    return refused(encode(document), content_type)


def descriptor(media_type: str, digest: str, size: int, **extra: Any) -> Descriptor:
    return Descriptor(media_type=media_type, digest=Digest("sha256", digest[7:]), size=size,
                      **extra)


def test_media_types() -> None:
    assert (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST) == (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    assert (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_EMPTY) == (
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.empty.v1+json",
    )
    assert MANIFEST_LIMIT == 4194304


def test_docker_image() -> None:
    body = encode(DOCKER_IMAGE)
    manifest = parse_manifest(body, DOCKER_MANIFEST)
    config = descriptor("application/vnd.docker.container.image.v1+json", CONFIG, 1469)
    layers = (
        descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_1, 2479),
        descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", LAYER_2, 31357311),
    )
    assert manifest == Manifest(
        media_type=DOCKER_MANIFEST,
        digest=Digest("sha256", hashlib.sha256(body).hexdigest()),
        size=len(body),
        config=config,
        layers=layers,
        manifests=(),
        subject=None,
        artifact_type="application/vnd.docker.container.image.v1+json",
        annotations={},
    )
    assert manifest.blobs == (config, *layers)


def test_oci_image() -> None:
    manifest = parsed(OCI_IMAGE, OCI_MANIFEST)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.layers == (
        descriptor("application/vnd.oci.image.layer.v1.tar+gzip", LAYER_1, 32654,
                   annotations={"org.opencontainers.image.title": "base.tar.gz"}),
        descriptor("application/vnd.oci.image.layer.v1.tar", LAYER_2, 0),
    )
    assert [str(blob.digest) for blob in manifest.blobs] == [CONFIG, LAYER_1, LAYER_2]
    assert manifest.annotations == {"com.example.key1": "value1", "com.example.key2": ""}
    assert manifest.artifact_type == "application/vnd.oci.image.config.v1+json"
    assert manifest.manifests == ()


def test_digest_of_the_exact_bytes() -> None:
    """The same document laid out differently is another manifest."""
    compact = json.dumps(OCI_IMAGE, separators=(",", ":")).encode()
    spaced = json.dumps(OCI_IMAGE, indent=2).encode()
    assert parse_manifest(compact, OCI_MANIFEST).digest == Digest.of(compact)
    assert parse_manifest(spaced, OCI_MANIFEST).digest == Digest.of(spaced)
    assert Digest.of(compact) != Digest.of(spaced)
    assert parse_manifest(spaced, OCI_MANIFEST).size == len(spaced)


def test_oci_index() -> None:
    manifest = parsed(OCI_IMAGE_INDEX, OCI_INDEX)
    assert manifest.media_type == OCI_INDEX
    assert manifest.manifests == (
        descriptor(OCI_MANIFEST, AMD64, 7143,
                   platform={"architecture": "amd64", "os": "linux"}),
        descriptor(OCI_MANIFEST, ARM64, 7682,
                   platform={"architecture": "arm64", "os": "linux", "variant": "v8"},
                   annotations={"vnd.docker.reference.type": "attestation-manifest"}),
    )
    assert (manifest.config, manifest.layers, manifest.blobs) == (None, (), ())
    assert (manifest.subject, manifest.artifact_type) == (None, None)
    assert manifest.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}


def test_docker_manifest_list() -> None:
    manifest = parsed(DOCKER_LIST, DOCKER_MANIFEST_LIST)
    assert manifest.media_type == DOCKER_MANIFEST_LIST
    assert [str(child.digest) for child in manifest.manifests] == [AMD64, ARM64]
    assert manifest.manifests[1].platform == DOCKER_LIST["manifests"][1]["platform"]
    assert manifest.blobs == ()


def test_empty_index() -> None:
    manifest = parsed({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    assert (manifest.manifests, manifest.blobs) == ((), ())


def test_artifact() -> None:
    body = encode(ARTIFACT)
    manifest = parse_manifest(body, OCI_MANIFEST)
    assert manifest.artifact_type == "application/vnd.example.sbom.v1"
    assert manifest.subject == descriptor(OCI_MANIFEST, AMD64, 7143)
    # The empty config is a blob like any other: clients push it, and it must be there.
    assert manifest.config == descriptor(OCI_EMPTY, EMPTY_JSON, 2)
    assert [str(blob.digest) for blob in manifest.blobs] == [EMPTY_JSON, SBOM]
    assert referrer_descriptor(manifest) == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(body),
        "size": len(body),
        "artifactType": "application/vnd.example.sbom.v1",
        "annotations": {"org.opencontainers.image.created": "2024-02-03T04:05:06Z"},
    }


def test_artifact_without_layers() -> None:
    """The spec lets the list of blobs be empty: a signature or attestation may be all config."""
    document = dict(ARTIFACT, layers=[])
    manifest = parsed(document, OCI_MANIFEST)
    assert manifest.layers == ()
    assert [str(blob.digest) for blob in manifest.blobs] == [EMPTY_JSON]


def test_artifact_type_from_config() -> None:
    """Without an artifactType (or with an empty one) an image manifest has its config's."""
    for document in (
        {key: value for key, value in ARTIFACT.items() if key != "artifactType"},
        dict(ARTIFACT, artifactType=""),
    ):
        manifest = parsed(document, OCI_MANIFEST)
        assert manifest.artifact_type == OCI_EMPTY
        assert referrer_descriptor(manifest)["artifactType"] == OCI_EMPTY


def test_index_artifact_type() -> None:
    """An index has an artifactType only when it gives one."""
    subject = ARTIFACT["subject"]
    index = dict(OCI_IMAGE_INDEX, subject=subject, artifactType="application/vnd.example.set")
    assert parsed(index).artifact_type == "application/vnd.example.set"
    for document in (dict(OCI_IMAGE_INDEX, subject=subject),
                     dict(OCI_IMAGE_INDEX, subject=subject, artifactType="")):
        manifest = parsed(document)
        assert manifest.artifact_type is None
        assert "artifactType" not in referrer_descriptor(manifest)


def test_referrer_descriptor_without_annotations() -> None:
    document = {key: value for key, value in OCI_IMAGE_INDEX.items() if key != "annotations"}
    body = encode(document)
    assert referrer_descriptor(parse_manifest(body, None)) == {
        "mediaType": OCI_INDEX, "digest": sha256(body), "size": len(body),
    }


def test_referrer_descriptor_is_json() -> None:
    entry = referrer_descriptor(parsed(ARTIFACT))
    assert json.loads(json.dumps(entry)) == entry


def test_foreign_layers() -> None:
    """Windows base layers come from their URLs: the repository need not hold them."""
    document = copy.deepcopy(DOCKER_IMAGE)
    document["layers"][0] = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "size": 1234,
        "digest": LAYER_1,
        "urls": ["https://mcr.microsoft.com/v2/windows/servercore/blobs/" + LAYER_1],
    }
    manifest = parsed(document)
    assert manifest.layers[0].urls == (document["layers"][0]["urls"][0],)
    assert [str(blob.digest) for blob in manifest.blobs] == [CONFIG, LAYER_2]


def test_unknown_fields_ignored() -> None:
    document = copy.deepcopy(OCI_IMAGE)
    document["x-extension"] = {"anything": [1, 2.5, None]}
    document["layers"][1]["x-extension"] = True
    manifest = parsed(document)
    assert manifest.layers[1] == descriptor("application/vnd.oci.image.layer.v1.tar", LAYER_2, 0)


def test_descriptors_hashable() -> None:
    manifest = parsed(OCI_IMAGE)
    assert len({*manifest.blobs, *parsed(OCI_IMAGE).blobs}) == 3
    assert hash(manifest) == hash(parsed(OCI_IMAGE))


# The media type: the body's field, the Content-Type, and their agreement.


def test_oci_manifest_without_media_type_field() -> None:
    document = {key: value for key, value in OCI_IMAGE.items() if key != "mediaType"}
    assert parsed(document, OCI_MANIFEST).media_type == OCI_MANIFEST
    index = {key: value for key, value in OCI_IMAGE_INDEX.items() if key != "mediaType"}
    assert parsed(index, OCI_INDEX).media_type == OCI_INDEX


def test_content_type_parameters_and_case_ignored() -> None:
    for content_type in (f"{OCI_MANIFEST}; charset=utf-8", f" {OCI_MANIFEST.upper()} "):
        assert parsed(OCI_IMAGE, content_type).media_type == OCI_MANIFEST


def test_media_type_field_without_content_type() -> None:
    for content_type in (None, "", " ; q=1"):
        assert parsed(DOCKER_IMAGE, content_type).media_type == DOCKER_MANIFEST


@pytest.mark.parametrize(
    "content_type",
    [OCI_MANIFEST, "application/json", "application/octet-stream", OCI_INDEX],
)
def test_content_type_disagrees(content_type: str) -> None:
    assert refused_document(DOCKER_IMAGE, content_type) == (
        f"Content-Type {content_type!r} does not match the manifest's mediaType"
        f" {DOCKER_MANIFEST!r}"
    )


def test_no_media_type_at_all() -> None:
    document = {key: value for key, value in OCI_IMAGE.items() if key != "mediaType"}
    assert refused_document(document) == (
        "manifest without a mediaType field, sent without a Content-Type; accepted: " + ACCEPTED
    )


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.artifact.manifest.v1+json",
        "application/json",
        "application/vnd.oci.image.config.v1+json",
        "",
        "Application/vnd.oci.image.manifest.v1+json",
    ],
)
def test_unsupported_media_type_fields(media_type: str) -> None:
    """The field is compared as it is: media types in JSON are written in lowercase."""
    assert refused_document(dict(OCI_IMAGE, mediaType=media_type)) == (
        f"unsupported manifest media type {media_type!r}; accepted: " + ACCEPTED
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/vnd.oci.artifact.manifest.v1+json", "application/json", "text/plain"],
)
def test_unsupported_content_types(content_type: str) -> None:
    document = {key: value for key, value in OCI_IMAGE.items() if key != "mediaType"}
    assert refused_document(document, content_type) == (
        f"unsupported manifest media type {content_type!r}; accepted: " + ACCEPTED
    )


SCHEMA1_MESSAGE = (
    "Docker schema1 manifests are not supported: push with a client that sends schema2 or OCI"
    " manifests (docker 1.10 and later do)"
)


@pytest.mark.parametrize(
    "document, content_type",
    [
        (SCHEMA1_SIGNED, DOCKER_SCHEMA1_SIGNED),
        (SCHEMA1_SIGNED, DOCKER_SCHEMA1),
        (SCHEMA1_SIGNED, "application/json"),
        (SCHEMA1_SIGNED, None),
        (dict(SCHEMA1_SIGNED, mediaType=DOCKER_SCHEMA1), None),
        (DOCKER_IMAGE, DOCKER_SCHEMA1_SIGNED),
        (dict(DOCKER_IMAGE, mediaType=DOCKER_SCHEMA1_SIGNED), None),
    ],
    ids=["signed", "unsigned-type", "json", "no-type", "type-field", "schema2-body",
         "schema2-body-type-field"],
)
def test_schema1_refused(document: Any, content_type: str | None) -> None:
    assert refused_document(document, content_type) == SCHEMA1_MESSAGE


@pytest.mark.parametrize("version", [None, 3, 0, "2", 2.0, True, [2], -2, 2**70])
def test_schema_version(version: Any) -> None:
    document = dict(OCI_IMAGE, schemaVersion=version)
    if version is None:
        del document["schemaVersion"]
    assert refused_document(document) == "schemaVersion must be 2"


# Hostile bodies.


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[" * 100_000, "manifest is not JSON: JSON nested too deeply"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
         "manifest is not JSON: JSON nested too deeply"),
        (b'{"schemaVersion": NaN}', "manifest is not JSON: NaN is not JSON"),
        (b'{"size": 1e999999}', "manifest is not JSON: number out of range: 1e999999"),
    ],
    ids=["deep-arrays", "deep-objects", "nan", "huge-float"],
)
def test_not_json(body: bytes, message: str) -> None:
    assert refused(body, OCI_MANIFEST) == message


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe{}",
        '{"mediaType": "caf\u00e9"}'.encode("latin-1"),
        json.dumps(OCI_IMAGE).encode("utf-16"),
        b'{"schemaVersion": 2',
        encode(OCI_IMAGE) + b"{}",
        b'{"size": 1' + b"0" * 5000 + b"}",
    ],
    ids=["empty", "bom-utf16", "latin1", "utf16", "truncated", "two-documents", "huge-int"],
)
def test_not_json_messages(body: bytes) -> None:
    assert refused(body, OCI_MANIFEST).startswith("manifest is not JSON: ")


@pytest.mark.parametrize(
    "document",
    [[OCI_IMAGE], "manifest", 2, None, True],
    ids=["list", "string", "int", "null", "bool"],
)
def test_not_an_object(document: Any) -> None:
    assert refused_document(document, OCI_MANIFEST) == "manifest is not a JSON object"


def test_size_limit() -> None:
    body = encode(OCI_IMAGE)
    at_limit = body + b" " * (MANIFEST_LIMIT - len(body))
    assert parse_manifest(at_limit, OCI_MANIFEST).size == MANIFEST_LIMIT
    with pytest.raises(ManifestTooLarge) as caught:
        parse_manifest(at_limit + b" ", OCI_MANIFEST)
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        413, "MANIFEST_INVALID", "manifest of 4194305 bytes, over the limit of 4194304 bytes"
    )


def test_size_limit_before_parsing() -> None:
    """Even a body that is not JSON at all gets the 413, not a parse."""
    with pytest.raises(ManifestTooLarge):
        parse_manifest(b"[" * (MANIFEST_LIMIT + 1), OCI_MANIFEST)


# Malformed fields: each change to a valid manifest and the message it gets.


DELETE = object()


def changed(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """
    C{document} with the field at C{path} (keys and indexes joined by '/') replaced, or
    deleted when C{value} is L{DELETE}.
    """
    result = copy.deepcopy(document)
    *parents, last = path.split("/")
    target: Any = result
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    elif value is DELETE:
        del target[last]
    else:
        target[last] = value
    return result



MALFORMED = [
    (OCI_IMAGE, "config", DELETE, "config missing"),
    (OCI_IMAGE, "config", None, "config must be a descriptor (a JSON object)"),
    (OCI_IMAGE, "config", [CONFIG], "config must be a descriptor (a JSON object)"),
    (OCI_IMAGE, "layers", DELETE, "layers missing"),
    (OCI_IMAGE, "layers", {"0": {}}, "layers must be a list of descriptors"),
    (OCI_IMAGE, "layers", None, "layers must be a list of descriptors"),
    (OCI_IMAGE, "layers/1", LAYER_2, "layers[1] must be a descriptor (a JSON object)"),
    (OCI_IMAGE, "manifests", [], "an image manifest has no manifests field"),
    (OCI_IMAGE, "config/mediaType", DELETE, "config.mediaType missing"),
    (OCI_IMAGE, "config/mediaType", 5, "config.mediaType must be a non-empty string"),
    (OCI_IMAGE, "config/mediaType", "", "config.mediaType must be a non-empty string"),
    (OCI_IMAGE, "layers/0/digest", DELETE, "layers[0].digest missing"),
    (OCI_IMAGE, "layers/0/digest", 5, "layers[0].digest must be a string"),
    (OCI_IMAGE, "layers/0/digest", LAYER_1.upper().replace("SHA256", "sha256"),
     f"layers[0].digest: invalid sha256 digest {LAYER_1[7:].upper()!r}: 64 lowercase hex digits"),
    (OCI_IMAGE, "layers/0/digest", "sha384:" + LAYER_1[7:],
     "layers[0].digest: unsupported digest algorithm 'sha384': supported are sha256, sha512"),
    (OCI_IMAGE, "layers/0/digest", LAYER_1[7:],
     f"layers[0].digest: invalid digest {LAYER_1[7:]!r}: expected algorithm:hex"),
    (OCI_IMAGE, "layers/1/size", DELETE, "layers[1].size missing"),
    (OCI_IMAGE, "layers/1/size", -1, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", 2**63, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", 10**4000, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", 1.5, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", 12.0, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", True, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", "12", "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/1/size", None, "layers[1].size must be an integer from 0 to 2^63-1"),
    (OCI_IMAGE, "layers/0/annotations", ["a"], "layers[0].annotations must map strings to strings"),
    (OCI_IMAGE, "layers/0/annotations", {"a": 1},
     "layers[0].annotations must map strings to strings"),
    (OCI_IMAGE, "layers/0/annotations", {"a": None},
     "layers[0].annotations must map strings to strings"),
    (OCI_IMAGE, "layers/0/artifactType", 5, "layers[0].artifactType must be a string"),
    (OCI_IMAGE, "layers/0/urls", "http://example.com/x",
     "layers[0].urls must be a list of strings"),
    (OCI_IMAGE, "layers/0/urls", [5], "layers[0].urls must be a list of strings"),
    (OCI_IMAGE, "layers/0/urls", ["ftp://example.com/layer"],
     "layers[0].urls: 'ftp://example.com/layer' is not an http or https URL"),
    (OCI_IMAGE, "layers/0/urls", ["https://example.com/layer#part"],
     "layers[0].urls: 'https://example.com/layer#part' is not an http or https URL"),
    (OCI_IMAGE, "layers/0/urls", ["/v2/foo/blobs/x"],
     "layers[0].urls: '/v2/foo/blobs/x' is not an http or https URL"),
    (OCI_IMAGE, "layers/0/urls", ["http://[::1/x"],
     "layers[0].urls: 'http://[::1/x' is not an http or https URL"),
    (OCI_IMAGE, "layers/0/platform", "linux/amd64", "layers[0].platform must be a JSON object"),
    (OCI_IMAGE, "annotations", {"a": ["b"]}, "annotations must map strings to strings"),
    (OCI_IMAGE, "annotations", "a=b", "annotations must map strings to strings"),
    (OCI_IMAGE, "artifactType", ["application/x"], "artifactType must be a string"),
    (OCI_IMAGE, "mediaType", 5, "mediaType must be a string"),
    (OCI_IMAGE, "mediaType", None, "mediaType must be a string"),
    (OCI_IMAGE, "subject", "sha256:abc", "subject must be a descriptor (a JSON object)"),
    (OCI_IMAGE, "subject", {"mediaType": OCI_MANIFEST, "digest": AMD64},
     "subject.size missing"),
    (OCI_IMAGE, "subject", {"mediaType": OCI_MANIFEST, "digest": "sha256:abc", "size": 1},
     "subject.digest: invalid sha256 digest 'abc': 64 lowercase hex digits"),
    (OCI_IMAGE_INDEX, "manifests", DELETE, "manifests missing"),
    (OCI_IMAGE_INDEX, "manifests", {}, "manifests must be a list of descriptors"),
    (OCI_IMAGE_INDEX, "config", OCI_IMAGE["config"], "an index has no config field"),
    (OCI_IMAGE_INDEX, "layers", [], "an index has no layers field"),
    (OCI_IMAGE_INDEX, "manifests/0", None, "manifests[0] must be a descriptor (a JSON object)"),
    (OCI_IMAGE_INDEX, "manifests/1/platform", [], "manifests[1].platform must be a JSON object"),
    (OCI_IMAGE_INDEX, "manifests/1/platform/os", DELETE, "manifests[1].platform.os missing"),
    (OCI_IMAGE_INDEX, "manifests/1/platform/architecture", 64,
     "manifests[1].platform.architecture must be a string"),
    (OCI_IMAGE_INDEX, "manifests/1/platform/variant", 8,
     "manifests[1].platform.variant must be a string"),
    (DOCKER_LIST, "manifests/1/platform/os.version", 10,
     "manifests[1].platform.os.version must be a string"),
    (DOCKER_LIST, "manifests/1/platform/os.features", "win32k",
     "manifests[1].platform.os.features must be a list of strings"),
    (DOCKER_LIST, "manifests/1/platform/features", [None],
     "manifests[1].platform.features must be a list of strings"),
    (DOCKER_IMAGE, "manifests", [{}], "an image manifest has no manifests field"),
]


@pytest.mark.parametrize(
    "document, path, value, message",
    MALFORMED,
    ids=[f"{index}-{row[1]}" for index, row in enumerate(MALFORMED)],
)
def test_malformed(document: dict[str, Any], path: str, value: Any, message: str) -> None:
    assert refused_document(changed(document, path, value)) == message


def test_null_fields_of_the_other_kind_allowed() -> None:
    """As for the Go registry, a null C{manifests} in an image manifest is no index field."""
    assert parsed(dict(OCI_IMAGE, manifests=None)).manifests == ()
    assert parsed(dict(OCI_IMAGE_INDEX, config=None, layers=None)).config is None
