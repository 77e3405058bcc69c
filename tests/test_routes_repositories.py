"""
The repository routes R11–R19 through the real Site in memory (docs/api.md),
repository name validation (§3.2) and quoting on disk (§7.2).
"""

from __future__ import annotations

import json

import pytest

from tests.routes import (
    DEFAULT_METADATA,
    assert_error,
    assert_json,
    module_registry,
    new_id,
    new_name,
    push,
    put_tag,
    write_files,
)

ID = "6585dd1f4dca8c4be4bce1e0ff3c9ae9bb6e9b3b1e09ab3ed0b8a7b8b5f34131"
UA = "docker/1.3.2 go/go1.3.3 git-commit/990021a kernel/3.16.0 os/linux arch/amd64"
TAG_NAME_ERROR = b'{"error": "Invalid tag name (must match ^[\\\\w][\\\\w.-]{0,127}$)"}'


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    yield from module_registry(tmp_path_factory)


@pytest.fixture(scope="module")
def image(registry):
    """A complete image that tags can point at."""
    image_id = new_id()
    push(registry, image_id, b"")
    return image_id


def repo_dir(registry, namespace: str, directory: str):
    return registry.storage / "repositories" / namespace / directory


def request(registry, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None):
    return registry.request(method, f"/v1/repositories/{path}", body, headers)


# R11 ------------------------------------------------------------------------------------------

def test_list_tags_files_written_by_091(registry):
    """§4.12's example: names decoded, metadata never reported as tags."""
    write_files(registry.storage, {
        "repositories/foo/odd/tag_%24weird": ID,
        "repositories/foo/odd/tag%24weird_json": '{"last_update": 1416566400}',
        "repositories/foo/odd/tag__under": ID,
        "repositories/foo/odd/tag_under_json": '{"last_update": 1416566400}',
        "repositories/foo/odd/tag_1.0.0-rc1": ID,
        "repositories/foo/odd/tag1.0.0-rc1_json": ' \n {"last_update": 1416566400}',
        "repositories/foo/odd/_index_images": "[]",
        "repositories/foo/odd/json": '{"last_update": 1416566400}',
    })
    r = request(registry, "GET", "foo/odd/tags")
    assert_json(r, 200, f'{{"$weird": "{ID}", "1.0.0-rc1": "{ID}", "_under": "{ID}"}}'.encode())
    r = request(registry, "HEAD", "foo/odd/tags")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "237")
    assert_json(request(registry, "GET", "foo/odd/tags/%24weird"), 200, f'"{ID}"'.encode())
    assert_json(request(registry, "GET", "foo/odd/tags/_under"), 200, f'"{ID}"'.encode())


def test_list_tags_values_and_names(registry):
    """Values are the raw text (not trimmed), names go through unquote_plus."""
    name = new_name()
    write_files(registry.storage, {
        f"repositories/foo/{name}/tag_a+b": "x\n",
        f"repositories/foo/{name}/tag_%C3%A9": "y",
        f"repositories/foo/{name}/tag_": "z",
    })
    assert request(registry, "GET", f"foo/{name}/tags").json() == {"a b": "x\n", "\u00e9": "y",
                                                                   "": "z"}
    assert request(registry, "GET", f"foo/{name}/tags").body == (
        b'{"": "z", "a b": "x\\n", "\\u00e9": "y"}')


def test_list_tags_empty_and_missing(registry):
    name = new_name()
    assert_json(request(registry, "PUT", f"foo/{name}/images", b"[]"), 204, b"")
    assert_json(request(registry, "GET", f"foo/{name}/tags"), 200, b"{}")
    assert_error(request(registry, "GET", f"foo/{new_name()}/tags"), 404, "Repository not found")
    empty = new_name()
    (registry.storage / "repositories" / "foo" / empty).mkdir(parents=True)
    assert_error(request(registry, "GET", f"foo/{empty}/tags"), 404, "Repository not found")
    assert_error(request(registry, "GET", "foo/../tags"), 400, "Invalid repository name")


# R12 ------------------------------------------------------------------------------------------

def test_get_tag(registry, image):
    name = new_name()
    assert_json(put_tag(registry, f"foo/{name}", "v1", image), 200, b"true")
    assert_json(request(registry, "GET", f"foo/{name}/tags/v1"), 200, f'"{image}"'.encode())
    r = request(registry, "HEAD", f"foo/{name}/tags/v1")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", str(len(image) + 2))
    assert_error(request(registry, "GET", f"foo/{name}/tags/v2"), 404, "Tag not found")
    assert_error(request(registry, "GET", f"foo/{name}/tags/{'x' * 300}"), 404, "Tag not found")
    assert_error(request(registry, "GET", f"foo/{new_name()}/tags/v1"), 404, "Tag not found")
    assert_error(request(registry, "GET", "foo/./tags/v2"), 400, "Invalid repository name")


