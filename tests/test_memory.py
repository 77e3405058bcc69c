"""The in-memory registry of the route tests (tests/memory.py): its reactor, wire and clock."""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time

import pytest
from twisted.internet import _producer_helpers, threads
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from zope.interface.verify import verifyObject

from tests.memory import (
    START,
    IncompleteAnswer,
    MemoryReactor,
    MemoryRegistry,
    encode_request,
    parse_response,
)
from tests.routes import YEAR, far_time_zone, image_json, new_id, push, put_tag
from twistreg.checksums import payload_checksum
from twistreg.registry.images import LayerUpload

MIB = 1 << 20


@pytest.fixture
def registry(tmp_path):
    running = MemoryRegistry(tmp_path)
    yield running
    running.close()


# The reactor ----------------------------------------------------------------------------------

def test_reactor_provides_threads():
    reactor = MemoryReactor()
    assert verifyObject(IReactorThreads, reactor)
    assert verifyObject(IReactorFromThreads, reactor)


def test_thread_pool_runs_at_once():
    reactor = MemoryReactor()
    results = []
    threads.deferToThreadPool(reactor, reactor.getThreadPool(), lambda: 7).addBoth(
        results.append)
    threads.deferToThreadPool(reactor, reactor.getThreadPool(), lambda: 1 / 0).addBoth(
        results.append)
    assert results[0] == 7
    assert results[1].check(ZeroDivisionError)


def test_calls_from_other_threads_run_in_the_reactor_thread():
    reactor = MemoryReactor()
    ran = []
    thread = threading.Thread(
        target=reactor.callFromThread, args=(lambda: ran.append(threading.get_ident()),))
    thread.start()
    thread.join()
    assert ran == [] and reactor.foreign_calls == 1
    assert reactor.run_thread_calls()
    assert ran == [threading.get_ident()]
    assert not reactor.run_thread_calls()


# Requests -------------------------------------------------------------------------------------

