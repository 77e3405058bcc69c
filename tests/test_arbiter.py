"""
The process pool without processes: the arbiter against a recorded C{spawnProcess} on a
C{MemoryReactorClock}, and the worker's pieces (listeners, drain, spec, pipe) in memory.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys

import pytest
from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twistreg.server.arbiter import (
    BACKOFF_MAX,
    DRAIN_MARGIN,
    GIVE_UP_AFTER,
    KILL_DELAY,
    QUICK_STOP_TIMEOUT,
    Arbiter,
    FatalError,
    PoolConfig,
    PreforkService,
    ProcessLauncher,
    backoff,
)
from twistreg.server.drain import ConnectionTracker
from twistreg.server.interfaces import IWorkerApplication, IWorkerLauncher
from twistreg.server.listeners import (
    DEFAULT_BACKLOG,
    ListenSpec,
    UnsupportedListener,
    adopt,
    bind,
    parse_listen,
)
from twistreg.server.pidfile import PidFile
from twistreg.server.protocol import (
    EXIT_APP_LOAD_FAILED,
    EXIT_BOOT_FAILED,
    LineReader,
    Listener,
    WorkerSpec,
    encode,
)
from twistreg.server.scoreboard import SLOTS, AcceptBalancer, Scoreboard
from twistreg.server.signals import install_master_signals
from twistreg.server.worker import SiteApplication, Worker

# -- a recorded spawnProcess ---------------------------------------------------------------------


class FakeProcess:
    """The transport of a recorded spawn; the test plays the worker's part."""

    def __init__(self, reactor: ProcessReactor, protocol, args, env, child_fds, pid: int):
        self.reactor = reactor
        self.protocol = protocol
        self.args = args
        self.env = env
        self.child_fds = child_fds
        self.pid = pid
        self.signals: list[str] = []
        self.ended = False

    @property
    def spec(self) -> WorkerSpec:
        return WorkerSpec.from_json(self.args[-1])

    @property
    def control_fd(self) -> int:
        return next(fd for fd, value in self.child_fds.items() if value == "r")

    def signalProcess(self, number: int) -> None:
        if self.ended:
            raise error.ProcessExitedAlready()
        self.signals.append(signal.Signals(number).name[len("SIG"):])

    def say(self, *lines: str) -> None:
        data = b"".join(line.encode() + b"\n" for line in lines)
        self.protocol.childDataReceived(self.control_fd, data)

    def ready(self) -> FakeProcess:
        self.say("ready")
        return self

    def end(self, code: int = 0, sig: int | None = None) -> None:
        self.ended = True
        if sig is None and code == 0:
            reason = Failure(error.ProcessDone(0))
        else:
            reason = Failure(error.ProcessTerminated(None if sig else code, sig))
        self.protocol.processEnded(reason)


class ProcessReactor(MemoryReactorClock):
    """MemoryReactorClock with a C{spawnProcess} that records instead of forking."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []
        self._pids = 1000

    def spawnProcess(self, processProtocol, executable, args=(), env=None, path=None,
                     uid=None, gid=None, usePTY=False, childFDs=None):
        self._pids += 1
        process = FakeProcess(self, processProtocol, list(args), env, childFDs, self._pids)
        self.spawned.append(process)
        processProtocol.makeConnection(process)
        return process

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)

    def live(self) -> list[FakeProcess]:
        return [p for p in self.spawned if not p.ended]


class Pool:
    """An arbiter on a ProcessReactor, with one real listening socket (never accepted on)."""

    def __init__(self, workers: int = 2, rng: random.Random | None = None, **config):
        self.reactor = ProcessReactor()
        self.fatal: list[FatalError] = []
        self.ready: list[int] = []
        self.failed_reloads: list[str] = []
        self.socket = bind(parse_listen(self.reactor, "tcp:0:interface=127.0.0.1"))
        self.launcher = ProcessLauncher(self.reactor, [self.socket],
                                        environ={"PATH": "/usr/bin", "LANG": "C.UTF-8"})
        self.config = PoolConfig(app="tests.test_arbiter:make_app", workers=workers, **config)
        self.arbiter = Arbiter(self.reactor, self.launcher, self.config,
                               on_fatal=self.fatal.append, on_ready=self.ready.append,
                               on_reload_failed=self.failed_reloads.append, rng=rng)

    def start(self) -> Pool:
        self.arbiter.start()
        return self

    def close(self) -> None:
        self.socket.close()
        self.launcher.close()

    @property
    def spawned(self) -> list[FakeProcess]:
        return self.reactor.spawned

    def states(self) -> list[tuple[int | None, str]]:
        return [(w.pid, w.state) for w in self.arbiter.workers]

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Let time pass in steps, as the heartbeat check sees it."""
        while seconds > 0:
            self.reactor.advance(min(step, seconds))
            seconds -= step


