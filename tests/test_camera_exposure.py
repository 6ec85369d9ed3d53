"""The kiosk's auto-exposure on a USB camera: a UVC camera's controls and a room's light, doubled.

The double answers VIDIOC_QUERYCTRL, G_CTRL and S_CTRL as uvcvideo does for a
typical webcam (exposure_auto a menu of manual and aperture priority, the
absolute exposure in 100 µs refused while the camera is automatic, integers
clamped into their range), and its frames follow the controls two frames late,
as a UVC camera's do.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import numpy as np
import pytest
from ordoscan.camera import V4L2Source
from ordoscan.camera.exposure import BAND, HIGHLIGHT, TARGET, KioskExposure, meter
from ordoscan.camera.v4l2_controls import (
    CID_EXPOSURE_ABSOLUTE,
    CID_EXPOSURE_AUTO,
    CID_EXPOSURE_AUTO_PRIORITY,
    CID_GAIN,
    VIDIOC_G_CTRL,
    VIDIOC_QUERYCTRL,
    VIDIOC_S_CTRL,
    ControlInfo,
    DeviceControls,
)

from tests.test_camera_v4l2 import FakeCv2, v4l2_config, yuyv_bytes

NAME = "v4l2 /dev/video0"
MANUAL, APERTURE = 1, 3


class FakeUvcControls:
    """A UVC webcam's controls as uvcvideo reports them; every write is recorded."""

    def __init__(self, *, manual: bool = True, gain: bool = True) -> None:
        self.infos = {
            CID_EXPOSURE_AUTO: ControlInfo(CID_EXPOSURE_AUTO, "Auto Exposure", 0, 3, 1, 3, 0),
            CID_EXPOSURE_ABSOLUTE: ControlInfo(
                CID_EXPOSURE_ABSOLUTE, "Exposure Time, Absolute", 3, 2047, 1, 250, 0x10
            ),
            CID_EXPOSURE_AUTO_PRIORITY: ControlInfo(
                CID_EXPOSURE_AUTO_PRIORITY, "Exposure, Dynamic Framerate", 0, 1, 1, 0, 0
            ),
        }
        if gain:
            self.infos[CID_GAIN] = ControlInfo(CID_GAIN, "Gain", 0, 255, 1, 32, 0)
        # the camera's own auto-exposure left a long shutter: a dim room
        self.values = {CID_EXPOSURE_AUTO: APERTURE, CID_EXPOSURE_ABSOLUTE: 333,
                       CID_EXPOSURE_AUTO_PRIORITY: 1, CID_GAIN: 32}
        self.menu = {MANUAL, APERTURE} if manual else {APERTURE}
        self.writes: list[tuple[int, int]] = []
        self.fail: OSError | None = None
        self.closed = False

    def query(self, cid: int) -> ControlInfo | None:
        return self.infos.get(cid)

    def get(self, cid: int) -> int:
        if cid not in self.infos:
            raise OSError(errno.EINVAL, "Invalid argument")
        return self.values[cid]

    def set(self, cid: int, value: int) -> None:
        if self.fail is not None:
            raise self.fail
        info = self.infos.get(cid)
        if info is None:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.writes.append((cid, value))
        if cid == CID_EXPOSURE_AUTO and value not in self.menu:
            raise OSError(errno.EINVAL, "Invalid argument")
        if cid == CID_EXPOSURE_ABSOLUTE and self.values[CID_EXPOSURE_AUTO] != MANUAL:
            raise OSError(errno.EACCES, "Permission denied")  # uvcvideo, while automatic
        self.values[cid] = info.clamp(value)

    def close(self) -> None:
        self.closed = True

    def exposures(self) -> list[int]:
        return [v for cid, v in self.writes if cid == CID_EXPOSURE_ABSOLUTE]


class Room:
    """A page on a counter under some light, seen through the controls' values two frames late."""

    def __init__(self, controls: FakeUvcControls, light: float, *, page: float = 0.85,
                 counter: float = 0.35) -> None:
        self.controls, self.light = controls, light
        rng = np.random.default_rng(3)
        self.reflectance = np.full((96, 128), counter) * rng.uniform(0.8, 1.2, (96, 128))
        self.reflectance[20:76, 34:94] = page
        self.pending: list[tuple[int, int]] = []

    def frame(self) -> np.ndarray:
        values = self.controls.values
        self.pending.append((values[CID_EXPOSURE_ABSOLUTE], values.get(CID_GAIN, 0)))
        exposure, gain = self.pending.pop(0) if len(self.pending) > 2 else self.pending[0]
        signal = self.reflectance * self.light * exposure * (1 + gain / 32)
        return np.clip(signal, 0, 255).astype(np.uint8)


