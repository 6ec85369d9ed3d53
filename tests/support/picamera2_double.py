"""A faithful double of the picamera2 calls ordoscan makes, for machines without a camera.

Same names, arguments, checks and results as picamera2 (and the libcamera
controls it needs) for: Picamera2(camera_num, tuning=...), global_camera_info(),
load_tuning_file(), find_tuning_algo(), camera_controls,
create_video_configuration(), configure(), stream_configuration(), start(),
set_controls(), capture_request(wait=..., flush=...), wait(job, timeout),
cancel_all_and_flush(), stop(), close(); CompletedRequest.acquire(),
release(), make_array(), make_buffer(), get_metadata(); MappedArray(request,
stream, reshape, write). Wrong calls fail the way picamera2 fails them: lores
not YUV or larger than main, sizes not an (even, even) tuple, unknown stream
keys or controls, configuring a running camera, a request released too often.

Frame buffers are real anonymous mmaps, as picamera2's DmaAllocator maps its
dma-bufs: a numpy view keeps a mapping exported, closing it then fails with
BufferError, and a request released after close() fails like a sync on a
closed dma-buf fd. Requests cycle between the camera and the application as
in libcamera: a frame that arrives with no free buffer is lost. The test
drives the sensor (`camera.emit()`), so everything is deterministic; the
exposure each frame reports follows the Raspberry Pi AGC's walk along the
tuning file's exposure profile, so an exposure cap can be checked.

Tuning goes as it does on a Pi: Picamera2(tuning=...) names a temporary file
in LIBCAMERA_RPI_TUNING_FILE (in os.environ) and deletes it; libcamera's
camera manager reads the named file once, when it starts (listing the
cameras starts it; picamera2 drops it when its last camera closes); a name
that cannot be read leaves the cameras unlisted.

What a Pi does that a desk would not guess, modelled after picamera2's and
libcamera's sources:
- a ribbon cable pulled while streaming: the camera stays listed; libcamera
  stops streaming after max(1 s, 5 frames) without a frame and cancels the
  queued requests, which picamera2 never queues again; `stop()` may then
  block (picamera2 issue #1065) until the test lets it go;
- control limits: before configure() the IPA advertises frame durations of
  33,333-250,000,000 us; the sensor mode's own limits (and the lens controls,
  if the lens validated) come only with configure(), and the IPA clamps the
  frame duration into them;
- Picamera2() opens a notification pipe and registers itself with the camera
  manager before it acquires the camera: a "busy" failure leaves both behind;
- closing with a numpy view of a buffer alive: the allocator's cleanup raises
  BufferError before it closes its file descriptors, so every buffer of that
  camera leaks (counted in `leaked_buffers`);
- mono sensors run `<model>_mono.json`; the Pi 5 (platform "pisp") aligns
  YUV420 rows to 128 bytes and its imx708 tuning has four AGC channels.
"""

from __future__ import annotations

import copy
import enum
import errno
import json
import mmap
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
from ordoscan.camera import Picamera2Api

# -- libcamera.controls (the enums ordoscan uses)


class AfModeEnum(enum.IntEnum):
    Manual = 0
    Auto = 1
    Continuous = 2


class AeExposureModeEnum(enum.IntEnum):
    Normal = 0
    Short = 1
    Long = 2
    Custom = 3


class NoiseReductionModeEnum(enum.IntEnum):
    Off = 0
    Fast = 1
    HighQuality = 2
    Minimal = 3
    ZSL = 4


controls = SimpleNamespace(
    AfModeEnum=AfModeEnum,
    AeExposureModeEnum=AeExposureModeEnum,
    draft=SimpleNamespace(NoiseReductionModeEnum=NoiseReductionModeEnum),
)

YUV_FORMATS = {"NV21", "NV12", "YUV420", "YVU420", "YVYU", "YUYV", "UYVY", "VYUY"}
RGB_FORMATS = {"BGR888", "RGB888", "XBGR8888", "XRGB8888", "RGB161616", "BGR161616"}
RAW_FORMATS = {"SRGGB10_CSI2P", "SBGGR10_CSI2P", "SGRBG10_CSI2P", "SGBRG10_CSI2P", "R10_CSI2P"}

