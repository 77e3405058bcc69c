"""
The image routes R3–R10 through the real Site in memory (docs/api.md): answers,
headers, check order (requests failing two checks), the 304 rule and what ends up on disk.
"""

from __future__ import annotations

import gzip
import json

import pytest

from tests.routes import (
    assert_cacheable,
    assert_error,
    assert_json,
    assert_not_modified,
    image_json,
    make_tar,
    module_registry,
    new_id,
    push,
    put_checksum,
    put_json,
    put_layer,
    write_files,
)
from twistreg.checksums import payload_checksum

#: The 5120-byte layer of §4.4 and §8: bytes 0..255 repeated 20 times.
LAYER = bytes(range(256)) * 20
OCTETS = "application/octet-stream"
JSON = "application/json"
IMS = {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}
BAD_IDS = [
    "1111",
    "111111111111111",  # 15
    "11111111111111111",  # 17
    "1" * 63,
    "1" * 65,
    "1" * 32,
    "ABCDEF0123456789",  # upper case
    "g111111111111111",
    "..",
]
CHECKSUM_412 = (
    "X-Docker-Checksum-Payload not set.  If you are using the Docker daemon, "
    "you should upgrade to version 0.10 or later"
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    yield from module_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def layer_image(registry):
    """A complete image holding the 5120-byte layer."""
    image_id = new_id()
    push(registry, image_id, LAYER)
    return image_id


@pytest.fixture(scope="module")
def empty_image(registry):
    """A complete image with a zero-byte layer."""
    image_id = new_id()
    push(registry, image_id, b"")
    return image_id


def in_progress(registry, layer: bytes | None = b"abc") -> str:
    """An image whose json (and layer) were uploaded but not its checksum."""
    image_id = new_id()
    push(registry, image_id, layer, complete=False)
    return image_id


def get(registry, image_id: str, what: str, headers: dict | None = None, method: str = "GET"):
    return registry.request(method, f"/v1/images/{image_id}/{what}", headers=headers)


# R3 -------------------------------------------------------------------------------------------

RANGE_TABLE = [
    # Range, status, Content-Range, first byte, last byte (inclusive)
    (None, 200, None, 0, 5119),
    ("bytes=0-99", 206, "bytes 0-99/5120", 0, 99),
    ("bytes=100-", 206, "bytes 100-5119/5120", 100, 5119),
    ("bytes=100-5120", 206, "bytes 100-5119/5120", 100, 5119),
    ("bytes=5110-20000", 206, "bytes 5110-5119/5120", 5110, 5119),
    ("bytes=5-5", 206, "bytes 5-5/5120", 5, 5),
    ("bytes=0-0", 206, "bytes 0-0/5120", 0, 0),
    ("bytes=0-5119", 206, "bytes 0-5119/5120", 0, 5119),
    ("BYTES=0-99", 206, "bytes 0-99/5120", 0, 99),
    ("Bytes=5119-", 206, "bytes 5119-5119/5120", 5119, 5119),
    ("bytes=-5", 200, None, 0, 5119),
    ("items=0-5", 200, None, 0, 5119),
    ("bytes=a-b", 200, None, 0, 5119),
    ("bytes=1-2-3", 200, None, 0, 5119),
    ("bytes=0-1,4-5", 200, None, 0, 5119),
    ("bytes=", 200, None, 0, 5119),
    ("bytes=+1-2", 200, None, 0, 5119),
    ("bytes = 0-5", 200, None, 0, 5119),
]


@pytest.mark.parametrize("range_, status, content_range, first, last", RANGE_TABLE)
def test_layer_range(registry, layer_image, range_, status, content_range, first, last):
    """§4.4's table, row by row: status, Content-Range, honest Content-Length, the bytes."""
    r = get(registry, layer_image, "layer", {} if range_ is None else {"Range": range_})
    assert_cacheable(r, status, LAYER[first:last + 1], OCTETS)
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers.get("Content-Range") == content_range


@pytest.mark.parametrize("range_", ["bytes=100-50", "bytes=5120-", "bytes=5120-6000",
                                    "bytes=99999999999999999999-"])
def test_layer_range_unsatisfiable(registry, layer_image, range_):
    r = get(registry, layer_image, "layer", {"Range": range_})
    assert (r.status, r.body) == (416, b"")
    assert r.headers["Content-Range"] == "bytes */5120"
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["Content-Type"] == OCTETS
    assert r.headers["Content-Length"] == "0"
    for name in ("Cache-Control", "Expires", "Last-Modified", "Pragma"):
        assert name not in r.headers


def test_empty_layer(registry, empty_image):
    """A zero-byte layer is 200 with an empty body; any range of it is unsatisfiable."""
    r = get(registry, empty_image, "layer")
    assert_cacheable(r, 200, b"", OCTETS)
    assert r.headers["Accept-Ranges"] == "bytes"
    r = get(registry, empty_image, "layer", {"Range": "bytes=0-"})
    assert (r.status, r.headers["Content-Range"], r.headers["Content-Length"]) == (
        416, "bytes */0", "0")


def test_layer_head(registry, layer_image):
    """HEAD: the GET's status and headers, Content-Length included, no body."""
    r = get(registry, layer_image, "layer", method="HEAD")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "5120")
    assert r.headers["Accept-Ranges"] == "bytes"
    r = get(registry, layer_image, "layer", {"Range": "bytes=100-"}, method="HEAD")
    assert (r.status, r.body) == (206, b"")
    assert (r.headers["Content-Length"], r.headers["Content-Range"]) == (
        "5020", "bytes 100-5119/5120")