def taken(**double: bool) -> tuple[FakeUvcControls, KioskExposure]:
    """A webcam double (its options) whose exposure the kiosk has taken over."""
    controls = FakeUvcControls(**double)
    kiosk = KioskExposure.take_over(controls, NAME, 8000)
    assert kiosk is not None
    return controls, kiosk


def run(kiosk: KioskExposure, room: Room, frames: int) -> np.ndarray:
    luma = room.frame()
    for _ in range(frames):
        luma = room.frame()
        kiosk.observe(luma)
    return luma


def settled(luma: np.ndarray) -> bool:
    return abs(np.log(TARGET / meter(luma))) <= np.log(1 + BAND) + 0.05


def test_the_ioctl_requests_are_the_kernels() -> None:
    # linux/videodev2.h on x86_64 and arm64 alike
    assert (VIDIOC_G_CTRL, VIDIOC_S_CTRL, VIDIOC_QUERYCTRL) == (0xC008561B, 0xC008561C, 0xC0445624)


def test_a_node_that_is_not_v4l2_refuses_the_query_with_the_kernels_error() -> None:
    controls = DeviceControls(os.devnull)
    try:
        with pytest.raises(OSError) as raised:
            controls.query(CID_EXPOSURE_AUTO)
        assert raised.value.errno == errno.ENOTTY
    finally:
        controls.close()
    with pytest.raises(OSError):
        controls.get(CID_GAIN)  # closed: an error, not a write to a reused descriptor


def test_taking_over_makes_the_camera_manual_at_a_steady_frame_rate_under_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controls = FakeUvcControls()
    with caplog.at_level(logging.INFO, "ordoscan.camera"):
        kiosk = KioskExposure.take_over(controls, NAME, 8000)
    assert kiosk is not None and kiosk.cap == 80
    assert controls.values[CID_EXPOSURE_AUTO] == MANUAL
    assert controls.values[CID_EXPOSURE_AUTO_PRIORITY] == 0
    assert controls.values[CID_EXPOSURE_ABSOLUTE] == 80  # the camera's 33 ms, capped at once
    assert "shutter capped at 8.0 ms" in caplog.text


def test_in_a_dim_room_the_shutter_stops_at_the_cap_and_the_gain_takes_over() -> None:
    controls, kiosk = taken()
    room = Room(controls, light=0.6)  # at the cap and the camera's gain: a dark frame
    assert meter(room.frame()) < TARGET / 2
    luma = run(kiosk, room, 90)
    assert settled(luma), meter(luma)
    assert controls.values[CID_EXPOSURE_ABSOLUTE] == 80
    assert controls.values[CID_GAIN] > 32
    assert max(controls.exposures()) <= 80  # never once longer than the cap


def test_in_a_bright_room_the_gain_goes_down_first_then_the_shutter_shortens() -> None:
    controls, kiosk = taken()
    luma = run(kiosk, Room(controls, light=8.0), 90)
    assert settled(luma), meter(luma)
    assert controls.values[CID_GAIN] == 0
    assert controls.values[CID_EXPOSURE_ABSOLUTE] < 40
    gains_then = [cid for cid, _ in controls.writes[3:]]
    first_exposure = gains_then.index(CID_EXPOSURE_ABSOLUTE)
    assert set(gains_then[:first_exposure]) == {CID_GAIN}


def test_when_the_lights_go_down_and_up_again_it_follows_with_the_least_gain() -> None:
    controls, kiosk = taken()
    room = Room(controls, light=8.0)
    assert settled(run(kiosk, room, 60))
    assert controls.values[CID_EXPOSURE_ABSOLUTE] < 40
    room.light = 0.5  # the shutter lengthens to the cap, not past it, then the gain rises
    assert settled(run(kiosk, room, 90))
    assert controls.values[CID_EXPOSURE_ABSOLUTE] == 80 and controls.values[CID_GAIN] > 32
    room.light = 8.0
    luma = run(kiosk, room, 90)
    assert settled(luma), meter(luma)
    assert controls.values[CID_GAIN] == 0
    assert max(controls.exposures()) <= 80


def test_a_white_page_on_a_dark_counter_is_exposed_for_the_page() -> None:
    controls, kiosk = taken()
    room = Room(controls, light=2.0, page=0.95, counter=0.08)
    luma = run(kiosk, room, 120)
    page = luma[20:76, 34:94]
    assert np.percentile(page, 98) <= HIGHLIGHT + 10
    assert (page >= 255).mean() < 0.01  # the page's white is not clipped


def test_a_camera_without_manual_exposure_keeps_its_own(caplog: pytest.LogCaptureFixture) -> None:
    controls = FakeUvcControls(manual=False)
    with caplog.at_level(logging.WARNING, "ordoscan.camera"):
        assert KioskExposure.take_over(controls, NAME, 8000) is None
    assert "manual exposure refused" in caplog.text and NAME in caplog.text
    del controls.infos[CID_EXPOSURE_AUTO]
    caplog.clear()
    with caplog.at_level(logging.WARNING, "ordoscan.camera"):
        assert KioskExposure.take_over(controls, NAME, 8000) is None
    assert "has no manual exposure" in caplog.text


