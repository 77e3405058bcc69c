# -*- test-case-name: tests.test_layout -*-
"""
Storage keys of the docker-registry 0.9.1 layout, and the name rules that guard them.

This is the only module that knows key names, so that a tree written by 0.9.1 is read
unchanged and the reverse.  Every name that reaches a key has been validated or quoted here:
nothing can address a path outside the storage root.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

import attrs

from twistreg.errors import RegistryError

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_IMAGE_ID = re.compile(r"[a-f0-9]{16}|[a-f0-9]{64}")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_MAX_NAME_BYTES = 255

#: The directory holding one directory per image.
IMAGES = "images"

#: The directory holding one directory per namespace, each holding one per repository.
REPOSITORIES = "repositories"


def quote(text: str) -> str:
    """
    Q of the contract: Python 2's C{quote_plus} with no safe characters.

    Python 3's C{quote_plus} keeps C{~}; 0.9.1 wrote C{%7E}, so this is written out.
    C{.} and C{..} become C{%252E}... so that no quoted name is a path step.
    """
    if text in (".", ".."):
        text = text.replace(".", "%2E")
    out = []
    for byte in text.encode("utf-8"):
        if byte in _SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def is_image_id(image_id: str) -> bool:
    """Image ids are 16 or 64 lower-case hex digits."""
    return _IMAGE_ID.fullmatch(image_id) is not None


def require_image_id(image_id: str) -> None:
    """Raise the contract's 404 for a malformed image id."""
    if not is_image_id(image_id):
        raise RegistryError(404, "Invalid image ID")


def image_key(image_id: str, name: str) -> str:
    """C{images/<id>/<name>}; the id must have been validated."""
    return f"{IMAGES}/{image_id}/{name}"


@attrs.frozen
class Repository:
    """A validated repository name: C{namespace} and the (unquoted) C{name} within it."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        """The repository key: what tokens name and search lists."""
        return f"{self.namespace}/{quote(self.name)}"

    @property
    def directory(self) -> str:
        """The repository's storage directory (the name part is quoted twice)."""
        return f"{REPOSITORIES}/{quote(self.namespace)}/{quote(quote(self.name))}"

    def file(self, name: str) -> str:
        """A file of the repository directory."""
        return f"{self.directory}/{name}"

    def tag_file(self, tag: str) -> str:
        """C{tag_<Q(tag)>}: the image id the tag points at."""
        return self.file(f"tag_{quote(tag)}")

    def tag_metadata_file(self, tag: str) -> str:
        """C{tag<Q(tag)>_json}: 0.9.1's spelling, without a C{_} after C{tag}."""
        return self.file(f"tag{quote(tag)}_json")


def key_of_directory(namespace_directory: str, name_directory: str) -> str:
    """
    The repository key of C{repositories/<namespace_directory>/<name_directory>} as listed
    on disk: one level of quoting comes off each part (C{foo}, C{ab%2525%2524_-test} →
    C{foo/ab%25%24_-test}), the inverse of L{Repository.directory}.
    """
    return f"{unquote_plus(namespace_directory)}/{unquote_plus(name_directory)}"


def parse_repository(text: str) -> Repository:
    """
    Split and validate a repository name from the URL.

    @raise RegistryError: 400 C{Invalid repository name} for an empty, C{.}, C{..} or
        over-long component, or a control character anywhere.
    """
    text = text.rstrip("/")
    namespace, sep, name = text.partition("/")
    if not sep:
        namespace, name = "library", namespace
    components = [namespace, *name.split("/")]
    invalid = (
        _CONTROL.search(text) is not None
        or any(c in ("", ".", "..") for c in components)
        or any(len(c.encode("utf-8")) > _MAX_NAME_BYTES for c in components)
    )
    repository = Repository(namespace, name)
    if not invalid:
        on_disk = repository.directory.split("/")[1:]
        invalid = any(len(part) > _MAX_NAME_BYTES for part in on_disk)
    if invalid:
        raise RegistryError(400, "Invalid repository name")
    return repository

