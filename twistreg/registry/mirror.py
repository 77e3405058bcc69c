# -*- test-case-name: tests.test_mirror -*-
"""
Pull-through mirroring (docs/api.md): what is missing here is asked of the upstream
registry; image json, ancestry and layers are kept, tags and lists are passed through.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from treq.client import HTTPClient
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IConsumer, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from zope.interface import implementer

from twistreg.layout import image_layer_key
from twistreg.storage.interface import IStorage, IWriter

log = Logger()

_NOT_FORWARDED = frozenset({
    "host", "location", "connection", "keep-alive", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    "content-length", "range",
})


def forwarded_headers(headers: Mapping[str, str]) -> Headers:
    """
    The client's headers an upstream request carries: not hop-by-hop, Range or If-*, and
    as the bytes the client sent (the web layer decodes them as latin-1).
    """
    forwarded = Headers()
    for name, value in headers.items():
        if name.lower() not in _NOT_FORWARDED and not name.lower().startswith("if-"):
            forwarded.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
    return forwarded


@attrs.frozen
class UpstreamAnswer:
    """A 200 from upstream: its body and headers (names lower-cased)."""

    body: bytes
    headers: Mapping[str, tuple[str, ...]]


class _LayerRelay(protocol.Protocol):
    """
    Passes an upstream layer body to the client and into a storage writer at once.  The
    client's pace drives the upstream connection; the layer is published only when complete.
    """

    def __init__(self, consumer: IConsumer, writer: IWriter, length: int | None) -> None:
        self._consumer = consumer
        self._writer = writer
        self._expected = length
        self._received = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self._consumer.registerProducer(_Relay(self.transport, self._client_gone), True)

    def dataReceived(self, data: bytes) -> None:
        self._received += len(data)
        self._writer.write(data)
        self._consumer.write(data)

    def _client_gone(self) -> None:
        self._writer.abort()
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._consumer.unregisterProducer()
        complete = reason.check(ResponseDone) and (
            self._expected is None or self._received == self._expected
        )
        if self.done.called:
            return
        if complete:
            self._writer.commit().chainDeferred(self.done)
        else:
            self._writer.abort()
            self.done.errback(reason)


@implementer(IPushProducer)
class _Relay:
    """The client connection's flow control, applied to the upstream connection."""

    def __init__(self, upstream, on_stop) -> None:
        self._upstream = upstream
        self._on_stop = on_stop

    def pauseProducing(self) -> None:
        self._upstream.pauseProducing()

    def resumeProducing(self) -> None:
        self._upstream.resumeProducing()

    def stopProducing(self) -> None:
        self._on_stop()


class UpstreamLayer:
    """A layer upstream has: its size when announced, and a way to send and keep it."""

    def __init__(self, response, storage: IStorage, image_id: str) -> None:
        self._response = response
        self._storage = storage
        self._image_id = image_id
        length = response.length
        self.size: int | None = length if isinstance(length, int) else None

    async def relay(self, consumer: IConsumer) -> None:
        """Send the body to C{consumer} while storing it; fails when it ends short."""
        writer = await self._storage.open_writer(image_layer_key(self._image_id))
        relay = _LayerRelay(consumer, writer, self.size)
        self._response.deliverBody(relay)
        await relay.done
        log.info("mirrored layer {image_id}", image_id=self._image_id)


class Mirror:
    """
    The upstream registry of a mirror.

    @param source: C{mirroring.source}; @param source_index: C{mirroring.source_index}, for
        the index calls (R23, R26), else the source.
    @param timeout: seconds to wait for upstream's answer (headers and small bodies).
    """

    def __init__(
        self, source: str, source_index: str | None, http: HTTPClient, clock: IReactorTime,
        storage: IStorage, timeout: float,
    ) -> None:
        self._source = source.rstrip("/")
        self._source_index = (source_index or source).rstrip("/")
        self._http = http
        self._clock = clock
        self._storage = storage
        self._timeout = timeout

    async def _get(self, base: str, path: str, headers: Mapping[str, str], unbuffered: bool):
        """upstream's response when it is a 200, else None (failures are logged)."""
        try:
            response = await self._http.get(
                base + path, headers=forwarded_headers(headers), unbuffered=unbuffered,
                allow_redirects=True,
            ).addTimeout(self._timeout, self._clock)
        except Exception as error:
            log.warn("upstream {url} failed: {error!r}", url=base + path, error=error)
            return None
        if response.code != 200:
            if unbuffered:
                response.deliverBody(_Discard())
            return None
        return response

    async def fetch(
        self, path: str, headers: Mapping[str, str], index: bool = False
    ) -> UpstreamAnswer | None:
        """
        Upstream's 200 answer to C{path} (the request path and query as received), or None.

        @param index: ask C{source_index} (R23, R26) instead of the source.
        """
        base = self._source_index if index else self._source
        response = await self._get(base, path, headers, unbuffered=False)
        if response is None:
            return None
        try:
            body = await response.content().addTimeout(self._timeout, self._clock)
        except Exception as error:
            log.warn("upstream {url} body failed: {error!r}", url=base + path, error=error)
            return None
        answer_headers = {
            name.decode("latin-1").lower(): tuple(v.decode("latin-1") for v in values)
            for name, values in response.headers.getAllRawHeaders()
        }
        return UpstreamAnswer(body, answer_headers)

    async def fetch_and_store(
        self, path: str, headers: Mapping[str, str], key: str
    ) -> UpstreamAnswer | None:
        """L{fetch}, keeping the body under C{key} (image json, ancestry)."""
        answer = await self.fetch(path, headers)
        if answer is not None:
            await self._storage.put_content(key, answer.body)
        return answer

    async def layer(
        self, path: str, headers: Mapping[str, str], image_id: str
    ) -> UpstreamLayer | None:
        """Upstream's layer, ready to be relayed, or None."""
        response = await self._get(self._source, path, headers, unbuffered=True)
        if response is None:
            return None
        return UpstreamLayer(response, self._storage, image_id)


class _Discard(protocol.Protocol):
    """Reads and drops an unwanted body so its connection can be reused or closed."""
