"""Picamera2Source against the picamera2 double: configuration, zero-copy frames, leases, faults."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ordoscan.camera import (
    MAX_LEASES,
    TUNING_ENV,
    Frame,
    LatestFrameReader,
    Picamera2Source,
    cap_exposure_profiles,
)
from ordoscan.errors import CameraLost, CameraOpenError

from tests.support.camera_aids import FakeClock, camera_config, read_frame, tuning_environment
from tests.support.picamera2_double import IMX219, IMX708, OV9281, CameraSystem, agc_walk

# every test starts without a tuning file named in the environment
pytestmark = pytest.mark.usefixtures(tuning_environment.__name__)


@pytest.fixture
def system() -> CameraSystem:
    return CameraSystem(IMX708)


def test_the_module_imports_without_picamera2_or_opencv() -> None:
    code = (
        "import sys, ordoscan.camera; "
        "assert 'picamera2' not in sys.modules and 'cv2' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(
    importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here"
)
def test_without_picamera2_open_says_what_to_install() -> None:
    with pytest.raises(CameraOpenError, match="python3-picamera2"):
        Picamera2Source(camera_config()).open()


def test_configuration_asked_of_picamera2(system: CameraSystem) -> None:
    with Picamera2Source(camera_config(buffer_count=3, fps=12.5), api=system.api()):
        cam = system.instances[-1]
        config = cam.camera_config
        assert config["lores"]["format"] == "YUV420"
        assert config["lores"]["size"] == (640, 480)
        assert config["main"] == config["main"] | {"size": (2304, 1296), "format": "YUV420"}
        assert config["raw"] is None
        assert config["buffer_count"] == 3 + MAX_LEASES
        assert config["queue"] is False
        assert cam.controls["FrameDurationLimits"] == (80000, 80000)
        assert cam.controls["AfMode"] == system.api().controls.AfModeEnum.Continuous
        assert cam.started


def test_a_fixed_focus_module_gets_no_autofocus_control() -> None:
    # the double refuses controls a camera does not advertise, as picamera2 does
    system = CameraSystem(IMX219)
    with Picamera2Source(camera_config(), api=system.api()) as source:
        assert "AfMode" not in system.instances[-1].controls
        frame = read_frame(source, system.cameras[0].emit)
        assert frame.image.shape == (480, 640)


def test_frame_rate_is_kept_within_what_the_sensor_allows() -> None:
    system = CameraSystem(dataclasses.replace(IMX219, min_frame_us=16_667))  # a 60 fps mode at most
    with Picamera2Source(camera_config(fps=120), api=system.api()):
        assert system.instances[-1].controls["FrameDurationLimits"] == (16_667, 16_667)


def test_frames_are_read_only_strided_views_of_the_lores_y_plane() -> None:
    system = CameraSystem(IMX708)
    cam = system.cameras[0]
    scene = np.random.default_rng(7).integers(0, 200, size=(600, 1000), dtype=np.uint8)
    with Picamera2Source(camera_config(size=(1000, 600)), api=system.api()) as source:
        frame = None
        for _ in range(50):
            frame = source.read(0.0)
            if frame is not None:
                break
            cam.emit(scene)
        assert frame is not None
        image = frame.image
        assert image.shape == (600, 1000)
        assert image.dtype == np.uint8
        assert image.strides == (1024, 1)  # the ISP's 64-byte row alignment: a view, not a copy
        assert not image.flags.owndata
        assert not image.flags.writeable
        assert np.array_equal(image, scene)  # the padding (0xEE) and chroma (128) are left out
        assert frame.index == 0
        source.release(frame)


def test_frame_timestamps_are_the_sensor_timestamps_on_the_monotonic_clock() -> None:
    clock = FakeClock(500.0)
    system = CameraSystem(IMX708, clock=clock)
    cam = system.cameras[0]
    with Picamera2Source(camera_config(), api=system.api(), clock=clock) as source:
        first = read_frame(source, cam.emit)
        clock.now += 1 / 15
        second = read_frame(source, cam.emit)
        assert first.timestamp == pytest.approx(500.0)
        assert second.timestamp == pytest.approx(500.0 + 1 / 15)
        assert second.index == first.index + 1
        assert source.metadata["SensorSequence"] > 0
        source.release(first)
        source.release(second)


def test_a_sensor_timestamp_far_from_our_clock_is_not_trusted() -> None:
    system = CameraSystem(IMX708, clock=FakeClock(500.0))
    ours = FakeClock(10_000.0)
    with Picamera2Source(camera_config(), api=system.api(), clock=ours) as source:
        frame = read_frame(source, system.cameras[0].emit)
        assert frame.timestamp == 10_000.0
        source.release(frame)


def test_only_frames_captured_after_the_request_are_returned(system: CameraSystem) -> None:
    cam = system.cameras[0]
    with Picamera2Source(camera_config(), api=system.api()) as source:
        cam.emit(np.full((480, 640), 10, np.uint8))  # nobody is waiting: picamera2 recycles it
        assert source.read(0.01) is None
        cam.emit(np.full((480, 640), 99, np.uint8))
        frame = source.read(0.01)
        assert frame is not None
        assert int(frame.image[0, 0]) == 99
        source.release(frame)


def test_exposure_is_capped_in_dim_light_and_free_in_bright_light(system: CameraSystem) -> None:
    cam = system.cameras[0]
    with Picamera2Source(camera_config(max_exposure_us=8000), api=system.api()) as source:
        cam.needed_exposure_us = 40_000  # a dim corner: the uncapped AGC would expose 30 ms
        frame = read_frame(source, cam.emit)
        assert source.metadata["ExposureTime"] <= 8000
        assert source.metadata["AnalogueGain"] == pytest.approx(5.0)
        # the telemetry's camera.exposure: libcamera's AGC, under the cap
        state = source.exposure_state()
        assert state is not None and state["by"] == "camera" and state["cap_us"] == 8000
        assert state["exposure_us"] <= 8000 and state["gain"] == pytest.approx(5.0)
        source.release(frame)
        cam.needed_exposure_us = 3000  # bright: the AGC still picks a shorter exposure
        frame = read_frame(source, cam.emit)
        assert source.metadata["ExposureTime"] == 3000
        source.release(frame)
    tuning = system.instances[-1].tuning
    agc = system.Picamera2.find_tuning_algo(tuning, "rpi.agc")
    for channel in agc["channels"]:
        for mode in channel["exposure_modes"].values():
            assert max(mode["shutter"]) == 8000


def test_the_capped_tuning_is_applied_again_at_every_reopen(system: CameraSystem) -> None:
    cam = system.cameras[0]
    cam.needed_exposure_us = 40_000
    source = Picamera2Source(camera_config(max_exposure_us=6000), api=system.api())
    for _ in range(3):
        # a reopen lists the cameras with picamera2's stale temporary tuning name removed
        with source:
            source.release(read_frame(source, cam.emit))
            assert source.metadata["ExposureTime"] <= 6000
    assert len(system.instances) == 3


def test_the_double_hides_the_camera_behind_a_stale_tuning_name(system: CameraSystem) -> None:
    # why the source clears the variable: picamera2 leaves it naming a deleted file
    tuned = system.Picamera2(0, tuning=system.Picamera2.load_tuning_file("imx708.json"))
    tuned.close()
    assert os.environ[TUNING_ENV]
    assert system.Picamera2.global_camera_info() == []


def test_a_tuning_file_chosen_by_the_site_is_the_base_of_the_capped_one(
    system: CameraSystem, tmp_path: Path
) -> None:
    custom = system.Picamera2.load_tuning_file("imx708.json")
    agc = system.Picamera2.find_tuning_algo(custom, "rpi.agc")
    for channel in agc["channels"]:
        channel["exposure_modes"]["normal"] = {
            "shutter": [100, 3000, 50000],
            "gain": [1.0, 2.0, 8.0],
        }
    site_file = tmp_path / "imx708_noir.json"
    site_file.write_text(json.dumps(custom))
    os.environ[TUNING_ENV] = str(site_file)
    with Picamera2Source(camera_config(max_exposure_us=8000), api=system.api()):
        applied = system.Picamera2.find_tuning_algo(system.instances[-1].tuning, "rpi.agc")
    assert applied["channels"][0]["exposure_modes"]["normal"]["shutter"] == [100, 3000, 8000]
    assert os.environ[TUNING_ENV] != str(site_file)  # picamera2's temporary copy, capped
    with Picamera2Source(camera_config(max_exposure_us=8000), api=system.api()):
        # a new source later in the process still starts from the site's file
        again = system.Picamera2.find_tuning_algo(system.instances[-1].tuning, "rpi.agc")
    assert again["channels"][0]["exposure_modes"]["normal"]["shutter"] == [100, 3000, 8000]


def test_the_uncapped_double_would_blur() -> None:
    # the check above means something: the stock profile goes well past 8 ms
    shutter, _ = agc_walk(
        40_000, [100, 15000, 30000, 60000, 66666], [1.0, 1.0, 2.0, 4.0, 16.0], 66_667
    )
    assert shutter > 8000


def test_cap_exposure_profiles_handles_both_tuning_layouts() -> None:
    flat = {"exposure_modes": {"normal": {"shutter": [100, 10000, 66666], "gain": [1, 2, 8]}}}
    assert cap_exposure_profiles(flat, 5000) == 1
    assert flat["exposure_modes"]["normal"]["shutter"] == [100, 5000, 5000]
    channels = {
        "channels": [{"exposure_modes": {"short": {"shutter": [100, 20000], "gain": [1, 4]}}}]
    }
    assert cap_exposure_profiles(channels, 8000) == 1
    assert channels["channels"][0]["exposure_modes"]["short"]["shutter"] == [100, 8000]
    assert cap_exposure_profiles({"something": "else"}, 8000) == 0


def test_a_sensor_without_tuning_file_still_opens_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    system = CameraSystem(OV9281)
    with (
        caplog.at_level(logging.WARNING, "ordoscan.camera"),
        Picamera2Source(camera_config(), api=system.api()) as source,
    ):
        source.release(read_frame(source, system.cameras[0].emit))
    assert "ov9281.json" in caplog.text
    assert "capped by the frame time only" in caplog.text


def test_no_camera_is_a_clear_open_error() -> None:
    system = CameraSystem(IMX708)
    system.cameras[0].remove()  # not found at boot
    with pytest.raises(CameraOpenError, match=r"no camera 0 \(0 connected\).*ribbon cable"):
        Picamera2Source(camera_config(), api=system.api()).open()


def test_a_busy_camera_is_a_clear_open_error(system: CameraSystem) -> None:
    other = system.Picamera2(0)  # another program holds the camera
    with pytest.raises(CameraOpenError, match=r"imx708.*Device or resource busy.*another program"):
        Picamera2Source(camera_config(), api=system.api()).open()
    other.close()
    with Picamera2Source(camera_config(), api=system.api()):
        pass


def test_a_configuration_libcamera_refuses_is_an_open_error_and_frees_the_camera(
    system: CameraSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    def invalid(self: Any, camera_config: Any = None) -> None:
        raise RuntimeError(f"Invalid camera configuration: {camera_config}")

    monkeypatch.setattr(system.Picamera2, "configure", invalid)
    with pytest.raises(CameraOpenError, match="cannot be configured and started: Invalid camera"):
        Picamera2Source(camera_config(), api=system.api()).open()
    assert system.cameras[0].owner is None  # closed again: the next open can have it


def test_a_stalled_camera_is_lost_after_stall_timeout_without_hanging(system: CameraSystem) -> None:
    clock = FakeClock()
    cam = system.cameras[0]
    with Picamera2Source(camera_config(stall_timeout_s=3), api=system.api(), clock=clock) as source:
        source.release(read_frame(source, cam.emit))
        cam.unplug()
        assert source.read(0.01) is None  # a short silence is not a fault
        clock.now += 3.5
        with pytest.raises(CameraLost, match=r"no frame for 3\.5 s"):
            source.read(0.01)
    assert system.instances[-1].outstanding_requests() == []


def test_reading_a_closed_source_is_camera_lost(system: CameraSystem) -> None:
    source = Picamera2Source(camera_config(), api=system.api())
    with pytest.raises(CameraLost, match="not open"):
        source.read(0.01)


def test_released_frames_go_back_to_the_camera_and_close_leaves_nothing(
    system: CameraSystem,
) -> None:
    cam = system.cameras[0]
    source = Picamera2Source(camera_config(buffer_count=2), api=system.api())
    source.open()
    picam = system.instances[-1]
    for _ in range(20):
        frame = read_frame(source, cam.emit)
        assert len(picam.outstanding_requests()) == 1
        source.release(frame)
        source.release(frame)  # twice is harmless
        assert picam.outstanding_requests() == []
    del frame
    assert cam.dropped_no_buffer == 0
    source.close()
    source.close()
    assert picam.outstanding_requests() == []
    assert system.leaked_mappings == 0
    assert cam.owner is None
    source.open()  # and it opens again
    source.close()


def test_close_gives_back_held_frames_before_closing_picamera2(system: CameraSystem) -> None:
    # the double fails a release after close() the way picamera2 does (a sync on a closed fd)
    cam = system.cameras[0]
    source = Picamera2Source(camera_config(), api=system.api())
    source.open()
    picam = system.instances[-1]
    held = [read_frame(source, cam.emit) for _ in range(2)]
    assert len(picam.outstanding_requests()) == 2
    indexes = [f.index for f in held]
    del held
    source.close()
    assert indexes == [0, 1]
    assert picam.outstanding_requests() == []
    assert system.leaked_mappings == 0


def test_a_capture_still_waiting_at_close_is_cancelled(system: CameraSystem) -> None:
    source = Picamera2Source(camera_config(), api=system.api())
    source.open()
    picam = system.instances[-1]
    assert source.read(0.01) is None  # a capture job is now pending
    source.close()
    assert picam._job_list == []
    assert picam.outstanding_requests() == []


def test_frames_never_released_are_recalled_so_the_camera_keeps_running(
    system: CameraSystem, caplog: pytest.LogCaptureFixture
) -> None:
    cam = system.cameras[0]
    with (
        caplog.at_level(logging.WARNING, "ordoscan.camera"),
        Picamera2Source(camera_config(buffer_count=1), api=system.api()) as source,
    ):
        picam = system.instances[-1]
        for _ in range(10):
            read_frame(source, cam.emit)
            assert len(picam.outstanding_requests()) <= MAX_LEASES
        assert cam.dropped_no_buffer == 0
    assert caplog.text.count("not being released") == 1


def test_with_the_reader_the_pipeline_never_starves_the_camera_and_leaks_nothing() -> None:
    system = CameraSystem(IMX708)
    cam = system.cameras[0]
    source = Picamera2Source(camera_config(buffer_count=1), api=system.api())
    reader = LatestFrameReader(source, stall_timeout_s=60, read_timeout_s=0.05)
    with reader:
        held = None
        deadline = time.monotonic() + 20
        while reader.frames < 40 and time.monotonic() < deadline:
            cam.emit()
            if reader.frames % 7 == 3:  # the analysis takes a frame now and then, and keeps it
                held = reader.get(0)
            time.sleep(0.001)
        assert reader.frames >= 40
        picam = system.instances[-1]
        assert len(picam.outstanding_requests()) <= MAX_LEASES
        assert cam.dropped_no_buffer == 0  # buffer_count buffers were always left to the camera
        del held
    assert picam.outstanding_requests() == []
    assert system.leaked_mappings == 0


def feed_until_frame(reader: LatestFrameReader, cam: Any) -> Frame:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cam.emit()
        frame = reader.get(0.01)
        if frame is not None:
            return frame
    raise AssertionError("the reader gave no frame")
