"""
Real servers for integration tests: C{twist twistreg} in a child process on 127.0.0.1, an
ephemeral port and a temporary storage directory, talked to over real HTTP.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SERVING = re.compile(r"twistreg serving .* on 127\.0\.0\.1:(\d+)")


def plugin_path(tmp: Path) -> str:
    """
    A C{PYTHONPATH} that runs the source tree: a drop-in C{twisted/plugins} folder holding
    the plugin, then the project root.
    """
    plugins = tmp / "plugins" / "twisted" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "twistreg_plugin.py"
    if not link.exists():
        link.symlink_to(ROOT / "twisted_plugins" / "twistreg_plugin.py")
    return os.pathsep.join([str(tmp / "plugins"), str(ROOT)])


def plugin_module() -> types.ModuleType:
    """The source tree's C{twisted_plugins/twistreg_plugin.py}, imported (not an installed copy)."""
    spec = importlib.util.spec_from_file_location(
        "twistreg_plugin_under_test", ROOT / "twisted_plugins" / "twistreg_plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Client:
    """HTTP/1.1 to a server on 127.0.0.1:C{port}."""

    def __init__(self, port: int = 0) -> None:
        self.port = port

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None,
    ) -> Response:
        """One request on a fresh connection."""
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()


class Server(Client):
    """
    C{twist twistreg} running in a child process.

    @ivar port: the port it listens on, once L{start} returned.
    @ivar output: every line it printed so far.
    @param workers: C{--workers}; 0 (the default) serves in the one process. With workers,
        L{start} returns once the first worker is ready (the master's "serving" line): see
        L{wait_for_workers} for the others.
    @param file_limit: the soft and hard limits on open files it starts with.
    """

    def __init__(
        self, tmp: Path, storage: Path, *args: str, env: dict | None = None,
        listen: tuple[str, ...] = ("--listen", "tcp:0:interface=127.0.0.1"),
        workers: int = 0, file_limit: int | None = None,
    ):
        super().__init__()
        self._file_limit = file_limit
        self.storage = storage
        self._listen = listen
        self._workers = workers
        self.output: list[str] = []
        self._tmp = tmp
        self._args = args
        self._env = env or {}
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 30, wait: bool = True) -> Server:
        env = dict(os.environ, PYTHONPATH=plugin_path(self._tmp), PYTHONUNBUFFERED="1")
        env.pop("DOCKER_REGISTRY_CONFIG", None)
        env.pop("SETTINGS_FLAVOR", None)
        env.update(self._env)
        command = [
            sys.executable, "-m", "twisted", "twistreg",
            *self._listen,
            "--storage-path", str(self.storage),
            "--workers", str(self._workers),
            *self._args,
        ]
        # A session of its own: kill_all() reaches the master and every worker it started.
        self._process = subprocess.Popen(
            command, cwd=self._tmp, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=self._limit_files,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait and not self._ready.wait(timeout):
            self.stop()
            raise AssertionError("server did not start:\n" + "".join(self.output))
        return self

    def _limit_files(self) -> None:
        """In the child: both limits on open files at C{file_limit}, when given."""
        if self._file_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self._file_limit, self._file_limit))

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line)
            match = _SERVING.search(line)
            if match and not self._ready.is_set():
                self.port = int(match.group(1))
                self._ready.set()

    def wait(self, timeout: float = 30) -> int:
        """Wait for the server to exit on its own; its exit status."""
        assert self._process is not None
        status = self._process.wait(timeout)
        assert self._reader is not None
        self._reader.join(timeout)  # the last lines, up to the end of the output
        return status

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server and return its exit status."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    @property
    def pid(self) -> int:
        """The master's process id (the only process with C{workers=0})."""
        assert self._process is not None
        return self._process.pid

    def signal(self, sig: int) -> None:
        """Send C{sig} to the master."""
        os.kill(self.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL whatever is left of the server's process group (test clean-up)."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._process.wait()

    def text(self) -> str:
        return "".join(self.output)

    def worker_pids(self, event: str = "ready") -> list[int]:
        """Workers the master logged as C{ready} (or C{spawned}, C{exited} ...), in order."""
        pattern = re.compile(rf"\bworker (\d+) {event}\b")
        return [int(m.group(1)) for line in list(self.output) for m in pattern.finditer(line)]

    def wait_for(self, predicate, timeout: float = 15) -> None:
        """Wait until C{predicate()} holds; the output so far in the error otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time; output:\n" + self.text())
            time.sleep(0.02)

    def wait_for_workers(self, count: int, timeout: float = 20) -> list[int]:
        """The first C{count} workers ready."""
        self.wait_for(lambda: len(self.worker_pids()) >= count, timeout)
        return self.worker_pids()[:count]


class Response:
    """A complete answer: status, headers, body."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


def wait_until(predicate, timeout: float = 10) -> None:
    """Poll C{predicate} until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def unix_get(path: str, target: str = "/v1/_ping") -> bytes:
    """An HTTP/1.0 GET over a UNIX socket; the whole answer, headers included."""
    import socket

    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(path)
        client.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while data := client.recv(65536):
            answer += data
        return answer
    finally:
        client.close()
