"""
twistreg inside another Twisted application: examples/embedded_app.py run for real (its own
routes, the registry resource beside them, a second registry as a service, in-process or as a
pool), an image pushed and pulled through each registry, and nothing shared between them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ROOT, Client
from tests.test_push_pull import BASE, CHILD, make_layer, push_image

pytestmark = pytest.mark.integration

_APP = re.compile(r"application serving on 127\.0\.0\.1:(\d+)")
_REGISTRY = re.compile(r"twistreg serving local storage \S+ on 127\.0\.0\.1:(\d+)")


class Example:
    """examples/embedded_app.py in a child process of its own session."""

    def __init__(self, tmp: Path, workers: int) -> None:
        self.storage = tmp / "app-registry"
        self.second_storage = tmp / "second-registry"
        self._workers = workers
        self.output: list[str] = []
        self._changed = threading.Condition()
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "embedded_app.py"), "--port", "0",
             "--storage", str(self.storage), "--registry-port", "0",
             "--registry-storage", str(self.second_storage), "--workers", str(workers)],
            cwd=tmp, env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self.output.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern, timeout: float = 30) -> re.Match:
        def found() -> re.Match | None:
            return next(filter(None, map(pattern.search, self.output)), None)

        with self._changed:
            if not self._changed.wait_for(found, timeout):
                raise AssertionError("not in the output:\n" + "".join(self.output))
            return found()

    def kill(self) -> None:
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()


@pytest.fixture(params=[0, 1], ids=["service-in-process", "service-pool"])
def example(request, tmp_path) -> Iterator[Example]:
    running = Example(tmp_path, request.param)
    try:
        if request.param:
            running.wait_for(re.compile(r"worker \d+ ready"))
        yield running
    finally:
        running.kill()


def _pull(client: Client, image_id: str) -> bytes:
    r = client.request("GET", f"/v1/images/{image_id}/layer")
    assert r.status == 200
    return r.body


def test_an_application_embeds_two_registries(example: Example) -> None:
    app = Client(int(example.wait_for(_APP).group(1)))
    second = Client(int(example.wait_for(_REGISTRY).group(1)))

    r = app.request("GET", "/app/hello")
    assert (r.status, r.json()) == (200, {"hello": "from the application"})
    r = app.request("GET", "/v1/_ping")
    assert (r.status, r.headers["X-Docker-Registry-Standalone"]) == (200, "True")

    # One image through the application's own Site, another through the service.
    base_layer = make_layer({"etc/base.txt": b"base\n" * 10000})
    child_layer = make_layer({"etc/child.txt": b"child\n"})
    push_image(app, BASE, json.dumps({"id": BASE}).encode(), base_layer)
    push_image(second, CHILD, json.dumps({"id": CHILD}).encode(), child_layer)
    for client, image_id in ((app, BASE), (second, CHILD)):
        r = client.request("PUT", "/v1/repositories/foo/bar/tags/latest",
                           json.dumps(image_id).encode())
        assert (r.status, r.body) == (200, b"true")

    assert _pull(app, BASE) == base_layer
    assert _pull(second, CHILD) == child_layer
    assert app.request("GET", "/v1/repositories/foo/bar/tags/latest").json() == BASE
    assert second.request("GET", "/v1/repositories/foo/bar/tags/latest").json() == CHILD
    # Neither sees the other's images.
    assert app.request("GET", f"/v1/images/{CHILD}/json").status == 404
    assert second.request("GET", f"/v1/images/{BASE}/json").status == 404
    assert sorted(p.name for p in (example.storage / "images").iterdir()) == [BASE]
    assert sorted(p.name for p in (example.second_storage / "images").iterdir()) == [CHILD]


def test_importing_twistreg_starts_nothing(tmp_path: Path) -> None:
    """An application that chose its own reactor can import twistreg after it."""
    script = textwrap.dedent("""
        import threading
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
        import twistreg.embed, twistreg.service, twistreg.web.wsgi
        from twisted.internet import reactor
        print(type(reactor).__name__, reactor.running, threading.active_count())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == "AsyncioSelectorReactor False 1\n"
    assert list(tmp_path.iterdir()) == []
