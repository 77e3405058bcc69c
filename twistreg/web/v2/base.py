# -*- test-case-name: tests.test_v2_routes -*-
"""
The base endpoint (C{GET /v2/}, how a client finds a V2 registry) and the catalog, with the
paging that the catalog and tag lists share (C{n}, C{last} and the C{Link} header).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.web.iweb import IRequest

from twistreg.oci.errors import OCIError
from twistreg.registry.auth import Access
from twistreg.web.v2.routes import Policy, V2Call, V2Routes, decimal


def json_answer(request: IRequest, value: Any, status: int = 200) -> bytes:
    """A JSON answer; HEAD gets the same headers."""
    body = json.dumps(value, separators=(",", ":")).encode()
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def page(call: V2Call, entries: list[str], path: str) -> list[str]:
    """
    The entries after C{last} (when given), at most C{n} of them (when given), in order; a
    C{Link} to the next page when some are left.

    @param path: the endpoint's path, for the link.
    @raise OCIError: C{n} that is not a non-negative integer (C{PAGINATION_NUMBER_INVALID},
        the Go registry's code).
    """
    last, count = call.query(b"last"), call.query(b"n")
    if last is not None:
        entries = [entry for entry in entries if entry > last]
    if count is None:
        return entries
    limit = decimal(count)
    if limit is None:
        raise OCIError(400, "PAGINATION_NUMBER_INVALID",
                       "n must be a non-negative integer", detail={"n": count})
    if len(entries) > limit and limit > 0:
        shown = entries[:limit]
        link = f"<{path}?n={limit}&last={quote(shown[-1], safe='')}>; rel=\"next\""
        call.request.setHeader(b"Link", link.encode())
        return shown
    return entries[:limit]


def add_base_routes(v2: V2Routes) -> None:
    """C{/v2/} and C{/v2/_catalog}."""
    registry = v2.registry

    @v2.route("/v2/", "GET", Policy(Access.READ))
    async def base(call: V2Call) -> bytes:
        return json_answer(call.request, {})

    @v2.route("/v2/_catalog", "GET", Policy(Access.READ))
    async def catalog(call: V2Call) -> bytes:
        names = await registry.repositories.catalog()
        return json_answer(call.request, {"repositories": page(call, names, "/v2/_catalog")})