@pytest.mark.parametrize("image_id", BAD_IDS)
def test_layer_invalid_id(registry, image_id):
    assert_error(get(registry, image_id, "layer", IMS), 404, "Invalid image ID")


def test_layer_check_order(registry):
    # In progress beats IMS and range.
    image_id = in_progress(registry)
    assert_error(get(registry, image_id, "layer", {**IMS, "Range": "bytes=0-0"}), 400,
                 "Image is being uploaded, retry later")
    # In progress is checked before the layer's existence.
    no_layer = in_progress(registry, layer=None)
    assert_error(get(registry, no_layer, "layer", IMS), 400, "Image is being uploaded, retry later")
    # Unknown image, or json without layer: 404, even with If-Modified-Since.
    assert_error(get(registry, new_id(), "layer", IMS), 404, "Image not found")
    assert_error(get(registry, new_id(16), "layer"), 404, "Image not found")
    image_id = new_id()
    write_files(registry.storage, {f"images/{image_id}/json": image_json(image_id)})
    assert_error(get(registry, image_id, "layer", IMS), 404, "Image not found")


def test_layer_not_modified(registry, layer_image):
    """IMS (any value) on an existing layer: 304, before the range is looked at."""
    for value in ("Thu, 01 Jan 1970 00:00:00 GMT", "garbage"):
        for extra in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=9999-"}):
            assert_not_modified(get(registry, layer_image, "layer",
                                    {"If-Modified-Since": value, **extra}))
    assert_not_modified(get(registry, layer_image, "layer", IMS, method="HEAD"))


# R4 -------------------------------------------------------------------------------------------

def test_put_layer_check_order(registry):
    assert_error(put_layer(registry, "nothex", b"x"), 404, "Invalid image ID")
    assert_error(put_layer(registry, new_id(), b"x"), 404, "Image not found")
    image_id = new_id()
    push(registry, image_id, b"first")
    assert_error(put_layer(registry, image_id, b"second"), 409, "Image already exists")
    assert (registry.storage / "images" / image_id / "layer").read_bytes() == b"first"


def test_put_layer_old_docker_user_agent(registry):
    """No 412 for docker/0 clients (not carried over from 0.9.1)."""
    image_id = new_id()
    assert_json(put_json(registry, image_id, image_json(image_id)), 200, b"true")
    r = registry.request("PUT", f"/v1/images/{image_id}/layer", b"x",
                    {"User-Agent": "docker/0.9.1 go/go1.2 os/linux"})
    assert_json(r, 200, b"true")


