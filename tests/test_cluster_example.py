"""
examples/cluster/run.py as a user runs it: SeaweedFS, Redis, PostgreSQL, two nodes and nginx
come up, an image pushed through nginx comes back whole, and a SIGTERM leaves no process and
no directory behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.server import Client
from tests.test_push_pull import make_layer, push_image

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "cluster" / "run.py"
IMAGE = "5c2a2b2c5f0a9d7b8e1f3a4b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9"
READY_TIMEOUT = 60
STOP_TIMEOUT = 60


def lacking() -> list[str]:
    """What the script itself says is missing to run the cluster here."""
    spec = importlib.util.spec_from_file_location("cluster_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.missing()


def process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, start time in ticks) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def family(roots: list[int]) -> set[tuple[int, int]]:
    """The roots and every process under them, each as (pid, start time): a pid reused later
    by another process does not count as a survivor."""
    table = process_table()
    found = {pid for pid in roots if pid in table}
    grew = True
    while grew:
        children = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return {(pid, table[pid][1]) for pid in found}


class Cluster:
    """The script in a child process, its standard output read line by line."""

    def __init__(self, errors: Path) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        with errors.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPT)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=stderr, text=True)
        self.errors = errors
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("Ctrl-C"):
                self.ready.set()
        self.ready.set()

    def output(self) -> str:
        return "".join(self.lines) + self.errors.read_text()

    def field(self, pattern: str) -> str:
        match = re.search(pattern, "".join(self.lines))
        assert match, self.output()
        return match.group(1)

    def stop(self) -> int:
        """SIGTERM, as a service manager sends it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the script did not stop:\n{self.output()}") from None


@pytest.fixture
def cluster(tmp_path):
    reason = "; ".join(lacking())
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the cluster's servers: {reason}")
        pytest.skip(reason)
    running = Cluster(tmp_path / "stderr")
    try:
        assert running.ready.wait(READY_TIMEOUT) and running.process.poll() is None, \
            running.output()
        yield running
    finally:
        running.stop()


def test_push_pull_through_nginx_then_nothing_left(cluster):
    client = Client(int(cluster.field(r"cluster at http://127\.0\.0\.1:(\d+)")))
    directory = cluster.field(r"files in (\S+?)\)")
    pids = [int(pid) for pid in re.findall(r"=(\d+)", cluster.field(r"pids: (.*)"))]
    assert len(pids) == 6 and Path(directory).is_dir()

    image_json = json.dumps({"id": IMAGE}).encode()
    layer = make_layer({"data.bin": os.urandom(3 << 20)})
    push_image(client, IMAGE, image_json, layer)
    r = client.request("PUT", "/v1/repositories/cluster/example/tags/latest",
                       json.dumps(IMAGE).encode())
    assert (r.status, r.body) == (200, b"true")

    assert client.request("GET", "/v1/repositories/cluster/example/tags").json() == {
        "latest": IMAGE}
    r = client.request("GET", f"/v1/images/{IMAGE}/json")
    assert (r.status, r.body) == (200, image_json)
    r = client.request("GET", f"/v1/images/{IMAGE}/layer")
    assert r.status == 200
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(layer).hexdigest()
    # The tag went into PostgreSQL's search index.
    assert client.request("GET", "/v1/search?q=example").json()["num_results"] == 1

    # Workers, nginx's workers, PostgreSQL's backends: everything the servers started.
    processes = family(pids)
    assert len(processes) > len(pids)
    assert cluster.stop() == 0, cluster.output()
    alive = processes & family([pid for pid, _ in processes])
    assert not alive, f"still running: {sorted(alive)}\n{cluster.output()}"
    assert not Path(directory).exists()
    assert cluster.lines[-1] == "stopped\n"
