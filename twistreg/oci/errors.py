# -*- test-case-name: tests.test_oci_errors -*-
"""
The errors of the OCI Distribution API: one exception per request, carrying the status, the
spec's error code and a message, and the JSON body the spec gives every error.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from twistreg.errors import RegistryError


class OCIError(RegistryError):
    """
    A V2 request failed; the route answers C{status} with L{error_body} and C{headers}.

    A L{RegistryError}, so that what answers a registry error before routing (a body
    refused as it starts) answers this one too, in the V2 form.

    @param status: the HTTP status code.
    @param code: one of the spec's error codes (C{BLOB_UNKNOWN}, ...).
    @param message: a human-readable explanation; the spec allows it to be empty.
    @param detail: JSON-able data that helps the client, or C{None} to leave it out.
    @param headers: extra response headers (C{WWW-Authenticate} on a 401, C{Retry-After}).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class _TableError(OCIError):
    """An error of the spec's table: the class holds its status, code and usual message."""

    STATUS: ClassVar[int]
    CODE: ClassVar[str]
    MESSAGE: ClassVar[str]

    def __init__(
        self,
        message: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(
            self.STATUS, self.CODE, self.MESSAGE if message is None else message, detail, headers
        )


class BlobUnknown(_TableError):
    """The repository has no blob of that digest."""

    STATUS = 404
    CODE = "BLOB_UNKNOWN"
    MESSAGE = "blob unknown to registry"


class BlobUploadInvalid(_TableError):
    """
    The upload cannot go on as asked. The Go registry registers this code with 404; 400 says
    better that the session exists and the request is at fault.
    """

    STATUS = 400
    CODE = "BLOB_UPLOAD_INVALID"
    MESSAGE = "blob upload invalid"


class ChunkOutOfOrder(BlobUploadInvalid):
    """A chunk whose C{Content-Range} does not start where the upload ends: the spec's 416."""

    STATUS = 416
    MESSAGE = "chunk does not continue the upload"


class BlobUploadUnknown(_TableError):
    """No upload session of that id in the repository (never started, finished or cancelled)."""

    STATUS = 404
    CODE = "BLOB_UPLOAD_UNKNOWN"
    MESSAGE = "blob upload unknown to registry"


class DigestInvalid(_TableError):
    """A digest that is malformed, of an unsupported algorithm, or not that of the content."""

    STATUS = 400
    CODE = "DIGEST_INVALID"
    MESSAGE = "digest invalid or not the digest of the content"


class ManifestBlobUnknown(_TableError):
    """A manifest names a blob or child manifest the repository lacks (V2-NOTES: refused)."""

    STATUS = 400
    CODE = "MANIFEST_BLOB_UNKNOWN"
    MESSAGE = "manifest references a blob or manifest the repository does not have"


class ManifestInvalid(_TableError):
    """A manifest body that cannot be stored: not JSON, of an unknown type, or malformed."""

    STATUS = 400
    CODE = "MANIFEST_INVALID"
    MESSAGE = "manifest invalid"


class ManifestTooLarge(ManifestInvalid):
    """
    A manifest over the size limit. The spec asks for 413 and names no code; the Go registry
    refuses the same body (its reader stops at the limit) with C{MANIFEST_INVALID}, which says
    what is wrong, where C{SIZE_INVALID} means a length that does not match the content.
    """

    STATUS = 413
    MESSAGE = "manifest too large"


class ManifestUnknown(_TableError):
    """The repository has no manifest for that tag or digest."""

    STATUS = 404
    CODE = "MANIFEST_UNKNOWN"
    MESSAGE = "manifest unknown to registry"


class NameInvalid(_TableError):
    """A repository name outside the spec's grammar or longer than 255 characters."""

    STATUS = 400
    CODE = "NAME_INVALID"
    MESSAGE = "invalid repository name"


class NameUnknown(_TableError):
    """A repository that does not exist."""

    STATUS = 404
    CODE = "NAME_UNKNOWN"
    MESSAGE = "repository name unknown to registry"


class SizeInvalid(_TableError):
    """A declared length that the content does not match."""

    STATUS = 400
    CODE = "SIZE_INVALID"
    MESSAGE = "length does not match the content"


class Unauthorized(_TableError):
    """Authentication required; give the C{WWW-Authenticate} challenge in C{headers}."""

    STATUS = 401
    CODE = "UNAUTHORIZED"
    MESSAGE = "authentication required"


class Denied(_TableError):
    """Authenticated, but not allowed to do this."""

    STATUS = 403
    CODE = "DENIED"
    MESSAGE = "access to the resource denied"


class Unsupported(_TableError):
    """An operation this registry does not allow (the Go registry's 405 for a DELETE)."""

    STATUS = 405
    CODE = "UNSUPPORTED"
    MESSAGE = "operation unsupported"


class TooManyRequests(_TableError):
    """Rate limited; C{Retry-After} may go in C{headers}."""

    STATUS = 429
    CODE = "TOOMANYREQUESTS"
    MESSAGE = "too many requests"


def quoted(text: str) -> str:
    """A client's text for a message: quoted, and cut short so that a huge one stays out."""
    return repr(text if len(text) <= 80 else text[:80] + "...")


def error_body(error: OCIError) -> bytes:
    """
    The spec's JSON body for C{error}: compact, ASCII (so UTF-8 whatever the message holds,
    lone surrogates from a hostile path included), C{detail} only when there is one.
    """
    entry: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return json.dumps({"errors": [entry]}, separators=(",", ":"), allow_nan=False).encode()
