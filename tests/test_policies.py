"""
Declared policies (twistreg/web/v1/routes.py): every route of the table has one, and every
route with an access policy is sent every kind of credential in every authentication mode
(docs/api.md): a refusal is the contract's 401 and leaves storage as it was.

A route added to the table must join L{ROUTES}: L{test_the_matrix_covers_every_protected_route}
fails until it does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.memory import MemoryReactor, MemoryRegistry
from tests.routes import image_json, make_tar
from twistreg.checksums import payload_checksum
from twistreg.config import load_settings
from twistreg.registry.auth import Access, IndexClient
from twistreg.service import build_registry
from twistreg.web.v1 import build_routes
from twistreg.web.v1.routes import Policy
from twistreg.web.v1.routes import RouteCall as Call

IMAGE = "a1" * 32
FRESH = "b2" * 32
REPOSITORY = "foo/bar"
VALID_SIGNATURE = "good"

#: (method, rule, a concrete path, body): every route whose policy names an access.
ROUTES = [
    ("GET", "/v1/images/<image_id>/layer", f"/v1/images/{IMAGE}/layer", None),
    ("PUT", "/v1/images/<image_id>/layer", f"/v1/images/{IMAGE}/layer", b"new layer"),
    ("PUT", "/v1/images/<image_id>/checksum", f"/v1/images/{IMAGE}/checksum", None),
    ("GET", "/v1/images/<image_id>/json", f"/v1/images/{IMAGE}/json", None),
    ("PUT", "/v1/images/<image_id>/json", f"/v1/images/{FRESH}/json", image_json(FRESH)),
    ("GET", "/v1/images/<image_id>/ancestry", f"/v1/images/{IMAGE}/ancestry", None),
    ("GET", "/v1/images/<image_id>/files", f"/v1/images/{IMAGE}/files", None),
    ("GET", "/v1/images/<image_id>/diff", f"/v1/images/{IMAGE}/diff", None),
    ("GET", "/v1/repositories/<repo:repo>/tags/<tag>/json",
     f"/v1/repositories/{REPOSITORY}/tags/latest/json", None),
    ("GET", "/v1/repositories/<repo:repo>/tags/<tag>",
     f"/v1/repositories/{REPOSITORY}/tags/latest", None),
    ("PUT", "/v1/repositories/<repo:repo>/tags/<tag>",
     f"/v1/repositories/{REPOSITORY}/tags/v2", json.dumps(IMAGE).encode()),
    ("DELETE", "/v1/repositories/<repo:repo>/tags/<tag>",
     f"/v1/repositories/{REPOSITORY}/tags/latest", None),
    ("GET", "/v1/repositories/<repo:repo>/tags", f"/v1/repositories/{REPOSITORY}/tags", None),
    ("DELETE", "/v1/repositories/<repo:repo>/tags",
     f"/v1/repositories/{REPOSITORY}/tags", None),
    ("DELETE", "/v1/repositories/<repo:repo>", f"/v1/repositories/{REPOSITORY}", None),
    ("GET", "/v1/repositories/<repo:repo>/json", f"/v1/repositories/{REPOSITORY}/json", None),
    ("PUT", "/v1/repositories/<repo:repo>/properties",
     f"/v1/repositories/{REPOSITORY}/properties", b'{"access": "public"}'),
    ("GET", "/v1/repositories/<repo:repo>/properties",
     f"/v1/repositories/{REPOSITORY}/properties", None),
    # The index routes (standalone only: no token is ever checked there).
    ("PUT", "/v1/repositories/<repo:repo>/images",
     f"/v1/repositories/{REPOSITORY}/images", b"[]"),
    ("GET", "/v1/repositories/<repo:repo>/images",
     f"/v1/repositories/{REPOSITORY}/images", None),
    ("DELETE", "/v1/repositories/<repo:repo>/images",
     f"/v1/repositories/{REPOSITORY}/images", None),
    ("PUT", "/v1/repositories/<repo:repo>", f"/v1/repositories/{REPOSITORY}", b"[]"),
]
INDEX_ROUTES = {(m, "/v1/repositories/<repo:repo>/images") for m in ("GET", "PUT", "DELETE")} | {
    ("PUT", "/v1/repositories/<repo:repo>")}
METHOD_ACCESS = {"GET": "read", "PUT": "write", "DELETE": "delete"}

STANDALONE = "dev:\n  standalone: true\n"
TOKEN_MODE = "dev:\n  standalone: false\n  index_endpoint: http://index.invalid\n"
OPEN_MODE = "dev:\n  standalone: false\n  disable_token_auth: true\n"


def token(access: str, repository: str = REPOSITORY,
          signature: str = VALID_SIGNATURE) -> dict[str, str]:
    return {"Authorization": f'Token signature={signature},repository="{repository}",'
                             f"access={access}"}


def configs() -> dict[str, str]:
    return {"standalone": STANDALONE, "token": TOKEN_MODE, "open": OPEN_MODE,
            "search": STANDALONE + "  search_backend: sqlite\n",
            "mirror": STANDALONE + "  mirroring:\n    source: http://upstream.invalid\n"}


def route_table(tmp_path: Path, config: str):
    path = tmp_path / "config.yml"
    path.write_text(config)
    settings = load_settings(str(path), overrides={"storage_path": str(tmp_path)},
                             environ={}, system_config_path=None)
    return build_routes(build_registry(settings, MemoryReactor()))


# -- every route declares a policy -------------------------------------------------------------

@pytest.mark.parametrize("mode", sorted(configs()))
def test_every_route_declares_a_policy(tmp_path, mode):
    table = route_table(tmp_path, configs()[mode])
    assert table.undeclared() == []
    rules = {rule.rule for rule in table.app.url_map.iter_rules()}
    assert ("/v1/search" in rules) == (mode == "search")
    assert ("/v1/users" in rules) == (mode not in ("token", "open"))


def test_a_route_added_around_the_table_is_caught(tmp_path):
    table = route_table(tmp_path, STANDALONE)
    table.app.route("/v1/sneaky", methods=["PUT"])(lambda request: b"")
    assert table.undeclared() == ["/v1/sneaky"]


def test_the_matrix_covers_every_protected_route(tmp_path):
    """Every route with an access policy, in any mode, is in L{ROUTES} with that access."""
    declared = set()
    for config in configs().values():
        table = route_table(tmp_path, config)
        for rule in table.app.url_map.iter_rules():
            policy = table.policy_of(rule.endpoint)
            if policy.access is not None:
                (method,) = rule.methods - {"HEAD", "OPTIONS"}
                declared.add((method, rule.rule, policy.access.value))
    listed = {(method, rule, METHOD_ACCESS[method]) for method, rule, _, _ in ROUTES}
    assert declared == listed


def test_a_policy_must_name_its_access(tmp_path):
    """A route cannot leave its access out (None must be said: an open route)."""
    table = route_table(tmp_path, STANDALONE)
    with pytest.raises(TypeError):
        Policy()  # type: ignore[call-arg]

    @table.route("/v1/open", "GET", Policy(None))
    async def opened(call: Call) -> bytes:
        return b"{}"

    assert table.policy_of("GET /v1/open").access is None
    # A route with checks to run must wait for them: a plain function cannot be one.
    with pytest.raises(TypeError):
        table.route("/v1/checked", "GET", Policy(Access.READ))(lambda call: b"{}")


# -- every route × every credential × every mode -------------------------------------------------

class FakeIndex:
    """The index's two answers (§5.2 step 6, §5.4), as the tests want them."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.granted = False

    async def repository_images(self, client, repository_key: str, authorization: str):
        self.calls.append(("images", repository_key))
        if f"signature={VALID_SIGNATURE}," not in authorization:
            return None
        return [IMAGE, FRESH]

    async def layer_access(self, client, repository_key: str, image_id: str,
                           authorization: str) -> bool:
        self.calls.append(("access", repository_key, image_id))
        return self.granted