def test_put_layer_in_progress_replaces(registry):
    """A repeated PUT while in progress replaces the layer and the checksum."""
    image_id = new_id()
    body = push(registry, image_id, b"first", complete=False)
    directory = registry.storage / "images" / image_id
    assert json.loads((directory / "_checksum").read_bytes()) == [
        payload_checksum(body, b"first")]
    r = registry.request("PUT", f"/v1/images/{image_id}/layer", b"second",
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert_json(r, 200, b"true")
    assert (directory / "layer").read_bytes() == b"second"
    assert json.loads((directory / "_checksum").read_bytes()) == [
        payload_checksum(body, b"second")]
    assert (directory / "_inprogress").exists()
    assert_error(put_checksum(registry, image_id, payload_checksum(body, b"first")), 400,
                 "Checksum mismatch")
    assert_json(put_checksum(registry, image_id, payload_checksum(body, b"second")), 200, b"true")


def test_put_layer_json_without_layer_not_in_progress(registry):
    """Only "layer exists and not in progress" is 409: json alone accepts a layer."""
    image_id = new_id()
    write_files(registry.storage, {f"images/{image_id}/json": image_json(image_id)})
    assert_json(put_layer(registry, image_id, b"x"), 200, b"true")


# R5 -------------------------------------------------------------------------------------------

def test_checksum_sequence(registry):
    """The sequence of §4.6, with the §8 sample image."""
    image_id = "1" * 64
    body = b'{"id": "' + image_id.encode() + b'"}'
    assert len(body) == 74
    assert_json(put_json(registry, image_id, body), 200, b"true")
    assert_json(put_layer(registry, image_id, LAYER), 200, b"true")
    good = "sha256:197379464f261af42d5244148efc61ed93f41c6f75c9f0e751fff25394503d5e"
    assert json.loads((registry.storage / "images" / image_id / "_checksum").read_bytes()) == [
        good]

    assert_error(put_checksum(registry, image_id, "sha256:" + "0" * 64), 400, "Checksum mismatch")
    assert_error(get(registry, image_id, "json"), 400, "Image is being uploaded, retry later")
    r = registry.request("PUT", f"/v1/images/{image_id}/checksum", headers={
        "X-Docker-Checksum": "tarsum+sha256:whatever", "X-Docker-Checksum-Payload": good})
    assert_json(r, 200, b"true")
    assert not (registry.storage / "images" / image_id / "_inprogress").exists()
    assert_error(put_checksum(registry, image_id, good), 409, "Cannot set this image checksum")

    fresh = new_id()
    assert_json(put_json(registry, fresh, image_json(fresh)), 200, b"true")
    assert_error(put_checksum(registry, fresh, good), 400, "Image layer not uploaded")
    assert_error(get(registry, fresh, "json"), 400, "Image is being uploaded, retry later")


def test_checksum_check_order(registry):
    # id before the header
    assert_error(put_checksum(registry, "nothex", None), 404, "Invalid image ID")
    assert_error(put_checksum(registry, "nothex", ""), 404, "Invalid image ID")
    # header before existence
    assert_error(put_checksum(registry, new_id(), None), 412, CHECKSUM_412)
    assert_error(put_checksum(registry, new_id(), ""), 400, "Missing Image's checksum")
    assert_error(put_checksum(registry, new_id(), "sha256:x"), 404, "Image not found")
    # complete before "layer not uploaded" and "mismatch"
    image_id = new_id()
    push(registry, image_id, b"layer")
    assert_error(put_checksum(registry, image_id, None), 412, CHECKSUM_412)
    assert_error(put_checksum(registry, image_id, "sha256:x"), 409,
                 "Cannot set this image checksum")


def test_checksum_exact_first_value(registry):
    """Exact, case-sensitive comparison with the first header occurrence; the body is ignored."""
    image_id = new_id()
    body = push(registry, image_id, b"layer", complete=False)
    good = payload_checksum(body, b"layer")
    assert_error(put_checksum(registry, image_id, good.upper()), 400, "Checksum mismatch")
    assert_error(put_checksum(registry, image_id, good[:-1]), 400, "Checksum mismatch")
    r = registry.request("PUT", f"/v1/images/{image_id}/checksum", b"", [
        ("X-Docker-Checksum-Payload", "sha256:" + "0" * 64),
        ("X-Docker-Checksum-Payload", good)])
    assert (r.status, r.body) == (400, b'{"error": "Checksum mismatch"}')
    r = registry.request("PUT", f"/v1/images/{image_id}/checksum", b"ignored", [
        ("X-Docker-Checksum-Payload", good),
        ("X-Docker-Checksum-Payload", "sha256:" + "0" * 64)])
    assert (r.status, r.body) == (200, b"true")


def test_checksum_legacy_plain_string(registry):
    """A 0.9.1 C{_checksum} holding a plain string is a one-entry list."""
    image_id = new_id()
    value = "sha256:" + "ab" * 32
    write_files(registry.storage, {
        f"images/{image_id}/json": image_json(image_id),
        f"images/{image_id}/_inprogress": "true",
        f"images/{image_id}/layer": b"x",
        f"images/{image_id}/_checksum": value,
    })
    assert_json(put_checksum(registry, image_id, value), 200, b"true")
    r = get(registry, image_id, "json")
    assert r.headers.get_all("X-Docker-Checksum-Payload") == [value]


# R6 -------------------------------------------------------------------------------------------

def test_image_json(registry, layer_image):
    image_id = new_id()
    body = f'{{ "zzz": [1, 2.50],\n  "id":"{image_id}" , "aaa" : {{"b": 1, "a": 2}}}}'.encode()
    push(registry, image_id, b"12345", body=body)
    r = get(registry, image_id, "json")
    assert_cacheable(r, 200, body, JSON)
    assert r.headers["X-Docker-Size"] == "5"
    assert r.headers.get_all("X-Docker-Checksum-Payload") == [payload_checksum(body, b"12345")]
    assert "X-Docker-Checksum" not in r.headers
    h = get(registry, image_id, "json", method="HEAD")
    assert (h.status, h.body, h.headers["Content-Length"]) == (200, b"", str(len(body)))
    assert h.headers["X-Docker-Size"] == "5"


def test_image_json_without_layer_or_checksum(registry):
    """No layer → no X-Docker-Size; several checksums → one header each."""
    image_id = new_id()
    body = image_json(image_id)
    write_files(registry.storage, {f"images/{image_id}/json": body})
    r = get(registry, image_id, "json")
    assert_cacheable(r, 200, body, JSON)
    assert "X-Docker-Size" not in r.headers
    assert "X-Docker-Checksum-Payload" not in r.headers
    write_files(registry.storage, {
        f"images/{image_id}/layer": b"",
        f"images/{image_id}/_checksum": '["sha256:a", "sha256:b"]',
    })
    r = get(registry, image_id, "json")
    assert r.headers["X-Docker-Size"] == "0"
    assert r.headers.get_all("X-Docker-Checksum-Payload") == ["sha256:a", "sha256:b"]


def test_image_json_check_order(registry, layer_image):
    for bad in BAD_IDS:
        assert_error(get(registry, bad, "json", IMS), 404, "Invalid image ID")
    assert_error(get(registry, in_progress(registry), "json", IMS), 400,
                 "Image is being uploaded, retry later")
    assert_error(get(registry, new_id(), "json", IMS), 404, "Image not found")
    assert_error(get(registry, new_id(), "json", IMS, method="HEAD"), 404, "Image not found",
                 head=True)
    assert_not_modified(get(registry, layer_image, "json", {"If-Modified-Since": "x"}))
    assert_not_modified(get(registry, layer_image, "json", IMS, method="HEAD"))


# R7 -------------------------------------------------------------------------------------------

def test_ancestry_chain(registry):
    base, child, grandchild = new_id(), new_id(), new_id(16)
    push(registry, base, make_tar(("a", b"1")))
    push(registry, child, make_tar(("b", b"2")), parent=base)
    push(registry, grandchild, b"", parent=child)
    for image_id, expected in ((base, [base]), (child, [child, base]),
                               (grandchild, [grandchild, child, base])):
        r = get(registry, image_id, "ancestry")
        assert_cacheable(r, 200, json.dumps(expected).encode(), JSON)
        h = get(registry, image_id, "ancestry", method="HEAD")
        assert (h.status, h.body, h.headers["Content-Length"]) == (200, b"", str(len(r.body)))


def test_ancestry_reserialized(registry):
    image_id, parent = new_id(), new_id()
    write_files(registry.storage, {
        f"images/{image_id}/json": image_json(image_id, parent),
        f"images/{image_id}/ancestry": f'["{image_id}",\n"{parent}"]',
    })
    r = get(registry, image_id, "ancestry")
    assert_cacheable(r, 200, f'["{image_id}", "{parent}"]'.encode(), JSON)


def test_ancestry_check_order(registry, layer_image):
    for bad in BAD_IDS:
        assert_error(get(registry, bad, "ancestry", IMS), 404, "Invalid image ID")
    assert_error(get(registry, in_progress(registry), "ancestry", IMS), 400,
                 "Image is being uploaded, retry later")
    assert_error(get(registry, new_id(), "ancestry", IMS), 404, "Image not found")
    # The json alone is not enough: R7 looks for the ancestry file.
    image_id = new_id()
    write_files(registry.storage, {f"images/{image_id}/json": image_json(image_id)})
    assert_error(get(registry, image_id, "ancestry", IMS), 404, "Image not found")
    assert_not_modified(get(registry, layer_image, "ancestry", IMS))


# R8 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"", b"not json", b"[]", b'"x"', b"1", b"null", b"{}", b'{"id": "\xff"}',
    '{"id": "1111111111111111"}'.encode("utf-16"),
    b'[{"id": "1111111111111111"}]',
])
def test_put_json_invalid(registry, body):
    assert_error(put_json(registry, new_id(), body), 400, "Invalid JSON")


