# -*- test-case-name: tests.test_arbiter,tests.test_pool -*-
"""
The master of the process pool, as gunicorn's arbiter, with Twisted alone.

L{PreforkService} binds the listening sockets (and never accepts on them); its L{Arbiter}
starts workers as fresh interpreters through an L{IWorkerLauncher}, watches their heartbeats,
replaces the ones that die or hang, recycles, resizes and rolls the pool, and stops it
gracefully or quickly. Twisted owns SIGCHLD: deaths arrive as C{processEnded}.

The arbiter knows nothing of the registry: it serves whatever application its
L{PoolConfig} names.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from automat import MethodicalMachine
from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistreg.server.interfaces import IWorkerLauncher
from twistreg.server.listeners import ListeningSocket, ListenSpec, bind, parse_listen
from twistreg.server.protocol import (
    EXIT_APP_LOAD_FAILED,
    EXIT_BOOT_FAILED,
    LineReader,
    Listener,
    WorkerSpec,
)
from twistreg.server.scoreboard import Scoreboard

log = Logger()

WORKER_MODULE = "twistreg.server.worker"
FIRST_LISTENER_FD = 3
"""Listening sockets are numbered from 3 in the worker, as systemd's SD_LISTEN_FDS_START."""

BOOT_TIMEOUT = 30.0
"""A worker that is not ready this long after its spawn is stuck (or the timeout, if longer)."""
KILL_DELAY = 1.0
"""Seconds between SIGABRT (the stack is logged) and SIGKILL for a worker that timed out."""
DRAIN_MARGIN = 5.0
"""Seconds past the graceful timeout before the master kills a worker still draining."""
QUICK_STOP_TIMEOUT = 5.0
"""Seconds a quick stop waits for workers to exit before killing them."""
BACKOFF_MAX = 30.0
GIVE_UP_AFTER = 5
"""Boot failures in a row, with no worker ever ready, after which the server stops."""


class FatalError(Exception):
    """The pool cannot run (the application cannot load at all)."""


@attrs.frozen
class PoolConfig:
    """
    How the pool runs; re-read on HUP.

    @ivar app: C{"module:callable"} building the worker's application (see L{WorkerSpec}).
    @ivar timeout: seconds without a heartbeat before a worker is killed; 0 never kills.
    @ivar max_memory: resident bytes above which a worker is recycled; 0 is off.
    """

    app: str
    app_options: Mapping[str, Any] = attrs.field(factory=dict)
    workers: int = 1
    timeout: float = 30.0
    graceful_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_memory: int = 0
    worker_header: bool = False
    accepts_per_wakeup: int = 1
    argv: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "info"
    log_file: str | None = None

    @property
    def heartbeat_interval(self) -> float:
        """Four beats per timeout, so one late beat is no alarm; at least one per 5 s."""
        return min(max(self.timeout / 4, 0.05), 5.0) if self.timeout else 5.0

    @property
    def check_interval(self) -> float:
        return min(max(self.timeout / 4, 0.05), 1.0) if self.timeout else 1.0

    @property
    def boot_timeout(self) -> float:
        return max(self.timeout, BOOT_TIMEOUT)

    def spec(self, max_requests: int) -> WorkerSpec:
        """The spec of one worker, whose own request limit (jitter included) is given."""
        return WorkerSpec(
            app=self.app,
            app_options=dict(self.app_options),
            heartbeat_interval=self.heartbeat_interval,
            graceful_timeout=self.graceful_timeout,
            max_requests=max_requests,
            max_memory=self.max_memory,
            accepts_per_wakeup=self.accepts_per_wakeup,
            worker_header=self.worker_header,
            argv=tuple(self.argv),
            log_format=self.log_format,
            log_level=self.log_level,
            log_file=self.log_file,
        )


