# -*- test-case-name: tests.test_uploads,tests.test_routes_images -*-
"""
Sending layers and blobs: from storage with the Range rules (V1's R3, V2's blob GET), by
sendfile where the kernel can, or relayed from a mirror's upstream while it is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from twistreg.config import Settings
from twistreg.layout import image_layer_key
from twistreg.registry.mirror import UpstreamLayer
from twistreg.storage.interface import (
    ILocalFiles,
    IRedirectable,
    IStorage,
    KeyNotFound,
    StorageUnavailable,
)
from twistreg.web import responses
from twistreg.web.ranges import UNSATISFIABLE, parse_range
from twistreg.web.sendfile import kernel_socket, send_file

log = Logger()


def _layer_headers(request: IRequest, now: float, length: int | None) -> None:
    responses.set_cacheable_headers(request, now, b"application/octet-stream")
    request.setHeader(b"Accept-Ranges", b"bytes")
    if length is not None:
        request.setHeader(b"Content-Length", b"%d" % length)


async def _sending(request: IRequest, transfer: Awaitable[None], what: str) -> None:
    """
    Wait for a body being sent; when it breaks off after the headers went out, drop the
    connection so that the client sees a short body instead of an error glued to it.
    """
    try:
        await transfer
    except defer.CancelledError:
        raise
    except StorageUnavailable as failure:
        log.warn("sending {what} broke off: {why}", what=what, why=failure)
        request.transport.abortConnection()
    except Exception:
        log.failure("sending {what} failed", what=what)
        request.transport.abortConnection()


async def send_layer(
    request: IRequest, storage: IStorage, settings: Settings, image_id: str, size: int,
    now: float, range_header: str | None, key: str | None = None,
) -> bytes:
    """
    R3 from step 7 on: X-Accel-Redirect, S3's redirect, then the ranged or whole layer.

    @param key: where the layer is, when not in the image's directory (a V2 blob).
    """
    key = image_layer_key(image_id) if key is None else key
    if settings.nginx_x_accel_redirect and settings.storage == "local":
        _layer_headers(request, now, 0)
        target = f"{settings.nginx_x_accel_redirect}/{key}"
        request.setHeader(b"X-Accel-Redirect", target.encode())
        return b""
    return await send_stored(
        request, storage, key, size, range_header, settings.storage_redirect,
        lambda length: _layer_headers(request, now, length), f"layer {image_id}")


async def send_stored(
    request: IRequest, storage: IStorage, key: str, size: int, range_header: str | None,
    redirect: bool, set_headers: Callable[[int], None], what: str,
) -> bytes:
    """
    The value of C{key} (C{size} bytes), whole or the one range asked for: a redirect to
    the store itself when asked and it can give one (S3), else sent from here.

    @param set_headers: sets the answer's own headers, given the length of what is sent.
    @param what: names the value in the log, should sending break off.
    """
    if redirect and IRedirectable.providedBy(storage):
        request.setResponseCode(302)
        request.setHeader(b"Location", storage.redirect_url(key).encode())
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
    set_headers(last - first + 1)
    if span is not None:
        request.setResponseCode(206)
        request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, size))
    if request.method != b"HEAD" and last >= first:
        await _sending(request, _transfer(request, storage, key, first, last - first + 1), what)
    return b""


async def _transfer(request: IRequest, storage: IStorage, key: str, offset: int,
                    length: int) -> None:
    """The kernel sends a local file to a plain connection; anything else streams."""
    socket = kernel_socket(request)
    if socket is not None and ILocalFiles.providedBy(storage):
        try:
            file = await storage.open_file(key)
        except KeyNotFound:
            file = None
        if file is not None:
            await send_file(request, socket, file, offset, length)
            return
    await storage.stream(key, request, offset, length)


async def relay_layer(request: IRequest, upstream: UpstreamLayer, image_id: str,
                      now: float) -> bytes:
    """R3 in mirror mode: upstream's layer, kept once it arrived whole (no Range applied)."""
    _layer_headers(request, now, upstream.size)
    await _sending(request, defer.ensureDeferred(upstream.relay(request)), f"layer {image_id}")
    return b""
