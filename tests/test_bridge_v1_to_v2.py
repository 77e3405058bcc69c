"""V1 images pulled over V2 (twistreg/bridge/v1_to_v2.py), in memory over the real Site."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import tarfile

import pytest

from tests.memory import MemoryRegistry
from twistreg.checksums import payload_checksum

BASE = "a1" * 32
CHILD = "b2" * 32
DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
OCI = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = {"Accept": f"{DOCKER}, {OCI}"}


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1400000000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


BASE_TAR = tar_of({"etc/hello": b"hello world\n"})
BASE_LAYER = gzip.compress(BASE_TAR, mtime=0)
EMPTY_LAYER = gzip.compress(tar_of({}), mtime=0)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def v1_json(image_id: str, parent: str | None = None, command: str = "/bin/sh") -> dict:
    """The json docker 1.x pushed for an image made by C{command}."""
    document = {"id": image_id, "created": "2014-10-01T00:00:00Z", "architecture": "amd64",
                "os": "linux", "config": {"Cmd": [command]},
                "container_config": {"Cmd": ["/bin/sh", "-c", f"#(nop) {command}"]}}
    if parent:
        document["parent"] = parent
    return document


def push_v1(registry, image_id: str, layer: bytes, parent: str | None = None,
            command: str = "/bin/sh") -> None:
    body = json.dumps(v1_json(image_id, parent, command)).encode()
    assert registry.request("PUT", f"/v1/images/{image_id}/json", body).status == 200
    assert registry.request("PUT", f"/v1/images/{image_id}/layer", layer).status == 200
    assert registry.request("PUT", f"/v1/images/{image_id}/checksum", headers={
        "X-Docker-Checksum-Payload": payload_checksum(body, layer)}).status == 200


def tag_v1(registry, tag: str, image_id: str) -> None:
    assert registry.request("PUT", f"/v1/repositories/foo/bar/tags/{tag}",
                            json.dumps(image_id).encode()).status == 200


@pytest.fixture
def registry(tmp_path):
    running = MemoryRegistry(tmp_path)
    push_v1(running, BASE, BASE_LAYER)
    push_v1(running, CHILD, EMPTY_LAYER, parent=BASE, command="ENV A=b")
    tag_v1(running, "latest", CHILD)
    yield running
    running.close()


def test_a_v1_tag_is_pulled_over_v2_with_its_layers_as_blobs(registry):
    answer = registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == DOCKER
    manifest = json.loads(answer.body)
    assert answer.headers["Docker-Content-Digest"] == sha256(answer.body)
    # The empty layer is history only; the base layer is the V1 file, as stored.
    assert [(layer["digest"], layer["size"]) for layer in manifest["layers"]] == [
        (sha256(BASE_LAYER), len(BASE_LAYER))]
    blob = registry.request("GET", f"/v2/foo/bar/blobs/{sha256(BASE_LAYER)}")
    assert (blob.status, blob.body) == (200, BASE_LAYER)
    config_answer = registry.request("GET", f"/v2/foo/bar/blobs/{manifest['config']['digest']}")
    assert sha256(config_answer.body) == manifest["config"]["digest"]
    config = json.loads(config_answer.body)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [sha256(BASE_TAR)]}
    assert [entry.get("empty_layer", False) for entry in config["history"]] == [False, True]
    assert config["history"][1]["created_by"] == "/bin/sh -c #(nop) ENV A=b"
    assert (config["architecture"], config["os"], config["config"]) == (
        "amd64", "linux", {"Cmd": ["ENV A=b"]})
    assert "id" not in config and "parent" not in config


def test_later_pulls_get_the_same_bytes_and_the_digest_is_pullable(registry):
    first = registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    again = registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    assert again.body == first.body
    digest = first.headers["Docker-Content-Digest"]
    assert registry.request("GET", f"/v2/foo/bar/manifests/{digest}",
                            headers=ACCEPT).body == first.body


def test_no_byte_of_a_layer_is_copied(registry):
    registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    hex_digest = sha256(BASE_LAYER).split(":")[1]
    blobs = registry.storage / "docker/registry/v2/blobs/sha256"
    assert not (blobs / hex_digest[:2] / hex_digest / "data").exists()


def test_a_tag_moved_or_deleted_with_v1_moves_in_the_v2_view_at_once(registry):
    before = registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    tag_v1(registry, "latest", BASE)
    moved = registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    assert moved.status == 200 and moved.body != before.body
    assert len(json.loads(registry.request(
        "GET", f"/v2/foo/bar/blobs/{json.loads(moved.body)['config']['digest']}").body)[
        "history"]) == 1
    assert registry.request("DELETE", "/v1/repositories/foo/bar/tags/latest").status == 200
    gone = registry.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
    assert gone.status == 404


def test_a_layer_v2_clients_cannot_take_is_a_clear_404(tmp_path):
    running = MemoryRegistry(tmp_path)
    try:
        push_v1(running, BASE, bz2.compress(BASE_TAR))
        tag_v1(running, "latest", BASE)
        answer = running.request("GET", "/v2/foo/bar/manifests/latest", headers=ACCEPT)
        assert answer.status == 404
        error = answer.json()["errors"][0]
        assert error["code"] == "MANIFEST_UNKNOWN" and "bzip2" in error["message"]
    finally:
        running.close()


def test_a_one_part_v2_name_is_a_library_repository(tmp_path):
    running = MemoryRegistry(tmp_path)
    try:
        push_v1(running, BASE, BASE_LAYER)
        assert running.request("PUT", "/v1/repositories/library/busybox/tags/1",
                               json.dumps(BASE).encode()).status == 200
        assert running.request("GET", "/v2/busybox/manifests/1", headers=ACCEPT).status == 200
    finally:
        running.close()


def test_v1_tags_are_listed_with_the_v2_ones(registry):
    tag_v1(registry, "old", BASE)
    # An older tree may hold a tag V1 no longer takes, and no V2 client could name.
    (registry.storage / "repositories/foo/bar/tag_%24weird").write_text(BASE)
    assert registry.request("GET", "/v2/foo/bar/tags/list").json() == {
        "name": "foo/bar", "tags": ["latest", "old"]}
    assert registry.request("GET", "/v2/foo/bar/tags/list?n=1").json()["tags"] == ["latest"]
    assert registry.request("GET", "/v2/foo/none/tags/list").status == 404
