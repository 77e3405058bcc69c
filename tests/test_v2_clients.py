"""
The V2 API against real clients and the Go registry: skopeo pushes, inspects, lists, pulls and
deletes images and a multi-arch index (local storage and S3), docker 20.10 pushes and pulls,
distribution 2.8 serves the tree twistreg wrote and the reverse, a chunked upload continues on
another worker, and some of the spec's bad inputs are answered over a real socket.

The images are built here, with no network: an OCI image layout written by Python, turned into
other forms by skopeo.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import attrs
import pytest
import requests

from tests import services
from tests.backends import LocalTree
from tests.conftest import _unavailable
from tests.server import ROOT, Client, Response, Server
from tests.test_bridge_v1_to_v2 import (
    BASE,
    BASE_LAYER,
    BASE_TAR,
    CHILD,
    EMPTY_LAYER,
    push_v1,
    v1_json,
)
from tests.test_compat_091 import BASE as BASE_0_9_1
from tests.test_compat_091 import CHILD as CHILD_0_9_1
from tests.test_compat_091 import FILES as FILES_0_9_1
from tests.test_compat_091 import LAYERS as LAYERS_0_9_1
from tests.test_pool import DEBUG_CONFIG
from tests.test_real_clients import npm_pull

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
V2_TREE = "docker/registry/v2"
# A client's whole run, HTTPS attempt and fallback included.
CLIENT_TIMEOUT = 120


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- images ------------------------------------------------------------------------------------

@attrs.frozen
class Manifest:
    """
    A manifest or index and every blob a layout needs for it.

    @ivar blobs: by digest: its config and layers, for an index its children and theirs, and
        the manifest's own bytes.
    @ivar architecture: an image's platform (linux/<architecture>); empty for an index.
    @ivar config: an image's config digest, which docker shows as the image id.
    @ivar layers: an image's layer digests, in order.
    """

    media_type: str
    data: bytes
    blobs: dict[str, bytes]
    architecture: str = ""
    config: str = ""
    layers: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    def descriptor(self) -> dict:
        found: dict = {"mediaType": self.media_type, "digest": self.digest,
                       "size": len(self.data)}
        if self.architecture:
            found["platform"] = {"architecture": self.architecture, "os": "linux"}
        return found


def tar_layer(files: dict[str, bytes]) -> bytes:
    """A layer's tar, the same bytes on every run (no times, owners or modes of this machine)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_image(architecture: str, sizes: tuple[int, ...], seed: int) -> Manifest:
    """
    An OCI image for linux/C{architecture}, one gzip layer per size, each holding that many
    random bytes (incompressible: the layer is about as large).
    """
    rng = random.Random(seed)
    tars = [tar_layer({f"data/{architecture}-{i}": rng.randbytes(size)})
            for i, size in enumerate(sizes)]
    layers = [gzip.compress(tar, mtime=0) for tar in tars]
    config = json.dumps({
        "architecture": architecture, "os": "linux",
        "config": {"Cmd": ["/bin/true"], "Env": [f"SEED={seed}"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(tar) for tar in tars]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(len(tars))],
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}
                   for layer in layers],
    }).encode()
    blobs = {digest_of(data): data for data in [config, *layers, manifest]}
    return Manifest(OCI_MANIFEST, manifest, blobs, architecture, digest_of(config),
                    tuple(digest_of(layer) for layer in layers))


def build_index(*images: Manifest) -> Manifest:
    """An OCI index over C{images}, each with its platform."""
    data = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [image.descriptor() for image in images],
    }).encode()
    blobs = {digest_of(data): data}
    for image in images:
        blobs.update(image.blobs)
    return Manifest(OCI_INDEX, data, blobs)


def write_layout(directory: Path, tags: dict[str, Manifest]) -> Path:
    """An OCI image layout in C{directory} naming each manifest by its tag; C{directory}."""
    directory.mkdir(parents=True)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for tag, manifest in tags.items():
        entries.append({**manifest.descriptor(),
                        "annotations": {"org.opencontainers.image.ref.name": tag}})
        for digest, data in manifest.blobs.items():
            path = directory / "blobs" / "sha256" / digest.removeprefix("sha256:")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return directory


