"""
Routing and the wire conventions, through the real Site in memory: the header sets of §2.2,
HEAD and OPTIONS (§2.5), unknown routes, 405 and trailing slashes (§2.6), path decoding (§3.1),
path traversal attempts, R1, R2, and the 413 and 500 answers.
"""

from __future__ import annotations

import json
import os

import pytest
from twisted.logger import formatEvent

from tests.routes import (
    assert_cacheable,
    assert_error,
    assert_json,
    assert_json_headers,
    assert_not_modified,
    module_registry,
    new_id,
    new_name,
    push,
    put_tag,
    write_files,
)

ID = new_id()
LAYER = bytes(range(256)) * 4
ALL = {"DELETE", "GET", "HEAD", "OPTIONS", "PUT"}
ROOT = {"DELETE", "OPTIONS", "PUT"}
READ = {"GET", "HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    yield from module_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def pushed(registry):
    """A complete image tagged C{foo/pushed:latest}, with an R22 image list."""
    push(registry, ID, LAYER)
    assert put_tag(registry, "foo/pushed", "latest", ID).status == 200
    assert registry.request("PUT", "/v1/repositories/foo/pushed/images", b"[]").status == 204
    return ID


def allowed(r) -> set[str]:
    return {m.strip() for m in r.headers["Allow"].split(",")}


# R1, R2 and the header sets of §2.2 -----------------------------------------------------------

@pytest.mark.parametrize("path", ["/_ping", "/v1/_ping", "/v1/_ping?x=1"])
def test_ping(registry, path):
    r = registry.request("GET", path)
    assert_json(r, 200, b"{}")
    assert r.headers["X-Docker-Registry-Standalone"] == "True"
    assert "X-Docker-Registry-Config" not in r.headers
    r = registry.request("HEAD", path)
    assert_json(r, 200, b"{}", head=True)
    assert r.headers["X-Docker-Registry-Standalone"] == "True"


def test_banner(registry):
    r = registry.request("GET", "/")
    assert_json(r, 200, b'"\\"docker-registry server\\""')
    assert len(r.body) == 28


def test_header_sets(registry, pushed):
    """One answer of each kind of §2.2."""
    # JSON 200, error, 201, 204 (no Content-Length)
    assert_json(registry.request("GET", "/v1/repositories/foo/pushed/tags/latest"), 200,
                f'"{pushed}"'.encode())
    assert_error(registry.request("GET", "/v1/nowhere"), 404, "Not found")
    assert_json(registry.request("POST", "/v1/users", b"{}"), 201, b'"User Created"')
    assert_json(registry.request("PUT", "/v1/users/x", b"{}"), 204, b"")
    assert_json(registry.request("DELETE", "/v1/repositories/foo/pushed/images"), 204, b"")
    # cacheable JSON, 304
    assert_cacheable(registry.request("GET", f"/v1/images/{pushed}/ancestry"), 200,
                     f'["{pushed}"]'.encode(), "application/json")
    assert_not_modified(registry.request("GET", f"/v1/images/{pushed}/json",
                                    headers={"If-Modified-Since": "x"}))
    # layer, 206, 416
    r = registry.request("GET", f"/v1/images/{pushed}/layer")
    assert_cacheable(r, 200, LAYER, "application/octet-stream")
    assert r.headers["Accept-Ranges"] == "bytes"
    r = registry.request("GET", f"/v1/images/{pushed}/layer", headers={"Range": "bytes=1-2"})
    assert_cacheable(r, 206, LAYER[1:3], "application/octet-stream")
    assert r.headers["Content-Range"] == "bytes 1-2/1024"
    r = registry.request("GET", f"/v1/images/{pushed}/layer", headers={"Range": "bytes=2000-"})
    assert (r.status, r.body, r.headers["Content-Length"]) == (416, b"", "0")
    # OPTIONS
    r = registry.request("OPTIONS", "/v1/_ping")
    assert (r.status, r.body, allowed(r)) == (200, b"", READ)


# HEAD (§2.5) ----------------------------------------------------------------------------------

def head_paths(image_id: str) -> list[str]:
    return [
        "/_ping", "/v1/_ping", "/", "/v1/users", "/v1/users/",
        f"/v1/images/{image_id}/layer", f"/v1/images/{image_id}/json",
        f"/v1/images/{image_id}/ancestry", f"/v1/images/{image_id}/files",
        f"/v1/images/{image_id}/diff",
        "/v1/repositories/foo/pushed/tags/latest/json", "/v1/repositories/foo/pushed/tags/latest",
        "/v1/repositories/foo/pushed/tags", "/v1/repositories/foo/pushed/json",
        "/v1/repositories/foo/pushed/properties", "/v1/repositories/foo/pushed/images",
        # errors
        f"/v1/images/{new_id()}/json", "/v1/images/nothex/layer", "/v1/repositories/foo/no/tags",
        "/v1/repositories/foo/pushed/tags/none", "/v1/repositories/foo/no/images",
        "/v1/repositories/foo//x/tags", "/v1/nowhere", "/v1/repositories/foo/pushed",
        f"/v1/images/{image_id}/checksum",
    ]


def test_head_like_get(registry, pushed):
    """Same status and headers as GET, Content-Length included, no body."""
    for path in head_paths(pushed):
        got, head = registry.request("GET", path), registry.request("HEAD", path)
        assert head.status == got.status, path
        assert head.body == b"", path
        strip = {"Date", "Expires", "X-Docker-Token", "WWW-Authenticate"}
        assert {k: v for k, v in head.headers.items() if k not in strip} == {
            k: v for k, v in got.headers.items() if k not in strip}, path
        assert head.headers.get("Content-Length") == str(len(got.body)), path


def test_head_side_effects(registry):
    """HEAD runs the same checks with the same side effects: R9 stores C{_files}."""
    image_id = new_id()
    push(registry, image_id, b"not a tar")
    r = registry.request("HEAD", f"/v1/images/{image_id}/files")
    assert_error(r, 400, "Layer format not supported", head=True)
    image_id = new_id()
    from tests.routes import make_tar
    push(registry, image_id, make_tar(("a", b"1")))
    r = registry.request("HEAD", f"/v1/images/{image_id}/files")
    assert (r.status, r.body) == (200, b"")
    assert (registry.storage / "images" / image_id / "_files").exists()


# OPTIONS and 405 (§2.5, §2.6) -----------------------------------------------------------------

ALLOW = [
    ("/_ping", READ),
    ("/v1/_ping", READ),
    ("/", READ),
    ("/v1/images/{id}/layer", READ | {"PUT"}),
    ("/v1/images/{id}/checksum", {"OPTIONS", "PUT"}),
    ("/v1/images/{id}/json", READ | {"PUT"}),
    ("/v1/images/{id}/ancestry", READ),
    ("/v1/images/{id}/files", READ),
    ("/v1/images/{id}/diff", READ),
    ("/v1/images/nothex/json", READ | {"PUT"}),
    ("/v1/repositories/foo/bar/tags/v1/json", ALL),
    ("/v1/repositories/foo/bar/tags/v1", ALL),
    ("/v1/repositories/foo/bar/tags", ALL),
    ("/v1/repositories/foo/bar/json", ALL),
    ("/v1/repositories/foo/bar/properties", ALL),
    ("/v1/repositories/foo/bar/images", ALL),
    ("/v1/repositories/foo/bar/auth", ROOT),
    ("/v1/repositories/foo/bar", ROOT),
    ("/v1/repositories/foo/bar/", ROOT),
    ("/v1/repositories/foo/bar/tags/", ROOT),
    ("/v1/repositories/foo//bar/tags", ALL),
    ("/v1/repositories/ubuntu", ROOT),
    ("/v1/users", READ | {"POST"}),
    ("/v1/users/", READ | {"POST"}),
    ("/v1/users/bob", {"OPTIONS", "PUT"}),
    ("/v1/users/bob/", {"OPTIONS", "PUT"}),
]


@pytest.mark.parametrize("path, methods", ALLOW)
def test_options_and_405(registry, path, methods):
    path = path.format(id=new_id(16))
    r = registry.request("OPTIONS", path)
    assert (r.status, r.body, allowed(r)) == (200, b"", methods), r
    for method in {"GET", "PUT", "POST", "DELETE", "PATCH"} - methods:
        r = registry.request(method, path, b"")
        assert_error(r, 405, "Method not allowed")
        assert allowed(r) == methods, (method, path)
    if "GET" not in methods:
        r = registry.request("HEAD", path)
        assert (r.status, r.body, allowed(r)) == (405, b"", methods)


# Unknown routes and trailing slashes (§2.6) ---------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v1/_ping/", "/_ping/", "/v1/", "/v1", "/v1/images/{id}", "/v1/images/{id}/",
    "/v1/images/{id}/json/", "/v1/images/{id}/layer/", "/v1/images/{id}/other",
    "/v1/images/", "/v1/images//json", "/v1/repositories", "/v1/repositories/",
    "/v1/users//", "/v1/users/bob//", "/v1/users/a/b", "/v1//_ping",
    "/v1/search/", "/etc/passwd", "/v1/images/{id}/json/..", "/index.html",
])
def test_unknown_routes(registry, path):
    path = path.format(id=new_id(16))
    for method in ("GET", "PUT", "DELETE", "POST", "OPTIONS"):
        assert_error(registry.request(method, path, b""), 404, "Not found")
    assert_error(registry.request("HEAD", path), 404, "Not found", head=True)


