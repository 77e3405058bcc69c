# -*- test-case-name: tests.test_oci_manifests -*-
"""
Manifests pushed to the V2 API: which media types twistreg stores, what a manifest must hold
to be stored, and what the repository must already have for it (its blobs, an index's child
manifests). The bytes are stored as sent; this module only reads them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs

from twistreg.oci.errors import DigestInvalid, ManifestInvalid, ManifestTooLarge, quoted
from twistreg.oci.names import Digest, parse_digest
from twistreg.registry.documents import parse_json

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
#: Image configs: what makes a manifest an image a container runs (else an artifact).
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
#: A gzip layer in an OCI manifest (Docker schema2 names it L{checksums.GZIP_LAYER}).
OCI_GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The config of an artifact that has none (the image spec's empty descriptor: C{{}}).
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

#: Manifests with a config and layers, and indexes of other manifests: the types stored.
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
SCHEMA1 = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)

#: The size every client and registry must handle (the spec); larger manifests get a 413.
MANIFEST_LIMIT = 4 * 1024 * 1024

_SIZE_MAX = 2**63 - 1


@attrs.frozen
class Descriptor:
    """
    A reference from a manifest to content, by media type, digest and size.

    @ivar urls: where a client fetches the content instead of the registry (Windows foreign
        layers); such content need not be in the repository.
    @ivar platform: an index child's platform (C{architecture}, C{os}, ...).
    """

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    # Left out of the hash (kept in equality) so that descriptors stay hashable.
    annotations: dict[str, str] = attrs.field(factory=dict, hash=False)
    platform: dict[str, Any] | None = attrs.field(default=None, hash=False)


@attrs.frozen
class Manifest:
    """
    A manifest that can be stored: its type, identity and what it refers to.

    @ivar media_type: one of L{IMAGE_MANIFESTS} or L{INDEXES}.
    @ivar digest: the sha256 of the exact bytes received.
    @ivar size: their length.
    @ivar config: an image manifest's config; C{None} for an index.
    @ivar layers: an image manifest's layers (empty for an index, and allowed empty for an
        artifact).
    @ivar manifests: an index's children, which must be manifests of the repository.
    @ivar subject: the manifest this one refers to, for the referrers API.
    @ivar artifact_type: the type the referrers API gives this manifest: its C{artifactType},
        else an image manifest's config media type, else C{None}.
    """

    media_type: str
    digest: Digest
    size: int
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """
        The config and layers the repository must have as blobs; as for the Go registry,
        not those with C{urls}, which clients fetch from elsewhere.
        """
        if self.config is None:
            return ()
        return tuple(blob for blob in (self.config, *self.layers) if not blob.urls)


def parse_manifest(body: bytes, content_type: str | None) -> Manifest:
    """
    Check a manifest body pushed with the given C{Content-Type} (parameters ignored).

    The body's C{mediaType} field names its type, and a C{Content-Type} that says otherwise
    is refused (V2-NOTES); without the field, the C{Content-Type} decides (OCI manifests may
    leave the field out).

    @raise ManifestTooLarge: the body is over L{MANIFEST_LIMIT} bytes.
    @raise ManifestInvalid: it is not a JSON object, a Docker schema1 manifest, of another
        type than L{IMAGE_MANIFESTS} and L{INDEXES}, or malformed (the message says where).
    """
    return _manifest(body, _document(body), content_type)


def parse_stored_manifest(body: bytes) -> Manifest:
    """
    Read a manifest as stored, which may lack a C{mediaType} field: OCI allows that, and the
    Go registry stores such manifests as pushed. Its fields then tell the type, as the image
    spec's types differ: a C{config} makes an image manifest, a C{manifests} list an index.

    @raise ManifestInvalid: what L{parse_manifest} refuses with no C{Content-Type}.
    @raise ManifestTooLarge: the body is over L{MANIFEST_LIMIT} bytes.
    """
    document = _document(body)
    inferred = None
    if "mediaType" not in document:
        if "config" in document:
            inferred = OCI_MANIFEST
        elif "manifests" in document:
            inferred = OCI_INDEX
    return _manifest(body, document, inferred)


def _document(body: bytes) -> dict[str, Any]:
    if len(body) > MANIFEST_LIMIT:
        raise ManifestTooLarge(
            f"manifest of {len(body)} bytes, over the limit of {MANIFEST_LIMIT} bytes"
        )
    try:
        document = parse_json(body)
    except ValueError as error:
        raise ManifestInvalid(f"manifest is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    return document


def _manifest(body: bytes, document: dict[str, Any], content_type: str | None) -> Manifest:
    media_type = _media_type(document, content_type)
    if not _is_int(document.get("schemaVersion"), 2, 2):
        raise ManifestInvalid("schemaVersion must be 2")
    if media_type in IMAGE_MANIFESTS:
        _absent(document, "manifests", "an image manifest")
        config = _descriptor(_required(document, "config"), "config")
        layers = _descriptors(document, "layers")
        children: tuple[Descriptor, ...] = ()
    else:
        # An index with image fields (or the reverse) could be read as either type by
        # clients that go by its fields; the Go registry refuses both for the OCI types,
        # and Docker's types have no reason to differ.
        _absent(document, "config", "an index")
        _absent(document, "layers", "an index")
        config, layers = None, ()
        children = _descriptors(document, "manifests")
    subject = document.get("subject")
    artifact_type = _optional_string(document, "artifactType")
    if not artifact_type and config is not None:
        # The referrers API's rule: an empty or missing artifactType falls back to the
        # config's media type for image manifests, and stays missing for indexes.
        artifact_type = config.media_type
    return Manifest(
        media_type=media_type,
        digest=Digest.of(body),
        size=len(body),
        config=config,
        layers=layers,
        manifests=children,
        subject=None if subject is None else _descriptor(subject, "subject"),
        artifact_type=artifact_type or None,
        annotations=_annotations(document),
    )


def referrer_descriptor(manifest: Manifest) -> dict[str, Any]:
    """The entry that lists C{manifest} among its subject's referrers, ready for JSON."""
    entry: dict[str, Any] = {
        "mediaType": manifest.media_type,
        "digest": str(manifest.digest),
        "size": manifest.size,
    }
    if manifest.artifact_type is not None:
        entry["artifactType"] = manifest.artifact_type
    if manifest.annotations:
        entry["annotations"] = dict(manifest.annotations)
    return entry


