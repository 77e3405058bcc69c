"""L{twistreg.oci.errors}: the spec's codes with the Go registry's statuses, and the body."""

from __future__ import annotations

import json

import pytest

from twistreg.oci import errors
from twistreg.oci.errors import OCIError, error_body, quoted

TABLE = [
    (errors.BlobUnknown, 404, "BLOB_UNKNOWN"),
    (errors.BlobUploadInvalid, 400, "BLOB_UPLOAD_INVALID"),
    (errors.BlobUploadUnknown, 404, "BLOB_UPLOAD_UNKNOWN"),
    (errors.DigestInvalid, 400, "DIGEST_INVALID"),
    (errors.ManifestBlobUnknown, 400, "MANIFEST_BLOB_UNKNOWN"),
    (errors.ManifestInvalid, 400, "MANIFEST_INVALID"),
    (errors.ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
    (errors.NameInvalid, 400, "NAME_INVALID"),
    (errors.NameUnknown, 404, "NAME_UNKNOWN"),
    (errors.SizeInvalid, 400, "SIZE_INVALID"),
    (errors.Unauthorized, 401, "UNAUTHORIZED"),
    (errors.Denied, 403, "DENIED"),
    (errors.Unsupported, 405, "UNSUPPORTED"),
    (errors.TooManyRequests, 429, "TOOMANYREQUESTS"),
    (errors.ChunkOutOfOrder, 416, "BLOB_UPLOAD_INVALID"),
    (errors.ManifestTooLarge, 413, "MANIFEST_INVALID"),
]


@pytest.mark.parametrize("cls, status, code", TABLE, ids=[row[0].__name__ for row in TABLE])
def test_status_and_code(cls: type[OCIError], status: int, code: str) -> None:
    error = cls()
    assert isinstance(error, OCIError)
    assert (error.status, error.code, error.detail, error.headers) == (status, code, None, {})
    assert error.message.strip() == error.message != ""
    assert json.loads(error_body(error)) == {"errors": [{"code": code, "message": error.message}]}


def test_every_code_of_the_spec() -> None:
    assert {row[2] for row in TABLE} == {
        "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
        "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }


def test_default_messages() -> None:
    assert errors.BlobUnknown().message == "blob unknown to registry"
    assert errors.ManifestInvalid().message == "manifest invalid"
    assert errors.ChunkOutOfOrder().message == "chunk does not continue the upload"
    assert errors.ManifestTooLarge().message == "manifest too large"


def test_kinds_caught_by_their_code() -> None:
    """A route that catches an invalid manifest or upload also catches the sized variants."""
    assert isinstance(errors.ManifestTooLarge(), errors.ManifestInvalid)
    assert isinstance(errors.ChunkOutOfOrder(), errors.BlobUploadInvalid)


def test_message_detail_headers() -> None:
    error = errors.Unauthorized(
        "token expired",
        detail=[{"Type": "repository", "Name": "foo/bar", "Action": "pull"}],
        headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'},
    )
    assert error.message == "token expired"
    assert error.headers == {"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'}
    assert str(error) == "401 UNAUTHORIZED: token expired"
    assert error_body(error) == (
        b'{"errors":[{"code":"UNAUTHORIZED","message":"token expired",'
        b'"detail":[{"Type":"repository","Name":"foo/bar","Action":"pull"}]}]}'
    )


def test_empty_message_kept() -> None:
    """The spec allows an empty message; only C{None} means the usual one."""
    assert errors.Denied("").message == ""
    assert error_body(errors.Denied("")) == b'{"errors":[{"code":"DENIED","message":""}]}'


def test_headers_copied() -> None:
    headers = {"Retry-After": "10"}
    error = errors.TooManyRequests(headers=headers)
    headers["Retry-After"] = "0"
    assert error.headers == {"Retry-After": "10"}


def test_generic_error() -> None:
    """Any code and status, for instance an upstream registry's error passed on."""
    error = OCIError(503, "UNAVAILABLE", "upstream unavailable", detail={"host": "x"})
    assert (error.status, error.code, error.message) == (503, "UNAVAILABLE", "upstream unavailable")
    assert error_body(error) == (
        b'{"errors":[{"code":"UNAVAILABLE","message":"upstream unavailable",'
        b'"detail":{"host":"x"}}]}'
    )


def test_body_is_ascii_json_whatever_the_message() -> None:
    """Names and tags from the path can hold anything, lone surrogates included."""
    error = errors.NameInvalid("invalid name 'caf\u00e9\ud800'", detail={"name": "\u00e9"})
    body = error_body(error)
    assert body.decode("ascii")
    assert json.loads(body)["errors"][0] == {
        "code": "NAME_INVALID",
        "message": "invalid name 'caf\u00e9\ud800'",
        "detail": {"name": "\u00e9"},
    }


def test_falsy_detail_kept() -> None:
    assert json.loads(error_body(errors.SizeInvalid(detail=0)))["errors"][0]["detail"] == 0
    assert json.loads(error_body(errors.SizeInvalid(detail="")))["errors"][0]["detail"] == ""


def test_quoted() -> None:
    assert quoted("latest") == "'latest'"
    assert quoted("x" * 80) == repr("x" * 80)
    assert quoted("x" * 81) == repr("x" * 80 + "...")
    assert quoted("a'\n") == repr("a'\n")
