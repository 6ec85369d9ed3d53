"""Picamera2Source against what picamera2 and libcamera really do on a Pi 4 and a Pi 5.

Each test stands for one finding of reading the backend against picamera2's
and libcamera's sources: a cable pull, limits known only after configure(),
a frame view alive at close, a failed open, mono sensors, the Pi 5's strides
and tuning.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np
import pytest
from ordoscan.camera import TUNING_ENV, LatestFrameReader, Picamera2Source
from ordoscan.errors import CameraOpenError

from tests.support.camera_aids import FakeClock, camera_config, read_frame, tuning_environment
from tests.support.picamera2_double import IMX296_MONO, IMX708, CameraSystem
from tests.support.wait import wait_until

# every test starts without a tuning file named in the environment
pytestmark = pytest.mark.usefixtures(tuning_environment.__name__)


# -- item 21: a cable pull


def test_a_pulled_cable_stops_streaming_and_the_camera_stays_listed() -> None:
    """The double as libcamera: after max(1 s, 5 frames) without a frame the requests are
    cancelled; plugged back, nothing comes until the camera is restarted."""
    clock = FakeClock()
    system = CameraSystem(IMX708, clock=clock)
    cam = system.cameras[0]
    picam = system.Picamera2(0)
    picam.configure(picam.create_video_configuration(lores={"size": (320, 240)}, queue=False))
    picam.start()
    assert cam.emit()
    cam.unplug()
    clock.now += 0.9
    cam.idle()
    assert cam.streaming_timeouts == 0
    clock.now += 0.2
    cam.idle()
    assert cam.streaming_timeouts == 1
    assert [c["Model"] for c in system.Picamera2.global_camera_info()] == ["imx708"]
    cam.plug()
    assert not cam.emit()  # no request was queued again
    picam.stop()
    picam.start()
    assert cam.emit()
    picam.close()


def test_after_a_cable_pull_close_is_bounded_and_the_camera_comes_back() -> None:
    clock = FakeClock()
    system = CameraSystem(IMX708, clock=clock)
    cam = system.cameras[0]
    states: list[tuple[bool, str]] = []
    source = Picamera2Source(
        camera_config(stall_timeout_s=3), api=system.api(), clock=clock, teardown_timeout_s=0.2
    )
    reader = LatestFrameReader(
        source,
        stall_timeout_s=3,
        on_state=lambda ok, m: states.append((ok, m)),
        clock=clock,
        backoff_first_s=0.01,
        backoff_cap_s=0.02,
        read_timeout_s=0.01,
    )
    with reader:
        wait_until(lambda: any(ok for ok, _ in states), 20, "the camera to open")
        first = system.instances[-1]
        wait_until(lambda: _fed(reader, cam), 20, "a first frame")
        assert reader.get(0) is None  # the analysis lets go of its frame
        cam.unplug(stop_hangs=True)
        clock.now += 10
        cam.idle()
        assert cam.streaming_timeouts == 1
        wait_until(lambda: any(not ok and "ribbon cable" in m for ok, m in states), 20, "the loss")
        # stop() blocks; the reader is not held: it tries again and is told why it waits
        wait_until(lambda: any("still closing" in m for _, m in states), 20, "the refused reopen")
        assert first.started and cam.owner is first  # picamera2's stop() has not returned
        cam.plug()  # stop() returns, the old session finishes closing
        wait_until(lambda: cam.owner is not first, 20, "the old session to close")
        wait_until(lambda: _fed(reader, cam), 20, "frames after the restart")
    assert system.leaked_buffers == 0
    assert system.open_pipes() == 0


def _fed(reader: LatestFrameReader, cam: Any) -> bool:
    cam.emit()
    return reader.get(0.01) is not None


def test_close_returns_while_picamera2_stop_is_blocked() -> None:
    system = CameraSystem(IMX708)
    cam = system.cameras[0]
    source = Picamera2Source(camera_config(), api=system.api(), teardown_timeout_s=0.1)
    source.open()
    source.release(read_frame(source, cam.emit))
    cam.unplug(stop_hangs=True)
    done = threading.Event()
    threading.Thread(target=lambda: (source.close(), done.set()), daemon=True).start()
    wait_until(done.is_set, 30, "close() to return")
    assert not cam.stop_released.is_set()  # stop() is still blocked: close did not wait for it
    with pytest.raises(CameraOpenError, match="still closing"):
        source.open()
    cam.plug()
    wait_until(lambda: cam.owner is None, 30, "the blocked close to finish")
    source.open()
    source.close()


# -- item 22: limits after configure()


def test_a_rate_above_30_fps_is_kept_limits_are_read_after_configure() -> None:
    system = CameraSystem(IMX708)
    with Picamera2Source(camera_config(fps=60), api=system.api()) as source:
        source.release(read_frame(source, system.cameras[0].emit))
        assert source.metadata["FrameDuration"] == 16667  # not 33,333: 30 fps


def test_a_lens_dropped_at_configure_runs_without_autofocus(
    caplog: pytest.LogCaptureFixture,
) -> None:
    system = CameraSystem(dataclasses.replace(IMX708, lens_ok=False))
    with (
        caplog.at_level(logging.WARNING, "ordoscan.camera"),
        Picamera2Source(camera_config(), api=system.api()) as source,
    ):
        source.release(read_frame(source, system.cameras[0].emit))
        assert "AfMode" not in system.instances[-1].controls
    assert "fixed focus" in caplog.text


# -- item 23: a frame view alive at close


def test_a_frame_still_held_at_close_is_named_and_leaks_as_on_a_pi(
    caplog: pytest.LogCaptureFixture,
) -> None:
    system = CameraSystem(IMX708)
    source = Picamera2Source(camera_config(), api=system.api())
    source.open()
    frame = read_frame(source, system.cameras[0].emit)
    corner = frame.image[:8, :8]  # a view of a view: it maps the buffer too
    del frame
    with caplog.at_level(logging.WARNING, "ordoscan.camera"):
        source.close()
    assert "frame(s) 0 still in use at close" in caplog.text
    assert system.leaked_buffers > 0  # what DmaAllocator does when unmapping fails
    assert corner.shape == (8, 8)


def test_frames_given_back_before_close_leak_nothing(caplog: pytest.LogCaptureFixture) -> None:
    system = CameraSystem(IMX708)
    source = Picamera2Source(camera_config(), api=system.api())
    for _ in range(3):  # every reopen would leak the camera's memory otherwise
        source.open()
        frame = read_frame(source, system.cameras[0].emit)
        source.release(frame)
        del frame
        with caplog.at_level(logging.WARNING, "ordoscan.camera"):
            source.close()
    assert "still in use" not in caplog.text
    assert system.leaked_buffers == 0


# -- item 24: a failed open


def test_a_busy_camera_leaks_no_pipe_and_leaves_its_holder_registered() -> None:
    system = CameraSystem(IMX708)
    other = system.Picamera2(0)  # another user of the camera
    for _ in range(5):
        with pytest.raises(CameraOpenError, match="busy"):
            Picamera2Source(camera_config(), api=system.api()).open()
    assert system.open_pipes() == 1  # the holder's own
    assert system.Picamera2._cm.cameras == {0: other}
    other.close()
    with Picamera2Source(camera_config(), api=system.api()) as source:
        source.release(read_frame(source, system.cameras[0].emit))
    assert system.open_pipes() == 0


# -- item 25: mono sensors, the Pi 5's stride and four AGC channels, "shutter"


def test_a_mono_sensor_runs_its_mono_tuning_capped() -> None:
    system = CameraSystem(IMX296_MONO)
    with Picamera2Source(camera_config(max_exposure_us=8000), api=system.api()) as source:
        source.release(read_frame(source, system.cameras[0].emit))
        running = system.instances[-1].tuning
    names = [next(iter(a)) for a in running["algorithms"]]
    assert "rpi.awb" not in names  # imx296_mono.json, not the colour file
    agc = system.Picamera2.find_tuning_algo(running, "rpi.agc")
    assert max(agc["exposure_modes"]["normal"]["shutter"]) == 8000


def test_pi5_rows_are_128_byte_aligned_and_the_frame_is_exact() -> None:
    system = CameraSystem(IMX708, platform="pisp")
    cam = system.cameras[0]
    scene = (np.arange(756 * 1344) % 251).astype(np.uint8).reshape(756, 1344)
    with Picamera2Source(camera_config(size=(1344, 756)), api=system.api()) as source:
        frame = read_frame(source, lambda: cam.emit(scene))
        assert frame.image.strides == (1408, 1)
        assert np.array_equal(frame.image, scene)
        source.release(frame)


def test_pi5_imx708_tuning_has_four_agc_channels_all_capped() -> None:
    system = CameraSystem(IMX708, platform="pisp")
    with Picamera2Source(camera_config(max_exposure_us=8000), api=system.api()) as source:
        source.release(read_frame(source, system.cameras[0].emit))
        running = system.instances[-1].tuning
    channels = system.Picamera2.find_tuning_algo(running, "rpi.agc")["channels"]
    assert len(channels) == 4
    for channel in channels:
        for mode in channel["exposure_modes"].values():
            assert max(mode["shutter"]) == 8000


def test_only_the_shutter_key_counts_as_an_exposure_profile(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    site = tmp_path / "imx708_site.json"
    agc = {"exposure_modes": {"normal": {"exposure": [100, 66666], "gain": [1.0, 8.0]}}}
    site.write_text(json.dumps({"version": 2.0, "algorithms": [{"rpi.agc": agc}]}))
    monkeypatch.setenv(TUNING_ENV, str(site))
    system = CameraSystem(IMX708)
    with (
        caplog.at_level(logging.WARNING, "ordoscan.camera"),
        Picamera2Source(camera_config(), api=system.api()) as source,
    ):
        source.release(read_frame(source, system.cameras[0].emit))
    assert "no exposure profile in imx708_site.json" in caplog.text
