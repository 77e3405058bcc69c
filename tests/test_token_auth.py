"""
Token mode (docs/api.md) against a real index served by the test: tokens validated and
cached, private repositories, parent access, and an index that hangs or is down.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.server import Server
from tests.stub_index import StubIndex

pytestmark = pytest.mark.integration

IMAGE = "a043bae1603803a839c0cb52f511d9cb8f68d9d9b0341314a5534ea92b26fa8a"
CHILD = "c0bbc6adf7089dd787b6a27f5baddd65bcd01aefb61ad7be0c45289c21d93e27"
OTHER = "b" * 64
LISTED = "d" * 64


def token(signature: str, repository: str = "foo/bar", access: str = "write") -> dict:
    return {"Authorization":
            f'Token signature={signature},repository="{repository}",access={access}'}


@pytest.fixture(scope="module")
def index():
    stub = StubIndex()
    stub.valid = {"good", "fresh"}
    stub.images = {"foo/bar": [IMAGE, CHILD, LISTED]}
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, index):
    tmp = tmp_path_factory.mktemp("token")
    config = tmp / "config.yml"
    config.write_text(
        f"dev:\n  standalone: false\n  index_endpoint: {index.url}/\n"
        "  index_timeout: 1\n  token_cache_ttl: 60\n"
    )
    running = Server(tmp, tmp / "storage", "--config", str(config)).start()
    yield running
    running.stop()


def test_no_token_is_refused(registry):
    r = registry.request("GET", f"/v1/images/{IMAGE}/json")
    assert (r.status, r.json()) == (401, {"error": "Requires authorization"})
    assert r.headers["WWW-Authenticate"] == "Token"
    r = registry.request("GET", f"/v1/images/{IMAGE}/json", headers={"Authorization": "Basic x"})
    assert r.status == 401


def test_open_routes_and_no_index_routes(registry):
    assert registry.request("GET", "/v1/_ping").headers["X-Docker-Registry-Standalone"] == "False"
    assert registry.request("GET", "/v1/users").status == 404
    r = registry.request("GET", "/v1/repositories/foo/bar/images", headers=token("good"))
    assert r.status == 405


def test_push_with_a_write_token_then_cached(registry, index):
    before = len(index.calls)
    headers = token("good")
    body = json.dumps({"id": IMAGE}).encode()
    assert registry.request("PUT", f"/v1/images/{IMAGE}/json", body, headers).status == 200
    r = registry.request("PUT", f"/v1/images/{IMAGE}/layer", b"layer", headers)
    assert (r.status, r.body) == (200, b"true")
    r = registry.request("PUT", "/v1/repositories/foo/bar/tags/latest",
                         json.dumps(IMAGE).encode(), headers)
    assert r.status == 200
    calls = index.calls[before:]
    assert calls == [("/v1/repositories/foo/bar/images", headers["Authorization"])]
    listing = registry.storage / "repositories/foo/bar/_images_list"
    assert json.loads(listing.read_bytes()) == [IMAGE, CHILD, LISTED]


def test_image_must_be_listed(registry):
    r = registry.request("PUT", f"/v1/images/{OTHER}/json",
                         json.dumps({"id": OTHER}).encode(), token("good"))
    assert (r.status, r.json()) == (400, {"error": "This image does not belong to the repository"})


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", f"/v1/images/{IMAGE}/json", token("good", access="write")),
        ("PUT", "/v1/repositories/foo/bar/tags/x", token("good", access="read")),
        ("DELETE", "/v1/repositories/foo/bar/tags/x", token("good", access="read")),
        ("GET", "/v1/repositories/foo/other/tags", token("good", access="read")),
        ("GET", "/v1/repositories/foo/bar/tags", token("good", "foo/bar/baz", "read")),
        ("GET", "/v1/repositories/foo/bar/tags", token("bad", access="read")),
        ("GET", "/v1/repositories/foo/bar/tags", {"Authorization": "Token nothing"}),
    ],
)
def test_refusals(registry, method, path, headers):
    r = registry.request(method, path, b"", headers)
    assert (r.status, r.json()) == (401, {"error": "Requires authorization"})


def test_read_token_allows_head(registry):
    r = registry.request("HEAD", "/v1/repositories/foo/bar/tags", headers=token("good",
                                                                                access="read"))
    assert r.status == 200


def test_private_repository(registry, index):
    write = token("good")
    body = json.dumps({"id": CHILD, "parent": IMAGE}).encode()
    # The parent check asks the index for the parent, which it does not grant yet.
    r = registry.request("PUT", f"/v1/images/{CHILD}/json", body, write)
    assert (r.status, r.json()) == (400, {"error": "Image depends on an unauthorized parent"})
    index.granted.add(("foo/bar", IMAGE))
    assert registry.request("PUT", f"/v1/images/{CHILD}/json", body, write).status == 200

    assert registry.request("PUT", "/v1/repositories/foo/bar/properties",
                            b'{"access": "private"}', write).status == 200
    read = token("good", access="read")
    assert registry.request("GET", f"/v1/images/{IMAGE}/json", headers=read).status == 400
    registry.request("PUT", f"/v1/images/{IMAGE}/checksum", headers={
        **write, "X-Docker-Checksum-Payload": json.loads(
            (registry.storage / "images" / IMAGE / "_checksum").read_bytes())[0]})
    assert registry.request("GET", f"/v1/images/{IMAGE}/json", headers=read).status == 200
    index.granted.discard(("foo/bar", IMAGE))
    other_read = token("fresh", access="read")
    r = registry.request("GET", f"/v1/images/{IMAGE}/json", headers=other_read)
    assert (r.status, r.json()) == (404, {"error": "Image not found"})


def test_slow_index_is_502(tmp_path, index):
    config = tmp_path / "config.yml"
    config.write_text(f"dev:\n  standalone: false\n  index_endpoint: {index.url}\n"
                      "  index_timeout: 0.5\n")
    running = Server(tmp_path, tmp_path / "storage", "--config", str(config)).start()
    index.delay = 2
    try:
        r = running.request("GET", "/v1/repositories/foo/bar/tags", headers=token("slow",
                                                                                  access="read"))
        assert (r.status, r.json()) == (502, {"error": "Index unreachable"})
    finally:
        index.delay = 0
        running.stop()


def test_index_down_is_502(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    config = tmp_path / "config.yml"
    config.write_text(f"dev:\n  standalone: false\n  index_endpoint: http://127.0.0.1:{port}\n")
    running = Server(tmp_path, tmp_path / "storage", "--config", str(config)).start()
    try:
        r = running.request("GET", f"/v1/images/{IMAGE}/json", headers=token("x", access="read"))
        assert (r.status, r.json()) == (502, {"error": "Index unreachable"})
    finally:
        running.stop()


def test_disable_token_auth_opens_registry_routes(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("dev:\n  standalone: false\n  disable_token_auth: true\n")
    running = Server(tmp_path, tmp_path / "storage", "--config", str(config)).start()
    try:
        r = running.request("PUT", f"/v1/images/{IMAGE}/json", json.dumps({"id": IMAGE}).encode())
        assert r.status == 200
        assert running.request("GET", "/v1/users").status == 404
    finally:
        running.stop()


def test_v2_asks_for_credentials_it_cannot_check(registry):
    """Behind an index, V2 clients get no token: every V2 route is the spec's 401."""
    for path in ("/v2/", "/v2/foo/bar/manifests/latest"):
        r = registry.request("GET", path, headers=token("good"))
        assert r.status == 401
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic x"}, token("good", access="read"), token("bad")],
)
def test_layer_upload_needs_a_write_token(registry, headers):
    """R4 asks the authorizer before a byte of the body is stored (the layer stays)."""
    write = token("good")
    registry.request("PUT", f"/v1/images/{LISTED}/json", json.dumps({"id": LISTED}).encode(),
                     write)
    layer = registry.storage / "images" / LISTED / "layer"
    before = layer.read_bytes() if layer.exists() else None
    for path in (f"/v1/images/{LISTED}/layer", f"/v1/images/{'e' * 64}/layer"):
        r = registry.request("PUT", path, b"overwritten", headers)
        assert (r.status, r.json()) == (401, {"error": "Requires authorization"})
        assert r.headers["WWW-Authenticate"] == "Token"
    assert (layer.read_bytes() if layer.exists() else None) == before
