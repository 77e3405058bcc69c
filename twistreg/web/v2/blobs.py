# -*- test-case-name: tests.test_v2_routes -*-
"""
Blobs and their uploads: GET/HEAD (with Range, by sendfile on local storage, a redirect or a
stream on S3), DELETE, and the upload sessions (POST, PATCH, PUT, GET status, DELETE),
monolithic uploads and cross-repository mounts.  Upload bodies stream into storage with
their digest computed on the way; sessions live in storage, so any process may continue one.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from twistreg.oci.errors import BlobUnknown, BlobUploadInvalid, DigestInvalid
from twistreg.oci.names import Digest, parse_digest
from twistreg.registry.auth import Access
from twistreg.web.body import UploadBody, store_buffered
from twistreg.web.layers import send_stored
from twistreg.web.v2.routes import Policy, V2Call, V2Routes, decimal

_UPLOADS = "/v2/<name:name>/blobs/uploads/"
_UPLOAD = "/v2/<name:name>/blobs/uploads/<upload_id>"


def _required_digest(call: V2Call) -> Digest:
    text = call.query(b"digest")
    if text is None:
        raise DigestInvalid("the digest query parameter is required")
    return parse_digest(text)


def _empty(request: IRequest, status: int, headers: dict[bytes, bytes]) -> bytes:
    request.setResponseCode(status)
    for name, value in headers.items():
        request.setHeader(name, value)
    request.setHeader(b"Content-Length", b"0")
    return b""


def _blob_created(call: V2Call, digest: Digest) -> bytes:
    return _empty(call.request, 201, {
        b"Location": f"/v2/{call.name}/blobs/{digest}".encode(),
        b"Docker-Content-Digest": str(digest).encode(),
    })


def _session(call: V2Call, upload_id: str, size: int, status: int) -> bytes:
    """An upload session's answer: where to send the rest, and what is received so far."""
    return _empty(call.request, status, {
        b"Location": f"/v2/{call.name}/blobs/uploads/{upload_id}".encode(),
        b"Range": b"0-%d" % max(size - 1, 0),
        b"Docker-Upload-UUID": upload_id.encode(),
    })


def _chunk_start(call: V2Call) -> int | None:
    """
    Where a PATCH's C{Content-Range} (C{<start>-<end>}) says the chunk begins; None without
    one (the chunk is appended).
    """
    value = call.header(b"Content-Range")
    if value is None:
        return None
    start_text, _, end_text = value.strip().removeprefix("bytes ").partition("-")
    start, end = decimal(start_text), decimal(end_text)
    if start is None or end is None or end < start:
        raise BlobUploadInvalid(f"invalid Content-Range {value[:80]!r}: <start>-<end> expected")
    return start


async def _commit(call: V2Call, open_sink: Any) -> Any:
    """
    The body's sink committed: the streamed one, or the body twisted.web buffered (a Site
    without twistreg's request factory) copied into a sink opened now.
    """
    body = call.request.content
    if isinstance(body, UploadBody):
        return await body.commit()
    return await store_buffered(await open_sink(call), body)


def add_blob_routes(v2: V2Routes) -> None:
    """Blob GET, HEAD and DELETE; the upload endpoints."""
    registry = v2.registry
    settings = registry.settings
    repositories, uploads = registry.repositories, registry.uploads

    @v2.route("/v2/<name:name>/blobs/<digest>", "GET", Policy(Access.READ))
    async def get_blob(call: V2Call, digest: str) -> bytes:
        blob = parse_digest(digest)
        location = await repositories.blob_location(call.name, blob)
        if location is None:
            raise BlobUnknown(detail={"digest": str(blob)})
        key, size = location
        request = call.request

        def headers(length: int) -> None:
            request.setHeader(b"Content-Type", b"application/octet-stream")
            request.setHeader(b"Docker-Content-Digest", str(blob).encode())
            request.setHeader(b"ETag", f'"{blob}"'.encode())
            request.setHeader(b"Cache-Control", b"max-age=31536000")
            request.setHeader(b"Accept-Ranges", b"bytes")
            request.setHeader(b"Content-Length", b"%d" % length)

        return await send_stored(request, registry.storage, key, size,
                                 call.header(b"Range"), settings.storage_redirect, headers,
                                 f"blob {blob}")

    @v2.route("/v2/<name:name>/blobs/<digest>", "DELETE", Policy(Access.DELETE))
    async def delete_blob(call: V2Call, digest: str) -> bytes:
        blob = parse_digest(digest)
        await repositories.unlink_blob(call.name, blob)
        return _empty(call.request, 202, {b"Docker-Content-Digest": str(blob).encode()})

    async def open_monolithic(call: V2Call) -> Any:
        return await uploads.open_blob(call.name, _required_digest(call))

    @v2.route(_UPLOADS, "POST", Policy(Access.WRITE, upload=open_monolithic,
                                       streams_with=b"digest"))
    async def start_upload(call: V2Call) -> bytes:
        if call.query(b"digest") is not None:
            digest = _required_digest(call)
            await _commit(call, open_monolithic)
            return _blob_created(call, digest)
        mount, source = call.query(b"mount"), call.query(b"from")
        if mount is not None and source is not None:
            digest = parse_digest(mount)
            if await repositories.mount_blob(call.name, digest, source) is not None:
                return _blob_created(call, digest)
        upload_id = await uploads.start(call.name)
        return _session(call, upload_id, 0, 202)

    @v2.route(_UPLOAD, "GET", Policy(Access.WRITE))
    async def upload_status(call: V2Call, upload_id: str) -> bytes:
        size = await uploads.size(call.name, upload_id)
        return _session(call, upload_id, size, 204)

    async def open_chunk(call: V2Call, upload_id: str) -> Any:
        return await uploads.open_chunk(call.name, upload_id, _chunk_start(call))

    @v2.route(_UPLOAD, "PATCH", Policy(Access.WRITE, upload=open_chunk))
    async def upload_chunk(call: V2Call, upload_id: str) -> bytes:
        size = await _commit(call, lambda call: open_chunk(call, upload_id))
        return _session(call, upload_id, size, 202)

    async def open_last_chunk(call: V2Call, upload_id: str) -> Any:
        _required_digest(call)  # refused before the body, not after it
        return await uploads.open_chunk(call.name, upload_id, None)

    @v2.route(_UPLOAD, "PUT", Policy(Access.WRITE, upload=open_last_chunk))
    async def finish_upload(call: V2Call, upload_id: str) -> bytes:
        digest = _required_digest(call)
        await _commit(call, lambda call: open_last_chunk(call, upload_id))
        await uploads.complete(call.name, upload_id, digest)
        return _blob_created(call, digest)

    @v2.route(_UPLOAD, "DELETE", Policy(Access.DELETE))
    async def cancel_upload(call: V2Call, upload_id: str) -> bytes:
        await uploads.cancel(call.name, upload_id)
        return _empty(call.request, 204, {})
