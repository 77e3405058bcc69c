"""The threads of a hosted WSGI application (twistreg.web.threads): real threads, a fake clock."""

from __future__ import annotations

import threading

import pytest
from twisted.internet.task import Clock

from twistreg.web.threads import BUSY_SHARE, CHECK_SECONDS, LONGEST_WAIT, CallThreads

WAIT = 30.0


class Clocks:
    """The wall and CPU clocks the pool reads, moved by the test."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def pass_time(self, seconds: float, cpu_share: float) -> None:
        self.wall += seconds
        self.cpu += seconds * cpu_share


class Calls:
    """Calls that say when they start and return when the test lets them."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self._start = threading.Semaphore(0)
        self.release = threading.Event()

    def call(self, number: int) -> None:
        self.started.append(number)
        self._start.release()
        assert self.release.wait(WAIT)

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self._start.acquire(timeout=WAIT)


@pytest.fixture
def made():
    """Makes pools; whatever a test leaves running is let go and stopped after it."""
    pools: list[tuple[CallThreads, Calls]] = []

    def make(size: int) -> tuple[CallThreads, Clock, Clocks, Calls]:
        reactor, clocks, calls = Clock(), Clocks(), Calls()
        threads = CallThreads(size, "test", reactor, wall=lambda: clocks.wall,
                              cpu=lambda: clocks.cpu)
        pools.append((threads, calls))
        return threads, reactor, clocks, calls

    yield make
    for threads, calls in pools:
        calls.release.set()
        threads.stop()


def running_threads() -> int:
    return len([t for t in threading.enumerate() if t.name.startswith("test-")])


def test_a_call_to_an_idle_pool_runs_at_once(made):
    threads, reactor, _, calls = made(4)
    threads.submit(calls.call, 1)
    calls.wait_started(1)
    assert reactor.getDelayedCalls() == []
    calls.release.set()
    threads.stop()
    assert calls.started == [1] and running_threads() == 0


def test_calls_wait_for_the_running_thread_while_the_process_computes(made):
    threads, reactor, clocks, calls = made(4)
    threads.submit(calls.call, 1)
    calls.wait_started(1)
    threads.submit(calls.call, 2)
    for _ in range(3):
        clocks.pass_time(CHECK_SECONDS, cpu_share=1.0)
        reactor.advance(CHECK_SECONDS)
    assert calls.started == [1]
    calls.release.set()
    threads.stop()
    assert calls.started == [1, 2]


def test_another_thread_is_woken_when_the_running_one_waits(made):
    threads, reactor, clocks, calls = made(4)
    for number in (1, 2, 3):
        threads.submit(calls.call, number)
    calls.wait_started(1)
    clocks.pass_time(CHECK_SECONDS, cpu_share=BUSY_SHARE / 2)
    reactor.advance(CHECK_SECONDS)
    calls.wait_started(1)
    assert sorted(calls.started) == [1, 2]
    clocks.pass_time(CHECK_SECONDS, cpu_share=0.0)
    reactor.advance(CHECK_SECONDS)
    calls.wait_started(1)
    assert sorted(calls.started) == [1, 2, 3]
    # Nothing waits: the next look is the last.
    reactor.advance(CHECK_SECONDS)
    assert reactor.getDelayedCalls() == []
    calls.release.set()
    threads.stop()


def test_a_call_that_waited_too_long_gets_a_thread_however_busy_the_process(made):
    threads, reactor, clocks, calls = made(2)
    threads.submit(calls.call, 1)
    threads.submit(calls.call, 2)
    calls.wait_started(1)
    looks = round(LONGEST_WAIT / CHECK_SECONDS)
    for _ in range(looks - 1):
        clocks.pass_time(CHECK_SECONDS, cpu_share=1.0)
        reactor.advance(CHECK_SECONDS)
    assert calls.started == [1]
    clocks.pass_time(CHECK_SECONDS, cpu_share=1.0)
    reactor.advance(CHECK_SECONDS)
    calls.wait_started(1)
    assert calls.started == [1, 2]
    calls.release.set()
    threads.stop()


def test_no_more_threads_run_than_the_pool_has_and_stop_runs_what_waits(made):
    threads, reactor, clocks, calls = made(2)
    for number in range(4):
        threads.submit(calls.call, number)
    calls.wait_started(1)
    for _ in range(5):
        clocks.pass_time(CHECK_SECONDS, cpu_share=0.0)
        reactor.advance(CHECK_SECONDS)
    calls.wait_started(1)
    assert sorted(calls.started) == [0, 1] and running_threads() == 2
    calls.release.set()
    threads.stop()
    assert sorted(calls.started) == [0, 1, 2, 3] and running_threads() == 0
    assert reactor.getDelayedCalls() == []
