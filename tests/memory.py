"""
A registry served in memory for route tests: the real L{RegistrySite} (its streaming request
factory, the answers it gives before routing, the layer upload path) behind an in-memory
transport, on a memory reactor whose clock the test drives and whose thread pool runs work at
once.

    registry = MemoryRegistry(tmp_path)                        # standalone, empty storage
    registry = MemoryRegistry(tmp_path, "dev:\\n  standalone: false\\n")
    r = registry.request("PUT", "/v1/images/<id>/layer", b"...", {"X": "y"})
    r = registry.request("PUT", path, [b"part 1", b"part 2"], chunked=True)
    registry.clock.advance(60); registry.clock.seconds()

Requests are raw HTTP/1.1 bytes fed to the Site's protocol over a C{StringTransport}, in
pieces as a socket would deliver them (the transport's pause is honoured); answers are parsed
from the bytes written back, as C{http.client} would.
"""

from __future__ import annotations

import http.client
import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

from twisted.internet import _producer_helpers
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.task import Cooperator
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.server import Response
from tests.threads import InlinePool
from twistreg.config import load_settings
from twistreg.service import build_registry
from twistreg.web.site import RegistrySite

#: A standalone registry as the built-in settings make it, but without a search index (its
#: database pool has threads of its own).
STANDALONE = "dev:\n  standalone: true\n  issue: '\"docker-registry server\"'\n"

#: Where the memory clock starts: a fixed time, so the dates of answers are known.
START = 1795757723

#: Bytes handed to the protocol per C{dataReceived}, as one read from a socket.
PIECE = 65536

#: How long to wait for a call from a thread the harness did not run (a raw thread).
THREAD_WAIT = 10.0

_BODY_METHODS = {"PATCH", "POST", "PUT"}

#: Request headers: a mapping, or (name, value) pairs to repeat a name; a None value drops
#: the header, and keeps the harness from adding its default (C{Host}).
Headers = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


@implementer(IReactorThreads, IReactorFromThreads)
class MemoryReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} with threads: its pool runs work at once, and C{callFromThread}
    from the reactor's own thread calls at once too.  Calls from any other thread (a thread
    that code under test started itself) are kept, as a real reactor would, and run in the
    reactor's thread by L{run_thread_calls}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pool = InlinePool()
        self._thread = threading.get_ident()
        self._from_threads: queue.SimpleQueue = queue.SimpleQueue()
        #: Calls received from other threads so far.
        self.foreign_calls = 0

    def getThreadPool(self) -> InlinePool:
        return self._pool

    def callInThread(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        self._pool.callInThread(f, *args, **kwargs)

    def callFromThread(self, f: Callable, *args: Any, **kwargs: Any) -> None:
        if threading.get_ident() == self._thread:
            f(*args, **kwargs)
        else:
            self.foreign_calls += 1
            self._from_threads.put((f, args, kwargs))

    def suggestThreadPoolSize(self, size: int) -> None:
        pass

    def run_thread_calls(self, wait: float = 0) -> bool:
        """
        Run the calls other threads made; with C{wait}, wait that long for the first one.

        @return: whether any ran.
        """
        try:
            call = self._from_threads.get(timeout=wait) if wait else self._from_threads.get_nowait()
        except queue.Empty:
            return False
        while True:
            f, args, kwargs = call
            f(*args, **kwargs)
            try:
                call = self._from_threads.get_nowait()
            except queue.Empty:
                return True

    def run_due_calls(self) -> bool:
        """Run the delayed calls that are due now, without moving the clock."""
        now = self.seconds()
        if not any(call.getTime() <= now for call in self.getDelayedCalls()):
            return False
        self.advance(0)
        return True


class MemoryResponse(Response):
    """
    A L{Response} from a L{MemoryRegistry}.

    @ivar now: the registry clock's time when the answer was made.
    """

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes,
                 now: float) -> None:
        super().__init__(status, headers, body)
        self.now = now


class IncompleteAnswer(AssertionError):
    """The registry did not finish its answer, and nothing in memory could make it go on."""


