"""A record of mock pin changes, for the desk and the hardware-in-loop tests.

With `gpio.pin_factory = "mock"` the LEDs and the buzzer live inside the
daemon's process, out of sight. When the environment variable
ORDOSCAN_PIN_TRACE names a file, the mock pins append each change of level
to it, one JSON object a line:

    {"t": 12345.678901, "pid": 4242, "bcm": 17, "value": 1, "due": 12345.5}

`t` is time.monotonic() when the pin was written (one clock for every process
of the machine, so a test can line the changes up with its own actions),
`value` is the pin level (0 or 1; a PWM level between them for a tonal
buzzer). `due`, on the writes of the feedback worker, is the instant these
levels belong to (ordoscan.feedback.service.write_time): the same as `t` give
or take a scheduling delay, but on a starved worker the write comes late
(`t` - `due`), and the edges it missed are written one after the other, so
only `due` keeps the lengths the kiosk meant (a 150 ms dip, 0.5 s blinks). Each line is one
O_APPEND write, so lines from successive daemons never interleave and a line
written before a SIGKILL is kept. Real pin factories are never traced.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from ordoscan.feedback.service import write_time

PIN_TRACE_ENV = "ORDOSCAN_PIN_TRACE"


class _Trace:
    """The open trace file: one write() per line, appended."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.pid = os.getpid()

    def record(self, bcm: int, value: float) -> None:
        level: float = int(value) if float(value) in (0.0, 1.0) else round(float(value), 4)
        line: dict[str, float] = {
            "t": round(time.monotonic(), 6), "pid": self.pid, "bcm": bcm, "value": level,
        }
        due = write_time()
        if due is not None:
            line["due"] = round(due, 6)
        # a full disk must not stop the lights: the trace is a desk aid only
        with contextlib.suppress(OSError):
            os.write(self.fd, (json.dumps(line) + "\n").encode())


def _bcm(pin: MockPin) -> int:
    name = str(pin.info.name)
    return int(name[4:]) if name.startswith("GPIO") else -1


class _TracedMixin:
    _trace: _Trace | None = None  # set on the subclass made by traced_mock_factory

    def _change_state(self, value: Any) -> bool:
        changed: bool = super()._change_state(value)  # type: ignore[misc]
        if changed and self._trace is not None:
            self._trace.record(_bcm(self), value)
        return changed


def traced_mock_factory(path: str, *, pwm: bool = False) -> Any:
    """A gpiozero MockFactory whose pins append their changes to `path`."""
    trace = _Trace(path)
    base: type[MockPin] = MockPWMPin if pwm else MockPin
    pin_class = type(f"Traced{base.__name__}", (_TracedMixin, base), {"_trace": trace})
    return MockFactory(pin_class=pin_class)


def trace_path() -> str | None:
    """The trace file named by ORDOSCAN_PIN_TRACE, or None when tracing is off."""
    return os.environ.get(PIN_TRACE_ENV) or None


def _mock(pwm: bool) -> Any:
    traced = trace_path()
    if traced:
        return traced_mock_factory(traced, pwm=pwm)
    return MockFactory(pin_class=MockPWMPin if pwm else MockPin)


def mock_factory() -> Any:
    """Entry point `ordoscan-mock` (gpio.pin_factory = "mock"): mock pins, traced when
    ORDOSCAN_PIN_TRACE names a file."""
    return _mock(pwm=False)


def mock_pwm_factory() -> Any:
    """Entry point `ordoscan-mock-pwm`: the same with PWM pins, for a tonal buzzer."""
    return _mock(pwm=True)
