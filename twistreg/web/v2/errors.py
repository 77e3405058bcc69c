# -*- test-case-name: tests.test_v2_routes -*-
"""
The one error path of the V2 routes: every failure leaves as the spec's JSON
(C{{"errors": [{"code", "message", "detail"}]}}) with its status, never text or HTML.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twistreg.errors import RegistryError
from twistreg.oci.errors import ManifestTooLarge, OCIError, error_body
from twistreg.oci.manifests import MANIFEST_LIMIT
from twistreg.web.body import EarlyAnswers
from twistreg.web.v2.routes import API_VERSION

log = Logger()

#: The Go registry's codes beyond the spec's table, for what the table has no word for.
UNKNOWN = "UNKNOWN"
UNAVAILABLE = "UNAVAILABLE"


def as_oci_error(error: BaseException) -> OCIError:
    """
    What any failure a V2 request can meet says in the spec's terms: routing's 404 and 405,
    the storage's 503 and the request factory's refusals (twistreg's L{RegistryError}s).
    """
    if isinstance(error, OCIError):
        return error
    if isinstance(error, (NotFound, RequestRedirect)):
        return OCIError(404, "NOT_FOUND", "no such endpoint")
    if isinstance(error, MethodNotAllowed):
        allowed = set(error.valid_methods or ()) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        return OCIError(405, "UNSUPPORTED", "the endpoint does not take this method",
                        headers={"Allow": ", ".join(sorted(allowed))})
    if isinstance(error, RegistryError):
        code = UNAVAILABLE if error.status == 503 else (
            "SIZE_INVALID" if error.status == 413 else UNKNOWN)
        return OCIError(error.status, code, error.message, headers=error.headers)
    return OCIError(500, UNKNOWN, "internal server error")


def render_error(request: IRequest, failure: Failure) -> bytes | None:
    """The answer to what a V2 route raised; None for a client that went away."""
    if failure.check(defer.CancelledError):
        return None
    error = as_oci_error(failure.value)
    if error.status == 500 and not failure.check(OCIError):
        log.failure("unexpected error on {method} {uri}", failure,
                    method=request.method, uri=request.uri)
    request.setResponseCode(error.status)
    for name, value in error.headers.items():
        request.setHeader(name.encode(), value.encode())
    body = error_body(error)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def _render_early(error: RegistryError) -> tuple[dict[str, str], bytes]:
    oci = as_oci_error(error)
    headers = {"Content-Type": "application/json; charset=utf-8",
               API_VERSION[0].decode(): API_VERSION[1].decode(), **oci.headers}
    return headers, error_body(oci)


#: What the request factory answers for V2 before routing: a buffered body (a manifest)
#: larger than the spec's limit is refused as it is announced, in the spec's form.
V2_EARLY_ANSWERS = EarlyAnswers(
    MANIFEST_LIMIT,
    lambda: ManifestTooLarge(f"manifests are limited to {MANIFEST_LIMIT} bytes"),
    lambda: OCIError(500, UNKNOWN, "internal server error"),
    _render_early,
)
