"""
Passwords and read-only mode against skopeo, on local storage and S3, served by two workers:
a writer pushes with C{--creds}, a reader pulls and cannot push, no password no access; a
HUP makes the registry read-only, and a push is then refused with a clear error while pulls
go on.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import test_v2_clients as v2_clients
from tests.server import Server
from tests.test_htpasswd import write_htpasswd
from tests.test_v2_clients import (
    build_image,
    finished,
    layout_blobs,
    reference,
    write_layout,
)

pytestmark = pytest.mark.integration

USERS = {"writer": "w-Secret1", "reader": "r-Secret2"}


@pytest.fixture(scope="module")
def skopeo_cli(tmp_path_factory) -> v2_clients.Skopeo:
    return v2_clients.skopeo.__wrapped__(tmp_path_factory)


def write_config(backend, tmp_path: Path, **keys) -> Path:
    """The backend's settings (S3's keys, or a standalone local registry) with C{keys}."""
    if backend.kind == "s3":
        flavor = yaml.safe_load(backend.config.read_text())["dev"]
    else:
        flavor = {"standalone": True}
    flavor.update(keys)
    path = tmp_path / "gate-config.yml"
    path.write_text(yaml.safe_dump({"dev": flavor}))
    return path


@contextlib.contextmanager
def two_workers(backend, tmp_path: Path, config: Path) -> Iterator[Server]:
    server = backend.server(tmp_path, "--config", str(config), workers=2).start()
    try:
        server.wait_for_workers(2)
        yield server
    finally:
        server.stop()
        server.kill_all()


def copy(skopeo, source: str, destination: str, *options: str):
    return skopeo.run("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *options,
                      source, destination)


def test_passwords_with_skopeo(skopeo_cli, backend, tmp_path):
    htpasswd = write_htpasswd(tmp_path / "htpasswd", USERS)
    config = write_config(backend, tmp_path, auth={"htpasswd": {
        "path": str(htpasswd), "realm": "Gate test", "readers": ["reader"]}})
    image = build_image("amd64", (3000, 60_000), seed=11)
    source = write_layout(tmp_path / "source", {"t1": image})
    with two_workers(backend, tmp_path, config) as server:
        pushed = reference(server.port, "foo/img:1")
        # No password, a wrong one, a reader's: no push.
        anonymous = copy(skopeo_cli, f"oci:{source}:t1", pushed)
        # skopeo says a 401 in its own words, whatever the message.
        assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr
        wrong = copy(skopeo_cli, f"oci:{source}:t1", pushed, "--dest-creds", "writer:guess")
        assert wrong.returncode != 0 and "unauthorized" in wrong.stderr
        refused = copy(skopeo_cli, f"oci:{source}:t1", pushed,
                       "--dest-creds", f"reader:{USERS['reader']}")
        assert refused.returncode != 0 and "denied" in refused.stderr.lower()
        assert "r-Secret2" not in server.text() and "guess" not in server.text()
        # The writer pushes; the reader pulls it back, blob for blob.
        finished(copy(skopeo_cli, f"oci:{source}:t1", pushed,
                      "--dest-creds", f"writer:{USERS['writer']}"))
        pulled = tmp_path / "pulled"
        finished(copy(skopeo_cli, pushed, f"oci:{pulled}:back",
                      "--src-creds", f"reader:{USERS['reader']}"))
        assert layout_blobs(pulled) == layout_blobs(source)
        inspected = skopeo_cli.run("inspect", "--tls-verify=false", "--creds",
                                   f"reader:{USERS['reader']}", pushed)
        assert json.loads(finished(inspected))["Digest"] == image.digest
        assert skopeo_cli.inspect(pushed).returncode != 0
        # The challenge docker learns from, and V1's answer to the same.
        base = server.request("GET", "/v2/")
        assert (base.status, base.headers["WWW-Authenticate"]) == (401, 'Basic realm="Gate test"')
        v1 = server.request("GET", "/v1/repositories/foo/img/tags")
        assert (v1.status, v1.json()) == (401, {"error": "Requires authorization"})
        assert server.request("GET", "/v1/_ping").status == 200
        for secret in USERS.values():
            assert secret not in server.text()


def test_readonly_after_a_hup_with_skopeo(skopeo_cli, backend, tmp_path):
    image = build_image("amd64", (2000, 40_000), seed=12)
    source = write_layout(tmp_path / "source", {"t1": image})
    config = write_config(backend, tmp_path)
    with two_workers(backend, tmp_path, config) as server:
        pushed = reference(server.port, "foo/img:1")
        finished(copy(skopeo_cli, f"oci:{source}:t1", pushed))
        old = server.worker_pids()
        write_config(backend, tmp_path, readonly=True)
        server.signal(signal.SIGHUP)
        server.wait_for(lambda: set(old) <= set(server.worker_pids("exited"))
                        and len(server.worker_pids()) >= len(old) + 2)
        refused = copy(skopeo_cli, f"oci:{source}:t1", reference(server.port, "foo/img:2"))
        assert refused.returncode != 0
        assert "registry is in read-only mode" in refused.stderr.lower(), refused.stderr
        pulled = tmp_path / "pulled"
        finished(copy(skopeo_cli, pushed, f"oci:{pulled}:back"))
        assert layout_blobs(pulled) == layout_blobs(source)
        v1 = server.request("PUT", "/v1/repositories/foo/img/tags/x", body=b'"abc"')
        assert (v1.status, v1.json()) == (405, {"error": "Registry is in read-only mode"})
        deleted = skopeo_cli.run("delete", "--tls-verify=false", pushed)
        assert deleted.returncode != 0
        assert json.loads(finished(skopeo_cli.inspect(pushed)))["Digest"] == image.digest
