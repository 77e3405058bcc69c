# -*- test-case-name: tests.test_routing -*-
"""
The one error path of the V1 routes: every failure leaves as C{{"error": ...}} JSON with the
contract's status (docs/api.md).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twistreg.errors import RegistryError
from twistreg.web import responses

log = Logger()


def render_error(request: IRequest, failure: Failure) -> bytes | None:
    """
    The answer to what a route raised, or to a path or method no route takes; anything
    unexpected is logged and a JSON 500.  None for a client that went away.
    """
    error = failure.value
    if isinstance(error, RegistryError):
        for name, value in error.headers.items():
            request.setHeader(name.encode(), value.encode())
        return responses.json_body(request, {"error": error.message}, error.status)
    if isinstance(error, (NotFound, RequestRedirect)):
        return responses.json_body(request, {"error": "Not found"}, 404)
    if isinstance(error, MethodNotAllowed):
        return _method_not_allowed(request, error)
    if isinstance(error, defer.CancelledError):
        return None
    log.failure("unexpected error on {method} {uri}", failure,
                method=request.method, uri=request.uri)
    return responses.json_body(request, {"error": "Internal server error"}, 500)


def _method_not_allowed(request: IRequest, error: MethodNotAllowed) -> bytes:
    allowed = set(error.valid_methods or ()) | {"OPTIONS"}
    if "GET" in allowed:
        allowed.add("HEAD")
    request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode())
    if request.method == b"OPTIONS":
        responses.set_json_headers(request, 200, 0)
        return b""
    return responses.json_body(request, {"error": "Method not allowed"}, 405)
