"""
A real PostgreSQL for the tests: initdb in a temporary directory, started on 127.0.0.1 with
an ephemeral port and its socket in that directory, stopped and removed afterwards.

As root (CI), the server runs as the C{postgres} user (PostgreSQL refuses root), or as
C{nobody} where Debian's package did not create that user.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

_BINARIES = ("initdb", "pg_ctl")


def find_binaries() -> dict[str, str] | None:
    """
    C{initdb} and C{pg_ctl}: Debian's newest C{/usr/lib/postgresql/<version>/bin} first (other
    builds may shadow it on PATH), else PATH; None when either is missing.
    """

    def version(directory: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", directory))

    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        paths = {name: os.path.join(directory, name) for name in _BINARIES}
        if all(os.access(path, os.X_OK) for path in paths.values()):
            return paths
    found = {name: shutil.which(name) for name in _BINARIES}
    if all(found.values()):
        return found  # type: ignore[return-value]
    return None


def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if find_binaries() is None:
        return (
            "PostgreSQL is not installed (no initdb and pg_ctl in /usr/lib/postgresql/*/bin"
            " or on PATH; Debian package postgresql)"
        )
    if importlib.util.find_spec("psycopg") is None:
        return "the psycopg client library is not installed (pip install 'psycopg[binary]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """
    One PostgreSQL cluster; L{create_database} gives each test an empty database.

    @ivar port: the TCP port on 127.0.0.1, once started.
    """

    def __init__(self, binaries: dict[str, str]) -> None:
        self._binaries = binaries
        self._directory = tempfile.mkdtemp(prefix="twistreg-pg-")
        self._data = os.path.join(self._directory, "data")
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = _server_account()
            os.chown(self._directory, account.pw_uid, account.pw_gid)
            self._user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.port = 0
        self._databases = 0

    def _run(self, *command: str, timeout: float = 60) -> None:
        result = subprocess.run(
            command, cwd=self._directory, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=timeout, **self._user,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}")

    def start(self) -> PostgresServer:
        """initdb (trust, UTF-8, no fsync), then start; retried when the port was taken."""
        self._run(
            self._binaries["initdb"], "-D", self._data, "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )
        for _ in range(2):
            try:
                self._start_on_free_port()
                return self
            except RuntimeError:
                time.sleep(0.2)
        self._start_on_free_port()
        return self

    def _start_on_free_port(self) -> None:
        self.port = _free_port()
        options = (
            f"-p {self.port} -k {self._directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            self._binaries["pg_ctl"], "-D", self._data,
            "-l", os.path.join(self._directory, "log"), "-o", options, "-w", "start",
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        try:
            if os.path.exists(os.path.join(self._data, "postmaster.pid")):
                self._run(self._binaries["pg_ctl"], "-D", self._data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self._directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The C{postgresql://} URL of one database, as the config key gives it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg  # here: the suite imports this module whether psycopg is installed or not

        self._databases += 1
        name = f"twistreg_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _server_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root needs a postgres or nobody user to run PostgreSQL")
