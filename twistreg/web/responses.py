# -*- test-case-name: tests.test_routing,tests.test_body -*-
"""
How answers look on the wire: JSON rendering and the header sets of the contract (§2).
"""

from __future__ import annotations

import functools
import json
from email.utils import formatdate
from typing import Any

from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

CACHE_SECONDS = 31536000
_CACHE_CONTROL = b"public, max-age=%d" % CACHE_SECONDS
_EPOCH = b"Thu, 01 Jan 1970 00:00:00 GMT"


def render_json(value: Any) -> bytes:
    """C{json.dumps(value, sort_keys=True)}: the byte form 0.9.1 produced."""
    return json.dumps(value, sort_keys=True).encode("ascii")


@functools.lru_cache(maxsize=4)
def _expires(second: int) -> bytes:
    return formatdate(second + CACHE_SECONDS, usegmt=True).encode()


def expires(now: float) -> bytes:
    """The C{Expires} of a cacheable answer: a year from now, as an RFC 1123 date (the same
    value for every answer in one second, formatted once)."""
    return _expires(int(now))


#: The headers of every generated JSON answer, but its C{Content-Length}.
JSON_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-cache",
    "Pragma": "no-cache",
    "Expires": "-1",
}


def raw_json_answer(status: int, message: str, headers: dict[str, str],
                    with_body: bool = True) -> bytes:
    """
    A whole C{{"error": message}} answer as bytes, for the moments before a Request can
    answer (the body not read yet, the request unparsable); the connection closes after it.
    """
    return raw_answer(status, {**JSON_HEADERS, **headers}, render_json({"error": message}),
                      with_body)


def raw_answer(status: int, headers: dict[str, str], body: bytes, with_body: bool = True
               ) -> bytes:
    """A whole answer as bytes, with its C{Content-Length} and C{Connection: close}."""
    lines = [b"HTTP/1.1 %d %s" % (status, RESPONSES.get(status, b"Error"))]
    fields = {**headers, "Content-Length": str(len(body)), "Connection": "close"}
    lines += [f"{name}: {value}".encode("latin-1") for name, value in fields.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body if with_body else b"")


#: L{JSON_HEADERS} as bytes, which twisted.web takes without encoding them again.
_JSON_RAW_HEADERS = [(name.encode(), [value.encode()]) for name, value in JSON_HEADERS.items()]


def set_json_headers(request: IRequest, status: int, length: int) -> None:
    """The headers of every generated JSON answer (errors, 201, 204 included)."""
    request.setResponseCode(status)
    headers = request.responseHeaders
    for name, values in _JSON_RAW_HEADERS:
        headers.setRawHeaders(name, values)
    if status not in (204, 304):
        headers.setRawHeaders(b"Content-Length", [b"%d" % length])


def json_body(request: IRequest, value: Any, status: int = 200) -> bytes:
    """Render C{value} as a JSON answer."""
    body = render_json(value)
    set_json_headers(request, status, len(body))
    return body


def raw_json_body(request: IRequest, body: bytes, status: int = 200) -> bytes:
    """A stored JSON document sent byte for byte, with the JSON headers."""
    set_json_headers(request, status, len(body))
    return body


def no_content(request: IRequest) -> bytes:
    """204 with the JSON headers and no body."""
    set_json_headers(request, 204, 0)
    return b""


def set_cacheable_headers(request: IRequest, now: float, content_type: bytes) -> None:
    """The one-year cache headers of R3, R6, R7, R9 and R10 (no Pragma)."""
    headers = request.responseHeaders
    headers.setRawHeaders(b"Content-Type", [content_type])
    _set_cache_headers(headers, now)


def _set_cache_headers(headers: Headers, now: float) -> None:
    headers.setRawHeaders(b"Cache-Control", [_CACHE_CONTROL])
    headers.setRawHeaders(b"Expires", [expires(now)])
    headers.setRawHeaders(b"Last-Modified", [_EPOCH])


def cacheable_body(request: IRequest, now: float, body: bytes) -> bytes:
    """A 200 JSON answer with the cache headers."""
    request.setResponseCode(200)
    set_cacheable_headers(request, now, b"application/json")
    request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
    return body


def not_modified(request: IRequest, now: float) -> bytes:
    """304 for an existing resource whose request carried C{If-Modified-Since}."""
    request.setResponseCode(304)
    _set_cache_headers(request.responseHeaders, now)
    return b""
