# -*- test-case-name: tests.test_uploads,tests.test_routes_images -*-
"""
Sending layers: from storage with the contract's Range rules (R3), or relayed from a
mirror's upstream while it is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from twistreg.config import Settings
from twistreg.layout import image_layer_key
from twistreg.registry.images import Images
from twistreg.registry.mirror import UpstreamLayer
from twistreg.storage.interface import StorageUnavailable
from twistreg.web import responses
from twistreg.web.ranges import UNSATISFIABLE, parse_range
from twistreg.web.sendfile import kernel_socket, send_file

log = Logger()


def _layer_headers(request: IRequest, now: float, length: int | None) -> None:
    responses.set_cacheable_headers(request, now, b"application/octet-stream")
    request.setHeader(b"Accept-Ranges", b"bytes")
    if length is not None:
        request.setHeader(b"Content-Length", b"%d" % length)


async def _sending(request: IRequest, transfer: Awaitable[None], image_id: str) -> None:
    """
    Wait for a body being sent; when it breaks off after the headers went out, drop the
    connection so that the client sees a short body instead of an error glued to it.
    """
    try:
        await transfer
    except defer.CancelledError:
        raise
    except StorageUnavailable as failure:
        log.warn("sending layer {image_id} broke off: {why}", image_id=image_id, why=failure)
        request.transport.abortConnection()
    except Exception:
        log.failure("sending layer {image_id} failed", image_id=image_id)
        request.transport.abortConnection()


async def send_layer(
    request: IRequest, images: Images, settings: Settings, image_id: str, size: int,
    now: float, range_header: str | None,
) -> bytes:
    """R3 from step 7 on: X-Accel-Redirect, S3's redirect, then the ranged or whole layer."""
    if settings.nginx_x_accel_redirect and settings.storage == "local":
        _layer_headers(request, now, 0)
        target = f"{settings.nginx_x_accel_redirect}/{image_layer_key(image_id)}"
        request.setHeader(b"X-Accel-Redirect", target.encode())
        return b""
    redirect = images.layer_url(image_id) if settings.storage_redirect else None
    if redirect is not None:
        request.setResponseCode(302)
        request.setHeader(b"Location", redirect.encode())
        request.setHeader(b"Content-Length", b"0")
        return b""
    span = parse_range(range_header, size)
    if span is UNSATISFIABLE:
        request.setResponseCode(416)
        request.setHeader(b"Content-Range", b"bytes */%d" % size)
        request.setHeader(b"Accept-Ranges", b"bytes")
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Length", b"0")
        return b""
    first, last = span if span is not None else (0, size - 1)
    _layer_headers(request, now, last - first + 1)
    if span is not None:
        request.setResponseCode(206)
        request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, size))
    if request.method != b"HEAD" and last >= first:
        await _sending(request, _transfer(request, images, image_id, first, last - first + 1),
                       image_id)
    return b""


async def _transfer(request: IRequest, images: Images, image_id: str, offset: int,
                    length: int) -> None:
    """The kernel sends a local file to a plain connection; anything else streams."""
    socket = kernel_socket(request)
    file = await images.local_layer(image_id) if socket is not None else None
    if socket is not None and file is not None:
        await send_file(request, socket, file, offset, length)
    else:
        await images.stream_layer(image_id, request, offset, length)


async def relay_layer(request: IRequest, upstream: UpstreamLayer, image_id: str,
                      now: float) -> bytes:
    """R3 in mirror mode: upstream's layer, kept once it arrived whole (no Range applied)."""
    _layer_headers(request, now, upstream.size)
    await _sending(request, defer.ensureDeferred(upstream.relay(request)), image_id)
    return b""
