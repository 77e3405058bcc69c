# -*- test-case-name: tests.test_arbiter,tests.test_pool -*-
"""
A worker process: C{python -m twistreg.server.worker SPEC}, started by the master.

It adopts the master's listening sockets, builds the application the spec names, says
C{ready} on the control pipe and then a C{beat} from its event loop every heartbeat interval,
so that the master can tell a stuck loop from a long transfer. TERM drains (stop accepting,
finish what is in flight), INT and QUIT stop at once, USR1 reopens log files; the end of
standard input means the master is gone, and the worker stops rather than live as an orphan.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import setproctitle
from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
)
from twisted.web.server import Site
from zope.interface import implementer

from twistreg.config import ConfigError, load_application
from twistreg.logs import line_log_observer, naming_process
from twistreg.server.drain import ConnectionTracker
from twistreg.server.interfaces import IWorkerApplication
from twistreg.server.listeners import adopt
from twistreg.server.logfiles import ReopenableStream
from twistreg.server.protocol import (
    EXIT_APP_LOAD_FAILED,
    EXIT_BOOT_FAILED,
    WorkerSpec,
    encode,
)
from twistreg.server.scoreboard import AcceptBalancer, Scoreboard

log = Logger(namespace="twistreg.server.worker")

BOARD_INTERVAL = 0.25
"""Seconds between scoreboard updates of an idle worker (peers ignore it after a second)."""


def load_factory(name: str) -> Callable[..., Any]:
    """The application factory the spec names (C{module:callable})."""
    return load_application(name, "worker application")


@implementer(IWorkerApplication)
class SiteApplication:
    """A bare Site as an application, for factories that return one."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def reopen_logs(self) -> None:
        pass


