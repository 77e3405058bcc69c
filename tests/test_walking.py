"""What the walks of a whole storage share: pacing, stopping, progress on a terminal or not."""

from __future__ import annotations

import io
import threading

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from twistreg.walking import BarProgress, LineProgress, Pace, Stopped, progress_on


def test_lines_every_interval_when_not_a_terminal():
    clock, out = Clock(), io.StringIO()
    progress = LineProgress(out, clock, "bridge", interval=10)
    progress.phase("images", 3)
    progress.advance("1 written")
    clock.advance(10)
    progress.advance("1 written")
    progress.advance("1 written")
    assert out.getvalue() == "bridge: images: 2 of 3, 1 written\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_per_phase_on_a_terminal_drawn_again_while_a_step_lasts():
    clock, out = Clock(), Terminal()
    progress = progress_on(out, clock, "gc")
    assert isinstance(progress, BarProgress)
    progress.phase("blobs", 2)
    progress.advance()
    clock.advance(0.5)
    last = out.getvalue().rsplit("\r", 1)[-1]
    assert "gc: blobs" in last and "1/2" in last
    progress.close()
    assert clock.getDelayedCalls() == []
    assert isinstance(progress_on(io.StringIO(), clock, "gc"), LineProgress)


def test_a_pace_stops_between_two_items_when_asked():
    stopping = threading.Event()
    pace = Pace(Clock(), stopping)
    seen = []

    async def one(item: int) -> int:
        seen.append(item)
        stopping.set()
        return item

    failures = []
    ensureDeferred(pace.each(one, range(100))).addErrback(failures.append)
    assert failures and failures[0].check(Stopped)
    assert len(seen) <= 16  # each worker stops after the item it holds
    with pytest.raises(Stopped):
        ensureDeferred(pace.breathe()).result.raiseException()
