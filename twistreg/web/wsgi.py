# -*- test-case-name: tests.test_wsgi -*-
"""
Hosting a WSGI application (PEP 3333) in the registry's processes: at the root of the site,
or under a path prefix beside the registry routes.

twisted.web's own C{WSGIResource} has the right shape (the application runs in a thread pool,
the reactor does all the I/O) but three faults that matter here: a write from the application
returns once the reactor has I{queued} the bytes, so an application producing faster than its
client reads fills the server's memory; its environ gives chunked bodies no length and no
C{wsgi.input_terminated}, so Werkzeug reads them as empty; and it knows nothing of proxies.
This container keeps the shape and fixes those three, with public Twisted APIs only.
"""

from __future__ import annotations

import io
import ipaddress
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from twistreg.config import DEFAULT_WSGI_THREADS, load_application
from twistreg.web.threads import CallThreads

log = Logger()

WSGIApplication = Callable[[dict, Callable], Iterable[bytes]]

#: Bytes an application may have written that the reactor has not taken yet; past this (or
#: while the connection's send buffer is full) its next write waits.
WINDOW = 1 << 20

_ERROR_BODY = b"Internal Server Error\n"


WSGI_APPLICATION = "WSGI application"
"""What L{twistreg.config.load_application} and C{find_application} call it in their messages."""


def load_wsgi_application(name: str) -> WSGIApplication:
    """
    The WSGI callable C{module:attribute} names (C{module} alone: its C{application}).

    @raise twistreg.config.ConfigError: one line saying why it cannot be loaded.
    """
    return load_application(name, WSGI_APPLICATION, default="application")


def mount_prefix(path: str) -> tuple[bytes, ...]:
    """The path segments of a mount point (C{/ui} gives C{(b"ui",)}, C{/} none), as C{postpath}
    holds them."""
    return tuple(segment.encode("utf-8") for segment in path.split("/") if segment)


