"""One clock for the whole kiosk: monotonic time for ages and timeouts, wall time for messages.

As paho routes all its timing through one `time_func`, every stage takes a
`Clock` from the App instead of calling `time` itself, so that back-off,
expiry and windows can be tested without real sleeps.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the stages read time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (ages, timeouts, back-off)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (message timestamps only; NTP may step it)."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Sleep up to `timeout`, waking early when `event` is set; True if it was set."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


SYSTEM_CLOCK: Clock = SystemClock()


def iso_ms(ts: float | datetime) -> str:
    """ISO 8601 UTC with milliseconds and Z, as in every message the kiosk sends
    (`2026-11-25T10:31:07.412Z`): seconds since the epoch, or an aware datetime."""
    dt = ts.astimezone(UTC) if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
