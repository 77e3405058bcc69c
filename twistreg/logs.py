# -*- test-case-name: tests.test_logs -*-
"""Log output for operators: one readable line per event, whatever the output is."""

from __future__ import annotations

from typing import IO

from twisted.internet.interfaces import IReactorTime
from twisted.logger import FileLogObserver, ILogObserver, Logger, formatEventAsClassicLogText


def _one_line(event: dict) -> str | None:
    """The classic text form with inner newlines (tracebacks) folded: one journald entry."""
    text = formatEventAsClassicLogText(event)
    if text is None:
        return None
    return text.rstrip("\n").replace("\n", " \\n ") + "\n"


def line_log_observer(output: IO[str]) -> FileLogObserver:
    """A file log observer writing one line per event to C{output}."""
    return FileLogObserver(output, _one_line)


def naming_process(observer: ILogObserver, process: str) -> ILogObserver:
    """
    An observer that adds C{process} (C{worker=123}) to each event's system, after the
    namespace and level that twisted.logger puts there by default (as the master's lines
    show them), for a log several processes write to.
    """

    def named(event: dict) -> None:
        # "-" is what Twisted's legacy log.msg gives events that name no system.
        if event.get("log_system", "-") == "-":
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
            event = dict(event, log_system=f"{system} {process}")
        observer(event)

    return named


class Occasional:
    """
    A warning repeated at most once per C{interval} seconds: an outage of a service every
    request needs (S3, Redis) must not write a line per request.
    """

    def __init__(self, clock: IReactorTime, interval: float = 60.0) -> None:
        self._clock = clock
        self._interval = interval
        self._last: float | None = None

    def warn(self, logger: Logger, text: str, **fields: object) -> None:
        """Log C{text} (a twisted.logger format) unless one was logged less than C{interval} ago."""
        now = self._clock.seconds()
        if self._last is None or now - self._last >= self._interval:
            self._last = now
            logger.warn(text, **fields)
