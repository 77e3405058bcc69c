"""
sd_notify: the datagrams against a real socket, the pool's readiness per generation, and the
server telling a fake service manager when it is ready, reloading and stopping.
"""

from __future__ import annotations

import signal
import socket
import time
import uuid

import pytest
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from tests.server import Server
from tests.test_arbiter import ProcessReactor
from tests.test_pool import Load, alive
from twistreg.server.arbiter import PoolConfig, PreforkService
from twistreg.server.notify import Notifier, monotonic_usec


class ServiceManager:
    """
    The service manager's end: a datagram socket in the abstract namespace (no file, so any
    user can reach it), as C{NOTIFY_SOCKET} names it, and the messages it received.
    """

    def __init__(self) -> None:
        self.address = f"@twistreg-test-{uuid.uuid4().hex}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + self.address[1:])
        self.messages: list[dict[str, str]] = []

    def receive(self, timeout: float = 5) -> dict[str, str] | None:
        """The next message as its assignments, or None after C{timeout} seconds."""
        self._socket.settimeout(timeout)
        try:
            data = self._socket.recv(4096)
        except socket.timeout:
            return None
        message = dict(line.split("=", 1) for line in data.decode().split("\n"))
        self.messages.append(message)
        return message

    def wait_for(self, key: str, timeout: float = 30) -> dict[str, str]:
        """The first message (from now) that sets C{key}; the ones before it are kept."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message:
                return message
        raise AssertionError(f"no {key} within {timeout}s; received {self.messages}")

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def manager():
    made = ServiceManager()
    yield made
    made.close()


# -- the datagrams -------------------------------------------------------------------------------


def test_ready_to_a_socket_path(tmp_path):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert Notifier(str(path)).ready("serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
        assert Notifier(str(path)).ready()
        assert sock.recv(4096) == b"READY=1"


def test_reloading_carries_the_monotonic_time_and_stopping(manager):
    notifier = Notifier(manager.address)
    before = monotonic_usec()
    assert notifier.reloading()
    message = manager.receive()
    assert message is not None and message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= monotonic_usec()
    # The clock systemd uses: CLOCK_MONOTONIC, as time.monotonic on Linux.
    assert abs(int(message["MONOTONIC_USEC"]) / 1e6 - time.monotonic()) < 5
    assert notifier.stopping()
    assert manager.receive() == {"STOPPING": "1", "STATUS": "stopping"}


def test_the_socket_is_taken_out_of_the_environment(manager):
    environ = {"NOTIFY_SOCKET": manager.address, "PATH": "/usr/bin"}
    notifier = Notifier.from_environ(environ)
    assert environ == {"PATH": "/usr/bin"}
    assert notifier.ready()
    assert manager.receive() == {"READY": "1"}


def test_without_a_manager_nothing_is_sent():
    notifier = Notifier.from_environ({})
    assert notifier.address is None
    assert not notifier.ready() and not notifier.reloading() and not notifier.stopping()


def test_an_unreachable_manager_is_logged_not_raised(tmp_path):
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        assert not Notifier(str(tmp_path / "gone")).ready()
    finally:
        globalLogPublisher.removeObserver(observer)
    [event] = [e for e in observer if "cannot notify" in e["log_format"]]
    assert event["address"] == str(tmp_path / "gone")


# -- the pool's readiness ------------------------------------------------------------------------


def test_the_pool_is_ready_once_each_generation_serves():
    reactor = ProcessReactor()
    calls: list[object] = []
    configs = iter([PoolConfig(app="x:y", workers=2), ValueError("not valid YAML")])

    def reload_config() -> PoolConfig:
        config = next(configs)
        if isinstance(config, Exception):
            raise config
        return config

    service = PreforkService(reactor, ["tcp:0:interface=127.0.0.1"],
                             PoolConfig(app="x:y", workers=2), reload_config=reload_config,
                             on_ready=calls.append, on_reloading=lambda: calls.append("reload"))
    service.startService()
    try:
        first = reactor.spawned[:2]
        first[0].ready()
        assert calls == []
        first[1].ready()
        assert calls == [0]
        first[1].ready()  # a repeated report announces nothing
        service.reload()
        assert calls == [0, "reload"]
        second = reactor.spawned[2:]
        second[0].ready()
        assert calls == [0, "reload"]
        second[1].ready()
        assert calls == [0, "reload", 1]
        # A configuration that cannot be used: the reload ends at once, on the same workers.
        service.reload()
        assert calls == [0, "reload", 1, "reload", 1]
        assert len(reactor.spawned) == 4
    finally:
        service.stopService()
        for process in reactor.live():
            process.end()


# -- the server ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_pool_notifies_ready_reloading_and_stopping(tmp_path, storage, manager):
    server = Server(tmp_path, storage, workers=2, env={"NOTIFY_SOCKET": manager.address})
    try:
        server.start()
        ready = manager.wait_for("READY")
        assert ready["STATUS"] == "serving (worker generation 0)"
        # Only the master may notify.
        for pid in server.wait_for_workers(2, timeout=5):
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert b"NOTIFY_SOCKET=" not in f.read()
        load = Load(server, fresh=2).start()
        try:
            server.signal(signal.SIGHUP)
            reloading = manager.wait_for("RELOADING")
            assert int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
            assert manager.wait_for("READY")["STATUS"] == "serving (worker generation 1)"
            server.wait_for_workers(4, timeout=5)
        finally:
            load.stop()
        assert load.failures == [] and load.ok > 0
        assert server.stop() in (0, -signal.SIGTERM)  # twist re-raises the signal
        assert manager.wait_for("STOPPING", timeout=5) == {"STOPPING": "1", "STATUS": "stopping"}
        assert not any(alive(pid) for pid in server.worker_pids())
    finally:
        server.kill_all()


@pytest.mark.integration
def test_in_process_mode_notifies_ready_and_stopping(tmp_path, storage, manager):
    server = Server(tmp_path, storage, env={"NOTIFY_SOCKET": manager.address})
    try:
        server.start()
        assert manager.wait_for("READY") == {"READY": "1", "STATUS": "serving"}
        assert server.request("GET", "/v1/_ping").status == 200
        assert server.stop() in (0, -signal.SIGTERM)  # twist re-raises the signal
        assert "STOPPING" in manager.wait_for("STOPPING", timeout=5)
    finally:
        server.kill_all()