class TrustedProxies:
    """
    The peers whose C{X-Forwarded-For} and C{X-Forwarded-Proto} are believed.

    @param entries: normalised addresses and networks, C{unix} (peers on a UNIX socket) and
        C{*} (every peer), as L{twistreg.config.ServerSettings.trusted_proxies} holds them.
    """

    def __init__(self, entries: Sequence[str]) -> None:
        self._any = "*" in entries
        self._unix = "unix" in entries
        self._networks = [ipaddress.ip_network(e) for e in entries if e not in ("*", "unix")]

    def trusts(self, host: str | None) -> bool:
        """Whether the peer at C{host} (C{None}: a UNIX socket) is a trusted proxy."""
        if self._any:
            return True
        if host is None:
            return self._unix
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """
        The client's address: the nearest hop of C{X-Forwarded-For} that is not itself a
        trusted proxy (earlier hops could be forged by the client). A hop that is not an
        address ends the walk at the last trusted one.
        """
        client = peer
        for hop in reversed([h.strip() for value in forwarded_for for h in value.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            client = hop
            if not self.trusts(hop):
                break
        return client


class _ClientGone(Exception):
    """The response cannot be sent any more: the client left, or the server is stopping."""


class _ReactorCalls:
    """
    Calls from the application's threads for the reactor to run, in order. One wake-up of
    the reactor runs all the calls waiting, so that responses written and ended while it was
    busy do not each cost it a wake-up (a system call).
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self._lock = threading.Lock()
        self._calls: list[tuple[Callable[..., None], tuple]] = []

    def post(self, call: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._calls.append((call, args))
            if len(self._calls) > 1:
                return
        self._reactor.callFromThread(self._run)

    def _run(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for call, args in calls:
            call(*args)


class _ErrorStream:
    """C{wsgi.errors}: each write becomes one error event in the server's log."""

    def write(self, text: str) -> None:
        text = text.rstrip("\n")
        if text:
            log.error("{wsgi_error}", wsgi_error=text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


_ERRORS = _ErrorStream()


@implementer(IPushProducer)
class _Response:
    """
    One call of the application. C{start_response}, C{write} and L{run} run in its thread;
    the rest in the reactor, which is the only one to touch the request. As the request's
    producer it learns when the send buffer is full, and then holds the application's writes.
    """

    def __init__(self, calls: _ReactorCalls, request: IRequest, environ: dict[str, Any],
                 on_done: Callable[[_Response], object]) -> None:
        self._post = calls.post
        self._request = request
        self.environ = environ
        self._on_done = on_done
        # Set in the application's thread only.
        self._head: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
        self._head_sent = False
        # Shared with the reactor, under the condition's lock.
        self._ready = threading.Condition(threading.Lock())
        self._paused = False
        self._queued = 0
        self._gone = False
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(self._finished)

    # -- in the application's thread -------------------------------------------------------------

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None:
            if self._head_sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self._head is not None:
            raise RuntimeError("start_response() called twice without exc_info")
        if not isinstance(status, str) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in headers
        ):
            raise TypeError("start_response() takes a str status and (str, str) headers")
        code, _, reason = status.partition(" ")
        self._head = (int(code), reason.encode("latin-1"),
                      [(name.encode("latin-1"), value.encode("latin-1"))
                       for name, value in headers])
        return self.write

    def write(self, data: bytes) -> None:
        """Send C{data}, once the connection can take it (PEP 3333's C{write})."""
        if self._head is None:
            raise RuntimeError("write() before start_response()")
        if not isinstance(data, bytes):
            raise TypeError(f"the application wrote {type(data).__name__}, not bytes")
        with self._ready:
            while (self._paused or self._queued >= WINDOW) and not self._gone:
                self._ready.wait()
            if self._gone:
                raise _ClientGone()
            self._queued += len(data)
        self._post(self._send, self._take_head(), data)

    def _take_head(self):
        """The status and headers the first time, C{None} after."""
        head = None if self._head_sent else self._head
        self._head_sent = True
        return head

    def run(self, application: WSGIApplication, body: IO[bytes]) -> None:
        """Call the application and send what it returns; its errors become a 500."""
        try:
            if self._gone:
                return  # the client left (or the server stops) while the call waited
            result = application(self.environ, self.start_response)
            try:
                for chunk in result:
                    if chunk:
                        self.write(chunk)
                if self._head is None:
                    raise RuntimeError("the application returned without start_response()")
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except _ClientGone:
            pass
        except BaseException:
            self._post(self._fail, Failure(), self._head_sent)
        else:
            self._post(self._end, self._take_head())
        finally:
            body.close()

    # -- in the reactor ----------------------------------------------------------------------

    def _send(self, head, data: bytes) -> None:
        with self._ready:
            self._queued -= len(data)
            self._ready.notify()
        if self._gone:
            return
        if head is not None:
            self._apply(head)
        # May call pauseProducing at once, when this fills the send buffer.
        self._request.write(data)

    def _apply(self, head) -> None:
        code, reason, headers = head
        self._request.setResponseCode(code, reason)
        for name, value in headers:
            # twisted.web writes these two itself.
            if name.lower() not in (b"server", b"date"):
                self._request.responseHeaders.addRawHeader(name, value)

    def _end(self, head) -> None:
        if self._gone:
            return
        if head is not None:
            self._apply(head)
        self._request.unregisterProducer()
        self._request.finish()

    def _fail(self, failure: Failure, started: bool) -> None:
        log.failure("WSGI application error: {method} {uri}", failure,
                    method=self.environ["REQUEST_METHOD"], uri=_text(self._request.uri))
        if self._gone:
            return
        self._request.unregisterProducer()
        if started:
            # Part of the answer is out: only a cut connection tells the client it is wrong.
            self._request.loseConnection()
            return
        self._request.setResponseCode(500)
        self._request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self._request.setHeader(b"Content-Length", b"%d" % len(_ERROR_BODY))
        self._request.write(_ERROR_BODY)
        self._request.finish()

    def _finished(self, _: object) -> None:
        self.abandon()
        self._on_done(self)

    def cut(self) -> None:
        """The server stops: end this response now, and the application's writes."""
        if not self._gone:
            self.abandon()
            self._request.loseConnection()

    def abandon(self) -> None:
        """No more can be sent: a waiting write, and every later one, raises L{_ClientGone}."""
        with self._ready:
            self._gone = True
            self._ready.notify_all()

    # IPushProducer, called by the connection.
    def pauseProducing(self) -> None:
        with self._ready:
            self._paused = True

    def resumeProducing(self) -> None:
        with self._ready:
            self._paused = False
            self._ready.notify_all()

    def stopProducing(self) -> None:
        self.abandon()


@implementer(IResource)
class WSGIContainer:
    """
    A WSGI application as a leaf resource: each request is answered by the application in
    a thread of a pool of its own (so a busy application never delays the reactor's DNS
    lookups or other threads), started and stopped with the service that serves it.

    @param trusted_proxies: see L{TrustedProxies}.
    @param multiprocess: the C{wsgi.multiprocess} flag: whether other processes serve the same
        application (the process pool).
    """

    isLeaf = True

    def __init__(self, reactor, application: WSGIApplication, *,
                 threads: int = DEFAULT_WSGI_THREADS, trusted_proxies: Sequence[str] = (),
                 multiprocess: bool = False) -> None:
        self._calls = _ReactorCalls(reactor)
        self._application = application
        self._threads = threads
        self._reactor = reactor
        self._pool: CallThreads | None = None
        self._proxies = TrustedProxies(trusted_proxies)
        self._multiprocess = multiprocess
        self._active: set[_Response] = set()
        self._connections: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def start(self) -> None:
        """Start the application's threads."""
        self._pool = CallThreads(self._threads, "wsgi", self._reactor)

    def stop(self) -> None:
        """
        Cut the responses still in flight and wait for the application's threads (it blocks
        the reactor as long as the application takes to return from what it is doing);
        requests from now on are answered 503.
        """
        pool, self._pool = self._pool, None
        for response in list(self._active):
            response.cut()
        if pool is not None:
            pool.stop()

    def render(self, request: IRequest):
        if self._pool is None:
            request.setResponseCode(503)
            return b""
        # The application's thread owns the body from here: twisted.web closes
        # request.content when the connection drops, which would pull it from under a read.
        body, request.content = request.content, io.BytesIO()
        request.defaultContentType = None
        response = _Response(self._calls, request, self.environ(request, body),
                             self._active.discard)
        self._active.add(response)
        self._pool.submit(response.run, self._application, body)
        return NOT_DONE_YET

    def environ(self, request: IRequest, body: IO[bytes]) -> dict[str, Any]:
        """The PEP 3333 environ of C{request}, whose body is complete in C{body}."""
        body.seek(0, os.SEEK_END)
        size = body.tell()
        body.seek(0)
        shared, peer = self._connection(request)
        environ = dict(shared)
        query = request.uri.partition(b"?")[2]
        host = request.getHeader(b"host")
        if host:
            environ["SERVER_NAME"] = _text(_hostname(host))
        environ.update({
            "REQUEST_METHOD": _text(request.method),
            "SCRIPT_NAME": _joined(request.prepath),
            "PATH_INFO": _joined(request.postpath),
            "QUERY_STRING": _text(query),
            "CONTENT_TYPE": _text(request.getHeader(b"content-type") or b""),
            # The body as the application gets it: complete, and no longer chunked.
            "CONTENT_LENGTH": str(size) if size or request.getHeader(b"content-length") else "",
            "SERVER_PROTOCOL": _text(request.clientproto),
            "wsgi.input": body,
            "wsgi.errors": _ERRORS,
        })
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = _text(name).upper()
            # An underscore would let X_Forwarded_For pose as the X-Forwarded-For a proxy
            # set (as gunicorn, such headers are dropped).
            if "_" in key or key in ("CONTENT-TYPE", "CONTENT-LENGTH", "TRANSFER-ENCODING"):
                continue
            environ["HTTP_" + key.replace("-", "_")] = ",".join(_text(v) for v in values)
        if self._proxies.trusts(peer):
            self._forwarded(request, environ, peer)
        return environ

    def _connection(self, request: IRequest) -> tuple[dict[str, Any], str | None]:
        """
        The environ every request of a connection shares, and the peer's address (C{None}
        on a UNIX socket): worked out once per connection, since C{getHost} is a system call.
        """
        known = self._connections.get(request.channel)
        if known is None:
            peer, local = request.getClientAddress(), request.getHost()
            scheme = "https" if request.isSecure() else "http"
            shared = {
                "SERVER_NAME": getattr(local, "host", "localhost"),
                "SERVER_PORT": str(getattr(local, "port", 443 if scheme == "https" else 80)),
                "REMOTE_ADDR": getattr(peer, "host", ""),
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": scheme,
                "wsgi.input_terminated": True,
                "wsgi.multithread": True,
                "wsgi.multiprocess": self._multiprocess,
                "wsgi.run_once": False,
            }
            if hasattr(peer, "port"):
                shared["REMOTE_PORT"] = str(peer.port)
            known = self._connections[request.channel] = (shared, getattr(peer, "host", None))
        return known

    def _forwarded(self, request: IRequest, environ: dict[str, Any], peer: str | None) -> None:
        """A trusted proxy's word on the client: its address, and https when it had TLS."""
        forwarded_for = [_text(v) for v in request.requestHeaders.getRawHeaders(
            b"x-forwarded-for", [])]
        client = self._proxies.client(peer, forwarded_for)
        if client != peer:
            environ["REMOTE_ADDR"] = client
            environ.pop("REMOTE_PORT", None)
        proto = request.requestHeaders.getRawHeaders(b"x-forwarded-proto")
        if proto:
            scheme = _text(proto[-1]).split(",")[-1].strip().lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme

    def getChildWithDefault(self, name: bytes, request: IRequest):
        raise RuntimeError("the WSGI application answers every path below its mount")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise RuntimeError("the WSGI application answers every path below its mount")


@implementer(IResource)
class PrefixMount:
    """
    Requests under C{prefix} go to C{mounted}, with the prefix moved to C{prepath} (the WSGI
    application's C{SCRIPT_NAME}); every other request goes to C{default}.
    """

    isLeaf = True

    def __init__(self, prefix: tuple[bytes, ...], mounted: IResource, default: IResource) -> None:
        self.prefix = prefix
        self._mounted = mounted
        self._default = default

    def render(self, request: IRequest):
        count = len(self.prefix)
        if tuple(request.postpath[:count]) != self.prefix:
            return getChildForRequest(self._default, request).render(request)
        request.prepath.extend(request.postpath[:count])
        del request.postpath[:count]
        return getChildForRequest(self._mounted, request).render(request)

    def getChildWithDefault(self, name: bytes, request: IRequest):
        raise RuntimeError("a mount dispatches in render")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise RuntimeError("a mount dispatches in render")


def _text(value: bytes) -> str:
    """A WSGI "native string": the bytes as latin-1."""
    return value.decode("latin-1")


def _hostname(host: bytes) -> bytes:
    """The name in a Host header: C{example.com:8080} gives C{example.com}, C{[::1]:80}
    C{[::1]}."""
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.split(b":", 1)[0]


def _joined(segments: Sequence[bytes]) -> str:
    return _text(b"/" + b"/".join(segments)) if segments else ""