def test_tag_in_progress_image(registry):
    """A tag may point at an image that is still being uploaded."""
    image_id = new_id()
    push(registry, image_id, b"x", complete=False)
    name = new_name()
    assert_json(put_tag(registry, f"foo/{name}", "wip", image_id), 200, b"true")
    assert_json(request(registry, "GET", f"foo/{name}/tags/wip"), 200, f'"{image_id}"'.encode())


# R13 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["$x", ".x", "-x", "a$", "x" * 129, "a%0A", "a%20b", "%C3%A9",
                                 "%00", "..", "a~b", "a%5Cb"])
def test_put_tag_invalid_name(registry, image, tag):
    r = request(registry, "PUT", f"foo/{new_name()}/tags/{tag}", json.dumps(image).encode())
    assert (r.status, r.body) == (400, TAG_NAME_ERROR)
    assert_json(r, 400, TAG_NAME_ERROR)


@pytest.mark.parametrize("tag", ["_valid", "x" * 128, "1.0.0-rc1", "A-Z_.", "0"])
def test_put_tag_valid_name(registry, image, tag):
    name = new_name()
    assert_json(put_tag(registry, f"foo/{name}", tag, image), 200, b"true")
    assert (repo_dir(registry, "foo", name) / f"tag_{tag}").read_bytes() == image.encode()
    assert request(registry, "GET", f"foo/{name}/tags").json() == {tag: image}


@pytest.mark.parametrize("body", [b"", b"not json", b'""', b"123", b"null", b"true", b"[]",
                                  b"{}", b'["x"]', b'"\xff"'])
def test_put_tag_invalid_data(registry, body):
    assert_error(request(registry, "PUT", f"foo/{new_name()}/tags/v1", body), 400, "Invalid data")


def test_put_tag_check_order(registry):
    # name before tag name
    r = request(registry, "PUT", "foo//bar/tags/$x", b"")
    assert_error(r, 400, "Invalid repository name")
    # tag name before body
    r = request(registry, "PUT", f"foo/{new_name()}/tags/$x", b"")
    assert (r.status, r.body) == (400, TAG_NAME_ERROR)
    # body before image
    assert_error(request(registry, "PUT", f"foo/{new_name()}/tags/v1", b'""'), 400, "Invalid data")
    # unknown image, path tricks included: nothing written
    name = new_name()
    for value in (new_id(), "../../etc", "..", ".", "../images", "x/../..", "a" * 300, "\u0000"):
        assert_error(put_tag(registry, f"foo/{name}", "v1", value), 404, "Image not found")
    assert not repo_dir(registry, "foo", name).exists()


def test_put_tag_writes(registry, image):
    """The tag file, its metadata file, and for latest the repository json (§7.1)."""
    name = new_name()
    registry.clock.advance(1.75)
    r = request(registry, "PUT", f"foo/{name}/tags/latest", json.dumps(image).encode(),
                {"User-Agent": UA, "Content-Type": "application/x-www-form-urlencoded"})
    assert_json(r, 200, b"true")
    directory = repo_dir(registry, "foo", name)
    assert sorted(p.name for p in directory.iterdir()) == ["json", "tag_latest", "taglatest_json"]
    assert (directory / "tag_latest").read_bytes() == image.encode()
    metadata = json.loads((directory / "taglatest_json").read_bytes())
    # The clock's time in whole seconds (not the machine's, not local time).
    assert metadata["last_update"] == int(registry.clock.seconds())
    assert metadata == {"arch": "amd64", "docker_go_version": "go1.3.3",
                        "docker_version": "1.3.2", "kernel": "3.16.0",
                        "last_update": metadata["last_update"], "os": "linux"}
    assert json.loads((directory / "json").read_bytes()) == metadata
    expected = (
        '{"arch": "amd64", "docker_go_version": "go1.3.3", "docker_version": "1.3.2", '
        f'"kernel": "3.16.0", "last_update": {metadata["last_update"]}, "os": "linux"}}'
    ).encode()
    assert_json(request(registry, "GET", f"foo/{name}/tags/latest/json"), 200, expected)
    assert_json(request(registry, "GET", f"foo/{name}/json"), 200, expected)
    # Another tag leaves the repository json alone.
    assert_json(put_tag(registry, f"foo/{name}", "v1", image), 200, b"true")
    assert sorted(p.name for p in directory.iterdir()) == [
        "json", "tag_latest", "tag_v1", "taglatest_json", "tagv1_json"]
    assert json.loads((directory / "json").read_bytes()) == metadata


