"""
V2 images pulled over V1 (twistreg/bridge/v2_to_v1.py) and the one tag namespace of both
protocols (twistreg/bridge/tagspace.py), in memory over the real Site.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil

import pytest

from tests.memory import STANDALONE, MemoryRegistry
from tests.test_bridge_v1_to_v2 import ACCEPT, BASE, BASE_LAYER, push_v1, sha256, tag_v1, tar_of
from tests.test_v2_routes import push_blob
from twistreg.bridge.v2_to_v1 import NotBridgeable, v1_images
from twistreg.oci.manifests import parse_manifest

DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
NAME = "foo/bar"

TARS = [tar_of({"etc/base": b"base\n"}), tar_of({"usr/app": b"app" * 1000})]
LAYERS = [gzip.compress(tar, mtime=0) for tar in TARS]
HISTORY = [
    {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:base in /"},
    {"created": "2024-01-02T00:00:00Z", "created_by": "/bin/sh -c #(nop)  ENV A=b",
     "empty_layer": True},
    {"created": "2024-01-03T00:00:00Z", "created_by": "/bin/sh -c make", "comment": "built"},
]


def config_of(layers: list[bytes] = LAYERS, tars: list[bytes] = TARS, **extra) -> bytes:
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-03T00:00:00Z",
              "config": {"Cmd": ["/app"], "Env": ["A=b"]},
              "container_config": {"Cmd": ["/bin/sh", "-c", "make"]},
              "history": HISTORY if len(layers) == 2 else [],
              "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for tar in tars]}}
    config.update(extra)
    return json.dumps(config).encode()


def manifest_of(config: bytes, layers: list[bytes], layer_type: str = DOCKER_LAYER) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256(config)},
        "layers": [{"mediaType": layer_type, "size": len(layer), "digest": sha256(layer)}
                   for layer in layers]}).encode()


def push_v2(registry, tag: str, layers: list[bytes] = LAYERS, config: bytes | None = None,
            name: str = NAME) -> bytes:
    """A V2 push as docker makes it: the blobs, then the manifest by tag."""
    config = config_of() if config is None else config
    for blob in (*layers, config):
        push_blob(registry, blob, name)
    manifest = manifest_of(config, layers)
    answer = registry.request("PUT", f"/v2/{name}/manifests/{tag}", manifest,
                              {"Content-Type": DOCKER})
    assert answer.status == 201, answer
    return manifest


@pytest.fixture
def registry(tmp_path):
    running = MemoryRegistry(tmp_path)
    push_v2(running, "latest")
    yield running
    running.close()


def v1_tags(registry, name: str = NAME) -> dict[str, str]:
    answer = registry.request("GET", f"/v1/repositories/{name}/tags")
    assert answer.status == 200, answer
    return answer.json()


def test_a_v2_tag_is_pulled_over_v1_one_image_per_layer(registry):
    top = v1_tags(registry)["latest"]
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags/latest").json() == top
    ancestry = registry.request("GET", f"/v1/images/{top}/ancestry").json()
    assert len(ancestry) == 2 and ancestry[0] == top
    base = ancestry[1]
    # The layers are the V2 blobs, byte for byte.
    for image_id, layer in zip(reversed(ancestry), LAYERS):
        answer = registry.request("GET", f"/v1/images/{image_id}/layer")
        assert (answer.status, answer.body) == (200, layer)
        assert registry.request("GET", f"/v1/images/{image_id}/layer",
                                headers={"Range": "bytes=0-9"}).body == layer[:10]
    top_answer = registry.request("GET", f"/v1/images/{top}/json")
    document = top_answer.json()
    assert (document["id"], document["parent"]) == (top, base)
    assert document["config"] == {"Cmd": ["/app"], "Env": ["A=b"]}
    assert "history" not in document and "rootfs" not in document
    assert top_answer.headers["X-Docker-Size"] == str(len(LAYERS[1]))
    assert top_answer.headers["X-Docker-Checksum-Payload"] == sha256(
        top_answer.body + b"\n" + LAYERS[1])
    lower = registry.request("GET", f"/v1/images/{base}/json").json()
    assert lower == {"id": base, "created": "2024-01-01T00:00:00Z", "architecture": "amd64",
                     "os": "linux", "container_config": {
                         "Cmd": ["/bin/sh -c #(nop) ADD file:base in /"]}}
    images = registry.request("GET", f"/v1/repositories/{NAME}/images").json()
    assert images == [{"id": base}, {"id": top}]


def test_v1_ids_follow_the_chain_of_layers_and_the_config():
    config = config_of()
    manifest = parse_manifest(manifest_of(config, LAYERS), DOCKER)
    images = v1_images(NAME, manifest, config)
    assert [image.image_id for image in v1_images("other/name", manifest, config)] == [
        image.image_id for image in images]
    # The same base under another top: the base keeps its id, the top gets another.
    other = config_of(config={"Cmd": ["/other"]})
    others = v1_images(NAME, parse_manifest(manifest_of(other, LAYERS), DOCKER), other)
    assert others[0].image_id == images[0].image_id
    assert others[1].image_id != images[1].image_id
    assert images[1].ancestry == (images[1].image_id, images[0].image_id)
    # The history entry of the top layer is the one after the empty ENV.
    assert json.loads(images[0].document)["created"] == "2024-01-01T00:00:00Z"


@pytest.mark.parametrize(("change", "reason"), [
    ({"layer_type": "application/vnd.oci.image.layer.v1.tar+zstd"}, "cannot take its layer"),
    ({"diff_ids": [sha256(TARS[0])]}, "one diff id per layer"),
    ({"config_type": "application/vnd.example.thing"}, "not a container image"),
])
def test_what_v1_clients_cannot_take_is_not_bridgeable(change, reason):
    config = config_of(rootfs={"type": "layers", "diff_ids": change.get(
        "diff_ids", [sha256(tar) for tar in TARS])})
    document = json.loads(manifest_of(config, LAYERS, change.get("layer_type", DOCKER_LAYER)))
    document["config"]["mediaType"] = change.get("config_type", DOCKER_CONFIG)
    manifest = parse_manifest(json.dumps(document).encode(), DOCKER)
    with pytest.raises(NotBridgeable, match=reason):
        v1_images(NAME, manifest, config)


def test_a_tag_moved_or_deleted_with_v2_moves_in_the_v1_view_at_once(registry):
    before = v1_tags(registry)["latest"]
    push_v2(registry, "latest", LAYERS[:1], config_of(LAYERS[:1], TARS[:1]))
    moved = v1_tags(registry)["latest"]
    assert moved != before
    assert registry.request("GET", f"/v1/images/{moved}/ancestry").json() == [moved]
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/latest").status == 202
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags/latest").status == 404
    # The images stay, served by id, as V1 images do once untagged.
    assert registry.request("GET", f"/v1/images/{before}/json").status == 200


def test_the_latest_push_through_either_protocol_wins_in_both_views(registry):
    v2_top = v1_tags(registry)["latest"]
    push_v1(registry, BASE, BASE_LAYER)
    tag_v1(registry, "latest", BASE)
    assert v1_tags(registry) == {"latest": BASE}
    pulled = registry.request("GET", f"/v2/{NAME}/manifests/latest", headers=ACCEPT)
    assert json.loads(pulled.body)["layers"][0]["digest"] == sha256(BASE_LAYER)
    push_v2(registry, "latest")
    assert v1_tags(registry) == {"latest": v2_top}
    assert (registry.storage / "repositories/foo/bar").exists()
    assert not (registry.storage / "repositories/foo/bar/tag_latest").exists()
    # The V1 image itself stays.
    assert registry.request("GET", f"/v1/images/{BASE}/json").status == 200


def test_a_tag_deleted_through_either_protocol_goes_from_both(registry):
    assert registry.request("DELETE", f"/v1/repositories/{NAME}/tags/latest").status == 200
    assert registry.request("GET", f"/v2/{NAME}/manifests/latest", headers=ACCEPT).status == 404
    push_v1(registry, BASE, BASE_LAYER)
    tag_v1(registry, "old", BASE)
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/old").status == 202
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags/old").status == 404
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/old").status == 404


def test_a_repository_deleted_with_v1_loses_its_v2_tags_too(registry):
    push_v1(registry, BASE, BASE_LAYER)
    tag_v1(registry, "old", BASE)
    assert registry.request("DELETE", f"/v1/repositories/{NAME}/").status == 200
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags").status == 404
    assert registry.request("GET", f"/v2/{NAME}/manifests/latest", headers=ACCEPT).status == 404
    # A repository only V2 pushed to goes the same way; then there is nothing to delete.
    push_v2(registry, "again")
    assert registry.request("DELETE", f"/v1/repositories/{NAME}/").status == 200
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags/again").status == 404
    assert registry.request("DELETE", f"/v1/repositories/{NAME}/").status == 404


def test_a_v2_name_of_one_part_is_a_library_repository_in_v1(tmp_path):
    running = MemoryRegistry(tmp_path)
    try:
        push_v2(running, "1.0", name="busybox")
        assert list(v1_tags(running, "busybox")) == ["1.0"]
        assert list(v1_tags(running, "library/busybox")) == ["1.0"]
    finally:
        running.close()


def test_an_index_serves_the_configured_platform(tmp_path):
    running = MemoryRegistry(tmp_path, STANDALONE + "  bridge_platform: linux/arm64/v8\n")
    try:
        entries = []
        for arch, variant, layers in (("amd64", None, LAYERS), ("arm64", "v8", LAYERS[:1])):
            config = config_of(layers, TARS[:len(layers)], architecture=arch)
            manifest = push_v2(running, f"only-{arch}", layers, config)
            platform = {"os": "linux", "architecture": arch, **({"variant": variant}
                                                                 if variant else {})}
            entries.append({"mediaType": DOCKER, "size": len(manifest),
                            "digest": sha256(manifest), "platform": platform})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": entries}).encode()
        assert running.request("PUT", f"/v2/{NAME}/manifests/multi", index,
                               {"Content-Type": OCI_INDEX}).status == 201
        tags = v1_tags(running)
        assert tags["multi"] == tags["only-arm64"]
        document = running.request("GET", f"/v1/images/{tags['multi']}/json").json()
        assert document["architecture"] == "arm64"
    finally:
        running.close()


def test_a_v2_image_v1_cannot_take_is_left_out_of_the_v1_view(registry):
    config = config_of(LAYERS[:1], TARS[:1])
    for blob in (LAYERS[0], config):
        push_blob(registry, blob, NAME)
    document = json.loads(manifest_of(config, LAYERS[:1]))
    document["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    document["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    document["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json"
    assert registry.request("PUT", f"/v2/{NAME}/manifests/zstd", json.dumps(document).encode(),
                            {"Content-Type": document["mediaType"]}).status == 201
    assert list(v1_tags(registry)) == ["latest"]
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags/zstd").status == 404


def test_a_v1_view_removed_from_storage_stops_being_served_within_a_minute(registry):
    top = v1_tags(registry)["latest"]
    assert registry.request("GET", f"/v1/images/{top}/json").status == 200
    shutil.rmtree(registry.storage / "twistreg/v1/bridge/images" / top)
    registry.clock.advance(59)
    assert registry.request("GET", f"/v1/images/{top}/json").status == 200
    registry.clock.advance(1)
    assert registry.request("GET", f"/v1/images/{top}/json").status == 404


def test_an_image_that_is_neither_is_still_a_404(registry):
    missing = hashlib.sha256(b"nothing").hexdigest()
    for route in ("json", "ancestry", "layer"):
        answer = registry.request("GET", f"/v1/images/{missing}/{route}")
        assert (answer.status, answer.json()) == (404, {"error": "Image not found"})


def test_with_v2_off_no_v2_tag_is_served_over_v1(tmp_path):
    running = MemoryRegistry(tmp_path)
    push_v2(running, "latest")
    running.close()
    off = MemoryRegistry(tmp_path, STANDALONE + "  v2: false\n")
    try:
        assert off.request("GET", f"/v1/repositories/{NAME}/tags").status == 404
    finally:
        off.close()
