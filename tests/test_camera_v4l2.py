"""V4L2Source: device checks with the real OpenCV, the read path with a VideoCapture double."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from ordoscan.camera import V4L2Source
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraLost, CameraOpenError

WIDTH, HEIGHT = 64, 48


def v4l2_config(device: str, **changes: Any) -> CameraConfig:
    values: dict[str, Any] = {
        "source": "v4l2",
        "device": device,
        "size": (WIDTH, HEIGHT),
        "fps": 15,
    }
    return CameraConfig(**(values | changes))


def luma_scene() -> np.ndarray:
    return (np.arange(WIDTH)[None, :] * 3 + np.arange(HEIGHT)[:, None]).astype(np.uint8)


def yuyv_bytes(luma: np.ndarray, order: str = "YUYV") -> np.ndarray:
    """Packed 4:2:2 as a UVC camera sends it: Y0 U Y1 V (or U Y0 V Y1)."""
    packed = np.empty((luma.shape[0], luma.shape[1] * 2), np.uint8)
    y_at = 0 if order == "YUYV" else 1
    packed[:, y_at::2] = luma
    packed[:, 1 - y_at :: 2] = 128
    return packed


class FakeCapture:
    """cv2.VideoCapture on a V4L2 device, as OpenCV behaves with CONVERT_RGB off."""

    def __init__(self, owner: FakeCv2, device: str, api: int) -> None:
        self.owner = owner
        self.device, self.api = device, api
        self.props: dict[int, float] = {}
        self.released = False
        owner.captures.append(self)

    def isOpened(self) -> bool:
        return self.owner.opens

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FOURCC:
            return float(cv2.VideoWriter_fourcc(*self.owner.fourcc))
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(WIDTH)
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(HEIGHT)
        return self.props.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.owner.frames:
            return False, None  # what OpenCV returns when the device is gone
        return True, self.owner.frames.pop(0)

    def release(self) -> None:
        self.released = True


class FakeCv2:
    """The cv2 module with VideoCapture replaced; everything else is the real OpenCV."""

    def __init__(self, fourcc: str = "YUYV", opens: bool = True) -> None:
        self.fourcc = fourcc
        self.opens = opens
        self.frames: list[np.ndarray] = []
        self.captures: list[FakeCapture] = []

    def VideoCapture(self, device: str, api: int) -> FakeCapture:
        return FakeCapture(self, device, api)

    def __getattr__(self, name: str) -> Any:
        return getattr(cv2, name)


@pytest.fixture
def device() -> str:
    # a character device this process may open: the checks before OpenCV pass
    assert os.access("/dev/null", os.R_OK | os.W_OK)
    return "/dev/null"


def test_a_missing_device_is_an_open_error_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "video7")
    with pytest.raises(CameraOpenError, match=f"v4l2 device {missing}: no such device"):
        V4L2Source(v4l2_config(missing)).open()


def test_a_file_that_is_not_a_device_is_an_open_error(tmp_path: Path) -> None:
    plain = tmp_path / "video0"
    plain.write_bytes(b"")
    with pytest.raises(CameraOpenError, match="not a video device"):
        V4L2Source(v4l2_config(str(plain))).open()


def test_a_device_opencv_cannot_capture_from_is_an_open_error(device: str) -> None:
    # the real OpenCV on /dev/null: a character device, but no V4L2 capture device
    with pytest.raises(CameraOpenError, match=f"v4l2 device {device}: cannot be opened"):
        V4L2Source(v4l2_config(device)).open()


def test_open_asks_for_raw_yuyv_one_buffer_and_the_configured_mode(device: str) -> None:
    fake = FakeCv2()
    with V4L2Source(v4l2_config(device, fps=12, stall_timeout_s=4), cv2_module=fake) as source:
        cap = fake.captures[-1]
        assert (cap.device, cap.api) == (device, cv2.CAP_V4L2)
        assert cap.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"YUYV")
        assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == WIDTH
        assert cap.props[cv2.CAP_PROP_FRAME_HEIGHT] == HEIGHT
        assert cap.props[cv2.CAP_PROP_FPS] == 12
        assert cap.props[cv2.CAP_PROP_BUFFERSIZE] == 1
        assert cap.props[cv2.CAP_PROP_CONVERT_RGB] == 0
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
            assert cap.props[cv2.CAP_PROP_READ_TIMEOUT_MSEC] == 4000
        assert source.pixel_format == "YUYV"
    assert cap.released


def test_a_refused_open_releases_the_capture(device: str) -> None:
    fake = FakeCv2(opens=False)
    with pytest.raises(CameraOpenError, match="busy, or not a capture device"):
        V4L2Source(v4l2_config(device), cv2_module=fake).open()
    assert fake.captures[-1].released


@pytest.mark.parametrize(
    ("fourcc", "raw"),
    [
        ("YUYV", lambda y: yuyv_bytes(y).reshape(HEIGHT, WIDTH, 2)),  # OpenCV >= 4.9: two channels
        ("YUYV", lambda y: yuyv_bytes(y)),  # older: one packed row of 2 bytes per pixel
        ("UYVY", lambda y: yuyv_bytes(y, "UYVY").reshape(HEIGHT, WIDTH, 2)),
        ("GREY", lambda y: y.copy()),
        (
            "MJPG",
            lambda y: cv2.imencode(".jpg", y, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].reshape(1, -1),
        ),
        ("YUYV", lambda y: cv2.cvtColor(y, cv2.COLOR_GRAY2BGR)),  # converted to BGR after all
    ],
)
def test_the_luma_comes_out_of_every_frame_layout(device: str, fourcc: str, raw: Any) -> None:
    fake = FakeCv2(fourcc)
    scene = luma_scene()
    fake.frames = [raw(scene), raw(scene)]
    with V4L2Source(v4l2_config(device), cv2_module=fake) as source:
        first, second = source.read(1), source.read(1)
    assert first is not None and second is not None
    assert (first.index, second.index) == (0, 1)
    assert first.image.shape == (HEIGHT, WIDTH) and first.image.dtype == np.uint8
    tolerance = 2 if fourcc == "MJPG" else 0
    assert np.abs(first.image.astype(int) - scene.astype(int)).max() <= tolerance


def test_the_yuyv_luma_is_a_view_not_a_copy(device: str) -> None:
    fake = FakeCv2("YUYV")
    raw = yuyv_bytes(luma_scene()).reshape(HEIGHT, WIDTH, 2)
    fake.frames = [raw]
    with V4L2Source(v4l2_config(device), cv2_module=fake) as source:
        frame = source.read(1)
    assert frame is not None and np.shares_memory(frame.image, raw)


def test_a_corrupt_mjpeg_frame_is_skipped_and_counted(device: str) -> None:
    fake = FakeCv2("MJPG")
    fake.frames = [np.frombuffer(b"\xff\xd8 not really a jpeg", np.uint8).reshape(1, -1)]
    with V4L2Source(v4l2_config(device), cv2_module=fake) as source:
        assert source.read(1) is None
        assert source.corrupt_frames == 1


def test_an_unknown_layout_is_camera_lost_not_a_crash(device: str) -> None:
    fake = FakeCv2("H264")
    fake.frames = [np.zeros((3, 5, 7), np.uint8)]
    with (
        V4L2Source(v4l2_config(device), cv2_module=fake) as source,
        pytest.raises(CameraLost, match=r"unexpected frame layout \(3, 5, 7\)"),
    ):
        source.read(1)


def test_a_device_that_stops_giving_frames_is_camera_lost(device: str) -> None:
    fake = FakeCv2()
    with V4L2Source(v4l2_config(device), cv2_module=fake) as source:
        with pytest.raises(CameraLost, match=f"v4l2 device {device}|v4l2 {device}: no frame"):
            source.read(1)
        source.close()
        with pytest.raises(CameraLost, match="not open"):
            source.read(1)
