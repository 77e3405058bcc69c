"""
Pull-through mirroring (docs/api.md) with a second real twistreg as the upstream.
"""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from tests.server import Server, wait_until
from tests.test_push_pull import BASE, CHILD, make_layer, push_image
from tests.test_uploads import pattern
from twistreg.registry.mirror import forwarded_headers

MiB = 1024 * 1024


@pytest.fixture
def upstream(tmp_path):
    running = Server(tmp_path / "up", tmp_path / "up" / "storage")
    (tmp_path / "up").mkdir()
    running.start()
    yield running
    running.stop()


def start_mirror(tmp_path, upstream_port: int) -> Server:
    directory = tmp_path / "mirror"
    directory.mkdir()
    config = directory / "config.yml"
    config.write_text(f"dev:\n  standalone: true\n  search_backend: sqlite\n  mirroring:\n"
                      f"    source: http://127.0.0.1:{upstream_port}\n    timeout: 2\n")
    return Server(directory, directory / "storage", "--config", str(config)).start()


@pytest.mark.integration
def test_pull_through_then_without_upstream(tmp_path, upstream):
    base_json = json.dumps({"id": BASE}).encode()
    child_json = json.dumps({"id": CHILD, "parent": BASE}).encode()
    layers = {BASE: make_layer({"a": b"base"}), CHILD: make_layer({"b": b"child" * 5000})}
    push_image(upstream, BASE, base_json, layers[BASE])
    push_image(upstream, CHILD, child_json, layers[CHILD])
    upstream.request("PUT", "/v1/repositories/foo/bar/tags/latest", json.dumps(CHILD).encode())
    upstream.request("PUT", "/v1/repositories/foo/bar/images", json.dumps(
        [{"id": BASE}, {"id": CHILD}]).encode())
    mirror = start_mirror(tmp_path, upstream.port)
    try:
        assert mirror.request("GET", "/v1/_ping").headers["X-Docker-Registry-Standalone"] == (
            "mirror")
        r = mirror.request("GET", "/v1/repositories/foo/bar/images")
        assert [i["id"] for i in r.json()] == [BASE, CHILD]
        assert r.headers["X-Docker-Token"].endswith(',repository="foo/bar",access=read')
        assert mirror.request("GET", "/v1/repositories/foo/bar/tags").json() == {"latest": CHILD}
        assert mirror.request("GET", "/v1/repositories/foo/bar/tags/latest").json() == CHILD
        assert mirror.request("GET", f"/v1/images/{CHILD}/ancestry").json() == [CHILD, BASE]
        for image_id, image_json in ((BASE, base_json), (CHILD, child_json)):
            r = mirror.request("GET", f"/v1/images/{image_id}/json")
            assert (r.status, r.body) == (200, image_json)
            assert r.headers["X-Docker-Size"] == str(len(layers[image_id]))
            assert r.headers["X-Docker-Checksum-Payload"].startswith("sha256:")
            r = mirror.request("GET", f"/v1/images/{image_id}/layer")
            assert (r.status, r.body) == (200, layers[image_id])
        stored = mirror.storage / "images" / CHILD
        assert (stored / "layer").read_bytes() == layers[CHILD]
        assert (stored / "json").read_bytes() == child_json
        assert not (mirror.storage / "repositories").exists()  # tags are not kept

        upstream.stop()
        for image_id in (BASE, CHILD):
            r = mirror.request("GET", f"/v1/images/{image_id}/layer")
            assert hashlib.sha256(r.body).digest() == hashlib.sha256(layers[image_id]).digest()
        assert mirror.request("GET", f"/v1/images/{CHILD}/ancestry").status == 200
        r = mirror.request("GET", "/v1/repositories/foo/bar/tags")
        assert (r.status, r.json()) == (404, {"error": "Repository not found"})
        r = mirror.request("GET", "/v1/repositories/foo/bar/json")
        assert r.status == 404 and r.json()["os"] == "linux"
    finally:
        mirror.stop()