def test_tag_metadata_user_agent(registry, image):
    """Pairs match by exact name, the last wins, arch/kernel/os values are lower-cased (0.9.1)."""
    name = new_name()
    ua = ("docker/1.3.2-DEV go/GO1.3 kernel/3.16.0-Generic os/Linux arch/AMD64 Docker/9.9 "
          "OS/Windows docker/1.4 Kernel/x git-commit/abc")
    assert_json(put_tag(registry, f"foo/{name}", "v1", image, {"User-Agent": ua}), 200, b"true")
    metadata = request(registry, "GET", f"foo/{name}/tags/v1/json").json()
    assert metadata == {"arch": "amd64", "docker_go_version": "GO1.3", "docker_version": "1.4",
                        "kernel": "3.16.0-generic", "os": "linux",
                        "last_update": metadata["last_update"]}
    # Without a User-Agent: only the time.
    assert_json(put_tag(registry, f"foo/{name}", "v2", image), 200, b"true")
    r = request(registry, "GET", f"foo/{name}/tags/v2/json")
    assert r.body == b'{"last_update": %d}' % r.json()["last_update"]


# R14 ------------------------------------------------------------------------------------------

def test_delete_tag(registry, image):
    name = new_name()
    for tag in ("latest", "v1"):
        assert_json(put_tag(registry, f"foo/{name}", tag, image), 200, b"true")
    directory = repo_dir(registry, "foo", name)
    assert_json(request(registry, "DELETE", f"foo/{name}/tags/v1"), 200, b"true")
    assert sorted(p.name for p in directory.iterdir()) == ["json", "tag_latest", "taglatest_json"]
    assert_json(request(registry, "DELETE", f"foo/{name}/tags/latest"), 200, b"true")
    assert list(directory.iterdir()) == []
    assert_error(request(registry, "DELETE", f"foo/{name}/tags/v1"), 404, "Tag not found: v1")
    assert_error(request(registry, "DELETE", f"foo/{name}/tags/a%20b"), 404, "Tag not found: a b")
    assert_error(request(registry, "DELETE", f"foo/{name}/tags/%24x"), 404, "Tag not found: $x")
    assert_error(request(registry, "DELETE", f"foo/{name}/tags/{'x' * 300}"), 404,
                 f"Tag not found: {'x' * 300}")
    assert_error(request(registry, "DELETE", "foo/../tags/v1"), 400, "Invalid repository name")


def test_delete_tag_without_metadata(registry):
    """A missing metadata file does not stop the deletion (differs from 0.9.1)."""
    name = new_name()
    write_files(registry.storage, {f"repositories/foo/{name}/tag_%24old": ID,
                                   f"repositories/foo/{name}/tag_other": ID})
    assert_json(request(registry, "DELETE", f"foo/{name}/tags/%24old"), 200, b"true")
    assert [p.name for p in repo_dir(registry, "foo", name).iterdir()] == ["tag_other"]


# R15 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["/", "", "/tags"])
def test_delete_repository(registry, image, suffix):
    name = new_name()
    for tag in ("latest", "v1"):
        assert_json(put_tag(registry, f"foo/{name}", tag, image), 200, b"true")
    assert_json(request(registry, "PUT", f"foo/{name}/properties", b'{"access": "private"}'),
                200, b"true")
    write_files(registry.storage, {
        f"repositories/foo/{name}/tag__x": ID,
        f"repositories/foo/{name}/tag_x_json": "{}",
        f"repositories/foo/{name}/_index_images": "[]",
        f"repositories/foo/{name}/_images_list": "[]",
        f"repositories/foo/{name}/anything": "else",
    })
    assert_json(request(registry, "DELETE", f"foo/{name}{suffix}"), 200, b"true")
    assert not repo_dir(registry, "foo", name).exists()
    assert (registry.storage / "images" / image / "json").exists()
    assert_error(request(registry, "GET", f"foo/{name}/tags"), 404, "Repository not found")
    assert_error(request(registry, "DELETE", f"foo/{name}{suffix}"), 404, "Repository not found")


