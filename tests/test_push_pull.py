"""
The docker 1.x push and pull sequences (docs/api.md, "A docker 1.x session"), against the
real server.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from tests.server import wait_until
from twistreg.checksums import payload_checksum

pytestmark = pytest.mark.integration

BASE = "a043bae1603803a839c0cb52f511d9cb8f68d9d9b0341314a5534ea92b26fa8a"
CHILD = "c0bbc6adf7089dd787b6a27f5baddd65bcd01aefb61ad7be0c45289c21d93e27"
UA = "docker/1.3.2 go/go1.3.3 git-commit/990021a kernel/3.16.0 os/linux arch/amd64"


def make_layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1400000000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def chunked(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def push_image(server, image_id: str, image_json: bytes, layer: bytes) -> None:
    assert server.request("GET", f"/v1/images/{image_id}/json").status == 404
    r = server.request(
        "PUT", f"/v1/images/{image_id}/json", image_json, {"Content-Type": "application/json"}
    )
    assert (r.status, r.body) == (200, b"true")
    connection = server.connection()
    connection.request("PUT", f"/v1/images/{image_id}/layer", body=chunked(layer),
                       headers={"Content-Type": "application/octet-stream"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"true")
    connection.close()
    r = server.request("PUT", f"/v1/images/{image_id}/checksum", headers={
        "X-Docker-Checksum": "tarsum+sha256:whatever",
        "X-Docker-Checksum-Payload": payload_checksum(image_json, layer),
    })
    assert (r.status, r.body) == (200, b"true")


def test_push_then_pull(server, backend):
    base_json = json.dumps({"id": BASE}).encode()
    child_json = json.dumps({"id": CHILD, "parent": BASE}).encode()
    base_layer = make_layer({"etc/hello.txt": b"hello world\n"})
    child_layer = make_layer({"etc/child.txt": b"child\n" * 1000})

    r = server.request("POST", "/v1/users/", b'{"username": "u", "password": "p", "email": "e@x"}')
    assert (r.status, r.body) == (201, b'"User Created"')

    r = server.request("GET", "/v1/_ping")
    assert r.status == 200 and r.headers["X-Docker-Registry-Standalone"] == "True"
    r = server.request(
        "PUT", "/v1/repositories/foo/bar/",
        json.dumps([{"id": BASE}, {"Tag": "latest", "id": CHILD}]).encode(),
        {"X-Docker-Token": "true", "Host": "reg.example.com:5000"},
    )
    assert (r.status, r.body) == (200, b'""')
    assert r.headers["X-Docker-Endpoints"] == "reg.example.com:5000"
    assert r.headers["X-Docker-Token"].startswith("Token signature=")
    assert r.headers["X-Docker-Token"].endswith(',repository="foo/bar",access=write')

    push_image(server, BASE, base_json, base_layer)
    push_image(server, CHILD, child_json, child_layer)

    for tag in ("latest", "v1"):
        r = server.request("PUT", f"/v1/repositories/foo/bar/tags/{tag}",
                           json.dumps(CHILD).encode(), {"User-Agent": UA})
        assert (r.status, r.body) == (200, b"true")
    checksums = [payload_checksum(base_json, base_layer), payload_checksum(child_json, child_layer)]
    r = server.request("PUT", "/v1/repositories/foo/bar/images", json.dumps(
        [{"checksum": checksums[0], "id": BASE},
         {"Tag": "latest", "checksum": checksums[1], "id": CHILD}]).encode())
    assert r.status == 204 and r.body == b""

    # The pull.
    r = server.request("GET", "/v1/repositories/foo/bar/images", headers={"X-Docker-Token": "true"})
    assert r.status == 200
    assert [i["id"] for i in r.json()] == [BASE, CHILD]
    assert r.headers["X-Docker-Token"].endswith(',repository="foo/bar",access=read')
    r = server.request("GET", "/v1/repositories/foo/bar/tags")
    assert r.json() == {"latest": CHILD, "v1": CHILD}
    r = server.request("GET", "/v1/repositories/foo/bar/tags/latest")
    assert r.json() == CHILD
    r = server.request("GET", f"/v1/images/{CHILD}/ancestry")
    assert r.json() == [CHILD, BASE]
    for image_id, image_json, layer, checksum in (
        (BASE, base_json, base_layer, checksums[0]),
        (CHILD, child_json, child_layer, checksums[1]),
    ):
        r = server.request("GET", f"/v1/images/{image_id}/json")
        assert (r.status, r.body) == (200, image_json)
        assert r.headers["X-Docker-Size"] == str(len(layer))
        assert r.headers["X-Docker-Checksum-Payload"] == checksum
        r = server.request("GET", f"/v1/images/{image_id}/layer")
        assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(layer).digest()

    r = server.request("GET", "/v1/repositories/foo/bar/json")
    assert r.json() == {"arch": "amd64", "docker_go_version": "go1.3.3",
                        "docker_version": "1.3.2", "kernel": "3.16.0",
                        "last_update": r.json()["last_update"], "os": "linux"}

    # The tree 0.9.1 would have written, and the bridge's layer facts, which 0.9.1 never reads
    # (computed in the background once the image is complete).
    wait_until(lambda: backend.read(f"images/{BASE}/_layer_facts") is not None)
    assert backend.names(f"images/{BASE}") == [
        "_checksum", "_layer_facts", "ancestry", "json", "layer"]
    assert backend.names("repositories/foo/bar") == [
        "_index_images", "json", "tag_latest", "tag_v1", "taglatest_json", "tagv1_json"]
    assert backend.read("repositories/foo/bar/tag_latest") == CHILD.encode()
    assert json.loads(backend.read(f"images/{CHILD}/_checksum")) == [checksums[1]]