def test_routing_table_rows(registry):
    """The table of §2.6."""
    r = registry.request("POST", f"/v1/images/{new_id()}/json", b"{}")
    assert_error(r, 405, "Method not allowed")
    assert r.headers["Allow"] == "GET, HEAD, OPTIONS, PUT"
    for path in ("/v1/repositories/foo/bar/", "/v1/repositories/foo/bar",
                 "/v1/repositories/foo/bar/tags/"):
        r = registry.request("GET", path)
        assert_error(r, 405, "Method not allowed")
        assert allowed(r) == ROOT
    assert_error(registry.request("DELETE", "/v1/repositories/foo/bar/images/"), 404,
                 "Repository not found")
    assert_json(registry.request("GET", "/v1/users"), 200, b'"OK"')


def test_no_redirects_for_slashes(registry, pushed):
    """Only users, users/<name> and the repository root take an optional slash."""
    assert_json(registry.request("PUT", "/v1/users/bob/"), 204, b"")
    assert_json(registry.request("PUT", "/v1/repositories/foo/slash", b"[]"), 200, b'""')
    assert_json(registry.request("PUT", "/v1/repositories/foo/slash/", b"[]"), 200, b'""')
    # An extra slash sends the other routes to the repository root.
    r = registry.request("GET", "/v1/repositories/foo/pushed/tags/")
    assert_error(r, 405, "Method not allowed")
    r = registry.request("PUT", "/v1/repositories/foo/slash/images/", b"[]")
    assert_json(r, 200, b'""')
    assert (registry.storage / "repositories/foo/slash%252Fimages/_index_images").exists()
    r = registry.request("PUT", "/v1/repositories/foo/slash/tags/v1/", b'"x"')
    assert_error(r, 400, "Invalid data")