def test_delete_repository_missing_or_empty(registry):
    name = new_name()
    (registry.storage / "repositories" / "foo" / name).mkdir(parents=True)
    for suffix in ("/", "", "/tags"):
        assert_error(request(registry, "DELETE", f"foo/{name}{suffix}"), 404,
                     "Repository not found")
    assert_error(request(registry, "DELETE", "foo/../"), 400, "Invalid repository name")
    # Only a marker: the repository exists and is deleted.
    write_files(registry.storage, {f"repositories/foo/{name}/_private": ""})
    assert_json(request(registry, "DELETE", f"foo/{name}"), 200, b"true")
    assert not repo_dir(registry, "foo", name).exists()


# R16, R17 -------------------------------------------------------------------------------------

def test_repository_json(registry):
    for path in (f"foo/{new_name()}/json", f"{new_name()}/json", "a/b/c/json"):
        assert_json(request(registry, "GET", path), 200, DEFAULT_METADATA)
    name = new_name()
    write_files(registry.storage, {f"repositories/foo/{name}/json":
                                   '{"os":"linux",\n"arch":"arm", "last_update":1}'})
    assert_json(request(registry, "GET", f"foo/{name}/json"), 200,
                b'{"arch": "arm", "last_update": 1, "os": "linux"}')
    r = request(registry, "HEAD", f"foo/{name}/json")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "48")
    assert_error(request(registry, "GET", "foo/%00/json"), 400, "Invalid repository name")


def test_tag_json(registry):
    name = new_name()
    assert_json(request(registry, "GET", f"foo/{name}/tags/v1/json"), 200, DEFAULT_METADATA)
    assert_json(request(registry, "GET", f"foo/{name}/tags/{'x' * 300}/json"), 200,
                DEFAULT_METADATA)
    write_files(registry.storage, {f"repositories/foo/{name}/tag%24x_json": '{"os":"linux"}'})
    assert_json(request(registry, "GET", f"foo/{name}/tags/%24x/json"), 200, b'{"os": "linux"}')
    assert_error(request(registry, "GET", "foo/../tags/v1/json"), 400, "Invalid repository name")


# R18, R19 -------------------------------------------------------------------------------------

def test_properties(registry):
    name = new_name()
    assert_json(request(registry, "GET", f"foo/{name}/properties"), 200, b'{"access": "public"}')
    assert_json(request(registry, "PUT", f"foo/{name}/properties", b'{"access": "public"}'),
                200, b"true")
    assert not repo_dir(registry, "foo", name).exists()
    r = request(registry, "PUT", f"foo/{name}/properties", b'{"access": "private", "x": 1}',
                {"Content-Type": "application/x-www-form-urlencoded"})
    assert_json(r, 200, b"true")
    assert (repo_dir(registry, "foo", name) / "_private").read_bytes() == b""
    assert_json(request(registry, "GET", f"foo/{name}/properties"), 200, b'{"access": "private"}')
    r = request(registry, "HEAD", f"foo/{name}/properties")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "21")
    assert_json(request(registry, "PUT", f"foo/{name}/properties", b'{"access": "private"}'),
                200, b"true")
    assert_json(request(registry, "PUT", f"foo/{name}/properties", b'{"access": "public"}'),
                200, b"true")
    assert not (repo_dir(registry, "foo", name) / "_private").exists()
    assert_json(request(registry, "GET", f"foo/{name}/properties"), 200, b'{"access": "public"}')


@pytest.mark.parametrize("body", [b"", b"nope", b"{}", b'{"access": "x"}', b'{"access": null}',
                                  b'{"access": "PRIVATE"}', b'"private"', b'["private"]',
                                  b'{"Access": "private"}', b'{"access": "private"'])
def test_properties_invalid(registry, body):
    name = new_name()
    assert_error(request(registry, "PUT", f"foo/{name}/properties", body), 400, "Invalid data")
    assert not repo_dir(registry, "foo", name).exists()


def test_properties_check_order(registry):
    assert_error(request(registry, "PUT", "foo/../properties", b"nope"), 400,
                 "Invalid repository name")
    assert_error(request(registry, "GET", "foo/../properties"), 400, "Invalid repository name")


# Names and quoting ----------------------------------------------------------------------------

QUOTING = [
    # URL repository, key, namespace dir, repository dir
    ("quoted", "library/quoted", "library", "quoted"),
    ("foo/quoted", "foo/quoted", "foo", "quoted"),
    ("a/b/c", "a/b%2Fc", "a", "b%252Fc"),
    ("foo/ab%25%24_-test", "foo/ab%25%24_-test", "foo", "ab%2525%2524_-test"),
    ("foo/my%20repo", "foo/my+repo", "foo", "my%2Brepo"),
    ("foo/a~b", "foo/a%7Eb", "foo", "a%257Eb"),
    ("Foo/BAR", "Foo/BAR", "Foo", "BAR"),
    ("foo/a+b", "foo/a%2Bb", "foo", "a%252Bb"),
    ("foo/caf%C3%A9", "foo/caf%C3%A9", "foo", "caf%25C3%25A9"),
    ("n%20s/x", "n s/x", "n+s", "x"),
    ("foo/%2E", None, None, None),
]


