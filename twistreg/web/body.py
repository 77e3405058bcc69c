# -*- test-case-name: tests.test_body -*-
"""
Request bodies: layers stream into storage as they arrive, everything else is capped.

twisted.web buffers a whole body before any resource runs.  For a layer PUT that would mean a
second copy of every byte and a checksum computed after the fact, so the request decides at
C{gotLength} time, from the method and path, to hand the body to an upload sink that hashes
and writes as bytes arrive.  Bodies for a hosted WSGI application are spooled as twisted.web
does (in memory below 100 kB, else in a temporary file), of any size.  Other bodies are kept in
memory up to L{BODY_LIMIT}.
"""

from __future__ import annotations

import io
import re
from inspect import signature
from typing import IO, Callable, Optional
from urllib.parse import unquote_to_bytes

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server

from twistreg.registry.images import LayerUpload

log = Logger()

#: The largest body accepted by any route but the layer upload.
BODY_LIMIT = 10 * 1024 * 1024

#: Bytes read from the socket at a time while a layer body arrives.
UPLOAD_READ_SIZE = 1024 * 1024

_LAYER_PATH = re.compile(rb"/v1/images/([^/]+)/layer")

#: Opens the sink of a layer upload, given the image id from the path and the request's
#: C{Authorization} header.
UploadOpener = Callable[[str, Optional[str]], "defer.Deferred[LayerUpload]"]


def path_segments(uri: bytes) -> list[bytes]:
    """The path of C{uri} percent-decoded segment by segment, as the Site's C{postpath}."""
    path = uri.split(b"?", 1)[0]
    return [unquote_to_bytes(segment) for segment in path[1:].split(b"/")]


def decoded_path(uri: bytes) -> bytes:
    """The path of C{uri} as the Klein routes see it: L{path_segments} joined again, with one
    leading slash."""
    joined = b"/".join(path_segments(uri))
    return joined if joined.startswith(b"/") else b"/" + joined


class CappedBody(io.BytesIO):
    """An in-memory body that stops storing past L{BODY_LIMIT} and remembers it did."""

    def __init__(self, announced: int | None) -> None:
        super().__init__()
        self.too_large = announced is not None and announced > BODY_LIMIT

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.too_large or self.tell() + len(data) > BODY_LIMIT:
            self.too_large = True
            return len(data)
        return super().write(data)