@pytest.fixture
def index(monkeypatch) -> FakeIndex:
    return fake_index(monkeypatch)


def fake_index(monkeypatch) -> FakeIndex:
    """The index client's two calls answered by a L{FakeIndex}."""
    fake = FakeIndex()
    monkeypatch.setattr(IndexClient, "repository_images",
                        lambda client, *a: fake.repository_images(client, *a))
    monkeypatch.setattr(IndexClient, "layer_access",
                        lambda client, *a: fake.layer_access(client, *a))
    return fake


def seeded(tmp_path: Path, config: str, private: bool = False) -> MemoryRegistry:
    """A registry holding one complete image (a tar layer) tagged latest in foo/bar."""
    registry = MemoryRegistry(tmp_path, config)
    storage = registry.storage
    image = storage / "images" / IMAGE
    image.mkdir(parents=True)
    body = image_json(IMAGE)
    layer = make_tar(("etc/hello.txt", b"hello"))
    (image / "json").write_bytes(body)
    (image / "layer").write_bytes(layer)
    (image / "ancestry").write_text(json.dumps([IMAGE]))
    (image / "_checksum").write_text(json.dumps([payload_checksum(body, layer)]))
    repository = storage / "repositories" / "foo" / "bar"
    repository.mkdir(parents=True)
    (repository / "tag_latest").write_text(IMAGE)
    (repository / "_index_images").write_text(json.dumps([{"id": IMAGE}]))
    if private:
        (repository / "_private").write_bytes(b"")
    return registry


def snapshot(storage: Path) -> dict[str, bytes]:
    return {str(p.relative_to(storage)): p.read_bytes()
            for p in sorted(storage.rglob("*")) if p.is_file()}


def refused(response) -> bool:
    return (response.status, response.json()) == (401, {"error": "Requires authorization"}) \
        and response.headers["WWW-Authenticate"] == "Token"


#: Credentials a token-mode registry must refuse on every protected route.
REFUSED_EVERYWHERE = {
    "no header": {},
    "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    "no pairs": {"Authorization": "Token nothing"},
    "index says no": token("write", signature="forged"),
    "other repository": token("write", "foo/other"),
    "bad repository": token("write", "foobar"),
}