@pytest.fixture
def pool():
    pools: list[Pool] = []

    def make(*args, **kwargs) -> Pool:
        made = Pool(*args, **kwargs)
        pools.append(made)
        return made.start()

    yield make
    for made in pools:
        made.close()




def worker_events(observer, kind: str) -> list[dict]:
    return [e for e in observer if e.get("worker_event") == kind]


# -- spawning ------------------------------------------------------------------------------------


def test_launcher_provides_the_interface(pool):
    p = pool(workers=1)
    verifyObject(IWorkerLauncher, p.launcher)


def test_spawns_fresh_interpreters_with_the_sockets_and_the_environment(pool):
    p = pool(workers=2)
    assert len(p.spawned) == 2
    process = p.spawned[0]
    assert process.args[0] == sys.executable
    assert process.args[-3:-1] == ["-m", "twistreg.server.worker"]
    # The environment is passed explicitly (spawnProcess's default is an empty one).
    assert process.env["PATH"] == "/usr/bin" and process.env["PYTHONUNBUFFERED"] == "1"
    # stdin a pipe (its end = master gone), output shared, the socket at 3, control at 4,
    # the scoreboard at 5.
    assert process.child_fds == {0: "w", 1: 1, 2: 2, 3: p.socket.fileno(), 4: "r",
                                 5: p.launcher.scoreboard.fd}
    spec = process.spec
    assert spec.listeners == (Listener(fd=3, kind="tcp", family="INET",
                                       description="tcp:0:interface=127.0.0.1"),)
    assert (spec.control_fd, spec.scoreboard_fd) == (4, 5)
    assert [process.spec.slot for process in p.spawned] == [0, 1]
    assert spec.app == "tests.test_arbiter:make_app"
    assert spec.heartbeat_interval == 5.0  # a quarter of the 30 s timeout, at most 5 s


def test_workers_start_in_starting_then_ready(pool, events):
    p = pool(workers=2)
    assert [state for _pid, state in p.states()] == ["starting", "starting"]
    p.spawned[0].ready()
    assert p.states() == [(1001, "ready"), (1002, "starting")]
    spawns = worker_events(events, "spawn")
    assert [e["pid"] for e in spawns] == [1001, 1002]
    assert worker_events(events, "ready")[0]["pid"] == 1001


def test_a_dead_worker_is_replaced_at_once(pool, events):
    p = pool(workers=2)
    for process in p.spawned:
        process.ready()
    p.spawned[0].end(sig=signal.SIGKILL)
    assert len(p.spawned) == 3 and p.spawned[2].ended is False
    death = worker_events(events, "exit")[0]
    assert death["pid"] == 1001 and death["signal"] == signal.SIGKILL
    assert "Perhaps out of memory?" in death["hint"]


def test_a_replacement_takes_the_free_scoreboard_slot(pool):
    p = pool(workers=3)
    for process in p.spawned:
        process.ready()
    board = p.launcher.scoreboard
    board.write(1, p.spawned[1].pid, 9, 1.0)
    p.spawned[1].end(code=1)
    assert p.spawned[3].spec.slot == 1
    assert board.read(1) == (0, 0, 0.0)  # cleared for the newcomer


def test_exit_code_is_logged(pool, events):
    p = pool(workers=1)
    p.spawned[0].ready().end(code=2)
    death = worker_events(events, "exit")[0]
    assert death["exit_code"] == 2 and death["log_level"].name == "error"


# -- heartbeats and timeouts ---------------------------------------------------------------------


def test_a_silent_worker_is_aborted_then_killed_and_replaced(pool, events):
    p = pool(workers=1, timeout=4.0)
    stuck = p.spawned[0].ready()
    p.advance(4.0)  # checked every second: silent for exactly 4 s is not yet too long
    assert stuck.signals == []
    p.advance(1.0)
    assert stuck.signals == ["ABRT"]
    assert p.states()[0][1] == "timed_out"
    # The replacement starts at once, not after the death.
    assert len(p.spawned) == 2
    timeout = worker_events(events, "timeout")[0]
    assert timeout["pid"] == stuck.pid and timeout["silence"] > 4.0
    p.advance(KILL_DELAY)
    assert stuck.signals == ["ABRT", "KILL"]
    stuck.end(sig=signal.SIGKILL)
    assert len(p.spawned) == 2


def test_heartbeats_keep_a_busy_worker_alive(pool):
    """A long transfer keeps the loop beating: it is never killed for being long."""
    p = pool(workers=1, timeout=4.0)
    busy = p.spawned[0].ready()
    for _ in range(40):
        p.advance(1.0)
        busy.say("beat 7")
    assert busy.signals == [] and p.arbiter.workers[0].served == 7


def test_a_worker_that_never_gets_ready_times_out(pool):
    p = pool(workers=1, timeout=2.0)
    p.advance(p.config.boot_timeout + 1)
    assert p.spawned[0].signals == ["ABRT"]


def test_timeout_zero_never_kills(pool):
    p = pool(workers=1, timeout=0)
    p.spawned[0].ready()
    p.advance(3600, step=10)
    assert p.spawned[0].signals == []