def test_route_precedence(registry, pushed):
    """§4.0: most specific first, matched from the end."""
    write_files(registry.storage, {
        "repositories/a/b/tagx_json": '{"x": 1}',
        "repositories/library/a/tagtags_json": '{"tags": 1}',
        "repositories/a/b%252Ftags%252Fx/json": '{"wrong": 1}',
    })
    assert_json(registry.request("GET", "/v1/repositories/a/b/tags/x/json"), 200, b'{"x": 1}')
    assert_json(registry.request("GET", "/v1/repositories/a/tags/tags/json"), 200, b'{"tags": 1}')
    # R12 with tag "json", not R16 of foo/pushed/tags or library/foo/tags
    assert_json(put_tag(registry, "foo/pushed", "json", pushed), 200, b"true")
    assert_json(registry.request("GET", "/v1/repositories/foo/pushed/tags/json"), 200,
                f'"{pushed}"'.encode())
    assert_error(registry.request("GET", "/v1/repositories/foo/tags/json"), 404, "Tag not found")
    # R12 with repository x/tags/b
    assert_json(put_tag(registry, "x/tags/b", "c", pushed), 200, b"true")
    assert (registry.storage / "repositories/x/tags%252Fb/tag_c").exists()
    # R15 on the repository, not the root route of foo/del/tags
    name = new_name()
    assert_json(put_tag(registry, f"foo/{name}", "v1", pushed), 200, b"true")
    assert_json(registry.request("DELETE", f"/v1/repositories/foo/{name}/tags"), 200, b"true")
    assert not (registry.storage / "repositories" / "foo" / name).exists()
    # R22b and R25, not R22a of foo/x/images or foo/x/auth
    assert_json(registry.request("PUT", f"/v1/repositories/foo/{name}/images", b"[]"), 204, b"")
    assert_json(registry.request("PUT", f"/v1/repositories/foo/{name}/auth", b"[]"), 200, b'"OK"')
    assert [p.name for p in (registry.storage / "repositories" / "foo").iterdir()
            if p.name.startswith(name)] == [name]


def test_layer_put_with_leading_double_slash(registry):
    """The body reader and the router must agree on which requests are layer uploads."""
    image_id = new_id()
    push(registry, image_id, None)
    r = registry.request("PUT", f"//v1/images/{image_id}/layer", b"abc")
    assert r.status != 500 and r.headers["Content-Type"] == "application/json", r


# Decoding (§3.1) ------------------------------------------------------------------------------

