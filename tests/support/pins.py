"""Pin timelines of gpiozero's mock pins, checked so that a loaded machine cannot fail them.

A change must come in the designed order and never early (50 ms of tolerance, as gpiozero's
own check), but may come late by up to LATE_S: a worker thread on a loaded 2-core machine
wakes when the scheduler lets it. The designed durations themselves are checked exactly, on a
clock the test moves, in tests/test_feedback_machine.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isclose
from typing import Any

EARLY_S = 0.05
LATE_S = 1.0

Step = tuple[float | None, Any]  # (delay after the previous change or None: as measured, state)


def assert_timeline(pin: Any, expected: Sequence[Step], *, late: float = LATE_S) -> None:
    """The pin went through exactly these states; each one at its designed time (counted from
    the last step measured, `None`), never EARLY_S early and at most `late` late."""
    actual = list(pin.states)
    shown = [(round(a.timestamp, 3), a.state) for a in actual]
    assert len(actual) == len(expected), shown
    assert all(isclose(a.state, s) for a, (_, s) in zip(actual, expected, strict=True)), shown
    at = designed = 0.0
    for a, (delay, _) in zip(actual, expected, strict=True):
        at += a.timestamp
        if delay is None:
            designed = at
            continue
        designed += delay
        assert designed - EARLY_S <= at <= designed + late, (
            f"a change at {at:.3f} s, designed for {designed:.3f} s: {shown}")
