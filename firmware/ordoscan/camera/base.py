"""The camera interface: a Frame, what a source must do, and what the built-in sources share."""

from __future__ import annotations

import abc
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from ordoscan.errors import CameraOpenError

log = logging.getLogger("ordoscan.camera")

Grey = npt.NDArray[np.uint8]
# (x0, y0, x1, y1) in the frame's own pixels -> that region, grey, from a higher-resolution
# image of the same instant (None if the source has none, or the box is empty)
Zoom = Callable[[int, int, int, int], Grey | None]


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Frame:
    """One grey frame: `image` may be a strided view into the camera buffer."""

    image: npt.NDArray[np.uint8]
    timestamp: float  # seconds, on the source's Clock.monotonic(), at capture
    index: int  # frame number from the source, from 0
    # the same instant at a higher resolution, region by region; valid while the frame is
    # (until it is released); None when the source has nothing sharper than `image`
    zoom: Zoom | None = field(default=None, compare=False, repr=False)


class FrameSource(Protocol):
    """What the pipeline needs of a camera."""

    def open(self) -> None: ...

    def read(self, timeout: float) -> Frame | None:
        """The newest frame, or None if none arrived within timeout (or replay ended)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LeasingSource(Protocol):
    """A source whose frames borrow its buffers: each must be given back with release()."""

    def release(self, frame: Frame) -> None: ...


def stall_message(source: object, name: str, silent: float) -> str:
    """The camera state when `source` has given no frame for `silent` seconds."""
    hint = getattr(source, "stall_hint", "")
    return f"{name}: no frame for {silent:.1f} s" + (f" ({hint})" if hint else "")


def release_frame(source: object, frame: Frame) -> None:
    """Give a frame back to its source if the source lends its buffers (else nothing to do)."""
    if isinstance(source, LeasingSource):
        source.release(frame)


class CameraSource(abc.ABC):
    """A FrameSource with a name, a live flag and a context manager: the built-in sources."""

    live = True  # a live camera that stays silent has stalled; a replay may just have ended
    # what a silent camera most likely means, added to the stall message whichever of the
    # source and the reader notices the silence first ("" when there is nothing to add)
    stall_hint = ""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the source is, for logs and the camera state ("v4l2 /dev/video0")."""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the source; CameraOpenError says why it cannot be."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Frame | None:
        """The newest frame, or None if none arrived within timeout (or replay ended)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the source; never raises, and may be called more than once."""

    def exposure_state(self) -> dict[str, Any] | None:
        """Who sets the exposure and where it stands, for telemetry (None: nothing to say)."""
        return None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def why(e: BaseException) -> str:
    """An exception and its causes as one line (picamera2 hides 'busy' in __cause__)."""
    parts: list[str] = []
    seen: BaseException | None = e
    while seen is not None and len(parts) < 4:
        text = str(seen) or type(seen).__name__
        if text not in parts:
            parts.append(text)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return ": ".join(parts)


def zoom_box(
    box: tuple[int, int, int, int], frame: tuple[int, int], hires: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """A box in frame pixels (x0, y0, x1, y1) as the box that covers it in the higher-resolution
    image of the same field of view, both (width, height); None if it is empty once clipped."""
    x0, y0, x1, y1 = box
    fw, fh = frame
    hw, hh = hires
    x0, x1 = max(0, min(x0, fw)), max(0, min(x1, fw))
    y0, y1 = max(0, min(y0, fh)), max(0, min(y1, fh))
    if x1 <= x0 or y1 <= y0:
        return None
    # outward: the region asked for is always inside the one given
    return (x0 * hw // fw, y0 * hh // fh, -(-x1 * hw // fw), -(-y1 * hh // fh))


def teardown(what: str, action: Callable[[], object]) -> None:
    """Run a tear-down step; a failure is logged, never raised (close must always finish)."""
    try:
        action()
    except Exception as e:
        log.warning("%s failed: %s", what, why(e))


def bounded(what: str, action: Callable[[], object], timeout: float) -> threading.Thread | None:
    """Run a tear-down step on its own thread for at most `timeout` seconds.

    None once it has finished (a failure is logged); the thread, still running, if it
    has not (a driver call that never returns must not hold the caller).
    """
    thread = threading.Thread(
        target=teardown, args=(what, action), name="camera-teardown", daemon=True
    )
    thread.start()
    thread.join(max(0.0, timeout))
    if not thread.is_alive():
        return None
    log.error("%s: still not done after %.1f s; left to finish on its own", what, timeout)
    return thread


def import_cv2(purpose: str) -> Any:
    """OpenCV (v4l2 and video replay), or CameraOpenError saying how to install it."""
    try:
        return importlib.import_module("cv2")
    except Exception as e:
        raise CameraOpenError(
            f"{purpose} needs OpenCV ({why(e)}): pip install 'ordoscan[usb]' "
            "(opencv-python-headless)"
        ) from None

