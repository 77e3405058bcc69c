# -*- test-case-name: tests.test_oci_names -*-
"""
The names in V2 paths: repository names, tags, digests, and a manifest route's reference,
checked against the OCI Distribution Spec's grammar before anything touches storage.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import attrs

from twistreg.oci.errors import DigestInvalid, ManifestUnknown, NameInvalid, quoted

#: The spec's grammar for C{<name>}: components of lowercase letters and digits, inside which
#: C{.}, C{_}, C{__} or a run of C{-} separate letters and digits, joined by C{/}.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")

#: The Go registry's limit (distribution/reference); the spec only advises clients' 255 for
#: host and name together.
NAME_LIMIT = 255

_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

#: The image spec's digest grammar: an algorithm (components joined by C{+._-}), C{:}, and an
#: encoded part; what fits it but is not a supported algorithm gets its own message.
_DIGEST = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")

#: The algorithms a registry accepts and the lowercase hex length of each.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def parse_name(text: str) -> str:
    """
    Check a repository name from a V2 path.

    @return: C{text}, unchanged.
    @raise NameInvalid: outside the spec's grammar or longer than L{NAME_LIMIT} characters.
    """
    # The length first: it also bounds the work of the expression.
    if len(text) > NAME_LIMIT:
        raise NameInvalid(f"repository name longer than {NAME_LIMIT} characters")
    if _NAME.fullmatch(text) is None:
        raise NameInvalid(
            f"invalid repository name {quoted(text)}: path components of lowercase letters and"
            " digits, separated inside by '.', '_', '__' or '-', joined by '/'"
        )
    return text


def is_name(text: str) -> bool:
    """Whether C{text} is a repository name L{parse_name} takes."""
    return len(text) <= NAME_LIMIT and _NAME.fullmatch(text) is not None


def is_tag(text: str) -> bool:
    """Whether C{text} is a tag: a letter, digit or C{_}, then up to 127 of those, C{.} or C{-}."""
    return _TAG.fullmatch(text) is not None


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in _HEX_LENGTHS:
        raise DigestInvalid(
            f"unsupported digest algorithm {quoted(algorithm)}: supported are "
            + ", ".join(_HEX_LENGTHS)
        )


def _check_hex(digest: Digest, attribute: Any, value: str) -> None:
    _check_algorithm(digest.algorithm)
    length = _HEX_LENGTHS[digest.algorithm]
    if len(value) != length or _HEX.fullmatch(value) is None:
        raise DigestInvalid(
            f"invalid {digest.algorithm} digest {quoted(value)}: {length} lowercase hex digits"
        )


@attrs.frozen
class Digest:
    """
    A content digest of a supported algorithm; an instance is always valid.

    @ivar algorithm: C{sha256} or C{sha512}.
    @ivar hex: the lowercase hex encoding of the hash.
    @raise DigestInvalid: on construction, for another algorithm or a malformed C{hex}.
    """

    algorithm: str
    hex: str = attrs.field(validator=_check_hex)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Any:
        """A fresh C{hashlib} object of this digest's algorithm, to check content as it streams."""
        return hashlib.new(self.algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """
        The digest of C{data}.

        @raise DigestInvalid: C{algorithm} is not supported.
        """
        _check_algorithm(algorithm)
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def parse_digest(text: str) -> Digest:
    """
    Parse C{algorithm:hex}.

    @raise DigestInvalid: not a digest, an unsupported algorithm (the message lists the
        supported ones), or hex of the wrong length or case.
    """
    match = _DIGEST.fullmatch(text)
    if match is None:
        raise DigestInvalid(f"invalid digest {quoted(text)}: expected algorithm:hex")
    return Digest(match.group(1), match.group(2))


def parse_reference(text: str) -> str | Digest:
    """
    Parse a manifest route's C{<reference>}: a digest when it holds C{:} (a tag never does),
    else a tag.

    @raise DigestInvalid: it holds C{:} and is not a supported digest.
    @raise ManifestUnknown: it is neither a digest nor a tag.
    """
    if ":" in text:
        return parse_digest(text)
    if not is_tag(text):
        # The spec's answers for every manifest route (GET, HEAD, PUT, DELETE) include 404,
        # and a reference that is no tag names no manifest; the Go registry answers 404 too
        # (its routes do not match). NAME_INVALID would blame the name, MANIFEST_INVALID the
        # body, and neither is at fault.
        raise ManifestUnknown(
            f"invalid tag {quoted(text)}: a letter, digit or '_', then up to 127 letters,"
            " digits, '_', '.' or '-'"
        )
    return text