def test_a_refusal_half_way_through_taking_over_gives_the_camera_back_its_mode() -> None:
    class Refusing(FakeUvcControls):
        def set(self, cid: int, value: int) -> None:
            if cid == CID_EXPOSURE_ABSOLUTE and value != 333:
                raise OSError(errno.EIO, "Input/output error")
            super().set(cid, value)

    controls = Refusing()
    assert KioskExposure.take_over(controls, NAME, 8000) is None
    assert controls.values[CID_EXPOSURE_AUTO] == APERTURE  # not left in manual
    assert controls.values[CID_EXPOSURE_AUTO_PRIORITY] == 1


def test_a_camera_without_gain_still_caps_the_shutter() -> None:
    controls, kiosk = taken(gain=False)
    run(kiosk, Room(controls, light=0.5), 60)  # too dark even at the cap: it stays there
    assert controls.values[CID_EXPOSURE_ABSOLUTE] == 80
    assert max(controls.exposures()) <= 80


def test_a_refused_step_stops_the_control_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controls, kiosk = taken()
    room = Room(controls, light=0.5)
    controls.fail = OSError(errno.EIO, "Input/output error")
    with caplog.at_level(logging.WARNING, "ordoscan.camera"):
        run(kiosk, room, 30)
    assert kiosk.failed
    assert caplog.text.count("exposure control failed") == 1


def test_restore_puts_the_cameras_own_settings_back_its_automatic_mode_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controls, kiosk = taken()
    run(kiosk, Room(controls, light=0.6), 30)
    controls.writes.clear()
    kiosk.restore()
    assert controls.writes == [(CID_GAIN, 32), (CID_EXPOSURE_ABSOLUTE, 333),
                               (CID_EXPOSURE_AUTO_PRIORITY, 1), (CID_EXPOSURE_AUTO, APERTURE)]
    # unplugged: every write refused, one warning, no exception
    controls.fail = OSError(errno.ENODEV, "No such device")
    with caplog.at_level(logging.WARNING, "ordoscan.camera"):
        kiosk.restore()
    assert caplog.text.count("restore the camera's own exposure failed") == 1


def source_with(controls: FakeUvcControls | None, **changes: Any) -> tuple[V4L2Source, FakeCv2]:
    cv2 = FakeCv2()
    opened: list[str] = []

    def open_controls(device: str) -> FakeUvcControls:
        opened.append(device)
        if controls is None:
            raise PermissionError(errno.EACCES, "Permission denied")
        return controls

    source = V4L2Source(v4l2_config(os.devnull, **changes), cv2_module=cv2,
                        open_controls=open_controls)
    source.opened_controls = opened  # type: ignore[attr-defined]
    return source, cv2


def test_the_v4l2_source_meters_its_frames_and_gives_the_camera_back_on_close() -> None:
    controls = FakeUvcControls()
    source, cv2 = source_with(controls)
    room = Room(controls, light=0.6)
    source.open()
    assert source.kiosk_exposure is not None and controls.values[CID_EXPOSURE_AUTO] == MANUAL
    for _ in range(30):
        cv2.frames.append(yuyv_bytes(room.frame()[:48, :64]))
        assert source.read(1.0) is not None
    assert source.kiosk_exposure.steps > 0
    # the telemetry's camera.exposure: a dim room, the shutter at the cap and the gain up
    assert source.exposure_state() == {
        "by": "kiosk", "exposure_us": 8000, "cap_us": 8000, "gain": controls.values[CID_GAIN],
        "gain_max": 255, "failed": False}
    assert controls.values[CID_GAIN] > 32
    source.close()
    assert source.exposure_state() is None
    assert controls.closed and controls.values[CID_EXPOSURE_AUTO] == APERTURE
    assert source.kiosk_exposure is None


def test_the_v4l2_source_leaves_the_cameras_exposure_when_told_or_when_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, cv2 = source_with(FakeUvcControls(), auto_exposure="camera")
    source.open()
    assert source.exposure_state() == {"by": "camera"}
    assert source.kiosk_exposure is None and source.opened_controls == []  # type: ignore[attr-defined]
    source.close()
    source, cv2 = source_with(None)
    with caplog.at_level(logging.WARNING, "ordoscan.camera"):
        source.open()
    assert source.kiosk_exposure is None and "controls unavailable" in caplog.text
    cv2.frames.append(yuyv_bytes(np.zeros((48, 64), np.uint8)))
    assert source.read(1.0) is not None  # the frames come all the same
    source.close()
