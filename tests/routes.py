"""
Helpers for the route tests (tests/test_routes_*.py, tests/test_routing.py): one registry per
module (in memory, or a real server for the integration tests), requests that set up images
and repositories, and assertions on the header sets and error bodies of docs/api.md

Every helper takes either kind: anything with C{request(method, path, body, headers)}
returning a L{Response}.
"""

from __future__ import annotations

import email.utils
import io
import json
import os
import secrets
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

from tests.backends import LocalTree, S3Tree
from tests.memory import STANDALONE, MemoryRegistry
from tests.server import Response, Server
from twistreg.checksums import payload_checksum

#: What the helpers talk to: a registry in memory or a real server.
Registry = Union[MemoryRegistry, Server]

CACHE_CONTROL = "public, max-age=31536000"
EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
YEAR = 31536000

#: The answer of R16 and R17 when no metadata is stored, byte for byte.
DEFAULT_METADATA = (
    b'{"arch": "amd64", "docker_go_version": null, "docker_version": null, '
    b'"kernel": null, "last_update": null, "os": "linux"}'
)
FORBIDDEN_HEADERS = ("X-Docker-Registry-Version", "ETag")


#: A time zone far from UTC (POSIX form, no tzdata needed): times that should be UTC but are
#: computed in local time are 5.5 hours off.
FAR_TZ = "IST-5:30"


@contextmanager
def far_time_zone() -> Iterator[None]:
    """This process in L{FAR_TZ} meanwhile: local time is far from UTC."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = FAR_TZ
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def module_registry(tmp_path_factory, config: str = STANDALONE) -> Iterator[MemoryRegistry]:
    """
    A registry in memory over its own storage for a whole test module (C{config} the text of
    its config file); tests sharing it use distinct image ids and repository names.  The
    process is in L{FAR_TZ} meanwhile, so dates computed in local time would show.
    """
    with far_time_zone():
        registry = MemoryRegistry(tmp_path_factory.mktemp("registry"), config)
        try:
            yield registry
        finally:
            registry.close()


def start_module_server(tmp: Path, backend: LocalTree | S3Tree) -> Iterator[Server]:
    """
    A standalone registry over its own storage for a whole test module; tests sharing it use
    distinct image ids and repository names.  It runs in L{FAR_TZ}.
    """
    running = backend.server(tmp, env={"TZ": FAR_TZ}).start()
    try:
        yield running
    finally:
        running.stop()


def new_id(length: int = 64) -> str:
    """A fresh image id."""
    return secrets.token_hex(length // 2)


def new_name(prefix: str = "r") -> str:
    """A fresh repository component."""
    return f"{prefix}{secrets.token_hex(4)}"


def image_json(image_id: str, parent: str | None = None) -> bytes:
    data = {"id": image_id}
    if parent:
        data["parent"] = parent
    return json.dumps(data).encode()


def make_tar(*members: tuple[str, bytes | None], mode: str = "w") -> bytes:
    """A tar archive: C{(name, data)} pairs, C{data} None for a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode, format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1400000000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# Requests -------------------------------------------------------------------------------------

def put_json(server: Registry, image_id: str, body: bytes, headers: dict | None = None) -> Response:
    return server.request("PUT", f"/v1/images/{image_id}/json", body, headers)


def put_layer(server: Registry, image_id: str, layer: bytes) -> Response:
    return server.request("PUT", f"/v1/images/{image_id}/layer", layer,
                          {"Content-Type": "application/octet-stream"})


def put_checksum(server: Registry, image_id: str, value: str | None) -> Response:
    headers = {} if value is None else {"X-Docker-Checksum-Payload": value}
    return server.request("PUT", f"/v1/images/{image_id}/checksum", headers=headers)


