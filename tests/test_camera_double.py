"""The picamera2 double refuses what picamera2 refuses: a wrong call in the source fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ordoscan.camera import TUNING_ENV

from tests.support.picamera2_double import (
    IMX219,
    IMX708,
    CameraSystem,
    MappedArray,
    Picamera2,
    agc_walk,
)


@pytest.fixture(autouse=True)
def tuning_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(TUNING_ENV, raising=False)
    yield
    monkeypatch.delenv(TUNING_ENV, raising=False)


def started(system: CameraSystem, **config: Any) -> Picamera2:
    cam = system.Picamera2(0)
    cam.configure(cam.create_video_configuration(**config))
    cam.start()
    return cam


def test_lores_larger_than_main_is_refused() -> None:
    cam = CameraSystem(IMX708).Picamera2(0)
    config = cam.create_video_configuration(
        main={"size": (640, 480)}, lores={"size": (1280, 720), "format": "YUV420"}
    )
    with pytest.raises(RuntimeError, match="lores stream dimensions may not exceed main"):
        cam.configure(config)


def test_lores_must_be_yuv_on_a_pi4() -> None:
    cam = CameraSystem(IMX708, platform="vc4").Picamera2(0)
    config = cam.create_video_configuration(lores={"size": (640, 480), "format": "XBGR8888"})
    with pytest.raises(RuntimeError, match="lores stream must be YUV"):
        cam.configure(config)


def test_a_size_must_be_a_tuple_and_keys_known() -> None:
    cam = CameraSystem(IMX708).Picamera2(0)
    config = cam.create_video_configuration(main={"size": (640, 480)})
    config["main"]["size"] = [640, 480]
    with pytest.raises(RuntimeError, match=r"should be \(width, height\)"):
        cam.configure(config)
    with pytest.raises(ValueError, match="Bad key 'fps'"):
        cam.create_video_configuration(main={"fps": 30})


def test_controls_the_camera_does_not_advertise_are_refused() -> None:
    cam = CameraSystem(IMX219).Picamera2(0)  # fixed focus
    with pytest.raises(RuntimeError, match="Control AfMode is not advertised"):
        cam.configure(cam.create_video_configuration(controls={"AfMode": 2}))
    with pytest.raises(RuntimeError, match="Control AfMode is not advertised"):
        cam.set_controls({"AfMode": 2})


def test_a_running_camera_cannot_be_configured() -> None:
    cam = started(CameraSystem(IMX708))
    with pytest.raises(RuntimeError, match="must be stopped before configuring"):
        cam.configure(cam.create_video_configuration())


def test_requests_are_counted_and_go_back_to_the_camera() -> None:
    system = CameraSystem(IMX708)
    cam = started(system, lores={"size": (320, 240)}, buffer_count=1, queue=False)
    camera = system.cameras[0]
    job = cam.capture_request(wait=False)
    assert camera.emit()
    request = cam.wait(job, 1)
    with MappedArray(request, "lores") as m:
        assert m.array is not None and m.array.shape == (240 * 3 // 2, 320)
    assert request.make_array("lores").flags.owndata  # make_array copies, as picamera2's does
    assert request.make_buffer("lores").ndim == 1
    assert not camera.emit()  # the only buffer is held by the application: the frame is lost
    assert camera.dropped_no_buffer == 1
    request.release()
    assert camera.emit()  # back with the camera
    with pytest.raises(RuntimeError, match="negative ref_count"):
        request.release()
    with pytest.raises(RuntimeError, match="not defined"):
        request.make_buffer("lores")


def test_a_wait_with_no_frame_times_out() -> None:
    cam = started(CameraSystem(IMX708), lores={"size": (320, 240)}, queue=False)
    with pytest.raises(TimeoutError):
        cam.capture_request(wait=0.01)


def test_a_held_view_keeps_the_buffer_mapped_at_close() -> None:
    system = CameraSystem(IMX708)
    cam = started(system, lores={"size": (320, 240)}, queue=False)
    job = cam.capture_request(wait=False)
    system.cameras[0].emit()
    request = cam.wait(job, 1)
    with MappedArray(request, "lores") as m:
        view = m.array
    request.release()
    cam.close()
    assert system.leaked_mappings == 1  # as DmaAllocator's close fails in picamera2
    assert isinstance(view, np.ndarray)


def test_agc_walk_follows_the_profile_stages() -> None:
    shutters, gains = [100, 10000, 30000], [1.0, 2.0, 4.0]
    assert agc_walk(5000, shutters, gains, 66_666) == (5000, 1.0)
    assert agc_walk(15000, shutters, gains, 66_666) == (10000, 1.5)
    assert agc_walk(40000, shutters, gains, 66_666) == (20000, 2.0)
    assert agc_walk(40000, shutters, gains, 8000) == (8000, 4.0)  # the frame time caps it
