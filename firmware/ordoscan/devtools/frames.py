"""Following the kiosk frame by frame from outside: `App(cfg, on_frame=FrameCounter())`."""

from __future__ import annotations

import threading
import time


class FrameCounter:
    """Counts the frames the App has fully handled (signals posted); callable as its hook."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def __call__(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    def wait_past(
        self, before: int, timeout: float, stop: threading.Event | None = None
    ) -> bool:
        """Wait until more than `before` frames are handled; False on timeout or `stop`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._count <= before:
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                self._cond.wait(min(left, 0.05))  # short: `stop` has no link to this condition
            return True
