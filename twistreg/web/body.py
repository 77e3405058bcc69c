# -*- test-case-name: tests.test_body,tests.test_uploads,tests.test_policies -*-
"""
Request bodies: layers stream into storage as they arrive, everything else is capped, and a
body that will be refused is answered before it is read.

twisted.web buffers a whole body before any resource runs.  For a layer PUT that would mean a
second copy of every byte and a checksum computed after the fact, so the request asks the
Site at C{gotLength} time, from the method and path, whether the route streams its body: if
so the route's policy (authorization first) and checks run and open an upload sink that
hashes and writes as bytes arrive.  Bodies for a hosted WSGI application are spooled as
twisted.web does (in memory below 100 kB, else in a temporary file), of any size.  Other
bodies are kept in memory up to L{BODY_LIMIT}: a larger one gets its 413 at once.
"""

from __future__ import annotations

import io
import re
from inspect import signature
from typing import IO, Any, Callable
from urllib.parse import unquote_to_bytes

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from twistreg.compat import request_line
from twistreg.errors import RegistryError
from twistreg.metrics import uploads_in_flight
from twistreg.registry.images import LayerUpload
from twistreg.web.responses import JSON_HEADERS, json_body, raw_answer, render_json

log = Logger()

#: The largest body accepted by any route but the layer upload.
BODY_LIMIT = 10 * 1024 * 1024

#: Bytes read from the socket at a time while a layer body arrives.
UPLOAD_READ_SIZE = 1024 * 1024




def path_segments(uri: bytes) -> list[bytes]:
    """The path of C{uri} percent-decoded segment by segment, as the Site's C{postpath}."""
    path = uri.split(b"?", 1)[0]
    return [unquote_to_bytes(segment) for segment in path[1:].split(b"/")]


def routed_path(segments: list[bytes]) -> bytes:
    """Path segments (a request's C{postpath}) as the routes see them: joined again, with
    one leading slash."""
    joined = b"/".join(segments)
    return joined if joined.startswith(b"/") else b"/" + joined


def decoded_path(uri: bytes) -> bytes:
    """The path of C{uri} as the routes see it."""
    return routed_path(path_segments(uri))


#: Host headers that are host names at a glance: dot-separated labels of 1 to 63 letters,
#: digits and hyphens, then a port.  Any other is checked as IDNA.
_PLAIN_HOST = re.compile(rb"[a-zA-Z0-9-]{1,63}(?:\.[a-zA-Z0-9-]{1,63})*(?::[0-9]{1,5})?\Z")


def valid_host(request: IRequest) -> bool:
    """Whether the request's host (its C{Host} header's name) can be a host name."""
    host = request.getHeader(b"Host")
    if host is not None and _PLAIN_HOST.match(host):
        return True
    try:
        name = request.getRequestHostname().decode("utf-8")
        name.lower().partition(":")[0].encode("idna")
    except UnicodeError:
        return False
    return True


class CappedBody(io.BytesIO):
    """
    An in-memory body of at most C{limit} bytes; past it, C{overflow} is called once and
    nothing more is kept.
    """

    #: Bytes of the body that arrived, kept or not (the metrics' bytes in).
    received = 0

    def __init__(self, overflow: Callable[[], None], limit: int = BODY_LIMIT) -> None:
        super().__init__()
        self._overflow: Callable[[], None] | None = overflow
        self._limit = limit

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.received += len(data)
        if self._overflow is None:
            return len(data)
        if self.tell() + len(data) > self._limit:
            overflow, self._overflow = self._overflow, None
            self.seek(0)
            self.truncate()
            overflow()
            return len(data)
        return super().write(data)


@attrs.frozen
class EarlyAnswers:
    """
    How one protocol answers a request before routing: the size of the bodies it buffers,
    and its errors as headers and body (V1's C{{"error": ...}}, V2's C{{"errors": [...]}}).
    """

    body_limit: int
    too_large: Callable[[], RegistryError]
    unexpected: Callable[[], RegistryError]
    render: Callable[[RegistryError], tuple[dict[str, str], bytes]]


V1_EARLY_ANSWERS = EarlyAnswers(
    BODY_LIMIT,
    lambda: RegistryError(413, "Request body too large"),
    lambda: RegistryError(500, "Internal server error"),
    lambda error: ({**JSON_HEADERS, **error.headers}, render_json({"error": error.message})),
)


