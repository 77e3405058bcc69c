#!/usr/bin/env python3
"""Hostile requests against a real twistreg: every answer classified.

Starts C{twist twistreg} from the source tree (as tests/server.py does) for each C{--workers}
value, pushes two small images (a parent and a child with tar layers) under two
repositories, then sends C{--requests} hostile requests over real sockets to 127.0.0.1 from
C{--threads} client threads, each request on its own connection.  Requests are drawn at
random from templates (seeded: request C{i} of seed C{s} is always the same bytes) covering
every route of docs/api.md with every method, odd paths, odd headers, odd framing and
hostile JSON bodies.

Every answer is classified: status class; whether it is JSON with C{Content-Type:
application/json} (an empty body is accepted for HEAD, 204, 304, 416, OPTIONS and a layer's
200/206, and a layer's 200/206 is C{application/octet-stream}); whether an error body is
C{{"error": "<text>"}}; no answer, reset or timeout; time to answer.  Requests are
I{well-formed} (valid HTTP framing: the server must answer, in JSON) or I{malformed} (a
broken request line, header or body framing: the server may drop the connection).

After the run: C{GET /v1/_ping} must still answer, the server's output must hold no
C{Traceback}, the pushed images and the repository the requests never name must be
unchanged (over HTTP and on disk), and nothing may have been written outside the storage.

    .venv/bin/python bench/hostile.py                          # 10,000 requests, --workers 0
    .venv/bin/python bench/hostile.py --workers 0 2 --json hostile.json
    .venv/bin/python bench/hostile.py --show 1234              # print request 1234 of the seed
    .venv/bin/python bench/hostile.py --only nest --requests 500

Exit status: 0 clean; 1 when a 5xx, a non-JSON answer or no answer to a well-formed request,
a traceback, or a failed post-run check was seen; 2 when the server could not be started or
the image could not be pushed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import random
import re
import select
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402

MIB = 1 << 20
BODY_LIMIT = 10 * MIB
DEFAULT_REQUESTS = 10_000
DEFAULT_SEED = 1
DEFAULT_THREADS = 8
#: Seconds one request may take, connection to last byte of the answer.
REQUEST_TIMEOUT = 30.0
#: Seconds a malformed request may go unanswered before the client gives up.
MALFORMED_TIMEOUT = 5.0
#: Seconds the whole run may take per server; requests not started by then are skipped.
RUN_BUDGET = 900.0
#: Answers slower than this are listed.
SLOW_SECONDS = 5.0
MAX_HEAD = 256 * 1024
#: Seconds to watch for bytes after the last answer, before closing.
TRAILING_WAIT = 0.3

METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH")
ODD_METHODS = ("FOO", "TRACE", "get", "Get", "PROPFIND", "M-SEARCH", "X" * 300, "CONNECT")
BODY_METHODS = {"PUT", "POST", "PATCH"}


# ---------------------------------------------------------------------------------------
# The images pushed before the run.


def _tar(members: dict[str, bytes | None]) -> bytes:
    """A plain tar layer: C{name: content}, None for a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1400000000
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class Image:
    id: str
    json: bytes
    layer: bytes

    @property
    def checksum(self) -> str:
        return "sha256:" + hashlib.sha256(self.json + b"\n" + self.layer).hexdigest()


@dataclass
class Context:
    """What the templates know of the registry: the pushed images and repositories."""

    parent: Image
    child: Image
    #: The repository the requests may do anything to.
    repo: str = "hostile/app"
    #: The repository no request names: it must be unchanged after the run.
    canary: str = "keep/safe"


def make_context(seed: int) -> Context:
    def image_id(name: str) -> str:
        return hashlib.sha256(f"twistreg hostile {seed} {name}".encode()).hexdigest()

    parent_id, child_id = image_id("parent"), image_id("child")
    parent = Image(
        parent_id,
        json.dumps({"id": parent_id, "created": "2014-10-01T00:00:00Z",
                    "container_config": {"Cmd": ["/bin/sh"]}}).encode(),
        _tar({"etc": None, "etc/hello.txt": b"hello world\n", "etc/gone.txt": b"x"}),
    )
    child = Image(
        child_id,
        json.dumps({"id": child_id, "parent": parent_id,
                    "created": "2014-10-02T00:00:00Z"}).encode(),
        _tar({"etc": None, "etc/hello.txt": b"hello again\n", "etc/.wh.gone.txt": b"",
              "usr/bin/tool": b"\x7fELF" + bytes(range(256)) * 4}),
    )
    return Context(parent, child)


# ---------------------------------------------------------------------------------------
# Requests.


@dataclass
class Probe:
    """
    One hostile request: the bytes to send and how to send them.

    @ivar template: the template and variant labels: what failures are deduplicated by.
    @ivar wellformed: valid HTTP framing: the server must answer, and in JSON.
    @ivar payload: sent at once (request line, headers and whatever body is sent at once).
    @ivar tail: body bytes sent after the payload, in pieces, while watching for an early
        answer (over-size bodies).
    @ivar tail_chunked: frame the tail as chunks (and the last chunk).
    @ivar abandon: close the connection after the payload without reading an answer.
    @ivar after_continue: what to send when the server answers C{100 Continue}; None: the
        client gives up then.
    @ivar answers: answers expected on the connection (2 when a ping is pipelined).
    """

    template: str
    method: str
    target: bytes
    wellformed: bool
    payload: bytes
    tail: int = 0
    tail_chunked: bool = False
    abandon: bool = False
    after_continue: bytes | None = None
    answers: int = 1

    def describe(self, limit: int = 400) -> str:
        text = repr(self.payload[:limit])
        if len(self.payload) > limit:
            text += f" ... ({len(self.payload)} bytes)"
        if self.tail:
            text += f" + {self.tail} body bytes{' chunked' if self.tail_chunked else ''}"
        if self.abandon:
            text += " (then the client closes)"
        return text


def request_bytes(method: str | bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                  body: bytes = b"", version: bytes = b"HTTP/1.1",
                  length: bool = True) -> bytes:
    """A request on the wire; C{Content-Length} added for a body unless C{length} is false."""
    if isinstance(method, str):
        method = method.encode()
    lines = [method + b" " + target + b" " + version]
    if length and (body or method in (b"PUT", b"POST", b"PATCH")):
        if not any(name.lower() in (b"content-length", b"transfer-encoding")
                   for name, _ in headers):
            headers = [*headers, (b"Content-Length", str(len(body)).encode())]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


HOST = (b"Host", b"127.0.0.1")
CLOSE = (b"Connection", b"close")


# Path parameters: (label, raw bytes as they go in the request target, well-formed).
Param = tuple[str, bytes, bool]


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def image_ids(ctx: Context, rng: random.Random) -> list[Param]:
    good = ctx.child.id
    return [
        ("id=child", good.encode(), True),
        ("id=parent", ctx.parent.id.encode(), True),
        ("id=fresh64", _hex(rng, 64).encode(), True),
        ("id=fresh16", _hex(rng, 16).encode(), True),
        ("id=upper", good.upper().encode(), True),
        ("id=len63", good[:63].encode(), True),
        ("id=len65", (good + "a").encode(), True),
        ("id=len15", good[:15].encode(), True),
        ("id=nonhex", b"g" * 64, True),
        ("id=empty", b"", True),
        ("id=dot", b".", True),
        ("id=dotdot", b"..", True),
        ("id=%2e%2e", b"%2e%2e", True),
        ("id=%2F", good.encode() + b"%2Fjson", True),
        ("id=%00", good.encode() + b"%00", True),
        ("id=%0a", good.encode() + b"%0a", True),
        ("id=%ff", b"%ff", True),
        ("id=%", b"%", True),
        ("id=%zz", b"%zz", True),
        ("id=long300", b"a" * 300, True),
        ("id=long5000", b"f" * 5000, True),
        ("id=unicode", b"%C3%A9" * 40, True),
        ("id=traversal", b"..%2F..%2F..%2Fetc%2Fpasswd", True),
        ("id=%ed%a0%80", b"%ed%a0%80", True),
        ("id=raw-ctrl", b"\x01" + good[:10].encode(), False),
        ("id=raw-utf8", "é".encode() * 10, False),
        ("id=raw-space", b"a b", False),
    ]


