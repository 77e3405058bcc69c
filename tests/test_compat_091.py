"""
A storage tree written by docker-registry 0.9.1 is served unchanged.

The fixture holds the files exactly as 0.9.1 wrote them after a push of C{foo/bar} with two
tags, a private mark, odd tag names and a repository whose name needs quoting.
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from tests.backends import open_backend

pytestmark = pytest.mark.integration

BASE = "a043bae1603803a839c0cb52f511d9cb8f68d9d9b0341314a5534ea92b26fa8a"
CHILD = "c0bbc6adf7089dd787b6a27f5baddd65bcd01aefb61ad7be0c45289c21d93e27"
METADATA = (
    '{"kernel": "3.16.0", "arch": "amd64", "docker_go_version": "go1.3.3", '
    '"last_update": 1795763953, "docker_version": "1.3.2", "os": "linux"}'
)


def layer(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 1400000000
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


LAYERS = {BASE: layer("a", b"x"), CHILD: layer("b", b"y")}
FILES = {
    f"images/{BASE}/json": f'{{"id": "{BASE}"}}',
    f"images/{BASE}/ancestry": f'["{BASE}"]',
    f"images/{BASE}/_checksum":
        '["sha256:a297dc9bfee720afd38bdcbebc78e71bd0fd1b11227663fdc2c94dc9a37b969f"]',
    f"images/{CHILD}/json": f'{{"id": "{CHILD}", "parent": "{BASE}"}}',
    f"images/{CHILD}/ancestry": f'["{CHILD}", "{BASE}"]',
    # Older 0.9.x releases stored the checksum as a plain string.
    f"images/{CHILD}/_checksum":
        "sha256:2589b667642c46e6ffe0399300aa0d4612c25955a7825ee36f22ab56dad44b13",
    "repositories/foo/bar/_index_images":
        f'[{{"checksum": "c1", "id": "{BASE}"}}, {{"checksum": "c2", "id": "{CHILD}"}}]',
    "repositories/foo/bar/_private": "",
    "repositories/foo/bar/json": METADATA,
    "repositories/foo/bar/tag_latest": CHILD,
    "repositories/foo/bar/taglatest_json": METADATA,
    "repositories/foo/bar/tag__under": CHILD,
    "repositories/foo/bar/tag_under_json": METADATA,
    "repositories/foo/bar/tag_%24weird": BASE,
    "repositories/foo/bar/tag%24weird_json": METADATA,
    "repositories/ab%25%24_-test/x%257Ey/tag_latest": CHILD,
    "repositories/ab%25%24_-test/x%257Ey/taglatest_json": '{"last_update": 1795763953}',
    "repositories/ab%25%24_-test/x%257Ey/json": '{"last_update": 1795763953}',
}


@pytest.fixture(scope="module", params=["local", "s3"])
def old_tree(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compat")
    backend = open_backend(request, request.param, tmp)
    for key, content in FILES.items():
        backend.write(key, content.encode())
    for image_id, data in LAYERS.items():
        backend.write(f"images/{image_id}/layer", data)
    running = backend.server(tmp).start()
    yield running
    running.stop()


def test_pull(old_tree):
    r = old_tree.request("GET", "/v1/repositories/foo/bar/images")
    assert r.body == FILES["repositories/foo/bar/_index_images"].encode()
    assert old_tree.request("GET", "/v1/repositories/foo/bar/tags").json() == {
        "$weird": BASE, "_under": CHILD, "latest": CHILD}
    assert old_tree.request("GET", f"/v1/images/{CHILD}/ancestry").json() == [CHILD, BASE]
    for image_id in (BASE, CHILD):
        r = old_tree.request("GET", f"/v1/images/{image_id}/json")
        assert r.body == FILES[f"images/{image_id}/json"].encode()
        assert r.headers["X-Docker-Size"] == str(len(LAYERS[image_id]))
        assert old_tree.request("GET", f"/v1/images/{image_id}/layer").body == LAYERS[image_id]


def test_legacy_plain_checksum(old_tree):
    r = old_tree.request("GET", f"/v1/images/{CHILD}/json")
    assert r.headers.get_all("X-Docker-Checksum-Payload") == [FILES[f"images/{CHILD}/_checksum"]]


def test_metadata_reserialized(old_tree):
    r = old_tree.request("GET", "/v1/repositories/foo/bar/tags/latest/json")
    assert r.body == json.dumps(json.loads(METADATA), sort_keys=True).encode()
    assert old_tree.request("GET", "/v1/repositories/foo/bar/properties").json() == {
        "access": "private"}


def test_quoted_repository(old_tree):
    r = old_tree.request("GET", "/v1/repositories/ab%25%24_-test/x~y/tags")
    assert r.json() == {"latest": CHILD}
    r = old_tree.request("GET", "/v1/repositories/ab%$_-test/x~y/tags/latest")
    assert r.json() == CHILD


def test_files_of_old_layer(old_tree):
    r = old_tree.request("GET", f"/v1/images/{BASE}/files")
    assert r.json() == [["a", "f", False, 1, 1400000000, 420, 0, 0]]