@pytest.mark.parametrize("url, key, namespace, directory",
                         [q for q in QUOTING if q[1] is not None])
def test_quoting_on_disk(registry, image, url, key, namespace, directory):
    assert_json(put_tag(registry, url, "v1", image), 200, b"true")
    assert (repo_dir(registry, namespace, directory) / "tag_v1").read_bytes() == image.encode()
    assert_json(request(registry, "GET", f"{url}/tags"), 200, f'{{"v1": "{image}"}}'.encode())
    r = request(registry, "PUT", f"{url}/images", b"[]")
    assert r.headers["X-Docker-Token"].endswith(f',repository="{key}",access=write')
    assert_json(request(registry, "DELETE", url), 200, b"true")
    assert not repo_dir(registry, namespace, directory).exists()


def test_unquoted_percent_and_case(registry, image):
    """C{ab%$_-test} sent unencoded is the same repository; case is preserved."""
    name = new_name("Ab")
    assert_json(put_tag(registry, f"foo/{name}%$_-test", "v1", image), 200, b"true")
    assert (repo_dir(registry, "foo", f"{name}%2525%2524_-test") / "tag_v1").exists()
    assert request(registry, "GET", f"foo/{name}%25%24_-test/tags").json() == {"v1": image}
    assert_error(request(registry, "GET", f"foo/{name.lower()}%$_-test/tags"), 404,
                 "Repository not found")
    assert_error(request(registry, "GET", f"FOO/{name}%$_-test/tags"), 404, "Repository not found")


def test_trailing_slashes_removed(registry, image):
    name = new_name()
    assert_json(put_tag(registry, f"foo/{name}", "v1", image), 200, b"true")
    assert request(registry, "GET", f"foo/{name}//tags").json() == {"v1": image}


def test_name_length_limits(registry, image):
    """Components of 255 bytes are fine; 256 bytes, or 256+ bytes on disk, are not."""
    long_ok = "a" * 255
    assert_json(put_tag(registry, f"{long_ok}/{long_ok}", "v1", image), 200, b"true")
    assert (repo_dir(registry, long_ok, long_ok) / "tag_v1").exists()
    for url in (f"foo/{'a' * 256}", f"{'a' * 256}/x", f"foo/{'%C3%A9' * 128}",
                f"foo/{'~' * 60}", f"{'~' * 100}/x", f"foo/ok/{'b' * 256}"):
        assert_error(put_tag(registry, url, "v1", image), 400, "Invalid repository name")


INVALID_NAMES = [
    "foo//bar", "%2Ffoo", "%2F%2Ffoo/bar", ".", "..", "foo/.", "foo/..", "./foo", "../foo",
    "foo/./bar", "foo/../bar", "%2E%2E/x", "foo/%2e%2e", "foo/a%00b", "foo/a%1Fb", "foo/a%7Fb",
    "foo/a%0Ab", "%09/x", "foo/" + "a" * 256, "foo/" + "~" * 60,
]
REPOSITORY_ROUTES = [
    ("GET", "{}/tags/t/json", None),
    ("GET", "{}/tags/t", None),
    ("PUT", "{}/tags/$bad", b""),
    ("DELETE", "{}/tags/t", None),
    ("GET", "{}/tags", None),
    ("DELETE", "{}/tags", None),
    ("GET", "{}/json", None),
    ("PUT", "{}/properties", b"bad"),
    ("GET", "{}/properties", None),
    ("PUT", "{}/images", b"bad"),
    ("GET", "{}/images", None),
    ("DELETE", "{}/images", None),
    ("PUT", "{}/auth", b"bad"),
    ("PUT", "{}/", b"bad"),
    ("PUT", "{}", b"bad"),
    ("DELETE", "{}/", None),
    ("DELETE", "{}", None),
]


@pytest.mark.parametrize("method, template, body", REPOSITORY_ROUTES)
def test_invalid_repository_names(registry, method, template, body):
    """Every route with a repository answers 400 first, whatever else is wrong."""
    for name in INVALID_NAMES:
        path = template.format(name)
        r = request(registry, method, path, body)
        assert_error(r, 400, "Invalid repository name")
        if method == "GET":
            assert_error(request(registry, "HEAD", path), 400, "Invalid repository name", head=True)
