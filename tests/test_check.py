"""C{python -m twistreg check}: what it finds in a tree both protocols wrote, and repair."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.memory import MemoryRegistry
from tests.server import ROOT
from tests.test_bridge_facts import done, storage_options
from tests.test_bridge_v1_to_v2 import BASE, BASE_LAYER, CHILD, EMPTY_LAYER, push_v1, tag_v1
from tests.test_bridge_v2_to_v1 import LAYERS, NAME, push_v2
from tests.threads import InlineThreadsReactor
from twistreg.check import CORRUPT, ORPHANED, QUARANTINE, TEMPORARY, TORN, check
from twistreg.storage.local import LocalStorage
from twistreg.walking import Silent


@pytest.fixture
def tree(tmp_path) -> Path:
    """A tree with V1 and V2 images, their views made both ways."""
    registry = MemoryRegistry(tmp_path)
    push_v1(registry, BASE, BASE_LAYER)
    push_v1(registry, CHILD, EMPTY_LAYER, parent=BASE, command="ENV A=b")
    tag_v1(registry, "old", CHILD)
    push_v2(registry, "new")
    assert registry.request("GET", f"/v2/{NAME}/manifests/old", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).status == 200
    assert registry.request("GET", f"/v1/repositories/{NAME}/tags").status == 200
    registry.close()
    return registry.storage


def run(tree: Path, repair: bool = False, stopping: threading.Event | None = None):
    reactor = InlineThreadsReactor()
    reactor.advance(1_800_000_000)
    return done(check(LocalStorage(str(tree)), reactor, repair=repair, progress=Silent(),
                      stopping=stopping))


def blob_data(tree: Path, data: bytes) -> Path:
    from hashlib import sha256
    hex_digest = sha256(data).hexdigest()
    return tree / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


def test_a_sound_tree_has_nothing_wrong(tree):
    report = run(tree)
    assert report.findings == []
    assert report.checked["V1 layers"] == 2 and report.checked["V2 blobs"] >= 4
    assert report.checked["V1 views"] == 2 and report.checked["bridged blobs"] == 1
    assert "nothing wrong" in report.summary("local")


def test_what_is_wrong_is_found_and_named(tree):
    (tree / f"images/{BASE}/layer").write_bytes(gzip.compress(b"other bytes"))
    blob_data(tree, LAYERS[1]).write_bytes(b"not the layer")
    os.makedirs(tree / "docker/registry/v2/blobs/sha256/ab/ab12")
    torn = tree / "images" / ("c" * 64)
    torn.mkdir()
    (torn / "ancestry").write_text(json.dumps(["c" * 64]))
    (tree / f"images/{CHILD}/.tmp-999999999-ab-layer").write_bytes(b"half")
    blob_data(tree, LAYERS[0]).unlink()
    found = {(f.kind, f.key) for f in run(tree).findings}
    assert (CORRUPT, f"images/{BASE}/layer") in found
    assert (CORRUPT, f"images/{BASE}/_layer_facts") in found
    assert (CORRUPT, str(blob_data(tree, LAYERS[1]).relative_to(tree))) in found
    assert (TORN, "docker/registry/v2/blobs/sha256/ab/ab12") in found
    assert (TORN, f"images/{'c' * 64}") in found
    assert (TEMPORARY, f"images/{CHILD}/.tmp-999999999-ab-layer") in found
    # The removed blob: the links to it and the V1 view of its layer are orphaned.
    orphaned = [key for kind, key in found if kind == ORPHANED]
    assert any("_layers/sha256/" in key for key in orphaned)
    assert any(key.startswith("twistreg/v1/bridge/images/") for key in orphaned)


def test_repair_moves_what_is_wrong_aside_then_what_named_it(tree):
    layer = tree / f"images/{BASE}/layer"
    layer.write_bytes(b"other bytes")
    report = run(tree, repair=True)
    moved = report.moved[f"images/{BASE}/layer"]
    assert moved.startswith(QUARANTINE + "/") and (tree / moved).read_bytes() == b"other bytes"
    assert not layer.exists()
    # The V2 view of that layer named it: orphaned now, moved by the next repair.
    assert {f.kind for f in run(tree, repair=True).findings} == {ORPHANED}
    assert run(tree).findings == []


def test_an_interrupted_check_says_so_and_repairs_nothing(tree):
    (tree / f"images/{BASE}/layer").write_bytes(b"other bytes")
    stopping = threading.Event()
    stopping.set()
    report = run(tree, repair=True, stopping=stopping)
    assert report.interrupted and report.moved == {}
    assert (tree / f"images/{BASE}/layer").exists()


def command(tree: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "twistreg", *arguments, "--storage-path", str(tree)],
        cwd=tree.parent, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.integration
def test_the_command_reports_exits_1_and_repairs(tree):
    sound = command(tree, "check")
    assert sound.returncode == 0, sound.stderr
    assert "nothing wrong" in sound.stdout
    (tree / f"images/{BASE}/layer").write_bytes(b"other bytes")
    found = command(tree, "check", "--json")
    assert found.returncode == 1
    report = json.loads(found.stdout)
    assert {f["key"] for f in report["findings"]} >= {f"images/{BASE}/layer"}
    assert report["moved"] == {}
    repaired = command(tree, "check", "--repair")
    assert repaired.returncode == 1 and "(moved aside)" in repaired.stdout
    assert not (tree / f"images/{BASE}/layer").exists()
    # What named the moved layer goes on the next repair; then the tree is sound.
    command(tree, "check", "--repair")
    assert command(tree, "check").returncode == 0


@pytest.mark.integration
def test_the_command_on_either_storage(tmp_path, backend):
    """A tree a server wrote over V1 and V2, on local storage and S3: sound, then a bad blob."""
    running = backend.server(tmp_path).start()
    try:
        push_v1(running, BASE, BASE_LAYER)
        push_v2(running, "new")
    finally:
        running.stop()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)

    def run_check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "twistreg", "check", "--json",
                               *storage_options(backend)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    sound = run_check()
    assert sound.returncode == 0, sound.stderr
    assert json.loads(sound.stdout)["checked"]["V1 layers"] == 1
    key = str(blob_data(Path("."), LAYERS[0]))
    backend.write(key, b"not the layer")
    found = run_check()
    assert found.returncode == 1
    assert [(f["kind"], f["key"]) for f in json.loads(found.stdout)["findings"]] == [
        (CORRUPT, key)]