def test_encoded_slash_acts_as_slash(registry, pushed):
    name = new_name()
    assert_json(registry.request("PUT", f"/v1/repositories/foo%2F{name}%2Ftags%2Fv1",
                            json.dumps(pushed).encode()), 200, b"true")
    assert (registry.storage / "repositories" / "foo" / name / "tag_v1").exists()
    assert_json(registry.request("GET", f"/v1/repositories/foo/{name}%2Ftags"), 200,
                f'{{"v1": "{pushed}"}}'.encode())
    r = registry.request("GET", f"/v1/images%2F{pushed}%2Fancestry")
    assert (r.status, r.body) == (200, f'["{pushed}"]'.encode())


def test_percent_and_plus_kept(registry, pushed):
    name = new_name()
    assert_json(put_tag(registry, f"foo/{name}%zz+%2", "v1", pushed), 200, b"true")
    assert (registry.storage / "repositories" / "foo" / f"{name}%2525zz%252B%25252").is_dir()
    assert_json(registry.request("GET", f"/v1/repositories/foo/{name}%25zz%2B%252/tags"), 200,
                f'{{"v1": "{pushed}"}}'.encode())


@pytest.mark.parametrize("path, status, message", [
    ("/v1/repositories/foo/%ff/tags", 400, "Invalid repository name"),
    ("/v1/repositories/%C3/json", 400, "Invalid repository name"),
    ("/v1/repositories/foo/bar/tags/%ff", 400, "Invalid repository name"),
    ("/v1/repositories/foo/%ff", 400, "Invalid repository name"),
    ("/v1/repositories/%ff%2Fx/images", 400, "Invalid repository name"),
    ("/v1/images/%ff/json", 404, "Not found"),
    ("/v1/images/%ff%ff%ff%ff%ff%ff%ff%ff/layer", 404, "Not found"),
    ("/v1/users/%ff", 404, "Not found"),
    ("/v1/%ff", 404, "Not found"),
    ("/%ff", 404, "Not found"),
    ("/v1/repositories%ff/x/tags", 404, "Not found"),
])
def test_invalid_utf8(registry, path, status, message):
    for method in ("GET", "PUT", "DELETE"):
        assert_error(registry.request(method, path, b"[]"), status, message)
    assert_error(registry.request("HEAD", path), status, message, head=True)


# Path traversal -------------------------------------------------------------------------------

def snapshot(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root)
            for d, dirs, files in os.walk(root) for n in dirs + files}