def _media_type(document: dict[str, Any], content_type: str | None) -> str:
    declared = _optional_string(document, "mediaType")
    sent = (content_type or "").split(";", 1)[0].strip().lower() or None
    if _is_int(document.get("schemaVersion"), 1, 1) or declared in SCHEMA1 or sent in SCHEMA1:
        raise ManifestInvalid(
            "Docker schema1 manifests are not supported: push with a client that sends"
            " schema2 or OCI manifests (docker 1.10 and later do)"
        )
    if declared is not None and sent is not None and declared != sent:
        raise ManifestInvalid(
            f"Content-Type {quoted(sent)} does not match the manifest's mediaType"
            f" {quoted(declared)}"
        )
    media_type = sent if declared is None else declared
    accepted = IMAGE_MANIFESTS + INDEXES
    if media_type is None:
        raise ManifestInvalid(
            "manifest without a mediaType field, sent without a Content-Type; accepted: "
            + ", ".join(accepted)
        )
    if media_type not in accepted:
        raise ManifestInvalid(
            f"unsupported manifest media type {quoted(media_type)}; accepted: "
            + ", ".join(accepted)
        )
    return media_type


def _is_int(value: Any, low: int, high: int) -> bool:
    """Whether C{value} is a JSON integer in [low, high] (not a bool, not a float like 2.0)."""
    return type(value) is int and low <= value <= high


def _required(document: dict[str, Any], key: str, prefix: str = "") -> Any:
    if key not in document:
        raise ManifestInvalid(f"{prefix}{key} missing")
    return document[key]


def _absent(document: dict[str, Any], key: str, kind: str) -> None:
    if document.get(key) is not None:
        raise ManifestInvalid(f"{kind} has no {key} field")


def _optional_string(document: dict[str, Any], key: str, prefix: str = "") -> str | None:
    """A string field that may be missing (C{None}); an empty string is returned as it is."""
    if key not in document:
        return None
    value = document[key]
    if not isinstance(value, str):
        raise ManifestInvalid(f"{prefix}{key} must be a string")
    return value


def _strings(document: dict[str, Any], key: str, prefix: str) -> tuple[str, ...]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ManifestInvalid(f"{prefix}{key} must be a list of strings")
    return tuple(value)


def _annotations(document: dict[str, Any], prefix: str = "") -> dict[str, str]:
    value = document.get("annotations", {})
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ManifestInvalid(f"{prefix}annotations must map strings to strings")
    return value


def _descriptors(document: dict[str, Any], key: str) -> tuple[Descriptor, ...]:
    value = _required(document, key)
    if not isinstance(value, list):
        raise ManifestInvalid(f"{key} must be a list of descriptors")
    return tuple(_descriptor(item, f"{key}[{index}]") for index, item in enumerate(value))


def _descriptor(value: Any, where: str) -> Descriptor:
    """
    Check a descriptor, named by C{where} in errors. Its C{data} field is not read: the
    registry serves content by digest, never from the descriptor.
    """
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor (a JSON object)")
    prefix = f"{where}."
    media_type = _required(value, "mediaType", prefix)
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{prefix}mediaType must be a non-empty string")
    digest = _required(value, "digest", prefix)
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{prefix}digest must be a string")
    try:
        parsed = parse_digest(digest)
    except DigestInvalid as error:
        raise ManifestInvalid(f"{prefix}digest: {error.message}") from None
    size = _required(value, "size", prefix)
    if not _is_int(size, 0, _SIZE_MAX):
        raise ManifestInvalid(f"{prefix}size must be an integer from 0 to 2^63-1")
    urls = _strings(value, "urls", prefix)
    for url in urls:
        if not _fetchable(url):
            raise ManifestInvalid(f"{prefix}urls: {quoted(url)} is not an http or https URL")
    platform = value.get("platform")
    if platform is not None:
        _check_platform(platform, f"{prefix}platform.")
    return Descriptor(
        media_type=media_type,
        digest=parsed,
        size=size,
        urls=urls,
        artifact_type=_optional_string(value, "artifactType", prefix),
        annotations=_annotations(value, prefix),
        platform=platform,
    )


def _fetchable(url: str) -> bool:
    """The Go registry's rule for content fetched elsewhere: http or https, no fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment


def _check_platform(platform: Any, prefix: str) -> None:
    if not isinstance(platform, dict):
        raise ManifestInvalid(f"{prefix[:-1]} must be a JSON object")
    for key in ("architecture", "os"):
        if not isinstance(_required(platform, key, prefix), str):
            raise ManifestInvalid(f"{prefix}{key} must be a string")
    for key in ("os.version", "variant"):
        _optional_string(platform, key, prefix)
    for key in ("os.features", "features"):
        _strings(platform, key, prefix)
