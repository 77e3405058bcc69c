"""
The index routes a standalone registry emulates, R20–R25, through the real Site in memory
(docs/api.md).
"""

from __future__ import annotations

import re

import pytest

from tests.routes import (
    assert_error,
    assert_json,
    module_registry,
    new_name,
)

TOKEN = re.compile(r'Token signature=[A-Z0-9]{16},repository="(.*)",access=(\w+)')


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    yield from module_registry(tmp_path_factory)


def request(registry, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None):
    return registry.request(method, f"/v1/{path}", body, headers)


def assert_token_headers(r, key: str, access: str, endpoints: str) -> None:
    """R22's three headers: a fresh token naming the repository key, and the endpoints."""
    token = r.headers["X-Docker-Token"]
    assert TOKEN.fullmatch(token).groups() == (key, access), token
    assert r.headers["WWW-Authenticate"] == token
    assert r.headers["X-Docker-Endpoints"] == endpoints


# R20, R21 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["users", "users/"])
def test_users(registry, path):
    assert_json(request(registry, "GET", path), 200, b'"OK"')
    assert_json(request(registry, "HEAD", path), 200, b'"OK"', head=True)
    for body in (b'{"username": "u", "password": "p", "email": "e@x"}', b"1", b'"x"', b"[]",
                 b"null"):
        assert_json(request(registry, "POST", path, body), 201, b'"User Created"')
    r = request(registry, "POST", path, b'{"username": "u"}',
                {"Content-Type": "application/x-www-form-urlencoded"})
    assert_json(r, 201, b'"User Created"')
    for body in (b"", b"{", b"nope", b'"\xff"', '"x"'.encode("utf-16")):
        assert_error(request(registry, "POST", path, body), 400, "Error Decoding JSON")


def test_users_multipart_content_type(registry):
    """§2.4: the body is read whatever the Content-Type, multipart included."""
    for content_type in ("multipart/form-data; boundary=x", "multipart/form-data"):
        r = request(registry, "POST", "users/", b'{"username": "u"}',
                    {"Content-Type": content_type})
        assert_json(r, 201, b'"User Created"')


@pytest.mark.parametrize("path", ["users/bob", "users/bob/", "users/b%20o%2Bb"])
def test_user_update(registry, path):
    for body in (b"", b"not json", b'{"email": "e@x"}'):
        assert_json(request(registry, "PUT", path, body), 204, b"")


# R22 ------------------------------------------------------------------------------------------

def test_push_start_and_end_merge(registry):
    """§4.23's example byte for byte: the first list verbatim, then the merge."""
    name = new_name()
    first = b'[{"checksum": "c1", "id": "a", "extra": 1}, {"id": "b"}]'
    r = request(registry, "PUT", f"repositories/foo/{name}/images", first,
                {"X-Docker-Endpoints": "elsewhere:1", "Host": "reg.example.com:5000"})
    assert_json(r, 204, b"")
    assert_token_headers(r, f"foo/{name}", "write", "reg.example.com:5000")
    stored = registry.storage / "repositories" / "foo" / name / "_index_images"
    assert stored.read_bytes() == first
    r = request(registry, "PUT", f"repositories/foo/{name}/images",
                b'[{"id": "a"}, {"checksum": "c2", "id": "b"}, {"id": "c"}]')
    assert_json(r, 204, b"")
    merged = b'[{"checksum": "c1", "id": "a"}, {"checksum": "c2", "id": "b"}, {"id": "c"}]'
    assert stored.read_bytes() == merged
    r = request(registry, "GET", f"repositories/foo/{name}/images", headers={"Host": "h:1"})
    assert_json(r, 200, merged)
    assert_token_headers(r, f"foo/{name}", "read", "h:1")


def test_push_start(registry):
    """R22a: 200 with the body "" and the headers of §4.23, trailing slash optional."""
    for suffix in ("/", ""):
        name = new_name()
        body = b'[{"id":"6585"},{"Tag":"latest","id":"68fa"}]'
        r = request(registry, "PUT", f"repositories/foo/{name}{suffix}", body,
                    {"X-Docker-Token": "true", "Host": "reg.example.com:5000",
                     "Content-Type": "application/json"})
        assert_json(r, 200, b'""')
        assert_token_headers(r, f"foo/{name}", "write", "reg.example.com:5000")
        stored = registry.storage / "repositories" / "foo" / name / "_index_images"
        assert stored.read_bytes() == body
        # R22a and R22b share the list.
        r = request(registry, "PUT", f"repositories/foo/{name}/images",
                    b'[{"checksum": "c", "id": "6585", "Tag": "x"}]')
        assert_json(r, 204, b"")
        assert request(registry, "GET", f"repositories/foo/{name}/images").body == (
            b'[{"checksum": "c", "id": "6585"}, {"id": "68fa"}]')