def test_request_bytes_like_http_client():
    assert encode_request("GET", "/v1/_ping", None, None, host="h:1") == (
        b"GET /v1/_ping HTTP/1.1\r\nHost: h:1\r\nAccept-Encoding: identity\r\n\r\n")
    assert encode_request("PUT", "/x", None, [("A", "1"), ("A", "2")], host="h") == (
        b"PUT /x HTTP/1.1\r\nHost: h\r\nAccept-Encoding: identity\r\nContent-Length: 0\r\n"
        b"A: 1\r\nA: 2\r\n\r\n")
    assert encode_request("PUT", b"//x y", b"ab", {"Host": None, "Accept-Encoding": None},
                          version="HTTP/1.0") == (
        b"PUT //x y HTTP/1.0\r\nContent-Length: 2\r\n\r\nab")
    assert encode_request("PUT", "/x", [b"ab", b"", b"cde"], {"Host": "h"}, chunked=True) == (
        b"PUT /x HTTP/1.1\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"
        b"Host: h\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    with pytest.raises(ValueError):
        encode_request("GET", "/a b", None, None)


def test_chunked_json_body(registry):
    image_id = new_id()
    body = image_json(image_id)
    r = registry.request("PUT", f"/v1/images/{image_id}/json", [body[:5], body[5:]],
                         chunked=True)
    assert (r.status, r.body) == (200, b"true")
    assert (registry.storage / "images" / image_id / "json").read_bytes() == body


def test_layer_streams_into_storage(registry, monkeypatch):
    """A layer body reaches storage piece by piece as it arrives, chunked or not."""
    writes: list[int] = []
    write = LayerUpload.write
    monkeypatch.setattr(LayerUpload, "write",
                        lambda self, data: writes.append(len(data)) or write(self, data))
    layer = bytes(range(256)) * 40
    for chunked in (False, True):
        image_id = new_id()
        body = push(registry, image_id, None)
        r = registry.request("PUT", f"/v1/images/{image_id}/layer",
                             [layer[:4000], layer[4000:]] if chunked else layer,
                             chunked=chunked, piece=1000)
        assert (r.status, r.body) == (200, b"true")
        assert (registry.storage / "images" / image_id / "layer").read_bytes() == layer
        stored = json.loads((registry.storage / "images" / image_id / "_checksum").read_bytes())
        assert stored == [payload_checksum(body, layer)]
        assert len(writes) > 5 and sum(writes) == len(layer), writes
        writes.clear()


def test_large_layer_without_threads(registry):
    """Hashing runs in the reactor's pool: past the hasher's limit, nothing waits on a thread."""
    registry.thread_wait = 0
    image_id = new_id()
    body = push(registry, image_id, None)
    layer = hashlib.sha256(b"x").digest() * (6 * MIB // 32)
    r = registry.request("PUT", f"/v1/images/{image_id}/layer", layer, piece=MIB)
    assert (r.status, r.body) == (200, b"true")
    assert registry.clock.foreign_calls == 0
    r = registry.request("PUT", f"/v1/images/{image_id}/checksum",
                         headers={"X-Docker-Checksum-Payload": payload_checksum(body, layer)})
    assert (r.status, r.body) == (200, b"true")
    r = registry.request("GET", f"/v1/images/{image_id}/layer")
    assert (r.status, len(r.body), r.body == layer) == (200, len(layer), True)
    assert _producer_helpers.cooperate is not registry._cooperator.cooperate


def test_incomplete_answer(registry):
    """A body shorter than announced: the registry waits for the rest, the harness says so."""
    registry.thread_wait = 0
    with pytest.raises(IncompleteAnswer):
        registry.request("PUT", f"/v1/images/{new_id()}/json", b"{}", {"Content-Length": "9"})


# Answers --------------------------------------------------------------------------------------

def test_parse_answers():
    head = b"HTTP/1.1 200 OK\r\nA: 1\r\nA: 2\r\nContent-Length: 3\r\n\r\n"
    status, headers, body = parse_response(head + b"abc", "GET", False)
    assert (status, headers.get_all("A"), body) == (200, ["1", "2"], b"abc")
    assert parse_response(head + b"ab", "GET", False) is None
    assert parse_response(head, "HEAD", False)[2] == b""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n"
    assert parse_response(chunked, "GET", False) is None
    assert parse_response(chunked + b"0\r\n\r\n", "GET", False)[2] == b"abc"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert parse_response(interim + head + b"abc", "PUT", False)[0] == 200
    unsized = b"HTTP/1.0 200 OK\r\n\r\nrest"
    assert parse_response(unsized, "GET", False) is None
    assert parse_response(unsized, "GET", True)[2] == b"rest"
    with pytest.raises(AssertionError):
        parse_response(b"HTTP/1.1 204 No Content\r\n\r\nbody", "GET", False)


# The clock and the configuration --------------------------------------------------------------

def test_dates_follow_the_clock(registry):
    image_id = new_id()
    push(registry, image_id, b"layer")
    r = registry.request("GET", f"/v1/images/{image_id}/json")
    assert r.now == START == registry.clock.seconds()
    assert r.headers["Expires"] == email.utils.formatdate(START + YEAR, usegmt=True)
    registry.clock.advance(86400.5)
    r = registry.request("GET", f"/v1/images/{image_id}/json")
    assert r.headers["Expires"] == email.utils.formatdate(START + 86400.5 + YEAR, usegmt=True)
    assert put_tag(registry, "foo/clock", "v1", image_id).status == 200
    r = registry.request("GET", "/v1/repositories/foo/clock/tags/v1/json")
    assert r.body == b'{"last_update": %d}' % (START + 86400)


def test_far_time_zone():
    """Local time is 5.5 hours ahead of UTC meanwhile, and back to what it was after."""
    before = time.localtime(0)
    with far_time_zone():
        assert (time.localtime(0).tm_hour, time.localtime(0).tm_min) == (5, 30)
    assert time.localtime(0) == before


# R1's debug body reads every module's __version__, which some libraries deprecate.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_config_text(tmp_path):
    mirror = MemoryRegistry(tmp_path / "mirror", "dev:\n  mirroring:\n"
                            "    source: https://upstream.example\n")
    debug = MemoryRegistry(tmp_path / "debug", "dev:\n  debug: true\n")
    try:
        r = mirror.request("GET", "/v1/_ping")
        assert r.headers["X-Docker-Registry-Standalone"] == "mirror"
        r = debug.request("GET", "/v1/_ping")
        assert r.headers["X-Docker-Registry-Config"] == "dev" and "versions" in r.json()
    finally:
        mirror.close()
        debug.close()


def test_token_mode_refuses_before_the_index(tmp_path):
    """Token mode: a layer body without a token is refused; nothing is asked of the index."""
    registry = MemoryRegistry(tmp_path, "dev:\n  standalone: false\n")
    try:
        image_id = new_id()
        r = registry.request("GET", "/v1/_ping")
        assert r.headers["X-Docker-Registry-Standalone"] == "False"
        r = registry.request("PUT", f"/v1/images/{image_id}/layer", b"x" * 300000)
        assert (r.status, r.json()) == (401, {"error": "Requires authorization"})
        assert not (registry.storage / "images" / image_id).exists()
        assert registry.clock.tcpClients == []
    finally:
        registry.close()