# -- boot failures -------------------------------------------------------------------------------


def test_repeated_boot_failures_back_off(pool):
    p = pool(workers=1)
    p.spawned[0].ready()  # it did load once: failures later are not fatal
    p.spawned[0].end(code=1)
    assert len(p.spawned) == 2
    p.spawned[1].end(code=1)  # died while booting: first failure, respawned at once
    assert len(p.spawned) == 3
    p.spawned[2].end(code=1)  # second failure in a row: wait 0.5 s
    assert len(p.spawned) == 3
    p.reactor.advance(0.49)
    assert len(p.spawned) == 3
    p.reactor.advance(0.02)
    assert len(p.spawned) == 4
    p.spawned[3].end(code=1)  # third: 1 s
    p.reactor.advance(0.99)
    assert len(p.spawned) == 4
    p.reactor.advance(0.02)
    assert len(p.spawned) == 5
    # A worker that gets ready resets the back-off.
    p.spawned[4].ready().end(code=1)
    assert len(p.spawned) == 6
    assert p.fatal == []


def test_backoff_grows_to_a_ceiling():
    assert [backoff(n) for n in range(1, 6)] == [0, 0.5, 1, 2, 4]
    assert backoff(40) == BACKOFF_MAX


@pytest.mark.parametrize("code", [EXIT_APP_LOAD_FAILED, EXIT_BOOT_FAILED])
def test_an_app_that_cannot_load_stops_the_server(pool, events, code):
    p = pool(workers=2)
    p.spawned[0].end(code=code)
    assert len(p.fatal) == 1 and f"exit code {code}" in str(p.fatal[0])
    assert len(p.spawned) == 2  # no respawn
    assert [e for e in events if e.get("pool_event") == "fatal"]


def test_the_reason_a_worker_cannot_load_is_reported(pool):
    p = pool(workers=1)
    p.spawned[0].say("failed config key search_database is required")
    p.spawned[0].end(code=EXIT_APP_LOAD_FAILED)
    assert str(p.fatal[0]) == (
        "worker failed to load the application: config key search_database is required")


def test_load_failure_while_others_serve_is_not_fatal(pool):
    """A HUP with a broken configuration: the running workers keep serving."""
    p = pool(workers=1)
    p.spawned[0].ready()
    p.arbiter.reload()
    p.spawned[1].end(code=EXIT_APP_LOAD_FAILED)
    assert p.fatal == []
    assert p.spawned[0].signals == []


@pytest.mark.parametrize("code", [EXIT_APP_LOAD_FAILED, EXIT_BOOT_FAILED])
def test_a_reload_whose_workers_cannot_load_is_abandoned(pool, code):
    p = pool(workers=2, timeout=0)
    old = [process.ready() for process in p.spawned]
    p.arbiter.reload(PoolConfig(app="tests.test_arbiter:make_app", workers=2, max_requests=7))
    first, second = p.spawned[2:]
    first.say("failed storage driver 's3' is not available in this version")
    first.end(code=code)
    # Once: the other new worker is stopped, none is started again, the old ones serve on.
    assert second.signals == ["TERM"]
    assert len(p.failed_reloads) == 1
    assert p.failed_reloads[0] == (
        f"worker failed to {'load the application' if code == 4 else 'boot'}: storage driver"
        " 's3' is not available in this version; generation 0 serves on")
    second.end(sig=signal.SIGTERM)
    p.advance(BACKOFF_MAX * 2)
    assert len(p.spawned) == 4 and p.fatal == [] and len(p.failed_reloads) == 1
    assert all(process.signals == [] for process in old)
    assert (p.arbiter.generation, p.arbiter.config.max_requests) == (0, 0)
    # A worker of the old generation that dies is replaced as one of its own.
    old[0].end(sig=signal.SIGKILL)
    assert p.spawned[4].spec.max_requests == 0
    p.spawned[4].ready()
    # The next reload gets a new number, and succeeds.
    p.arbiter.reload()
    assert p.arbiter.generation == 2
    for process in p.spawned[5:]:
        process.ready()
    assert p.ready == [0, 2]


def test_a_reload_whose_workers_keep_dying_is_abandoned(pool):
    p = pool(workers=1, timeout=0)
    p.spawned[0].ready()
    p.arbiter.reload()
    for _ in range(GIVE_UP_AFTER):
        p.spawned[-1].end(code=1)
        p.advance(BACKOFF_MAX)
    assert p.failed_reloads == [
        f"{GIVE_UP_AFTER} workers in a row died while booting; generation 0 serves on"]
    assert len(p.spawned) == 1 + GIVE_UP_AFTER and p.fatal == []
    assert p.spawned[0].signals == []


def test_a_reload_that_boots_is_not_abandoned_by_a_later_failure(pool):
    p = pool(workers=2)
    for process in p.spawned:
        process.ready()
    p.arbiter.reload()
    p.spawned[2].ready()
    p.spawned[3].end(code=EXIT_APP_LOAD_FAILED)
    assert p.failed_reloads == []
    assert p.arbiter.generation == 1