def repositories(ctx: Context, rng: random.Random) -> list[Param]:
    return [
        ("repo=app", ctx.repo.encode(), True),
        ("repo=single", b"single", True),
        ("repo=a/b/c", b"a/b/c", True),
        ("repo=ab%$_-test", b"ab%$_-test", True),
        ("repo=Upper", b"Foo/BAR", True),
        ("repo=space", b"with%20space/x", True),
        ("repo=plus", b"a+b/c+d", True),
        ("repo=foo//bar", b"foo//bar", True),
        ("repo=leading/", b"/leading", True),
        ("repo=.", b".", True),
        ("repo=..", b"..", True),
        ("repo=ns/..", b"hostile/..", True),
        ("repo=traversal", b"hostile/%2e%2e/%2e%2e/keep/safe", True),
        ("repo=%2F-traversal", b"hostile%2F..%2F..%2Fkeep%2Fsafe", True),
        ("repo=a/./b", b"a/./b", True),
        ("repo=%00", b"a%00b/c", True),
        ("repo=%0a", b"a%0ab/c", True),
        ("repo=%7f", b"a/b%7f", True),
        ("repo=%ff", b"a/%ff", True),
        ("repo=%c3%28", b"%c3%28/x", True),
        ("repo=surrogate-utf8", b"a/%ed%a0%80", True),
        ("repo=unicode", b"%E2%98%83/%F0%9F%90%B3", True),
        ("repo=%", b"a/%", True),
        ("repo=%zz", b"a/%zz", True),
        ("repo=long255", b"n/" + b"x" * 255, True),
        ("repo=long256", b"n/" + b"x" * 256, True),
        ("repo=long300", b"x" * 300, True),
        ("repo=quoted-long", b"n/" + b"%C3%A9" * 60, True),
        ("repo=many-segments", b"a/" * 200 + b"b", True),
        ("repo=trailing///", ctx.repo.encode() + b"///", True),
        ("repo=tags", b"foo/tags", True),
        ("repo=images", b"foo/images", True),
        ("repo=raw-ctrl", b"a\x01b/c", False),
        ("repo=raw-utf8", "ünï/cödé".encode(), False),
        ("repo=raw-tab", b"a\tb/c", False),
    ]


def tags(rng: random.Random) -> list[Param]:
    return [
        ("tag=latest", b"latest", True),
        ("tag=v1", b"v1", True),
        ("tag=_x", b"_x", True),
        ("tag=$x", b"$x", True),
        ("tag=.x", b".x", True),
        ("tag=-x", b"-x", True),
        ("tag=.", b".", True),
        ("tag=..", b"..", True),
        ("tag=%2e%2e", b"%2e%2e", True),
        ("tag=%2F", b"a%2Fb", True),
        ("tag=len128", b"a" * 128, True),
        ("tag=len129", b"a" * 129, True),
        ("tag=len300", b"a" * 300, True),
        ("tag=unicode", b"%C3%A9" * 100, True),
        ("tag=%00", b"a%00", True),
        ("tag=%ff", b"%ff", True),
        ("tag=%0a", b"latest%0a", True),
        ("tag=json", b"json", True),
        ("tag=plus", b"a+b", True),
        ("tag=%20", b"a%20b", True),
        ("tag=%", b"%", True),
        ("tag=surrogate-utf8", b"%ed%a0%80", True),
        ("tag=raw-ctrl", b"a\x7fb", False),
    ]


def usernames(rng: random.Random) -> list[Param]:
    return [
        ("user=bob", b"bob", True),
        ("user=..", b"..", True),
        ("user=long", b"u" * 300, True),
        ("user=%00", b"%00", True),
        ("user=%ff", b"%ff", True),
        ("user=%2F", b"a%2Fb", True),
    ]


def search_queries(rng: random.Random) -> list[Param]:
    many = b"1" * 5000
    return [
        ("q=app", b"q=app", True),
        ("q=empty", b"q=", True),
        ("q=none", b"", True),
        ("q=%00", b"q=%00", True),
        ("q=%ff", b"q=%ff", True),
        ("q=surrogate-utf8", b"q=%ed%a0%80", True),
        ("q=like", b"q=%25_%5C", True),
        ("q=quote", b"q=%27%22%3B--", True),
        ("q=long", b"q=" + b"a" * 10000, True),
        ("q=&&&", b"q&&&=&=", True),
        ("n=0", b"q=a&n=0", True),
        ("n=101", b"q=a&n=101", True),
        ("n=-1", b"q=a&n=-1", True),
        ("n=abc", b"q=a&n=abc", True),
        ("n=1e5", b"q=a&n=1e5", True),
        ("n=arabic-digit", b"q=a&n=%D9%A3", True),
        ("page=0", b"q=a&n=5&page=0", True),
        ("page=20digits", b"q=a&n=5&page=99999999999999999999", True),
        ("page=5000digits", b"q=a&n=5&page=" + many, True),
        ("n=5000digits", b"q=a&n=" + many, True),
        ("n=repeated", b"q=a&n=1&n=x&page=1&page=-3", True),
        ("query=%", b"q=%&n=%zz", True),
    ]


@dataclass(frozen=True)
class Route:
    name: str
    methods: tuple[str, ...]
    #: the path with {id}, {repo}, {tag}, {user} placeholders.
    path: str
    #: the body family for body methods: "image", "tag", "properties", "users", "images", "any"
    body: str = "any"


ROUTES = (
    Route("R1", ("GET",), "/_ping"),
    Route("R1", ("GET",), "/v1/_ping"),
    Route("R2", ("GET",), "/"),
    Route("R3/R4", ("GET", "PUT"), "/v1/images/{id}/layer", "layer"),
    Route("R5", ("PUT",), "/v1/images/{id}/checksum"),
    Route("R6/R8", ("GET", "PUT"), "/v1/images/{id}/json", "image"),
    Route("R7", ("GET",), "/v1/images/{id}/ancestry"),
    Route("R9", ("GET",), "/v1/images/{id}/files"),
    Route("R10", ("GET",), "/v1/images/{id}/diff"),
    Route("R17", ("GET",), "/v1/repositories/{repo}/tags/{tag}/json"),
    Route("R12/R13/R14", ("GET", "PUT", "DELETE"), "/v1/repositories/{repo}/tags/{tag}", "tag"),
    Route("R11/R15", ("GET", "DELETE"), "/v1/repositories/{repo}/tags"),
    Route("R16", ("GET",), "/v1/repositories/{repo}/json"),
    Route("R18/R19", ("PUT", "GET"), "/v1/repositories/{repo}/properties", "properties"),
    Route("R22b/R23/R24", ("PUT", "GET", "DELETE"), "/v1/repositories/{repo}/images", "images"),
    Route("R25", ("PUT",), "/v1/repositories/{repo}/auth"),
    Route("R22a/R15", ("PUT", "DELETE"), "/v1/repositories/{repo}", "images"),
    Route("R22a/R15", ("PUT", "DELETE"), "/v1/repositories/{repo}/", "images"),
    Route("R20", ("GET", "POST"), "/v1/users", "users"),
    Route("R20", ("GET", "POST"), "/v1/users/", "users"),
    Route("R21", ("PUT",), "/v1/users/{user}"),
    Route("R21", ("PUT",), "/v1/users/{user}/"),
    Route("R26", ("GET",), "/v1/search?{query}"),
)
BODY_ROUTES = [route for route in ROUTES if route.body not in ("any", "layer")]


def fill(route: Route, ctx: Context, rng: random.Random,
         fixed: dict[str, Param] | None = None) -> tuple[bytes, list[str], bool]:
    """A target for C{route}: (bytes, labels of the parameters drawn, well-formed)."""
    pools: dict[str, Callable[[], list[Param]]] = {
        "id": lambda: image_ids(ctx, rng), "repo": lambda: repositories(ctx, rng),
        "tag": lambda: tags(rng), "user": lambda: usernames(rng),
        "query": lambda: search_queries(rng),
    }
    target, labels, wellformed = route.path.encode(), [], True
    for name, pool in pools.items():
        placeholder = b"{" + name.encode() + b"}"
        if placeholder in target:
            label, value, ok = (fixed or {}).get(name) or rng.choice(pool())
            target = target.replace(placeholder, value)
            labels.append(label)
            wellformed = wellformed and ok
    return target, labels, wellformed


# Hostile JSON bodies: (label, bytes).


def nested_arrays(n: int) -> bytes:
    return b"[" * n + b"]" * n


def nested_objects(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


DEPTHS = (100, 255, 256, 257, 1000, 10_000, 100_000)
BIG_INT = b"9" * 10_000


@functools.lru_cache(maxsize=1)
def generic_bodies() -> list[tuple[str, bytes]]:
    bodies = []
    for n in DEPTHS:
        bodies.append((f"nest-[]x{n}", nested_arrays(n)))
        bodies.append((f"nest-{{}}x{n}", nested_objects(n)))
    bodies += [
        ("1e99999", b"1e99999"),
        ("-1e99999", b"-1e99999"),
        ("[1e99999]", b"[1e99999]"),
        ("10000-digit-int", BIG_INT),
        ("[10000-digit-int]", b"[" + BIG_INT + b"]"),
        ("NaN", b"NaN"),
        ("Infinity", b"[Infinity, -Infinity]"),
        ("invalid-utf8", b'"\xff\xfe"'),
        ("invalid-utf8-object", b'{"id": "\xc3\x28"}'),
        ("overlong-utf8", b'"\xc0\xaf"'),
        ("surrogate-utf8", b'"\xed\xa0\x80"'),
        ("utf16-bom", '{"id": "x"}'.encode("utf-16")),
        ("utf16-le", '["a"]'.encode("utf-16-le")),
        ("utf32", '{"access": "private"}'.encode("utf-32")),
        ("utf8-bom", b'\xef\xbb\xbf{"access": "private"}'),
        ("nul", b"\x00"),
        ("nul-after", b'{"access": "private"}\x00'),
        ("nul-escaped", b'"a\\u0000b"'),
        ("lone-surrogate", b'"\\ud800"'),
        ("lone-low-surrogate", b'"\\udc80"'),
        ("list", b"[]"),
        ("object", b"{}"),
        ("number", b"5"),
        ("string", b'"s"'),
        ("empty-string", b'""'),
        ("null", b"null"),
        ("true", b"true"),
        ("{id:5}", b'{"id": 5}'),
        ("{id:null}", b'{"id": null}'),
        ("{id:[]}", b'{"id": []}'),
        ("{parent:[]}", b'{"parent": []}'),
        ("[5]", b"[5]"),
        ("[null]", b"[null]"),
        ("[{}]", b"[{}]"),
        ("[[]]", b"[[]]"),
        ("empty", b""),
        ("whitespace", b" \r\n\t "),
        ("trailing-garbage", b'{"access": "private"} junk'),
        ("two-values", b'"x" "y"'),
        ("python-dict", b"{'id': 'x'}"),
        ("trailing-comma", b'{"id": "x",}'),
        ("comment", b"// x\n{}"),
        ("many-keys", b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(20000)) + b"}"),
        ("long-string", b'"' + b"a" * MIB + b'"'),
    ]
    return bodies


