# -*- test-case-name: tests.test_routing -*-
"""
The one error path of the V1 routes: every failure leaves as C{{"error": ...}} JSON with the
contract's status (docs/api.md).
"""

from __future__ import annotations

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import BadRequest, MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from twistreg.errors import RegistryError
from twistreg.web import responses

log = Logger()


def add_error_handlers(app: Klein) -> None:
    """Errors as the contract renders them; anything unexpected is logged and a JSON 500."""

    @app.handle_errors(RegistryError)
    def registry_error(request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        for name, value in error.headers.items():
            request.setHeader(name.encode(), value.encode())
        return responses.json_body(request, {"error": error.message}, error.status)

    @app.handle_errors(NotFound, RequestRedirect)
    def not_found(request: IRequest, failure: Failure) -> bytes:
        return responses.json_body(request, {"error": "Not found"}, 404)

    @app.handle_errors(BadRequest)
    def bad_request(request: IRequest, failure: Failure) -> bytes:
        """What the router refuses to route (a Host header it cannot parse)."""
        return responses.json_body(request, {"error": "Bad request"}, 400)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(request: IRequest, failure: Failure) -> bytes:
        allowed = set(failure.value.valid_methods or ()) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        request.setHeader(b"Allow", ", ".join(sorted(allowed)).encode())
        if request.method == b"OPTIONS":
            responses.set_json_headers(request, 200, 0)
            return b""
        return responses.json_body(request, {"error": "Method not allowed"}, 405)

    @app.handle_errors(defer.CancelledError)
    def cancelled(request: IRequest, failure: Failure) -> None:
        """The client went away; there is nobody to answer."""

    @app.handle_errors(Exception)
    def internal_error(request: IRequest, failure: Failure) -> bytes:
        log.failure("unexpected error on {method} {uri}", failure,
                    method=request.method, uri=request.uri)
        return responses.json_body(request, {"error": "Internal server error"}, 500)