def test_workers_that_always_die_at_boot_stop_the_server(pool):
    p = pool(workers=1)
    for _ in range(GIVE_UP_AFTER):
        p.reactor.live()[0].end(code=1)
        p.reactor.advance(BACKOFF_MAX)
    assert len(p.fatal) == 1 and "died while booting" in str(p.fatal[0])


# -- TTIN / TTOU ---------------------------------------------------------------------------------


def test_ttin_adds_a_worker_and_ttou_retires_the_oldest(pool):
    p = pool(workers=2)
    for process in p.spawned:
        process.ready()
    p.arbiter.resize(+1)
    assert len(p.spawned) == 3
    p.spawned[2].ready()
    p.arbiter.resize(-1)
    assert p.spawned[0].signals == ["TERM"]
    assert p.spawned[1].signals == [] and p.spawned[2].signals == []
    p.spawned[0].end()
    assert len(p.spawned) == 3  # not replaced: one fewer was wanted


def test_ttou_prefers_a_worker_still_starting_and_keeps_one(pool):
    p = pool(workers=2)
    p.spawned[0].ready()
    p.arbiter.resize(-1)
    assert p.spawned[1].signals == ["TERM"] and p.spawned[0].signals == []
    p.arbiter.resize(-1)
    assert p.arbiter.config.workers == 1 and p.spawned[0].signals == []


# -- HUP -----------------------------------------------------------------------------------------


def test_hup_starts_new_workers_before_the_old_ones_drain(pool):
    p = pool(workers=2)
    old = [process.ready() for process in p.spawned]
    new_config = PoolConfig(app="tests.test_arbiter:make_app", workers=2, max_requests=10)
    p.arbiter.reload(new_config)
    assert len(p.spawned) == 4
    new = p.spawned[2:]
    assert all(process.spec.max_requests == 10 for process in new)
    assert all(process.signals == [] for process in old)
    new[0].ready()
    assert old[0].signals == ["TERM"] and old[1].signals == []
    new[1].ready()
    assert old[1].signals == ["TERM"]
    for process in old:
        process.say("draining stop requested")
        process.end()
    assert len(p.spawned) == 4
    assert sorted(state for _pid, state in p.states()) == ["ready", "ready"]


def test_hup_replaces_old_workers_still_booting_at_once(pool):
    p = pool(workers=1)
    p.arbiter.reload()
    assert p.spawned[0].signals == ["TERM"]
    p.spawned[0].end(sig=signal.SIGTERM)
    assert len(p.spawned) == 2  # no boot-failure respawn for a worker we stopped


def test_prefork_service_reload_keeps_workers_when_the_config_is_broken(pool):
    reactor = ProcessReactor()

    def broken():
        raise ValueError("config file is not valid YAML")

    service = PreforkService(reactor, ["tcp:0:interface=127.0.0.1"],
                             PoolConfig(app="x:y", workers=1), reload_config=broken)
    service.startService()
    try:
        reactor.spawned[0].ready()
        service.reload()
        assert len(reactor.spawned) == 1 and reactor.spawned[0].signals == []
    finally:
        d = service.stopService()
        reactor.spawned[0].end()
        assert d.called


# -- max requests --------------------------------------------------------------------------------


def test_max_requests_with_jitter_per_worker(pool):
    p = pool(workers=3, max_requests=50, max_requests_jitter=10, rng=random.Random(4))
    limits = [process.spec.max_requests for process in p.spawned]
    assert all(50 <= limit <= 60 for limit in limits) and len(set(limits)) > 1


def test_recycle_starts_the_replacement_first(pool, events):
    p = pool(workers=1, max_requests=50)
    old = p.spawned[0].ready()
    old.say("recycle served 50 requests")
    assert len(p.spawned) == 2 and old.signals == []
    assert worker_events(events, "recycle")[0]["reason"] == "served 50 requests"
    p.spawned[1].ready()
    assert old.signals == ["TERM"]
    old.say("draining stop requested", "stopped 51")
    old.end()
    assert len(p.spawned) == 2
    assert worker_events(events, "exit")[0]["served"] == 51


def test_a_worker_draining_on_its_own_is_replaced_at_once(pool):
    p = pool(workers=1)
    p.spawned[0].ready().say("draining stop requested")
    assert len(p.spawned) == 2


# -- stopping ------------------------------------------------------------------------------------


def test_graceful_stop_waits_for_the_workers(pool):
    p = pool(workers=2, graceful_timeout=10.0)
    for process in p.spawned:
        process.ready()
    stopped = p.arbiter.stop()
    assert [process.signals for process in p.spawned] == [["TERM"], ["TERM"]]
    p.spawned[0].end()
    assert not stopped.called
    p.spawned[1].end()
    assert stopped.called
    assert len(p.spawned) == 2  # nothing respawned while stopping


