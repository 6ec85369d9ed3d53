"""Camera sources: one small interface that yields grey frames.

A Frame is the Y (luma) plane as a 2-D uint8 array, with the monotonic time
of its capture. One backend per module, picked by the name in
`camera.source`: picamera2 (CSI, imported lazily), v4l2 (USB UVC) and replay
(image file, folder, video) for the desk and the tests. `reader` holds the
LatestFrameReader, which opens a source, reads it on its own thread, keeps
only the newest frame and reopens the source with back-off when it fails.

`open_source(cfg)` builds the configured source, not yet opened: call
`open()`, use it as a context manager, or hand it to a LatestFrameReader.
"""

from __future__ import annotations

import importlib

from ordoscan.camera.base import (
    CameraSource,
    Frame,
    FrameSource,
    Grey,
    LeasingSource,
    Zoom,
    release_frame,
)
from ordoscan.camera.picamera2 import (
    MAX_LEASES,
    Picamera2Api,
    Picamera2Source,
    load_picamera2_api,
)
from ordoscan.camera.reader import LatestFrameReader, ReaderStats
from ordoscan.camera.replay import ReplaySource, load_grey_image
from ordoscan.camera.tuning import TUNING_ENV, cap_exposure_profiles
from ordoscan.camera.v4l2 import V4L2Source
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import CameraConfig

# camera.source -> (module, class), as kvmd picks its plugins: one backend per module
BACKENDS = {
    "picamera2": ("ordoscan.camera.picamera2", "Picamera2Source"),
    "v4l2": ("ordoscan.camera.v4l2", "V4L2Source"),
    "replay": ("ordoscan.camera.replay", "ReplaySource"),
}


def source_class(name: str) -> type[CameraSource]:
    """The CameraSource class that `camera.source = name` selects (ValueError if none)."""
    try:
        module, cls = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"camera.source {name!r}: unknown (one of {', '.join(sorted(BACKENDS))})"
        ) from None
    found: type[CameraSource] = getattr(importlib.import_module(module), cls)
    return found


def open_source(
    cfg: CameraConfig, *, clock: Clock = SYSTEM_CLOCK, remember_played: bool = True
) -> CameraSource:
    """The FrameSource that `cfg.source` names, configured but not yet opened.

    remember_played=False: a followed replay folder does not record what it played
    (a self-test must not use up the files the daemon is to play).
    """
    cls = source_class(cfg.source)
    if cls is ReplaySource:
        return ReplaySource(cfg, clock=clock, remember_played=remember_played)
    return cls(cfg, clock=clock)  # type: ignore[call-arg]


__all__ = [
    "BACKENDS",
    "MAX_LEASES",
    "TUNING_ENV",
    "CameraSource",
    "Frame",
    "FrameSource",
    "Grey",
    "LatestFrameReader",
    "LeasingSource",
    "Picamera2Api",
    "Picamera2Source",
    "ReaderStats",
    "ReplaySource",
    "V4L2Source",
    "Zoom",
    "cap_exposure_profiles",
    "load_grey_image",
    "load_picamera2_api",
    "open_source",
    "release_frame",
    "source_class",
]
