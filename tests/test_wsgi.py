"""
Hosting a WSGI application: the Flask app of tests/wsgi_app.py served by C{twist twistreg
--wsgi} over real HTTP, in one process and with two workers, beside the registry routes
(C{--wsgi-mount /ui}) and alone; plus the pieces on their own (configuration, proxies,
loading, body spooling, the write that waits for the connection).
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet.defer import Deferred
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from tests.server import Server, wait_until
from twistreg.config import ConfigError, ServerSettings, load_settings
from twistreg.web.body import CappedBody, RegistryRequest, UploadBody
from twistreg.web.wsgi import (
    WINDOW,
    TrustedProxies,
    WSGIContainer,
    _ClientGone,
    _ReactorCalls,
    _Response,
    load_wsgi_application,
    mount_prefix,
)

pytest.importorskip("flask")

MIB = 1 << 20
APP = "tests.wsgi_app:application"
THREADS = 4
#: What a 256 MiB streamed answer or a 64 MiB upload may add to a process's peak memory.
MEMORY_BOUND = 40 * MIB


# -- the configuration ---------------------------------------------------------------------------


def test_wsgi_keys_from_options() -> None:
    server = load_settings(None, None, {
        "server.wsgi": "pkg.mod:app", "server.wsgi_mount": "/ui/tools/", "server.threads": "8",
        "server.trusted_proxies": "127.0.0.1, 10.1.2.3/8,unix, ::1",
    }, environ={}, system_config_path=None).server
    assert (server.wsgi, server.wsgi_mount, server.threads) == ("pkg.mod:app", "/ui/tools", 8)
    assert server.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "unix", "::1/128")
    assert server.serves_registry
    assert not ServerSettings(wsgi="pkg.mod:app").serves_registry
    assert ServerSettings().serves_registry and ServerSettings().threads == 16


def test_wsgi_keys_from_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("dev:\n  server:\n    wsgi: app:wsgi\n    wsgi_mount: /\n"
                      "    trusted_proxies: [192.0.2.1, '*']\n")
    server = load_settings(str(config), None, environ={}, system_config_path=None).server
    assert (server.wsgi_mount, server.trusted_proxies) == ("/", ("192.0.2.1/32", "*"))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"server.wsgi_mount": "/ui"}, "option --wsgi-mount needs a WSGI application"),
    ({"server.wsgi": "a:b", "server.wsgi_mount": "ui"}, "must be a path such as /ui"),
    ({"server.wsgi": "a:b", "server.wsgi_mount": "/a/../b"}, "must be a path such as /ui"),
    ({"server.threads": "0"}, "option --threads must be a whole number >= 1"),
    ({"server.trusted_proxies": "10.0.0.1,proxy.local"},
     "option --trusted-proxies: 'proxy.local' is not an IP address or network"),
])
def test_wsgi_keys_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, None, overrides, environ={}, system_config_path=None)


def test_mount_prefix() -> None:
    assert mount_prefix("/") == ()
    assert mount_prefix("/ui/tools") == (b"ui", b"tools")


# -- trusted proxies -----------------------------------------------------------------------------


def test_trusted_proxies() -> None:
    proxies = TrustedProxies(("127.0.0.1/32", "10.0.0.0/8", "unix"))
    assert proxies.trusts("10.9.8.7") and proxies.trusts("::ffff:10.0.0.1")
    assert proxies.trusts(None)
    assert not proxies.trusts("192.0.2.1") and not proxies.trusts("not-an-address")
    assert not TrustedProxies(()).trusts(None)
    assert TrustedProxies(("*",)).trusts("192.0.2.1")
    # The nearest hop that is not a proxy is the client; what is before it may be forged.
    assert proxies.client("127.0.0.1", ["198.51.100.1, 203.0.113.5", "10.1.1.1"]) == \
        "203.0.113.5"
    assert proxies.client("127.0.0.1", ["10.2.2.2"]) == "10.2.2.2"
    assert proxies.client("127.0.0.1", ["garbage, 10.2.2.2"]) == "10.2.2.2"
    assert proxies.client("127.0.0.1", []) == "127.0.0.1"


# -- loading the application ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "message"), [
    ("tests.no_such_module:app", "cannot load the WSGI application 'tests.no_such_module:app': "
     "ModuleNotFoundError: No module named 'tests.no_such_module'"),
    ("tests.wsgi_app:nothing", "cannot load the WSGI application 'tests.wsgi_app:nothing': "
     "AttributeError: module 'tests.wsgi_app' has no attribute 'nothing'"),
    ("tests.wsgi_app:MIB", "the WSGI application 'tests.wsgi_app:MIB' is not callable"),
])
def test_load_errors_are_one_line(name: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_wsgi_application(name)
    assert str(caught.value) == message


def test_load_error_in_the_module_says_where(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "broken_app.py").write_text('X = 1\nraise RuntimeError("no\\ndatabase")\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        load_wsgi_application("broken_app:app")
    assert str(caught.value) == (
        "cannot load the WSGI application 'broken_app:app': RuntimeError: no database"
        f" (at {tmp_path / 'broken_app.py'}:2)")


def test_load_module_alone_means_its_application() -> None:
    from tests import wsgi_app

    assert load_wsgi_application("tests.wsgi_app") is wsgi_app.application


# -- which bodies are spooled --------------------------------------------------------------------


def _body_for(method: bytes, path: bytes, length: int | None, prefix) -> object:
    channel = DummyChannel()
    # The registry streams layer bodies (its route table says which); here, every PUT.
    channel.site = SimpleNamespace(
        wsgi_prefix=prefix, upload_methods={b"PUT"},
        open_upload=lambda request, method, target, auth: Deferred())
    channel._command, channel._path = method, path
    channel.transport.pauseProducing = channel.transport.resumeProducing = lambda: None
    request = RegistryRequest(channel)
    request.gotLength(length)
    return request.content


def test_bodies_under_the_mount_are_spooled_uncapped() -> None:
    layer = b"/v1/images/" + b"a" * 64 + b"/layer"
    big = _body_for(b"POST", b"/ui/upload?x=1", 64 * MIB, (b"ui",))
    assert not isinstance(big, CappedBody) and big.fileno() >= 0  # a temporary file
    assert not isinstance(_body_for(b"POST", b"/ui/form", None, (b"ui",)), CappedBody)
    assert not isinstance(_body_for(b"POST", b"/%75i/x", 10, (b"ui",)), CappedBody)
    assert isinstance(_body_for(b"POST", b"/uix/form", 10, (b"ui",)), CappedBody)
    assert isinstance(_body_for(b"PUT", layer, 10, (b"ui",)), UploadBody)
    assert isinstance(_body_for(b"PUT", layer, 10, None), UploadBody)
    # The application alone: every path is its own, the layer path too.
    assert not isinstance(_body_for(b"PUT", layer, 10, ()), (CappedBody, UploadBody))


# -- the write that waits for the connection -----------------------------------------------------


class _ThreadCalls:
    """A reactor whose callFromThread queues the call for the test to run, as the I/O thread."""

    def __init__(self) -> None:
        self.calls: list = []

    def callFromThread(self, f, *args) -> None:
        self.calls.append((f, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


def _writer(response: _Response, data: bytes) -> tuple[threading.Thread, list]:
    outcome: list = []

    def write() -> None:
        try:
            response.write(data)
            outcome.append("written")
        except _ClientGone:
            outcome.append("gone")

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, outcome


def test_writes_wait_while_the_connection_is_paused_or_behind() -> None:
    reactor = _ThreadCalls()
    request = Request(DummyChannel())
    request.method, request.clientproto = b"GET", b"HTTP/1.1"
    done: list = []
    response = _Response(_ReactorCalls(reactor), request, {"REQUEST_METHOD": "GET"},
                         done.append)
    assert request.channel.transport.producers == [(response, True)]
    response.start_response("200 OK", [("Content-Type", "text/plain")])

    response.pauseProducing()
    thread, outcome = _writer(response, b"first")
    thread.join(0.2)
    assert thread.is_alive() and reactor.calls == []
    response.resumeProducing()
    thread.join(5)
    assert outcome == ["written"] and len(reactor.calls) == 1

    # One window ahead of the reactor is the most an application gets; what it wrote
    # meanwhile goes with the same wake-up of the reactor.
    response.write(b"x" * WINDOW)
    thread, outcome = _writer(response, b"y")
    thread.join(0.2)
    assert thread.is_alive() and len(reactor.calls) == 1
    reactor.run()
    thread.join(5)
    assert outcome == ["written"]
    reactor.run()
    assert request.code == 200 and request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain"]
    written = request.channel.transport.written.getvalue()
    assert b"\r\n5\r\nfirst\r\n" in written
    assert written.endswith(b"x" * 100 + b"\r\n1\r\ny\r\n")

    # A client that leaves releases a waiting write, which ends the application's loop.
    response.pauseProducing()
    thread, outcome = _writer(response, b"never sent")
    request.connectionLost(Exception("gone"))
    thread.join(5)
    assert outcome == ["gone"] and done == [response]


def test_a_stopped_container_answers_503() -> None:
    container = WSGIContainer(_ThreadCalls(), lambda environ, start_response: [], threads=1)
    container.start()
    container.stop()
    request = DummyRequest([b"x"])
    assert (container.render(request), request.responseCode) == (b"", 503)


# -- over HTTP -----------------------------------------------------------------------------------


def _start(tmp: Path, *args: str, workers: int = 0, **kwargs) -> Server:
    storage = tmp / "storage"
    storage.mkdir(exist_ok=True)
    server = Server(tmp, storage, *args, workers=workers, **kwargs)
    server.start()
    if workers:
        server.wait_for_workers(workers)
    return server


@pytest.fixture(scope="module", params=[0, 2], ids=["in-process", "two-workers"])
def served(request, tmp_path_factory) -> Iterator[Server]:
    """The app under /ui beside the registry, 4 threads per process, 127.0.0.2 a proxy."""
    server = _start(tmp_path_factory.mktemp("wsgi"), "--wsgi", APP, "--wsgi-mount", "/ui",
                    "--threads", str(THREADS), "--trusted-proxies", "127.0.0.2",
                    workers=request.param)
    server.workers = request.param
    yield server
    server.stop()
    server.kill_all()


def _processes(server: Server) -> list[int]:
    """The processes that serve: the one, or the workers."""
    return server.worker_pids() if server.workers else [server.pid]


def _reset_peak(pids: list[int]) -> dict[int, int]:
    """Reset each process's peak memory to what it uses now; what it uses now."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    return {pid: _status(pid, "VmRSS") for pid in pids}