def test_push_start_repository_keys(registry):
    name = new_name()
    r = request(registry, "PUT", f"repositories/{name}/", b"[]")
    assert_token_headers(r, f"library/{name}", "write", f"127.0.0.1:{registry.port}")
    assert (registry.storage / "repositories" / "library" / name / "_index_images").exists()
    r = request(registry, "PUT", f"repositories/a/{name}/c/images", b"[]")
    assert_token_headers(r, f"a/{name}%2Fc", "write", f"127.0.0.1:{registry.port}")
    r = request(registry, "PUT", f"repositories/foo/{name}%20x/images", b"[]")
    assert_token_headers(r, f"foo/{name}+x", "write", f"127.0.0.1:{registry.port}")


def test_endpoints_without_host_header(registry):
    """No Host header: this server's address and port."""
    name = new_name()
    r = registry.request("PUT", f"/v1/repositories/foo/{name}/", b"[]",
                         {"Host": None, "Accept-Encoding": None},
                         version="HTTP/1.0")
    assert r.status == 200, r
    assert r.headers.get_all("X-Docker-Endpoints") == [f"127.0.0.1:{registry.port}"]


@pytest.mark.parametrize("suffix", ["/images", "/"])
def test_push_start_invalid(registry, suffix):
    name = new_name()
    path = f"repositories/foo/{name}{suffix}"
    for body in (b"", b"[", b"nope", b'["\xff"]'):
        assert_error(request(registry, "PUT", path, body), 400, "Error Decoding JSON")
    for body in (b"{}", b'"x"', b"1", b"null", b"[1]", b'[{"id": 1}]', b'[{"checksum": "c"}]',
                 b'[{"id": "a"}, "b"]', b'[{"id": null}]', b"[[]]"):
        assert_error(request(registry, "PUT", path, body), 400, "Invalid data")
    assert not (registry.storage / "repositories" / "foo" / name).exists()
    # name before body
    assert_error(request(registry, "PUT", f"repositories/foo//x{suffix}", b"nope"), 400,
                 "Invalid repository name")
    # a broken list is not stored, so the next PUT still works
    assert_json(request(registry, "PUT", path, b'[{"id": "a"}]'), 200 if suffix == "/" else 204,
                b'""' if suffix == "/" else b"")
    assert_error(request(registry, "PUT", path, b'[{"id": 1}]'), 400, "Invalid data")
    assert_json(request(registry, "GET", f"repositories/foo/{name}/images"), 200, b'[{"id": "a"}]')


# R23 ------------------------------------------------------------------------------------------

def test_pull_start(registry):
    name = new_name()
    assert_error(request(registry, "GET", f"repositories/foo/{name}/images"), 404,
                 "images not found")
    assert_error(request(registry, "HEAD", f"repositories/foo/{name}/images"), 404,
                 "images not found", head=True)
    assert_error(request(registry, "GET", "repositories/foo/%2E%2E/images"), 400,
                 "Invalid repository name")
    stored = b'[ {"id":"x"} ]'
    (registry.storage / "repositories" / "foo" / name).mkdir(parents=True)
    (registry.storage / "repositories" / "foo" / name / "_index_images").write_bytes(stored)
    r = request(registry, "GET", f"repositories/foo/{name}/images",
                headers={"X-Docker-Token": "true"})
    assert_json(r, 200, stored)
    assert_token_headers(r, f"foo/{name}", "read", f"127.0.0.1:{registry.port}")
    r = request(registry, "HEAD", f"repositories/foo/{name}/images")
    assert_json(r, 200, stored, head=True)


# R24, R25 -------------------------------------------------------------------------------------

def test_delete_images(registry):
    name = new_name()
    assert_json(request(registry, "PUT", f"repositories/foo/{name}/images", b"[]"), 204, b"")
    r = request(registry, "DELETE", f"repositories/foo/{name}/images", headers={"Host": "h"})
    assert_json(r, 204, b"")
    assert_token_headers(r, f"foo/{name}", "delete", "h")
    assert (registry.storage / "repositories" / "foo" / name / "_index_images").exists()
    r = request(registry, "DELETE", f"repositories/foo/{new_name()}/images")
    assert_json(r, 204, b"")
    assert_error(request(registry, "DELETE", "repositories/foo/./images"), 400,
                 "Invalid repository name")


def test_repository_auth(registry):
    name = new_name()
    for body in (b"", b"not json", b"{}"):
        assert_json(request(registry, "PUT", f"repositories/foo/{name}/auth", body), 200, b'"OK"')
    assert not (registry.storage / "repositories" / "foo" / name).exists()
    assert_error(request(registry, "PUT", "repositories/foo/a%01/auth", b"{}"), 400,
                 "Invalid repository name")
