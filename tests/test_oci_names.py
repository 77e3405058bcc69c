"""L{twistreg.oci.names}: the spec's grammar for names, tags, digests and references."""

from __future__ import annotations

import hashlib

import pytest

from twistreg.oci.errors import DigestInvalid, ManifestUnknown, NameInvalid
from twistreg.oci.names import (
    NAME_LIMIT,
    Digest,
    is_tag,
    parse_digest,
    parse_name,
    parse_reference,
)

HELLO_SHA256 = hashlib.sha256(b"hello").hexdigest()
HELLO_SHA512 = hashlib.sha512(b"hello").hexdigest()


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "library/ubuntu",
        "foo/bar",
        "0",
        "my.registry.example/team/app",
        "a_b",
        "a__b",
        "a-b",
        "a---b",
        "a.b-c_d__e/f",
        "a/b/c/d/e/f/g",
        "x" * NAME_LIMIT,
        "/".join(["abc"] * 63) + "/abc",
    ],
)
def test_valid_names(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Foo",
        "library/Ubuntu",
        "UPPER",
        "/foo",
        "foo/",
        "foo//bar",
        "-foo",
        "foo-",
        ".foo",
        "_foo",
        "foo..bar",
        "..",
        "../etc",
        "foo/../bar",
        "foo/./bar",
        "a___b",
        "a_.b",
        "a.-b",
        "foo bar",
        "foo\n",
        "foo\x00",
        "caf\u00e9",
        "\u0661",  # an Arabic-Indic digit: a digit to \d, not to the spec
        "foo:bar",
        "foo@sha256",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid) as caught:
        parse_name(name)
    assert (caught.value.status, caught.value.code) == (400, "NAME_INVALID")
    assert caught.value.message.startswith(f"invalid repository name {name!r}: ")


def test_name_limit() -> None:
    """255 characters is the Go registry's limit; 256 fit the grammar but are refused."""
    assert NAME_LIMIT == 255
    for name in ("x" * 256, "ab/" * 85 + "a", "a" * 100_000):
        with pytest.raises(NameInvalid) as caught:
            parse_name(name)
        assert caught.value.message == "repository name longer than 255 characters"


def test_long_invalid_name_cut_short_in_message() -> None:
    with pytest.raises(NameInvalid) as caught:
        parse_name("A" * 200)
    assert caught.value.message.startswith("invalid repository name '" + "A" * 80 + "...': ")


@pytest.mark.parametrize(
    "tag", ["latest", "v1.2.3", "_", "1", "A_b-C.d", "__init__", "x" * 128, "a-"]
)
def test_valid_tags(tag: str) -> None:
    assert is_tag(tag) is True


@pytest.mark.parametrize(
    "tag",
    ["", "x" * 129, "-latest", ".hidden", "a/b", "a:b", "a b", "latest\n", "caf\u00e9", "a@b",
     "a+b"],
)
def test_invalid_tags(tag: str) -> None:
    assert is_tag(tag) is False


def test_digest_value() -> None:
    digest = parse_digest(f"sha256:{HELLO_SHA256}")
    assert digest == Digest("sha256", HELLO_SHA256)
    assert (digest.algorithm, digest.hex) == ("sha256", HELLO_SHA256)
    assert str(digest) == f"sha256:{HELLO_SHA256}"
    assert hash(digest) == hash(Digest("sha256", HELLO_SHA256))
    assert parse_digest(f"sha512:{HELLO_SHA512}") == Digest("sha512", HELLO_SHA512)


def test_digest_of_and_hasher() -> None:
    assert Digest.of(b"hello") == Digest("sha256", HELLO_SHA256)
    assert Digest.of(b"hello", "sha512") == Digest("sha512", HELLO_SHA512)
    digest = Digest.of(b"")
    first, second = digest.hasher(), digest.hasher()
    first.update(b"hel")
    first.update(b"lo")
    assert first.hexdigest() == HELLO_SHA256
    assert second.hexdigest() == digest.hex == hashlib.sha256(b"").hexdigest()
    assert Digest.of(b"", "sha512").hasher().name == "sha512"


