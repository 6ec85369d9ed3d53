"""What the picamera2 tests share: a hand-moved clock, a config, a frame read, a clean tuning."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ordoscan.camera import TUNING_ENV, Frame, Picamera2Source, tuning
from ordoscan.config import CameraConfig


class FakeClock:
    """An ordoscan.clock.Clock whose time the test moves by hand (waits are real and short);
    calling it gives the time too, for the double's sensor."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_764_000_000.0 + self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, min(timeout, 0.05)))


def camera_config(**changes: Any) -> CameraConfig:
    values: dict[str, Any] = {"source": "picamera2", "size": (640, 480), "fps": 15}
    return CameraConfig(**(values | changes))


def read_frame(source: Picamera2Source, emit: Callable[[], bool], tries: int = 50) -> Frame:
    """Emit frames until the source returns one (the first read only starts the capture job)."""
    for _ in range(tries):
        frame = source.read(0.0)
        if frame is not None:
            return frame
        emit()
    raise AssertionError("no frame from the source")


@pytest.fixture
def tuning_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """picamera2 (and so the double) writes the tuning file's name into os.environ."""
    saved = os.environ.pop(TUNING_ENV, None)
    monkeypatch.setattr(tuning, "_site_tuning_seen", "")
    yield
    os.environ.pop(TUNING_ENV, None)
    if saved is not None:
        os.environ[TUNING_ENV] = saved
