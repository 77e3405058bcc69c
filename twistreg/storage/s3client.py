# -*- test-case-name: tests.test_storage_s3 -*-
"""
Talking to an S3-compatible store: URLs, botocore's SigV4 signer, treq over a persistent
connection pool, time limits and retries.

Nothing here blocks the reactor except L{S3Client.call_blocking}, which the start-up checks
use before (or outside) the reactor.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode
from xml.etree import ElementTree

import attrs
from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from treq.client import HTTPClient
from twisted.internet import defer, error, task
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from twistreg.config import ConfigError, S3Settings
from twistreg.logs import Occasional
from twistreg.storage.interface import KeyNotFound, StorageUnavailable

log = Logger()

# Reads are tried this many times in all, after these pauses: a refused or reset connection
# gets its 503 well within 5 s.
_READ_ATTEMPTS = 3
_BACKOFF = (0.1, 0.5)
# S3 closes idle connections after about 20 s; reusing one it closed fails a PUT.
_IDLE_CONNECTION_SECONDS = 15
_CONNECTIONS_PER_HOST = 16


@attrs.frozen
class S3Response:
    """A whole (small) answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def xml_elements(body: bytes, name: str) -> list[ElementTree.Element]:
    """Every element called C{name} in an S3 XML answer, whatever its namespace."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise StorageUnavailable("S3 sent XML that does not parse") from None
    return [element for element in root.iter() if element.tag.rsplit("}", 1)[-1] == name]


def xml_text(element: ElementTree.Element, name: str) -> str | None:
    """The text of C{element}'s first child called C{name}."""
    for child in element:
        if child.tag.rsplit("}", 1)[-1] == name:
            return child.text or ""
    return None


def _error_of(body: bytes) -> tuple[str, str]:
    """The C{<Code>} and C{<Message>} of an S3 error answer, empty when it has none."""
    if body.lstrip().startswith(b"<"):
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            return "", ""
        return xml_text(root, "Code") or "", xml_text(root, "Message") or ""
    return "", ""


