"""
The process pool for real: a master and worker processes on 127.0.0.1, under load, killed,
stopped, reloaded and recycled. Every process is killed at the end of each test.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server import Server, plugin_path, unix_get, wait_until

pytestmark = pytest.mark.integration

MIB = 1 << 20
# Debug mode: every answer names its worker (X-Twistreg-Worker).
DEBUG_CONFIG = "dev:\n  debug: true\n  standalone: true\n"


@pytest.fixture
def pool(tmp_path, storage):
    """Start a pool server (debug mode, so answers name their worker); all killed after."""
    servers: list[Server] = []

    def start(*args: str, workers: int = 2, config: str = DEBUG_CONFIG, wait: bool = True,
              **kwargs) -> Server:
        path = tmp_path / "config.yml"
        path.write_text(config)
        server = Server(tmp_path, storage, "--config", str(path), *args, workers=workers,
                        **kwargs)
        servers.append(server)
        server.start(wait=wait)
        if wait:
            server.wait_for_workers(workers)
        return server

    yield start
    for server in servers:
        server.kill_all()


def alive(pid: int) -> bool:
    """Whether C{pid} runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Load:
    """
    Client threads requesting C{path} in a loop until stopped: C{fresh} threads open a
    connection per request, the others keep theirs alive (reconnecting when the server
    closes it after a response, as HTTP clients do).
    """

    def __init__(self, server: Server, fresh: int = 2, keep_alive: int = 0,
                 path: str = "/v1/_ping") -> None:
        self._server = server
        self._path = path
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.workers: Counter[str] = Counter()
        self._threads = [threading.Thread(target=self._run, args=(True,)) for _ in range(fresh)]
        self._threads += [threading.Thread(target=self._run, args=(False,))
                          for _ in range(keep_alive)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self

    def _run(self, fresh: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = self._server.connection(timeout=10)
            try:
                connection.request("GET", self._path)
                response = connection.getresponse()
                response.read()
                outcome = response.status
                worker = response.headers.get("X-Twistreg-Worker", "?")
                closing = fresh or response.will_close
            except (OSError, http.client.HTTPException) as error:
                outcome, worker, closing = repr(error), "?", True
            with self._lock:
                if outcome == 200:
                    self.ok += 1
                    self.workers[worker] += 1
                else:
                    self.failures.append(str(outcome))
            if closing:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def cmdline(pid: int) -> str:
    """What C{ps} shows as the process's command line."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def test_workers_share_the_port(pool, tmp_path):
    """Concurrent requests are answered by more than one worker; --pidfile names the master."""
    pidfile = tmp_path / "master.pid"
    server = pool("--pidfile", str(pidfile), workers=2)
    workers = server.wait_for_workers(2)
    assert int(pidfile.read_text()) == server.pid
    # "serving" is said once a worker is: the master binding the port is not serving yet.
    lines = server.text().splitlines()
    serving = next(n for n, line in enumerate(lines) if "twistreg serving" in line)
    first_ready = next(n for n, line in enumerate(lines) if re.search(r"worker \d+ ready", line))
    assert first_ready < serving
    # Each process says what it is in ps.
    assert cmdline(server.pid).startswith("twistreg: master [")
    assert all(cmdline(pid).startswith("twistreg: worker [") for pid in workers)
    with ThreadPoolExecutor(8) as executor:
        answers = list(executor.map(lambda _: server.request("GET", "/v1/_ping"), range(200)))
    assert [a.status for a in answers] == [200] * 200
    answered = Counter(a.headers["X-Twistreg-Worker"] for a in answers)
    assert set(answered) == {str(pid) for pid in workers}
    assert server.stop() in (0, -signal.SIGTERM)
    assert not pidfile.exists()
    assert not any(alive(pid) for pid in workers)
    assert "Traceback" not in server.text()


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(pool):
    server = pool(workers=2)
    victim, survivor = server.wait_for_workers(2)
    load = Load(server, fresh=2).start()
    try:
        wait_until(lambda: load.ok >= 20, timeout=30)
        os.kill(victim, signal.SIGKILL)
        server.wait_for(lambda: len(server.worker_pids()) == 3, timeout=30)
        replacement = server.worker_pids()[2]
        served_before = load.workers[str(survivor)]
        # Both the survivor and the replacement answer while the load goes on.
        wait_until(lambda: load.workers[str(replacement)] > 0
                   and load.workers[str(survivor)] > served_before, timeout=30)
    finally:
        load.stop()
    # Only a request the killed worker had already accepted may fail: one per client.
    assert len(load.failures) <= 2, load.failures
    assert f"worker {victim} was killed by SIGKILL" in server.text()


def test_sigterm_lets_a_large_upload_finish(pool, storage):
    server = pool("--graceful-timeout", "60", workers=2)
    workers = server.wait_for_workers(2)
    image = "d" * 64
    r = server.request("PUT", f"/v1/images/{image}/json", f'{{"id": "{image}"}}'.encode(),
                       {"Content-Type": "application/json"})
    assert r.status == 200
    size = 256 * MIB
    chunk = bytes(range(256)) * (MIB // 256)
    connection = server.connection(timeout=60)
    connection.putrequest("PUT", f"/v1/images/{image}/layer")
    connection.putheader("Content-Length", str(size))
    connection.endheaders()
    for sent in range(0, size, MIB):
        if sent == 16 * MIB:
            server.signal(signal.SIGTERM)
            # The rest of the body is sent once every worker drains, mid-upload.
            server.wait_for(lambda: all(f"worker {pid} draining" in server.text()
                                        for pid in workers), timeout=30)
        connection.send(chunk)
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"true")
    connection.close()
    assert server.wait(30) in (0, -signal.SIGTERM)
    assert (storage / "images" / image / "layer").stat().st_size == size
    assert not any(alive(pid) for pid in workers)
    assert "drain timed out" not in server.text()


def test_hup_rolls_the_workers_without_a_failed_request(pool):
    server = pool(workers=2)
    old = server.wait_for_workers(2)
    load = Load(server, fresh=2, keep_alive=2).start()
    try:
        wait_until(lambda: load.ok >= 20, timeout=30)
        server.signal(signal.SIGHUP)
        server.wait_for(lambda: len(server.worker_pids()) == 4
                        and set(old) <= set(server.worker_pids("exited")), timeout=60)
        new = server.worker_pids()[2:]
        wait_until(lambda: all(load.workers[str(pid)] for pid in new), timeout=30)
    finally:
        load.stop()
    assert load.failures == []
    assert "reloading: starting 2 new workers (generation 1)" in server.text()


def test_max_requests_recycles_without_a_failed_request(pool):
    server = pool("--max-requests", "50", "--max-requests-jitter", "10", workers=2)
    load = Load(server, fresh=2, keep_alive=1).start()
    try:
        server.wait_for(lambda: len(server.worker_pids("exited")) >= 3, timeout=60)
    finally:
        load.stop()
    assert load.failures == []
    assert load.ok >= 150
    recycles = re.findall(r"worker (\d+) asks to be recycled: served (\d+) requests",
                          server.text())
    assert recycles and all(50 <= int(n) <= 60 for _pid, n in recycles)
    # Logged once each, by the master (the worker only asks).
    assert len({pid for pid, _n in recycles}) == len(recycles)
    # The replacements were started before the recycled workers stopped.
    assert len(server.worker_pids()) >= 5


def test_a_stopped_worker_is_detected_and_replaced(pool):
    server = pool("--timeout", "2", workers=2)
    victim, survivor = server.wait_for_workers(2)
    os.kill(victim, signal.SIGSTOP)
    try:
        server.wait_for(lambda: len(server.worker_pids()) == 3, timeout=30)
        # Logged once the master reaped it (a zombie already counts as not alive).
        server.wait_for(lambda: f"worker {victim} was killed by SIGKILL" in server.text(),
                        timeout=30)
    finally:
        if alive(victim):
            os.kill(victim, signal.SIGKILL)
    assert re.search(rf"worker {victim} timed out \(silent for [0-9.]+s\)", server.text())
    for _ in range(10):
        assert server.request("GET", "/v1/_ping").status == 200


def test_workers_do_not_outlive_a_killed_master(pool):
    server = pool(workers=2)
    workers = server.wait_for_workers(2)
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=30)


def test_an_application_that_cannot_load_stops_the_server(pool):
    # The master finds the module (it never imports it); every worker fails to load it.
    server = pool("--wsgi", "tests.wsgi_app:no_such_application", workers=2, wait=False)
    assert server.wait(30) == 1
    last = ("twistreg: worker failed to load the application: cannot load the WSGI application"
            " 'tests.wsgi_app:no_such_application': AttributeError: module 'tests.wsgi_app' has"
            " no attribute 'no_such_application'\n")
    server.wait_for(lambda: server.text().endswith(last))
    text = server.text()
    spawned = server.worker_pids("spawned")
    assert spawned and not any(alive(pid) for pid in spawned)
    assert "twistreg serving" not in text


def test_what_every_worker_would_fail_on_stops_the_master_first(pool):
    server = pool("--access-log", "/nonexistent/directory/access.log", workers=2, wait=False)
    assert server.wait(30) == 1
    server.wait_for(lambda: "\n" in server.text())
    assert server.text() == ("twistreg: cannot open the access log"
                             " /nonexistent/directory/access.log: No such file or directory\n")


def test_unix_and_tls_listeners_survive_reloads_and_logs_reopen(pool, tmp_path):
    pytest.importorskip("OpenSSL")
    import ssl

    from tests.tls import make_certificate

    key, cert = make_certificate(tmp_path)
    sock_path = tmp_path / "registry.sock"
    access = tmp_path / "access.log"
    server = pool("--listen", f"unix:{sock_path}",
                  "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}",
                  "--access-log", str(access), workers=1)
    ports = re.compile(r"serving .* on 127\.0\.0\.1:(\d+)")
    # One serving line per listener, all once the worker is ready: the TLS one is second.
    server.wait_for(lambda: len(ports.findall(server.text())) == 2)
    tls_port = int(ports.findall(server.text())[1])

    def over_unix() -> bytes:
        return unix_get(str(sock_path))

    def over_tls() -> int:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        connection = http.client.HTTPSConnection("127.0.0.1", tls_port, context=context,
                                                 timeout=10)
        connection.request("GET", "/v1/_ping")
        status = connection.getresponse().status
        connection.close()
        return status

    assert over_unix().startswith(b"HTTP/1.0 200 ") and over_tls() == 200
    (old,) = server.worker_pids()
    server.signal(signal.SIGHUP)
    server.wait_for(lambda: old in server.worker_pids("exited"))
    # The old worker stopped listening; the socket file is the master's and stays.
    assert sock_path.exists()
    assert over_unix().startswith(b"HTTP/1.0 200 ") and over_tls() == 200
    access.rename(tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    server.wait_for(lambda: "reopened its log files" in server.text())
    assert server.request("GET", "/v1/_ping").status == 200
    server.wait_for(lambda: access.exists() and "/v1/_ping" in access.read_text())
    assert server.stop() in (0, -signal.SIGTERM)
    assert not sock_path.exists()


def test_ttin_and_ttou(pool):
    server = pool(workers=1)
    server.signal(signal.SIGTTIN)
    server.wait_for(lambda: len(server.worker_pids()) == 2)
    first = server.worker_pids()[0]
    server.signal(signal.SIGTTOU)
    server.wait_for(lambda: first in server.worker_pids("exited"))
    assert server.request("GET", "/v1/_ping").status == 200


def test_systemd_socket_activation(tmp_path, storage):
    """A socket inherited as systemd passes it (fd 3, LISTEN_PID, LISTEN_FDS...) is shared."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=plugin_path(tmp_path), PYTHONUNBUFFERED="1")
    # As systemd does: the socket at fd 3 (dup2 leaves it inheritable), and the server's own
    # pid in LISTEN_PID, which the shell knows ($$) and keeps through exec.
    script = 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec "$0" "$@"'
    process = subprocess.Popen(
        ["sh", "-c", script, sys.executable, "-m", "twisted", "twistreg",
         "--listen", "systemd:domain=INET:index=0", "--storage-path", str(storage),
         "--workers", "2"],
        preexec_fn=lambda: os.dup2(listener.fileno(), 3), close_fds=False, env=env,
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True)
    listener.close()
    try:
        # Connections made before the workers are ready wait in the socket's queue.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/v1/_ping")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
        assert f"on 127.0.0.1:{port}" in output
        assert len(re.findall(r"worker \d+ spawned", output)) == 2
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