class MemoryRegistry:
    """
    A registry over C{directory}/storage with the configuration C{config} (the text of a
    config file; L{STANDALONE} by default), served in memory.

    @param flavor: the flavor of C{config} to load.
    @param start: the time the clock is set to.
    @ivar clock: the L{MemoryReactor}: time, delayed calls and threads of the registry.
    @ivar registry: the registry's rules (C{twistreg.registry.rules.Registry}).
    @ivar site: the L{RegistrySite} every request goes through.
    @ivar storage: the storage directory.
    @ivar port: the port the registry seems to listen on (127.0.0.1).
    @ivar log_events: every log event emitted while the registry is open.
    @ivar thread_wait: how long a stuck request waits for a call from another thread before
        L{IncompleteAnswer}.
    """

    def __init__(self, directory: Path, config: str = STANDALONE, *, flavor: str | None = None,
                 start: float = START) -> None:
        self.storage = Path(directory) / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        path = Path(directory) / "config.yml"
        path.write_text(config)
        settings = load_settings(str(path), flavor, {"storage_path": str(self.storage)},
                                 environ={}, system_config_path=None)
        self.clock = MemoryReactor()
        self.clock.advance(start)
        self.registry = build_registry(settings, self.clock)
        self.site = RegistrySite(self.registry, None, reactor=self.clock)
        self.port = 5000
        self.address = IPv4Address("TCP", "127.0.0.1", self.port)
        self._client_port = 40000
        # The Site's C{_PullToPush} cooperates on the global reactor: here, on the clock.
        self._cooperator = Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        self.log_events: list[dict] = []
        self.thread_wait = THREAD_WAIT
        globalLogPublisher.addObserver(self.log_events.append)
        self.site.doStart()

    def close(self) -> None:
        """Stop collecting log events; the Site stops."""
        globalLogPublisher.removeObserver(self.log_events.append)
        self.site.doStop()
        self._cooperator.stop()

    def request(
        self, method: str, path: str | bytes, body: bytes | Iterable[bytes] | None = None,
        headers: Headers | None = None, *, chunked: bool = False, version: str = "HTTP/1.1",
        piece: int = PIECE,
    ) -> MemoryResponse:
        """
        One request on a fresh connection, with the headers C{http.client} adds (C{Host},
        C{Accept-Encoding}, C{Content-Length}).

        @param path: sent verbatim; a C{str} must be what C{http.client} accepts (ASCII, no
            controls or spaces), C{bytes} are sent as they are.
        @param body: the body; with C{chunked}, bytes or an iterable of byte strings, each
            sent as one chunk.
        @param chunked: send C{Transfer-Encoding: chunked} instead of C{Content-Length}.
        @param version: the request line's version (C{HTTP/1.0} has no keep-alive).
        @param piece: bytes per C{dataReceived}.
        @raise IncompleteAnswer: no complete answer came.
        """
        raw = encode_request(method, path, body, headers, chunked=chunked, version=version,
                             host=f"127.0.0.1:{self.port}")
        return self._exchange(raw, method, piece)

    def _exchange(self, raw: bytes, method: str, piece: int) -> MemoryResponse:
        self._client_port += 1
        peer = IPv4Address("TCP", "127.0.0.1", self._client_port)
        transport = StringTransport(hostAddress=self.address, peerAddress=peer)
        protocol = self.site.buildProtocol(peer)
        protocol.makeConnection(transport)
        try:
            with self._pull_producers_on_clock():
                offset = 0
                while offset < len(raw) and not transport.disconnecting:
                    if transport.producerState != "producing":
                        self._progress(transport, "the server paused reading the request")
                        continue
                    protocol.dataReceived(raw[offset:offset + piece])
                    offset += piece
                while (response := parse_response(transport.value(), method,
                                                  transport.disconnecting)) is None:
                    self._progress(transport, "no complete answer")
        finally:
            protocol.connectionLost(Failure(ConnectionDone()))
        status, message, content = response
        return MemoryResponse(status, message, content, self.clock.seconds())

    def _progress(self, transport: StringTransport, stuck: str) -> None:
        """Let the registry go on: calls from threads, then due delayed calls, else wait."""
        if self.clock.run_thread_calls() or self.clock.run_due_calls():
            return
        if self.thread_wait and self.clock.run_thread_calls(wait=self.thread_wait):
            return
        raise IncompleteAnswer(f"{stuck}; sent back so far: {transport.value()[:2000]!r}")

    @contextmanager
    def _pull_producers_on_clock(self) -> Iterator[None]:
        original = _producer_helpers.cooperate
        _producer_helpers.cooperate = self._cooperator.cooperate
        try:
            yield
        finally:
            _producer_helpers.cooperate = original


