"""Camera sources: one small interface that yields grey frames.

A Frame is the Y (luma) plane as a 2-D uint8 array, with the monotonic time
of its capture. Sources: picamera2 (CSI, imported lazily), v4l2 (USB UVC) and
replay (image file, folder, video) for the desk and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Frame:
    """One grey frame: `image` may be a strided view into the camera buffer."""

    image: npt.NDArray[np.uint8]
    timestamp: float  # seconds, time.monotonic() clock, at capture
    index: int  # frame number from the source, from 0


class FrameSource(Protocol):
    """What the pipeline needs of a camera."""

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame | None:
        """The newest frame, or None if none arrived within timeout (or replay ended)."""
        ...

    def close(self) -> None: ...