# The exposure profiles of the Raspberry Pi tuning files (rpi.agc), as installed
# under /usr/share/libcamera/ipa/rpi/: imx708 in the version 2 layout with AGC
# channels, imx219 in the older flat layout.
_IMX708_CHANNEL = {
    "exposure_modes": {
        "normal": {
            "shutter": [100, 15000, 30000, 60000, 66666],
            "gain": [1.0, 1.0, 2.0, 4.0, 16.0],
        },
        "short": {"shutter": [100, 5000, 10000, 20000, 66666], "gain": [1.0, 2.0, 4.0, 6.0, 16.0]},
        "long": {
            "shutter": [1000, 30000, 60000, 90000, 120000],
            "gain": [1.0, 2.0, 4.0, 6.0, 16.0],
        },
    },
    "startup_frames": 5,
    "convergence_frames": 6,
    "speed": 0.15,
}
_IMX296_AGC = {
    "exposure_modes": {
        "normal": {"shutter": [100, 10000, 30000, 60000], "gain": [1.0, 2.0, 4.0, 8.0]},
    }
}
TUNING_FILES: dict[str, dict[str, Any]] = {
    "imx708.json": {
        "version": 2.0,
        "target": "bcm2835",
        "algorithms": [
            {"rpi.black_level": {"black_level": 4096}},
            {
                "rpi.agc": {
                    "channels": [copy.deepcopy(_IMX708_CHANNEL), copy.deepcopy(_IMX708_CHANNEL)]
                }
            },
        ],
    },
    "pisp/imx708.json": {
        "version": 2.0,
        "target": "pisp",
        "algorithms": [
            {"rpi.black_level": {"black_level": 4096}},
            {"rpi.agc": {"channels": [copy.deepcopy(_IMX708_CHANNEL) for _ in range(4)]}},
        ],
    },
    "imx296.json": {
        "version": 2.0,
        "target": "bcm2835",
        "algorithms": [{"rpi.awb": {"bayes": 1}}, {"rpi.agc": copy.deepcopy(_IMX296_AGC)}],
    },
    "imx296_mono.json": {
        "version": 2.0,
        "target": "bcm2835",
        "algorithms": [{"rpi.agc": copy.deepcopy(_IMX296_AGC)}],  # no colour algorithms
    },
    "imx219.json": {
        "rpi.black_level": {"black_level": 4096},
        "rpi.agc": {
            "exposure_modes": {
                "normal": {
                    "shutter": [100, 10000, 30000, 60000, 66666],
                    "gain": [1.0, 2.0, 4.0, 6.0, 8.0],
                },
                "short": {
                    "shutter": [100, 5000, 10000, 20000, 33333],
                    "gain": [1.0, 2.0, 4.0, 6.0, 8.0],
                },
            }
        },
    },
}


@dataclass(frozen=True)
class SensorSpec:
    """A camera module as libcamera describes it."""

    model: str
    id: str
    has_af: bool
    min_gain: float = 1.0
    max_gain: float = 16.0
    min_frame_us: int = 8331  # the fastest mode's frame time
    max_frame_us: int = 2_000_000
    resolution: tuple[int, int] = (4608, 2592)  # the full sensor, picamera2's sensor_resolution
    mono: bool = False
    lens_ok: bool = True  # False: the lens driver fails validation, AF controls go at configure


IMX708 = SensorSpec(
    "imx708", "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", has_af=True, min_gain=1.122
)
IMX219 = SensorSpec(
    "imx219", "/base/soc/i2c0mux/i2c@1/imx219@10", has_af=False, resolution=(3280, 2464)
)
OV9281 = SensorSpec(  # no tuning here
    "ov9281", "/base/soc/i2c0mux/i2c@1/ov9281@60", has_af=False, resolution=(1280, 800)
)
IMX296_MONO = SensorSpec(
    "imx296", "/base/soc/i2c0mux/i2c@1/imx296@1a", has_af=False, mono=True,
    resolution=(1456, 1088),
)
# The IPA's frame duration limits before configure(): the sensor mode is not known yet.
UNCONFIGURED_FRAME_US = (33_333, 250_000_000)


