"""Storage keys and name rules of the 0.9.1 layout (V1-API.md §3.2, §7)."""

from __future__ import annotations

import pytest

from twistreg.errors import RegistryError
from twistreg.layout import is_image_id, parse_repository, quote


@pytest.mark.parametrize(
    ("name", "key", "directory"),
    [
        ("ubuntu", "library/ubuntu", "repositories/library/ubuntu"),
        ("foo/bar", "foo/bar", "repositories/foo/bar"),
        ("a/b/c", "a/b%2Fc", "repositories/a/b%252Fc"),
        ("foo/ab%$_-test", "foo/ab%25%24_-test", "repositories/foo/ab%2525%2524_-test"),
        ("foo/my repo", "foo/my+repo", "repositories/foo/my%2Brepo"),
        ("foo/a~b", "foo/a%7Eb", "repositories/foo/a%257Eb"),
        ("Foo/BAR", "Foo/BAR", "repositories/Foo/BAR"),
        ("foo/bar/", "foo/bar", "repositories/foo/bar"),
        ("foo/bär", "foo/b%C3%A4r", "repositories/foo/b%25C3%25A4r"),
    ],
)
def test_repository_keys(name, key, directory):
    repository = parse_repository(name)
    assert (repository.key, repository.directory) == (key, directory)


@pytest.mark.parametrize(
    ("tag", "tag_file", "metadata_file"),
    [
        ("latest", "tag_latest", "taglatest_json"),
        ("1.0.0-rc1", "tag_1.0.0-rc1", "tag1.0.0-rc1_json"),
        ("_under", "tag__under", "tag_under_json"),
        ("$weird", "tag_%24weird", "tag%24weird_json"),
        ("..", "tag_%252E%252E", "tag%252E%252E_json"),
    ],
)
def test_tag_files(tag, tag_file, metadata_file):
    repository = parse_repository("foo/bar")
    assert repository.tag_file(tag) == f"repositories/foo/bar/{tag_file}"
    assert repository.tag_metadata_file(tag) == f"repositories/foo/bar/{metadata_file}"


def test_quote_dots_never_form_path_steps():
    assert quote(".") == "%252E"
    assert quote("..") == "%252E%252E"
    assert quote("a/../b") == "a%2F..%2Fb"


@pytest.mark.parametrize(
    "name",
    ["foo//bar", "/foo", "./bar", "foo/..", "foo/../bar", "..", "foo/b\x00r", "foo/b\x7fr",
     "foo/" + "x" * 256, "x" * 256, "foo/" + "%" * 90],
)
def test_invalid_repository_names(name):
    with pytest.raises(RegistryError) as raised:
        parse_repository(name)
    assert (raised.value.status, raised.value.message) == (400, "Invalid repository name")


def test_accepted_names_0_9_1_accepted():
    for name in ("ab%$_-test", "a/b/c", "UPPER/case", "foo/with space", "foo/" + "x" * 80):
        parse_repository(name)


@pytest.mark.parametrize(
    ("image_id", "valid"),
    [("a" * 16, True), ("0123456789abcdef" * 4, True), ("A" * 16, False), ("a" * 17, False),
     ("a" * 63, False), ("g" * 16, False), ("", False), ("a" * 16 + "\n", False)],
)
def test_image_ids(image_id, valid):
    assert is_image_id(image_id) is valid
