"""Pin timelines of gpiozero's mock pins, checked so that a loaded machine cannot fail them.

The feedback tests use `InstantPin`: each change is stamped with the instant the feedback
worker wrote it for (ordoscan.feedback.service.write_time), not with when the write came.
A worker starved on a loaded 2-core machine writes late, and writes the edges it missed
one after the other; the instants it meant stay those of the design (within the worker's
1 ms look-ahead). So a change must come in the designed order, never EARLY_S early (as
gpiozero's own check) and at most LATE_S late, measured on those instants; how late the
writes themselves came is nothing to check. The designed durations are also checked
exactly, on a clock the test moves, in tests/test_feedback_machine.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import isclose
from typing import Any

from gpiozero.pins.mock import MockPin, MockPWMPin, PinState
from ordoscan.feedback.service import write_time

EARLY_S = 0.05
LATE_S = 0.01  # the look-ahead and rounding: the instants are the worker's, not the scheduler's


class InstantStamps:
    """Mixed into a gpiozero mock pin: a change written by the feedback worker is stamped with
    the instant it belongs to (other changes, e.g. at close, with the time of the write)."""

    _state: Any
    _last_change: float
    states: list[PinState]

    def _change_state(self, value: Any) -> bool:
        at = write_time()
        if at is None:
            changed: bool = super()._change_state(value)  # type: ignore[misc]
            return changed
        if self._state == value:
            return False
        self._state = value
        self.states.append(PinState(at - self._last_change, value))
        self._last_change = at
        return True


class InstantPin(InstantStamps, MockPin):
    """gpiozero's MockPin with InstantStamps."""


class InstantPWMPin(InstantStamps, MockPWMPin):
    """gpiozero's MockPWMPin with InstantStamps (a tonal buzzer)."""


Step = tuple[float | None, Any]  # (delay after the previous change or None: as measured, state)


def assert_timeline(pin: Any, expected: Sequence[Step], *, late: float = LATE_S) -> None:
    """The pin went through exactly these states; each one at its designed time (counted from
    the last step measured, `None`), never EARLY_S early and at most `late` late (an
    InstantPin's instants; see the module's docstring)."""
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