def test_put_json_check_order(registry):
    missing_parent = new_id()
    # id before body
    assert_error(put_json(registry, "nothex", b""), 404, "Invalid image ID")
    # body before key
    assert_error(put_json(registry, new_id(), b"{}"), 400, "Invalid JSON")
    # missing key before the parent
    assert_error(put_json(registry, new_id(), json.dumps({"parent": missing_parent}).encode()), 400,
                 "Missing key `id' in JSON")
    # invalid id before the parent
    for value in (new_id(), 1, None, ""):
        body = json.dumps({"id": value, "parent": missing_parent}).encode()
        r = put_json(registry, new_id(), body)
        assert_error(r, 400, "JSON data contains invalid id")
    # parent before "already exists"
    image_id = new_id()
    push(registry, image_id, b"")
    assert_error(put_json(registry, image_id, image_json(image_id, missing_parent)), 400,
                 "Image depends on a non existing parent")
    for parent in ("../../etc", "nothex", 123):
        r = put_json(registry, image_id, json.dumps({"id": image_id, "parent": parent}).encode())
        assert_error(r, 400, "Image depends on a non existing parent")
    assert_error(put_json(registry, image_id, image_json(image_id)), 409, "Image already exists")


def test_put_json_stores(registry):
    """R8 step 11 on disk: marker, raw json, ancestry; falsy parents are no parent."""
    root = registry.storage
    base = new_id()
    body = f' {{"id":"{base}",  "parent": "" , "x": 1}}'.encode()
    r = registry.request("PUT", f"/v1/images/{base}/json", body,
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert_json(r, 200, b"true")
    directory = root / "images" / base
    assert (directory / "json").read_bytes() == body
    assert (directory / "_inprogress").read_bytes() == b"true"
    assert json.loads((directory / "ancestry").read_bytes()) == [base]
    # A parent in progress is accepted; ancestry chains.
    child = new_id()
    assert_json(put_json(registry, child, image_json(child, base)), 200, b"true")
    assert json.loads((root / "images" / child / "ancestry").read_bytes()) == [child, base]
    # A parent without an ancestry file counts as [parent].
    orphan_parent = new_id()
    write_files(root, {f"images/{orphan_parent}/json": image_json(orphan_parent)})
    image_id = new_id()
    assert_json(put_json(registry, image_id, image_json(image_id, orphan_parent)), 200, b"true")
    assert json.loads((root / "images" / image_id / "ancestry").read_bytes()) == [
        image_id, orphan_parent]
    null_parent = new_id()
    assert_json(put_json(registry, null_parent, json.dumps({"id": null_parent, "parent": None})
                         .encode()), 200, b"true")


def test_put_json_retry_resets_checksum(registry):
    image_id = new_id()
    push(registry, image_id, b"layer", complete=False)
    directory = registry.storage / "images" / image_id
    assert (directory / "_checksum").exists()
    body = (image_json(image_id)[:-1] + b', "retry": true}')
    assert_json(put_json(registry, image_id, body), 200, b"true")
    assert not (directory / "_checksum").exists()
    assert (directory / "json").read_bytes() == body
    assert_error(put_checksum(registry, image_id, payload_checksum(body, b"layer")), 400,
                 "Image layer not uploaded")


# R9 -------------------------------------------------------------------------------------------

def test_files(registry):
    """The contract's example, byte for byte."""
    image_id = new_id()
    push(registry, image_id, make_tar(("etc", None), ("etc/hello.txt", b"hello world\n")))
    r = get(registry, image_id, "files")
    expected = (b'[["etc", "d", false, 0, 1400000000, 493, 0, 0], '
                b'["etc/hello.txt", "f", false, 12, 1400000000, 420, 0, 0]]')
    assert_cacheable(r, 200, expected, JSON)
    h = get(registry, image_id, "files", method="HEAD")
    assert (h.status, h.body, h.headers["Content-Length"]) == (200, b"", str(len(expected)))


def test_files_names_and_compression(registry):
    layer = make_tar((".", None), ("./etc", None), ("./.wh.gone", b""), ("./.wh..wh.aufs", b""),
                     (".wh.relative", b""), ("./etc/.wh.nested", b""), ("/abs", b"x"),
                     mode="w:gz")
    image_id = new_id()
    push(registry, image_id, layer)
    r = get(registry, image_id, "files")
    assert r.status == 200, r
    assert [(name, deleted) for name, _, deleted, *_ in r.json()] == [
        ("/", False), ("/etc", False), ("/gone", True), (".wh.relative", False),
        ("/etc/.wh.nested", False), ("/abs", False)]


def test_files_cached(registry):
    """C{_files} is stored and then sent raw, even without a layer."""
    image_id = new_id()
    push(registry, image_id, make_tar(("a", b"1")))
    first = get(registry, image_id, "files").body
    cache = registry.storage / "images" / image_id / "_files"
    assert json.loads(cache.read_bytes()) == json.loads(first)
    cache.write_bytes(b'[ ["raw",  "f"] ]')
    assert get(registry, image_id, "files").body == b'[ ["raw",  "f"] ]'
    other = new_id()
    write_files(registry.storage, {f"images/{other}/json": image_json(other),
                                   f"images/{other}/_files": b"[]"})
    assert_cacheable(get(registry, other, "files"), 200, b"[]", JSON)


@pytest.mark.parametrize("layer", [b"", b"not a tar at all", gzip.compress(b"not a tar")])
def test_files_not_tar(registry, layer):
    image_id = new_id()
    push(registry, image_id, layer)
    assert_error(get(registry, image_id, "files"), 400, "Layer format not supported")
    assert not (registry.storage / "images" / image_id / "_files").exists()
    # IMS is answered before the archive is read.
    assert_not_modified(get(registry, image_id, "files", IMS))


def test_files_check_order(registry):
    for what in ("files", "diff"):
        for bad in BAD_IDS:
            assert_error(get(registry, bad, what, IMS), 404, "Invalid image ID")
        assert_error(get(registry, in_progress(registry, b"not a tar"), what, IMS), 400,
                     "Image is being uploaded, retry later")
        assert_error(get(registry, new_id(), what, IMS), 404, "Image not found")
        image_id = new_id()
        write_files(registry.storage, {f"images/{image_id}/json": image_json(image_id)})
        assert_error(get(registry, image_id, what, IMS), 404, "Image not found")


# R10 ------------------------------------------------------------------------------------------

def test_diff_chain(registry):
    base, child = new_id(), new_id()
    push(registry, base, make_tar(("./a", b"1"), ("./b", b"2"), ("./c", b"3"), ("./.wh.w", b"")))
    push(registry, child, make_tar(("./a", b"11"), ("./.wh.b", b""), ("./d", b"4"), ("./w", b"5")),
         parent=base)
    r = get(registry, child, "diff")
    assert r.status == 200 and r.headers["Content-Type"] == JSON, r
    entry = [False, 0, 1400000000, 420, 0, 0]
    assert r.json() == {
        "changed": {"/a": ["f", False, 2, 1400000000, 420, 0, 0]},
        "created": {"/d": ["f", False, 1, 1400000000, 420, 0, 0],
                    "/w": ["f", False, 1, 1400000000, 420, 0, 0]},
        "deleted": {"/b": ["f", True, *entry[1:]]},
    }
    assert_cacheable(r, 200, r.body, JSON)
    assert (registry.storage / "images" / child / "_diff").read_bytes() == r.body
    # A base image reports everything, whiteouts included, as created.
    r = get(registry, base, "diff")
    assert r.json() == {"changed": {}, "deleted": {}, "created": {
        "/a": ["f", False, 1, 1400000000, 420, 0, 0],
        "/b": ["f", False, 1, 1400000000, 420, 0, 0],
        "/c": ["f", False, 1, 1400000000, 420, 0, 0],
        "/w": ["f", True, 0, 1400000000, 420, 0, 0]}}
    # Cached raw.
    (registry.storage / "images" / child / "_diff").write_bytes(b'{"raw":1}')
    assert get(registry, child, "diff").body == b'{"raw":1}'
    assert_not_modified(get(registry, child, "diff", IMS))


def test_diff_ancestor_without_layer(registry):
    """An ancestor without a layer has no files but still counts as a step."""
    base, child = new_id(), new_id()
    write_files(registry.storage, {f"images/{base}/json": image_json(base),
                                   f"images/{base}/ancestry": f'["{base}"]'})
    push(registry, child, make_tar(("./a", b"1"), ("./.wh.b", b"")), parent=base)
    assert get(registry, child, "diff").json() == {
        "changed": {}, "created": {"/a": ["f", False, 1, 1400000000, 420, 0, 0]},
        "deleted": {"/b": ["f", True, 0, 1400000000, 420, 0, 0]}}


def test_diff_ancestor_not_tar(registry):
    base, child = new_id(), new_id()
    push(registry, base, b"not a tar")
    push(registry, child, make_tar(("a", b"1")), parent=base)
    assert_error(get(registry, child, "diff"), 400, "Layer format not supported")
    assert_error(get(registry, base, "diff"), 400, "Layer format not supported")


# R3 step 7: X-Accel-Redirect ------------------------------------------------------------------

@pytest.fixture(scope="module")
def accel_registry(tmp_path_factory):
    yield from module_registry(
        tmp_path_factory, "dev:\n  standalone: true\n  nginx_x_accel_redirect: /protected\n")


def test_x_accel_redirect(accel_registry):
    image_id = new_id()
    push(accel_registry, image_id, LAYER)
    r = get(accel_registry, image_id, "layer", {"Range": "bytes=0-9"})
    assert_cacheable(r, 200, b"", OCTETS)
    assert r.headers["X-Accel-Redirect"] == f"/protected/images/{image_id}/layer"
    assert r.headers["Accept-Ranges"] == "bytes"
    # After the existence and IMS checks.
    assert_error(get(accel_registry, new_id(), "layer"), 404, "Image not found")
    assert_not_modified(get(accel_registry, image_id, "layer", IMS))
