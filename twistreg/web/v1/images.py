# -*- test-case-name: tests.test_routes_images -*-
"""The image routes, R3–R10: layers, json, ancestry, checksums, file lists and diffs."""

from __future__ import annotations

from collections.abc import Callable

from twistreg.bridge.v2_to_v1 import BridgedImage
from twistreg.layout import image_ancestry_key, image_json_key
from twistreg.registry.auth import Access
from twistreg.registry.images import LayerUpload
from twistreg.registry.mirror import Mirror
from twistreg.web import responses
from twistreg.web.body import UploadBody, store_buffered
from twistreg.web.layers import relay_layer, send_layer
from twistreg.web.v1.routes import (
    MirrorFallback,
    Missing,
    Policy,
    RouteCall,
    RouteTable,
    upstream_request,
)

_IMAGE_NOT_FOUND = "Image not found"


async def _relay_upstream_layer(call: RouteCall, mirror: Mirror, image_id: str) -> bytes | None:
    """R3 in mirror mode: upstream's layer, sent while it is stored."""
    path, headers = upstream_request(call.request)
    layer = await mirror.layer(path, headers, image_id)
    if layer is None:
        return None
    return await relay_layer(call.request, layer, image_id, call.now())


def _stored_upstream(key: Callable[[str], str], copied: tuple[str, ...] = ()) -> MirrorFallback:
    """R6/R7 in mirror mode: upstream's document, kept under the image's C{key}."""

    async def fallback(call: RouteCall, mirror: Mirror, image_id: str) -> bytes | None:
        path, headers = upstream_request(call.request)
        answer = await mirror.fetch_and_store(path, headers, key(image_id))
        if answer is None:
            return None
        for header in copied:
            values = answer.headers.get(header.lower())
            if values:
                call.request.responseHeaders.setRawHeaders(header, list(values))
        return responses.cacheable_body(call.request, call.now(), answer.body)

    return fallback


async def _open_layer_upload(call: RouteCall, image_id: str) -> LayerUpload:
    """R4's checks past authorization, then the sink the body streams into."""
    return await call.registry.images.begin_layer_upload(image_id)


async def _bridged(call: RouteCall, image_id: str) -> BridgedImage:
    """
    An image the V1 tree lacks, made for a layer of a V2 image (L{V2View}), once the
    route's checks passed.
    """
    v2_view = call.registry.v2_view
    image = None if v2_view is None else await v2_view.image(image_id)
    if image is None:
        raise Missing(_IMAGE_NOT_FOUND)
    call.found()
    return image


def add_image_routes(v1: RouteTable) -> None:
    """R3–R10; the images of V2 tags are served too (L{V2View})."""
    registry = v1.registry
    images, settings, v2_view = registry.images, registry.settings, registry.v2_view

    @v1.route("/v1/images/<image_id>/layer", "GET", Policy(
        Access.READ, mirror=_relay_upstream_layer, conditional=True))
    async def get_layer(call: RouteCall, image_id: str) -> bytes:
        size = await images.check_layer(image_id, call.authorization)
        if size is not None:
            call.found()
            return await send_layer(call.request, registry.storage, settings, image_id, size,
                                    call.now(), call.header(b"Range"))
        image = await _bridged(call, image_id)
        location = await v2_view.layer_location(image)
        if location is None:
            raise Missing(_IMAGE_NOT_FOUND)
        key, size = location
        return await send_layer(call.request, registry.storage, settings, image_id, size,
                                call.now(), call.header(b"Range"), key)

    @v1.route("/v1/images/<image_id>/layer", "PUT", Policy(
        Access.WRITE, upload=_open_layer_upload))
    async def put_layer(call: RouteCall, image_id: str) -> bytes:
        body = call.request.content
        if isinstance(body, UploadBody):
            await body.commit()
        else:
            # A Site without twistreg's request factory buffered the body.
            await store_buffered(await _open_layer_upload(call, image_id), body)
        return responses.json_body(call.request, True)

    @v1.route("/v1/images/<image_id>/checksum", "PUT", Policy(Access.WRITE))
    async def put_checksum(call: RouteCall, image_id: str) -> bytes:
        await images.put_checksum(image_id, call.header(b"X-Docker-Checksum-Payload"))
        return responses.json_body(call.request, True)

    @v1.route("/v1/images/<image_id>/json", "GET", Policy(
        Access.READ, conditional=True,
        mirror=_stored_upstream(image_json_key, ("X-Docker-Size", "X-Docker-Checksum-Payload"))))
    async def get_image_json(call: RouteCall, image_id: str) -> bytes:
        if await images.check_json(image_id, call.authorization):
            call.found()
            body, size, checksums = await images.get_json(image_id)
        else:
            image = await _bridged(call, image_id)
            checksum = await v2_view.checksum(image)
            body, size, checksums = image.document, image.size, [checksum] if checksum else []
        headers = call.request.responseHeaders
        if size is not None:
            headers.setRawHeaders(b"X-Docker-Size", [b"%d" % size])
        if checksums:
            headers.setRawHeaders(b"X-Docker-Checksum-Payload", [c.encode() for c in checksums])
        return responses.cacheable_body(call.request, call.now(), body)

    @v1.route("/v1/images/<image_id>/json", "PUT", Policy(Access.WRITE))
    async def put_image_json(call: RouteCall, image_id: str) -> bytes:
        await images.put_json(image_id, call.body(), call.token, call.authorization)
        return responses.json_body(call.request, True)

    @v1.route("/v1/images/<image_id>/ancestry", "GET", Policy(
        Access.READ, conditional=True, mirror=_stored_upstream(image_ancestry_key)))
    async def get_ancestry(call: RouteCall, image_id: str) -> bytes:
        if await images.check_ancestry(image_id):
            call.found()
            ancestry = await images.get_ancestry(image_id)
        else:
            ancestry = list((await _bridged(call, image_id)).ancestry)
        return responses.cacheable_body(call.request, call.now(), responses.render_json(ancestry))

    @v1.route("/v1/images/<image_id>/files", "GET", Policy(Access.READ, conditional=True))
    async def get_files(call: RouteCall, image_id: str) -> bytes:
        await images.check_file_list(image_id, call.authorization)
        call.found()
        return responses.cacheable_body(call.request, call.now(), await images.get_files(image_id))

    @v1.route("/v1/images/<image_id>/diff", "GET", Policy(Access.READ, conditional=True))
    async def get_diff(call: RouteCall, image_id: str) -> bytes:
        await images.check_diff(image_id, call.authorization)
        call.found()
        return responses.cacheable_body(call.request, call.now(), await images.get_diff(image_id))