def _fill_main(
    buffer: mmap.mmap,
    main: dict[str, Any],
    scene: npt.NDArray[np.uint8],
    hires: npt.NDArray[np.uint8] | None,
) -> None:
    mw, mh = main["size"]
    if hires is None:  # the lores scene, each pixel repeated (an upscale, no detail)
        ys = np.arange(mh) * scene.shape[0] // mh
        xs = np.arange(mw) * scene.shape[1] // mw
        hires = scene[ys[:, None], xs[None, :]]
    big = np.frombuffer(buffer, dtype=np.uint8).reshape(mh * 3 // 2, main["stride"])
    big[:mh, :mw] = hires
    big[mh:, :] = 128
    del big


def _downscale(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """The ISP's downscale of main to lores, near enough: the mean of each source block."""
    w, h = size
    ys = np.arange(h + 1) * image.shape[0] // h
    xs = np.arange(w + 1) * image.shape[1] // w
    sums = np.add.reduceat(np.add.reduceat(image.astype(np.uint32), ys[:-1], 0), xs[:-1], 1)
    counts = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return (sums // counts).astype(np.uint8)


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def agc_walk(
    needed: float, shutters: list[float], gains: list[float], max_shutter: float
) -> tuple[float, float]:
    """(exposure us, gain) the RPi AGC settles on for a scene needing `needed` us at gain 1.

    Along the profile: lengthen the exposure to the next stage at the current
    gain, then raise the gain to that stage's; never past the frame time.
    """
    shutter, gain = min(shutters[0], max_shutter), gains[0]
    if needed <= shutter * gain:
        return needed / gain, gain
    for stage in range(1, len(shutters)):
        next_shutter = min(shutters[stage], max_shutter)
        if needed <= next_shutter * gain:
            return needed / gain, gain
        shutter = max(shutter, next_shutter)
        if needed <= shutter * gains[stage]:
            return shutter, needed / shutter
        gain = gains[stage]
    return shutter, gain  # the profile's end: the image is dark


class FakeCamera:
    """One camera as libcamera sees it; the test plugs, unplugs and triggers it."""

    def __init__(self, spec: SensorSpec, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.clock = clock
        self.plugged = True
        self.owner: Picamera2 | None = None
        self.sequence = 0
        self.frames_completed = 0
        self.dropped_no_buffer = 0  # frames lost because the application held every buffer
        self.needed_exposure_us = (
            4000.0  # exposure x gain the scene needs: 4 ms is a bright counter
        )
        self.present = True  # listed by libcamera (found at boot)
        self.stop_hangs = False
        self.stop_released = threading.Event()  # lets a hanging stop() return
        self.streaming_timeouts = 0

    def unplug(self, *, stop_hangs: bool = False) -> None:
        """The ribbon cable comes out while running: no more frames, but the camera stays
        listed (libcamera keeps it until a reboot). With stop_hangs, picamera2's stop()
        then blocks until `release_stop()` (picamera2 issue #1065)."""
        self.plugged = False
        self.stop_hangs = stop_hangs

    def plug(self) -> None:
        self.plugged = True
        self.release_stop()

    def remove(self) -> None:
        """No camera at boot: libcamera does not list it."""
        self.plugged = False
        self.present = False

    def release_stop(self) -> None:
        self.stop_hangs = False
        self.stop_released.set()

    def idle(self) -> None:
        """Time passes with no frame: libcamera's dequeue timeout may fire."""
        owner = self.owner
        if owner is not None and owner.started:
            owner._check_dequeue_timeout()

    def emit(
        self,
        scene: npt.NDArray[np.uint8] | None = None,
        hires: npt.NDArray[np.uint8] | None = None,
    ) -> bool:
        """The sensor delivers one frame; False if nobody is streaming or it had no buffer.

        With both streams configured, `hires` (main-sized) is what the main stream shows
        and lores is the ISP's downscale of it unless `scene` says otherwise; without
        `hires`, main shows `scene` enlarged (pixel repeat)."""
        owner = self.owner
        self.sequence += 1
        if owner is not None and owner.started:
            owner._check_dequeue_timeout()
        if not self.plugged or owner is None or not owner.started:
            return False
        try:
            return owner._sensor_frame(scene, hires)
        except Exception:
            if owner.started and owner.is_open:
                raise
            return False  # stopped or closed under this frame (another thread): lost, as on a Pi


TUNING_ENV = "LIBCAMERA_RPI_TUNING_FILE"  # picamera2 and libcamera share it, process-wide


class LibcameraManager:
    """libcamera's CameraManager: it reads the tuning file once, when it starts.

    A tuning file named in the environment that cannot be read leaves the
    cameras unlisted, as the Raspberry Pi pipeline fails to load its IPA.
    """

    def __init__(self, system: CameraSystem) -> None:
        system.manager_starts += 1
        self.cameras = [_LibcameraCamera(c) for c in system.listed()]
        path = os.environ.get(TUNING_ENV)
        self.custom_tuning: dict[str, Any] | None = None
        self.tuning_missing = False
        if path:
            if path in system.files:
                self.custom_tuning = copy.deepcopy(system.files[path])
            else:
                try:
                    self.custom_tuning = json.loads(Path(path).read_text())
                except (OSError, ValueError):
                    self.tuning_missing = True

    def tuning_for(self, spec: SensorSpec, platform: str) -> dict[str, Any] | None:
        if self.custom_tuning is not None:
            return copy.deepcopy(self.custom_tuning)
        name = f"{spec.model}_mono.json" if spec.mono else f"{spec.model}.json"
        return copy.deepcopy(_tuning_file(name, platform))


def _tuning_file(name: str, platform: str) -> dict[str, Any] | None:
    return TUNING_FILES.get(f"{platform}/{name}", TUNING_FILES.get(name))


@dataclass(frozen=True)
class _ControlId:
    """A libcamera ControlId: properties are keyed by these, with a name."""

    name: str


COLOR_FILTER_MONO = 5  # libcamera properties::draft::ColorFilterArrangementEnum::MONO


class _LibcameraCamera:
    """libcamera.Camera as listed by the manager: id and properties, readable unacquired."""

    def __init__(self, camera: FakeCamera) -> None:
        self.id = camera.spec.id
        cfa = COLOR_FILTER_MONO if camera.spec.mono else 0
        self.properties = {
            _ControlId("Model"): camera.spec.model,
            _ControlId("ColorFilterArrangement"): cfa,
        }


class CameraManager:
    """picamera2's CameraManager: keeps libcamera's manager until the last camera closes."""

    def __init__(self, system: CameraSystem) -> None:
        self.system = system
        self.cameras: dict[int, Picamera2] = {}
        self._cms: LibcameraManager | None = None

    @property
    def cms(self) -> LibcameraManager:
        if self._cms is None:
            self._cms = LibcameraManager(self.system)
        return self._cms

    def add(self, index: int, camera: Picamera2) -> None:
        self.cameras[index] = camera

    def cleanup(self, index: int) -> None:
        del self.cameras[index]  # KeyError if not registered, as in picamera2
        if not self.cameras:
            self._cms = None


class CameraSystem:
    """The cameras libcamera would find, and a Picamera2 class bound to them."""

    def __init__(
        self, *specs: SensorSpec, clock: Callable[[], float] = time.monotonic, platform: str = "vc4"
    ):
        self.cameras = [FakeCamera(spec, clock) for spec in specs]
        self.platform = platform
        self.instances: list[Picamera2] = []
        self.leaked_mappings = 0  # buffers whose mapping could not be closed (views still alive)
        self.leaked_buffers = 0  # buffers (mapping and fd) left open by an aborted cleanup
        self.constructed: list[Picamera2] = []  # every Picamera2 built, even those that failed
        self.files: dict[str, dict[str, Any]] = {}  # picamera2's temporary tuning files
        self.manager_starts = 0
        self.Picamera2: type[Picamera2] = type(
            "Picamera2", (Picamera2,), {"_system": self, "_cm": CameraManager(self)}
        )

    def api(self) -> Picamera2Api:
        return Picamera2Api(self.Picamera2, MappedArray, controls)

    def listed(self) -> list[FakeCamera]:
        return [c for c in self.cameras if c.present]

    def open_pipes(self) -> int:
        """Notification pipes still open (each Picamera2 makes one; close() closes it)."""
        return sum(
            1 for p in self.constructed if p.notifymeread is not None and not p.notifymeread.closed
        )


class Job:
    """picamera2.job.Job: functions run by the camera loop, a Future for the result."""

    def __init__(
        self, functions: list[Callable[[], tuple[bool, Any]]], signal_function: Any = None
    ) -> None:
        self._functions = functions
        self._future: Future[Any] = Future()
        self._future.set_running_or_notify_cancel()
        self._signal_function = signal_function
        self._result: Any = None
        self.calls = 0

    def execute(self) -> bool:
        assert self._functions, "Job already completed!"
        try:
            result = None
            while self._functions:
                done, result = self._functions[0]()
                self.calls += 1
                if not done:
                    break
                self._functions.pop(0)
            if not self._functions:
                self._result = result
        except Exception as e:
            self._future.set_exception(e)
            self._functions = []
        return not self._functions

    def signal(self) -> None:
        assert not self._functions, "Job not finished!"
        if not self._future.done():
            self._future.set_result(self._result)
        if self._signal_function:
            self._signal_function(self)

    def get_result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        from concurrent.futures import CancelledError

        self._future.set_exception(CancelledError())


@dataclass
class _LibcameraRequest:
    """A libcamera Request: one buffer per stream, and the metadata of its last frame."""

    buffers: dict[str, mmap.mmap]
    metadata: dict[str, Any] = field(default_factory=dict)
    # what the main buffer shows, written into it when first mapped: the same bytes the
    # ISP would have written, without the cost on every frame nobody zooms into
    main_pending: Callable[[], None] | None = None

    def settle(self) -> None:
        pending, self.main_pending = self.main_pending, None
        if pending is not None:
            pending()


class CompletedRequest:
    """picamera2.request.CompletedRequest: a reference-counted hold on one frame's buffers."""

    def __init__(self, request: _LibcameraRequest, picam2: Picamera2) -> None:
        self.request: _LibcameraRequest | None = request
        self.ref_count = 1
        self.lock = picam2.request_lock
        self.picam2 = picam2
        self.stop_count = picam2.stop_count
        self.configure_count = picam2.configure_count
        self.config = copy.deepcopy(picam2.camera_config)
        self.stream_map = dict(picam2.stream_map)

    def acquire(self) -> None:
        with self.lock:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self) -> None:
        with self.lock:
            self.ref_count -= 1
            if self.ref_count < 0:
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")
            if self.ref_count == 0:
                picam2 = self.picam2
                if not picam2.is_open:
                    # picamera2 syncs the dma-buf on release; after close() its fd is gone
                    raise OSError(errno.EBADF, "Bad file descriptor (request released after close)")
                assert self.request is not None
                if (
                    picam2.camera is not None
                    and self.stop_count == picam2.stop_count
                    and picam2.started
                ):
                    picam2._queue_request(self.request)
                self.request = None
                self.config = {}
                self.stream_map = {}

    def make_buffer(self, name: str) -> npt.NDArray[np.uint8]:
        if self.stream_map.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        assert self.request is not None
        return np.array(self.request.buffers[name], dtype=np.uint8)

    def get_metadata(self) -> dict[str, Any]:
        assert self.request is not None
        return dict(self.request.metadata)

    def make_array(self, name: str) -> npt.NDArray[np.uint8]:
        if self.config.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        with MappedArray(self, name) as m:
            assert m.array is not None
            return np.copy(m.array) if m.array.data.c_contiguous else np.ascontiguousarray(m.array)


def _make_array_shared(
    buffer: npt.NDArray[np.uint8], config: dict[str, Any]
) -> npt.NDArray[np.uint8]:
    """picamera2's Helpers._make_array_shared: shape the buffer without copying it."""
    fmt = config["format"]
    w, h = config["size"]
    stride = config["stride"]
    if fmt in ("YUV420", "YVU420"):
        return buffer.reshape((h * 3 // 2, stride))  # Y, then U and V at half stride
    if fmt in ("XBGR8888", "XRGB8888"):
        return buffer.reshape((h, stride))[:, : w * 4].reshape((h, w, 4))
    if fmt in ("BGR888", "RGB888"):
        return buffer.reshape((h, stride))[:, : w * 3].reshape((h, w, 3))
    if fmt in RAW_FORMATS:
        return buffer.reshape((h, stride))
    raise RuntimeError("Format " + fmt + " not supported")


class MappedArray:
    """picamera2.request.MappedArray: the stream's buffer as a numpy array, no copy."""

    def __init__(
        self, request: CompletedRequest, stream: str, reshape: bool = True, write: bool = True
    ) -> None:
        assert request.request is not None  # picamera2's _MappedBuffer asserts the same
        self._request = request
        self._stream = stream
        self._reshape = reshape
        self._write = write
        self._array: npt.NDArray[np.uint8] | None = None

    def __enter__(self) -> MappedArray:
        request = self._request.request
        if request is None or self._stream not in request.buffers:
            raise RuntimeError("failed to find buffer")
        buffer = request.buffers[self._stream]
        if buffer.closed:
            raise RuntimeError("failed to find buffer")
        if self._stream == "main":
            request.settle()
        array = np.frombuffer(
            buffer, dtype=np.uint8
        )  # exports the mapping, as np.array(copy=False)
        if self._reshape:
            array = _make_array_shared(array, self._request.config[self._stream])
        self._array = array
        return self

    def __exit__(self, *exc: object) -> None:
        self._array = None

    @property
    def array(self) -> npt.NDArray[np.uint8] | None:
        return self._array


class Picamera2:
    """picamera2.Picamera2 for the calls ordoscan makes."""

    _system: CameraSystem
    _cm: CameraManager

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        if cls._cm.cms.tuning_missing:  # listing the cameras starts libcamera
            return []
        infos = [
            {"Model": c.spec.model, "Location": 2, "Rotation": 180, "Id": c.spec.id, "Num": i}
            for i, c in enumerate(cls._system.listed())
        ]
        return sorted(infos, key=lambda cam: ("/usb" not in cam["Id"], cam["Id"]), reverse=True)

    @classmethod
    def load_tuning_file(cls, tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        if dir is not None:  # only that folder, as picamera2 does
            path = Path(dir) / tuning_file
            if not path.is_file():
                raise RuntimeError("Tuning file not found")
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        found = _tuning_file(tuning_file, cls._system.platform)  # the platform's own folder
        if found is None:
            raise RuntimeError("Tuning file not found")
        return copy.deepcopy(found)

    @staticmethod
    def find_tuning_algo(tuning: dict[str, Any], name: str) -> dict[str, Any]:
        version = tuning.get("version", 1)
        if version == 1:
            return tuning[name]  # type: ignore[no-any-return]
        return next(algo for algo in tuning["algorithms"] if name in algo)[name]  # type: ignore[no-any-return]

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: Any = None,
        tuning: Any = None,
        allocator: Any = None,
    ):
        self.is_open = False
        self.started = False
        self.configured = False
        self.stream_stopped = False  # libcamera's dequeue timeout fired: no request left queued
        self._last_frame_at = 0.0
        self.camera: FakeCamera | None = None
        self.notifymeread: Any = None
        if tuning is not None and not isinstance(tuning, str | dict):
            raise TypeError(f"tuning must be a file name or a dict, not {type(tuning).__name__}")
        # as picamera2: the tuning goes through the environment (a temporary file for a dict),
        # which only a libcamera manager started after this point reads
        temporary = None
        if isinstance(tuning, dict):
            temporary = f"/nonexistent/picamera2-tuning-{len(self._system.files)}-{id(self)}.json"
            self._system.files[temporary] = copy.deepcopy(tuning)
            os.environ[TUNING_ENV] = temporary
        elif isinstance(tuning, str):
            os.environ[TUNING_ENV] = tuning
        else:
            os.environ.pop(TUNING_ENV, None)
        try:
            camera_num = self.global_camera_info()[camera_num]["Num"]  # IndexError: no camera
        finally:
            if temporary is not None:
                del self._system.files[temporary]
        camera = self._system.listed()[camera_num]
        # as picamera2: the pipe and the manager's entry come before the camera is acquired
        self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
        self.notifymeread = os.fdopen(self.notifyme_r, "rb")
        self._system.constructed.append(self)
        self._cm.add(camera_num, self)
        self.camera_idx = camera_num
        self.lock = threading.Lock()  # protects _job_list and completed_requests
        self.request_lock = threading.Lock()
        self.stop_count = 0
        self.configure_count = 0
        self.camera_config: dict[str, Any] = {}
        self.stream_map: dict[str, str | None] = {}
        self.controls: dict[str, Any] = {}
        self.completed_requests: list[CompletedRequest] = []
        self.handed_out: list[CompletedRequest] = []  # every request given to the application
        self._job_list: list[Job] = []
        self._queued: list[_LibcameraRequest] = []
        self._buffers: list[mmap.mmap] = []
        self._max_queue_len = 1
        try:
            if camera.owner is not None:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
        except Exception as e:
            raise RuntimeError("Camera __init__ sequence did not complete.") from e
        camera.owner = self
        self.camera = camera
        self.is_open = True
        # what the IPA really runs with
        self.tuning = self._cm.cms.tuning_for(camera.spec, self._system.platform)
        self._system.instances.append(self)

    @property
    def sensor_resolution(self) -> tuple[int, int]:
        assert self.camera is not None
        return self.camera.spec.resolution

    @property
    def is_mono(self) -> bool:
        assert self.camera is not None
        return self.camera.spec.mono

    def _frame_limits(self) -> tuple[int, int]:
        assert self.camera is not None
        spec = self.camera.spec
        return (spec.min_frame_us, spec.max_frame_us) if self.configured else UNCONFIGURED_FRAME_US

    def _frame_us(self) -> int:
        """The frame time the IPA runs: the requested maximum, clamped into the mode's limits."""
        lo, hi = self._frame_limits()
        wanted = int(self.controls.get("FrameDurationLimits", (33333, 33333))[1])
        return max(lo, min(wanted, hi))

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        if self.camera is None:
            return {}
        spec = self.camera.spec
        info: dict[str, tuple[Any, Any, Any]] = {
            "AeEnable": (False, True, None),
            "AeExposureMode": (0, 3, 0),
            "AeMeteringMode": (0, 3, 0),
            "AnalogueGain": (spec.min_gain, spec.max_gain, None),
            "ExposureTime": (26, 66666, None),
            "FrameDurationLimits": (*self._frame_limits(), None),
            "NoiseReductionMode": (0, 4, 0),
            "Sharpness": (0.0, 16.0, 1.0),
        }
        if spec.has_af and (spec.lens_ok or not self.configured):  # lens validated at configure
            info |= {
                "AfMode": (0, 2, 0),
                "AfRange": (0, 2, 0),
                "AfSpeed": (0, 1, 0),
                "AfTrigger": (0, 1, 0),
                "LensPosition": (0.0, 32.0, 1.0),
            }
        return info

    def __enter__(self) -> Picamera2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration

    @staticmethod
    def _make_initial_stream_config(
        stream_config: dict[str, Any], updates: Any
    ) -> dict[str, Any] | None:
        if updates is None:
            return None
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in updates.items():
            if key in valid:
                stream_config[key] = value
            else:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
        return stream_config

    @staticmethod
    def align_stream(stream_config: dict[str, Any]) -> None:
        size = stream_config["size"]
        stream_config["size"] = (size[0] - size[0] % 2, size[1] - size[1] % 2)

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = {},  # noqa: B006 - picamera2's own default
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        if self.camera is None:
            raise RuntimeError("Camera not opened")
        main_cfg = self._make_initial_stream_config(
            {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main or {}
        )
        assert main_cfg is not None
        self.align_stream(main_cfg)
        lores_cfg = self._make_initial_stream_config(
            {"format": "YUV420", "size": main_cfg["size"], "preserve_ar": False}, lores
        )
        if lores_cfg is not None:
            self.align_stream(lores_cfg)
        raw_cfg = self._make_initial_stream_config(
            {"format": "SRGGB10_CSI2P", "size": main_cfg["size"]}, raw
        )
        if colour_space is None:
            colour_space = (
                "Smpte170m" if main_cfg["size"][0] < 1280 or main_cfg["size"][1] < 720 else "Rec709"
            )
        defaults = {
            "NoiseReductionMode": NoiseReductionModeEnum.Fast,
            "FrameDurationLimits": (33333, 33333),
        }
        config = {
            "use_case": use_case,
            "transform": transform or "identity",
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": raw_cfg,
            "controls": defaults | (controls or {}),
            "sensor": sensor if sensor is not None else {},
        }
        for name in (display, encode):
            if name is not None and config.get(name) is None:
                raise RuntimeError(f"Display stream {name} was not defined")
        config["display"], config["encode"] = display, encode
        return config

    @staticmethod
    def _check_stream_config(stream_config: Any, name: str) -> None:
        if type(stream_config) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        for key in ("format", "size"):
            if key not in stream_config:
                raise RuntimeError(f"{key} not found in {name} stream")
        fmt = stream_config["format"]
        if type(fmt) is not str:
            raise RuntimeError("format in " + name + " stream should be a string")
        if name == "raw":
            if fmt not in RAW_FORMATS:
                raise RuntimeError("Unrecognised raw format " + fmt)
        elif fmt not in YUV_FORMATS and fmt not in RGB_FORMATS and fmt != "MJPEG":
            raise RuntimeError("Bad format " + fmt + " in stream " + name)
        size = stream_config["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def _check_camera_config(self, config: dict[str, Any]) -> None:
        for key in ("colour_space", "transform", "main", "lores", "raw"):
            if key not in config:
                raise RuntimeError(f"{key!r} key expected in camera configuration")
        self._check_stream_config(config["main"], "main")
        if config["lores"] is not None:
            self._check_stream_config(config["lores"], "lores")
            main_w, main_h = config["main"]["size"]
            lores_w, lores_h = config["lores"]["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self._system.platform == "vc4" and config["lores"]["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")
        if config["raw"] is not None:
            self._check_stream_config(config["raw"], "raw")
        if not isinstance(config.get("buffer_count"), int) or config["buffer_count"] < 1:
            raise RuntimeError("buffer_count must be a positive integer")

    def _check_controls(self, wanted: dict[str, Any]) -> None:
        advertised = self.camera_controls
        for name in wanted:
            if name not in advertised and name != "FrameRate":
                raise RuntimeError(f"Control {name} is not advertised by libcamera")

    def _layout(self, stream: dict[str, Any]) -> tuple[int, int]:
        """(stride, frame size) as the Pi's ISP lays the stream out."""
        fmt = stream["format"]
        w, h = stream["size"]
        if fmt in ("YUV420", "YVU420"):
            stride = _align(w, 128 if self._system.platform == "pisp" else 64)
            return stride, stride * h * 3 // 2
        bytes_per_pixel = {"BGR888": 3, "RGB888": 3, "XBGR8888": 4, "XRGB8888": 4}.get(fmt)
        if bytes_per_pixel is not None:
            stride = _align(w * bytes_per_pixel, 64)
            return stride, stride * h
        stride = _align(w * 5 // 4, 32)  # 10-bit packed raw
        return stride, stride * h

    def configure(self, camera_config: Any = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if self.camera is None:
            raise RuntimeError("Camera not opened")
        if not isinstance(camera_config, dict):
            raise TypeError("Invalid type for `camera_config` given (this double takes dicts only)")
        config = copy.deepcopy(camera_config)
        self._check_camera_config(config)
        self.configured = True  # the controls are checked against the mode's own list
        try:
            self._check_controls(config.get("controls", {}))
        except RuntimeError:
            self.configured = bool(self.camera_config)
            raise
        for name in ("main", "lores", "raw"):
            if config[name] is not None:
                config[name]["stride"], config[name]["framesize"] = self._layout(config[name])
        self._max_queue_len = 1 if config["queue"] and config["buffer_count"] > 1 else 0
        self._free_buffers()
        self._buffers_by_stream = {
            name: [mmap.mmap(-1, config[name]["framesize"]) for _ in range(config["buffer_count"])]
            for name in ("main", "lores", "raw")
            if config[name] is not None
        }
        self._buffers = [b for bufs in self._buffers_by_stream.values() for b in bufs]
        self.camera_config = config
        self.stream_map = {
            name: (name if config[name] is not None else None) for name in ("main", "lores", "raw")
        }
        self.controls = dict(config.get("controls", {}))
        self.configure_count += 1

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        return self.camera_config[name]  # type: ignore[no-any-return]

    def set_controls(self, controls: dict[str, Any]) -> None:
        self._check_controls(controls)
        self.controls.update(controls)

    # -- running

    def start(self, config: Any = None, show_preview: Any = False) -> None:
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        # like picamera2's start_(): fresh requests for every buffer, all queued to the camera
        count = self.camera_config["buffer_count"]
        self._queued = [
            _LibcameraRequest({name: bufs[i] for name, bufs in self._buffers_by_stream.items()})
            for i in range(count)
        ]
        self.started = True
        self.stream_stopped = False
        assert self.camera is not None
        self._last_frame_at = self.camera.clock()

    def _queue_request(self, request: _LibcameraRequest) -> None:
        self._queued.append(request)

    def stop(self) -> None:
        if not self.started:
            return
        camera = self.camera
        if camera is not None and camera.stop_hangs:
            camera.stop_released.wait()  # libcamera's stop() blocked after the disconnection
        self.stop_count += 1
        self.started = False
        self._queued = []
        with self.lock:
            while self.completed_requests:
                self.completed_requests.pop(0).release()

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        camera, self.camera = self.camera, None
        if camera is not None:
            camera.owner = None
        self._cm.cleanup(self.camera_idx)
        self.is_open = False
        self.configured = False
        self.camera_config = {}
        self.stream_map = {}
        self.notifymeread.close()
        os.close(self.notifyme_w)
        self._free_buffers()

    def _free_buffers(self) -> None:
        # DmaAllocator.close(): unmap every buffer, then close the fds; a BufferError (a
        # numpy view still alive) ends it there, in __del__, so every buffer stays allocated
        for n, buffer in enumerate(self._buffers):
            try:
                buffer.close()
            except BufferError:
                self._system.leaked_mappings += 1
                self._system.leaked_buffers += len(self._buffers) - n
                break
        self._buffers = []
        self._buffers_by_stream = {}

    # -- jobs

    def dispatch_functions(
        self,
        functions: list[Callable[[], tuple[bool, Any]]],
        wait: Any,
        signal_function: Any = None,
    ) -> Any:
        if wait is None:
            wait = signal_function is None
        timeout = None if wait is True else wait
        with self.lock:
            only_job = not self._job_list
            job = Job(functions, signal_function)
            self._job_list.append(job)
            finished = self._run_jobs() if only_job and self.completed_requests else []
        for done in finished:
            done.signal()
        return job.get_result(timeout=timeout) if wait else job

    def _run_jobs(self) -> list[Job]:
        finished = []
        while self._job_list:
            if self._job_list[0].execute():
                finished.append(self._job_list.pop(0))
            else:
                break
        return finished

    def _wait_for_timestamp_(self, timestamp_ns: int | None) -> tuple[bool, None]:
        if not timestamp_ns:
            return (True, None)
        while self.completed_requests:
            md = self.completed_requests[0].get_metadata()
            if md["SensorTimestamp"] - 1000 * md["ExposureTime"] >= timestamp_ns:
                return (True, None)
            self.completed_requests.pop(0).release()
        return (False, None)

    def _capture_request_(self) -> tuple[bool, CompletedRequest | None]:
        if not self.completed_requests:
            return (False, None)
        request = self.completed_requests.pop(0)
        self.handed_out.append(request)
        return (True, request)

    def capture_request(
        self, wait: Any = None, signal_function: Any = None, flush: Any = None
    ) -> Any:
        if flush is True:
            flush = time.monotonic_ns()
        functions = [partial(self._wait_for_timestamp_, flush), self._capture_request_]
        return self.dispatch_functions(functions, wait, signal_function)

    def wait(self, job: Job, timeout: float | None = None) -> Any:
        return job.get_result(timeout=timeout)

    def cancel_all_and_flush(self) -> None:
        with self.lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    # -- the sensor side

    def _exposure(self) -> tuple[float, float]:
        camera = self.camera
        assert camera is not None
        spec = camera.spec
        frame_us = float(self._frame_us())
        needed = camera.needed_exposure_us
        fixed = self.controls.get("ExposureTime", 0)
        if fixed:
            shutter = min(float(fixed), frame_us)
            return shutter, min(max(needed / shutter, spec.min_gain), spec.max_gain)
        mode = ["normal", "short", "long", "custom"][int(self.controls.get("AeExposureMode", 0))]
        shutters, gains = [100.0, 66666.0], [1.0, 8.0]
        if self.tuning:
            agc = self.find_tuning_algo(self.tuning, "rpi.agc")
            channel = agc["channels"][0] if "channels" in agc else agc
            profile = channel["exposure_modes"][mode]
            if "shutter" in profile:  # libcamera's AgcExposureMode reads "shutter" only
                shutters, gains = profile["shutter"], profile["gain"]
        shutter, gain = agc_walk(needed, shutters, gains, frame_us)
        return shutter, max(gain, spec.min_gain)

    def _check_dequeue_timeout(self) -> None:
        """libcamera (Pi 5) stops streaming after max(1 s, 5 frames) without a frame and
        cancels the queued requests; picamera2 never queues cancelled requests again."""
        camera = self.camera
        if camera is None or not self.started or self.stream_stopped:
            return
        if camera.clock() - self._last_frame_at > max(1.0, 5 * self._frame_us() / 1e6):
            self.stream_stopped = True
            self._queued = []
            camera.streaming_timeouts += 1

    def _sensor_frame(
        self, scene: npt.NDArray[np.uint8] | None, hires: npt.NDArray[np.uint8] | None = None
    ) -> bool:
        camera = self.camera
        assert camera is not None
        if not self._queued:
            camera.dropped_no_buffer += 1
            return False
        request = self._queued.pop(0)
        lores = self.camera_config["lores"] or self.camera_config["main"]
        name = "lores" if self.camera_config["lores"] is not None else "main"
        w, h = lores["size"]
        stride = lores["stride"]
        planes = np.frombuffer(request.buffers[name], dtype=np.uint8).reshape(h * 3 // 2, stride)
        planes[:h, :] = 0xEE  # the padding right of each row is never part of a frame
        main = self.camera_config["main"] if name == "lores" else None
        if main is not None and main["format"] not in ("YUV420", "YVU420"):
            main = None  # an RGB main is left black: ordoscan asks for YUV420
        if scene is None and hires is not None and main is not None:
            scene = _downscale(hires, (w, h))
        if scene is None:
            scene = (
                (np.arange(w, dtype=np.int64)[None, :] + np.arange(h)[:, None] + camera.sequence)
                % 251
            ).astype(np.uint8)
        if scene.shape != (h, w) or scene.dtype != np.uint8:
            raise ValueError(f"scene must be uint8 {(h, w)}, not {scene.dtype} {scene.shape}")
        planes[:h, :w] = scene
        planes[h:, :] = 128  # neutral chroma
        del planes  # no view may outlive the frame: the request owns the buffer now
        request.main_pending = None
        if main is not None:
            mw, mh = main["size"]
            if hires is not None and (hires.shape != (mh, mw) or hires.dtype != np.uint8):
                raise ValueError(f"hires must be uint8 {(mh, mw)}, not {hires.dtype} {hires.shape}")
            request.main_pending = partial(
                _fill_main, request.buffers["main"], main, scene.copy(), hires
            )
        shutter, gain = self._exposure()
        request.metadata = {
            "SensorTimestamp": int(camera.clock() * 1e9),
            "SensorSequence": camera.sequence,
            "ExposureTime": round(shutter),
            "AnalogueGain": float(gain),
            "DigitalGain": 1.0,
            "FrameDuration": self._frame_us(),
        }
        if camera.spec.has_af:
            request.metadata |= {"AfState": 2, "AfPauseState": 0, "LensPosition": 1.5}
        completed = CompletedRequest(request, self)
        camera.frames_completed += 1
        self._last_frame_at = camera.clock()
        with self.lock:
            completed.acquire()
            self.completed_requests.append(completed)
            finished = self._run_jobs()
            completed.release()
            while len(self.completed_requests) > self._max_queue_len:
                self.completed_requests.pop(0).release()
        for job in finished:
            job.signal()
        return True

    def outstanding_requests(self) -> list[CompletedRequest]:
        """Requests given to the application and not yet released by it."""
        return [r for r in self.handed_out if r.ref_count > 0]
