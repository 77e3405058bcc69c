"""
Several twistreg nodes on one S3 bucket, and what an operator meets when things fail: a node
killed mid-push, S3 going away and coming back, the maintenance commands.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from tests.backends import S3Tree
from tests.routes import new_id, new_name, push, put_tag
from tests.server import ROOT, Server, wait_until
from tests.test_plugin import twist
from tests.test_uploads import pattern, raw_request

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def tree(seaweedfs, s3_prefix, tmp_path):
    return S3Tree(seaweedfs, s3_prefix, tmp_path)


@pytest.fixture
def nodes(tree, tmp_path):
    """Two single-process nodes on the same prefix."""
    started = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        started.append(tree.server(tmp_path / name).start())
    yield started
    for node in started:
        node.stop()


def command(*args: str, config, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DOCKER_REGISTRY_CONFIG", None)
    env.pop("SETTINGS_FLAVOR", None)
    return subprocess.run([sys.executable, "-m", "twistreg", *args, "--config", str(config)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_what_one_node_writes_the_other_serves_at_once(nodes):
    a, b = nodes
    first, second, name = new_id(), new_id(), new_name()
    push(a, first, b"first layer")
    push(b, second, b"second layer")
    assert put_tag(a, f"foo/{name}", "latest", first).status == 200
    assert b.request("GET", f"/v1/repositories/foo/{name}/tags/latest").json() == first
    assert put_tag(b, f"foo/{name}", "latest", second).status == 200
    assert a.request("GET", f"/v1/repositories/foo/{name}/tags/latest").json() == second
    assert a.request("GET", f"/v1/images/{second}/layer").body == b"second layer"
    assert b.request("DELETE", f"/v1/repositories/foo/{name}/tags/latest").status == 200
    assert a.request("GET", f"/v1/repositories/foo/{name}/tags/latest").status == 404


def test_a_node_killed_mid_push_leaves_nothing_visible(nodes, tree, tmp_path):
    a, b = nodes
    image_id = new_id()
    push(a, image_id, layer=None)
    sock = raw_request(a, (f"PUT /v1/images/{image_id}/layer HTTP/1.1\r\nHost: x\r\n"
                           f"Content-Length: {64 * MiB}\r\n\r\n").encode())
    for piece in pattern(20 * MiB):
        sock.sendall(piece)
    wait_until(lambda: tree.uploading(f"images/{image_id}"))
    a.signal(signal.SIGKILL)
    sock.close()
    assert b.request("GET", f"/v1/images/{image_id}/layer").json() == {
        "error": "Image is being uploaded, retry later"}
    assert "layer" not in tree.names(f"images/{image_id}")
    # Left for a day, then purged (here: an age limit of 0 s).
    config = tmp_path / "purge.yml"
    config.write_text(tree.config.read_text().replace("dev:\n", "dev:\n  s3_upload_max_age: 0\n"))
    result = command("purge-uploads", config=config, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "removed 1 stale upload from s3 storage\n")
    assert not tree.uploading(f"images/{image_id}")


def test_fresh_uploads_are_not_purged(tree, tmp_path, seaweedfs):
    client = seaweedfs.boto3_client()
    client.create_multipart_upload(Bucket=seaweedfs.bucket,
                                   Key=tree.prefix.lstrip("/") + "/images/x/layer")
    result = command("purge-uploads", config=tree.config, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "removed 0 stale uploads from s3 storage\n")
    assert tree.uploading("images/x")


def test_reindex_from_an_s3_listing(nodes, tree, tmp_path):
    a, _ = nodes
    image_id, name = new_id(), new_name()
    push(a, image_id, b"layer")
    assert put_tag(a, f"foo/{name}", "latest", image_id).status == 200
    result = command("reindex", config=tree.config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reindexed 1 repository in ")


def test_s3_down_is_503_and_unhealthy_then_served_again(tree, tmp_path, seaweedfs):
    server = tree.server(tmp_path).start()
    try:
        image_id = new_id()
        push(server, image_id, b"layer")
        seaweedfs.kill()
        try:
            started = time.monotonic()
            r = server.request("GET", f"/v1/images/{image_id}/json")
            assert (r.status, r.json()) == (503, {"error": "Storage unavailable"})
            assert time.monotonic() - started < 5
            r = server.request("PUT", f"/v1/images/{new_id()}/json", b'{"id": "x"}')
            assert r.status in (400, 503)
            health = server.request("GET", "/_health")
            assert health.status == 503 and health.json()["storage"] != "ok"
        finally:
            seaweedfs.restart()
        wait_until(lambda: server.request("GET", f"/v1/images/{image_id}/json").status == 200,
                   timeout=30)
        wait_until(lambda: server.request("GET", "/_health").status == 200, timeout=30)
        assert server.request("GET", f"/v1/images/{image_id}/layer").body == b"layer"
        assert "Traceback" not in server.text()
    finally:
        server.stop()


def test_wrong_credentials_stop_start_up_with_one_line(tree, tmp_path):
    config = tmp_path / "wrong.yml"
    config.write_text(tree.config.read_text().replace("twistreg-test-secret", "wrong"))
    result = command("purge-uploads", config=config, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "refused the credentials" in result.stderr


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize(("change", "message"), [
    (("twistreg-test-secret", "wrong"), "refused the credentials to list it (403)"),
    ("boto_bucket: twistreg", "does not exist"),
])
def test_unusable_s3_stops_the_server_with_one_line(tree, tmp_path, workers, change, message):
    text = tree.config.read_text()
    if isinstance(change, tuple):
        text = text.replace(*change)
    else:
        text = text.replace(change, "boto_bucket: missing").replace(
            "s3_bucket: twistreg", "s3_bucket: missing")
    config = tmp_path / "bad.yml"
    config.write_text(text)
    out = twist(tmp_path, "--config", str(config), "--listen", "tcp:0:interface=127.0.0.1",
                "--workers", workers)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("twistreg: S3 bucket ") and out.stderr.count("\n") == 1
    assert out.stderr.endswith(message + "\n")


def test_storage_redirect_sends_clients_to_s3(tree, tmp_path):
    config = tmp_path / "redirect.yml"
    config.write_text(tree.config.read_text().replace(
        "dev:\n", "dev:\n  storage_redirect: true\n  storage_redirect_expires: 60\n"))
    server = Server(tmp_path, tree.prefix, "--config", str(config)).start()
    try:
        image_id = new_id()
        push(server, image_id, b"layer bytes")
        r = server.request("GET", f"/v1/images/{image_id}/layer")
        assert (r.status, r.body) == (302, b"")
        assert "X-Amz-Expires=60" in r.headers["Location"]
        with urllib.request.urlopen(r.headers["Location"]) as answer:
            assert answer.read() == b"layer bytes"
    finally:
        server.stop()


@pytest.mark.parametrize("flavor", ["s3", "prod"])
def test_the_stock_091_flavors_start(seaweedfs, tmp_path, flavor):
    """config_sample.yml as 0.9.1 shipped it, with its environment variables (encryption on)."""
    env = {"AWS_BUCKET": seaweedfs.bucket, "AWS_KEY": seaweedfs.access_key,
           "AWS_SECRET": seaweedfs.secret_key, "AWS_HOST": seaweedfs.host,
           "AWS_PORT": str(seaweedfs.port), "AWS_SECURE": "false",
           "AWS_CALLING_FORMAT": "boto.s3.connection.OrdinaryCallingFormat",
           "STORAGE_PATH": seaweedfs.fresh_prefix(), "SETTINGS_FLAVOR": flavor}
    sample = ROOT / "tests" / "data" / "config_sample_0.9.1.yml"
    server = Server(tmp_path, env["STORAGE_PATH"], "--config", str(sample), env=env).start()
    try:
        image_id = new_id()
        push(server, image_id, b"layer")
        assert server.request("GET", f"/v1/images/{image_id}/layer").body == b"layer"
    finally:
        server.stop()
    client = seaweedfs.boto3_client()
    key = f"{env['STORAGE_PATH'].lstrip('/')}/images/{image_id}/layer"
    assert client.head_object(Bucket=seaweedfs.bucket, Key=key)["ContentLength"] == 5


@pytest.fixture
def shared_nodes(tree, tmp_path, redis_server, postgresql):
    """Two nodes of two workers on one bucket, one Redis (both caches), one PostgreSQL."""
    config = tmp_path / "shared.yml"
    cache = {"host": redis_server.host, "port": redis_server.port}
    flavor = yaml.safe_load(tree.config.read_text())["dev"]
    flavor.update(cache=cache, cache_lru=cache, search_backend="postgresql",
                  sqlalchemy_index_database=postgresql.create_database())
    config.write_text(yaml.safe_dump({"dev": flavor}))
    started = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        started.append(Server(tmp_path / name, tree.prefix, "--config", str(config),
                              workers=2).start())
    yield started
    for node in started:
        node.stop()


def test_nodes_sharing_redis_and_postgresql_see_each_others_writes(shared_nodes, redis_server):
    a, b = shared_nodes
    first, second, name = new_id(), new_id(), new_name()
    push(a, first, b"first")
    push(a, second, b"second")
    # Read through b's cache first, then move the tag on a: b answers with the new one.
    for _ in range(4):
        assert put_tag(a, f"foo/{name}", "latest", first).status == 200
        assert b.request("GET", f"/v1/repositories/foo/{name}/tags/latest").json() == first
        assert put_tag(a, f"foo/{name}", "latest", second).status == 200
        assert b.request("GET", f"/v1/repositories/foo/{name}/tags/latest").json() == second
    assert b.request("GET", f"/v1/repositories/foo/{name}/properties").json() == {
        "access": "public"}
    assert a.request("PUT", f"/v1/repositories/foo/{name}/properties",
                     b'{"access": "private"}').status == 200
    for _ in range(4):
        assert b.request("GET", f"/v1/repositories/foo/{name}/properties").json() == {
            "access": "private"}
    assert b.request("GET", f"/v1/search?q={name}").json()["num_results"] == 1
    # Redis gone: still served, from S3; back: used again.
    redis_server.kill()
    try:
        assert put_tag(b, f"foo/{name}", "latest", first).status == 200
        assert a.request("GET", f"/v1/repositories/foo/{name}/tags/latest").json() == first
        assert a.request("GET", f"/v1/images/{first}/json").status == 200
    finally:
        redis_server.restart()
    wait_until(lambda: put_tag(a, f"foo/{name}", "latest", second).status == 200)
    assert b.request("GET", f"/v1/repositories/foo/{name}/tags/latest").json() == second


def test_s3_gone_mid_download_cuts_the_answer_short(tree, tmp_path, seaweedfs):
    server = tree.server(tmp_path).start()
    try:
        image_id, layer = new_id(), b"".join(pattern(48 * MiB))
        push(server, image_id, layer)
        connection = server.connection()
        connection.request("GET", f"/v1/images/{image_id}/layer")
        response = connection.getresponse()
        assert response.status == 200 and response.read(MiB) == layer[:MiB]
        seaweedfs.kill()
        try:
            with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
                response.read()
        finally:
            seaweedfs.restart()
        wait_until(lambda: "broke off" in server.text())
        assert "Traceback" not in server.text()
    finally:
        server.stop()


def test_s3_gone_mid_upload_stores_nothing(tree, tmp_path, seaweedfs):
    server = tree.server(tmp_path).start()
    try:
        image_id = new_id()
        push(server, image_id, layer=None)
        sock = raw_request(server, (f"PUT /v1/images/{image_id}/layer HTTP/1.1\r\nHost: x\r\n"
                                    f"Content-Length: {64 * MiB}\r\n\r\n").encode())
        pieces = pattern(64 * MiB)
        for _ in range(20):
            sock.sendall(next(pieces))
        seaweedfs.kill()
        try:
            sock.settimeout(30)
            try:
                for piece in pieces:
                    sock.sendall(piece)
                answer = sock.recv(65536)
            except (BrokenPipeError, ConnectionResetError):
                answer = b""
            sock.close()
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), server.text()
        finally:
            seaweedfs.restart()
        assert "layer" not in tree.names(f"images/{image_id}")
        # A restarted SeaweedFS may refuse writes a little longer than it refuses connections.
        wait_until(lambda: server.request(
            "PUT", f"/v1/images/{image_id}/layer", b"the layer").status == 200, timeout=60)
        assert server.request("GET", f"/v1/images/{image_id}/json").status == 400
        assert "Traceback" not in server.text()
    finally:
        server.stop()