class _Discarded:
    """The rest of a body that was answered before it arrived: read and dropped."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""


class UploadBody:
    """
    A body streaming into a sink: a V1 L{LayerUpload}, a V2 blob or chunk (anything with
    C{write}, C{commit} and C{abort}).

    The sink is opened (authorization, the route's checks, then a storage writer) while the
    body starts to arrive; bytes that come before it is ready are held and the connection
    paused.  When opening or storing fails, C{refuse} is told: it answers at once when the
    body is still arriving (and returns True); otherwise L{commit} raises the error.
    """

    def __init__(self, opening: defer.Deferred[LayerUpload], pause: Callable[[], None],
                 resume: Callable[[], None], refuse: Callable[[Failure], bool]) -> None:
        self._pause = pause
        self._resume = resume
        self._refuse = refuse
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
        if self._failure is not None:
            return
        self._failure = failure
        self._held = []
        if self._refuse(failure):
            # Answered already: nobody will ask for the error again.
            self._failure = Failure(defer.CancelledError())
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

    async def commit(self) -> Any:
        """The body is complete: publish it, or raise why it cannot be; what the sink's
        commit gives (a V2 chunk: the session's new size)."""
        if self._upload is None and self._failure is None:
            self._waiting.append(defer.Deferred())
            await self._waiting[-1]
        if self._failure is not None:
            self._failure.raiseException()
        assert self._upload is not None
        self._done = True
        return await self._upload.commit()

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


async def store_buffered(sink: Any, body: IO[bytes]) -> Any:
    """
    Copy a body that twisted.web buffered whole into C{sink} (a layer or blob upload),
    then commit it and return what the commit gives: the way in when the Site is not
    twistreg's (an embedding application's own tree).
    """
    try:
        body.seek(0)
        while True:
            data = body.read(UPLOAD_READ_SIZE)
            if not data:
                break
            waiting = sink.write(data)
            if waiting is not None:
                await waiting
    except BaseException:
        sink.abort()
        raise
    return await sink.commit()


#: Twisted 24.7 and later let a request leave POST form bodies alone.
_FORM_PARSING_OPTIONAL = "parsePOSTFormSubmission" in signature(server.Request.__init__).parameters


#: Seconds a connection answered before its body arrived keeps reading (and dropping) what
#: the client still sends, so that the client reads the answer rather than a reset.
LINGER_SECONDS = 5.0


def origin_form(target: bytes) -> tuple[bytes, bytes | None]:
    """
    The path and query of a request target, and the host of an absolute-form one
    (C{http://host/path}, RFC 9112 §3.2.2), else None.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target, None
    host, slash, path = rest.partition(b"/")
    host, question, query = host.partition(b"?")
    return b"/" + path + (b"?" + query if question else b""), host


class RegistryRequest(server.Request):
    """
    A Request whose streamed bodies go to storage and other bodies are capped; a body that
    is refused (not authorized, too large, failing the route's checks) is answered before it
    is read, and its connection closed.
    """

    def __init__(self, *args, **kwargs) -> None:
        # Bodies are read whatever their Content-Type (a form-typed JSON body is still JSON).
        if _FORM_PARSING_OPTIONAL:
            kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)
        self._received = False
        self._answered = False
        self._lingering: IDelayedCall | None = None
        self._connection_lost = False
        self._answers = V1_EARLY_ANSWERS

    def gotLength(self, length: int | None) -> None:
        site = self.channel.site
        method, target, _ = request_line(self.channel)
        target = origin_form(target or b"/")[0]
        answers_for = getattr(site, "early_answers", None)
        self._answers = V1_EARLY_ANSWERS if answers_for is None else answers_for(target)
        prefix: tuple[bytes, ...] | None = getattr(site, "wsgi_prefix", None)
        if prefix is not None and tuple(path_segments(target)[: len(prefix)]) == prefix:
            # The hosted WSGI application's body: spooled by twisted.web, of any size.
            super().gotLength(length)
            return
        opening = None
        if method in getattr(site, "upload_methods", ()):
            authorization = self.requestHeaders.getRawHeaders(b"Authorization", [None])[0]
            opening = site.open_upload(
                self, method, target,
                None if authorization is None else authorization.decode("latin-1"))
        if opening is not None:
            transport = self.channel.transport
            # Larger reads for a layer body: fewer trips through the reactor, hash and disk.
            transport.bufferSize = max(getattr(transport, "bufferSize", 0), UPLOAD_READ_SIZE)
            self.content = UploadBody(opening, transport.pauseProducing,
                                      transport.resumeProducing, self._refuse)
            if getattr(site, "metrics", None) is not None:
                self._count_upload(b"v2" if target.startswith(b"/v2/") else b"v1")
        else:
            limit, too_large = self._answers.body_limit, self._answers.too_large
            if length is not None and length > limit:
                self._answer_early(too_large())
            else:
                self.content = CappedBody(lambda: self._answer_early(too_large()), limit)

    def _count_upload(self, protocol: bytes) -> None:
        """In flight from now until the request ends, whichever way (its connection lost)."""
        gauge = uploads_in_flight(protocol.decode("ascii"))
        gauge.inc()
        self.notifyFinish().addBoth(lambda _: gauge.dec())

    def _refuse(self, failure: Failure) -> bool:
        """
        A streamed body cannot be stored: answer now if it is still arriving.

        @return: whether the answer went out (else the route, already running, raises).
        """
        if self._received:
            return False
        if failure.check(RegistryError):
            error = failure.value
        else:
            log.failure("opening an upload failed", failure)
            error = self._answers.unexpected()
        self._answer_early(error)
        return True

    @property
    def answered_early(self) -> bool:
        """Whether this request was answered before its body arrived."""
        return self._answered

    def _answer_early(self, error: RegistryError) -> None:
        """
        Answer C{error} before the body was read, then close the connection: what the
        client still sends is dropped for at most L{LINGER_SECONDS}.
        """
        if self._answered:
            return
        self._answered = True
        self.content = _Discarded()
        channel = self.channel
        channel.persistent = False
        # No "100 Continue" after the answer: the client must not send the body.
        self.requestHeaders.removeHeader(b"Expect")
        self.method, path, self.clientproto = request_line(channel)
        self.uri = path or b"/"
        self.code = error.status
        headers, body = self._answers.render(error)
        answer = raw_answer(error.status, headers, body, with_body=self.method != b"HEAD")
        self.sentLength = len(answer) - answer.index(b"\r\n\r\n") - 4
        channel.transport.write(answer)
        channel.transport.resumeProducing()
        self._lingering = channel.callLater(LINGER_SECONDS, channel.loseConnection)
        site = getattr(channel, "site", None)
        if site is not None:
            site.log(self)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._answered:
            # The answer went out before the body: only the connection is left to close.
            self._stop_lingering()
            self.channel.loseConnection()
            return
        self._received = True
        if not path.startswith(b"/"):
            path, host = origin_form(path)
            if host is not None:
                # The target's host replaces the Host header (RFC 9112 §3.2.2).
                self.requestHeaders.setRawHeaders(b"Host", [host])
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        self._connection_lost = True
        self._stop_lingering()
        super().connectionLost(reason)

    def _stop_lingering(self) -> None:
        if self._lingering is not None and self._lingering.active():
            self._lingering.cancel()
        self._lingering = None

    def process(self) -> None:
        if self.path == b"*" and self.method != b"OPTIONS":
            # twisted.web answers C{*} itself, with an empty 405.
            self.setHeader(b"Allow", b"OPTIONS")
            body = json_body(self, {"error": "Method not allowed"}, 405)
            self.write(b"" if self.method == b"HEAD" else body)
            self.finish()
            return
        super().process()

    def processingFailed(self, reason: Failure) -> None:
        """What escaped every handler: logged, and a JSON 500 (twisted.web's is HTML)."""
        log.failure("unexpected error on {method} {uri}", reason, method=self.method,
                    uri=self.uri)
        if self.finished or self._connection_lost:
            return
        if self.startedWriting:
            # Part of the answer went out: the client must see it cut short.
            self.channel.transport.abortConnection()
            return
        self.responseHeaders = Headers()
        body = json_body(self, {"error": "Internal server error"}, 500)
        self.write(b"" if self.method == b"HEAD" else body)
        self.finish()

    def getRequestHostname(self) -> bytes:
        """The Host header's name; UNIX sockets have no address to fall back on."""
        if self.getHeader(b"Host") is None and not hasattr(self.getHost(), "host"):
            return b"localhost"
        return super().getRequestHostname()