@pytest.mark.parametrize("credential", sorted(REFUSED_EVERYWHERE))
@pytest.mark.parametrize(("method", "rule", "path", "body"),
                         [r for r in ROUTES if r[:2] not in INDEX_ROUTES],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_token_mode_refuses_and_writes_nothing(tmp_path, index, credential, method, rule, path,
                                               body):
    registry = seeded(tmp_path, TOKEN_MODE)
    headers = REFUSED_EVERYWHERE[credential]
    if credential in ("other repository", "index says no") and rule.startswith("/v1/images"):
        # Image routes have no repository in the path: the index decides for the token's.
        headers = token(METHOD_ACCESS[method], "foo/other", signature="forged")
    before = snapshot(registry.storage)
    response = registry.request(method, path, body, headers)
    assert refused(response), response
    assert snapshot(registry.storage) == before


@pytest.mark.parametrize(("method", "rule", "path", "body"),
                         [r for r in ROUTES if r[:2] not in INDEX_ROUTES],
                         ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("access", ["read", "write", "delete"])
def test_token_mode_grants_exactly_the_tokens_access(tmp_path, index, access, method, rule,
                                                     path, body):
    registry = seeded(tmp_path, TOKEN_MODE)
    before = snapshot(registry.storage)
    response = registry.request(method, path, body, token(access))
    if access == METHOD_ACCESS[method]:
        assert response.status < 500 and response.status != 401, response
    else:
        assert refused(response), response
        changed = {k for k in snapshot(registry.storage).keys() ^ before.keys()}
        # A refused request writes nothing (the index's image list is only written once a
        # token validated, §5.2 step 6).
        assert changed <= {"repositories/foo/bar/_images_list"}
        assert all(snapshot(registry.storage)[k] == v for k, v in before.items())


@pytest.mark.parametrize("config", [STANDALONE, OPEN_MODE], ids=["standalone", "open"])
@pytest.mark.parametrize(("method", "rule", "path", "body"), ROUTES,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_open_modes_need_no_token(tmp_path, index, config, method, rule, path, body):
    registry = seeded(tmp_path, config)
    response = registry.request(method, path, body, REFUSED_EVERYWHERE["basic"])
    if (method, rule) in INDEX_ROUTES and config == OPEN_MODE:
        # Not mounted: the path falls through to the repository root route (§4.0).
        assert response.status in (404, 405), response
    else:
        assert response.status < 500 and response.status != 401, response
    assert index.calls == []


@pytest.mark.parametrize("path", [f"/v1/images/{IMAGE}/{name}"
                                  for name in ("layer", "json", "files", "diff")])
def test_private_repository_images_need_the_index_grant(tmp_path, index, path):
    """§5.4: with a read token of a private repository, the index decides (404 when not)."""
    registry = seeded(tmp_path, TOKEN_MODE, private=True)
    response = registry.request("GET", path, headers=token("read"))
    assert (response.status, response.json()) == (404, {"error": "Image not found"})
    index.granted = True
    assert registry.request("GET", path, headers=token("read")).status == 200
    assert ("access", REPOSITORY, IMAGE) in index.calls


def test_private_check_in_open_mode_too(tmp_path, index):
    """disable_token_auth opens the routes but keeps the private check (§5.1)."""
    registry = seeded(tmp_path, OPEN_MODE, private=True)
    path = f"/v1/images/{IMAGE}/json"
    assert registry.request("GET", path).status == 200  # no header: no check
    response = registry.request("GET", path, headers=token("read"))
    assert response.status == 404


def test_a_streamed_layer_is_refused_before_its_body_is_stored(tmp_path, index):
    """The hole: an unauthorized layer PUT is answered at once and stores nothing."""
    registry = seeded(tmp_path, TOKEN_MODE)
    before = snapshot(registry.storage)
    parts = [b"x" * 65536] * 64
    response = registry.request("PUT", f"/v1/images/{IMAGE}/layer", parts, chunked=True)
    assert refused(response)
    assert response.headers["Connection"] == "close"
    assert snapshot(registry.storage) == before
    assert not list(registry.storage.rglob(".tmp-*"))


@pytest.mark.parametrize(("method", "rule", "path", "body"),
                         [r for r in ROUTES if r[0] == "GET"],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_if_modified_since_is_honoured_where_declared(tmp_path, method, rule, path, body):
    """A conditional route answers 304 for what exists; any other route ignores the header."""
    registry = seeded(tmp_path, STANDALONE)
    (tmp_path / "table").mkdir()
    table = route_table(tmp_path / "table", STANDALONE)
    conditional = table.policy_of(f"{method} {rule}").conditional
    response = registry.request(method, path, headers={"If-Modified-Since": "whenever"})
    assert response.status == (304 if conditional else 200), response
    # The contract's conditional routes: R3, R6, R7, R9, R10, the image GETs.
    assert conditional == rule.startswith("/v1/images/")
