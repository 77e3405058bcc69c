"""
The V2 API (OCI Distribution Spec v1.1) over the real Site, in memory: every route's status,
headers and error codes, the push and pull flows, and the bad inputs.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

import pytest

from tests.memory import STANDALONE, MemoryRegistry

NAME = "library/hello-world"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def registry(tmp_path):
    running = MemoryRegistry(tmp_path)
    yield running
    running.close()


def errors(response) -> list[str]:
    assert response.headers["Content-Type"].startswith("application/json")
    return [error["code"] for error in response.json()["errors"]]


def push_blob(registry, data: bytes, name: str = NAME) -> str:
    """A blob pushed as docker does: POST, one PATCH, PUT with the digest."""
    digest = digest_of(data)
    started = registry.request("POST", f"/v2/{name}/blobs/uploads/")
    assert started.status == 202, started
    patched = registry.request("PATCH", started.headers["Location"], data,
                               {"Content-Type": "application/octet-stream"})
    assert patched.status == 202, patched
    assert patched.headers["Range"] == f"0-{len(data) - 1}"
    done = registry.request("PUT", f"{patched.headers['Location']}?digest={digest}")
    assert done.status == 201, done
    assert done.headers["Docker-Content-Digest"] == digest
    return digest


def image_manifest(config: str, layers: list[tuple[str, int]], config_size: int,
                   media_type: str = OCI_MANIFEST, **extra) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest, "size": size} for digest, size in layers],
        **extra,
    }).encode()


def push_image(registry, tag: str = "latest", name: str = NAME) -> tuple[bytes, str]:
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"layer bytes" * 100
    manifest = image_manifest(push_blob(registry, config, name), [
        (push_blob(registry, layer, name), len(layer))], len(config))
    answer = registry.request("PUT", f"/v2/{name}/manifests/{tag}", manifest,
                              {"Content-Type": OCI_MANIFEST})
    assert answer.status == 201, answer
    assert answer.headers["Docker-Content-Digest"] == digest_of(manifest)
    assert answer.headers["Location"] == f"/v2/{name}/manifests/{digest_of(manifest)}"
    return manifest, digest_of(manifest)


def test_the_base_endpoint_says_it_is_a_v2_registry(registry):
    answer = registry.request("GET", "/v2/")
    assert (answer.status, answer.json()) == (200, {})
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_unknown_routes_and_methods_answer_the_specs_json(registry):
    missing = registry.request("GET", "/v2/no/such/route")
    assert missing.status == 404 and errors(missing) == ["NOT_FOUND"]
    assert missing.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    wrong = registry.request("POST", f"/v2/{NAME}/tags/list")
    assert wrong.status == 405 and errors(wrong) == ["UNSUPPORTED"]
    assert "GET" in wrong.headers["Allow"]


def test_push_then_pull_by_tag_and_by_digest(registry):
    manifest, digest = push_image(registry)
    for reference in ("latest", digest):
        answer = registry.request("GET", f"/v2/{NAME}/manifests/{reference}",
                                  headers={"Accept": OCI_MANIFEST})
        assert (answer.status, answer.body) == (200, manifest)
        assert answer.headers["Content-Type"] == OCI_MANIFEST
        assert answer.headers["Docker-Content-Digest"] == digest
        head = registry.request("HEAD", f"/v2/{NAME}/manifests/{reference}")
        assert (head.status, head.body) == (200, b"")
        assert head.headers["Content-Length"] == str(len(manifest))
    layer = json.loads(manifest)["layers"][0]
    blob = registry.request("GET", f"/v2/{NAME}/blobs/{layer['digest']}")
    assert blob.status == 200 and blob.body == b"layer bytes" * 100
    assert blob.headers["Docker-Content-Digest"] == layer["digest"]
    ranged = registry.request("GET", f"/v2/{NAME}/blobs/{layer['digest']}",
                              headers={"Range": "bytes=6-10"})
    assert (ranged.status, ranged.body) == (206, b"bytes")
    assert ranged.headers["Content-Range"] == f"bytes 6-10/{len(blob.body)}"
    head = registry.request("HEAD", f"/v2/{NAME}/blobs/{layer['digest']}")
    assert (head.status, head.body, head.headers["Content-Length"]) == (
        200, b"", str(len(blob.body)))


def test_a_manifest_is_served_only_to_a_client_that_accepts_its_type(registry):
    push_image(registry)
    answer = registry.request("GET", f"/v2/{NAME}/manifests/latest",
                              headers={"Accept": DOCKER_MANIFEST})
    assert answer.status == 404 and errors(answer) == ["MANIFEST_UNKNOWN"]
    for accept in ("*/*", "application/*", f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5"):
        assert registry.request("GET", f"/v2/{NAME}/manifests/latest",
                                headers={"Accept": accept}).status == 200


def test_monolithic_upload_and_mount(registry):
    data = b"one piece"
    digest = digest_of(data)
    answer = registry.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={digest}", data)
    assert answer.status == 201, answer
    assert answer.headers["Location"] == f"/v2/{NAME}/blobs/{digest}"
    mounted = registry.request("POST", f"/v2/other/blobs/uploads/?mount={digest}&from={NAME}")
    assert mounted.status == 201
    assert registry.request("GET", f"/v2/other/blobs/{digest}").body == data
    # A source without the blob gives a session to upload it instead.
    session = registry.request("POST", f"/v2/third/blobs/uploads/?mount={digest}&from=nothere")
    assert session.status == 202 and session.headers["Docker-Upload-UUID"]


def test_a_wrong_digest_publishes_nothing(registry):
    answer = registry.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={digest_of(b'x')}",
                              b"not x")
    assert answer.status == 400 and errors(answer) == ["DIGEST_INVALID"]
    assert registry.request("HEAD", f"/v2/{NAME}/blobs/{digest_of(b'x')}").status == 404
    bad = registry.request("POST", f"/v2/{NAME}/blobs/uploads/?digest=md5:abc", b"x")
    assert bad.status == 400 and errors(bad) == ["DIGEST_INVALID"]


def test_chunks_in_order_and_out_of_order(registry):
    started = registry.request("POST", f"/v2/{NAME}/blobs/uploads/")
    location = started.headers["Location"]
    first = registry.request("PATCH", location, b"abc", {"Content-Range": "0-2"})
    assert (first.status, first.headers["Range"]) == (202, "0-2")
    gap = registry.request("PATCH", location, b"xyz", {"Content-Range": "5-7"})
    assert gap.status == 416 and errors(gap) == ["BLOB_UPLOAD_INVALID"]
    second = registry.request("PATCH", location, b"def", {"Content-Range": "3-5"})
    assert (second.status, second.headers["Range"]) == (202, "0-5")
    status = registry.request("GET", location)
    assert (status.status, status.headers["Range"]) == (204, "0-5")
    done = registry.request("PUT", f"{location}?digest={digest_of(b'abcdefgh')}", b"gh")
    assert done.status == 201, done
    assert registry.request("GET", f"/v2/{NAME}/blobs/{digest_of(b'abcdefgh')}").body == (
        b"abcdefgh")
    assert registry.request("GET", location).status == 404


def test_an_upload_can_be_cancelled(registry):
    location = registry.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    assert registry.request("DELETE", location).status == 204
    gone = registry.request("GET", location)
    assert gone.status == 404 and errors(gone) == ["BLOB_UPLOAD_UNKNOWN"]


def test_manifests_that_cannot_be_stored(registry):
    not_json = registry.request("PUT", f"/v2/{NAME}/manifests/latest", b"{nope",
                                {"Content-Type": OCI_MANIFEST})
    assert not_json.status == 400 and errors(not_json) == ["MANIFEST_INVALID"]
    missing = image_manifest(digest_of(b"c"), [(digest_of(b"l"), 1)], 1)
    unknown = registry.request("PUT", f"/v2/{NAME}/manifests/latest", missing,
                               {"Content-Type": OCI_MANIFEST})
    assert unknown.status == 400 and errors(unknown) == ["MANIFEST_BLOB_UNKNOWN"]
    schema1 = registry.request("PUT", f"/v2/{NAME}/manifests/latest",
                               json.dumps({"schemaVersion": 1, "name": NAME}).encode(),
                               {"Content-Type": SCHEMA1})
    assert schema1.status == 400 and errors(schema1) == ["MANIFEST_INVALID"]
    assert "schema1" in schema1.json()["errors"][0]["message"].replace(" ", "")


def test_a_manifest_over_four_mib_is_refused_before_its_body(registry):
    body = b" " * (4 * 1024 * 1024 + 1)
    answer = registry.request("PUT", f"/v2/{NAME}/manifests/latest", body,
                              {"Content-Type": OCI_MANIFEST})
    assert answer.status == 413 and errors(answer) == ["MANIFEST_INVALID"]
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_names_and_references_outside_the_grammar(registry):
    upper = registry.request("GET", "/v2/Library/hello/tags/list")
    assert upper.status == 400 and errors(upper) == ["NAME_INVALID"]
    tag = registry.request("GET", f"/v2/{NAME}/manifests/-bad-tag")
    assert tag.status == 404 and errors(tag) == ["MANIFEST_UNKNOWN"]
    unknown = registry.request("GET", "/v2/nothing/here/tags/list")
    assert unknown.status == 404 and errors(unknown) == ["NAME_UNKNOWN"]


def test_tags_and_catalog_page_with_n_last_and_link(registry):
    for tag in ("c", "a", "b"):
        push_image(registry, tag)
    push_image(registry, "x", name="another/repo")
    tags = registry.request("GET", f"/v2/{NAME}/tags/list")
    assert tags.json() == {"name": NAME, "tags": ["a", "b", "c"]}
    first = registry.request("GET", f"/v2/{NAME}/tags/list?n=2")
    assert first.json()["tags"] == ["a", "b"]
    assert first.headers["Link"] == f'</v2/{NAME}/tags/list?n=2&last=b>; rel="next"'
    rest = registry.request("GET", f"/v2/{NAME}/tags/list?n=2&last=b")
    assert rest.json()["tags"] == ["c"] and "Link" not in rest.headers
    assert registry.request("GET", f"/v2/{NAME}/tags/list?n=0").json()["tags"] == []
    negative = registry.request("GET", f"/v2/{NAME}/tags/list?n=-1")
    assert negative.status == 400 and errors(negative) == ["PAGINATION_NUMBER_INVALID"]
    catalog = registry.request("GET", "/v2/_catalog")
    assert catalog.json() == {"repositories": ["another/repo", NAME]}
    assert registry.request("GET", "/v2/_catalog?n=1").headers["Link"] == (
        '</v2/_catalog?n=1&last=another%2Frepo>; rel="next"')


def test_delete_by_tag_and_by_digest(registry):
    _, digest = push_image(registry, "one")
    registry.request("PUT", f"/v2/{NAME}/manifests/two",
                     registry.request("GET", f"/v2/{NAME}/manifests/one").body,
                     {"Content-Type": OCI_MANIFEST})
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/one").status == 202
    assert registry.request("GET", f"/v2/{NAME}/tags/list").json()["tags"] == ["two"]
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/{digest}").status == 202
    gone = registry.request("GET", f"/v2/{NAME}/manifests/{digest}")
    assert gone.status == 404 and errors(gone) == ["MANIFEST_UNKNOWN"]
    assert registry.request("GET", f"/v2/{NAME}/tags/list").json()["tags"] == []


def test_referrers_of_a_manifest(registry):
    _, subject = push_image(registry)
    empty = push_blob(registry, b"{}")
    artifact = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                   "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
    }).encode()
    put = registry.request("PUT", f"/v2/{NAME}/manifests/{digest_of(artifact)}", artifact,
                           {"Content-Type": OCI_MANIFEST})
    assert put.status == 201 and put.headers["OCI-Subject"] == subject
    listed = registry.request("GET", f"/v2/{NAME}/referrers/{subject}")
    assert listed.headers["Content-Type"] == OCI_INDEX
    assert [m["digest"] for m in listed.json()["manifests"]] == [digest_of(artifact)]
    assert listed.json()["manifests"][0]["artifactType"] == "application/x-sbom"
    filtered = registry.request("GET", f"/v2/{NAME}/referrers/{subject}?artifactType=other")
    assert filtered.json()["manifests"] == []
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"


def test_blob_delete(registry):
    digest = push_blob(registry, b"to delete")
    assert registry.request("DELETE", f"/v2/{NAME}/blobs/{digest}").status == 202
    gone = registry.request("GET", f"/v2/{NAME}/blobs/{digest}")
    assert gone.status == 404 and errors(gone) == ["BLOB_UNKNOWN"]


def test_behind_an_index_every_v2_route_asks_for_credentials(tmp_path):
    running = MemoryRegistry(tmp_path, "dev:\n  standalone: false\n")
    try:
        answer = running.request("GET", "/v2/")
        assert answer.status == 401 and errors(answer) == ["UNAUTHORIZED"]
        assert answer.headers["WWW-Authenticate"].startswith("Basic ")
        push = running.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={digest_of(b'x')}",
                               b"x")
        assert push.status == 401
    finally:
        running.close()


def test_v2_can_be_turned_off(tmp_path):
    running = MemoryRegistry(tmp_path, STANDALONE + "  v2: false\n")
    try:
        answer = running.request("GET", "/v2/")
        assert (answer.status, answer.json()) == (404, {"error": "Not found"})
        assert "Docker-Distribution-API-Version" not in answer.headers
    finally:
        running.close()


def test_a_manifest_read_once_is_kept_but_its_repository_is_asked_every_time(registry):
    manifest, digest = push_image(registry)
    assert registry.request("GET", f"/v2/{NAME}/manifests/latest").body == manifest
    hex_digest = digest.split(":")[1]
    (registry.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest
     / "data").unlink()
    assert registry.request("GET", f"/v2/{NAME}/manifests/{digest}").body == manifest
    assert registry.request("GET", f"/v2/other/manifests/{digest}").status == 404
    assert registry.request("DELETE", f"/v2/{NAME}/manifests/{digest}").status == 202
    assert registry.request("GET", f"/v2/{NAME}/manifests/{digest}").status == 404


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "-1", "1.5", ""])
def test_numbers_a_client_writes_oddly_are_refused_in_json(registry, value):
    push_image(registry)
    listed = registry.request("GET", f"/v2/{NAME}/tags/list?n={quote(value)}")
    assert listed.status == 400 and errors(listed) == ["PAGINATION_NUMBER_INVALID"]
    location = registry.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    patched = registry.request("PATCH", location, b"x", {
        "Content-Range": f"{value}-{value}".encode("latin-1", "replace").decode("latin-1")})
    assert patched.status == 400 and errors(patched) == ["BLOB_UPLOAD_INVALID"]
