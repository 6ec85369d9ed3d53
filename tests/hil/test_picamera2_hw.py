"""The real CSI camera through Picamera2Source and the reader (runs on a Raspberry Pi).

Skipped, with the reason, where picamera2 cannot be imported or sees no camera.
Run on the rig: `.venv/bin/pytest -m hardware tests/hil` (the venv made with
--system-site-packages so that apt's python3-picamera2 is importable).
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time

import numpy as np
import pytest
from ordoscan.camera import (
    Frame,
    LatestFrameReader,
    Picamera2Api,
    Picamera2Source,
    load_picamera2_api,
)
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraOpenError

pytestmark = pytest.mark.hardware

SIZE = (1280, 720)
FPS = 15.0
MAX_EXPOSURE_US = 8000


@pytest.fixture(scope="module")
def api() -> Picamera2Api:
    try:
        api = load_picamera2_api()
    except CameraOpenError as e:
        pytest.skip(f"not a Raspberry Pi with picamera2: {e}")
    if not api.picamera2_cls.global_camera_info():
        pytest.skip("picamera2 is installed but sees no camera (ribbon cable? camera enabled?)")
    return api


def camera_config(**changes: object) -> CameraConfig:
    values: dict[str, object] = {
        "source": "picamera2",
        "size": SIZE,
        "fps": FPS,
        "max_exposure_us": MAX_EXPOSURE_US,
    }
    return CameraConfig(**(values | changes))


def test_frames_are_fresh_grey_views_at_the_configured_rate(api: Picamera2Api) -> None:
    stamps: list[float] = []
    exposures: list[int] = []
    with Picamera2Source(camera_config(), api=api) as source:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            frame = source.read(1.0)
            if frame is None:
                continue
            received = time.monotonic()
            width, height = source.size
            assert frame.image.shape == (height, width)
            assert frame.image.dtype == np.uint8
            assert not frame.image.flags.owndata  # the camera's buffer, not a copy
            assert 0 <= received - frame.timestamp < 0.5  # captured just now, same clock
            assert int(frame.image.max()) > int(frame.image.min())  # a picture, not a blank
            stamps.append(frame.timestamp)
            exposures.append(int(source.metadata.get("ExposureTime", 0)))
            source.release(frame)
    assert source.size == SIZE
    assert len(stamps) >= 2 * FPS
    assert all(b > a for a, b in itertools.pairwise(stamps))
    interval = statistics.median(b - a for a, b in itertools.pairwise(stamps[5:]))
    assert interval == pytest.approx(1 / FPS, rel=0.25)
    assert max(exposures[5:]) <= MAX_EXPOSURE_US * 1.05  # after the AGC settled


def test_autofocus_runs_on_a_camera_that_has_it(api: Picamera2Api) -> None:
    with Picamera2Source(camera_config(), api=api) as source:
        frame: Frame | None = None
        for _ in range(30):
            frame = source.read(1.0)
            if frame is not None:
                source.release(frame)
        assert frame is not None
        del frame  # a view alive at close would leak the camera's memory
        metadata = source.metadata
    if "AfState" not in metadata:
        pytest.skip("this camera module has a fixed focus")
    assert "LensPosition" in metadata


def test_the_reader_keeps_the_newest_frame_and_the_camera_reopens(api: Picamera2Api) -> None:
    states: list[tuple[bool, str]] = []
    source = Picamera2Source(camera_config(), api=api)
    taken: list[int] = []
    with LatestFrameReader(
        source, stall_timeout_s=3.0, on_state=lambda ok, m: states.append((ok, m))
    ) as reader:
        stop = threading.Event()

        def analysis() -> None:  # a slow decoder: frames pile up and must be dropped
            while not stop.is_set():
                frame = reader.get(1.0)
                if frame is not None:
                    taken.append(frame.index)
                    stop.wait(0.2)

        worker = threading.Thread(target=analysis)
        worker.start()
        time.sleep(3.0)
        stop.set()
        worker.join()
        stats = reader.stats()
    assert states and all(ok for ok, _ in states)
    assert stats.frames >= FPS  # 3 s, less the camera start-up
    assert stats.dropped > 0 and len(taken) < stats.frames
    assert taken == sorted(taken)
    # every buffer went back and the camera was released: it opens again at once
    with Picamera2Source(camera_config(), api=api) as again:
        again.release(first_frame(again))


def first_frame(source: Picamera2Source) -> Frame:
    for _ in range(30):
        frame = source.read(1.0)
        if frame is not None:
            return frame
    raise AssertionError(f"{source.name}: no frame in 30 reads")


def _camera_memory() -> tuple[int, int]:
    """(open file descriptors, dma-buf mappings) of this process."""
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/maps") as maps:
        dmabufs = sum(1 for line in maps if "dmabuf" in line)
    return fds, dmabufs


def test_reopening_leaks_no_camera_memory(api: Picamera2Api) -> None:
    """picamera2 cannot unmap a buffer a numpy view still holds: frames go back first."""
    seen: list[tuple[int, int]] = []
    for _ in range(4):
        with Picamera2Source(camera_config(), api=api) as source:
            source.release(first_frame(source))  # no name keeps the frame alive at close
        seen.append(_camera_memory())
    assert seen[-1] == seen[0], f"fds and dma-buf mappings after each reopen: {seen}"


def test_zoom_reads_the_main_stream_while_the_frame_is_held(api: Picamera2Api) -> None:
    with Picamera2Source(camera_config(), api=api) as source:
        frame = first_frame(source)
        if frame.zoom is None:
            source.release(frame)
            pytest.skip(f"{source.name}: the sensor has nothing sharper than {SIZE}")
        width, height = source.size
        box = (width // 4, height // 4, width // 2, height // 2)
        region = frame.zoom(*box)
        assert region is not None and region.dtype == np.uint8 and region.flags.owndata
        assert region.shape[1] > box[2] - box[0] and region.shape[0] > box[3] - box[1]
        assert int(region.max()) > int(region.min())  # a picture, not a blank
        source.release(frame)
        assert frame.zoom(*box) is None  # released: the buffer is the camera's again