def test_graceful_stop_kills_workers_past_the_deadline(pool):
    p = pool(workers=1, graceful_timeout=10.0, timeout=0)
    p.spawned[0].ready()
    stopped = p.arbiter.stop()
    p.reactor.advance(10.0 + DRAIN_MARGIN)
    assert p.spawned[0].signals == ["TERM", "KILL"]
    p.spawned[0].end(sig=signal.SIGKILL)
    assert stopped.called


def test_quick_stop_and_escalation(pool):
    p = pool(workers=2)
    for process in p.spawned:
        process.ready()
    p.arbiter.stop(graceful=True)
    p.arbiter.stop(graceful=False)
    assert [process.signals for process in p.spawned] == [["TERM", "QUIT"], ["TERM", "QUIT"]]
    p.reactor.advance(QUICK_STOP_TIMEOUT)
    assert p.spawned[0].signals[-1] == "KILL"


def test_a_drain_past_its_time_is_aborted(pool):
    p = pool(workers=1, graceful_timeout=2.0, timeout=30.0)
    old = p.spawned[0].ready()
    p.arbiter.resize(+1)
    p.spawned[1].ready()
    p.arbiter.resize(-1)
    assert old.signals == ["TERM"]
    for _ in range(int((2.0 + DRAIN_MARGIN) / 0.5) + 2):
        p.advance(0.5)
        old.say("beat 1")
    assert old.signals[:2] == ["TERM", "ABRT"]


def test_usr1_is_forwarded(pool):
    p = pool(workers=2)
    p.spawned[0].ready()
    p.arbiter.reopen_logs()
    assert p.spawned[0].signals == ["USR1"] and p.spawned[1].signals == []


# -- the service and its signals -----------------------------------------------------------------


def test_prefork_service_binds_then_says_serving_once_a_worker_is_ready(tmp_path):
    reactor = ProcessReactor()
    seen: list[str] = []
    path = tmp_path / "s.sock"
    service = PreforkService(
        reactor, ["tcp:0:interface=127.0.0.1", f"unix:{path}:mode=600"],
        PoolConfig(app="x:y", workers=2), on_serving=seen.append,
    )
    service.startService()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    sock = service.sockets[0].socket
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    spawned = reactor.spawned[0]
    assert set(spawned.child_fds) == {0, 1, 2, 3, 4, 5, 6}
    assert seen == []  # bound, but nothing serves yet
    spawned.ready()
    assert len(seen) == 2
    assert seen[0].startswith("127.0.0.1:") and not seen[0].endswith(":0")
    assert seen[1] == str(path)
    reactor.spawned[1].ready()
    reactor.spawned[1].end(code=1)
    reactor.spawned[2].ready()
    assert len(seen) == 2  # once, not for every worker
    d = service.stopService()
    live = reactor.live()
    assert [process.signals for process in live] == [["TERM"], ["TERM"]]
    assert not path.exists()
    for process in live:
        process.end()
    assert d.called


def test_prefork_service_rejects_unshareable_endpoints():
    with pytest.raises(UnsupportedListener):
        PreforkService(ProcessReactor(), ["haproxy:tcp:5000"], PoolConfig(app="x:y"))


def test_signals_map_as_gunicorn(pool, monkeypatch):
    reactor = ProcessReactor()
    calls: list[str] = []

    class FakePool:
        def quick(self):
            calls.append("quick")

        def reload(self):
            calls.append("reload")

        def resize(self, change):
            calls.append(f"resize {change:+d}")

        def reopen_logs(self):
            calls.append("reopen")

    installed: dict[int, object] = {}
    monkeypatch.setattr(signal, "signal", lambda number, handler: installed.__setitem__(
        number, handler))
    install_master_signals(reactor, FakePool(), stop_process=lambda: calls.append("stop"),
                           reopen_logs=lambda: calls.append("master log"))
    assert installed == {}  # not before the reactor runs: run() would replace them
    for hook, args, kwargs in reactor.whenRunningHooks:
        hook(*args, **kwargs)
    assert signal.SIGTERM not in installed and signal.SIGCHLD not in installed
    for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1,
                   signal.SIGQUIT):
        installed[number](number, None)
    assert calls == ["reload", "resize +1", "resize -1", "master log", "reopen", "quick", "stop"]


def test_pidfile(tmp_path):
    path = tmp_path / "twistreg.pid"
    pidfile = PidFile(str(path), pid=4242)
    pidfile.startService()
    assert path.read_text() == "4242\n"
    pidfile.stopService()
    assert not path.exists()
    path.write_text("99\n")  # another server's
    pidfile.startService()
    path.write_text("99\n")
    pidfile.stopService()
    assert path.exists()


# -- listeners -----------------------------------------------------------------------------------


