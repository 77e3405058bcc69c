# -*- test-case-name: tests.test_arbiter -*-
"""
What the master and a worker tell each other.

Master to worker: the command line (one JSON L{WorkerSpec}), inherited descriptors (stdin as a
pipe whose end-of-file means the master is gone, then the listening sockets from fd 3, then
the control pipe), and signals. Worker to master: one line per message on the control pipe::

    ready                 serving: the sockets are adopted and the Site is built
    beat <served>         the event loop is alive (sent every heartbeat interval)
    recycle <reason>      please start my replacement, then stop me (max requests, memory)
    draining <reason>     I stopped accepting and finish what is in flight (TERM, master gone)
    stopped <served>      the last line before a clean exit
    failed <reason>       the application cannot load (then exit status 4)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

EXIT_BOOT_FAILED = 3
"""A worker could not start (bad spec, sockets not adoptable): as gunicorn's WORKER_BOOT_ERROR."""
EXIT_APP_LOAD_FAILED = 4
"""A worker could not build the application: as gunicorn's APP_LOAD_ERROR."""

MESSAGES = frozenset({"ready", "beat", "recycle", "draining", "stopped", "failed"})
MAX_LINE = 4096


@attrs.frozen
class Listener:
    """A listening socket as the worker sees it: its descriptor number and what it is."""

    fd: int
    kind: str
    family: str
    description: str


@attrs.frozen
class WorkerSpec:
    """
    Everything a worker needs, passed as JSON on its command line.

    @ivar app: C{"module:callable"}; called with C{(reactor, app_options)}, it returns an
        L{twistreg.server.interfaces.IWorkerApplication}.
    @ivar app_options: JSON values for the application (its own configuration sources).
    @ivar max_requests: this worker's limit, jitter included; 0 is no limit.
    @ivar max_memory: resident set size in bytes above which it asks to be recycled; 0 is off.
    @ivar accepts_per_wakeup: the accept batch of its listening ports.
    @ivar scoreboard_fd: the shared connection counts (see L{twistreg.server.scoreboard});
        -1 accepts without looking at the other workers.
    @ivar slot: this worker's place on the scoreboard.
    @ivar argv: the master's command line, which the worker presents as its own.
    @ivar log_file: where to write log events; C{None} is standard output.
    """

    app: str
    app_options: Mapping[str, Any] = attrs.field(factory=dict)
    listeners: tuple[Listener, ...] = ()
    control_fd: int = -1
    heartbeat_interval: float = 1.0
    graceful_timeout: float = 30.0
    max_requests: int = 0
    max_memory: int = 0
    accepts_per_wakeup: int = 1
    scoreboard_fd: int = -1
    slot: int = -1
    linger: float = 2.0
    worker_header: bool = False
    argv: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "info"
    log_file: str | None = None

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        """@raise ValueError: not a spec."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a worker spec is a JSON object")
        data["listeners"] = tuple(Listener(**item) for item in data.get("listeners", ()))
        data["argv"] = tuple(data.get("argv", ()))
        try:
            return cls(**data)
        except TypeError as error:
            raise ValueError(str(error)) from None


def encode(kind: str, *fields: object) -> bytes:
    """One control line."""
    assert kind in MESSAGES, kind
    text = " ".join([kind, *(str(field) for field in fields)])
    return text.encode("utf-8", "replace")[: MAX_LINE - 1] + b"\n"


class LineReader:
    """Splits the control pipe's bytes into C{(kind, argument)} messages."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """The complete messages in C{data}; unknown or over-long lines are dropped."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
        messages = []
        for line in lines:
            kind, _, argument = line.decode("utf-8", "replace").partition(" ")
            if kind in MESSAGES:
                messages.append((kind, argument))
        return messages
