"""
Hostile requests (bench/hostile.py): a bounded run against a real server, and the nastiest
cases one by one in memory.

Every answer to a well-formed request is JSON with the JSON headers (docs/api.md),
never a 5xx, and nothing a client sends puts a traceback in the log.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

from tests.memory import STANDALONE, MemoryRegistry

ROOT = Path(__file__).resolve().parent.parent


def _load_hostile():
    name = "twistreg_bench_hostile"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "hostile.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


hostile = _load_hostile()

#: Five thousand digits: past Python's limit for int() of a string (4300 by default).
DIGITS = "1" * 5000


@pytest.mark.integration
def test_a_hostile_run_gets_only_json_answers_and_no_traceback(tmp_path: Path) -> None:
    """1,000 seeded hostile requests to C{--workers 0}; well under a minute on 2 loaded cores."""
    args = hostile.parse_args([
        "--requests", "1000", "--seed", "7", "--threads", "6", "--timeout", "15",
        "--malformed-timeout", "2", "--budget", "30", "--quiet",
    ])
    ctx = hostile.make_context(args.seed)
    report = hostile.run_server(0, args, ctx, io.StringIO(), directory=tmp_path)
    out = io.StringIO()
    hostile.print_report(report, out)
    text = out.getvalue()
    sent, fives, non_json = report.requests, report.fives, report.non_json
    assert sent + report.skipped == 1000, text
    assert sent >= 500, text
    assert fives == 0, text
    assert non_json == 0, text
    assert len(report.tracebacks) == 0, text
    assert len(report.checks) == 0, text
    failed = report.failed  # no answer to a well-formed request, desync, bytes after answers
    assert not failed, text


# In memory: the cases the run found, and the ones that must stay fixed.


@pytest.fixture
def registry(tmp_path: Path):
    running = MemoryRegistry(tmp_path)
    yield running
    running.close()


def failures(registry: MemoryRegistry) -> list[str]:
    """Log events that carry a traceback."""
    return [str(event.get("log_format") or event.get("why") or event)[:300]
            for event in registry.log_events
            if event.get("log_failure") is not None or event.get("isError")]


def assert_json_error(response, *statuses: int) -> dict:
    assert response.status in statuses, response
    assert response.headers["Content-Type"] == "application/json", response
    body = response.json()
    assert isinstance(body, dict) and list(body) == ["error"], response
    assert isinstance(body["error"], str)
    return body


def push(registry: MemoryRegistry) -> object:
    image = hostile.make_context(1).parent
    for path, body, headers in (
        (f"/v1/images/{image.id}/json", image.json, {}),
        (f"/v1/images/{image.id}/layer", image.layer, {}),
        (f"/v1/images/{image.id}/checksum", b"", {"X-Docker-Checksum-Payload": image.checksum}),
    ):
        assert registry.request("PUT", path, body, headers).status == 200
    return image


@pytest.mark.parametrize("query", [f"q=a&n={DIGITS}", f"q=a&n=5&page={DIGITS}"])
def test_search_paging_beyond_int_digits_is_answered(tmp_path: Path, query: str) -> None:
    # n above 100 is invalid; a page that large is past the end (or refused as invalid).
    searching = MemoryRegistry(tmp_path, STANDALONE + "  search_backend: sqlite\n")
    searching.thread_wait = 2
    try:
        response = searching.request("GET", f"/v1/search?{query}")
        if "page=" in query and response.status == 200:
            assert response.json()["results"] == []
        else:
            assert assert_json_error(response, 400) == {"error": "Invalid paging parameters"}
        assert failures(searching) == []
    finally:
        searching.close()


def test_range_start_beyond_int_digits_is_unsatisfiable(registry) -> None:
    image = push(registry)
    response = registry.request("GET", f"/v1/images/{image.id}/layer",
                                headers={"Range": f"bytes={DIGITS}-"})
    assert response.status == 416, response
    assert response.headers["Content-Range"] == f"bytes */{len(image.layer)}"
    assert failures(registry) == []


def test_range_end_beyond_int_digits_is_clamped(registry) -> None:
    image = push(registry)
    for method in ("GET", "HEAD"):
        response = registry.request(method, f"/v1/images/{image.id}/layer",
                                    headers={"Range": f"bytes=0-{DIGITS}"})
        assert response.status == 206, response
        size = len(image.layer)
        assert response.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
    assert failures(registry) == []


def test_content_length_beyond_int_digits_is_refused_in_json(registry) -> None:
    response = registry.request("PUT", "/v1/repositories/foo/bar/properties",
                                headers=[("Content-Length", "7" * 5000)])
    assert_json_error(response, 400, 413)
    assert failures(registry) == []


def test_a_host_header_that_is_not_utf8_is_answered_in_json(registry) -> None:
    response = registry.request("GET", "/v1/repositories/foo/bar/tags",
                                headers=[("Host", b"h\xe9te")])
    if response.status >= 400:
        assert_json_error(response, response.status)
    else:
        assert response.headers["Content-Type"] == "application/json"
    assert failures(registry) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_the_asterisk_target_is_answered_in_json(registry, method: str) -> None:
    response = registry.request(method, b"*", b"{}" if method == "PUT" else None)
    assert_json_error(response, 400, 404, 405)


@pytest.mark.parametrize("size", [20_000, 100_000])
def test_an_overlong_header_line_gets_a_json_answer(registry, size: int) -> None:
    registry.thread_wait = 0  # nothing runs in a thread: no answer is no answer
    response = registry.request("GET", "/v1/_ping", headers={"X-Long": "a" * size})
    assert_json_error(response, 400, 431)


def test_an_early_answer_is_the_only_answer_when_the_chunks_go_wrong(registry) -> None:
    # The layer PUT of an unknown image is answered as its body starts; the broken chunk
    # that follows must not add a second answer (tests.memory refuses bytes after one).
    raw = (b"PUT /v1/images/" + b"ab" * 32 + b"/layer HTTP/1.1\r\nHost: r\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n")
    response = registry._exchange(raw, "PUT", len(raw))
    assert assert_json_error(response, 404) == {"error": "Image not found"}


# Guards: hostile bodies that get their contract answer today.

NEST = 100_000
BODY_CASES = [
    ("PUT", "/v1/images/{fresh}/json", b"[" * NEST + b"]" * NEST, "Invalid JSON"),
    ("PUT", "/v1/images/{fresh}/json", b'{"a":' * NEST + b"1" + b"}" * NEST, "Invalid JSON"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": "{fresh}", "x": ' + b"[" * 300 + b"]" * 300
     + b"}", "Invalid JSON"),
    ("PUT", "/v1/images/{fresh}/json", '{"id": "x"}'.encode("utf-16"), "Invalid JSON"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": "{fresh}", "parent": "\\ud800"}',
     "Image depends on a non existing parent"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": "{fresh}", "parent": ["{parent}"]}',
     "Image depends on a non existing parent"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": "{fresh}", "parent": {"x": 1}}',
     "Image depends on a non existing parent"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": 1e99999}', "Invalid JSON"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": ' + DIGITS.encode() + b"}", "Invalid JSON"),
    ("PUT", "/v1/images/{fresh}/json", b'{"id": null}', "JSON data contains invalid id"),
    ("PUT", "/v1/repositories/foo/bar/tags/v1", b"[" * NEST + b"]" * NEST, "Invalid data"),
    ("PUT", "/v1/repositories/foo/bar/tags/v1", b'"\\ud800"', "Image not found"),
    ("PUT", "/v1/repositories/foo/bar/tags/v1", b'"\\u0000"', "Image not found"),
    ("PUT", "/v1/repositories/foo/bar/tags/v1", b'"' + b"a" * 100_000 + b'"', "Image not found"),
    ("PUT", "/v1/repositories/foo/bar/tags/v1", b'"\xff"', "Invalid data"),
    ("PUT", "/v1/repositories/foo/bar/properties", b'{"a":' * NEST + b"1" + b"}" * NEST,
     "Invalid data"),
    ("PUT", "/v1/repositories/foo/bar/properties", b'{"access": "\\ud800"}', "Invalid data"),
    ("POST", "/v1/users", b"[" * NEST + b"]" * NEST, "Error Decoding JSON"),
    ("POST", "/v1/users", DIGITS.encode(), "Error Decoding JSON"),
    ("POST", "/v1/users", b"\x00", "Error Decoding JSON"),
    ("PUT", "/v1/repositories/foo/bar/images", b"[" * NEST + b"]" * NEST, "Error Decoding JSON"),
    ("PUT", "/v1/repositories/foo/bar/images", b'[{"id": "\\ud800"}]', None),
    ("PUT", "/v1/repositories/foo/bar/", b'[{"id": 5}]', "Invalid data"),
    ("PUT", "/v1/repositories/foo/bar/", b"\xef\xbb\xbf[]", "Error Decoding JSON"),
]


@pytest.mark.parametrize(("method", "path", "body", "message"), BODY_CASES,
                         ids=[f"{i}-{case[1].split('/')[-1] or case[1]}"
                              for i, case in enumerate(BODY_CASES)])
def test_hostile_bodies_get_their_contract_answer(registry, method: str, path: str,
                                                  body: bytes, message: str | None) -> None:
    parent = push(registry)
    fresh = "f0" * 32
    path = path.replace("{fresh}", fresh)
    body = body.replace(b"{fresh}", fresh.encode()).replace(b"{parent}", parent.id.encode())
    response = registry.request(method, path, body, {"Content-Type": "application/json"})
    if message is None:
        # Stored: a lone surrogate is a string, and is sent back as the client wrote it.
        assert response.status in (200, 204), response
    else:
        assert json.loads(response.body) == {"error": message}, response
        assert response.headers["Content-Type"] == "application/json"
    assert failures(registry) == []