def route_bodies(route: Route, ctx: Context, url_id: str) -> list[tuple[str, bytes]]:
    """Bodies in the route's own shape with hostile values inside."""
    def dumps(value: object) -> bytes:
        return json.dumps(value).encode()

    hostile_strings = [
        ("surrogate", b'"\\ud800"'), ("low-surrogate", b'"\\udc80"'), ("nul", b'"\\u0000"'),
        ("dotdot", b'".."'), ("dot", b'"."'), ("traversal", b'"../../../../etc/passwd"'),
        ("slash", b'"a/b"'), ("pct", b'"%2F%00"'), ("long300", b'"' + b"a" * 300 + b'"'),
        ("long100k", b'"' + b"a" * 100_000 + b'"'), ("newline", b'"a\\nb"'),
        ("1e99999", b"1e99999"), ("big-int", BIG_INT), ("list", b"[]"), ("object", b"{}"),
        ("list-of-id", b'["' + ctx.parent.id.encode() + b'"]'), ("dict", b'{"x": 1}'),
        ("5", b"5"), ("true", b"true"), ("false", b"false"), ("null", b"null"),
        ("empty", b'""'), ("nested", nested_arrays(300)),
    ]
    uid = url_id.encode()
    if route.body == "image":
        bodies = [("valid", dumps({"id": url_id})),
                  ("valid-parent", dumps({"id": url_id, "parent": ctx.parent.id})),
                  ("self-parent", dumps({"id": url_id, "parent": url_id})),
                  ("id-other", dumps({"id": ctx.parent.id})),
                  ("dup-id", b'{"id": 5, "id": "' + uid + b'"}')]
        bodies += [(f"id:{label}", b'{"id": ' + value + b"}") for label, value in hostile_strings]
        bodies += [(f"parent:{label}", b'{"id": "' + uid + b'", "parent": ' + value + b"}")
                   for label, value in hostile_strings]
        bodies += [(f"extra:nest-[]x{n}", b'{"id": "' + uid + b'", "x": ' + nested_arrays(n)
                    + b"}") for n in (200, 300, 100_000)]
        return bodies
    if route.body == "tag":
        bodies = [("valid", dumps(ctx.child.id)), ("valid-parent", dumps(ctx.parent.id)),
                  ("id-newline", dumps(ctx.child.id + "\n"))]
        return bodies + [(f"value:{label}", value) for label, value in hostile_strings]
    if route.body == "properties":
        bodies = [("private", b'{"access": "private"}'), ("public", b'{"access": "public"}'),
                  ("PRIVATE", b'{"access": "PRIVATE"}'), ("no-access", b'{"x": 1}')]
        return bodies + [(f"access:{label}", b'{"access": ' + value + b"}")
                         for label, value in hostile_strings]
    if route.body == "images":
        bodies = [("valid", dumps([{"id": ctx.child.id}, {"id": ctx.parent.id}])),
                  ("checksum", dumps([{"id": ctx.child.id, "checksum": "sha256:x"}])),
                  ("dup-id", b'[{"id": 5, "id": "a"}]'),
                  ("object", b'{"id": "a"}')]
        bodies += [(f"id:{label}", b'[{"id": ' + value + b"}]") for label, value in hostile_strings]
        bodies += [(f"checksum:{label}", b'[{"id": "a", "checksum": ' + value + b"}]")
                   for label, value in hostile_strings]
        bodies += [(f"element:{label}", b"[" + value + b"]") for label, value in hostile_strings]
        return bodies
    if route.body == "users":
        return [("object", b'{"username": "u", "password": "p", "email": "e@x"}')]
    return []


CONTENT_TYPES = (
    ("ctype=json", b"application/json"),
    ("ctype=none", None),
    ("ctype=form", b"application/x-www-form-urlencoded"),
    ("ctype=multipart", b"multipart/form-data; boundary=----hostile"),
    ("ctype=multipart-noboundary", b"multipart/form-data"),
    ("ctype=utf16", b"application/json; charset=utf-16"),
    ("ctype=octet", b"application/octet-stream"),
    ("ctype=junk", b";;;==;\xff"),
    ("ctype=long", b"application/json; x=" + b"a" * 8000),
)


# Templates: each draws one Probe from an rng.  (weight, function)

Template = Callable[[Context, random.Random], Probe]
TEMPLATES: list[tuple[int, str, Template]] = []


def template(weight: int) -> Callable[[Template], Template]:
    def register(function: Template) -> Template:
        TEMPLATES.append((weight, function.__name__, function))
        return function
    return register


