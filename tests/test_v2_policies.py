"""
Declared policies of the V2 routes (twistreg/web/v2/routes.py): every route has one, and
behind an index every route refuses with the spec's 401 before it touches storage.

A route added to the V2 table must join L{ROUTES}: L{test_the_matrix_covers_every_v2_route}
fails until it does.
"""

from __future__ import annotations

import os

import pytest

from tests.memory import MemoryRegistry
from twistreg.registry.auth import Access

NAME = "foo/bar"
DIGEST = "sha256:" + "ab" * 32
UPLOAD = "0f8fad5b-d9cb-469f-a165-70867728950e"

#: (method, rule, a concrete path, body).
ROUTES = [
    ("GET", "/v2/", "/v2/", None),
    ("GET", "/v2/_catalog", "/v2/_catalog", None),
    ("GET", "/v2/<name:name>/blobs/<digest>", f"/v2/{NAME}/blobs/{DIGEST}", None),
    ("DELETE", "/v2/<name:name>/blobs/<digest>", f"/v2/{NAME}/blobs/{DIGEST}", None),
    ("POST", "/v2/<name:name>/blobs/uploads/", f"/v2/{NAME}/blobs/uploads/?digest={DIGEST}",
     b"body"),
    ("GET", "/v2/<name:name>/blobs/uploads/<upload_id>",
     f"/v2/{NAME}/blobs/uploads/{UPLOAD}", None),
    ("PATCH", "/v2/<name:name>/blobs/uploads/<upload_id>",
     f"/v2/{NAME}/blobs/uploads/{UPLOAD}", b"chunk"),
    ("PUT", "/v2/<name:name>/blobs/uploads/<upload_id>",
     f"/v2/{NAME}/blobs/uploads/{UPLOAD}?digest={DIGEST}", b"last"),
    ("DELETE", "/v2/<name:name>/blobs/uploads/<upload_id>",
     f"/v2/{NAME}/blobs/uploads/{UPLOAD}", None),
    ("GET", "/v2/<name:name>/manifests/<reference>", f"/v2/{NAME}/manifests/latest", None),
    ("PUT", "/v2/<name:name>/manifests/<reference>", f"/v2/{NAME}/manifests/latest", b"{}"),
    ("DELETE", "/v2/<name:name>/manifests/<reference>", f"/v2/{NAME}/manifests/latest",
     None),
    ("GET", "/v2/<name:name>/tags/list", f"/v2/{NAME}/tags/list", None),
    ("GET", "/v2/<name:name>/referrers/<digest>", f"/v2/{NAME}/referrers/{DIGEST}", None),
]


def v2_table(tmp_path, config: str = "dev:\n  standalone: true\n"):
    registry = MemoryRegistry(tmp_path, config)
    return registry, registry.site.routes.v2.routes


def test_every_v2_route_declares_a_policy(tmp_path):
    registry, table = v2_table(tmp_path)
    try:
        assert table.undeclared() == []
        for rule in table.app.url_map.iter_rules():
            assert isinstance(table.policy_of(rule.endpoint).access, Access)
    finally:
        registry.close()


def test_the_matrix_covers_every_v2_route(tmp_path):
    registry, table = v2_table(tmp_path)
    try:
        declared = {rule.endpoint for rule in table.app.url_map.iter_rules()}
        assert declared == {f"{method} {rule}" for method, rule, _, _ in ROUTES}
    finally:
        registry.close()


def test_writes_need_write_or_delete_access(tmp_path):
    registry, table = v2_table(tmp_path)
    try:
        for method, rule, _, _ in ROUTES:
            access = table.policy_of(f"{method} {rule}").access
            expected = {"DELETE": Access.DELETE, "GET": Access.READ}.get(method, Access.WRITE)
            if rule.endswith("<upload_id>") and method == "GET":
                expected = Access.WRITE  # an upload's status belongs to its push
            assert access is expected, (method, rule)
    finally:
        registry.close()


@pytest.mark.parametrize("method, rule, path, body", ROUTES)
def test_behind_an_index_every_route_refuses_before_storage(tmp_path, method, rule, path,
                                                           body):
    registry = MemoryRegistry(tmp_path, "dev:\n  standalone: false\n")
    try:
        before = sorted(os.walk(registry.storage))
        answer = registry.request(method, path, body)
        assert answer.status == 401, answer
        assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert sorted(os.walk(registry.storage)) == before
    finally:
        registry.close()
