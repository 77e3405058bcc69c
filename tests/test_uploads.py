"""
Layer bodies over real sockets: streamed in (sized and chunked), streamed out with ranges,
and never half-visible when a client gives up.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

from tests.server import Server, wait_until
from twistreg.checksums import PayloadHasher

pytestmark = pytest.mark.integration

IMAGE = "1111111111111111111111111111111111111111111111111111111111111111"
IMAGE_JSON = json.dumps({"id": IMAGE}).encode()
MiB = 1024 * 1024


def pattern(size: int, seed: int = 0):
    """Deterministic non-repeating-looking bytes, generated in 1 MiB pieces."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    sent = 0
    while sent < size:
        piece = block[: min(MiB, size - sent)]
        sent += len(piece)
        yield piece


def put_json(server, image_id: str = IMAGE, body: bytes = IMAGE_JSON) -> None:
    assert server.request("PUT", f"/v1/images/{image_id}/json", body).status == 200


def raw_request(server, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head)
    return sock


def test_chunked_256_mib_round_trip(server, backend):
    """A docker-style chunked PUT of 256 MiB, checksum, then the same bytes back."""
    size = 256 * MiB
    put_json(server)
    expected = PayloadHasher(IMAGE_JSON)
    layer_sha = hashlib.sha256()
    for piece in pattern(size):
        expected.update(piece)
        layer_sha.update(piece)
    connection = server.connection(timeout=120)
    connection.request("PUT", f"/v1/images/{IMAGE}/layer", body=pattern(size),
                       encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"true")
    assert json.loads(backend.read(f"images/{IMAGE}/_checksum")) == [
        expected.checksum()]
    r = server.request("PUT", f"/v1/images/{IMAGE}/checksum",
                       headers={"X-Docker-Checksum-Payload": expected.checksum()})
    assert r.status == 200

    connection = server.connection(timeout=120)
    connection.request("GET", f"/v1/images/{IMAGE}/layer")
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Content-Length"] == str(size)
    received = hashlib.sha256()
    total = 0
    while chunk := response.read(MiB):
        received.update(chunk)
        total += len(chunk)
    assert total == size
    assert received.digest() == layer_sha.digest()


def test_sized_put_and_range_resume(server):
    """Docker resumes an interrupted pull with C{Range: bytes=<received>-<size>}."""
    layer = bytes(range(256)) * 20
    put_json(server)
    r = server.request("PUT", f"/v1/images/{IMAGE}/layer", layer)
    assert (r.status, r.body) == (200, b"true")
    r = server.request("GET", f"/v1/images/{IMAGE}/layer", headers={"Range": "bytes=100-5120"})
    assert r.status == 400  # still in progress
    r = server.request("PUT", f"/v1/images/{IMAGE}/checksum", headers={
        "X-Docker-Checksum-Payload":
        "sha256:197379464f261af42d5244148efc61ed93f41c6f75c9f0e751fff25394503d5e"})
    assert (r.status, r.body) == (200, b"true")
    r = server.request("GET", f"/v1/images/{IMAGE}/layer", headers={"Range": "bytes=100-5120"})
    assert r.status == 206
    assert r.headers["Content-Range"] == "bytes 100-5119/5120"
    assert r.headers["Content-Length"] == "5020"
    assert r.body == layer[100:]


def test_disconnect_mid_upload_keeps_nothing(server, backend):
    """
    A client that goes away mid-layer leaves the image in progress, no layer, no temporary
    file or unfinished multipart upload.
    """
    put_json(server)
    head = (f"PUT /v1/images/{IMAGE}/layer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {64 * MiB}\r\n\r\n").encode()
    sock = raw_request(server, head)
    for piece in pattern(8 * MiB):
        sock.sendall(piece)
    image_dir = f"images/{IMAGE}"
    wait_until(lambda: backend.uploading(image_dir))
    sock.close()
    wait_until(lambda: not backend.uploading(image_dir))
    assert backend.names(image_dir) == ["_inprogress", "ancestry", "json"]
    r = server.request("GET", f"/v1/images/{IMAGE}/json")
    assert r.json() == {"error": "Image is being uploaded, retry later"}


def test_failed_reupload_keeps_previous_layer(server, backend):
    """A second, aborted PUT while in progress leaves the first layer and checksum in place."""
    put_json(server)
    assert server.request("PUT", f"/v1/images/{IMAGE}/layer", b"first").status == 200
    checksum = backend.read(f"images/{IMAGE}/_checksum")
    sock = raw_request(server, (f"PUT /v1/images/{IMAGE}/layer HTTP/1.1\r\nHost: x\r\n"
                                f"Content-Length: 1000\r\n\r\n").encode() + b"x" * 10)
    sock.close()
    assert server.request("GET", "/v1/_ping").status == 200
    wait_until(lambda: not backend.uploading(f"images/{IMAGE}"))
    assert backend.read(f"images/{IMAGE}/layer") == b"first"
    assert backend.read(f"images/{IMAGE}/_checksum") == checksum


def test_rejected_upload_stores_nothing(server, backend):
    """A layer for an image without json is refused, and its body goes nowhere."""
    connection = server.connection()
    connection.request("PUT", f"/v1/images/{IMAGE}/layer", body=pattern(4 * MiB),
                       encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (404, {"error": "Image not found"})
    assert backend.names(f"images/{IMAGE}") == []


@pytest.mark.parametrize("chunked", [False, True])
def test_body_limit(server, backend, chunked):
    """Bodies other than layers are capped at 10 MiB: 413, nothing stored."""
    body = b" " * (10 * MiB) + b"{}"
    if chunked:
        connection = server.connection()
        connection.request("PUT", f"/v1/images/{IMAGE}/json",
                           body=iter([body[:MiB], body[MiB:]]), encode_chunked=True)
        response = connection.getresponse()
        status, answer = response.status, response.read()
    else:
        r = server.request("PUT", f"/v1/images/{IMAGE}/json", body)
        status, answer = r.status, r.body
    assert (status, json.loads(answer)) == (413, {"error": "Request body too large"})
    assert backend.names("images") == []


def test_stale_temporary_files_are_swept(tmp_path, storage):
    """Temporary files of a process that died are removed when the server starts."""
    image_dir = storage / "images" / IMAGE
    image_dir.mkdir(parents=True)
    dead = image_dir / ".tmp-999999999-abc-layer"
    dead.write_bytes(b"half")
    alive = image_dir / f".tmp-{os.getpid()}-abc-layer"
    alive.write_bytes(b"in flight")
    running = Server(tmp_path, storage).start()
    try:
        wait_until(lambda: not dead.exists())
        assert alive.exists()
    finally:
        running.stop()
