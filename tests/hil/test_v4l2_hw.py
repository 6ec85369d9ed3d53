"""A real USB (UVC) camera through V4L2Source and the kiosk's own auto-exposure.

Runs where a UVC camera is plugged in (a Pi with a USB webcam, or any Linux machine);
skipped, with the reason, where OpenCV is missing or no V4L2 capture device is driven by
uvcvideo. Pick the device with ORDOSCAN_HW_V4L2_DEVICE (default: the first uvcvideo one).
Run on the rig: `.venv/bin/pytest -m hardware tests/hil/test_v4l2_hw.py`; cover the lens
for a moment during the second test to see the gain take over at the cap.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ordoscan.camera import V4L2Source
from ordoscan.camera.v4l2_controls import (
    CID_EXPOSURE_ABSOLUTE,
    CID_EXPOSURE_AUTO,
    EXPOSURE_MANUAL,
    EXPOSURE_UNIT_US,
    DeviceControls,
)
from ordoscan.config import CameraConfig

pytestmark = pytest.mark.hardware

MAX_EXPOSURE_US = 8000


@pytest.fixture(scope="module")
def device() -> str:
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'ordoscan[usb]')")
    named = os.environ.get("ORDOSCAN_HW_V4L2_DEVICE", "")
    if named:
        return named
    for node in sorted(Path("/sys/class/video4linux").glob("video*")):
        driver = node / "device" / "driver"
        if driver.exists() and driver.resolve().name == "uvcvideo":
            return f"/dev/{node.name}"
    pytest.skip("no USB (uvcvideo) camera here; ORDOSCAN_HW_V4L2_DEVICE names another")


def config(device: str) -> CameraConfig:
    return CameraConfig(source="v4l2", device=device, size=(1280, 720), fps=15,
                        max_exposure_us=MAX_EXPOSURE_US)


def test_the_camera_gives_the_kiosk_manual_exposure_and_gets_its_own_back(device: str) -> None:
    watch = DeviceControls(device)
    try:
        before = watch.get(CID_EXPOSURE_AUTO)
        source = V4L2Source(config(device))
        source.open()
        try:
            if source.kiosk_exposure is None:
                pytest.skip(f"{device} offers no manual exposure: its own is used (logged)")
            assert watch.get(CID_EXPOSURE_AUTO) == EXPOSURE_MANUAL
            frames = 0
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if source.read(1.0) is not None:
                    frames += 1
                # read back from the device, not from the kiosk's bookkeeping
                assert watch.get(CID_EXPOSURE_ABSOLUTE) * EXPOSURE_UNIT_US <= MAX_EXPOSURE_US
            assert frames >= 30
        finally:
            source.close()
        assert watch.get(CID_EXPOSURE_AUTO) == before
    finally:
        watch.close()


def test_the_exposure_settles_under_the_cap(device: str) -> None:
    source = V4L2Source(config(device))
    source.open()
    try:
        if source.kiosk_exposure is None:
            pytest.skip(f"{device} offers no manual exposure: its own is used (logged)")
        levels = []
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            frame = source.read(1.0)
            if frame is not None:
                levels.append(float(frame.image.mean()))
        state = source.exposure_state()
        assert state is not None and state["exposure_us"] <= MAX_EXPOSURE_US
        # a lit room: the frame is neither black nor white once settled
        assert 30 < sum(levels[-15:]) / 15 < 220, (levels[-15:], state)
    finally:
        source.close()