def test_parse_listen_uses_twisteds_parser_with_a_real_backlog(tmp_path):
    reactor = MemoryReactorClock()
    tcp = parse_listen(reactor, r"tcp:5000:interface=127.0.0.1")
    assert (tcp.kind, tcp.family, tcp.host, tcp.port, tcp.backlog) == (
        "tcp", "INET", "127.0.0.1", 5000, DEFAULT_BACKLOG)
    assert parse_listen(reactor, "tcp:5000:backlog=50").backlog == 50
    v6 = parse_listen(reactor, r"tcp6:port=5000:interface=\:\:1")
    assert (v6.family, v6.host) == ("INET6", "::1")
    assert parse_listen(reactor, r"tcp:5000:interface=\:\:").family == "INET6"
    unix = parse_listen(reactor, f"unix:{tmp_path}/s.sock:mode=660:lockfile=1")
    assert (unix.kind, unix.path, unix.mode, unix.lockfile) == (
        "unix", f"{tmp_path}/s.sock", 0o660, True)
    with pytest.raises(ValueError):
        parse_listen(reactor, "tcp:notaport")


def test_parse_listen_ssl(tmp_path):
    pytest.importorskip("OpenSSL")
    from tests.tls import make_certificate

    key, cert = make_certificate(tmp_path)
    spec = parse_listen(MemoryReactorClock(), f"ssl:0:privateKey={key}:certKey={cert}")
    assert (spec.kind, spec.family, spec.backlog) == ("ssl", "INET", DEFAULT_BACKLOG)


def test_an_inherited_socket_is_handed_on_not_bound(tmp_path):
    inherited = socket.socket(socket.AF_UNIX)
    path = tmp_path / "systemd.sock"
    inherited.bind(str(path))
    inherited.listen(4)
    try:
        spec = ListenSpec("systemd:domain=UNIX:index=0", "unix", "UNIX", 0,
                          inherited_fd=inherited.fileno())
        shared = bind(spec)
        assert shared.fileno() != inherited.fileno()
        assert shared.address() == str(path)
        assert not shared.socket.getblocking()
        shared.close()
        assert path.exists()  # systemd's socket file stays
    finally:
        inherited.close()


def test_bind_reports_an_address_in_use():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        with pytest.raises(error.CannotListenError):
            bind(parse_listen(MemoryReactorClock(), f"tcp:{port}:interface=127.0.0.1"))
    finally:
        busy.close()


def test_adopted_unix_port_leaves_the_masters_socket_file(tmp_path):
    """Twisted's own adoption would unlink the file when a worker stops listening."""
    from twisted.internet import reactor

    path = tmp_path / "r.sock"
    master = bind(parse_listen(reactor, f"unix:{path}"))
    try:
        fd = os.dup(master.fileno())
        port = adopt(reactor, fd, master.spec, server.Site(resource.Resource()))
        assert port.accepts_per_wakeup == 1
        port.stopReading()
        port.connectionLost(Failure(error.ConnectionDone()))
        assert path.exists()
    finally:
        master.close()
    assert not path.exists()


def test_adopted_tcp_port_accepts_one_connection_per_wakeup():
    from twisted.internet import reactor

    master = bind(parse_listen(reactor, "tcp:0:interface=127.0.0.1"))
    clients = []
    try:
        port = adopt(reactor, os.dup(master.fileno()), master.spec,
                     server.Site(resource.Resource()))
        for _ in range(3):
            client = socket.create_connection(master.socket.getsockname()[:2])
            clients.append(client)
        accepted = []
        port.factory.buildProtocol = lambda addr: accepted.append(addr)
        port.doRead()
        assert len(accepted) == 1
        port.doRead()
        assert len(accepted) == 2
        port.stopReading()
        port.connectionLost(Failure(error.ConnectionDone()))
    finally:
        for client in clients:
            client.close()
        master.close()


# -- balancing ------------------------------------------------------------------------------------


def test_a_busier_worker_defers_to_its_least_busy_peer():
    board = Scoreboard.create()
    try:
        now = [100.0]
        for slot in (0, 1, 2):
            board.assign(slot)
        a = AcceptBalancer(board, 0, 11, now=lambda: now[0])
        b = AcceptBalancer(board, 1, 12, now=lambda: now[0])
        a.count(3)
        b.count(0)
        assert board.least_busy_peer(0, now[0], 1.0) == 0
        # Busier than the least busy peer plus the slack (2): wait, but only twice in a row.
        assert [a.should_defer() for _ in range(3)] == [True, True, False]
        assert not b.should_defer()
        a.count(2)
        assert not a.should_defer()
        # A peer that stopped updating the board (stuck, dead) no longer counts.
        a.count(5)
        now[0] += 1.5
        a.touch()
        assert board.least_busy_peer(0, now[0], 1.0) is None
        assert not a.should_defer()
        # Nor does one that is draining.
        b.touch()
        b.withdraw()
        assert board.read(1) == (0, 0, 0.0) and not a.should_defer()
    finally:
        board.close()


def test_scoreboard_slots_are_bounded():
    board = Scoreboard.create()
    try:
        with pytest.raises(ValueError):
            board.assign(SLOTS)
    finally:
        board.close()