@implementer(IWorkerLauncher)
class ProcessLauncher:
    """
    Starts workers with C{spawnProcess}: a fresh interpreter, the listening sockets from
    fd 3, then the control pipe and the scoreboard, standard input as a pipe (its end tells
    the worker the master is gone), standard output and error shared with the master.

    @param environ: the workers' environment, passed explicitly (C{spawnProcess} would
        otherwise give them an empty one).
    @param balance: share a scoreboard so that workers spread connections evenly.
    """

    def __init__(
        self,
        reactor,
        sockets: Sequence[ListeningSocket],
        *,
        executable: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        balance: bool = True,
    ) -> None:
        self._reactor = reactor
        self._sockets = list(sockets)
        self._executable = executable
        self._environ = dict(os.environ if environ is None else environ)
        self.control_fd = FIRST_LISTENER_FD + len(self._sockets)
        self.scoreboard = Scoreboard.create() if balance else None

    def launch(self, protocol, spec: WorkerSpec):
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2, self.control_fd: "r"}
        if self.scoreboard is not None and spec.slot >= 0:
            self.scoreboard.assign(spec.slot)
            child_fds[self.control_fd + 1] = self.scoreboard.fd
            spec = attrs.evolve(spec, scoreboard_fd=self.control_fd + 1)
        listeners = []
        for number, sock in enumerate(self._sockets, FIRST_LISTENER_FD):
            child_fds[number] = sock.fileno()
            listeners.append(
                Listener(fd=number, kind=sock.spec.kind, family=sock.spec.family,
                         description=sock.spec.description)
            )
        spec = attrs.evolve(spec, listeners=tuple(listeners), control_fd=self.control_fd)
        # -P: with -m the working directory would come first on sys.path and could shadow
        # packages; it stays the working directory, for relative paths in the config.
        isolate = ["-P"] if sys.version_info >= (3, 11) else []
        argv = [self._executable, *isolate, "-m", WORKER_MODULE, spec.to_json()]
        env = dict(self._environ, PYTHONUNBUFFERED="1")
        return self._reactor.spawnProcess(
            protocol, self._executable, argv, env=env, childFDs=child_fds
        )

    def close(self) -> None:
        """Release the scoreboard (the workers keep their own mappings)."""
        if self.scoreboard is not None:
            self.scoreboard.close()
            self.scoreboard = None


