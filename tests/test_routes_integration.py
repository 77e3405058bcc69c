"""
The route rules that need the real server: a C{twist twistreg} process on a real socket, in
a time zone far from UTC.  The other route tests run in memory (tests/memory.py); these check
what memory cannot (the process's clock and time zone, its log output, bytes on a socket) and
that the memory harness answers as the real server does.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.backends import open_backend
from tests.memory import MemoryRegistry
from tests.routes import (
    assert_cacheable,
    assert_error,
    image_json,
    new_id,
    new_name,
    push,
    put_tag,
    start_module_server,
    write_files,
)
from tests.server import Response, wait_until
from twistreg.checksums import payload_checksum

pytestmark = pytest.mark.integration

LAYER = bytes(range(256)) * 4


@pytest.fixture(scope="module", params=["local", "s3"])
def server(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    yield from start_module_server(tmp, open_backend(request, request.param, tmp))


def raw_request(server, data: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send C{data} as it is (for what http.client would not send), return the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


def test_dates_in_utc_from_the_process_clock(server):
    """In a far time zone: Expires a year from now in GMT, tag times in UTC seconds."""
    image_id = new_id()
    push(server, image_id, LAYER)
    assert_cacheable(server.request("GET", f"/v1/images/{image_id}/layer"), 200, LAYER,
                     "application/octet-stream")
    name = new_name()
    before = int(time.time())
    assert put_tag(server, f"foo/{name}", "v1", image_id).status == 200
    after = int(time.time())
    last_update = server.request("GET", f"/v1/repositories/foo/{name}/tags/v1/json").json()
    assert before <= last_update["last_update"] <= after


def test_raw_request_lines(server):
    """Paths a client library might rewrite reach the routes as sent."""
    image_id = new_id()
    push(server, image_id, None)
    status, headers, body = raw_request(
        server, f"PUT //v1/images/{image_id}/layer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Content-Length: 3\r\n\r\nabc".encode())
    assert " 500 " not in status and headers["Content-Type"] == "application/json", body
    status, _, _ = raw_request(
        server, b"GET /v1/../../x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status.split()[1] == "404"


def test_endpoints_without_host_header(server):
    """No Host header: the address and port this server listens on."""
    status, headers, _ = raw_request(
        server, f"PUT /v1/repositories/foo/{new_name()}/ HTTP/1.0\r\nContent-Length: 2\r\n\r\n[]"
        .encode())
    assert status.split()[1] == "200", status
    assert headers["X-Docker-Endpoints"] == f"127.0.0.1:{server.port}"


def test_repeated_header_first_wins(server):
    """R5 reads the first X-Docker-Checksum-Payload of the request."""
    image_id = new_id()
    body = push(server, image_id, b"layer", complete=False)
    good = payload_checksum(body, b"layer")
    for values, status in ((["sha256:" + "0" * 64, good], 400), ([good, "sha256:x"], 200)):
        connection = server.connection()
        connection.putrequest("PUT", f"/v1/images/{image_id}/checksum")
        for value in values:
            connection.putheader("X-Docker-Checksum-Payload", value)
        connection.putheader("Content-Length", "0")
        connection.endheaders()
        response = connection.getresponse()
        assert (response.status, response.read()) == (
            status, b'{"error": "Checksum mismatch"}' if status == 400 else b"true")
        connection.close()


def test_internal_error_logged(server):
    """An unexpected exception: 500 JSON, and the traceback in the process's log."""
    if not isinstance(server.storage, Path):
        pytest.skip("needs a directory in place of a file, which S3 cannot hold")
    image_id, name = new_id(), new_name()
    push(server, image_id, b"")
    # A directory where the tag file goes: storing the tag fails in a way nothing expects.
    write_files(server.storage, {f"repositories/foo/{name}/tag_v1/x": ""})
    assert_error(put_tag(server, f"foo/{name}", "v1", image_id), 500, "Internal server error")
    wait_until(lambda: name in server.text() and "Traceback" in server.text())
    assert server.request("GET", "/v1/_ping").status == 200


# The memory harness answers as the real server does ------------------------------------------

#: Headers that differ between two answers to the same request for good reasons.
_VARYING = {"Date", "Expires", "X-Docker-Token", "WWW-Authenticate", "X-Docker-Endpoints"}


def _wire(r: Response) -> tuple:
    headers = sorted((k, v) for k, v in r.headers.items() if k not in _VARYING)
    return r.status, headers, r.body


def test_memory_answers_like_the_server(server, tmp_path):
    """The same requests, in the same order, to the real server and to memory."""
    memory = MemoryRegistry(tmp_path)
    try:
        image_id, name = new_id(), new_name()
        requests = [
            ("GET", "/v1/_ping", None, None),
            ("HEAD", "/v1/_ping", None, None),
            ("GET", "/", None, None),
            ("GET", "/v1/nowhere", None, None),
            ("HEAD", "/v1/nowhere", None, None),
            ("POST", f"/v1/images/{image_id}/json", b"{}", None),
            ("OPTIONS", f"/v1/images/{image_id}/json", None, None),
            ("GET", "/v1/repositories/foo/%ff/tags", None, None),
            ("PUT", f"/v1/images/{image_id}/json", image_json(image_id), None),
            ("PUT", f"/v1/images/{image_id}/layer", LAYER, None),
            ("PUT", f"/v1/images/{image_id}/checksum", None,
             {"X-Docker-Checksum-Payload": payload_checksum(image_json(image_id), LAYER)}),
            ("GET", f"/v1/images/{image_id}/layer", None, {"Range": "bytes=1-2"}),
            ("GET", f"/v1/images/{image_id}/layer", None, {"Range": "bytes=2000-"}),
            ("HEAD", f"/v1/images/{image_id}/layer", None, None),
            ("GET", f"/v1/images/{image_id}/json", None, {"If-Modified-Since": "x"}),
            ("PUT", f"/v1/repositories/foo/{name}/tags/v1", json.dumps(image_id).encode(), None),
            ("PUT", f"/v1/repositories/foo/{name}/images", b"[]", None),
            ("GET", f"/v1/repositories/foo/{name}/tags", None, None),
            ("PUT", "/v1/users/x", None, None),
            ("PUT", f"/v1/images/{new_id()}/json", b"x" * (10 * 1024 * 1024 + 1), None),
        ]
        for method, path, body, headers in requests:
            real = server.request(method, path, body, headers)
            assert _wire(memory.request(method, path, body, headers)) == _wire(real), (
                method, path)
    finally:
        memory.close()