def _growth(baseline: dict[int, int]) -> int:
    """The most a process's peak memory rose above its baseline."""
    return max(_status(pid, "VmHWM") - before for pid, before in baseline.items())


def _status(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


@pytest.mark.integration
def test_get_post_and_the_registry_beside(served: Server) -> None:
    r = served.request("GET", "/ui/hello")
    assert (r.status, r.body) == (200, b"hello from flask")
    r = served.request("HEAD", "/ui/hello")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "16")
    r = served.request("POST", "/ui/form", b"name=tw%C3%AFst",
                       {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.json() == {"name": "twïst", "json": None}
    r = served.request("POST", "/ui/form", b'{"a": [1]}', {"Content-Type": "application/json"})
    assert r.json() == {"name": None, "json": {"a": [1]}}
    # The registry's routes, and its JSON 404, around the mount.
    r = served.request("GET", "/v1/_ping")
    assert (r.status, r.body, r.headers["X-Docker-Registry-Standalone"]) == (200, b"{}", "True")
    r = served.request("GET", "/uix")
    assert (r.status, r.json()) == (404, {"error": "Not found"})


@pytest.mark.integration
def test_environ_under_the_mount(served: Server) -> None:
    r = served.request("GET", "/ui/wh%65re?x=1&y=%20")
    body = r.json()
    environ = body["environ"]
    assert (body["script_root"], body["path"]) == ("/ui", "/where")
    assert body["url"] == f"http://127.0.0.1:{served.port}/ui/where"
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/ui", "/where")
    assert environ["QUERY_STRING"] == "x=1&y=%20"
    assert (environ["REQUEST_METHOD"], environ["SERVER_PROTOCOL"]) == ("GET", "HTTP/1.1")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", str(served.port))
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    assert environ["wsgi.multiprocess"] is bool(served.workers)
    assert environ["wsgi.multithread"] is True and environ["wsgi.input_terminated"] is True
    assert environ["wsgi.run_once"] is False and body["version"] == [1, 0]
    assert environ["HTTP_HOST"] == f"127.0.0.1:{served.port}"
    r = served.request("GET", "/ui/where", headers={"X_Forwarded_For": "192.0.2.9"})
    assert "HTTP_X_FORWARDED_FOR" not in r.json()["environ"]


def _blocks(count: int) -> Iterator[bytes]:
    for index in range(count):
        yield bytes([index % 251]) * MIB


@pytest.mark.integration
def test_uploads_of_64mib_sized_and_chunked(served: Server) -> None:
    expected = hashlib.sha256()
    for block in _blocks(64):
        expected.update(block)
    for headers in ({"Content-Length": str(64 * MIB)}, {"Transfer-Encoding": "chunked"}):
        baseline = _reset_peak(_processes(served))
        connection = served.connection()
        connection.request("POST", "/ui/hash", body=_blocks(64), headers=headers,
                           encode_chunked="Transfer-Encoding" in headers)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == {
            "size": 64 * MIB, "sha256": expected.hexdigest(), "content_length": str(64 * MIB)}
        connection.close()
        assert _growth(baseline) < MEMORY_BOUND, headers


@pytest.mark.integration
def test_streamed_256mib_answer_keeps_memory_bounded(served: Server) -> None:
    baseline = _reset_peak(_processes(served))
    connection = served.connection()
    connection.request("GET", "/ui/stream/256")
    response = connection.getresponse()
    assert response.status == 200 and response.headers["Transfer-Encoding"] == "chunked"
    received, digest = 0, hashlib.sha256()
    # A client that stops reading a while: the application must wait, not the memory grow.
    first = response.read(MIB)
    time.sleep(1.0)
    expected = hashlib.sha256()
    for block in _blocks(256):
        expected.update(block)
    for data in itertools.chain([first], iter(lambda: response.read(MIB), b"")):
        received += len(data)
        digest.update(data)
    connection.close()
    assert (received, digest.hexdigest()) == (256 * MIB, expected.hexdigest())
    assert _growth(baseline) < MEMORY_BOUND


@pytest.mark.integration
def test_application_errors_are_500_and_logged(served: Server) -> None:
    r = served.request("GET", "/ui/boom")  # Flask answers its own view's error
    assert r.status == 500
    r = served.request("GET", "/ui/raw/boom")  # nothing but the server to catch it
    assert (r.status, r.body) == (500, b"Internal Server Error\n")
    connection = served.connection()
    connection.request("GET", "/ui/raw/broken-stream")
    response = connection.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert caught.value.partial == b"the beginning, "
    connection.close()
    assert served.request("GET", "/ui/hello").status == 200
    served.wait_for(lambda: "boom mid-stream" in served.text())
    text = served.text()
    assert "boom in a view" in text  # Flask's log, through wsgi.errors
    assert "WSGI application error: GET /ui/raw/boom" in text
    assert 'in application\n' not in text and "RuntimeError: boom outside Flask" in text


@pytest.mark.integration
def test_forwarded_headers_only_from_trusted_proxies(served: Server) -> None:
    headers = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5", "X-Forwarded-Proto": "https"}

    def where(source: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30,
                                                source_address=(source, 0))
        connection.request("GET", "/ui/where", headers=headers)
        body = json.loads(connection.getresponse().read())
        connection.close()
        return body

    trusted = where("127.0.0.2")
    assert (trusted["remote_addr"], trusted["scheme"]) == ("203.0.113.5", "https")
    assert trusted["url"] == f"https://127.0.0.1:{served.port}/ui/where"
    assert "REMOTE_PORT" not in trusted["environ"]
    stranger = where("127.0.0.1")
    assert (stranger["remote_addr"], stranger["scheme"]) == ("127.0.0.1", "http")


@pytest.mark.integration
def test_requests_run_side_by_side_up_to_the_pool_size(served: Server, tmp_path: Path) -> None:
    """
    The application's threads: as many requests as one process has threads run together,
    wherever they land; never more than all processes have; and the reactor answers the
    registry while every thread is busy.
    """
    gate = tmp_path / "gate"
    gate.mkdir()

    def through_gate(_: int) -> int:
        r = served.request("GET", f"/ui/gate?dir={gate}")
        assert r.status == 200, r
        return r.json()["inside"]

    def inside() -> int:
        return sum(p.name.startswith("inside-") for p in gate.iterdir())

    capacity = THREADS * max(served.workers, 1)
    with ThreadPoolExecutor(capacity + 1) as clients:
        first = [clients.submit(through_gate, i) for i in range(THREADS)]
        wait_until(lambda: inside() == THREADS, timeout=60)
        # Every thread of a process may be taken: the registry's routes still answer.
        assert served.request("GET", "/v1/_ping").status == 200
        more = [clients.submit(through_gate, i) for i in range(capacity + 1 - THREADS)]
        wait_until(lambda: inside() >= min(capacity, THREADS + 1), timeout=60)
        (gate / "open").touch()
        counts = [f.result(timeout=60) for f in first + more]
    assert max(counts) <= capacity
    assert max(counts) >= THREADS


@pytest.mark.integration
def test_the_application_alone_behind_tls(tmp_path: Path) -> None:
    pytest.importorskip("OpenSSL")
    from tests.tls import make_certificate

    key, cert = make_certificate(tmp_path)
    server = _start(tmp_path, "--wsgi", APP, listen=(
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False

        def get(path: str) -> tuple[int, bytes]:
            connection = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30,
                                                     context=context)
            connection.request("GET", path)
            response = connection.getresponse()
            result = response.status, response.read()
            connection.close()
            return result

        status, body = get("/where")
        where = json.loads(body)
        assert (status, where["scheme"], where["script_root"]) == (200, "https", "")
        assert where["url"] == f"https://127.0.0.1:{server.port}/where"
        # No registry: its paths are the application's (Flask's 404), its storage untouched.
        status, body = get("/v1/_ping")
        assert status == 404 and b"<!doctype html>" in body
        assert list(server.storage.iterdir()) == []
        assert "twistreg serving WSGI application tests.wsgi_app:application at /" in \
            server.text()
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("workers", [0, 2])
def test_an_application_that_cannot_load_stops_the_server(tmp_path: Path, workers: int) -> None:
    server = Server(tmp_path, tmp_path, "--wsgi", "tests.no_such_module:app", workers=workers)
    try:
        server.start(wait=False)
        assert server.wait(30) == 1
    finally:
        server.kill_all()
    message = ("cannot load the WSGI application 'tests.no_such_module:app': "
               "ModuleNotFoundError: No module named 'tests.no_such_module'")
    last = server.output[-1].strip()
    assert last in (f"twistreg: {message}",
                    f"twistreg: worker failed to load the application: {message}")
    # The pool gives up at once instead of respawning workers that cannot load.
    assert len(server.worker_pids("spawned")) <= workers
