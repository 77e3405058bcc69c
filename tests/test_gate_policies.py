"""
C{readonly} and C{auth.htpasswd} on every route with an access policy, V1's and V2's: the
route tables of tests/test_policies.py and tests/test_v2_policies.py (which fail when a route
is missing from them) walked in each mode, each refusal with its status, body and challenge,
and storage left as it was.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.memory import MemoryRegistry
from tests.test_htpasswd import write_htpasswd
from tests.test_policies import IMAGE, METHOD_ACCESS, ROUTES, fake_index, seeded, snapshot
from tests.test_v2_policies import ROUTES as V2_ROUTES
from twistreg.web.v1 import build_routes

STANDALONE = "dev:\n  standalone: true\n"
READONLY = STANDALONE + "  readonly: true\n"
USERS = {"writer": "w-secret", "reader": "r-secret"}
CHALLENGE = 'Basic realm="Test registry"'


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


CREDENTIALS = {
    "writer": basic("writer", USERS["writer"]),
    "reader": basic("reader", USERS["reader"]),
    "wrong password": basic("writer", "r-secret"),
    "unknown user": basic("nobody", "w-secret"),
    "none": {},
    "token": {"Authorization": 'Token signature=x,repository="foo/bar",access=write'},
}


def with_passwords(tmp_path: Path, config: str = STANDALONE) -> str:
    path = write_htpasswd(tmp_path / "htpasswd", USERS)
    return config + (f"  auth:\n    htpasswd:\n      path: {path}\n"
                     "      realm: Test registry\n      readers: [reader]\n")


def v1_error(response, status: int, message: str) -> bool:
    return (response.status, response.json()) == (status, {"error": message})


def v2_error(response, status: int, code: str, message: str) -> bool:
    return response.status == status and response.json() == {
        "errors": [{"code": code, "message": message}]}


@pytest.fixture
def index(monkeypatch):
    return fake_index(monkeypatch)


def writes(method: str) -> bool:
    return method != "GET"


# -- read-only -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "rule", "path", "body"), ROUTES,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_v1_readonly_refuses_every_write_and_serves_reads(tmp_path, method, rule, path, body):
    registry = seeded(tmp_path, READONLY)
    before = snapshot(registry.storage)
    response = registry.request(method, path, body)
    if writes(method):
        assert v1_error(response, 405, "Registry is in read-only mode"), response
        assert snapshot(registry.storage) == before
    else:
        assert response.status == 200, response


@pytest.mark.parametrize(("method", "rule", "path", "body"), V2_ROUTES,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_v2_readonly_refuses_every_write(tmp_path, method, rule, path, body):
    registry = MemoryRegistry(tmp_path, READONLY)
    try:
        before = sorted(os.walk(registry.storage))
        response = registry.request(method, path, body)
        # An upload's status (GET) belongs to its push: refused with it.
        if writes(method) or rule.endswith("<upload_id>"):
            assert v2_error(response, 405, "UNSUPPORTED", "Registry is in read-only mode"), \
                response
        else:
            assert response.status != 405, response
        assert sorted(os.walk(registry.storage)) == before
    finally:
        registry.close()


def test_a_streamed_body_is_refused_before_it_is_read(tmp_path):
    """A layer PUT and a V2 chunk to a read-only registry: answered at once, nothing stored."""
    registry = seeded(tmp_path, READONLY)
    before = snapshot(registry.storage)
    parts = [b"x" * 65536] * 64
    for path, method in ((f"/v1/images/{IMAGE}/layer", "PUT"),
                         ("/v2/foo/bar/blobs/uploads/0f8fad5b-d9cb-469f-a165-70867728950e",
                          "PATCH")):
        response = registry.request(method, path, parts, chunked=True)
        assert response.status == 405, response
        assert response.headers["Connection"] == "close"
    assert snapshot(registry.storage) == before
    assert not list(registry.storage.rglob(".tmp-*"))


def test_readonly_in_token_mode_keeps_no_image_list(tmp_path, index):
    """A token validated for a read writes nothing into a read-only registry's storage."""
    registry = seeded(tmp_path, "dev:\n  standalone: false\n  readonly: true\n"
                                "  index_endpoint: http://index.invalid\n")
    before = snapshot(registry.storage)
    read = {"Authorization": 'Token signature=good,repository="foo/bar",access=read'}
    assert registry.request("GET", "/v1/repositories/foo/bar/tags", headers=read).status == 200
    write = {"Authorization": 'Token signature=good,repository="foo/bar",access=write'}
    response = registry.request("PUT", "/v1/repositories/foo/bar/tags/v2",
                                json.dumps(IMAGE).encode(), write)
    assert v1_error(response, 405, "Registry is in read-only mode")
    assert snapshot(registry.storage) == before