class WorkerProcess(ProcessProtocol):
    """
    The master's view of one worker, and its lifecycle:
    C{starting → ready → draining → stopped}, with C{timed_out} when its loop stops beating.

    @ivar age: spawn order (the oldest is retired first).
    @ivar generation: the pool generation it belongs to; HUP starts a new one.
    @ivar recycle: it asked for a replacement (max requests, memory).
    """

    _machine = MethodicalMachine()

    def __init__(self, arbiter: Arbiter, age: int, generation: int, control_fd: int) -> None:
        self._arbiter = arbiter
        self.age = age
        self.generation = generation
        self.pid: int | None = None
        self.slot = -1
        self.recycle = False
        self.was_ready = False
        self.served = 0
        self.failure: str | None = None
        now = arbiter.clock.seconds()
        self.spawned_at = self.last_seen = self.since = now
        self.killed = False
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._control_fd = control_fd
        self._reader = LineReader()

    # -- states ------------------------------------------------------------------------------

    @_machine.state(initial=True, serialized="starting")
    def _starting(self):
        "Spawned; loading the application, not accepting yet."

    @_machine.state(serialized="ready")
    def _ready(self):
        "Accepting and serving; beats from its event loop."

    @_machine.state(serialized="draining")
    def _draining(self):
        "Stopped accepting; finishing what is in flight."

    @_machine.state(serialized="timed_out")
    def _timed_out(self):
        "Its event loop stopped beating: aborted, then killed."

    @_machine.state(serialized="stopped")
    def _stopped(self):
        "The process ended."

    @_machine.serializer()
    def _state(self, state):
        return state

    @property
    def state(self) -> str:
        """C{starting}, C{ready}, C{draining}, C{timed_out} or C{stopped}."""
        return self._state()

    # -- inputs ------------------------------------------------------------------------------

    @_machine.input()
    def reported_ready(self):
        "The worker said C{ready}."

    @_machine.input()
    def asked_recycle(self, reason):
        "The worker wants a replacement (max requests, memory)."

    @_machine.input()
    def reported_draining(self, reason):
        "The worker stopped accepting on its own (TERM from someone else, master gone)."

    @_machine.input()
    def stop(self):
        "Graceful stop: TERM."

    @_machine.input()
    def quit(self):
        "Quick stop: QUIT."

    @_machine.input()
    def hung(self, silence):
        "No heartbeat (or no end of drain) in time."

    @_machine.input()
    def died(self, reason):
        "The process ended."

    # -- outputs -----------------------------------------------------------------------------

    # Outputs act on the process and log; the pool reacts after the transition (in
    # Arbiter._changed), so that it may send this worker new inputs.

    @_machine.output()
    def _announce_ready(self):
        self.was_ready = True
        self._arbiter._event("ready", self, "worker {pid} ready",
                             boot_seconds=round(self._arbiter.clock.seconds() - self.spawned_at, 3))

    @_machine.output()
    def _want_recycle(self, reason):
        self.recycle = True
        self._arbiter._event("recycle", self, "worker {pid} asks to be recycled: {reason}",
                             reason=reason)

    @_machine.output()
    def _note_draining(self, reason):
        self.since = self._arbiter.clock.seconds()
        self._arbiter._event("draining", self, "worker {pid} is draining: {reason}",
                             reason=reason)

    @_machine.output()
    def _terminate(self):
        self.since = self._arbiter.clock.seconds()
        self._signal(signal.SIGTERM)

    @_machine.output()
    def _quit(self):
        self._signal(signal.SIGQUIT)

    @_machine.output()
    def _abort(self, silence):
        self.since = self._arbiter.clock.seconds()
        self._arbiter._event(
            "timeout", self,
            "worker {pid} timed out (silent for {silence:.1f}s): SIGABRT, then SIGKILL",
            silence=silence, level="critical",
        )
        self._signal(signal.SIGABRT)

    @_machine.output()
    def _kill(self, silence):
        self.killed = True
        self._signal(signal.SIGKILL)

    _starting.upon(reported_ready, enter=_ready, outputs=[_announce_ready])
    _starting.upon(asked_recycle, enter=_starting, outputs=[])
    _starting.upon(reported_draining, enter=_draining, outputs=[_note_draining])
    _starting.upon(stop, enter=_draining, outputs=[_terminate])
    _starting.upon(quit, enter=_draining, outputs=[_quit])
    _starting.upon(hung, enter=_timed_out, outputs=[_abort])
    _starting.upon(died, enter=_stopped, outputs=[])

    _ready.upon(reported_ready, enter=_ready, outputs=[])
    _ready.upon(asked_recycle, enter=_ready, outputs=[_want_recycle])
    _ready.upon(reported_draining, enter=_draining, outputs=[_note_draining])
    _ready.upon(stop, enter=_draining, outputs=[_terminate])
    _ready.upon(quit, enter=_draining, outputs=[_quit])
    _ready.upon(hung, enter=_timed_out, outputs=[_abort])
    _ready.upon(died, enter=_stopped, outputs=[])

    _draining.upon(reported_ready, enter=_draining, outputs=[])
    _draining.upon(asked_recycle, enter=_draining, outputs=[])
    _draining.upon(reported_draining, enter=_draining, outputs=[])
    _draining.upon(stop, enter=_draining, outputs=[])
    _draining.upon(quit, enter=_draining, outputs=[_quit])
    _draining.upon(hung, enter=_timed_out, outputs=[_abort])
    _draining.upon(died, enter=_stopped, outputs=[])

    _timed_out.upon(reported_ready, enter=_timed_out, outputs=[])
    _timed_out.upon(asked_recycle, enter=_timed_out, outputs=[])
    _timed_out.upon(reported_draining, enter=_timed_out, outputs=[])
    _timed_out.upon(stop, enter=_timed_out, outputs=[])
    _timed_out.upon(quit, enter=_timed_out, outputs=[])
    _timed_out.upon(hung, enter=_timed_out, outputs=[_kill])
    _timed_out.upon(died, enter=_stopped, outputs=[])

    for _input in (reported_ready, asked_recycle, reported_draining, stop, quit, hung):
        _stopped.upon(_input, enter=_stopped, outputs=[])
    del _input

    # -- the process -------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL, whatever the state (deadline of a stop)."""
        self.killed = True
        self._signal(signal.SIGKILL)

    def forward(self, number: int) -> None:
        """Pass a signal on (USR1) to a live worker."""
        if self.state in ("ready", "draining"):
            self._signal(number)

    def _signal(self, number: int) -> None:
        # A number: signalProcess takes names only for a few signals (not ABRT, QUIT, USR1).
        try:
            self.transport.signalProcess(number)
        except (error.ProcessExitedAlready, OSError):
            pass

    def connectionMade(self) -> None:
        # transport.pid is None by the time processEnded runs.
        self.pid = self.transport.pid

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != self._control_fd:
            return
        for kind, argument in self._reader.feed(data):
            self.last_seen = self._arbiter.clock.seconds()
            before = self.state
            if kind == "ready":
                self.reported_ready()
            elif kind in ("beat", "stopped"):
                if argument.isdigit():
                    self.served = int(argument)
            elif kind == "recycle":
                self.asked_recycle(argument)
            elif kind == "draining":
                self.reported_draining(argument)
            elif kind == "failed":
                self.failure = argument
            if self.state != before or kind == "recycle":
                self._arbiter._changed(self)

    def processEnded(self, reason: Failure) -> None:
        before = self.state
        self.died(reason)
        self._arbiter._worker_ended(self, reason, before)
        self.ended.callback(None)