def layout_blobs(directory: Path) -> dict[str, bytes]:
    """Every blob of a layout, by digest."""
    return {f"sha256:{path.name}": path.read_bytes()
            for path in (directory / "blobs" / "sha256").iterdir()}


def layout_manifests(directory: Path) -> list[tuple[str, str]]:
    """The (tag, digest) pairs of a layout's index.json."""
    index = json.loads((directory / "index.json").read_text())
    return [(entry.get("annotations", {}).get("org.opencontainers.image.ref.name", ""),
             entry["digest"]) for entry in index["manifests"]]


# -- clients -----------------------------------------------------------------------------------

def finished(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a client that succeeded; a failure showing what it said otherwise."""
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited with {result.returncode}:\n{result.stderr}")
    return result.stdout


@attrs.frozen
class Skopeo:
    """
    skopeo with a policy and registries configuration of its own (the machine's may refuse
    unsigned images or rewrite names), plain HTTP to the registries under test.
    """

    binary: str
    directory: Path

    def command(self, *arguments: str) -> list[str]:
        return [self.binary, "--policy", str(self.directory / "policy.json"),
                "--registries-conf", str(self.directory / "registries.conf"), *arguments]

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*arguments), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=CLIENT_TIMEOUT)

    def copy(self, source: str, destination: str, *options: str) -> str:
        return finished(self.run("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                                 *options, source, destination))

    def inspect(self, reference: str, *options: str) -> subprocess.CompletedProcess[str]:
        return self.run("inspect", "--tls-verify=false", *options, reference)


@pytest.fixture(scope="module")
def skopeo(tmp_path_factory) -> Skopeo:
    """skopeo, or a skip (a failure on CI) saying why not."""
    _unavailable("skopeo", services.unavailable_skopeo())
    directory = tmp_path_factory.mktemp("skopeo")
    (directory / "policy.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    (directory / "registries.conf").write_text("")
    binary = services.skopeo_binary()
    assert binary is not None
    return Skopeo(binary, directory)


@pytest.fixture(scope="module")
def docker_daemon() -> Iterator[services.DockerDaemon]:
    """A docker daemon of this module's own, or a skip (a failure on CI) saying why not."""
    _unavailable("docker", services.unavailable_docker())
    binary = services.dockerd_binary()
    assert binary is not None
    daemon = services.DockerDaemon(binary)
    try:
        yield daemon.start()
    finally:
        daemon.stop()
        daemon.remove()


@pytest.fixture
def distribution() -> Iterator[Callable[[Path], services.Distribution]]:
    """Starts the Go registry over a storage directory; stopped after the test."""
    _unavailable("the Go registry", services.unavailable_distribution())
    binary = services.distribution_binary()
    assert binary is not None
    started: list[services.Distribution] = []

    def start(root: Path) -> services.Distribution:
        started.append(services.Distribution(binary, str(root)))
        return started[-1].start()

    yield start
    for server in started:
        server.stop()
        server.remove()


@contextlib.contextmanager
def running_twistreg(tmp: Path, storage: Path, *args: str, **kwargs) -> Iterator[Server]:
    """A twistreg server on local storage for the block's duration."""
    running = LocalTree(storage).server(tmp, *args, **kwargs)
    try:
        yield running.start()
    finally:
        running.stop()
        running.kill_all()  # workers the master left


def reference(port: int, name: str) -> str:
    return f"docker://127.0.0.1:{port}/{name}"


def error_codes(response: Response) -> list[str]:
    """The codes of a V2 error answer, which must be the spec's JSON."""
    assert response.headers["Content-Type"].startswith("application/json"), response
    return [error["code"] for error in response.json()["errors"]]


def path_of(location: str) -> str:
    """The path and query of a C{Location}, relative or absolute."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(location: str, query: str) -> str:
    return path_of(location) + ("&" if "?" in location else "?") + query


# -- skopeo ------------------------------------------------------------------------------------

def test_skopeo_push_inspect_list_pull_delete(skopeo, server, backend, tmp_path):
    image = build_image("amd64", (3000, 60_000, 150_000), seed=1)
    source = write_layout(tmp_path / "source", {"t1": image})
    pushed = reference(server.port, "foo/img:1")
    skopeo.copy(f"oci:{source}:t1", pushed)

    inspected = json.loads(finished(skopeo.inspect(pushed)))
    assert inspected["Digest"] == image.digest
    assert inspected["Layers"] == list(image.layers)
    assert inspected["RepoTags"] == ["1"]
    assert finished(skopeo.inspect(pushed, "--raw")).encode() == image.data
    tags = finished(skopeo.run("list-tags", "--tls-verify=false",
                               reference(server.port, "foo/img")))
    assert json.loads(tags)["Tags"] == ["1"]
    # The Go registry's tree, on either storage.
    tag_link = f"{V2_TREE}/repositories/foo/img/_manifests/tags/1/current/link"
    assert backend.read(tag_link) == image.digest.encode()

    pulled = tmp_path / "pulled"
    skopeo.copy(pushed, f"oci:{pulled}:back")
    assert layout_manifests(pulled) == [("back", image.digest)]
    assert layout_blobs(pulled) == layout_blobs(source)

    finished(skopeo.run("delete", "--tls-verify=false", pushed))
    gone = skopeo.inspect(pushed)
    assert gone.returncode != 0
    assert "manifest unknown" in gone.stderr
    assert backend.read(tag_link) is None


def test_skopeo_multi_arch_index(skopeo, server, tmp_path):
    amd64 = build_image("amd64", (2000, 40_000), seed=2)
    arm64 = build_image("arm64", (2500, 50_000), seed=3)
    index = build_index(amd64, arm64)
    source = write_layout(tmp_path / "source", {"multi": index})
    pushed = reference(server.port, "foo/multi:1")
    skopeo.copy(f"oci:{source}:multi", pushed, "--all")

    assert finished(skopeo.inspect(pushed, "--raw")).encode() == index.data
    # The client chose the arm64 image from the index, and read it from twistreg.
    arm = json.loads(finished(skopeo.run("--override-arch", "arm64", "inspect",
                                         "--tls-verify=false", pushed)))
    assert (arm["Digest"], arm["Architecture"]) == (index.digest, "arm64")
    assert arm["Layers"] == list(arm64.layers)
    for child in (amd64, arm64):
        answer = server.request("GET", f"/v2/foo/multi/manifests/{child.digest}",
                                headers={"Accept": OCI_MANIFEST})
        assert (answer.status, answer.body) == (200, child.data)

    pulled = tmp_path / "pulled"
    skopeo.copy(pushed, f"oci:{pulled}:back", "--all")
    assert layout_manifests(pulled) == [("back", index.digest)]
    assert layout_blobs(pulled) == layout_blobs(source)


# -- docker ------------------------------------------------------------------------------------

def test_docker_push_pull(docker_daemon, skopeo, tmp_path):
    image = build_image("amd64", (4000, 80_000, 120_000), seed=4)
    config = image.config
    source = write_layout(tmp_path / "source", {"t1": image})
    archive = tmp_path / "image.tar"
    skopeo.copy(f"oci:{source}:t1", f"docker-archive:{archive}:foo/img:1")
    docker = docker_daemon.docker
    loaded = finished(docker("load", "--input", str(archive)))
    assert "Loaded image: foo/img:1" in loaded
    # docker's image id is its config's digest.
    assert finished(docker("image", "inspect", "--format", "{{.Id}}", "foo/img:1")).strip() \
        == config

    with running_twistreg(tmp_path, tmp_path / "storage") as server:
        name = f"127.0.0.1:{server.port}/foo/img:1"
        try:
            finished(docker("tag", "foo/img:1", name))
            pushed = finished(docker("push", name, timeout=CLIENT_TIMEOUT))
            match = re.search(r"1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", pushed)
            assert match, pushed
            stored = server.request("GET", "/v2/foo/img/manifests/1", headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
            assert stored.status == 200, stored
            assert stored.headers["Docker-Content-Digest"] == match.group(1)
            assert digest_of(stored.body) == match.group(1)
            assert len(stored.body) == int(match.group(2))

            finished(docker("rmi", "--force", config))
            assert finished(docker("images", "--all", "--quiet")).strip() == ""

            finished(docker("pull", name, timeout=CLIENT_TIMEOUT))
            found = json.loads(finished(docker("image", "inspect", name)))[0]
            assert found["Id"] == config
            assert found["RepoDigests"] == [f"127.0.0.1:{server.port}/foo/img@{match.group(1)}"]
        finally:
            docker("rmi", "--force", config)


# -- the Go registry ---------------------------------------------------------------------------

def test_distribution_serves_what_twistreg_stored(skopeo, distribution, tmp_path):
    image = build_image("amd64", (3000, 70_000), seed=5)
    index = build_index(build_image("amd64", (1000, 20_000), seed=6),
                        build_image("arm64", (1500, 30_000), seed=7))
    source = write_layout(tmp_path / "source", {"image": image, "multi": index})
    storage = tmp_path / "storage"
    with running_twistreg(tmp_path, storage) as server:
        skopeo.copy(f"oci:{source}:image", reference(server.port, "foo/img:1"))
        skopeo.copy(f"oci:{source}:multi", reference(server.port, "foo/multi:1"), "--all")

    # twistreg is stopped: the tree alone is read.
    go = distribution(storage)
    assert json.loads(Client(go.port).request("GET", "/v2/_catalog").body) == {
        "repositories": ["foo/img", "foo/multi"]}
    inspected = json.loads(finished(skopeo.inspect(reference(go.port, "foo/img:1"))))
    assert inspected["Digest"] == image.digest
    raw = finished(skopeo.inspect(reference(go.port, "foo/multi:1"), "--raw"))
    assert raw.encode() == index.data
    pulled = tmp_path / "pulled"
    skopeo.copy(reference(go.port, "foo/img:1"), f"oci:{pulled}:image")
    skopeo.copy(reference(go.port, "foo/multi:1"), f"oci:{pulled}:multi", "--all")
    assert layout_manifests(pulled) == [("image", image.digest), ("multi", index.digest)]
    assert layout_blobs(pulled) == layout_blobs(source)


def test_twistreg_serves_what_distribution_stored(skopeo, distribution, tmp_path):
    image = build_image("amd64", (3500, 90_000), seed=8)
    index = build_index(build_image("amd64", (1200, 25_000), seed=9),
                        build_image("arm64", (1700, 35_000), seed=10))
    source = write_layout(tmp_path / "source", {"image": image, "multi": index})
    storage = tmp_path / "storage"
    storage.mkdir()
    go = distribution(storage)
    skopeo.copy(f"oci:{source}:image", reference(go.port, "foo/img:1"))
    skopeo.copy(f"oci:{source}:multi", reference(go.port, "foo/multi:1"), "--all")
    go.stop()

    pulled, pulled_image = tmp_path / "pulled", tmp_path / "image"
    with running_twistreg(tmp_path, storage) as server:
        assert server.request("GET", "/v2/_catalog").json() == {
            "repositories": ["foo/img", "foo/multi"]}
        assert server.request("GET", "/v2/foo/img/tags/list").json() == {
            "name": "foo/img", "tags": ["1"]}
        inspected = json.loads(finished(skopeo.inspect(reference(server.port, "foo/img:1"))))
        assert inspected["Digest"] == image.digest
        skopeo.copy(reference(server.port, "foo/img:1"), f"oci:{pulled_image}:image")
        skopeo.copy(reference(server.port, "foo/multi:1"), f"oci:{pulled}:multi", "--all")
    assert layout_manifests(pulled_image) == [("image", image.digest)]
    assert layout_blobs(pulled_image) == {
        digest: data for digest, data in layout_blobs(source).items() if digest in image.blobs}
    assert layout_manifests(pulled) == [("multi", index.digest)]
    assert layout_blobs(pulled) == {
        digest: data for digest, data in layout_blobs(source).items() if digest in index.blobs}


# -- uploads across workers --------------------------------------------------------------------

# Connections are balanced by how many each worker holds open (twistreg.server.scoreboard): a
# worker holding 3 more than its peer lets the peer accept. Sequential requests on connections
# closed after each leave both at 0, and one worker may take them all; the PATCH connections
# are therefore kept open, so that the worker taking them soon defers to the other.
MAX_PATCHES = 30


def test_chunks_of_one_upload_on_two_workers(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(DEBUG_CONFIG)  # every answer of a worker names it: X-Twistreg-Worker
    with running_twistreg(tmp_path, tmp_path / "storage", "--config", str(config),
                          workers=2) as server, contextlib.ExitStack() as held:
        workers = {str(pid) for pid in server.wait_for_workers(2)}
        started = server.request("POST", "/v2/foo/chunks/blobs/uploads/")
        assert started.status == 202, started
        location = started.headers["Location"]
        rng = random.Random(11)
        chunks: list[bytes] = []
        answered: set[str] = set()
        while len(answered) < 2 and len(chunks) < MAX_PATCHES:
            chunk = rng.randbytes(rng.randrange(1000, 5000))
            start = sum(map(len, chunks))
            connection = held.enter_context(contextlib.closing(server.connection()))
            connection.request("PATCH", path_of(location), chunk, {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(chunk) - 1}"})
            patched = connection.getresponse()
            assert (patched.status, patched.read()) == (202, b"")
            chunks.append(chunk)
            assert patched.headers["Range"] == f"0-{start + len(chunk) - 1}"
            answered.add(patched.headers["X-Twistreg-Worker"])
            location = patched.headers["Location"]
        assert answered == workers, f"{len(chunks)} PATCHes all answered by {answered}"

        blob = b"".join(chunks)
        done = server.request("PUT", with_query(location, f"digest={digest_of(blob)}"))
        assert done.status == 201, done
        assert done.headers["Docker-Content-Digest"] == digest_of(blob)
        read = server.request("GET", f"/v2/foo/chunks/blobs/{digest_of(blob)}")
        assert (read.status, read.body) == (200, blob)


# -- bad inputs over a real socket -------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Iterator[Server]:
    """One twistreg on local storage for the tests that only send requests."""
    tmp = tmp_path_factory.mktemp("plain")
    with running_twistreg(tmp, tmp / "storage") as server:
        yield server


def push_config_only(server: Server, name: str, tag: str) -> None:
    """An image with a config and no layer, pushed by plain requests: a repository to list."""
    config = b"{}"
    pushed = server.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest_of(config)}",
                            config, {"Content-Type": "application/octet-stream"})
    assert pushed.status == 201, pushed
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": []}).encode()
    tagged = server.request("PUT", f"/v2/{name}/manifests/{tag}", manifest,
                            {"Content-Type": OCI_MANIFEST})
    assert tagged.status == 201, tagged


def test_monolithic_upload_with_a_wrong_digest(plain):
    body = b"the bytes sent"
    claimed = digest_of(b"other bytes")
    answer = plain.request("POST", f"/v2/foo/wrong/blobs/uploads/?digest={claimed}", body,
                           {"Content-Type": "application/octet-stream"})
    assert answer.status == 400, answer
    assert error_codes(answer) == ["DIGEST_INVALID"]
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    tree = LocalTree(plain.storage)
    for digest in (claimed, digest_of(body)):
        assert plain.request("HEAD", f"/v2/foo/wrong/blobs/{digest}").status == 404
        # Not a byte, not even a temporary file, under either digest.
        hex_digest = digest.removeprefix("sha256:")
        assert tree.names(f"{V2_TREE}/blobs/sha256/{hex_digest[:2]}/{hex_digest}") == []
    assert tree.names(f"{V2_TREE}/repositories/foo/wrong") == []


def test_manifest_that_is_not_json(plain):
    push_config_only(plain, "foo/notjson", "0")
    answer = plain.request("PUT", "/v2/foo/notjson/manifests/1", b"{not json",
                           {"Content-Type": OCI_MANIFEST})
    assert answer.status == 400, answer
    assert error_codes(answer) == ["MANIFEST_INVALID"]
    after = plain.request("GET", "/v2/foo/notjson/manifests/1")
    assert after.status == 404
    assert error_codes(after) == ["MANIFEST_UNKNOWN"]


def test_patch_out_of_order(plain):
    started = plain.request("POST", "/v2/foo/order/blobs/uploads/")
    assert started.status == 202, started
    first = plain.request("PATCH", path_of(started.headers["Location"]), b"0123456789",
                          {"Content-Range": "0-9", "Content-Type": "application/octet-stream"})
    assert first.status == 202, first
    skipping = plain.request("PATCH", path_of(first.headers["Location"]), b"abcdefghij",
                             {"Content-Range": "20-29",
                              "Content-Type": "application/octet-stream"})
    assert skipping.status == 416, skipping
    assert error_codes(skipping) == ["BLOB_UPLOAD_INVALID"]
    # The session is as it was: the refused chunk added nothing.
    status = plain.request("GET", path_of(first.headers["Location"]))
    assert (status.status, status.headers["Range"]) == (204, "0-9")


@pytest.mark.parametrize("path", ["/v2/_catalog?n=-1", "/v2/foo/paged/tags/list?n=-1"])
def test_negative_page_size(plain, path):
    push_config_only(plain, "foo/paged", "1")
    assert plain.request("GET", path.replace("n=-1", "n=1")).status == 200

    answer = plain.request("GET", path)
    assert answer.status == 400, answer
    assert error_codes(answer) == ["PAGINATION_NUMBER_INVALID"]


def test_mount_from_a_repository_that_does_not_exist(plain):
    blob = b"a blob nobody has"
    answer = plain.request(
        "POST", f"/v2/foo/target/blobs/uploads/?mount={digest_of(blob)}&from=no/such/repo")
    assert answer.status == 202, answer
    assert answer.headers["Docker-Upload-UUID"]
    assert answer.headers["Range"] == "0-0"
    # The session it started takes the blob.
    done = plain.request("PUT", with_query(answer.headers["Location"],
                                           f"digest={digest_of(blob)}"), blob,
                         {"Content-Type": "application/octet-stream"})
    assert done.status == 201, done
    assert plain.request("GET", f"/v2/foo/target/blobs/{digest_of(blob)}").body == blob


def test_a_tls_handshake_is_answered_at_once(plain):
    # skopeo, podman and docker try HTTPS first on an insecure registry and fall back to HTTP
    # as soon as the HTTPS attempt fails: an answer that is not TLS (or a closed connection)
    # fails it at once, silence only at the client's handshake timeout (10 s for each command).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as connection:
        try:
            context.wrap_socket(connection, server_hostname="127.0.0.1")
        except TimeoutError:
            pytest.fail("no answer to a TLS ClientHello within 5 s")
        except (ssl.SSLError, ConnectionError):
            pass
        else:
            pytest.fail("a TLS handshake succeeded on the plain-HTTP port")



def test_oras_artifact_referrer_and_pull(plain, tmp_path):
    """The Python oras client pushes an artifact, attaches a referrer (chunked), pulls it."""
    oras_client = pytest.importorskip("oras.client")
    oras_oci = pytest.importorskip("oras.oci")
    client = oras_client.OrasClient(hostname=f"127.0.0.1:{plain.port}", insecure=True)
    artifact, signature = tmp_path / "artifact.txt", tmp_path / "signature.txt"
    artifact.write_bytes(b"an artifact\n")
    signature.write_bytes(b"a signature\n")
    target = f"127.0.0.1:{plain.port}/oras/artifact"
    client.push(target=f"{target}:v1", files=[str(artifact)], disable_path_validation=True,
                quiet=True)
    subject = plain.request("GET", "/v2/oras/artifact/manifests/v1", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert subject.status == 200
    client.push(target=f"{target}:signature", files=[str(signature)],
                disable_path_validation=True, do_chunked=True, quiet=True,
                subject=oras_oci.Subject(subject.headers["Content-Type"],
                                         subject.headers["Docker-Content-Digest"],
                                         len(subject.body)))
    referrers = plain.request(
        "GET", f"/v2/oras/artifact/referrers/{subject.headers['Docker-Content-Digest']}")
    listed = json.loads(referrers.body)["manifests"]
    signed = plain.request("GET", "/v2/oras/artifact/manifests/signature", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert [entry["digest"] for entry in listed] == [signed.headers["Docker-Content-Digest"]]
    pulled = client.pull(target=f"{target}:v1", outdir=str(tmp_path / "out"))
    assert [Path(path).read_bytes() for path in pulled] == [b"an artifact\n"]


# -- the bridge: V1 images over V2 --------------------------------------------------------------

def test_a_v1_push_pulled_by_docker_and_skopeo(docker_daemon, skopeo, tmp_path):
    """docker 1.x's push sequence, then today's docker and skopeo pull it over V2."""
    with running_twistreg(tmp_path, tmp_path / "storage") as server:
        push_v1(server, BASE, BASE_LAYER)
        push_v1(server, CHILD, EMPTY_LAYER, parent=BASE, command="ENV A=b")
        assert server.request("PUT", "/v1/repositories/foo/old/tags/latest",
                              json.dumps(CHILD).encode()).status == 200
        name = f"127.0.0.1:{server.port}/foo/old:latest"
        docker = docker_daemon.docker
        try:
            finished(docker("pull", name, timeout=CLIENT_TIMEOUT))
            found = json.loads(finished(docker("image", "inspect", name)))[0]
            # docker checked every layer's diff id while it unpacked it.
            assert found["RootFS"]["Layers"] == [digest_of(BASE_TAR)]
            assert found["Config"]["Cmd"] == ["ENV A=b"]
        finally:
            docker("rmi", "--force", name)
        copied = tmp_path / "copied"
        skopeo.copy(f"docker://{name}", f"oci:{copied}:latest")
    blobs = layout_blobs(copied)
    assert blobs[digest_of(BASE_LAYER)] == BASE_LAYER
    # The same files, config fields and history as the V1 images.
    with tarfile.open(fileobj=io.BytesIO(BASE_LAYER)) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == [("etc/hello",
                                                                      b"hello world\n")]
    manifest = json.loads(blobs[json.loads((copied / "index.json").read_bytes())[
        "manifests"][0]["digest"]])
    config = json.loads(blobs[manifest["config"]["digest"]])
    child = v1_json(CHILD, parent=BASE, command="ENV A=b")
    assert {key: config[key] for key in ("architecture", "os", "config", "created")} == {
        key: child[key] for key in ("architecture", "os", "config", "created")}
    assert [entry["created_by"] for entry in config["history"]] == [
        " ".join(v1_json(BASE)["container_config"]["Cmd"]),
        " ".join(child["container_config"]["Cmd"])]


def test_a_v1_push_pulled_over_v2_on_either_storage(skopeo, server, tmp_path):
    push_v1(server, BASE, BASE_LAYER)
    assert server.request("PUT", "/v1/repositories/foo/old/tags/1",
                          json.dumps(BASE).encode()).status == 200
    copied = tmp_path / "copied"
    skopeo.copy(f"docker://127.0.0.1:{server.port}/foo/old:1", f"oci:{copied}:1")
    assert layout_blobs(copied)[digest_of(BASE_LAYER)] == BASE_LAYER


def test_a_tree_0_9_1_wrote_bridged_then_pulled_over_v2(docker_daemon, skopeo, tmp_path):
    """The bridge command gives the old layers their facts; docker and skopeo pull a V1 tag."""
    storage = tmp_path / "storage"
    tree = LocalTree(storage)
    for key, content in FILES_0_9_1.items():
        tree.write(key, content.encode())
    for image_id, data in LAYERS_0_9_1.items():
        tree.write(f"images/{image_id}/layer", data)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    bridged = subprocess.run(
        [sys.executable, "-m", "twistreg", "bridge", "--storage-path", str(storage)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bridged.returncode == 0, bridged.stderr
    with running_twistreg(tmp_path, storage) as server:
        copied = tmp_path / "copied"
        name = f"127.0.0.1:{server.port}/foo/bar:latest"
        skopeo.copy(f"docker://{name}", f"oci:{copied}:latest")
        docker = docker_daemon.docker
        try:
            finished(docker("pull", name, timeout=CLIENT_TIMEOUT))
            found = json.loads(finished(docker("image", "inspect", name)))[0]
            assert found["RootFS"]["Layers"] == [
                digest_of(LAYERS_0_9_1[image_id]) for image_id in (BASE_0_9_1, CHILD_0_9_1)]
        finally:
            docker("rmi", "--force", name)
    # skopeo compresses plain tar layers into an oci: layout: the diff ids say they are ours.
    blobs = layout_blobs(copied)
    index = json.loads((copied / "index.json").read_bytes())
    manifest = json.loads(blobs[index["manifests"][0]["digest"]])
    config = json.loads(blobs[manifest["config"]["digest"]])
    assert config["rootfs"]["diff_ids"] == [
        digest_of(LAYERS_0_9_1[image_id]) for image_id in (BASE_0_9_1, CHILD_0_9_1)]


# -- the bridge: V2 images over V1 --------------------------------------------------------------

def v1_client(port: int) -> Any:
    """The PyPI client's V1 calls (left to itself it would take V2)."""
    client_module = pytest.importorskip("docker_registry_client")
    return client_module.DockerRegistryClient(f"http://127.0.0.1:{port}",
                                              api_version=1)._base_client


def v1_layer(client: Any, image_id: str) -> bytes:
    # The client's own layer call decodes the body as JSON.
    return client._http_response(client.IMAGE_LAYER, requests.get, image_id=image_id).content


def test_a_v2_push_pulled_by_the_v1_clients(skopeo, server, npm_client, tmp_path):
    """skopeo pushes over V2; the PyPI and npm V1 clients pull it, one V1 image per layer."""
    image = build_image("amd64", (3000, 60_000), seed=11)
    skopeo.copy(f"oci:{write_layout(tmp_path / 'source', {'t1': image})}:t1",
                reference(server.port, "foo/new:latest"))
    config = json.loads(image.blobs[image.config])
    client = v1_client(server.port)
    top = client.get_repository_tags("foo", "new")["latest"]
    ancestry = client.get_image_ancestry(top)
    assert len(ancestry) == 2 and ancestry[0] == top
    bases_first = list(reversed(ancestry))
    for image_id, digest in zip(bases_first, image.layers):
        assert v1_layer(client, image_id) == image.blobs[digest]
    document = client.get_image_layer(top)
    assert (document["id"], document["parent"]) == (top, ancestry[1])
    assert document["config"] == config["config"]
    assert client.get_image_layer(ancestry[1])["container_config"] == {"Cmd": ["layer 0"]}

    out = npm_pull(npm_client, server.port, "foo/new", "new")
    assert out["images"] == [{"id": image_id} for image_id in bases_first]
    assert (out["tags"], out["ancestry"]) == ({"latest": top}, ancestry)
    assert out["layers"] == {image_id: digest.split(":")[1]
                             for image_id, digest in zip(bases_first, image.layers)}
    assert out["json"][top]["config"] == config["config"]
    assert out["search"]["results"] == [{"description": "", "name": "foo/new"}]


def test_a_docker_push_pulled_over_v1_then_the_latest_push_wins(docker_daemon, skopeo,
                                                                 tmp_path):
    """docker pushes over V2, a V1 client pulls it; a V1 push of the tag then wins in both."""
    image = build_image("amd64", (2000, 50_000), seed=12)
    archive = tmp_path / "image.tar"
    skopeo.copy(f"oci:{write_layout(tmp_path / 'source', {'t1': image})}:t1",
                f"docker-archive:{archive}:foo/mixed:latest")
    docker = docker_daemon.docker
    finished(docker("load", "--input", str(archive)))
    with running_twistreg(tmp_path, tmp_path / "storage") as server:
        name = f"127.0.0.1:{server.port}/foo/mixed:latest"
        try:
            finished(docker("tag", "foo/mixed:latest", name))
            finished(docker("push", name, timeout=CLIENT_TIMEOUT))
            pushed = json.loads(server.request("GET", "/v2/foo/mixed/manifests/latest", headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json"}).body)
            client = v1_client(server.port)
            top = client.get_repository_tags("foo", "mixed")["latest"]
            bases_first = list(reversed(client.get_image_ancestry(top)))
            assert [digest_of(v1_layer(client, image_id)) for image_id in bases_first] == [
                layer["digest"] for layer in pushed["layers"]]

            push_v1(server, BASE, BASE_LAYER)
            assert server.request("PUT", "/v1/repositories/foo/mixed/tags/latest",
                                  json.dumps(BASE).encode()).status == 200
            assert client.get_repository_tags("foo", "mixed") == {"latest": BASE}
            finished(docker("rmi", "--force", name, "foo/mixed:latest"))
            finished(docker("pull", name, timeout=CLIENT_TIMEOUT))
            found = json.loads(finished(docker("image", "inspect", name)))[0]
            assert found["RootFS"]["Layers"] == [digest_of(BASE_TAR)]
        finally:
            docker("rmi", "--force", name, "foo/mixed:latest")
