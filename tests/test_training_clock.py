"""The loop's clocks: the wall clock over sessions and the time per phase."""

from __future__ import annotations

import time

from lm.training.clock import Phases, WallClock
from lm.training.state import PHASES


def test_the_wall_clock_adds_this_session_to_what_earlier_ones_spent():
    clock = WallClock(spent=100.0)
    first = clock()
    time.sleep(0.02)
    second = clock()
    assert 100.0 <= first < second and second - first >= 0.02
    assert WallClock()() < 1.0


def test_phases_add_up_keep_the_last_and_restore():
    totals = dict.fromkeys(PHASES, 0.0)
    phases = Phases(totals)
    assert phases.last == dict.fromkeys(PHASES, 0.0)
    phases.add("data", 1.5)
    phases.add("data", 0.5)
    with phases.time("eval"):
        time.sleep(0.02)
    assert totals["data"] == 2.0 and phases.last["data"] == 0.5
    assert totals["eval"] == phases.last["eval"] >= 0.02
    saved = dict(totals)
    phases.add("compute", 3.0)
    phases.restore(saved)
    assert phases.totals is totals and totals == saved  # the same dict, set back
    assert phases.last["compute"] == 3.0  # the last durations are measurements; they stay
