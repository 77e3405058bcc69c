"""
Garbage collection while a real server takes pushes and pulls, V1 and V2, on local storage and
S3: a tree with thousands of objects, pushes between the mark and the sweeps, then every
acknowledged image pulled whole. The tree's garbage is made old by the collector's view of
its ages (S3 cannot be given a past Last-Modified), never by waiting.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from twisted.internet import reactor

from tests.server import ROOT, Client
from twistreg import layout
from twistreg.checksums import payload_checksum
from twistreg.config import load_settings
from twistreg.gc import report as kinds
from twistreg.gc.collector import Rules, collect
from twistreg.oci.names import Digest
from twistreg.storage import open_storage

pytestmark = pytest.mark.integration

HOUR = 3600.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: Garbage written straight into the tree: V1 images (3 files each), blobs and their links.
GARBAGE = 600


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_v2(client: Client, name: str, seed: str) -> str | None:
    """An image pushed over V2; its manifest digest once acknowledged (201), else None."""
    config = json.dumps({"os": "linux", "architecture": "amd64", "seed": seed}).encode()
    layer = f"layer {seed}".encode() * 50
    for blob in (config, layer):
        started = client.request("POST", f"/v2/{name}/blobs/uploads/")
        if started.status != 202:
            return None
        location = started.headers["Location"]
        joiner = "&" if "?" in location else "?"
        if client.request("PUT", f"{location}{joiner}digest={digest_of(blob)}", blob,
                          {"Content-Type": "application/octet-stream"}).status != 201:
            return None
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(layer), "size": len(layer)}]}).encode()
    put = client.request("PUT", f"/v2/{name}/manifests/{seed}", manifest,
                         {"Content-Type": OCI_MANIFEST})
    return digest_of(manifest) if put.status == 201 else None


def pull_v2(client: Client, name: str, reference: str) -> bool:
    answer = client.request("GET", f"/v2/{name}/manifests/{reference}",
                            headers={"Accept": OCI_MANIFEST})
    if answer.status != 200:
        return False
    document = answer.json()
    for blob in (document["config"], *document["layers"]):
        got = client.request("GET", f"/v2/{name}/blobs/{blob['digest']}")
        if got.status != 200 or digest_of(got.body) != blob["digest"]:
            return False
    return True


def push_v1(client: Client, image_id: str, tag: str) -> bool:
    """A one-image V1 push, tag last; whether it was acknowledged."""
    body = json.dumps({"id": image_id}).encode()
    layer = f"v1 layer {image_id}".encode()
    steps = [
        ("PUT", f"/v1/images/{image_id}/json", body, {}),
        ("PUT", f"/v1/images/{image_id}/layer", layer, {}),
        ("PUT", f"/v1/images/{image_id}/checksum", None,
         {"X-Docker-Checksum-Payload": payload_checksum(body, layer)}),
        ("PUT", f"/v1/repositories/v1/online/tags/{tag}", json.dumps(image_id).encode(), {}),
    ]
    return all(client.request(*step).status == 200 for step in steps)


def pull_v1(client: Client, tag: str) -> bool:
    image_id = client.request("GET", f"/v1/repositories/v1/online/tags/{tag}").json()
    layer = client.request("GET", f"/v1/images/{image_id}/layer")
    return layer.status == 200 and layer.body == f"v1 layer {image_id}".encode()


def write_garbage(backend) -> set[str]:
    """Objects nothing reaches, as a dead push or old deletes left them; their keys."""
    keys = {}
    for number in range(GARBAGE):
        image_id = hashlib.sha256(b"image %d" % number).hexdigest()
        keys[layout.image_json_key(image_id)] = json.dumps({"id": image_id}).encode()
        keys[layout.image_ancestry_key(image_id)] = json.dumps([image_id]).encode()
        keys[layout.image_layer_key(image_id)] = b"old layer %d" % number
        blob = b"old blob %d" % number
        digest = Digest.of(blob)
        keys[layout.blob_data_key(digest)] = blob
        keys[layout.layer_link_key("old/garbage", digest)] = layout.link_content(digest)
    for key, data in keys.items():
        backend.write(key, data)
    return set(keys)


class Aged:
    """The storage as the collector sees it: the garbage written two hours ago."""

    def __init__(self, storage, old: set[str]) -> None:
        self._storage = storage
        self._old = old

    def __getattr__(self, name: str):
        return getattr(self._storage, name)

    def modified(self, key: str):
        written = self._storage.modified(key)
        if key in self._old:
            written.addCallback(lambda seconds: seconds - 2 * HOUR)
        return written


class Traffic:
    """Pushes (V1 and V2, in turn) and pulls in threads, until told to stop."""

    def __init__(self, client: Client, kept: list[str]) -> None:
        self._client = client
        self._kept = kept
        self.v2: list[tuple[str, str]] = []
        self.v1: list[str] = []
        self.failures: list[str] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._push, daemon=True),
                         threading.Thread(target=self._pull, daemon=True)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _push(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            seed = f"p{number}"
            digest = push_v2(self._client, "online/app", seed)
            acknowledged = push_v1(self._client, hashlib.sha256(seed.encode()).hexdigest(),
                                   seed)
            with self._changed:
                if digest is not None:
                    self.v2.append((seed, digest))
                if acknowledged:
                    self.v1.append(seed)
                self._changed.notify_all()

    def _pull(self) -> None:
        while not self._stop.is_set():
            for seed in self._kept:
                answer = self._client.request("GET", f"/v2/online/app/manifests/{seed}",
                                              headers={"Accept": OCI_MANIFEST})
                if answer.status >= 500:
                    self.failures.append(f"{answer.status} {answer.body[:200]!r}")

    def wait_for_pushes(self, count: int) -> None:
        """Block until C{count} more pushes of each protocol were acknowledged."""
        with self._changed:
            target = min(len(self.v2), len(self.v1)) + count
            assert self._changed.wait_for(
                lambda: min(len(self.v2), len(self.v1)) >= target, 60), "no push went through"


class PushesBetween:
    """A progress that lets pushes through at the start of each phase of the collection."""

    def __init__(self, traffic: Traffic) -> None:
        self._traffic = traffic

    def phase(self, name: str, total: int) -> None:
        self._traffic.wait_for_pushes(1)

    def advance(self) -> None:
        pass


def test_pushes_and_pulls_through_a_collection_lose_nothing(tmp_path, backend, in_reactor):
    server = backend.server(tmp_path, "--workers", "2").start()
    try:
        client = Client(server.port)
        kept = [f"k{number}" for number in range(3)]
        for seed in kept:
            assert push_v2(client, "online/app", seed) is not None
        garbage = write_garbage(backend)
        if backend.kind == "local":
            settings = load_settings(None, None, {"storage_path": str(backend.root)},
                                     environ={}, system_config_path=None)
        else:
            settings = load_settings(str(backend.config), None,
                                     {"storage_path": backend.prefix}, environ={},
                                     system_config_path=None)
        storage = Aged(open_storage(settings, reactor), garbage)
        with Traffic(client, kept) as traffic:
            report = in_reactor(collect, storage, reactor, Rules(grace=HOUR, untagged=HOUR),
                                progress=PushesBetween(traffic))
            traffic.wait_for_pushes(1)
        assert traffic.failures == []
        assert report.objects[kinds.V1_IMAGES] == GARBAGE
        assert report.objects[kinds.BLOBS] == GARBAGE
        assert report.objects[kinds.BLOB_LINKS] == GARBAGE
        assert report.objects[kinds.MANIFESTS] == 0
        assert len(traffic.v2) >= 4 and len(traffic.v1) >= 4
        for seed in kept:
            assert pull_v2(client, "online/app", seed), seed
        for seed, digest in traffic.v2:
            assert pull_v2(client, "online/app", seed), seed
            assert pull_v2(client, "online/app", digest), digest
        for seed in traffic.v1:
            assert pull_v1(client, seed), seed
        for key in list(garbage)[:20]:
            assert backend.read(key) is None, key
    finally:
        server.stop()


def test_the_command_on_a_tree_a_server_serves(tmp_path, storage):
    """--dry-run lists, --json reports, a rerun finds nothing; the files' own ages count."""
    server = None
    try:
        from tests.backends import LocalTree

        backend = LocalTree(storage)
        server = backend.server(tmp_path).start()
        client = Client(server.port)
        assert push_v2(client, "online/app", "kept") is not None
        garbage = write_garbage(backend)
        then = time.time() - 2 * HOUR
        for key in garbage:
            os.utime(storage / key, (then, then))

        def gc(*options: str) -> subprocess.CompletedProcess:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            env.pop("DOCKER_REGISTRY_CONFIG", None)
            env.pop("SETTINGS_FLAVOR", None)
            return subprocess.run(
                [sys.executable, "-m", "twistreg", "gc", "--storage-path", str(storage),
                 *options], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

        dry = gc("--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would remove {layout.image_layer_key(hashlib.sha256(b'image 0').hexdigest())}" \
            not in dry.stdout  # images are listed by their directory
        assert sum(line.startswith("would remove ")
                   for line in dry.stdout.splitlines()) == 3 * GARBAGE
        assert dry.stdout.splitlines()[-1].startswith(
            f"gc would remove {GARBAGE} blob links, {GARBAGE} V1 images, {GARBAGE} blobs (")
        done = gc("--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["removed"][kinds.V1_IMAGES]["objects"] == GARBAGE
        assert report["bytes"] > 0 and not report["interrupted"] and not report["dry_run"]
        assert json.loads(gc("--json").stdout)["objects"] == 0
        assert pull_v2(client, "online/app", "kept")
    finally:
        if server is not None:
            server.stop()