# -- passwords -----------------------------------------------------------------------------------

def expected_v1(credential: str, method: str) -> tuple[int, str] | None:
    """The refusal a credential gets on a V1 route, or None when it passes."""
    if credential in ("none", "token"):
        return 401, "Requires authorization"
    if credential in ("wrong password", "unknown user"):
        return 401, "Invalid username or password"
    if credential == "reader" and writes(method):
        return 403, "User reader may only read"
    return None


@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
@pytest.mark.parametrize(("method", "rule", "path", "body"), ROUTES,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_v1_passwords_on_every_route(tmp_path, credential, method, rule, path, body):
    registry = seeded(tmp_path, with_passwords(tmp_path))
    before = snapshot(registry.storage)
    response = registry.request(method, path, body, CREDENTIALS[credential])
    refusal = expected_v1(credential, method)
    if refusal is None:
        # The route's own answer (a 409 for an image that exists...), never the gate's.
        assert response.status < 500 and response.status not in (401, 403, 405), response
        return
    assert v1_error(response, *refusal), response
    if refusal[0] == 401:
        assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert snapshot(registry.storage) == before


@pytest.mark.parametrize("credential", sorted(CREDENTIALS))
@pytest.mark.parametrize(("method", "rule", "path", "body"), V2_ROUTES,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_v2_passwords_on_every_route(tmp_path, credential, method, rule, path, body):
    registry = MemoryRegistry(tmp_path, with_passwords(tmp_path))
    try:
        before = sorted(os.walk(registry.storage))
        response = registry.request(method, path, body, CREDENTIALS[credential])
        access = METHOD_ACCESS.get(method, "write")
        refusal = expected_v1(credential, "GET" if access == "read" else method)
        if rule.endswith("<upload_id>") and credential == "reader":
            refusal = (403, "User reader may only read")
        if refusal is None:
            assert response.status not in (401, 403), response
            return
        status, message = refusal
        code = "UNAUTHORIZED" if status == 401 else "DENIED"
        assert v2_error(response, status, code, message), response
        if status == 401:
            assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert sorted(os.walk(registry.storage)) == before
    finally:
        registry.close()


def test_v2_base_asks_for_credentials_and_ping_stays_open(tmp_path):
    """docker learns the challenge from C{/v2/}; C{_ping} and C{/} answer anyone."""
    registry = MemoryRegistry(tmp_path, with_passwords(tmp_path))
    try:
        response = registry.request("GET", "/v2/")
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert registry.request("GET", "/v2/", headers=CREDENTIALS["reader"]).json() == {}
        assert registry.request("GET", "/v1/_ping").status == 200
        assert registry.request("GET", "/").status == 200
    finally:
        registry.close()


def test_passwords_with_readonly_refuse_a_writer_with_405(tmp_path):
    """Who you are comes first (401, 403), then whether anyone may write (405)."""
    registry = MemoryRegistry(tmp_path, with_passwords(tmp_path, READONLY))
    try:
        path = "/v2/foo/bar/manifests/latest"
        assert registry.request("PUT", path, b"{}").status == 401
        assert registry.request("PUT", path, b"{}", CREDENTIALS["reader"]).status == 403
        assert registry.request("PUT", path, b"{}", CREDENTIALS["writer"]).status == 405
        assert registry.request("GET", path, headers=CREDENTIALS["reader"]).status == 404
    finally:
        registry.close()


def test_behind_an_index_v1_keeps_its_tokens_and_v2_takes_passwords(tmp_path, index):
    config = with_passwords(tmp_path, "dev:\n  standalone: false\n"
                                      "  index_endpoint: http://index.invalid\n")
    registry = seeded(tmp_path, config)
    try:
        path = "/v1/repositories/foo/bar/tags"
        response = registry.request("GET", path, headers=CREDENTIALS["writer"])
        assert (response.status, response.headers["WWW-Authenticate"]) == (401, "Token")
        read = {"Authorization": 'Token signature=good,repository="foo/bar",access=read'}
        assert registry.request("GET", path, headers=read).status == 200
        assert registry.request("GET", "/v2/_catalog", headers=CREDENTIALS["reader"]).json() \
            == {"repositories": []}
        assert registry.request("GET", "/v2/_catalog").status == 401
    finally:
        registry.close()


def test_a_streamed_layer_without_a_password_is_refused_before_it_is_read(tmp_path):
    registry = seeded(tmp_path, with_passwords(tmp_path))
    before = snapshot(registry.storage)
    parts = [b"x" * 65536] * 64
    response = registry.request("PUT", f"/v1/images/{IMAGE}/layer", parts, chunked=True)
    assert v1_error(response, 401, "Requires authorization")
    assert response.headers["Connection"] == "close"
    response = registry.request("POST", "/v2/foo/bar/blobs/uploads/?digest=sha256:" + "0" * 64,
                                parts, CREDENTIALS["reader"], chunked=True)
    assert v2_error(response, 403, "DENIED", "User reader may only read")
    assert snapshot(registry.storage) == before


def test_no_password_reaches_the_log(tmp_path):
    registry = seeded(tmp_path, with_passwords(tmp_path))
    registry.request("GET", "/v1/repositories/foo/bar/tags", headers=CREDENTIALS["writer"])
    registry.request("GET", "/v1/repositories/foo/bar/tags",
                     headers=basic("writer", "guessed-it"))
    logged = repr(registry.log_events)
    assert "password refused for user 'writer'" in "\n".join(
        str(e.get("log_format", "")).format(**e) for e in registry.log_events
        if "log_format" in e and "user" in e)
    for secret in ("w-secret", "guessed-it", CREDENTIALS["writer"]["Authorization"][6:]):
        assert secret not in logged


def test_open_v1_routes_that_take_a_body_store_nothing(tmp_path):
    """
    The V1 routes without an access policy pass neither gate: every one of them that takes
    a body is listed here, as storing nothing (so read-only and passwords have nothing to
    guard there).
    """
    registry = MemoryRegistry(tmp_path)
    try:
        table = build_routes(registry.registry)
        open_writes = set()
        for rule in table.app.url_map.iter_rules():
            policy = table.policy_of(rule.endpoint)
            if policy.access is None and rule.methods - {"GET", "HEAD", "OPTIONS"}:
                open_writes.add(rule.endpoint)
        assert open_writes == {
            "PUT /v1/repositories/<repo:repo>/auth", "POST /v1/users/", "POST /v1/users",
            "PUT /v1/users/<username>/", "PUT /v1/users/<username>"}
        before = sorted(os.walk(registry.storage))
        for endpoint in sorted(open_writes):
            method, path = endpoint.split(" ")
            registry.request(method, path.replace("<repo:repo>", "foo/bar")
                             .replace("<username>", "alice"), b"{}")
        assert sorted(os.walk(registry.storage)) == before
    finally:
        registry.close()


def test_search_asks_for_a_password_too(tmp_path):
    """Search lists repositories: open without passwords (the contract's R26), not with them."""
    config = with_passwords(tmp_path) + (
        f"  search_backend: sqlite\n  sqlalchemy_index_database: sqlite:///{tmp_path}/s.db\n")
    registry = MemoryRegistry(tmp_path, config)
    try:
        response = registry.request("GET", "/v1/search?q=foo")
        assert v1_error(response, 401, "Requires authorization")
        assert response.headers["WWW-Authenticate"] == CHALLENGE
        response = registry.request("GET", "/v1/search?q=foo", headers=basic("reader", "no"))
        assert v1_error(response, 401, "Invalid username or password")
    finally:
        registry.close()