def _header_pairs(headers: Headers | None) -> list[tuple[str, Any]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


def encode_request(
    method: str, path: str | bytes, body: bytes | Iterable[bytes] | None,
    headers: Headers | None, *, chunked: bool = False, version: str = "HTTP/1.1",
    host: str = "127.0.0.1",
) -> bytes:
    """The bytes of a request as C{http.client} would send it (see L{MemoryRegistry.request})."""
    if isinstance(path, str):
        if any(c <= " " or c == "\x7f" for c in path):
            raise ValueError(f"http.client refuses this path: {path!r}")
        target = path.encode("ascii")
    else:
        target = path
    pairs = _header_pairs(headers)
    given = {name.lower() for name, _ in pairs}
    defaults: list[tuple[str, Any]] = []
    if "host" not in given:
        defaults.append(("Host", host))
    if "accept-encoding" not in given:
        defaults.append(("Accept-Encoding", "identity"))
    if chunked:
        if "transfer-encoding" not in given:
            defaults.append(("Transfer-Encoding", "chunked"))
        chunks = [body] if isinstance(body, bytes) else list(body or [])
        content = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    else:
        assert body is None or isinstance(body, bytes), "pieces of a body need chunked=True"
        content = body or b""
        if "content-length" not in given:
            if body is not None:
                defaults.append(("Content-Length", len(body)))
            elif method.upper() in _BODY_METHODS:
                defaults.append(("Content-Length", 0))
    lines = [_encode(method) + b" " + target + b" " + _encode(version)]
    lines += [_encode(name) + b": " + _encode(value)
              for name, value in defaults + pairs if value is not None]
    return b"\r\n".join(lines) + b"\r\n\r\n" + content


def parse_response(
    data: bytes, method: str, closed: bool
) -> tuple[int, http.client.HTTPMessage, bytes] | None:
    """
    The first final answer in C{data}: status, headers (repeats kept) and body; None while
    it is incomplete.  Interim (1xx) answers are skipped.

    @param closed: whether the server closed the connection (the end of a body sent without
        a length).
    @raise AssertionError: the bytes are not one HTTP answer (bytes after a bodiless answer
        or after the announced length included).
    """
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        head, rest = data[:end], data[end + 4:]
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = http.client.parse_headers(io.BytesIO(header_block + b"\r\n\r\n"))
        if not 100 <= status < 200:
            break
        data = rest
    if method.upper() == "HEAD" or status in (204, 304):
        body = b""
    elif "chunked" in headers.get("Transfer-Encoding", "").lower():
        decoded = _dechunk(rest)
        if decoded is None:
            return None
        body, rest = decoded
    elif headers.get("Content-Length") is not None:
        length = int(headers["Content-Length"])
        if len(rest) < length:
            return None
        body, rest = rest[:length], rest[length:]
    else:
        if not closed:
            return None
        body, rest = rest, b""
    assert rest == b"", f"bytes after the answer: {rest[:200]!r}"
    return status, headers, body


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    """A chunked body's content and what follows it; None while incomplete."""
    body = []
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";", 1)[0], 16)
        data = data[line_end + 2:]
        if size == 0:
            trailer_end = data.find(b"\r\n")
            while trailer_end > 0:  # trailers, up to the empty line
                data = data[trailer_end + 2:]
                trailer_end = data.find(b"\r\n")
            if trailer_end < 0:
                return None
            return b"".join(body), data[2:]
        if len(data) < size + 2:
            return None
        body.append(data[:size])
        data = data[size + 2:]