class ControlPipe:
    """The write end of the control pipe; a full pipe drops heartbeats rather than block."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        if fd >= 0:
            os.set_blocking(fd, False)

    def send(self, kind: str, *fields: object) -> None:
        if self._fd < 0:
            return
        try:
            os.write(self._fd, encode(kind, *fields))
        except (BlockingIOError, BrokenPipeError):
            # A master too busy to read misses a beat; a dead one is noticed on stdin.
            pass


class _MasterWatch(Protocol):
    """Standard input: the master never writes, so its end means the master died."""

    def __init__(self, gone: Callable[[], None]) -> None:
        self._gone = gone

    def connectionLost(self, reason=None) -> None:
        self._gone()


class Worker:
    """
    One worker's life: boot, serve, drain, exit.

    @param reactor: a reactor that can adopt sockets (the global one in the process).
    @param load: finds the application factory the spec names (injectable for tests).
    """

    def __init__(
        self, reactor, spec: WorkerSpec, *, load: Callable[[str], Callable] = load_factory
    ) -> None:
        self._reactor = reactor
        self.spec = spec
        self.pid = os.getpid()
        self._load = load
        self.control = ControlPipe(spec.control_fd)
        self.app: Any = None
        self.tracker: ConnectionTracker | None = None
        self.ports: list = []
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self.balancer: AcceptBalancer | None = None
        self._touch = LoopingCall(self._touch_board)
        self._touch.clock = reactor
        self._stopping = False
        self._quick = False
        self._reason = "stop requested"
        self._linger = spec.linger
        self._recycle_asked = False
        self._log_stream: ReopenableStream | None = None

    def boot(self) -> int:
        """
        Build the application and adopt the sockets.

        @return: 0, or the exit status that tells the master why the worker cannot serve.
        """
        try:
            app = self._load(self.spec.app)(self._reactor, dict(self.spec.app_options))
            if isinstance(app, Site):
                app = SiteApplication(app)
            if not IWorkerApplication.providedBy(app):
                raise TypeError(f"{self.spec.app} returned {app!r}, not an IWorkerApplication")
            header = str(self.pid).encode() if self.spec.worker_header else None
            self.tracker = ConnectionTracker(
                self._reactor,
                app.site,
                max_requests=self.spec.max_requests,
                on_limit=lambda served: self._ask_recycle(f"served {served} requests"),
                on_count=self._count,
                worker_header=header,
            )
            self.app = app
        except Exception as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            if isinstance(error, ConfigError):
                # A configuration problem is one line, as when serving in one process.
                log.error("worker {pid} cannot load the application: {reason}", pid=self.pid,
                          reason=reason)
            else:
                log.failure("worker {pid} cannot load the application {app}", pid=self.pid,
                            app=self.spec.app)
            self.control.send("failed", reason)
            return EXIT_APP_LOAD_FAILED
        try:
            if self.spec.scoreboard_fd >= 0 and self.spec.slot >= 0:
                self.balancer = AcceptBalancer(Scoreboard(self.spec.scoreboard_fd),
                                               self.spec.slot, self.pid)
                self._touch.start(BOARD_INTERVAL, now=True)
            for listener in self.spec.listeners:
                self.ports.append(
                    adopt(self._reactor, listener.fd, listener, self.tracker.factory,
                          self.spec.accepts_per_wakeup, self.balancer)
                )
        except Exception:
            log.failure("worker {pid} cannot listen on the inherited sockets", pid=self.pid)
            return EXIT_BOOT_FAILED
        self._reactor.callWhenRunning(self._running)
        self._reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        return 0

    def _running(self) -> None:
        # After reactor.run() installed its own INT/TERM handlers, so these last.
        _on_signal(self._reactor, signal.SIGINT, self.stop_now)
        _on_signal(self._reactor, signal.SIGQUIT, self.stop_now)
        _on_signal(self._reactor, signal.SIGUSR1, self.reopen_logs)
        devnull = os.open(os.devnull, os.O_WRONLY)
        StandardIO(_MasterWatch(self._master_gone), stdin=0, stdout=devnull,
                   reactor=self._reactor)
        self.control.send("ready")
        self._heartbeat.start(self.spec.heartbeat_interval, now=True)
        log.info("worker {pid} serving", pid=self.pid)

    def _count(self, connections: int) -> None:
        if self.balancer is not None:
            self.balancer.count(connections)

    def _touch_board(self) -> None:
        # An idle worker still shows it is alive, so that busier peers defer to it.
        if self.balancer is not None:
            self.balancer.touch()

    def _beat(self) -> None:
        served = self.tracker.served if self.tracker is not None else 0
        self.control.send("beat", served)
        if self.spec.max_memory and not self._recycle_asked:
            rss = resident_memory()
            if rss > self.spec.max_memory:
                self._ask_recycle(f"resident memory {rss >> 20} MiB")

    def _ask_recycle(self, reason: str) -> None:
        if self._recycle_asked or self._stopping:
            return
        self._recycle_asked = True
        # The master logs it, with the worker's pid and age: one line per recycle.
        self.control.send("recycle", reason)

    def _master_gone(self) -> None:
        if self._stopping:
            return
        log.warn("worker {pid}: the master is gone; stopping", pid=self.pid)
        self._reason = "master gone"
        # Nobody will start a replacement: idle connections are closed at once.
        self._linger = 0
        self._stop_reactor()

    def stop_now(self) -> None:
        """INT or QUIT: close everything now, in-flight requests included."""
        self._quick = True
        self._reason = "quick stop"
        if self.tracker is not None:
            self.tracker.stop_now()
        self._stop_reactor()

    def reopen_logs(self) -> None:
        if self._log_stream is not None:
            self._log_stream.reopen()
        if self.app is not None:
            self.app.reopen_logs()
        log.info("worker {pid} reopened its log files", pid=self.pid)

    def _stop_reactor(self) -> None:
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass

    def _shutdown(self) -> defer.Deferred[None]:
        """Before the reactor stops: stop accepting, drain, say goodbye."""
        self._stopping = True
        for port in self.ports:
            port.stopListening()
        if self.balancer is not None:
            self.balancer.withdraw()
        if self._touch.running:
            self._touch.stop()
        self.control.send("draining", self._reason)
        assert self.tracker is not None
        if self._quick:
            drained: defer.Deferred[None] = defer.succeed(None)
        else:
            log.info("worker {pid} draining ({reason})", pid=self.pid, reason=self._reason)
            drained = self.tracker.drain(self.spec.graceful_timeout, self._linger)

        def goodbye(_: object) -> None:
            if self._heartbeat.running:
                self._heartbeat.stop()
            assert self.tracker is not None
            self.control.send("stopped", self.tracker.served)
            log.info("worker {pid} stopped after {served} requests", pid=self.pid,
                     served=self.tracker.served)

        return drained.addCallback(goodbye)

    def start_logging(self) -> None:
        """Log events as the master does, to its output or to the same file."""
        spec = self.spec
        stream: Any = sys.stdout
        if spec.log_file:
            stream = self._log_stream = ReopenableStream(spec.log_file)
        observer = (jsonFileLogObserver(stream) if spec.log_format == "json"
                    else line_log_observer(stream))
        level = LogLevel.levelWithName({"warning": "warn"}.get(spec.log_level, spec.log_level))
        named = naming_process(observer, f"worker={self.pid}")
        globalLogBeginner.beginLoggingTo(
            [FilteringLogObserver(named, [LogLevelFilterPredicate(defaultLogLevel=level)])],
            redirectStandardIO=False,
        )


def _on_signal(reactor, number: int, action: Callable[[], None]) -> None:
    """Run C{action} in the reactor when the signal arrives (never in the handler itself)."""
    signal.signal(number, lambda _signum, _frame: reactor.callFromThread(action))


def resident_memory() -> int:
    """This process's resident set size in bytes (the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_title(title: str) -> None:
    """The process title C{ps} shows, so that the master and each worker are told apart."""
    setproctitle.setproctitle(title)


def main(argv: list[str] | None = None) -> int:
    """The worker's entry point; returns its exit status."""
    argv = sys.argv if argv is None else argv
    # A terminal hang-up reaches the whole process group; reloading is the master's call.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # SIGABRT from the master (heartbeat timeout) then prints every thread's stack.
    faulthandler.enable()
    try:
        spec = WorkerSpec.from_json(argv[1])
    except (IndexError, ValueError) as error:
        sys.stderr.write(f"twistreg worker: no usable spec on the command line: {error}\n")
        return EXIT_BOOT_FAILED
    from twisted.internet import reactor

    worker = Worker(reactor, spec)
    worker.start_logging()
    if spec.argv:
        # What a forked worker would see: R1's debug answer reports the server's command line.
        sys.argv = list(spec.argv)
        set_title("twistreg: worker [" + " ".join(spec.argv) + "]")
    status = worker.boot()
    if status:
        return status
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