def test_path_traversal(registry, pushed):
    """Nothing outside the storage directory can be addressed; the answers are JSON errors."""
    outside = registry.storage.parent
    before = {p for p in snapshot(outside) if not p.startswith("storage")}
    marker = "escape" + new_name()
    body = json.dumps(pushed).encode()
    invalid_name = [
        ("PUT", f"/v1/repositories/../../{marker}/tags/latest", body),
        ("PUT", f"/v1/repositories/%2e%2e/%2e%2e/{marker}/tags/latest", body),
        ("PUT", f"/v1/repositories/foo%2F..%2F..%2F..%2F{marker}/tags/latest", body),
        ("PUT", f"/v1/repositories/foo/..%2F..%2F{marker}/properties", b'{"access": "private"}'),
        ("PUT", "/v1/repositories/foo/..%00/tags/latest", body),
        ("PUT", f"/v1/repositories/foo/x%00{marker}/tags/latest", body),
        ("PUT", f"/v1/repositories/%2Ftmp%2F{marker}/properties", b'{"access": "private"}'),
        ("PUT", f"/v1/repositories//tmp/{marker}/properties", b'{"access": "private"}'),
        ("PUT", f"/v1/repositories/{outside}/{marker}/images", b"[]"),
        ("PUT", f"/v1/repositories/foo/bar/tags/..%2F..%2F..%2F{marker}", b"[]"),
        ("PUT", f"/v1/repositories/../{marker}/", b"[]"),
        ("DELETE", "/v1/repositories/../", None),
        ("DELETE", "/v1/repositories/foo/..", None),
        ("DELETE", "/v1/repositories/../images/tags", None),
        ("GET", "/v1/repositories/../../../etc/tags", None),
        ("PUT", f"/v1/repositories/foo/{'x' * 4096}/tags/latest", body),
        ("PUT", f"/v1/repositories/{'%C3%A9' * 200}/x/properties", b'{"access": "private"}'),
    ]
    for method, path, data in invalid_name:
        assert_error(registry.request(method, path, data), 400, "Invalid repository name")
    name = new_name()
    for tag in ("%2e%2e", "..", ".", "%2e", "..%5C..", "x" * 4096, f"{'x' * 128}y"):
        r = registry.request("PUT", f"/v1/repositories/foo/{name}/tags/{tag}", body)
        assert r.status == 400 and r.json()["error"].startswith("Invalid tag name"), r
    for tag in ("%2e%2e", "..", "x" * 4096, "%00"):
        assert_error(registry.request("GET", f"/v1/repositories/foo/{name}/tags/{tag}"), 404,
                     "Tag not found")
        r = registry.request("DELETE", f"/v1/repositories/foo/{name}/tags/{tag}")
        assert r.status == 404 and r.json()["error"].startswith("Tag not found: "), r
        assert_json(registry.request("GET", f"/v1/repositories/foo/{name}/tags/{tag}/json"), 200,
                    registry.request("GET", f"/v1/repositories/foo/{new_name()}/json").body)
    for value in ("../../etc", f"../../{marker}", "/etc/passwd", "..", "%2e%2e", "x" * 4096):
        assert_error(put_tag(registry, f"foo/{name}", "v1", value), 404, "Image not found")
    for image_id in ("%2e%2e", "..", "%00", "x" * 4096, f"..%2F{marker}"):
        for method, what, data in (("PUT", "json", b'{"id": "x"}'), ("PUT", "layer", b"x"),
                                   ("PUT", "checksum", None), ("GET", "json", None),
                                   ("GET", "layer", None), ("GET", "files", None)):
            r = registry.request(method, f"/v1/images/{image_id}/{what}", data)
            if "%2F" in image_id:
                assert_error(r, 404, "Not found")
            else:
                assert_error(r, 404, "Invalid image ID")
    for parent in ("../../etc", f"../{marker}", "/etc"):
        image_id = new_id()
        r = registry.request("PUT", f"/v1/images/{image_id}/json",
                        json.dumps({"id": image_id, "parent": parent}).encode())
        assert_error(r, 400, "Image depends on a non existing parent")
    assert_error(registry.request("PUT", f"/v1/images/../../{marker}/json", b"{}"), 404,
                 "Not found")
    assert registry.request("GET", f"/v1/../../{marker}").status == 404

    after = {p for p in snapshot(outside) if not p.startswith("storage")}
    assert after == before
    assert not any(marker in p for p in snapshot(outside.parent))
    assert not os.path.exists(f"/tmp/{marker}") and not os.path.exists(f"/{marker}")
    assert {p.name for p in registry.storage.iterdir()} <= {"images", "repositories",
                                                            "docker-registry.db"}
    assert not any(marker in p for p in snapshot(registry.storage))
    assert not any(name in p for p in snapshot(registry.storage))


# 413 and 500 ----------------------------------------------------------------------------------

def test_body_too_large(registry):
    body = b"x" * (10 * 1024 * 1024 + 1)
    name = new_name()
    for path in (f"/v1/repositories/foo/{name}/tags/v1", f"/v1/images/{new_id()}/json",
                 f"/v1/repositories/foo/{name}/images"):
        assert_error(registry.request("PUT", path, body), 413, "Request body too large")
    assert not (registry.storage / "repositories" / "foo" / name).exists()


def test_internal_error(registry, monkeypatch):
    """An unexpected exception: 500 JSON, and the traceback in the log."""
    image_id = new_id()
    write_files(registry.storage, {f"images/{image_id}/json": "{}",
                                   f"images/{image_id}/ancestry": f'["{image_id}"]'})
    storage = registry.registry.storage
    get_content = storage.get_content

    def failing(key: str):
        if image_id in key:
            raise RuntimeError("storage broke")
        return get_content(key)

    monkeypatch.setattr(storage, "get_content", failing)
    assert_error(registry.request("GET", f"/v1/images/{image_id}/ancestry"), 500,
                 "Internal server error")
    logged = [event for event in registry.log_events
              if "log_failure" in event and image_id in formatEvent(event)]
    assert logged, registry.log_events
    traceback = logged[0]["log_failure"].getTraceback()
    assert "Traceback" in traceback and "RuntimeError: storage broke" in traceback
    r = registry.request("GET", "/v1/_ping")
    assert r.status == 200


def test_json_headers_everywhere(registry, pushed):
    """No answer carries X-Docker-Registry-Version or ETag; JSON answers carry the set."""
    for path in ("/v1/_ping", "/", f"/v1/images/{pushed}/json", "/v1/nowhere"):
        r = registry.request("GET", path)
        assert "X-Docker-Registry-Version" not in r.headers and "ETag" not in r.headers
    r = registry.request("PUT", "/v1/users/x")
    assert_json_headers(r, None)