def _method_for(route: Route, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(route.methods)
    if roll < 0.92:
        return rng.choice(METHODS)
    return rng.choice(ODD_METHODS[:-1])


@template(30)
def route_params(ctx: Context, rng: random.Random) -> Probe:
    """Every route, every method, parameters from the hostile pools."""
    route = rng.choice(ROUTES)
    method = _method_for(route, rng)
    target, labels, wellformed = fill(route, ctx, rng)
    headers = [HOST, CLOSE]
    body = b""
    if method in BODY_METHODS:
        if route.body == "layer":
            body = rng.choice([b"", b"not a tar", _tar({"x": b"y"})])
        else:
            choices = route_bodies(route, ctx, _hex(rng, 64)) or [("s", b'"s"')]
            body = rng.choice(choices)[1]
    name = f"params {route.name} {method} " + " ".join(labels)
    return Probe(name, method, target, wellformed,
                 request_bytes(method, target, headers, body))


@template(30)
def hostile_body(ctx: Context, rng: random.Random) -> Probe:
    """A hostile JSON body on a route with a body, with one of the Content-Types."""
    route = rng.choice(BODY_ROUTES)
    method = "POST" if route.body == "users" else "PUT"
    fixed = {"repo": ("repo=app", ctx.repo.encode(), True),
             "tag": ("tag=" + rng.choice(["latest", "v1", "hostile"]),
                     rng.choice([b"latest", b"v1", b"hostile"]), True)}
    url_id = rng.choice([_hex(rng, 64)] * 4 + [ctx.child.id, _hex(rng, 16)])
    fixed["id"] = ("id=url", url_id.encode(), True)
    target, _labels, wellformed = fill(route, ctx, rng, fixed)
    if rng.random() < 0.55:
        label, body = rng.choice(route_bodies(route, ctx, url_id) or generic_bodies())
    else:
        label, body = rng.choice(generic_bodies())
    ctype_label, ctype = rng.choice(CONTENT_TYPES) if rng.random() < 0.4 else CONTENT_TYPES[0]
    headers = [HOST, CLOSE] + ([(b"Content-Type", ctype)] if ctype is not None else [])
    chunked = rng.random() < 0.15
    if chunked:
        headers.append((b"Transfer-Encoding", b"chunked"))
        encoded = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        payload = request_bytes(method, target, headers, encoded, length=False)
    else:
        payload = request_bytes(method, target, headers, body)
    name = (f"body {route.name} {method} {label} {ctype_label}"
            + (" chunked" if chunked else ""))
    return Probe(name, method, target, wellformed, payload)


def _odd_targets(ctx: Context) -> list[tuple[str, bytes, bool]]:
    child = ctx.child.id.encode()
    return [
        ("%2F-in-ping", b"/v1%2F_ping", True),
        ("%2f-images", b"/v1/images%2F" + child + b"%2Fjson", True),
        ("%00-ping", b"/v1/_ping%00", True),
        ("%ff-path", b"/v1/%ff", True),
        ("%-path", b"/v1/%", True),
        ("%zz-path", b"/v1/%zz/json", True),
        ("dotdot", b"/v1/images/../_ping", True),
        ("dotdot-root", b"/../../../etc/passwd", True),
        ("dot", b"/v1/./_ping", True),
        ("%2e%2e", b"/v1/%2e%2e/v1/_ping", True),
        ("double-slash", b"//v1//_ping", True),
        ("double-slash-images", b"/v1/images//" + child + b"/json", True),
        ("trailing-slash", b"/v1/_ping/", True),
        ("absolute-form", b"http://h/v1/_ping", True),
        ("absolute-form-https", b"HTTPS://h:1/v1/images/" + child + b"/json", True),
        ("absolute-form-empty-host", b"http:///v1/_ping", True),
        ("absolute-form-no-path", b"http://h", True),
        ("absolute-form-other-scheme", b"ftp://h/v1/_ping", True),
        ("asterisk", b"*", True),
        ("empty-segment-start", b"/v1/repositories//x/tags", True),
        ("long-path-400", b"/v1/" + b"a" * 400, True),
        ("long-path-8k", b"/v1/repositories/" + b"a/" * 4000 + b"tags", True),
        ("long-path-100k", b"/" + b"a" * 100_000, True),
        ("unicode-pct", b"/v1/repositories/%E2%98%83/tags", True),
        ("ctrl-pct", b"/v1/repositories/a%01/tags", True),
        ("crlf-pct", b"/v1/_ping%0d%0aX-Injected:%201", True),
        ("query-only", b"?q=1", True),
        ("no-slash", b"v1/_ping", True),
        ("fragment", b"/v1/_ping#frag", True),
        ("query-junk", b"/v1/_ping?%ff=%00&&==&a", True),
        ("backslash", b"/v1\\_ping", True),
        ("semicolon", b"/v1/_ping;x=1", True),
        ("authority-form", b"127.0.0.1:80", True),
        ("raw-ctrl", b"/v1/\x01/_ping", False),
        ("raw-del", b"/v1/_ping\x7f", False),
        ("raw-utf8", "/v1/repositories/ü/tags".encode(), False),
        ("raw-nul", b"/v1/_ping\x00", False),
        ("raw-space", b"/v1/_ ping", False),
        ("empty-target", b"", False),
    ]


@template(10)
def odd_path(ctx: Context, rng: random.Random) -> Probe:
    label, target, wellformed = rng.choice(_odd_targets(ctx))
    method = rng.choice(METHODS + ("GET", "GET", "HEAD"))
    body = b'{"access": "private"}' if method in BODY_METHODS else b""
    return Probe(f"path {method} {label}", method, target, wellformed,
                 request_bytes(method, target, [HOST, CLOSE], body))


def _odd_headers(ctx: Context) -> list[tuple[str, list[tuple[bytes, bytes]], bool]]:
    """(label, extra headers, well-formed); a header given as None drops the default Host."""
    long_token = b"Token " + b"a" * 12000
    return [
        ("host=a b", [(b"Host", b"a b")], True),
        ("host=[::1", [(b"Host", b"[::1")], True),
        ("host=empty", [(b"Host", b"")], True),
        ("host=a..b", [(b"Host", b"a..b")], True),
        ("host=64-char-label", [(b"Host", b"a" * 64 + b".example")], True),
        ("host=.", [(b"Host", b".")], True),
        ("host=port-junk", [(b"Host", b"h:abc")], True),
        ("host=port-huge", [(b"Host", b"h:99999999999999999999")], True),
        ("host=userinfo", [(b"Host", b"u:p@h")], True),
        ("host=latin1", [(b"Host", b"h\xe9te")], True),
        ("host=long", [(b"Host", b"h" * 5000)], True),
        ("host=twice", [(b"Host", b"a"), (b"Host", b"b")], True),
        ("host=missing", [], True),
        ("header-8k", [(b"X-Long", b"a" * 8000)], True),
        ("header-20k", [(b"X-Long", b"a" * 20000)], True),
        ("header-100k", [(b"X-Long", b"a" * 100_000)], True),
        ("headers-600", [(b"X-H%d" % i, b"v") for i in range(600)], True),
        ("headers-100", [(b"X-H%d" % i, b"v") for i in range(100)], True),
        ("if-modified-since-junk", [(b"If-Modified-Since", b"\xff junk \x01")], False),
        ("if-modified-since-text", [(b"If-Modified-Since", b"yesterday")], True),
        ("if-modified-since-empty", [(b"If-Modified-Since", b"")], True),
        ("authorization=Token", [(b"Authorization", b"Token")], True),
        ("authorization=Token ,,,", [(b"Authorization", b"Token ,,,")], True),
        ("authorization=Token repo=../..", [(b"Authorization", b'Token repository="../.."')],
         True),
        ("authorization=Token full-junk", [(b"Authorization",
         b'Token signature=,repository="a/b",access=,repository="",="=="')], True),
        ("authorization=Basic", [(b"Authorization", b"Basic !!!")], True),
        ("authorization=long", [(b"Authorization", long_token)], True),
        ("authorization=latin1", [(b"Authorization", b"Token \xff\xfe")], True),
        ("checksum-payload=junk", [(b"X-Docker-Checksum-Payload", b"sha256:\xff zz")], True),
        ("checksum-payload=empty", [(b"X-Docker-Checksum-Payload", b"")], True),
        ("checksum-payload=twice", [(b"X-Docker-Checksum-Payload", b"a"),
                                    (b"X-Docker-Checksum-Payload", b"b")], True),
        ("checksum-payload=long", [(b"X-Docker-Checksum-Payload", b"s" * 10000)], True),
        ("user-agent=junk", [(b"User-Agent",
                              b"docker/\xff go/ / // arch/ARM64 os/ kernel/\xe9")], True),
        ("user-agent=long", [(b"User-Agent", b"docker/1.0 " * 1000)], True),
        ("user-agent=pairs", [(b"User-Agent", b"a/b " * 3000)], True),
        ("x-docker-token=junk", [(b"X-Docker-Token", b"\xff" * 10)], True),
        ("x-docker-endpoints=junk", [(b"X-Docker-Endpoints", b",,,\xff")], True),
        ("expect=junk", [(b"Expect", b"200-ok")], True),
        ("cookie=junk", [(b"Cookie", b"=;;a=\xff; b")], True),
        ("accept-encoding=gzip", [(b"Accept-Encoding", b"gzip, br, *;q=0")], True),
        ("connection=junk", [(b"Connection", b"keep-alive, upgrade, \xff")], True),
        ("upgrade=h2c", [(b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"),
                         (b"HTTP2-Settings", b"AAMAAABkAAQAAP__")], True),
        ("upgrade=websocket", [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")], True),
        ("x-forwarded=junk", [(b"X-Forwarded-For", b"\xff, , ::1"),
                              (b"X-Forwarded-Proto", b"gopher")], True),
        ("header-nul", [(b"X-Nul", b"a\x00b")], False),
        ("header-name-space", [(b"X Bad", b"v")], False),
        ("header-name-colon", [(b"", b"v")], False),
        ("header-no-colon", [(b"JustAName", b"")], False),
    ]


@template(12)
def odd_header(ctx: Context, rng: random.Random) -> Probe:
    label, extra, wellformed = rng.choice(_odd_headers(ctx))
    route = rng.choice(ROUTES)
    method = rng.choice(route.methods)
    fixed = {"repo": ("repo=app", ctx.repo.encode(), True),
             "id": ("id=child", ctx.child.id.encode(), True),
             "tag": ("tag=latest", b"latest", True)}
    target, _labels, _ok = fill(route, ctx, rng, fixed)
    has_host = label.startswith("host=")
    headers = ([] if has_host else [HOST]) + [CLOSE]
    for name, value in extra:
        if name == b"JustAName":
            headers.append((b"JustAName", b""))
        else:
            headers.append((name, value))
    body = b""
    if method in BODY_METHODS:
        body = (route_bodies(route, ctx, _hex(rng, 64)) or [("s", b'"s"')])[0][1]
    payload = request_bytes(method, target, headers, body)
    if label == "header-no-colon":
        payload = payload.replace(b"JustAName: \r\n", b"JustAName\r\n")
    return Probe(f"header {route.name} {method} {label}", method, target, wellformed, payload)


@template(5)
def range_header(ctx: Context, rng: random.Random) -> Probe:
    """R3 with odd Range headers, on the pushed layers and others."""
    values = [b"bytes=-5", b"bytes=9999999999999999999-", b"bytes=a-b", b"bytes=0-0",
              b"bytes=5-1", b"bytes=0-1,4-5", b"items=0-5", b"bytes=", b"bytes=-",
              b"bytes=1-2-3", b" BYTES=1- ", b"bytes=0-99999999999999999999999",
              b"bytes=" + b"9" * 5000 + b"-", b"bytes=0-" + b"9" * 5000,
              b"bytes=\xd9\xa3-", b"bytes=\xff", b"bytes=1" + b"0" * 100 + b"-",
              b"bytes=100000-", b"bytes=0-" + b",0-" * 2000]
    value = rng.choice(values)
    image = rng.choice([ctx.child.id, ctx.parent.id, _hex(rng, 64)])
    method = rng.choice(["GET", "GET", "HEAD"])
    target = f"/v1/images/{image}/layer".encode()
    label = value[:40].decode("latin-1")
    if len(value) > 40:
        label += f"...({len(value)})"
    which = "pushed" if image in (ctx.child.id, ctx.parent.id) else "fresh"
    headers = [HOST, CLOSE, (b"Range", value)]
    if rng.random() < 0.2:
        headers.append((b"If-Modified-Since", b"junk"))
    return Probe(f"range {method} {which} {label!r}", method, target, True,
                 request_bytes(method, target, headers))


def _fresh_target(route: Route, ctx: Context, rng: random.Random) -> tuple[str, bytes]:
    """The method and a target of a body route, naming the app repository and a fresh id."""
    fixed = {"repo": ("repo=app", ctx.repo.encode(), True),
             "id": ("id=fresh", _hex(rng, 64).encode(), True),
             "tag": ("tag=v1", b"v1", True)}
    target, _labels, _ok = fill(route, ctx, rng, fixed)
    return ("POST" if route.body == "users" else "PUT"), target


@template(6)
def framing(ctx: Context, rng: random.Random) -> Probe:
    """Content-Length and Transfer-Encoding trouble on the body routes."""
    route = rng.choice(BODY_ROUTES + [ROUTES[3], ROUTES[4]])
    method, target = _fresh_target(route, ctx, rng)
    body = b'{"access": "private"}'
    cases: list[tuple[str, list[tuple[bytes, bytes]], bytes, bool]] = [
        ("cl-repeated-same", [(b"Content-Length", b"21"), (b"Content-Length", b"21")], body,
         True),
        ("cl-repeated-differ", [(b"Content-Length", b"21"), (b"Content-Length", b"5")], body,
         False),
        ("cl-list", [(b"Content-Length", b"21, 21")], body, False),
        ("cl-abc", [(b"Content-Length", b"abc")], body, False),
        ("cl-negative", [(b"Content-Length", b"-1")], body, False),
        ("cl-plus", [(b"Content-Length", b"+21")], body, False),
        ("cl-hex", [(b"Content-Length", b"0x15")], body, False),
        ("cl-huge", [(b"Content-Length", b"99999999999999999999999")], b"", True),
        ("cl-5000-digits", [(b"Content-Length", b"1" * 5000)], b"", True),
        ("cl-empty", [(b"Content-Length", b"")], body, False),
        ("cl-space", [(b"Content-Length", b" 21 ")], body, True),
        ("cl-short", [(b"Content-Length", b"5")], body, False),
        ("cl-zero", [(b"Content-Length", b"0")], b"", True),
        ("te-chunked-bad-size", [(b"Transfer-Encoding", b"chunked")], b"zz\r\nabc\r\n0\r\n\r\n",
         False),
        ("te-chunked-negative", [(b"Transfer-Encoding", b"chunked")], b"-5\r\nabc\r\n0\r\n\r\n",
         False),
        ("te-chunked-huge-size", [(b"Transfer-Encoding", b"chunked")],
         b"ffffffffffffffffffffffff\r\nabc\r\n", False),
        ("te-chunked-no-crlf", [(b"Transfer-Encoding", b"chunked")], b"3\r\nabcX0\r\n\r\n",
         False),
        ("te-chunked-ext", [(b"Transfer-Encoding", b"chunked")],
         b'15;a="b";;;\r\n{"access": "private"}\r\n0\r\n\r\n', True),
        ("te-chunked-trailer", [(b"Transfer-Encoding", b"chunked")],
         b'15\r\n{"access": "private"}\r\n0\r\nX-Trailer: \xff\r\n\r\n', True),
        ("te-chunked-long-ext", [(b"Transfer-Encoding", b"chunked")],
         b"15;" + b"e" * 70000 + b'\r\n{"access": "private"}\r\n0\r\n\r\n', False),
        ("te-chunked-and-cl", [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")],
         b'15\r\n{"access": "private"}\r\n0\r\n\r\n', False),
        ("te-chunked-twice", [(b"Transfer-Encoding", b"chunked, chunked")],
         b'15\r\n{"access": "private"}\r\n0\r\n\r\n', False),
        ("te-gzip", [(b"Transfer-Encoding", b"gzip")], body, False),
        ("te-identity", [(b"Transfer-Encoding", b"identity"), (b"Content-Length", b"21")], body,
         False),
        ("te-Chunked-case", [(b"Transfer-Encoding", b"Chunked")],
         b'15\r\n{"access": "private"}\r\n0\r\n\r\n', True),
        ("te-chunked-many-tiny", [(b"Transfer-Encoding", b"chunked")],
         b"".join(b"1\r\n%c\r\n" % c for c in b" " * 20000 + body) + b"0\r\n\r\n", True),
    ]
    label, headers, data, wellformed = rng.choice(cases)
    payload = request_bytes(method, target, [HOST, CLOSE] + headers, data, length=False)
    return Probe(f"framing {route.name} {method} {label}", method, target, wellformed, payload)


@template(3)
def big_body(ctx: Context, rng: random.Random) -> Probe:
    """Bodies over the cap (announced and sent, chunked), announced and never sent."""
    route = rng.choice(BODY_ROUTES)
    method, target = _fresh_target(route, ctx, rng)
    kind = rng.choice(["announced-sent", "chunked-sent", "announced-1GiB", "announced-5000-digits",
                       "not-sent-close", "partly-sent-close", "exactly-cap",
                       "expect-big", "expect-small", "expect-layer-big"])
    headers = [HOST, CLOSE]
    over = BODY_LIMIT + 64 * 1024
    if kind == "announced-sent":
        payload = request_bytes(method, target, headers + [(b"Content-Length", b"%d" % over)],
                                length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload,
                     tail=over)
    if kind == "chunked-sent":
        payload = request_bytes(method, target, headers + [(b"Transfer-Encoding", b"chunked")],
                                length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload,
                     tail=over, tail_chunked=True)
    if kind == "announced-1GiB":
        payload = request_bytes(method, target, headers + [(b"Content-Length", b"%d" % (1 << 30))],
                                length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload)
    if kind == "announced-5000-digits":
        payload = request_bytes(method, target, headers + [(b"Content-Length", b"7" * 5000)],
                                length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload)
    if kind == "not-sent-close":
        payload = request_bytes(method, target, headers + [(b"Content-Length", b"1000")],
                                length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload,
                     abandon=True)
    if kind == "partly-sent-close":
        payload = request_bytes(method, target, headers + [(b"Content-Length", b"1000")],
                                b'{"id": "', length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload,
                     abandon=True)
    if kind == "exactly-cap":
        payload = request_bytes(method, target, headers + [(b"Content-Length", b"%d" % BODY_LIMIT)],
                                length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload,
                     tail=BODY_LIMIT)
    if kind == "expect-big":
        payload = request_bytes(method, target, headers + [
            (b"Expect", b"100-continue"), (b"Content-Length", b"%d" % (50 * MIB))], length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload)
    if kind == "expect-small":
        body = b'{"access": "public"}'
        payload = request_bytes(method, target, headers + [
            (b"Expect", b"100-continue"), (b"Content-Length", b"%d" % len(body))], length=False)
        return Probe(f"big {route.name} {method} {kind}", method, target, True, payload,
                     after_continue=body)
    # A layer upload announcing a large body: refused before it is sent unless the image is
    # in progress (then the client, having seen 100 Continue, gives up).
    image = rng.choice([ctx.child.id, _hex(rng, 64), "zz"])
    target = f"/v1/images/{image}/layer".encode()
    payload = request_bytes("PUT", target, headers + [
        (b"Expect", b"100-continue"), (b"Content-Length", b"%d" % (50 * MIB))], length=False)
    which = "pushed" if image == ctx.child.id else "other"
    return Probe(f"big R4 PUT {kind} {which}", "PUT", target, True, payload)


@template(6)
def request_line(ctx: Context, rng: random.Random) -> Probe:
    """Malformed request lines, old protocol versions, odd methods."""
    child = ctx.child.id.encode()
    cases: list[tuple[str, bytes, bool]] = [
        ("method-only", b"GET\r\n\r\n", False),
        ("no-version", b"GET /v1/_ping\r\n\r\n", False),
        ("http0.9", b"GET /v1/_ping\r\n", False),
        ("extra-token", b"GET /v1/_ping HTTP/1.1 extra\r\nHost: h\r\n\r\n", False),
        ("double-space", b"GET  /v1/_ping HTTP/1.1\r\nHost: h\r\n\r\n", False),
        ("http/1.0", b"GET /v1/_ping HTTP/1.0\r\n\r\n", True),
        ("http/1.0-keepalive",
         b"GET /v1/images/" + child + b"/json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        ("http/1.0-put", b"PUT /v1/users/x HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", True),
        ("http/2.0", b"GET /v1/_ping HTTP/2.0\r\nHost: h\r\n\r\n", False),
        ("http/9.9", b"GET /v1/_ping HTTP/9.9\r\nHost: h\r\n\r\n", False),
        ("http/1.10", b"GET /v1/_ping HTTP/1.10\r\nHost: h\r\n\r\n", False),
        ("lower-version", b"GET /v1/_ping http/1.1\r\nHost: h\r\n\r\n", False),
        ("no-slash-version", b"GET /v1/_ping HTTP1.1\r\nHost: h\r\n\r\n", False),
        ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
        ("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, False),
        ("binary", bytes(range(256)) * 4, False),
        ("lf-only", b"GET /v1/_ping HTTP/1.1\nHost: h\n\n", False),
        ("leading-crlf", b"\r\n\r\nGET /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
         False),
        ("long-line-64k", b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: h\r\n\r\n", True),
        ("obs-fold", b"GET /v1/_ping HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", False),
        ("header-space-before-colon", b"GET /v1/_ping HTTP/1.1\r\nHost : h\r\n\r\n", False),
        ("only-crlf", b"\r\n\r\n\r\n\r\n", False),
        ("connect-close", b"", False),
        ("nul-line", b"\x00\x00\x00\r\n\r\n", False),
        ("method FOO", b"FOO /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", True),
        ("method TRACE", b"TRACE /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
         True),
        ("method CONNECT",
         b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\r\n",
         True),
        ("method get", b"get /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", True),
        ("method head", b"head /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", True),
        ("method OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", True),
        ("method long", b"X" * 5000 + b" / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
         True),
        ("method unicode", "GÉT / HTTP/1.1\r\nHost: h\r\n\r\n".encode(), False),
        ("method PUT no length",
         b"PUT /v1/repositories/hostile/app/properties HTTP/1.1\r\nHost: h\r\n"
         b"Connection: close\r\n\r\n", True),
        ("method DELETE with body",
         b"DELETE /v1/repositories/none/x/tags/v HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
         b"Content-Length: 5\r\n\r\nhello", True),
        ("method GET with body",
         b"GET /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
         b"Content-Length: 5\r\n\r\nhello", True),
        ("method HEAD with body",
         b"HEAD /v1/images/" + child + b"/layer HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
         b"Content-Length: 5\r\n\r\nhello", True),
    ]
    label, payload, wellformed = rng.choice(cases)
    if label == "connect-close":
        return Probe(f"line {label}", "", b"", False, b"", abandon=True)
    first = payload.split(b"\r\n", 1)[0]
    parts = first.split(b" ")
    method = parts[0].decode("latin-1") if parts else ""
    target = parts[1] if len(parts) > 1 else b""
    return Probe(f"line {label}", method, target, wellformed, payload)


@template(4)
def pipelined(ctx: Context, rng: random.Random) -> Probe:
    """A hostile request then C{GET /v1/_ping} on the same connection: no desync."""
    route = rng.choice(BODY_ROUTES)
    method, target = _fresh_target(route, ctx, rng)
    label, body = rng.choice(generic_bodies()[:20] + [("smuggled-request",
                              b"GET /v1/users HTTP/1.1\r\nHost: h\r\n\r\n")])
    chunked = rng.random() < 0.5
    if chunked:
        first = request_bytes(method, target, [HOST, (b"Transfer-Encoding", b"chunked")],
                              b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n", length=False)
    else:
        first = request_bytes(method, target, [HOST], body)
    ping = b"GET /v1/_ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    return Probe(f"pipelined {route.name} {method} {label}" + (" chunked" if chunked else ""),
                 method, target, True, first + ping, answers=2)


def probe(ctx: Context, seed: int, index: int) -> Probe:
    """Request C{index} of C{seed}: the same bytes every time."""
    rng = random.Random(f"{seed}:{index}")
    total = sum(weight for weight, _, _ in TEMPLATES)
    roll = rng.uniform(0, total)
    for weight, _name, function in TEMPLATES:
        roll -= weight
        if roll <= 0:
            return function(ctx, rng)
    return TEMPLATES[-1][2](ctx, rng)


def probes(ctx: Context, seed: int, count: int, only: str | None = None
           ) -> Iterator[tuple[int, Probe]]:
    """
    C{count} requests of C{seed} with their index, those whose template contains C{only}
    when given.
    """
    produced = index = 0
    while produced < count and index < count * 200:
        drawn = probe(ctx, seed, index)
        if only is None or only in drawn.template:
            produced += 1
            yield index, drawn
        index += 1


# ---------------------------------------------------------------------------------------
# Sending and reading.


class NoAnswer(Exception):
    """The connection gave no (complete) answer: C{kind} says how."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


@dataclass
class Answer:
    status: int
    reason: bytes
    headers: dict[str, list[bytes]]
    body: bytes

    def header(self, name: str) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class Reader:
    """Reads HTTP answers from a socket, within a deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer("timeout")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except socket.timeout:
            raise NoAnswer("timeout") from None
        except OSError as error:
            raise NoAnswer("reset", str(error)) from None
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _until(self, marker: bytes, limit: int) -> bytes:
        while True:
            at = self.buffer.find(marker)
            if at >= 0:
                line, self.buffer = self.buffer[:at], self.buffer[at + len(marker):]
                return line
            if len(self.buffer) > limit:
                raise NoAnswer("garbage", "answer head too long")
            if not self._more():
                raise NoAnswer("truncated" if self.buffer else "no-answer",
                               repr(self.buffer[:200]))

    def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self._more():
                raise NoAnswer("truncated", f"{len(self.buffer)} of {count} body bytes")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def answer(self, method: str) -> Answer:
        head = self._until(b"\r\n\r\n", MAX_HEAD)
        lines = head.split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") \
                or not status_line[1].isdigit():
            raise NoAnswer("garbage", repr(head[:200]))
        status = int(status_line[1])
        headers: dict[str, list[bytes]] = defaultdict(list)
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise NoAnswer("garbage", f"header line {line[:100]!r}")
            headers[name.strip().decode("latin-1").lower()].append(value.strip())
        answer = Answer(status, status_line[2] if len(status_line) > 2 else b"", dict(headers),
                        b"")
        if method == "HEAD" or status < 200 or status in (204, 304):
            return answer
        if b"chunked" in b",".join(headers.get("transfer-encoding", [])).lower():
            parts = []
            while True:
                size_line = self._until(b"\r\n", 4096)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._until(b"\r\n", 65536):
                        pass
                    break
                parts.append(self._exactly(size))
                self._exactly(2)
            answer.body = b"".join(parts)
        elif "content-length" in headers:
            length = int(headers["content-length"][0])
            if method == "" and length and not self.buffer and not self._more():
                return answer  # the server took the malformed request for a HEAD
            answer.body = self._exactly(length)
        else:
            while self._more():
                pass
            answer.body, self.buffer = self.buffer, b""
        return answer


@dataclass
class Result:
    probe: Probe
    index: int
    #: one per answer expected: an Answer or the kind of NoAnswer
    answers: list[Answer | str]
    seconds: float
    detail: str = ""


def _send_tail(sock: socket.socket, probe: Probe, deadline: float) -> None:
    """The over-size body, in pieces, until it is sent or the server answered or closed."""
    piece = b" " * 65536
    remaining = probe.tail
    pending = b""
    finished = False
    while True:
        if not pending:
            if remaining > 0:
                size = min(len(piece), remaining)
                remaining -= size
                pending = (b"%x\r\n" % size + piece[:size] + b"\r\n") if probe.tail_chunked \
                    else piece[:size]
            elif probe.tail_chunked and not finished:
                pending, finished = b"0\r\n\r\n", True
            else:
                return
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return
        if time.monotonic() > deadline:
            return
        sock.settimeout(1.0)
        try:
            sent = sock.send(pending)
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return
        pending = pending[sent:]


def send(port: int, index: int, probe: Probe, timeout: float,
         malformed_timeout: float = MALFORMED_TIMEOUT) -> Result:
    started = time.monotonic()
    deadline = started + (timeout if probe.wellformed else min(timeout, malformed_timeout))
    answers: list[Answer | str] = []
    detail = ""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as error:
        return Result(probe, index, ["connect-failed"], time.monotonic() - started, str(error))
    try:
        try:
            sock.sendall(probe.payload)
        except OSError:
            pass  # the server answered early and closed, or stopped reading
        if probe.abandon:
            time.sleep(0.02)
            return Result(probe, index, ["abandoned"], time.monotonic() - started)
        if probe.tail:
            _send_tail(sock, probe, deadline)
        reader = Reader(sock, deadline)
        while len(answers) < probe.answers:
            try:
                # What a malformed request meant is the server's guess: its answer is read
                # by its own framing (a body for a "HEAD" it could not parse).
                answer = reader.answer(probe.method if probe.wellformed else "")
            except NoAnswer as error:
                answers.append(error.kind)
                detail = error.detail
                break
            except (ValueError, IndexError) as error:
                answers.append("garbage")
                detail = str(error)
                break
            if 100 <= answer.status < 200:
                if answer.status == 100 and probe.after_continue is not None:
                    try:
                        sock.sendall(probe.after_continue)
                    except OSError:
                        pass
                    probe = _replace_continue(probe)
                    continue
                if answer.status == 100:
                    answers.append("gave-up-after-100")
                    break
                continue
            answers.append(answer)
        if answers and isinstance(answers[-1], Answer):
            # Nothing may follow the last answer (a HEAD body, a second answer).
            reader.deadline = min(deadline, time.monotonic() + TRAILING_WAIT)
            try:
                while reader._more():
                    pass
            except NoAnswer:
                pass
            if reader.buffer:
                detail = f"bytes after the answer: {reader.buffer[:200]!r}"
    finally:
        sock.close()
    return Result(probe, index, answers, time.monotonic() - started, detail)


def _replace_continue(probe: Probe) -> Probe:
    copy = Probe(**{**probe.__dict__})
    copy.after_continue = None
    return copy


# ---------------------------------------------------------------------------------------
# Classifying.

EMPTY_OK_STATUSES = (204, 304, 416)
JSON_TYPE = b"application/json"


def _is_layer_target(target: bytes) -> bool:
    return unquote_to_bytes(target.split(b"?")[0]).rstrip(b"/").endswith(b"/layer")


def json_problem(method: str, target: bytes, answer: Answer) -> str | None:
    """Why C{answer} is not a proper JSON answer of the contract; None when it is."""
    ctype = answer.header("content-type")
    layer = _is_layer_target(target) and method in ("GET", "HEAD") and answer.status in (
        200, 206, 416)
    if answer.status in (200, 206) and layer:
        if ctype != b"application/octet-stream":
            return f"layer answer with Content-Type {ctype!r}"
        return None
    if method == "HEAD" or answer.status in EMPTY_OK_STATUSES or (
            method == "OPTIONS" and answer.status == 200):
        if method == "HEAD" and answer.body:
            return "HEAD answer with a body"
        if answer.body and answer.status in (204, 304):
            return f"{answer.status} with a body"
        if method == "HEAD" and answer.status not in (304,) and ctype is None:
            return "HEAD answer without Content-Type"
        if not answer.body:
            return None
    if not answer.body:
        return "empty body"
    if ctype != JSON_TYPE:
        return f"Content-Type {ctype!r}"
    try:
        value = json.loads(answer.body)
    except ValueError:
        return f"body is not JSON: {answer.body[:120]!r}"
    if answer.status >= 400:
        if not (isinstance(value, dict) and list(value) == ["error"]
                and isinstance(value["error"], str)):
            return f"error body is not {{\"error\": ...}}: {answer.body[:120]!r}"
        if answer.header("cache-control") != b"no-cache":
            return f"error without Cache-Control: no-cache ({answer.header('cache-control')!r})"
    return None


@dataclass
class Finding:
    """One failing template: how often, and the first request that showed it."""

    kind: str
    template: str
    count: int
    index: int
    request: str
    answer: str


@dataclass
class Report:
    workers: int
    requests: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    #: status or outcome by template family (the first word of the template)
    families: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    json_ok: int = 0
    fives: int = 0
    non_json: int = 0
    no_answer_wellformed: int = 0
    non_json_malformed: int = 0
    latencies: list[float] = field(default_factory=list)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    notes: dict[tuple[str, str], Finding] = field(default_factory=dict)
    slow: list[tuple[float, int, str]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    skipped: int = 0

    def add(self, into: dict, kind: str, result: Result, answer: str) -> None:
        key = (kind, result.probe.template)
        if key in into:
            into[key].count += 1
        else:
            into[key] = Finding(kind, result.probe.template, 1, result.index,
                                result.probe.describe(), answer)

    def classify(self, result: Result) -> None:
        self.requests += 1
        self.latencies.append(result.seconds)
        probe = result.probe
        if result.seconds > SLOW_SECONDS:
            self.slow.append((result.seconds, result.index, probe.template))
        family = probe.template.split(" ", 1)[0]
        for position, answer in enumerate(result.answers):
            if position == 0:
                self.families[family][
                    str(answer.status) if isinstance(answer, Answer) else answer] += 1
            method = probe.method if position == 0 else "GET"
            if not probe.wellformed and method == "HEAD" and not isinstance(answer, str) \
                    and answer.body:
                method = ""  # the server did not take it for a HEAD: see send()
            target = probe.target if position == 0 else b"/v1/_ping"
            if isinstance(answer, str):
                self.outcomes[answer] += 1
                if answer in ("abandoned",):
                    continue
                if answer == "timeout" and not probe.wellformed:
                    self.add(self.notes, "malformed request neither answered nor closed",
                             result, f"{result.seconds:.1f} s")
                    continue
                if answer == "gave-up-after-100":
                    continue
                if position > 0:
                    # The first answer closed the connection, or the server dropped the
                    # pipelined request: only a failure when the first said keep-alive.
                    first = result.answers[0]
                    if isinstance(first, Answer) and first.header("connection") != b"close" \
                            and answer != "no-answer":
                        self.no_answer_wellformed += 1
                        self.add(self.findings, f"pipelined ping: {answer}", result,
                                 result.detail)
                    continue
                if probe.wellformed:
                    self.no_answer_wellformed += 1
                    self.add(self.findings, f"no answer ({answer})", result, result.detail)
                continue
            self.outcomes[f"{answer.status // 100}xx"] += 1
            self.statuses[answer.status] += 1
            summary = f"{answer.status} {answer.header('content-type')!r} {answer.body[:300]!r}"
            if position > 0 and (answer.status != 200 or answer.body != b"{}"):
                self.add(self.findings, "pipelined ping answered wrongly (desync)", result,
                         summary)
                continue
            if position == len(result.answers) - 1 and result.detail.startswith("bytes after"):
                self.add(self.findings if probe.wellformed else self.notes,
                         "bytes after the answer", result, summary + " / " + result.detail)
            if answer.status >= 500:
                self.fives += 1
                self.add(self.findings, f"{answer.status}", result, summary)
            problem = json_problem(method, target, answer)
            if problem is None:
                self.json_ok += 1
            elif probe.wellformed:
                self.non_json += 1
                self.add(self.findings, f"non-JSON: {problem}", result, summary)
            else:
                self.non_json_malformed += 1
                self.add(self.notes, f"non-JSON to a malformed request: {problem}", result,
                         summary)

    @property
    def failed(self) -> bool:
        return bool(self.fives or self.non_json or self.no_answer_wellformed or self.tracebacks
                    or self.checks or any(key[0].startswith(("pipelined", "bytes after"))
                                          for key in self.findings))

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    def as_json(self) -> dict:
        return {
            "workers": self.workers, "requests": self.requests, "skipped": self.skipped,
            "seconds": round(self.seconds, 1),
            "outcomes": dict(self.outcomes), "statuses": dict(sorted(self.statuses.items())),
            "families": {k: dict(sorted(v.items())) for k, v in sorted(self.families.items())},
            "json_ok": self.json_ok, "5xx": self.fives, "non_json_wellformed": self.non_json,
            "no_answer_wellformed": self.no_answer_wellformed,
            "non_json_malformed": self.non_json_malformed,
            "latency_s": {"p50": round(self.percentile(0.5), 4),
                          "p99": round(self.percentile(0.99), 4),
                          "max": round(max(self.latencies, default=0.0), 4)},
            "findings": [f.__dict__ for f in self.findings.values()],
            "notes": [f.__dict__ for f in self.notes.values()],
            "slow": [{"seconds": round(s, 2), "index": i, "template": t}
                     for s, i, t in sorted(self.slow, reverse=True)[:50]],
            "tracebacks": self.tracebacks,
            "checks": self.checks,
            "failed": self.failed,
        }


# ---------------------------------------------------------------------------------------
# The server, the push and the checks after the run.


def http(port: int, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Answer:
    payload = request_bytes(method, path.encode(), [HOST, CLOSE] + [
        (k.encode(), v.encode()) for k, v in (headers or {}).items()], body)
    result = send(port, -1, Probe("setup", method, path.encode(), True, payload), 60)
    answer = result.answers[0]
    if not isinstance(answer, Answer):
        raise RuntimeError(f"{method} {path}: {answer} {result.detail}")
    return answer


def push(port: int, ctx: Context) -> None:
    for image in (ctx.parent, ctx.child):
        for method, path, body, headers in (
            ("PUT", f"/v1/images/{image.id}/json", image.json, {}),
            ("PUT", f"/v1/images/{image.id}/layer", image.layer, {}),
            ("PUT", f"/v1/images/{image.id}/checksum", b"",
             {"X-Docker-Checksum-Payload": image.checksum}),
        ):
            answer = http(port, method, path, body, headers)
            if answer.status != 200:
                raise RuntimeError(f"push: {method} {path}: {answer.status} {answer.body!r}")
    listing = json.dumps([{"id": ctx.child.id}, {"id": ctx.parent.id}]).encode()
    for repo in (ctx.repo, ctx.canary):
        for method, path, body, status in (
            ("PUT", f"/v1/repositories/{repo}/", listing, 200),
            ("PUT", f"/v1/repositories/{repo}/tags/latest", json.dumps(ctx.child.id).encode(),
             200),
            ("PUT", f"/v1/repositories/{repo}/images", listing, 204),
        ):
            answer = http(port, method, path, body)
            if answer.status != status:
                raise RuntimeError(f"push: {method} {path}: {answer.status} {answer.body!r}")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under C{root}, by relative path."""
    files = {}
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file():
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


def outside(tmp: Path, storage: Path) -> set[str]:
    """Every path under C{tmp} that is not under C{storage}."""
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")
            if storage not in p.parents and p != storage and "__pycache__" not in p.parts}


def guarded(storage: Path, ctx: Context) -> dict[str, dict[str, bytes]]:
    return {
        "parent": snapshot(storage / "images" / ctx.parent.id),
        "child": snapshot(storage / "images" / ctx.child.id),
        "canary": snapshot(storage / "repositories" / "keep" / "safe"),
    }


def post_checks(port: int, ctx: Context, storage: Path, before: dict[str, dict[str, bytes]]
                ) -> list[str]:
    problems = []
    try:
        ping = http(port, "GET", "/v1/_ping")
        if ping.status != 200 or ping.body != b"{}":
            problems.append(f"GET /v1/_ping after the run: {ping.status} {ping.body!r}")
    except RuntimeError as error:
        problems.append(f"GET /v1/_ping after the run: {error}")
        return problems
    for image in (ctx.parent, ctx.child):
        for suffix, expected in (("json", image.json), ("layer", image.layer)):
            answer = http(port, "GET", f"/v1/images/{image.id}/{suffix}")
            if answer.status != 200 or answer.body != expected:
                problems.append(f"image {image.id[:12]} {suffix}: {answer.status} "
                                f"{answer.body[:100]!r}")
    ancestry = http(port, "GET", f"/v1/images/{ctx.child.id}/ancestry")
    if ancestry.status != 200 or json.loads(ancestry.body or b"null") != [ctx.child.id,
                                                                          ctx.parent.id]:
        problems.append(f"ancestry: {ancestry.status} {ancestry.body[:200]!r}")
    canary = http(port, "GET", f"/v1/repositories/{ctx.canary}/tags")
    if canary.status != 200 or json.loads(canary.body or b"null") != {"latest": ctx.child.id}:
        problems.append(f"{ctx.canary} tags: {canary.status} {canary.body[:200]!r}")
    after = guarded(storage, ctx)
    for name, files in before.items():
        for key, content in files.items():
            if after[name].get(key) != content:
                problems.append(f"{name}: {key} changed or removed on disk")
        for key in set(after[name]) - set(files):
            if name in ("parent", "child") and key in ("_files", "_diff"):
                continue  # R9/R10 caches
            problems.append(f"{name}: new file {key} on disk")
    return problems


def _shorten(text: str) -> str:
    """Long runs of one character (a 5000-digit number) as C{<5000 x '1'>}."""
    return re.sub(r"(.)\1{39,}", lambda m: f"<{len(m.group(0))} x {m.group(1)!r}>", text)


def tracebacks(output: str) -> list[str]:
    """
    Each distinct traceback in the server's output: the log line that carried it, the
    frames in twistreg, the exception; with how often it was seen.  twistreg's log writes
    an event's lines on one line, joined by a literal C{\\n}.
    """
    events: list[list[str]] = []
    lines = output.splitlines()
    for at, line in enumerate(lines):
        if "Traceback" not in line:
            continue
        if "\\n" in line:
            events.append([part.strip() for part in line.split("\\n") if part.strip()])
        else:
            block = [line]
            for text in lines[at + 1:at + 80]:
                if text.strip() and not text.startswith((" ", "\t")):
                    block.append(text.strip())
                    break
                block.append(text.strip())
            events.append([b for b in block if b])
    seen: dict[str, list] = {}
    for parts in events:
        head = _shorten(parts[0])
        where = re.sub(r"^\S+ ", "", head)  # no timestamp
        where = re.sub(r",\d+,", ",N,", where)
        exception = _shorten(parts[-1])
        frames = [f"{p} / {parts[i + 1] if i + 1 < len(parts) else ''}"
                  for i, p in enumerate(parts) if p.startswith("File ") and "/twistreg/" in p]
        if not frames:
            frames = [f"{p} / {parts[i + 1] if i + 1 < len(parts) else ''}"
                      for i, p in enumerate(parts) if p.startswith("File ")][-2:]
        key = re.sub(r"b'[^']*'", "", where)[:80] + exception + (frames[-1] if frames else "")
        if key in seen:
            seen[key][0] += 1
        else:
            seen[key] = [1, head[:400], frames, exception]
    return [f"x{count} {head}\n" + "".join(f"  {frame}\n" for frame in frames) + f"  {exc}"
            for count, head, frames, exc in seen.values()]


def run_server(workers: int, args: argparse.Namespace, ctx: Context, out,
               directory: Path | None = None) -> Report:
    """
    One hostile run against a server with C{workers}, in a new directory under
    C{directory} (the system's temporary directory by default), removed afterwards.
    """
    report = Report(workers)
    tmp = Path(tempfile.mkdtemp(prefix=f"twistreg-hostile-w{workers}-", dir=directory))
    storage = tmp / "storage"
    storage.mkdir()
    server = Server(tmp, storage, workers=workers)
    try:
        server.start(timeout=60)
        if workers:
            server.wait_for_workers(workers, timeout=60)
        push(server.port, ctx)
        before = guarded(storage, ctx)
        around = outside(tmp, storage)
        started = time.monotonic()
        budget_end = started + args.budget
        lock = threading.Lock()
        done = 0

        def one(item: tuple[int, Probe]) -> None:
            nonlocal done
            index, drawn = item
            if time.monotonic() > budget_end:
                with lock:
                    report.skipped += 1
                return
            result = send(server.port, index, drawn, args.timeout, args.malformed_timeout)
            with lock:
                report.classify(result)
                done += 1
                if args.progress and done % 1000 == 0:
                    print(f"  workers={workers}: {done} requests, "
                          f"{time.monotonic() - started:.0f} s", file=out, flush=True)

        with ThreadPoolExecutor(args.threads) as pool:
            for _ in pool.map(one, probes(ctx, args.seed, args.requests, args.only)):
                pass
        report.seconds = time.monotonic() - started
        time.sleep(0.5)  # the last log lines
        report.checks = post_checks(server.port, ctx, storage, before)
        new = outside(tmp, storage) - around
        if new:
            report.checks.append(f"written outside the storage: {sorted(new)[:10]}")
    finally:
        server.stop()
        time.sleep(0.2)
        report.tracebacks = tracebacks(server.text())
        if args.keep_output:
            Path(args.keep_output + f".w{workers}.log").write_text(server.text())
        server.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return report


# ---------------------------------------------------------------------------------------
# Output.


def print_report(report: Report, out) -> None:
    w = report.workers
    print(f"\n== --workers {w}: {report.requests} requests in {report.seconds:.1f} s "
          f"({report.skipped} skipped over budget)", file=out)
    print("   outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())),
          file=out)
    print("   statuses: " + ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items())),
          file=out)
    for family, counts in sorted(report.families.items()):
        print(f"     {family:10s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
              file=out)
    print(f"   JSON ok {report.json_ok}; 5xx {report.fives}; non-JSON to well-formed "
          f"{report.non_json}; no answer to well-formed {report.no_answer_wellformed}; "
          f"non-JSON to malformed {report.non_json_malformed}", file=out)
    print(f"   time to answer: p50 {report.percentile(0.5) * 1000:.1f} ms, p99 "
          f"{report.percentile(0.99) * 1000:.1f} ms, max "
          f"{max(report.latencies, default=0) * 1000:.0f} ms; {len(report.slow)} over "
          f"{SLOW_SECONDS:.0f} s", file=out)
    if report.findings:
        print(f"   FAILURES ({len(report.findings)} distinct):", file=out)
        for f in sorted(report.findings.values(), key=lambda f: (f.kind, f.template)):
            print(f"   - [{f.kind}] x{f.count} {f.template}\n       request #{f.index}: "
                  f"{f.request[:300]}\n       answer: {f.answer[:300]}", file=out)
    if report.notes:
        print(f"   notes ({len(report.notes)} distinct, not failures):", file=out)
        for f in sorted(report.notes.values(), key=lambda f: (f.kind, f.template)):
            print(f"   - [{f.kind}] x{f.count} {f.template}: {f.answer[:160]}", file=out)
    for seconds, index, name in sorted(report.slow, reverse=True)[:10]:
        print(f"   slow: {seconds:.1f} s #{index} {name}", file=out)
    if report.tracebacks:
        print(f"   TRACEBACKS in the server output ({len(report.tracebacks)} distinct):",
              file=out)
        for block in report.tracebacks:
            print("     " + block.replace("\n", "\n     "), file=out)
    for problem in report.checks:
        print(f"   POST-RUN CHECK FAILED: {problem}", file=out)
    print(f"   => {'FAIL' if report.failed else 'ok'}", file=out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT,
                        help="seconds per request")
    parser.add_argument("--malformed-timeout", type=float, default=MALFORMED_TIMEOUT,
                        help="seconds a malformed request may go unanswered")
    parser.add_argument("--budget", type=float, default=RUN_BUDGET,
                        help="seconds of requests per server; later ones are skipped")
    parser.add_argument("--only", help="only the templates whose name contains this")
    parser.add_argument("--show", type=int, metavar="INDEX",
                        help="print request INDEX of the seed and exit")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep-output", metavar="PREFIX",
                        help="write each server's output to PREFIX.w<workers>.log")
    parser.add_argument("--quiet", dest="progress", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = make_context(args.seed)
    if args.show is not None:
        drawn = probe(ctx, args.seed, args.show)
        print(f"{drawn.template} (well-formed: {drawn.wellformed})\n{drawn.describe(2000)}")
        return 0
    out = sys.stdout
    reports = []
    for workers in args.workers:
        try:
            reports.append(run_server(workers, args, ctx, out))
        except (AssertionError, RuntimeError) as error:
            print(f"--workers {workers}: could not run: {error}", file=sys.stderr)
            return 2
        print_report(reports[-1], out)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"seed": args.seed, "requests": args.requests, "threads": args.threads,
             "runs": [r.as_json() for r in reports]}, indent=2, default=str))
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