@pytest.mark.integration
def test_client_gone_mid_layer_stores_nothing(tmp_path, upstream):
    image_json = json.dumps({"id": BASE}).encode()
    upstream.request("PUT", f"/v1/images/{BASE}/json", image_json)
    connection = upstream.connection(timeout=60)
    connection.request("PUT", f"/v1/images/{BASE}/layer", body=pattern(64 * MiB),
                       encode_chunked=True)
    assert connection.getresponse().status == 200
    checksum = json.loads((upstream.storage / "images" / BASE / "_checksum").read_bytes())[0]
    upstream.request("PUT", f"/v1/images/{BASE}/checksum",
                     headers={"X-Docker-Checksum-Payload": checksum})
    mirror = start_mirror(tmp_path, upstream.port)
    try:
        client = socket.create_connection(("127.0.0.1", mirror.port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(f"GET /v1/images/{BASE}/layer HTTP/1.1\r\nHost: m\r\n\r\n".encode())
        received = 0
        while received < 2 * MiB:
            received += len(client.recv(65536))
        image_dir = mirror.storage / "images" / BASE
        assert any(p.name.startswith(".tmp-") for p in image_dir.iterdir())
        client.close()
        wait_until(lambda: not any(p.name.startswith(".tmp-") for p in image_dir.iterdir()))
        assert not (image_dir / "layer").exists()
        r = mirror.request("GET", f"/v1/images/{BASE}/layer")
        assert r.status == 200 and len(r.body) == 64 * MiB
        wait_until(lambda: (image_dir / "layer").exists())
    finally:
        mirror.stop()


@pytest.mark.integration
def test_upstream_down_gives_local_answers(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    mirror = start_mirror(tmp_path, port)
    try:
        r = mirror.request("GET", f"/v1/images/{BASE}/json")
        assert (r.status, r.json()) == (404, {"error": "Image not found"})
        r = mirror.request("GET", f"/v1/images/{BASE}/layer")
        assert (r.status, r.json()) == (404, {"error": "Image not found"})
        r = mirror.request("GET", "/v1/repositories/foo/bar/images")
        assert (r.status, r.json()) == (404, {"error": "images not found"})
    finally:
        mirror.stop()


@pytest.mark.integration
def test_search_merges_upstream(tmp_path, upstream):
    upstream.request("PUT", f"/v1/images/{BASE}/json", json.dumps({"id": BASE}).encode())
    for name in ("foo/bar", "foo/shared"):
        upstream.request("PUT", f"/v1/repositories/{name}/tags/latest", json.dumps(BASE).encode())
    mirror = start_mirror(tmp_path, upstream.port)
    try:
        mirror.request("PUT", f"/v1/images/{BASE}/json", json.dumps({"id": BASE}).encode())
        for name in ("foo/local", "foo/shared"):
            mirror.request("PUT", f"/v1/repositories/{name}/tags/latest",
                           json.dumps(BASE).encode())
        r = mirror.request("GET", "/v1/search?q=foo&n=25")
        assert r.json() == {"num_results": 3, "query": "foo", "results": [
            {"description": "", "name": "foo/local"},
            {"description": "", "name": "foo/shared"},
            {"description": "", "name": "foo/bar"},
        ]}
    finally:
        mirror.stop()


def test_forwarded_headers():
    """§6: hop-by-hop, Range and If-* stay here; the rest goes as the bytes the client sent."""
    sent = {"Host": "mirror", "Connection": "keep-alive", "Range": "bytes=0-1",
            "If-Modified-Since": "x", "if-none-match": "y", "Content-Length": "0",
            "Authorization": b"Token signature=\xe9".decode("latin-1"),
            "Cookie": "a=b", "User-Agent": "docker/1.3.2"}
    forwarded = forwarded_headers(sent)
    assert sorted(forwarded.getAllRawHeaders()) == [
        (b"Authorization", [b"Token signature=\xe9"]),
        (b"Cookie", [b"a=b"]),
        (b"User-Agent", [b"docker/1.3.2"]),
    ]