def describe_end(reason: Failure) -> tuple[int | None, int | None]:
    """The exit code and the signal of an ended process (one of them is C{None})."""
    value = reason.value
    return getattr(value, "exitCode", None), getattr(value, "signal", None)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class Arbiter:
    """
    Keeps C{config.workers} workers serving: spawns, respawns with back-off, times out,
    recycles, resizes (TTIN/TTOU), rolls (HUP) and stops them.

    @param reactor: provides C{IReactorTime} (heartbeats, back-off) and whatever the
        launcher needs.
    @param on_fatal: called with a L{FatalError} when the application cannot load at all;
        the caller stops the process.
    @param on_ready: called with a generation's number once all its workers are ready: at
        start (0) and after each reload (readiness notification).
    @param on_serving: called once, when the first worker is ready.
    @param on_reload_failed: called with the reason when a reload is abandoned because its
        workers cannot boot; the previous generation serves on.
    @param on_worker_event: called with a worker event's kind (C{spawn}, C{ready},
        C{recycle}, C{exit}...) and the worker's pid, for metrics.
    @param rng: chooses each worker's max-requests jitter.
    @ivar generation: the generation the pool is made of (or being rolled to, during a
        reload); every reload gets a new number, even after one was abandoned.
    """

    def __init__(
        self,
        reactor,
        launcher: IWorkerLauncher,
        config: PoolConfig,
        *,
        on_fatal: Callable[[FatalError], object],
        on_ready: Callable[[int], object] = lambda generation: None,
        on_serving: Callable[[], object] = lambda: None,
        on_reload_failed: Callable[[str], object] = lambda reason: None,
        on_worker_event: Callable[[str, int | None], object] = lambda kind, pid: None,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = reactor
        self._on_worker_event = on_worker_event
        self._launcher = launcher
        self.config = config
        self._on_fatal = on_fatal
        self._on_ready = on_ready
        self._on_serving = on_serving
        self._on_reload_failed = on_reload_failed
        self._announced = -1
        self._rng = rng or random.Random()
        self.workers: list[WorkerProcess] = []
        self.running = False
        self.generation = 0
        self._newest = 0
        # The generation and configuration a reload in progress falls back to.
        self._rollback: tuple[int, PoolConfig] | None = None
        self._ages = 0
        self._boot_failures = 0
        self._ever_ready = False
        self._not_before = 0.0
        self._respawn_call = None
        self._stop_call = None
        self._stopping: defer.Deferred[None] | None = None
        self._check = LoopingCall(self._check_workers)
        self._check.clock = reactor

    # -- control -----------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._reconcile()
        self._check.start(self.config.check_interval, now=False)

    def stop(self, graceful: bool = True) -> defer.Deferred[None]:
        """
        Stop every worker: TERM (finish in-flight requests, up to the graceful timeout) or
        QUIT (at once); a second, quick stop during a graceful one hurries it.
        """
        self.running = False
        self._cancel_respawn()
        if self._stopping is not None:
            if not graceful:
                self._hurry()
            return _chained(self._stopping)
        for worker in list(self.workers):
            worker.stop() if graceful else worker.quit()
        deadline = (self.config.graceful_timeout + DRAIN_MARGIN) if graceful else QUICK_STOP_TIMEOUT
        self._stop_call = self.clock.callLater(deadline, self._kill_all)
        self._stopping = defer.DeferredList(
            [_chained(worker.ended) for worker in self.workers]
        ).addCallback(self._stopped)
        return _chained(self._stopping)

    def _hurry(self) -> None:
        for worker in list(self.workers):
            worker.quit()
        if self._stop_call is not None and self._stop_call.active():
            self._stop_call.reset(QUICK_STOP_TIMEOUT)

    def _kill_all(self) -> None:
        for worker in list(self.workers):
            log.warn("worker {pid} did not stop in time: SIGKILL", pid=worker.pid)
            worker.kill()

    def _stopped(self, _: object) -> None:
        if self._stop_call is not None and self._stop_call.active():
            self._stop_call.cancel()
        if self._check.running:
            self._check.stop()

    def reload(self, config: PoolConfig | None = None) -> None:
        """HUP: a new generation of workers; the old ones retire as the new ones are ready."""
        if not self.running:
            return
        if self._rollback is None:
            self._rollback = (self.generation, self.config)
        if config is not None:
            self.config = config
        self._newest += 1
        self.generation = self._newest
        self._boot_failures = 0
        self._not_before = 0.0
        self._cancel_respawn()
        log.info("reloading: starting {count} new workers (generation {generation})",
                 count=self.config.workers, generation=self.generation,
                 pool_event="reload")
        self._reconcile()

    def resize(self, change: int) -> None:
        """TTIN (+1) or TTOU (-1); never below one worker."""
        workers = max(1, self.config.workers + change)
        if workers == self.config.workers:
            return
        self.config = attrs.evolve(self.config, workers=workers)
        log.info("number of workers: {workers}", workers=workers, pool_event="resize")
        self._reconcile()

    def reopen_logs(self) -> None:
        """USR1: the workers reopen their log files."""
        for worker in self.workers:
            worker.forward(signal.SIGUSR1)

    # -- the pool ----------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """
        Bring the pool to C{config.workers} current workers: spawn the missing ones, retire
        surplus ones, and retire stale ones (old generation, recycling) only as current ones
        become ready, so that capacity never dips during a reload or a recycle.
        """
        if not self.running:
            return
        target = self.config.workers
        live = [w for w in self.workers if w.state in ("starting", "ready")]
        current = [w for w in live if w.generation == self.generation and not w.recycle]
        stale = [w for w in live if w not in current]
        surplus = len(current) - target
        if surplus > 0:
            # TTOU: workers still starting go first, then the oldest.
            victims = sorted(current, key=lambda w: (w.state == "ready", w.age))[:surplus]
            for worker in victims:
                self._retire(worker, "fewer workers wanted")
                current.remove(worker)
        for worker in [w for w in stale if w.state == "starting"]:
            self._retire(worker, "replaced before it was ready")
            stale.remove(worker)
        missing = target - len(current)
        if missing > 0:
            self._spawn_missing(missing)
        ready_current = sum(1 for w in current if w.state == "ready")
        stale_ready = sorted(stale, key=lambda w: w.age)
        for worker in stale_ready[: max(0, len(stale_ready) + ready_current - target)]:
            self._retire(worker, "recycled" if worker.recycle else "reloaded")
        if ready_current >= target and self._announced != self.generation:
            self._announced = self.generation
            self._on_ready(self.generation)

    def _retire(self, worker: WorkerProcess, why: str) -> None:
        self._event("retire", worker, "retiring worker {pid} ({why})", why=why)
        worker.stop()

    def _spawn_missing(self, missing: int) -> None:
        delay = self._not_before - self.clock.seconds()
        if delay > 0:
            if self._respawn_call is None:
                self._respawn_call = self.clock.callLater(delay, self._respawn_now)
            return
        for _ in range(missing):
            self._spawn()

    def _respawn_now(self) -> None:
        self._respawn_call = None
        self._reconcile()

    def _cancel_respawn(self) -> None:
        if self._respawn_call is not None and self._respawn_call.active():
            self._respawn_call.cancel()
        self._respawn_call = None

    def _spawn(self) -> WorkerProcess:
        self._ages += 1
        config = self.config
        limit = config.max_requests
        if limit and config.max_requests_jitter:
            limit += self._rng.randint(0, config.max_requests_jitter)
        taken = {w.slot for w in self.workers}
        slot = next(n for n in range(len(taken) + 1) if n not in taken)
        worker = WorkerProcess(self, self._ages, self.generation, self._launcher.control_fd)
        worker.slot = slot
        self.workers.append(worker)
        self._launcher.launch(worker, attrs.evolve(config.spec(limit), slot=slot))
        self._event("spawn", worker, "worker {pid} spawned (generation {generation})",
                    generation=worker.generation, max_requests=limit)
        return worker

    def _changed(self, worker: WorkerProcess) -> None:
        """A worker changed state (or asked to be recycled): the pool adjusts."""
        if worker.state == "ready":
            if not self._ever_ready:
                self._ever_ready = True
                self._on_serving()
            if worker.generation == self.generation:
                # The new generation can boot: a reload in progress has nothing to fall
                # back to any more (old workers retire as new ones are ready).
                self._rollback = None
            self._boot_failures = 0
            self._not_before = 0.0
        self._reconcile()

    def _worker_ended(self, worker: WorkerProcess, reason: Failure, before: str) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        code, number = describe_end(reason)
        # Ends the master asked for: a retired or replaced worker, one killed for a timeout.
        expected = not self.running or before in ("draining", "timed_out")
        fields: dict[str, Any] = {"exit_code": code, "signal": number, "served": worker.served}
        if number is not None:
            name = _signal_name(number)
            hint = ""
            if number == signal.SIGKILL and not worker.killed:
                hint = " Perhaps out of memory?"
            self._event("exit", worker, "worker {pid} was killed by {signal_name}.{hint}",
                        signal_name=name, hint=hint,
                        level="info" if expected else "error", **fields)
        elif code:
            self._event("exit", worker, "worker {pid} exited with code {exit_code}",
                        level="info" if expected else "error", **fields)
        else:
            self._event("exit", worker, "worker {pid} exited after {served} requests", **fields)
        if not self.running:
            return
        if not worker.was_ready and before in ("starting", "timed_out"):
            self._boot_failed(worker, code)
        self._reconcile()

    def _boot_failed(self, worker: WorkerProcess, code: int | None) -> None:
        self._boot_failures += 1
        cannot_load = code in (EXIT_APP_LOAD_FAILED, EXIT_BOOT_FAILED)
        if cannot_load:
            what = "load the application" if code == EXIT_APP_LOAD_FAILED else "boot"
            why = f"worker failed to {what}: {worker.failure or f'exit code {code}'}"
        else:
            why = f"{self._boot_failures} workers in a row died while booting"
        if self._rollback is not None and worker.generation == self.generation:
            # A reload whose workers cannot boot: the previous generation serves on.
            if cannot_load or self._boot_failures >= GIVE_UP_AFTER:
                self._abandon_reload(why)
                return
        elif cannot_load and not any(w.state == "ready" for w in self.workers):
            self._fatal(why if worker.failure else f"{why}; see the errors above")
            return
        elif not self._ever_ready and self._boot_failures >= GIVE_UP_AFTER:
            self._fatal(f"{why}; see the errors above")
            return
        delay = backoff(self._boot_failures)
        self._not_before = self.clock.seconds() + delay
        if delay:
            log.warn("workers die while booting ({count} in a row): next one in {delay:.1f}s",
                     count=self._boot_failures, delay=delay, pool_event="backoff")

    def _abandon_reload(self, why: str) -> None:
        """Stop the new generation's workers and go back to the one the reload began from."""
        assert self._rollback is not None
        failed = self.generation
        self.generation, self.config = self._rollback
        self._rollback = None
        self._boot_failures = 0
        self._not_before = 0.0
        self._cancel_respawn()
        for worker in [w for w in self.workers if w.generation == failed]:
            self._retire(worker, "its reload was abandoned")
        self._on_reload_failed(f"{why}; generation {self.generation} serves on")

    def _fatal(self, message: str) -> None:
        log.critical("{message}", message=message, pool_event="fatal")
        self.running = False
        self._on_fatal(FatalError(message))

    def _check_workers(self) -> None:
        """The heartbeat check: hung loops, boots that never end, drains past their time."""
        now = self.clock.seconds()
        changed = False
        for worker in list(self.workers):
            state = worker.state
            try:
                self._check_worker(worker, now)
            except Exception:
                # The check must outlive any one worker's trouble.
                log.failure("checking worker {pid} failed", pid=worker.pid)
            changed = changed or worker.state != state
        if changed:
            self._reconcile()

    def _check_worker(self, worker: WorkerProcess, now: float) -> None:
        config = self.config
        state = worker.state
        silence = now - worker.last_seen
        if state == "starting":
            if config.timeout and now - worker.spawned_at > config.boot_timeout:
                worker.hung(now - worker.spawned_at)
        elif state in ("ready", "draining"):
            if config.timeout and silence > config.timeout:
                worker.hung(silence)
            elif state == "draining":
                draining = now - worker.since
                if draining > config.graceful_timeout + DRAIN_MARGIN:
                    worker.hung(draining)
        elif state == "timed_out" and now - worker.since >= KILL_DELAY:
            worker.hung(silence)

    def _event(self, kind: str, worker: WorkerProcess, text: str, level: str = "info",
               **fields: Any) -> None:
        """A structured log event about a worker: C{worker_event} says which."""
        emit = getattr(log, {"warning": "warn"}.get(level, level))
        emit(text, pid=worker.pid, worker_event=kind, worker_age=worker.age, **fields)
        try:
            self._on_worker_event(kind, worker.pid)
        except Exception:
            # Counting must never stop the supervision.
            log.failure("recording the worker event {kind} failed", kind=kind)

    def counts(self) -> dict[str, int]:
        """How many workers are in each state (observability, tests)."""
        result: dict[str, int] = {}
        for worker in self.workers:
            result[worker.state] = result.get(worker.state, 0) + 1
        return result


def backoff(failures: int) -> float:
    """Seconds before the next spawn after C{failures} boot failures in a row: 0, 0.5, 1, 2..."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_MAX, 0.5 * 2 ** (failures - 2))


def _chained(d: defer.Deferred) -> defer.Deferred:
    """A new Deferred firing with C{d}'s result, leaving C{d}'s own chain alone."""
    result: defer.Deferred = defer.Deferred()
    d.addBoth(lambda value: (result.callback(None), value)[1])
    return result


class PreforkService(service.Service):
    """
    Serves with a pool of worker processes: binds every listening socket at start, hands
    them to the workers, and keeps the pool supervised until stopped.

    @param listen: endpoint strings (C{tcp:}, C{tcp6:}, C{ssl:}, C{unix:}); parsed at once,
        so that a bad one is a configuration error, not a start-up failure.
    @param reload_config: called on HUP for the new L{PoolConfig} (re-reading and checking
        the configuration); raising keeps the running pool as it is.
    @param on_serving: called with each bound address once the first worker is ready (the
        serving log line: nothing is served before).
    @param on_fatal: see L{Arbiter}; by default the error is logged and the reactor stopped.
    @param on_ready: see L{Arbiter}; also called with the running generation when a reload
        fails (refused, or abandoned because its workers cannot boot): the pool serves on.
    @param on_reloading: called when a reload (HUP) begins; C{on_ready} tells its end.
    @param launcher_factory: makes the L{IWorkerLauncher} from the reactor and the sockets.
    @param on_worker_event: see L{Arbiter}.
    """

    def __init__(
        self,
        reactor,
        listen: Sequence[str],
        config: PoolConfig,
        *,
        reload_config: Callable[[], PoolConfig] | None = None,
        on_serving: Callable[[str], object] = lambda address: None,
        on_fatal: Callable[[FatalError], object] | None = None,
        on_ready: Callable[[int], object] = lambda generation: None,
        on_reloading: Callable[[], object] = lambda: None,
        launcher_factory: Callable[..., IWorkerLauncher] = ProcessLauncher,
        on_worker_event: Callable[[str, int | None], object] = lambda kind, pid: None,
        rng: random.Random | None = None,
    ) -> None:
        self._reactor = reactor
        self._on_worker_event = on_worker_event
        self.specs: list[ListenSpec] = [parse_listen(reactor, d) for d in listen]
        self.config = config
        self._reload_config = reload_config
        self._on_serving = on_serving
        self._on_fatal = on_fatal or self._stop_reactor
        self._on_ready = on_ready
        self._on_reloading = on_reloading
        self._launcher_factory = launcher_factory
        self._rng = rng
        self.sockets: list[ListeningSocket] = []
        self.launcher: IWorkerLauncher | None = None
        self.arbiter: Arbiter | None = None
        self.graceful = True

    def startService(self) -> None:
        """Bind (the error propagates, nothing stays bound) and start the workers."""
        sockets: list[ListeningSocket] = []
        try:
            for spec in self.specs:
                sockets.append(bind(spec))
        except Exception:
            for sock in sockets:
                sock.close()
            raise
        super().startService()
        self.sockets = sockets
        self.launcher = launcher = self._launcher_factory(self._reactor, sockets)
        self.arbiter = Arbiter(self._reactor, launcher, self.config, on_fatal=self._fatal,
                               on_ready=self._on_ready, on_serving=self._serving,
                               on_reload_failed=self._reload_failed,
                               on_worker_event=self._on_worker_event, rng=self._rng)
        self.arbiter.start()

    def _serving(self) -> None:
        for sock in self.sockets:
            self._on_serving(sock.address())

    def stopService(self) -> defer.Deferred[None]:
        """Stop the workers (gracefully unless L{quick} was called), then close the sockets."""
        super().stopService()
        if self.arbiter is None:
            return defer.succeed(None)
        # New connections are refused from now on; the workers finish what they accepted.
        for sock in self.sockets:
            sock.close()
        close = getattr(self.launcher, "close", None)
        stopped = self.arbiter.stop(self.graceful)
        if close is not None:
            stopped.addCallback(lambda _: close())
        return stopped

    def quick(self) -> None:
        """INT/QUIT: the next (or current) stop does not wait for in-flight requests."""
        self.graceful = False
        if self.arbiter is not None and not self.running:
            self.arbiter.stop(graceful=False)

    def reload(self) -> None:
        """HUP: re-read the configuration, then roll the workers."""
        if self.arbiter is None or not self.running:
            return
        self._on_reloading()
        config = None
        if self._reload_config is not None:
            try:
                config = self._reload_config()
            except Exception as error:
                self._reload_failed(f"{error}; generation {self.arbiter.generation} serves on")
                return
        self.arbiter.reload(config)

    def _reload_failed(self, reason: str) -> None:
        """The one line an operator reads, and the end of the reload for systemd."""
        log.error("reload failed: {reason}", reason=" ".join(str(reason).split()),
                  pool_event="reload_failed")
        assert self.arbiter is not None
        self._on_ready(self.arbiter.generation)

    def resize(self, change: int) -> None:
        if self.arbiter is not None and self.running:
            self.arbiter.resize(change)

    def reopen_logs(self) -> None:
        if self.arbiter is not None:
            log.info("reopening log files (USR1 to the workers)")
            self.arbiter.reopen_logs()

    def _fatal(self, problem: FatalError) -> None:
        self._on_fatal(problem)

    def _stop_reactor(self, problem: FatalError) -> None:
        try:
            self._reactor.stop()
        except error.ReactorNotRunning:
            pass