def test_digest_of_unsupported_algorithm() -> None:
    with pytest.raises(DigestInvalid) as caught:
        Digest.of(b"hello", "md5")
    assert caught.value.message == (
        "unsupported digest algorithm 'md5': supported are sha256, sha512"
    )


def digest_refused(text: str) -> str:
    with pytest.raises(DigestInvalid) as caught:
        parse_digest(text)
    assert (caught.value.status, caught.value.code) == (400, "DIGEST_INVALID")
    return caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        f"SHA256:{HELLO_SHA256}",
        HELLO_SHA256,
        "sha256:",
        ":abc",
        "",
        f"sha256:{HELLO_SHA256}\n",
        f" sha256:{HELLO_SHA256}",
        f"sha256:{HELLO_SHA256}:x",
        f"sha256:{HELLO_SHA256[:32]}/{HELLO_SHA256[32:]}",
    ],
)
def test_not_digests(text: str) -> None:
    assert digest_refused(text) == f"invalid digest {text!r}: expected algorithm:hex"


@pytest.mark.parametrize("algorithm", ["sha384", "md5", "multihash+base58", "sha256.x"])
def test_unsupported_algorithms(algorithm: str) -> None:
    """A well-formed digest of another algorithm: the message names the supported ones."""
    assert digest_refused(f"{algorithm}:{HELLO_SHA256}") == (
        f"unsupported digest algorithm {algorithm!r}: supported are sha256, sha512"
    )


@pytest.mark.parametrize(
    "algorithm, encoded",
    [
        ("sha256", HELLO_SHA256.upper()),
        ("sha256", HELLO_SHA256[:-1]),
        ("sha256", HELLO_SHA256 + "0"),
        ("sha256", "g" * 64),
        ("sha256", "=" * 64),
        ("sha512", HELLO_SHA256),
    ],
    ids=["uppercase", "short", "long", "not-hex", "padding", "sha256-length"],
)
def test_bad_hex(algorithm: str, encoded: str) -> None:
    length = {"sha256": 64, "sha512": 128}[algorithm]
    assert digest_refused(f"{algorithm}:{encoded}") == (
        f"invalid {algorithm} digest {encoded!r}: {length} lowercase hex digits"
    )


def test_long_hex_cut_short_in_message() -> None:
    assert digest_refused(f"sha256:{HELLO_SHA512}") == (
        f"invalid sha256 digest {HELLO_SHA512[:80] + '...'!r}: 64 lowercase hex digits"
    )
    assert digest_refused(f"sha512:{HELLO_SHA512.upper()}") == (
        f"invalid sha512 digest {HELLO_SHA512[:80].upper() + '...'!r}: 128 lowercase hex digits"
    )


def test_digest_constructor_checks() -> None:
    """Whoever builds a Digest gets a valid one or an error, never a bad key for storage."""
    with pytest.raises(DigestInvalid):
        Digest("sha256", "../../../../etc/passwd")
    with pytest.raises(DigestInvalid):
        Digest("sha1", hashlib.sha1(b"").hexdigest())


def test_reference_tag() -> None:
    assert parse_reference("latest") == "latest"
    assert parse_reference("x" * 128) == "x" * 128


def test_reference_digest() -> None:
    assert parse_reference(f"sha256:{HELLO_SHA256}") == Digest("sha256", HELLO_SHA256)


@pytest.mark.parametrize("text", ["sha256:abc", f"sha256:{HELLO_SHA256.upper()}", "latest:1",
                                  f"sha1:{hashlib.sha1(b'').hexdigest()}"])
def test_reference_bad_digest(text: str) -> None:
    with pytest.raises(DigestInvalid) as caught:
        parse_reference(text)
    assert (caught.value.status, caught.value.code) == (400, "DIGEST_INVALID")


@pytest.mark.parametrize("text", ["x" * 129, "", "-x", ".x", "a/b", "caf\u00e9", "a b"])
def test_reference_bad_tag(text: str) -> None:
    with pytest.raises(ManifestUnknown) as caught:
        parse_reference(text)
    assert (caught.value.status, caught.value.code) == (404, "MANIFEST_UNKNOWN")
    assert caught.value.message.startswith("invalid tag ")