def test_adopted_port_waits_while_the_balancer_defers():
    from twisted.internet import reactor

    class Busy:
        delay = 0.001

        def should_defer(self):
            return True

    master = bind(parse_listen(reactor, "tcp:0:interface=127.0.0.1"))
    client = socket.create_connection(master.socket.getsockname()[:2])
    try:
        port = adopt(reactor, os.dup(master.fileno()), master.spec,
                     server.Site(resource.Resource()), balancer=Busy())
        accepted = []
        port.factory.buildProtocol = lambda addr: accepted.append(addr)
        port.doRead()
        assert accepted == [] and port._deferred.active()
        assert port not in reactor.getReaders()
        port._deferred.cancel()
        port.balancer = None
        port.doRead()
        assert len(accepted) == 1
        port.connectionLost(Failure(error.ConnectionDone()))
    finally:
        client.close()
        master.close()


# -- the pipe and the spec -----------------------------------------------------------------------


def test_spec_round_trips_as_json():
    spec = WorkerSpec(app="a:b", app_options={"overrides": {"server.listen": ["tcp:1"]}},
                      listeners=(Listener(3, "unix", "UNIX", "unix:/x"),), control_fd=4,
                      argv=("twist", "twistreg"))
    assert WorkerSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError):
        WorkerSpec.from_json(json.dumps({"app": "a:b", "bogus": 1}))


def test_line_reader_splits_messages_across_reads():
    reader = LineReader()
    assert reader.feed(b"rea") == []
    assert reader.feed(b"dy\nbeat 12\nnonsense\nrecycle served 5") == [
        ("ready", ""), ("beat", "12")]
    assert reader.feed(b" more\n" + encode("stopped", 5)) == [
        ("recycle", "served 5 more"), ("stopped", "5")]
    assert reader.feed(b"x" * 5000) == [] and reader.feed(b"\nready\n") == [("ready", "")]


# -- the worker's pieces -------------------------------------------------------------------------


