"""Log lines for operators: one line per event, and each process named with its level."""

from __future__ import annotations

import io

from twisted.logger import Logger, LogLevel, LogPublisher

from twistreg.logs import line_log_observer, naming_process


def logged(observer, level: LogLevel, text: str, **fields) -> None:
    publisher = LogPublisher(observer)
    Logger(namespace="twistreg.test", observer=publisher).emit(level, text, **fields)


def test_one_line_per_event_even_with_a_traceback():
    output = io.StringIO()
    log = Logger(namespace="twistreg.test", observer=LogPublisher(line_log_observer(output)))
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        log.failure("it broke")
    [line] = output.getvalue().splitlines()
    assert "[twistreg.test#critical] it broke" in line and "ValueError: first" in line


def test_a_worker_line_carries_its_level_and_pid():
    output = io.StringIO()
    observer = naming_process(line_log_observer(output), "worker=42")
    logged(observer, LogLevel.warn, "worker {pid} is slow", pid=42)
    logged(observer, LogLevel.info, "fine")
    warn, info = output.getvalue().splitlines()
    assert warn.endswith(" [twistreg.test#warn worker=42] worker 42 is slow")
    assert info.endswith(" [twistreg.test#info worker=42] fine")


def test_a_system_given_by_the_event_is_kept():
    events: list[dict] = []
    logged(naming_process(events.append, "worker=42"), LogLevel.info, "x", log_system="mine")
    assert events[0]["log_system"] == "mine"


def test_legacy_events_are_named_too():
    from twisted.python import log as legacy

    output = io.StringIO()
    observer = naming_process(line_log_observer(output), "worker=42")
    publisher = LogPublisher(observer)
    legacy_publisher = legacy.LogPublisher(publisher, publisher)
    legacy_publisher.msg("Site starting on 5000")
    assert output.getvalue().rstrip().endswith("#info worker=42] Site starting on 5000")
