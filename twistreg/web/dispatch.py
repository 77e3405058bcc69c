# -*- test-case-name: tests.test_routing,tests.test_dispatch -*-
"""
The resource that answers from a route table: the route matched once, its handler called,
its answer written.

Klein's own resource does the same for any Klein app, but pays for its generality on every
request (its URL map bound per request, two Deferreds, an adapter, four callbacks): on
C{_ping} it cost more than the rest of twisted.web together.  The routes here return bytes
(or a Deferred of bytes) and every failure goes to one renderer, so the answer can be
written directly when the handler finished at once, and through one Deferred otherwise.
The routes themselves stay declared on the Klein app (L{twistreg.web.v1.routes}).
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: Renders what a route raised (or what stopped it from being matched) as the answer's
#: body, the status and headers set on the request; None when nobody is left to answer.
ErrorRenderer = Callable[[IRequest, Failure], Optional[bytes]]

log = Logger()


class Routes(Protocol):
    def answer(self, request: IRequest) -> bytes | defer.Deferred:
        """The answer of the route C{request} matches (raises what stops it)."""


class RoutedResource(Resource):
    """A leaf resource answering every request from C{routes}, its errors from C{render_error}."""

    isLeaf = True

    def __init__(self, routes: Routes, render_error: ErrorRenderer) -> None:
        super().__init__()
        self.routes = routes
        self._render_error = render_error

    def render(self, request: IRequest) -> object:
        """Route C{request}: its answer is written now, or when its Deferred fires."""
        try:
            result = self.routes.answer(request)
        except Exception:
            result = Failure()
        if isinstance(result, defer.Deferred):
            # Set when the client goes away first: nobody is left to answer.
            gone: list[bool] = []
            result.addCallbacks(self._write, self._failed, (request, gone), None,
                                (request, gone))
            if not request.finished:

                def went_away(_: Failure) -> None:
                    gone.append(True)
                    result.cancel()  # the work done for that client stops

                request.notifyFinish().addErrback(went_away)
        elif isinstance(result, Failure):
            self._failed(result, request, [])
        else:
            self._write(result, request, [])
        return NOT_DONE_YET

    def _write(self, body: bytes | None, request: IRequest, gone: list[bool]) -> None:
        if request.finished or gone:
            return
        if body:
            request.write(body)
        request.finish()

    def _failed(self, failure: Failure, request: IRequest, gone: list[bool]) -> None:
        if request.finished or gone:
            if not failure.check(defer.CancelledError):
                log.failure("error after the answer to {method} {uri}", failure,
                            method=request.method, uri=request.uri)
            return
        if request.startedWriting:
            request.processingFailed(failure)  # the answer is cut short
            return
        try:
            body = self._render_error(request, failure)
        except Exception:
            request.processingFailed(Failure())
            return
        if body is not None:
            self._write(body, request, gone)
