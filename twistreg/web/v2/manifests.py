# -*- test-case-name: tests.test_v2_routes -*-
"""
Manifests (GET, HEAD, PUT and DELETE, by tag or digest), tag lists and referrers.  A
manifest is stored and served byte for byte as pushed; its digest is over those bytes.
"""

from __future__ import annotations

import json

from twisted.web.iweb import IRequest

from twistreg.bridge.tagspace import v1_repository
from twistreg.oci.errors import ManifestUnknown, NameUnknown, quoted
from twistreg.oci.manifests import OCI_INDEX, Manifest
from twistreg.oci.names import Digest, parse_digest, parse_reference
from twistreg.registry.auth import Access
from twistreg.web.v2.base import json_answer, page
from twistreg.web.v2.routes import Policy, V2Call, V2Routes

_MANIFEST = "/v2/<name:name>/manifests/<reference>"


def _acceptable(accept: list[str], media_type: str) -> bool:
    """Whether C{Accept} headers (every value) let the client take C{media_type}."""
    ranges = {part.split(";")[0].strip().lower() for value in accept for part in value.split(",")}
    ranges.discard("")
    if not ranges:
        return True
    kind = media_type.split("/")[0]
    return bool(ranges & {media_type.lower(), "*/*", f"{kind}/*"})


def _manifest_headers(request: IRequest, manifest: Manifest) -> None:
    request.setHeader(b"Content-Type", manifest.media_type.encode())
    request.setHeader(b"Docker-Content-Digest", str(manifest.digest).encode())
    request.setHeader(b"ETag", f'"{manifest.digest}"'.encode())
    request.setHeader(b"Content-Length", b"%d" % manifest.size)


def add_manifest_routes(v2: V2Routes) -> None:
    """Manifests, tags/list and referrers."""
    registry = v2.registry
    repositories = registry.repositories
    v1_view, tag_space = registry.v1_view, registry.tag_space

    @v2.route(_MANIFEST, "GET", Policy(Access.READ))
    async def get_manifest(call: V2Call, reference: str) -> bytes:
        target = parse_reference(reference)
        try:
            body, manifest = await repositories.get_manifest(call.name, target)
        except (ManifestUnknown, NameUnknown):
            # Not a V2 tag: a V1 tag of the same repository is served through the bridge.
            bridged = None if isinstance(target, Digest) else await v1_view.manifest(
                call.name, target)
            if bridged is None:
                raise
            body, manifest = bridged
        accept = call.request.requestHeaders.getRawHeaders(b"Accept", [])
        if not _acceptable([value.decode("latin-1") for value in accept], manifest.media_type):
            raise ManifestUnknown(
                f"the manifest is {manifest.media_type}, which the Accept header does not take",
                detail={"mediaType": manifest.media_type})
        _manifest_headers(call.request, manifest)
        return body

    @v2.route(_MANIFEST, "PUT", Policy(Access.WRITE))
    async def put_manifest(call: V2Call, reference: str) -> bytes:
        target = parse_reference(reference)
        manifest = await repositories.put_manifest(
            call.name, target, call.request.content.getvalue(), call.header(b"Content-Type"))
        if registry.search is not None and isinstance(target, str):
            # V1 search finds what V2 pushed, as it finds what a V1 tag PUT pushed (R13).
            repository = v1_repository(call.name)
            if repository is not None:
                await registry.search.register(repository.key)
        request = call.request
        request.setResponseCode(201)
        request.setHeader(b"Location", f"/v2/{call.name}/manifests/{manifest.digest}".encode())
        request.setHeader(b"Docker-Content-Digest", str(manifest.digest).encode())
        if manifest.subject is not None:
            request.setHeader(b"OCI-Subject", str(manifest.subject.digest).encode())
        request.setHeader(b"Content-Length", b"0")
        return b""

    @v2.route(_MANIFEST, "DELETE", Policy(Access.DELETE))
    async def delete_manifest(call: V2Call, reference: str) -> bytes:
        target = parse_reference(reference)
        if isinstance(target, Digest):
            await repositories.delete_manifest(call.name, target)
        else:
            # One namespace: the tag goes from both trees (both have it only after a race).
            taken = await tag_space.take_from_v1(call.name, target)
            try:
                await repositories.delete_tag(call.name, target)
            except ManifestUnknown:
                if not taken:
                    raise
        call.request.setResponseCode(202)
        call.request.setHeader(b"Content-Length", b"0")
        return b""

    @v2.route("/v2/<name:name>/tags/list", "GET", Policy(Access.READ))
    async def list_tags(call: V2Call) -> bytes:
        try:
            tags = await repositories.tags(call.name)
        except NameUnknown:
            tags = None
        v1_tags = await v1_view.tags(call.name)
        if tags is None and v1_tags is None:
            raise NameUnknown(f"repository {quoted(call.name)} unknown")
        # One list of names: a V1 tag is pulled through the bridge when V2 has none.
        tags = sorted(set(tags or ()) | set(v1_tags or ()))
        return json_answer(call.request, {
            "name": call.name, "tags": page(call, tags, f"/v2/{call.name}/tags/list")})

    @v2.route("/v2/<name:name>/referrers/<digest>", "GET", Policy(Access.READ))
    async def list_referrers(call: V2Call, digest: str) -> bytes:
        artifact_type = call.query(b"artifactType")
        descriptors = await repositories.referrers(call.name, parse_digest(digest),
                                                   artifact_type)
        if artifact_type is not None:
            call.request.setHeader(b"OCI-Filters-Applied", b"artifactType")
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": descriptors}, separators=(",", ":")).encode()
        call.request.setHeader(b"Content-Type", OCI_INDEX.encode())
        call.request.setHeader(b"Content-Length", b"%d" % len(body))
        return body

