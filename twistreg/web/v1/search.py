# -*- test-case-name: tests.test_search -*-
"""R26, the search route (docs/api.md): what C{docker search} and C{podman search} call."""

from __future__ import annotations

import re

from twisted.web.iweb import IRequest

from twistreg.errors import RegistryError
from twistreg.registry.documents import parse_json
from twistreg.web import responses
from twistreg.web.v1.routes import Mount, Policy, RouteCall, RouteTable, upstream_request

#: The largest page size R26 accepts.
MAX_PAGE_SIZE = 100
_DIGITS = re.compile(r"[0-9]+")
#: The most significant digits a page number may have: its offset stays a database integer
#: (and int() refuses thousands of digits).
_MAX_DIGITS = 9


def _argument(request: IRequest, name: bytes) -> str | None:
    """
    The first value of a query-string parameter, form-decoded (Twisted did that: C{+} is a
    space), as text; invalid UTF-8 is replaced, as Flask did for 0.9.1.
    """
    values = request.args.get(name)
    return None if not values else values[0].decode("utf-8", "replace")


def _paging(request: IRequest, name: bytes, maximum: int | None = None) -> int | None:
    """
    C{n} or C{page}: absent → None; ASCII digits within 1..C{maximum} → the number.

    @raise RegistryError: 400 C{Invalid paging parameters} for anything else (C{n=}, C{n=-1},
        C{n=2.5}, C{n=0}, C{n=101}).
    """
    text = _argument(request, name)
    if text is None:
        return None
    if _DIGITS.fullmatch(text) is not None and len(text.lstrip("0")) <= _MAX_DIGITS:
        number = int(text)
        if number >= 1 and (maximum is None or number <= maximum):
            return number
    raise RegistryError(400, "Invalid paging parameters")


def merge_results(local: list[dict], upstream: object) -> list[dict]:
    """
    §6, R26 in mirror mode: upstream's results by name over the local ones; an upstream
    entry replaces the local one of the same name, the others are appended.
    """
    if not isinstance(upstream, dict) or not isinstance(upstream.get("results"), list):
        return local
    merged = {result["name"]: result for result in local}
    for result in upstream["results"]:
        if isinstance(result, dict) and isinstance(result.get("name"), str):
            merged[result["name"]] = result
    return list(merged.values())


def add_search_routes(v1: RouteTable) -> None:
    """R26; mounted only when search is on (otherwise the path answers 404 C{Not found})."""

    @v1.route("/v1/search", "GET", Policy(None, mount=Mount.SEARCH, login=True))
    async def search(call: RouteCall) -> bytes:
        request, search_index = call.request, call.registry.search
        assert search_index is not None
        query = _argument(request, b"q") or ""
        n = _paging(request, b"n", MAX_PAGE_SIZE)
        page = _paging(request, b"page") or 1
        count, rows = await search_index.search(query, n, page)
        results = [{"description": d, "name": name} for name, d in rows]
        mirror = call.registry.mirror
        if mirror is not None:
            path, headers = upstream_request(request)
            answer = await mirror.fetch(path, headers, index=True)
            if answer is not None:
                try:
                    results = merge_results(results, parse_json(answer.body))
                    count = len(results)
                except ValueError:
                    pass
        return responses.json_body(
            request, {"num_results": count, "query": query, "results": results}
        )