class UploadBody:
    """
    A layer body streaming into a L{LayerUpload}.

    The sink is opened (checks, then a storage writer) while the body starts to arrive; bytes
    that come before it is ready are held and the connection paused.  When opening failed the
    rest of the body is read and dropped, and L{result} gives the route that error.
    """

    def __init__(self, opening: defer.Deferred[LayerUpload], pause: Callable[[], None],
                 resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._upload: LayerUpload | None = None
        self._failure: Failure | None = None
        self._held: list[bytes] = []
        self._paused = False
        self._done = False
        self._waiting: list[defer.Deferred[None]] = []
        self.received = 0
        opening.addCallbacks(self._opened, self._failed)

    def _opened(self, upload: LayerUpload) -> None:
        if self._done:
            upload.abort()
            return
        self._upload = upload
        held, self._held = self._held, []
        for data in held:
            self._feed(data)
        self._settled()

    def _failed(self, failure: Failure) -> None:
        self._failure = failure
        self._held = []
        self._settled()

    def _settled(self) -> None:
        """Opening is over, one way or the other: let the body and L{commit} go on."""
        self._unpause()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _unpause(self) -> None:
        if self._paused:
            self._paused = False
            self._resume()

    def _feed(self, data: bytes) -> None:
        assert self._upload is not None
        try:
            waiting = self._upload.write(data)
        except Exception:
            self._failed(Failure())
            self._upload.abort()
            return
        if waiting is not None:
            self._pause_until(waiting)

    def _pause_until(self, waiting: defer.Deferred[None]) -> None:
        if not self._paused:
            self._paused = True
            self._pause()
        waiting.addCallbacks(lambda _: self._unpause(), self._failed)

    def write(self, data: bytes) -> None:
        """One piece of the body, from the channel."""
        self.received += len(data)
        if self._failure is not None:
            return
        if self._upload is None:
            self._held.append(data)
            if not self._paused:
                self._paused = True
                self._pause()
            return
        self._feed(data)

    async def commit(self) -> None:
        """The body is complete: publish the layer, or raise why it cannot be."""
        if self._upload is None and self._failure is None:
            self._waiting.append(defer.Deferred())
            await self._waiting[-1]
        if self._failure is not None:
            self._failure.raiseException()
        assert self._upload is not None
        self._done = True
        await self._upload.commit()

    def close(self) -> None:
        """The request is over; anything not committed is thrown away."""
        if not self._done:
            self._done = True
            if self._upload is not None:
                self._upload.abort()

    # twisted.web's Request treats the body as a file: these keep it content.
    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.received

    def read(self, size: int = -1) -> bytes:
        return b""


async def store_buffered_layer(upload: LayerUpload, body: IO[bytes]) -> None:
    """
    Copy a layer body that twisted.web buffered whole into C{upload}, then commit it: the
    way in when the Site is not twistreg's (an embedding application's own tree).
    """
    try:
        body.seek(0)
        while True:
            data = body.read(UPLOAD_READ_SIZE)
            if not data:
                break
            waiting = upload.write(data)
            if waiting is not None:
                await waiting
    except BaseException:
        upload.abort()
        raise
    await upload.commit()


#: Twisted 24.7 and later let a request leave POST form bodies alone.
_FORM_PARSING_OPTIONAL = "parsePOSTFormSubmission" in signature(server.Request.__init__).parameters


class RegistryRequest(server.Request):
    """A Request whose layer bodies stream to storage and other bodies are capped."""

    def __init__(self, *args, **kwargs) -> None:
        # Bodies are read whatever their Content-Type (a form-typed JSON body is still JSON).
        if _FORM_PARSING_OPTIONAL:
            kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)

    def gotLength(self, length: int | None) -> None:
        if self._for_wsgi():
            super().gotLength(length)
            return
        opener: UploadOpener | None = getattr(self.channel.site, "open_upload", None)
        image_id = self._layer_upload_id()
        if opener is None or image_id is None:
            self.content = CappedBody(length)
            return
        transport = self.channel.transport
        # Larger reads for a layer body: fewer trips through the reactor, hash and disk.
        transport.bufferSize = max(getattr(transport, "bufferSize", 0), UPLOAD_READ_SIZE)
        self.content = UploadBody(
            defer.maybeDeferred(opener, image_id, self._first_header(b"Authorization")),
            transport.pauseProducing,
            transport.resumeProducing,
        )

    def _for_wsgi(self) -> bool:
        """Whether the path is under the Site's WSGI mount (its C{wsgi_prefix} segments)."""
        prefix: tuple[bytes, ...] | None = getattr(self.channel.site, "wsgi_prefix", None)
        if prefix is None:
            return False
        uri = getattr(self.channel, "_path", None) or b"/"
        return tuple(path_segments(uri)[: len(prefix)]) == prefix

    def _layer_upload_id(self) -> str | None:
        """The image id when this is C{PUT /v1/images/<id>/layer}, from the channel's state."""
        # The method and path are only kept on the channel until the body is complete.
        command = getattr(self.channel, "_command", None)
        uri = getattr(self.channel, "_path", None)
        if command != b"PUT" or uri is None:
            return None
        match = _LAYER_PATH.fullmatch(decoded_path(uri))
        if match is None:
            return None
        return match.group(1).decode("utf-8", "replace")

    def _first_header(self, name: bytes) -> str | None:
        values = self.requestHeaders.getRawHeaders(name)
        return None if not values else values[0].decode("latin-1")

    def getRequestHostname(self) -> bytes:
        """The Host header's name; UNIX sockets have no address to fall back on."""
        if self.getHeader(b"Host") is None and not hasattr(self.getHost(), "host"):
            return b"localhost"
        return super().getRequestHostname()

    @property
    def body_too_large(self) -> bool:
        """Whether a capped body went over L{BODY_LIMIT}."""
        return isinstance(self.content, CappedBody) and self.content.too_large
