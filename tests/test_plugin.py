"""C{twist twistreg} as an operator runs it: options, listeners, logs and start-up errors."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from tests.server import Server, plugin_path, unix_get
from tests.test_pool import alive
from tests.test_storage_local import read_only

pytestmark = pytest.mark.integration


def twist(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """C{twist twistreg ARGS} run to its end (warning filters kept: see .ci/run)."""
    env = {"PYTHONPATH": plugin_path(tmp_path),
           "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "")}
    return subprocess.run([sys.executable, "-m", "twisted", "twistreg", *args], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_help_lists_the_options(tmp_path):
    out = twist(tmp_path, "--help")
    assert out.returncode == 0
    for option in ("--port", "--listen", "--config", "--flavor", "--storage-path",
                   "--workers", "--access-log", "--max-requests", "--max-requests-jitter",
                   "--timeout", "--graceful-timeout", "--max-worker-memory", "--pidfile"):
        assert option in out.stdout


def test_logs_are_lines_and_access_log(tmp_path, storage):
    """Off a terminal the log is one readable line per event; the access log has its fields."""
    access = tmp_path / "access.log"
    running = Server(tmp_path, storage, "--access-log", str(access)).start()
    try:
        r = running.request("GET", "/v1/images/" + "a" * 64 + "/json",
                            headers={"User-Agent": "docker/1.5.0"})
        assert r.status == 404
    finally:
        assert running.stop() in (0, -15)  # twist re-raises the signal it stopped on
    output = "".join(running.output)
    assert "\x1e" not in output and not output.lstrip().startswith("{")
    assert "twistreg serving local storage" in output
    line = access.read_text()
    assert f'"GET /v1/images/{"a" * 64}/json HTTP/1.1" 404 28 ' in line
    assert line.rstrip().endswith('"docker/1.5.0" -')


def test_unix_socket_and_second_listener(tmp_path, storage):
    sock_path = tmp_path / "registry.sock"
    running = Server(tmp_path, storage, "--listen", f"unix:{sock_path}",
                     listen=("--listen", "tcp:0:interface=127.0.0.1")).start()
    try:
        assert running.request("GET", "/v1/_ping").status == 200
        answer = unix_get(str(sock_path))
        assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"{}")
    finally:
        running.stop()


def test_tls_listener(tmp_path, storage):
    pytest.importorskip("OpenSSL")
    from tests.tls import make_certificate

    key, cert = make_certificate(tmp_path)
    running = Server(tmp_path, storage,
                     listen=("--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}"
                             f":certKey={cert}"))
    running.start()
    try:
        import ssl

        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        connection = http.client.HTTPSConnection("127.0.0.1", running.port, context=context,
                                                 timeout=30)
        connection.request("GET", "/v1/_ping")
        assert connection.getresponse().status == 200
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("dev:\n  storage: gcs\n",
         "storage driver 'gcs' is not supported (supported: local, file, s3)"),
        ("prod:\n  storage: local\n",
         "The specified flavor (dev) is missing in your config file"),
        (None, "config.yml"),
    ],
)
def test_config_errors_exit_1_with_one_line(tmp_path, storage, config, message):
    path = tmp_path / "config.yml"
    if config is not None:
        path.write_text(config)
    running = Server(tmp_path, storage, "--config", str(path)).start(wait=False)
    assert running.wait() == 1
    output = "".join(running.output)
    assert message in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_port_in_use_exits_1(tmp_path, storage):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    running = Server(tmp_path, storage,
                     listen=("--listen", f"tcp:{port}:interface=127.0.0.1")).start(wait=False)
    try:
        assert running.wait() == 1
    finally:
        busy.close()
    output = "".join(running.output)
    assert "twistreg: cannot start:" in output and "Traceback" not in output


def test_config_file_and_flavor(tmp_path, storage):
    path = tmp_path / "config.yml"
    path.write_text(
        "common: &common\n  issue: '\"hello\"'\n  storage_path: /nonexistent\n  standalone: true\n"
        "prod:\n  <<: *common\n  debug: _env:DEBUG:false\n"
    )
    running = Server(tmp_path, storage, "--config", str(path), "--flavor", "prod",
                     env={"DEBUG": "true"}).start()
    try:
        assert running.request("GET", "/").body == json.dumps('"hello"').encode()
        r = running.request("GET", "/v1/_ping")
        assert r.headers["X-Docker-Registry-Config"] == "prod"
        assert set(r.json()) == {"host", "launch", "versions"}
        image = "c" * 64
        running.request("PUT", f"/v1/images/{image}/json", json.dumps({"id": image}).encode())
        assert (storage / "images" / image / "json").exists()  # --storage-path wins
    finally:
        running.stop()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_unknown_search_index_version_stops_the_server(tmp_path, storage, workers):
    import sqlite3

    database = sqlite3.connect(storage / "docker-registry.db")
    database.execute("CREATE TABLE version (id INTEGER NOT NULL PRIMARY KEY)")
    database.execute("INSERT INTO version VALUES (2)")
    database.commit()
    database.close()
    running = Server(tmp_path, storage, "--workers", workers).start(wait=False)
    assert running.wait() == 1
    running.wait_for(lambda: "twistreg: unrecognized search index version 2" in running.text())
    # Workers the pool started before the master found out stop with it.
    spawned = running.worker_pids("spawned")
    assert len(spawned) == int(workers)
    assert not any(alive(pid) for pid in spawned)


def test_version_is_twistregs(tmp_path):
    from importlib.metadata import version

    out = twist(tmp_path, "--version")
    assert (out.returncode, out.stdout, out.stderr) == (0, f"twistreg {version('twistreg')}\n",
                                                        "")


@pytest.mark.parametrize(("args", "message"), [
    (("--port", "abc"), "twistreg: option --port must be a whole number from 0 to 65535,"
     " not 'abc'"),
    (("--workers", "abc"), "twistreg: option --workers must be a whole number >= 0, not 'abc'"),
    (("--access-log", "/nonexistent/directory/access.log"),
     "twistreg: cannot open the access log /nonexistent/directory/access.log:"
     " No such file or directory"),
    (("--pidfile", "/nonexistent/directory/twistreg.pid"),
     "twistreg: cannot write the pidfile /nonexistent/directory/twistreg.pid:"
     " No such file or directory"),
])
@pytest.mark.parametrize("workers", ["0", "2"])
def test_start_errors_are_one_line(tmp_path, storage, args, message, workers):
    out = twist(tmp_path, "--listen", "tcp:0:interface=127.0.0.1", "--storage-path",
                str(storage), "--workers", workers, *args)
    assert (out.returncode, out.stdout + out.stderr) == (1, message + "\n")


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_storage_path_that_cannot_be_written_is_one_line(tmp_path, workers):
    unwritable = tmp_path / "read-only"
    unwritable.mkdir()
    with read_only(unwritable):
        for path, problem in ((unwritable, "cannot write to"),
                              (unwritable / "storage", "cannot create")):
            out = twist(tmp_path, "--listen", "tcp:0:interface=127.0.0.1", "--storage-path",
                        str(path), "--workers", workers)
            assert out.returncode == 1 and out.stdout == ""
            assert re.fullmatch(rf"twistreg: {problem} storage path {path}: "
                                r"(Operation not permitted|Permission denied)\n", out.stderr)
