# -*- test-case-name: tests.test_logs -*-
"""Log output for operators: one readable line per event, whatever the output is."""

from __future__ import annotations

from typing import IO

from twisted.logger import FileLogObserver, formatEventAsClassicLogText


def _one_line(event: dict) -> str | None:
    """The classic text form with inner newlines (tracebacks) folded: one journald entry."""
    text = formatEventAsClassicLogText(event)
    if text is None:
        return None
    return text.rstrip("\n").replace("\n", " \\n ") + "\n"


def line_log_observer(output: IO[str]) -> FileLogObserver:
    """A file log observer writing one line per event to C{output}."""
    return FileLogObserver(output, _one_line)