def push(server: Registry, image_id: str, layer: bytes | None = b"",
         parent: str | None = None, body: bytes | None = None, complete: bool = True) -> bytes:
    """
    Upload an image: json, then the layer (unless None), then the checksum (when C{complete}).

    @return: the image json as stored.
    """
    body = image_json(image_id, parent) if body is None else body
    r = put_json(server, image_id, body)
    assert (r.status, r.body) == (200, b"true"), r
    if layer is not None:
        r = put_layer(server, image_id, layer)
        assert (r.status, r.body) == (200, b"true"), r
        if complete:
            r = put_checksum(server, image_id, payload_checksum(body, layer))
            assert (r.status, r.body) == (200, b"true"), r
    return body


def put_tag(server: Registry, repository: str, tag: str, image_id: str,
            headers: dict | None = None) -> Response:
    return server.request("PUT", f"/v1/repositories/{repository}/tags/{tag}",
                          json.dumps(image_id).encode(), headers)


def write_files(root: Path, files: dict[str, bytes | str]) -> None:
    """Put files straight into the storage tree, as 0.9.1 (or a crash) would have left them."""
    for key, content in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


# Assertions -----------------------------------------------------------------------------------

def _no_forbidden(r: Response) -> None:
    for name in FORBIDDEN_HEADERS:
        assert name not in r.headers, (name, r)


def assert_json_headers(r: Response, length: int | None) -> None:
    """§2.2 JSON answer headers; C{length} None when Content-Length must be absent."""
    assert r.headers["Content-Type"] == "application/json", r.headers
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["Pragma"] == "no-cache"
    assert r.headers["Expires"] == "-1"
    assert r.headers.get_all("Content-Length") == (None if length is None else [str(length)])
    assert "Last-Modified" not in r.headers
    _no_forbidden(r)


def assert_json(r: Response, status: int, body: bytes, head: bool = False) -> None:
    """
    A generated JSON answer: status, exact body, JSON headers with its Content-Length.

    @param head: the answer to a HEAD: the same headers, no body.
    """
    assert (r.status, r.body) == (status, b"" if head else body), r
    assert_json_headers(r, None if status == 204 else len(body))


def assert_error(r: Response, status: int, message: str, head: bool = False) -> None:
    """A contract error: C{{"error": message}} with the JSON headers."""
    assert_json(r, status, json.dumps({"error": message}).encode(), head)


def assert_cache_headers(r: Response, last_modified: bool = True) -> None:
    """
    The one-year cache headers (§2.2): no Pragma, Expires a year from now in GMT: from the
    registry clock's time exactly for an answer from memory, within two minutes of this
    machine's time for a real server's.

    @param last_modified: whether C{Last-Modified} is required (a 304 may omit it).
    """
    assert r.headers["Cache-Control"] == CACHE_CONTROL
    assert "Pragma" not in r.headers
    if last_modified or "Last-Modified" in r.headers:
        assert r.headers["Last-Modified"] == EPOCH
    expires = r.headers["Expires"]
    assert expires.endswith(" GMT") and expires == email.utils.formatdate(
        email.utils.parsedate_to_datetime(expires).timestamp(), usegmt=True
    ), expires
    now = getattr(r, "now", None)
    if now is not None:
        assert expires == email.utils.formatdate(now + YEAR, usegmt=True), (expires, now)
    else:
        delta = email.utils.parsedate_to_datetime(expires).timestamp() - time.time()
        assert YEAR - 120 < delta < YEAR + 120, expires
    _no_forbidden(r)


def assert_cacheable(r: Response, status: int, body: bytes, content_type: str) -> None:
    """A 200/206 answer of a cacheable GET."""
    assert (r.status, r.body) == (status, body), r
    assert r.headers["Content-Type"] == content_type
    assert r.headers["Content-Length"] == str(len(body))
    assert_cache_headers(r)


def assert_not_modified(r: Response) -> None:
    """The 304 of §4.1: no body, the cache headers."""
    assert (r.status, r.body) == (304, b""), r
    assert r.headers.get("Content-Length") in (None, "0")
    assert_cache_headers(r, last_modified=False)