class _Signer(S3SigV4Auth):
    """SigV4 with a payload hash given by the caller (bodies that stream are not hashed)."""

    def __init__(self, credentials: Credentials, region: str, payload_hash: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


class Watchdog:
    """
    Fails a transfer when no byte moved for C{timeout} seconds; paused while the other end
    of the transfer is the slow one (our client, not S3).
    """

    def __init__(self, clock: IReactorTime, timeout: float, expire) -> None:
        self._clock = clock
        self._timeout = timeout
        self._expire = expire
        self._last = clock.seconds()
        self._call: IDelayedCall | None = clock.callLater(timeout, self._check)

    def kick(self) -> None:
        """Bytes moved."""
        self._last = self._clock.seconds()

    def pause(self) -> None:
        self.stop()

    def resume(self) -> None:
        if self._call is None:
            self._last = self._clock.seconds()
            self._call = self._clock.callLater(self._timeout, self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        idle = self._clock.seconds() - self._last
        if idle >= self._timeout:
            self._call = None
            self._expire()
        else:
            self._call = self._clock.callLater(self._timeout - idle, self._check)


@implementer(IBodyProducer)
class _ChunksProducer:
    """
    A request body sent a chunk at a time, as the connection takes them: a silent store is
    noticed while the body is sent, and a part goes out as the pieces it arrived in, never
    joined into one more copy.
    """

    def __init__(self, chunks: Sequence[bytes], watchdog: Watchdog) -> None:
        self._chunks = chunks
        self.length = sum(len(chunk) for chunk in chunks)
        self._next = 0
        self._watchdog = watchdog
        self._paused = False
        self._consumer: IConsumer | None = None
        self._done: defer.Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        self._consumer = consumer
        self._done = defer.Deferred()
        self._send()
        return self._done

    def _send(self) -> None:
        assert self._done is not None
        while not self._paused and self._next < len(self._chunks):
            assert self._consumer is not None
            chunk = self._chunks[self._next]
            self._next += 1
            self._watchdog.kick()
            self._consumer.write(chunk)
        if self._next >= len(self._chunks) and not self._done.called:
            self._release()
            self._done.callback(None)

    def _release(self) -> None:
        """Let go of the body and the connection: the connection refers back to this
        producer, and the cycle would keep a part alive until the garbage collector ran."""
        self._chunks = ()
        self._next = 0
        self._consumer = None

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._done is not None and not self._done.called:
            self._send()

    def stopProducing(self) -> None:
        self._release()
        if self._done is not None and not self._done.called:
            self._done.errback(defer.CancelledError())


class _Collect(Protocol):
    """Gathers a (small) body; a store silent for the timeout fails it."""

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self._watchdog = Watchdog(clock, timeout, self._silent)
        self._timeout = timeout
        self._chunks: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._watchdog.kick()
        self._chunks.append(data)

    def _silent(self) -> None:
        self.done.errback(silent_store(self._timeout))
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._watchdog.stop()
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(StorageUnavailable(
                f"S3 answer broke off: {_reason(reason)}"))


def silent_store(timeout: float) -> StorageUnavailable:
    return StorageUnavailable(f"S3 sent nothing for {timeout:g} s", timed_out=True)


@implementer(IPushProducer)
class BodyPipe(Protocol):
    """
    Writes a response body to a consumer as it arrives, pausing the store's connection while
    the consumer is full (back-pressure both ways) and stopping it when the consumer goes.

    @ivar done: fires once C{length} bytes were written; fails on a short body, a store
        silent for C{timeout} seconds while the consumer wanted more, or a consumer that
        stopped.
    """

    def __init__(self, consumer: IConsumer, length: int, clock: IReactorTime,
                 timeout: float) -> None:
        self._consumer = consumer
        self._remaining = length
        self._timeout = timeout
        self._watchdog = Watchdog(clock, timeout, self._silent)
        self.done: defer.Deferred[None] = defer.Deferred(lambda _: self.stopProducing())

    def connectionMade(self) -> None:
        self._consumer.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self._watchdog.kick()
        if len(data) > self._remaining:
            data = data[:self._remaining]
        self._remaining -= len(data)
        if data and not self.done.called:
            self._consumer.write(data)

    def _fail(self, error: Exception) -> None:
        self._watchdog.stop()
        if not self.done.called:
            self._consumer.unregisterProducer()
            self.done.errback(error)

    def _silent(self) -> None:
        self._fail(silent_store(self._timeout))
        self.transport.stopProducing()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._watchdog.stop()
        if self.done.called:
            return
        if self._remaining == 0 and reason.check(ResponseDone, PotentialDataLoss):
            self._consumer.unregisterProducer()
            self.done.callback(None)
        else:
            self._fail(StorageUnavailable(
                f"S3 body ended {self._remaining} bytes short: {_reason(reason)}"))

    def pauseProducing(self) -> None:
        self._watchdog.pause()
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._watchdog.resume()
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The consumer went away (client disconnect) or the caller cancelled."""
        if not self.done.called:
            self._fail(defer.CancelledError())
            self.transport.stopProducing()


class Discard(Protocol):
    """Reads and drops a body nobody wants."""

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        pass


def _credentials(settings: S3Settings) -> Credentials:
    if settings.access_key is not None or settings.secret_key is not None:
        return Credentials(settings.access_key or "", settings.secret_key or "")
    # The usual chain (environment, ~/.aws, instance metadata), asked once at start. Imported
    # here: botocore's session brings its whole client machinery (8 MiB in every worker).
    from botocore.session import get_session

    found = get_session().get_credentials()
    if found is None:
        raise ConfigError(
            "S3 has no credentials: set s3_access_key and s3_secret_key, or provide AWS"
            " credentials in the environment")
    return found


class S3Client:
    """
    Signed requests to one bucket, with the key prefix applied.

    @param clock: the reactor: it runs the connections and the time limits.
    """

    def __init__(self, settings: S3Settings, reactor) -> None:
        self.settings = settings
        self.bucket = settings.bucket or ""
        self._clock: IReactorTime = reactor
        self._complaints = Occasional(reactor)
        self._credentials = _credentials(settings)
        scheme = "https" if settings.secure else "http"
        host = settings.host or (
            "s3.amazonaws.com" if settings.region == "us-east-1"
            else f"s3.{settings.region}.amazonaws.com")
        port = f":{settings.port}" if settings.port else ""
        if settings.path_style:
            self.endpoint = f"{scheme}://{host}{port}"
            self._base = f"{self.endpoint}/{quote(self.bucket)}"
        else:
            self.endpoint = f"{scheme}://{self.bucket}.{host}{port}"
            self._base = self.endpoint
        self._prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = _CONNECTIONS_PER_HOST
        pool.cachedConnectionTimeout = _IDLE_CONNECTION_SECONDS
        self._pool = pool
        self._http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=settings.timeout))

    @property
    def prefix(self) -> str:
        """The key prefix, with its trailing C{/} (empty for none)."""
        return self._prefix

    def object_key(self, key: str) -> str:
        """The object key of a storage key."""
        return self._prefix + key

    def url(self, object_key: str = "", query: Mapping[str, str] | None = None) -> str:
        url = f"{self._base}/{quote(object_key, safe='/~')}"
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="~")
        return url

    def _signed_headers(self, method: str, url: str, headers: Mapping[str, str],
                        payload_hash: str) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        credentials = self._credentials.get_frozen_credentials()
        _Signer(credentials, self.settings.region, payload_hash).add_auth(request)
        return dict(request.headers.items())

    def presign(self, object_key: str, expires: float) -> str:
        """A GET URL for C{object_key} that works without credentials for C{expires} s."""
        request = AWSRequest(method="GET", url=self.url(object_key))
        credentials = self._credentials.get_frozen_credentials()
        S3SigV4QueryAuth(credentials, "s3", self.settings.region,
                         expires=int(expires)).add_auth(request)
        return request.url

    def close(self) -> defer.Deferred[None]:
        """Close the idle connections (a stopping worker, a test)."""
        return self._pool.closeCachedConnections()

    async def call(self, method: str, object_key: str = "", *,
                   expect: tuple[int, ...] = (200,), **request: Any) -> S3Response:
        """
        One request, its whole answer read. Reads, deletes and PUTs (of bytes still at hand:
        the same request again) are retried on a refused or reset connection and on 5xx; a
        store that went silent is not asked again.

        @param request: what L{open} takes beside the method and key.
        @raise KeyNotFound: 404 (no such key) where C{expect} does not list it.
        @raise StorageUnavailable: S3 unreachable, silent, or answering another status
            C{expect} does not list (5xx, a refused signature, no such bucket...).
        """
        retry = method in ("GET", "HEAD", "DELETE", "PUT")
        attempts = _READ_ATTEMPTS if retry else 1
        for attempt in range(attempts):
            try:
                response = await self._once(method, object_key, request)
            except StorageUnavailable as failure:
                if attempt + 1 == attempts or failure.timed_out:
                    raise self._unavailable(failure.reason, failure.timed_out) from None
                log.debug("S3 {method} retried: {why}", method=method, why=failure.reason)
            else:
                if response.status in expect:
                    return response
                if response.status >= 500 and attempt + 1 < attempts:
                    log.debug("S3 {method} retried after {status}", method=method,
                              status=response.status)
                elif response.status == 404 and method == "HEAD":
                    raise KeyNotFound(object_key)
                else:
                    code, message = _error_of(response.body)
                    if response.status == 404 and code in ("NoSuchKey", ""):
                        raise KeyNotFound(object_key)
                    raise self._unavailable(
                        f"S3 answered {response.status} {code} to {method} {object_key}:"
                        f" {message}")
            await self._sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
        raise AssertionError("unreachable")

    def _unavailable(self, reason: str, timed_out: bool = False) -> StorageUnavailable:
        """What a request gets when S3 fails it, with a warning now and then."""
        self._complaints.warn(log, "S3 at {endpoint} unavailable: {reason}",
                              endpoint=self.endpoint, reason=reason)
        return StorageUnavailable(reason, timed_out=timed_out)

    def _sleep(self, seconds: float) -> defer.Deferred[None]:
        return task.deferLater(self._clock, seconds, lambda: None)

    async def _once(self, method: str, object_key: str,
                    request: Mapping[str, Any]) -> S3Response:
        response = await self.open(method, object_key, **request)
        collect = _Collect(self._clock, self.settings.timeout)
        response.deliverBody(collect)
        return S3Response(response.code, _headers(response), await collect.done)

    async def open(
        self,
        method: str,
        object_key: str = "",
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | Sequence[bytes] | None = None,
        sign_body: bool = True,
    ) -> IResponse:
        """
        Send one request and wait for the status line and headers; the body is the
        caller's to read (see L{BodyPipe}, L{Watchdog}).

        @param body: bytes, or the pieces of a body sent one after the other.
        @param sign_body: hash the body into the signature; layer bodies go unsigned (their
            hash would cost the reactor time, and twistreg checks its own checksums).
        @raise StorageUnavailable: S3 unreachable or silent for the timeout.
        """
        url = self.url(object_key, query)
        chunks = [body] if isinstance(body, bytes) else body
        payload_hash = UNSIGNED_PAYLOAD
        if chunks is None or sign_body:
            hashed = hashlib.sha256()
            for chunk in chunks or ():
                hashed.update(chunk)
            payload_hash = hashed.hexdigest()
        sending = dict(headers or {})
        signed = self._signed_headers(method, url, sending, payload_hash)
        requesting: defer.Deferred[IResponse]

        def expire() -> None:
            timed_out[0] = True
            requesting.cancel()

        timed_out = [False]
        watchdog = Watchdog(self._clock, self.settings.timeout, expire)
        producer = None if chunks is None else _ChunksProducer(chunks, watchdog)
        # unbuffered: the caller reads the body as it arrives (treq would gather it first,
        # whatever pauses the reader asks for).
        requesting = self._http.request(
            method, url, headers={name: [value] for name, value in signed.items()},
            data=producer, unbuffered=True)
        try:
            return await requesting
        except Exception as failure:
            if timed_out[0]:
                raise self._unavailable(silent_store(self.settings.timeout).reason,
                                        timed_out=True) from None
            raise self._unavailable(f"{method} {object_key}: {_reason(failure)}") from None
        finally:
            watchdog.stop()

    def call_blocking(self, method: str, object_key: str = "", *,
                      query: Mapping[str, str] | None = None, body: bytes = b"") -> int:
        """
        One request without the reactor, for start-up checks; the status code.

        @raise ConfigError: S3 cannot be reached (one line naming the endpoint).
        """
        url = self.url(object_key, query)
        signed = self._signed_headers(method, url, {}, hashlib.sha256(body).hexdigest())
        request = urllib.request.Request(url, data=body or None, headers=signed, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as failure:
            failure.close()
            return failure.code
        except (OSError, urllib.error.URLError) as failure:
            reason = getattr(failure, "reason", failure)
            raise ConfigError(f"cannot reach S3 at {self.endpoint}: {reason}") from None


def _headers(response: IResponse) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in response.headers.getAllRawHeaders()
    }


def _reason(failure: Any) -> str:
    if isinstance(failure, Failure):
        failure = failure.value
    inner = getattr(failure, "reasons", None)
    if inner:
        return "; ".join(_reason(reason) for reason in inner)
    if isinstance(failure, error.ConnectionRefusedError):
        return "connection refused"
    return str(failure) or type(failure).__name__


def content_length(response: S3Response) -> int:
    """The size a HEAD answer announces."""
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        raise StorageUnavailable("S3 answered a HEAD without a Content-Length") from None
