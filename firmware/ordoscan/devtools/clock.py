"""A clock the tests move by hand, for back-off, expiry and windows without real sleeps."""

from __future__ import annotations

import threading


class ManualClock:
    """Implements ordoscan.clock.Clock; `advance(s)` moves both clocks and wakes waiters."""

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_764_000_000.0) -> None:
        self._mono = monotonic
        self._wall = wall
        self._cond = threading.Condition()
        self.waits: list[float] = []  # every timeout asked of wait(), in order

    def monotonic(self) -> float:
        with self._cond:
            return self._mono

    def wall(self) -> float:
        with self._cond:
            return self._wall

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._mono += seconds
            self._wall += seconds
            self._cond.notify_all()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Returns once `event` is set or the clock has been advanced past the deadline."""
        with self._cond:
            self.waits.append(timeout)
            deadline = self._mono + max(0.0, timeout)
            while not event.is_set() and self._mono < deadline:
                self._cond.wait(0.01)  # also polls the event, which has no link to this condition
            return event.is_set()