class Slow(resource.Resource):
    """Answers when the test says so."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.waiting: list[server.Request] = []

    def render_GET(self, request):
        self.waiting.append(request)
        return server.NOT_DONE_YET

    def render_PUT(self, request):
        return b"stored"


def connect(tracker: ConnectionTracker):
    protocol = tracker.factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def make_tracker(**kwargs):
    clock = MemoryReactorClock()
    root = Slow()
    site = server.Site(root)
    tracker = ConnectionTracker(clock, site, **kwargs)
    return clock, root, tracker


def test_tracker_counts_requests_and_reports_the_limit():
    limits = []
    _clock, root, tracker = make_tracker(max_requests=2, on_limit=limits.append,
                                         worker_header=b"77")
    protocol, transport = connect(tracker)
    for _ in range(3):
        protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        root.waiting.pop().finish()
    assert tracker.served == 3 and limits == [2]
    assert b"X-Twistreg-Worker: 77" in transport.value()


def test_drain_closes_keep_alive_connections_after_their_request():
    clock, root, tracker = make_tracker()
    busy, busy_transport = connect(tracker)
    idle, idle_transport = connect(tracker)
    busy.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drained = tracker.drain(timeout=30, linger=2)
    root.waiting.pop().finish()
    assert b"Connection: close" in busy_transport.value()
    assert busy_transport.disconnecting
    busy.connectionLost(Failure(error.ConnectionDone()))
    # An idle keep-alive connection gets a last chance, then is closed.
    assert not idle_transport.disconnecting
    clock.advance(2)
    assert idle_transport.disconnecting
    assert not drained.called
    idle.connectionLost(Failure(error.ConnectionDone()))
    assert drained.called


def test_drain_waits_for_an_upload_still_streaming():
    clock, _root, tracker = make_tracker()
    upload, transport = connect(tracker)
    upload.dataReceived(b"PUT /layer HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    drained = tracker.drain(timeout=30, linger=2)
    clock.advance(5)
    assert not transport.disconnecting and not drained.called
    upload.dataReceived(b"67890")
    assert b"stored" in transport.value() and b"Connection: close" in transport.value()
    upload.connectionLost(Failure(error.ConnectionDone()))
    assert drained.called


def test_drain_gives_up_at_the_timeout():
    clock, _root, tracker = make_tracker()
    hung, _transport = connect(tracker)
    hung.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drained = tracker.drain(timeout=10, linger=2)
    clock.advance(9)
    assert not drained.called
    clock.advance(1)
    assert drained.called


def test_drain_without_connections_is_immediate():
    _clock, _root, tracker = make_tracker()
    assert tracker.drain(timeout=10, linger=2).called


def test_tracker_needs_a_request_class():
    site = server.Site(resource.Resource())
    site.requestFactory = lambda *a: None
    with pytest.raises(TypeError):
        ConnectionTracker(MemoryReactorClock(), site)


@implementer(IWorkerApplication)
class App:
    def __init__(self, site):
        self.site = site
        self.reopened = 0

    def reopen_logs(self):
        self.reopened += 1


def make_app(reactor, options):
    """An application factory, as a spec names one."""
    if options.get("fail"):
        raise RuntimeError("cannot load")
    return App(server.Site(resource.Resource()))


def test_worker_boot_failures_have_their_exit_codes():
    reactor = MemoryReactorClock()
    spec = WorkerSpec(app="tests.test_arbiter:make_app", app_options={"fail": True})
    assert Worker(reactor, spec).boot() == EXIT_APP_LOAD_FAILED
    spec = WorkerSpec(app="tests.test_arbiter:nothing_here")
    assert Worker(reactor, spec).boot() == EXIT_APP_LOAD_FAILED
    closed = os.open(os.devnull, os.O_RDONLY)
    os.close(closed)
    spec = WorkerSpec(app="tests.test_arbiter:make_app",
                      listeners=(Listener(closed, "tcp", "INET", "tcp:0"),))
    assert Worker(reactor, spec).boot() == EXIT_BOOT_FAILED


def test_worker_accepts_a_bare_site():
    verifyObject(IWorkerApplication, SiteApplication(server.Site(resource.Resource())))
    verifyObject(IWorkerApplication, make_app(None, {}))


def test_worker_reports_ready_beats_and_recycle():
    reactor = MemoryReactorClock()
    read, write = os.pipe()
    try:
        spec = WorkerSpec(app="tests.test_arbiter:make_app", control_fd=write,
                          heartbeat_interval=1.0, max_memory=1)
        worker = Worker(reactor, spec)
        assert worker.boot() == 0
        worker._heartbeat.start(1.0, now=True)
        worker.control.send("ready")
        reactor.advance(1.0)
        lines = os.read(read, 4096).decode().splitlines()
        assert lines[0] == "beat 0"  # the first beat, then the recycle (RSS > 1 byte)
        assert lines[1].startswith("recycle resident memory")
        assert lines[2:] == ["ready", "beat 0"]
        worker._heartbeat.stop()
    finally:
        os.close(read)
        os.close(write)


def test_service_stop_before_start_is_harmless():
    service = PreforkService(ProcessReactor(), ["tcp:0:interface=127.0.0.1"],
                             PoolConfig(app="x:y"))
    assert service.stopService().called


# -- the registry's pool service -----------------------------------------------------------------


def test_registry_pool_rereads_its_configuration_on_hup(tmp_path):
    from twistreg.config import load_settings
    from twistreg.service import WORKER_APPLICATION, PreforkRegistryService

    config = tmp_path / "config.yml"
    config.write_text("dev:\n  storage_path: /nonexistent\n  server:\n    workers: 3\n"
                      "    max_requests: 100\n    max_worker_memory: 512\n")
    overrides = {"storage_path": str(tmp_path), "server.listen": ("tcp:0:interface=127.0.0.1",),
                 "server.timeout": "7"}
    settings = load_settings(str(config), None, overrides)
    service = PreforkRegistryService(
        settings, ProcessReactor(), sources={"config": settings.config_path, "flavor": "dev",
                                             "overrides": overrides},
        worker_logs={"log_level": "warn", "log_format": "json", "log_file": None},
        argv=["twist", "twistreg"])
    pool_config = service.config
    assert (pool_config.app, pool_config.workers, pool_config.max_requests,
            pool_config.timeout, pool_config.max_memory) == (
        WORKER_APPLICATION, 3, 100, 7.0, 512 << 20)
    assert (pool_config.log_level, pool_config.log_format) == ("warn", "json")
    # What the workers get: enough to read the same configuration themselves.
    assert pool_config.app_options == {
        "config": str(config), "flavor": "dev",
        "overrides": {"storage_path": str(tmp_path),
                      "server.listen": ["tcp:0:interface=127.0.0.1"], "server.timeout": "7"}}
    config.write_text("dev:\n  server:\n    workers: 1\n    max_requests: 10\n")
    reloaded = service._reload()
    assert (reloaded.workers, reloaded.max_requests, reloaded.timeout) == (1, 10, 7.0)
    config.write_text("dev: [not, a, mapping]\n")
    with pytest.raises(Exception, match="must be a mapping"):
        service._reload()


def test_worker_application_builds_the_registry_site(tmp_path):
    from twistreg.service import RegistryApplication, worker_application
    from twistreg.web.site import RegistrySite

    reactor = MemoryReactorClock()
    config = tmp_path / "config.yml"
    config.write_text("dev:\n  standalone: true\n")
    app = worker_application(reactor, {
        "config": str(config), "flavor": None,
        "overrides": {"storage_path": str(tmp_path), "server.access_log": str(tmp_path / "a")},
    })
    assert isinstance(app, RegistryApplication) and isinstance(app.site, RegistrySite)
    verifyObject(IWorkerApplication, app)
    app.reopen_logs()
    assert app.settings.storage_path == str(tmp_path)
