# -*- test-case-name: tests.test_metrics -*-
"""
The page Prometheus scrapes (C{metrics.path}): every process's metrics summed, rendered
by whichever process the scrape reaches (L{twistreg.metrics}).
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from twistreg.metrics import CONTENT_TYPE, exposition
from twistreg.web.responses import json_body


class MetricsPage(Resource):
    """
    The metrics page: of this process's pool when C{directory} is C{None} (a worker, or a
    single process), else of the processes writing to C{directory} (the pool's master).
    """

    isLeaf = True

    def __init__(self, directory: str | None = None) -> None:
        super().__init__()
        self._directory = directory

    def render(self, request: IRequest) -> bytes:
        request.route_family = "metrics"
        if request.method not in (b"GET", b"HEAD"):
            return json_body(request, {"error": "Method not allowed"}, 405)
        body = exposition(self._directory)
        request.setHeader(b"Content-Type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return b"" if request.method == b"HEAD" else body


class MetricsOnly(Resource):
    """The metrics page at C{path} on an endpoint of its own; 404 elsewhere."""

    isLeaf = True

    def __init__(self, path: str, directory: str | None = None) -> None:
        super().__init__()
        self._path = path.encode("ascii")
        self._page = MetricsPage(directory)

    def render(self, request: IRequest) -> bytes:
        if request.path != self._path:
            return json_body(request, {"error": "Not found"}, 404)
        return self._page.render(request)
