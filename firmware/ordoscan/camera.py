"""Camera sources: one small interface that yields grey frames.

A Frame is the Y (luma) plane as a 2-D uint8 array, with the monotonic time
of its capture. Sources: picamera2 (CSI, imported lazily), v4l2 (USB UVC) and
replay (image file, folder, video) for the desk and the tests.

`open_source(cfg)` builds the configured source (not yet opened: call
`open()`, use it as a context manager, or hand it to a `LatestFrameReader`,
which opens it, reads it on its own thread, keeps only the newest frame and
reopens the source with back-off when it fails).

Frame lifetime. The picamera2 source hands out a read-only view into the
camera's own buffer: no conversion, no copy. That buffer goes back to the
camera when the frame is released, so a frame is *leased*: it stays valid
until `source.release(frame)` or `source.close()`. The reader releases a
frame when a newer one replaces it in its slot, and the frame it gave the
analysis thread when that thread asks for the next one. So the pipeline holds
at most three camera buffers (the newest, waiting; the one being decoded; the
one just read) and the camera gets `buffer_count` more of its own to fill, so
it never stalls for want of a buffer. picamera2 cannot unmap a buffer while a
view of it is alive, so before the reader closes a lost camera it waits for
the analysis thread to come back for a frame (it gets None and lets go of the
old one). The other sources give frames that own their pixels; their
`release` does nothing.

The CSI camera runs continuous autofocus where the module has it, a fixed
frame rate, and an exposure capped at `max_exposure_us` so that a moving hand
does not blur. libcamera has no control for an auto-exposure limit, so the
cap goes into the sensor's tuning, whose exposure profiles the Raspberry Pi
AGC follows: past the cap, the gain rises instead.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from ordoscan.config import CameraConfig
from ordoscan.errors import CameraError, CameraLost, CameraOpenError
from ordoscan.lifecycle import Service

log = logging.getLogger("ordoscan.camera")

Clock = Callable[[], float]
Sleep = Callable[[float], object]
Grey = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    """One grey frame: `image` may be a strided view into the camera buffer."""

    image: npt.NDArray[np.uint8]
    timestamp: float  # seconds, time.monotonic() clock, at capture
    index: int  # frame number from the source, from 0


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


def release_frame(source: object, frame: Frame) -> None:
    """Give a frame back to its source if the source lends its buffers (else nothing to do)."""
    if isinstance(source, LeasingSource):
        source.release(frame)


def open_source(cfg: CameraConfig) -> CameraSource:
    """The FrameSource that `cfg.source` names, configured but not yet opened."""
    if cfg.source == "picamera2":
        return Picamera2Source(cfg)
    if cfg.source == "v4l2":
        return V4L2Source(cfg)
    return ReplaySource(cfg)


class CameraSource(abc.ABC):
    """A FrameSource with a name, a live flag and a context manager: the built-in sources."""

    live = True  # a live camera that stays silent has stalled; a replay may just have ended

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


def _why(e: BaseException) -> str:
    """An exception and its causes as one line (picamera2 hides 'busy' in __cause__)."""
    parts: list[str] = []
    seen: BaseException | None = e
    while seen is not None and len(parts) < 4:
        text = str(seen) or type(seen).__name__
        if text not in parts:
            parts.append(text)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return ": ".join(parts)


# ---------------------------------------------------------------------------
# picamera2 (CSI camera)

# Camera buffers the pipeline may hold at once: the newest frame waiting in the
# reader's slot, the one being decoded, and the one just read (for the instant
# before the slot's old frame is dropped). The camera gets buffer_count more.
MAX_LEASES = 3
# A SensorTimestamp further than this from time.monotonic() is not trusted.
_TIMESTAMP_SANITY_S = 5.0
# The tuning file libcamera's Raspberry Pi pipeline reads when its camera manager starts.
TUNING_ENV = "LIBCAMERA_RPI_TUNING_FILE"


@dataclass(frozen=True, slots=True)
class Picamera2Api:
    """The parts of picamera2 and libcamera the source uses: the real modules or a test double."""

    picamera2_cls: Any  # picamera2.Picamera2
    mapped_array_cls: Any  # picamera2.MappedArray
    controls: Any  # libcamera.controls


def load_picamera2_api() -> Picamera2Api:
    """Import picamera2 and libcamera (apt packages on a Pi); CameraOpenError elsewhere."""
    try:
        picamera2 = importlib.import_module("picamera2")
        libcamera = importlib.import_module("libcamera")
    except Exception as e:  # ImportError off a Pi; a broken libcamera install may raise anything
        raise CameraOpenError(
            f"picamera2 is not available ({_why(e)}): on a Raspberry Pi install python3-picamera2 "
            "with apt and make the venv with --system-site-packages; elsewhere use "
            "camera.source = 'v4l2' or 'replay'"
        ) from None
    return Picamera2Api(picamera2.Picamera2, picamera2.MappedArray, libcamera.controls)


def cap_exposure_profiles(agc: dict[str, Any], max_exposure_us: int) -> int:
    """Clip every exposure profile of an rpi.agc tuning block to max_exposure_us; returns how many.

    The Raspberry Pi AGC walks a profile of (exposure, gain) stages: it lengthens
    the exposure first, then raises the gain. Clipping the exposures keeps the
    automatic exposure but makes the gain take over at the cap, which is what a
    moving hand needs. libcamera has no control for this; the tuning is the way.
    """
    channels = agc.get("channels")
    blocks = channels if isinstance(channels, list) else [agc]
    changed = 0
    for block in blocks:
        modes = block.get("exposure_modes") if isinstance(block, dict) else None
        if not isinstance(modes, dict):
            continue
        for mode in modes.values():
            if not isinstance(mode, dict):
                continue
            for key in ("shutter", "exposure"):  # libcamera renamed "shutter" to "exposure"
                stages = mode.get(key)
                if isinstance(stages, list) and all(isinstance(s, int | float) for s in stages):
                    mode[key] = [min(s, max_exposure_us) for s in stages]
                    changed += 1
    return changed


@dataclass(slots=True)
class _Lease:
    frame: Frame
    stack: contextlib.ExitStack  # closing it unmaps the view and releases the request


class Picamera2Source(CameraSource):
    """CSI camera through picamera2: the Y plane of a lores YUV420 stream, without a copy."""

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        api: Picamera2Api | None = None,
        camera_num: int = 0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._cfg = cfg
        self._api = api
        self._num = camera_num
        self._clock = clock
        self._lock = threading.Lock()
        self._cam: Any = None
        self._mapped_array_cls: Any = None
        self._job: Any = None
        self._job_since = 0.0
        self._leases: OrderedDict[int, _Lease] = OrderedDict()
        self._index = 0
        self._size = cfg.size
        self._model = "?"
        self._metadata: dict[str, Any] = {}
        self._recall_warned = False
        self._tuning_warned = False
        self._site_tuning = _site_tuning_file()

    @property
    def name(self) -> str:
        return f"picamera2 camera {self._num} ({self._model})"

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames: the configured size as the camera adjusted it."""
        return self._size

    @property
    def metadata(self) -> dict[str, Any]:
        """libcamera metadata of the last frame (exposure, gain, lens position, ...)."""
        return dict(self._metadata)

    def open(self) -> None:
        if self._cam is not None:
            return
        api = self._api if self._api is not None else load_picamera2_api()
        picam_cls = api.picamera2_cls
        # picamera2 leaves the variable naming its temporary (deleted) tuning file behind;
        # a libcamera started with it would not list the camera at all
        if self._site_tuning:
            os.environ[TUNING_ENV] = self._site_tuning
        else:
            os.environ.pop(TUNING_ENV, None)
        try:
            cameras = list(picam_cls.global_camera_info())
        except Exception as e:
            raise CameraOpenError(f"picamera2: cannot list the cameras: {_why(e)}") from None
        if len(cameras) <= self._num:
            raise CameraOpenError(
                f"picamera2: no camera {self._num} ({len(cameras)} connected): check the ribbon "
                "cable and that `rpicam-hello --list-cameras` sees it"
            )
        self._model = str(cameras[self._num].get("Model", "?"))
        tuning: dict[str, Any] | str | None = self._capped_tuning(picam_cls)
        if tuning is not None:
            _forget_camera_manager(picam_cls)
        else:
            tuning = self._site_tuning  # uncapped, but still the site's own file if it has one
        try:
            cam = picam_cls(self._num) if tuning is None else picam_cls(self._num, tuning=tuning)
        except Exception as e:
            raise CameraOpenError(
                f"{self.name}: cannot be opened: {_why(e)} (is another program using the camera?)"
            ) from None
        try:
            self._configure_and_start(cam, api)
        except Exception as e:
            with contextlib.suppress(Exception):
                cam.close()
            raise CameraOpenError(
                f"{self.name}: cannot be configured and started: {_why(e)}"
            ) from None
        with self._lock:
            self._cam = cam
            self._mapped_array_cls = api.mapped_array_cls
            self._job = None
            self._index = 0
        log.info("%s open: %dx%d at %g fps", self.name, self._size[0], self._size[1], self._cfg.fps)

    def _capped_tuning(self, picam_cls: Any) -> dict[str, Any] | None:
        """The sensor's tuning with its exposure profiles capped, or None if it cannot be had."""
        site = Path(self._site_tuning) if self._site_tuning else None
        filename = site.name if site else f"{self._model}.json"
        try:
            if site:
                tuning = picam_cls.load_tuning_file(site.name, dir=str(site.parent))
            else:
                tuning = picam_cls.load_tuning_file(filename)
            agc = picam_cls.find_tuning_algo(tuning, "rpi.agc")
        except Exception as e:
            self._warn_tuning(f"tuning {filename} unusable ({_why(e)})")
            return None
        if (
            not isinstance(tuning, dict)
            or not isinstance(agc, dict)
            or not cap_exposure_profiles(agc, self._cfg.max_exposure_us)
        ):
            self._warn_tuning(f"no exposure profile in {filename}")
            return None
        return tuning

    def _warn_tuning(self, why: str) -> None:
        if not self._tuning_warned:  # once, not at every reopen
            self._tuning_warned = True
            log.warning("%s: %s: the exposure is capped by the frame time only", self.name, why)

    def _configure_and_start(self, cam: Any, api: Picamera2Api) -> None:
        width, height = self._cfg.size
        advertised = cam.camera_controls
        controls: dict[str, Any] = {}
        if "FrameDurationLimits" in advertised:
            lo, hi = advertised["FrameDurationLimits"][:2]
            duration = round(1_000_000 / self._cfg.fps)
            duration = max(int(lo or 0), min(duration, int(hi or duration)))
            controls["FrameDurationLimits"] = (duration, duration)  # a steady frame rate
        if "AfMode" in advertised:  # Camera Module 3; fixed-focus modules have no AF controls
            controls["AfMode"] = api.controls.AfModeEnum.Continuous
        config = cam.create_video_configuration(
            # main is required by picamera2; YUV420 at the lores size costs the least bandwidth
            main={"size": (width, height), "format": "YUV420"},
            lores={"size": (width, height), "format": "YUV420"},
            raw=None,
            buffer_count=self._cfg.buffer_count + MAX_LEASES,
            controls=controls,
            display=None,
            encode=None,
            # no picamera2-side queue: capture_request() waits for the next frame, never an old one
            queue=False,
        )
        cam.configure(config)
        lores = cam.stream_configuration("lores")
        self._size = (int(lores["size"][0]), int(lores["size"][1]))
        if self._size != (width, height):
            log.info(
                "%s: lores size adjusted from %dx%d to %dx%d", self.name, width, height, *self._size
            )
        cam.start()

    def read(self, timeout: float) -> Frame | None:
        cam = self._cam
        if cam is None:
            raise CameraLost(f"{self.name}: not open")
        if self._job is None:
            try:
                self._job = cam.capture_request(wait=False)
            except Exception as e:
                raise CameraLost(f"{self.name}: capture failed: {_why(e)}") from None
            self._job_since = self._clock()
        try:
            # the job survives a timeout: the next read() waits for the same frame
            request = cam.wait(self._job, max(0.0, timeout))
        except TimeoutError:
            waited = self._clock() - self._job_since
            if waited > self._cfg.stall_timeout_s:
                raise CameraLost(f"{self.name}: no frame for {waited:.1f} s") from None
            return None
        except Exception as e:
            self._job = None
            raise CameraLost(f"{self.name}: capture failed: {_why(e)}") from None
        self._job = None
        return self._lease(request)

    def _lease(self, request: Any) -> Frame:
        width, height = self._size
        stack = contextlib.ExitStack()
        stack.callback(request.release)  # runs last: the view is unmapped first
        try:
            mapped = stack.enter_context(self._mapped_array_cls(request, "lores", write=False))
            planes = mapped.array  # YUV420: shape (height * 3 // 2, stride), Y on top
            if (
                planes is None
                or planes.dtype != np.uint8
                or planes.ndim != 2
                or planes.shape[0] < height
                or planes.shape[1] < width
            ):
                got = None if planes is None else (planes.shape, planes.dtype)
                raise CameraLost(f"{self.name}: unexpected lores buffer {got} for {width}x{height}")
            luma = planes[:height, :width]  # a strided view: no copy
            luma.flags.writeable = False  # it is the camera's buffer
            metadata = request.get_metadata()
        except CameraLost:
            stack.close()
            raise
        except Exception as e:
            stack.close()
            raise CameraLost(f"{self.name}: bad frame buffer: {_why(e)}") from None
        frame = Frame(luma, self._timestamp(metadata), self._index)
        self._index += 1
        self._metadata = metadata
        recalled: list[_Lease] = []
        with self._lock:
            self._leases[id(frame)] = _Lease(frame, stack)
            while len(self._leases) > MAX_LEASES:
                recalled.append(self._leases.popitem(last=False)[1])
        for lease in recalled:
            if not self._recall_warned:
                self._recall_warned = True
                log.warning(
                    "%s: frames are not being released; the oldest is given back to the "
                    "camera (its view becomes invalid)",
                    self.name,
                )
            self._end_lease(lease)
        return frame

    def _timestamp(self, metadata: dict[str, Any]) -> float:
        # SensorTimestamp (ns) is the kernel's monotonic clock on a Pi, but it is trusted
        # only when it agrees with ours (a Pi never suspends, so BOOTTIME = MONOTONIC).
        now = self._clock()
        ns = metadata.get("SensorTimestamp")
        if isinstance(ns, int) and abs(ns / 1e9 - now) < _TIMESTAMP_SANITY_S:
            return ns / 1e9
        return now

    def release(self, frame: Frame) -> None:
        """Give the frame's buffer back to the camera; the frame must not be used after."""
        with self._lock:
            lease = self._leases.get(id(frame))
            if lease is None or lease.frame is not frame:
                return  # already released, recalled, or closed
            del self._leases[id(frame)]
        self._end_lease(lease)

    def _end_lease(self, lease: _Lease) -> None:
        try:
            lease.stack.close()
        except Exception as e:  # a request released twice or after close: nothing left to free
            log.debug("%s: releasing frame %d: %s", self.name, lease.frame.index, _why(e))

    def close(self) -> None:
        with self._lock:
            cam, job, leases = self._cam, self._job, list(self._leases.values())
            self._cam, self._job = None, None
            self._leases.clear()
        if cam is None:
            return
        if job is not None:
            self._drop_job(cam, job)
        # stop first: the camera no longer writes, so a frame still being decoded stays intact
        _try(f"{self.name}: stop", cam.stop)
        # pop, not iterate: no reference to a frame may be left when picamera2 unmaps the
        # buffers (it cannot unmap one that a view still points into)
        while leases:
            self._end_lease(leases.pop())
        _try(f"{self.name}: close", cam.close)
        log.info("%s closed", self.name)

    def _drop_job(self, cam: Any, job: Any) -> None:
        """Cancel a capture still waiting; if it completed meanwhile, give its request back."""
        _try(f"{self.name}: cancel capture", cam.cancel_all_and_flush)
        try:
            request = cam.wait(job, 0.2)
        except Exception:  # cancelled (the usual case) or timed out: nothing to give back
            return
        _try(f"{self.name}: release request", request.release)


_site_tuning_seen = ""


def _site_tuning_file() -> str:
    """The tuning file the site named in TUNING_ENV (a NoIR module, say), or "".

    It is the base of the capped tuning. Remembered, because picamera2 then
    overwrites the variable with the name of a temporary file it deletes.
    """
    global _site_tuning_seen
    named = os.environ.get(TUNING_ENV, "")
    if named and os.path.isfile(named):
        _site_tuning_seen = named
    return _site_tuning_seen


def _forget_camera_manager(picam_cls: Any) -> None:
    """Let the next Picamera2 start libcamera afresh, so that it reads the given tuning.

    libcamera reads the tuning file when its camera manager starts. Listing the
    cameras (to learn the sensor model) started one, and picamera2 keeps it
    until its last camera closes; with no camera open, dropping it is safe.
    """
    manager = getattr(picam_cls, "_cm", None)
    if manager is not None and hasattr(manager, "_cms") and not getattr(manager, "cameras", None):
        manager._cms = None


def _try(what: str, action: Callable[[], object]) -> None:
    """Run a tear-down step; a failure is logged, never raised (close must always finish)."""
    try:
        action()
    except Exception as e:
        log.warning("%s failed: %s", what, _why(e))


# ---------------------------------------------------------------------------
# V4L2 (USB UVC camera) through OpenCV


def _import_cv2(purpose: str) -> Any:
    try:
        return importlib.import_module("cv2")
    except Exception as e:
        raise CameraOpenError(
            f"{purpose} needs OpenCV ({_why(e)}): pip install 'ordoscan[usb]' "
            "(opencv-python-headless)"
        ) from None


def _fourcc_text(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\0 ")


class V4L2Source(CameraSource):
    """USB UVC camera through OpenCV's V4L2 backend; only the luma is kept."""

    def __init__(
        self, cfg: CameraConfig, *, cv2_module: Any = None, clock: Clock = time.monotonic
    ) -> None:
        self._cfg = cfg
        self._cv2_module = cv2_module
        self._clock = clock
        self._cv2: Any = None
        self._cap: Any = None
        self._fourcc = ""
        self._size = cfg.size
        self._index = 0
        self.corrupt_frames = 0

    @property
    def name(self) -> str:
        return f"v4l2 {self._cfg.device}"

    @property
    def pixel_format(self) -> str:
        """The format the camera agreed to (YUYV preferred: its luma needs no decoding)."""
        return self._fourcc

    def open(self) -> None:
        if self._cap is not None:
            return
        device = self._cfg.device
        try:
            mode = os.stat(device).st_mode
        except FileNotFoundError:
            raise CameraOpenError(
                f"v4l2 device {device}: no such device (is the USB camera plugged in? "
                "`v4l2-ctl --list-devices` lists them)"
            ) from None
        except OSError as e:
            raise CameraOpenError(f"v4l2 device {device}: {e.strerror}") from None
        if not stat.S_ISCHR(mode):
            raise CameraOpenError(
                f"v4l2 device {device}: not a video device (expected a character "
                "device such as /dev/video0)"
            )
        if not os.access(device, os.R_OK | os.W_OK):
            raise CameraOpenError(
                f"v4l2 device {device}: permission denied (the service user must "
                "be in the 'video' group)"
            )
        cv2 = (
            self._cv2_module
            if self._cv2_module is not None
            else _import_cv2("camera.source = 'v4l2'")
        )
        try:
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
            opened = bool(cap.isOpened())
        except Exception as e:
            raise CameraOpenError(f"v4l2 device {device}: cannot be opened: {_why(e)}") from None
        if not opened:
            with contextlib.suppress(Exception):
                cap.release()
            raise CameraOpenError(
                f"v4l2 device {device}: cannot be opened (busy, or not a capture device)"
            )
        width, height = self._cfg.size
        try:
            # the pixel format first: the driver picks sizes per format
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"YUYV"))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            cap.set(cv2.CAP_PROP_FPS, self._cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # one driver buffer: frames are fresh
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # raw frames: the luma is read, not converted
            timeout_prop = getattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC", None)
            if timeout_prop is not None:  # OpenCV >= 4.6: a stalled camera cannot block read()
                cap.set(timeout_prop, int(self._cfg.stall_timeout_s * 1000))
            self._fourcc = _fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
            self._size = (
                int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            )
        except Exception as e:
            with contextlib.suppress(Exception):
                cap.release()
            raise CameraOpenError(
                f"v4l2 device {device}: cannot be configured: {_why(e)}"
            ) from None
        self._cv2, self._cap, self._index = cv2, cap, 0
        log.info("%s open: %s %dx%d", self.name, self._fourcc or "?", *self._size)

    def read(self, timeout: float) -> Frame | None:
        # cap.read() waits at most one frame interval, or the read timeout on a stall
        cap = self._cap
        if cap is None:
            raise CameraLost(f"{self.name}: not open")
        try:
            ok, image = cap.read()
        except Exception as e:
            raise CameraLost(f"{self.name}: read failed: {_why(e)}") from None
        if not ok or image is None:
            raise CameraLost(f"{self.name}: no frame (unplugged, or stalled)")
        luma = self._luma(np.asarray(image))
        if luma is None:
            self.corrupt_frames += 1
            return None
        frame = Frame(luma, self._clock(), self._index)
        self._index += 1
        return frame

    def _luma(self, image: npt.NDArray[Any]) -> Grey | None:
        """The Y plane of a raw frame, the cheapest way its format allows."""
        cv2 = self._cv2
        width, height = self._size
        fmt = self._fourcc
        y_first = 0 if fmt in ("YUYV", "YUY2", "YVYU") else 1  # UYVY, VYUY: Y is the 2nd byte
        if image.dtype != np.uint8:
            raise CameraLost(f"{self.name}: unexpected {image.dtype} frame")
        if image.ndim == 3 and image.shape[2] == 2:  # packed 4:2:2 as two channels
            return image[:, :, y_first]
        if fmt in ("YUYV", "YUY2", "YVYU", "UYVY", "VYUY") and image.size == width * height * 2:
            # packed 4:2:2 in a Mat of some other shape: the bytes are what matter
            return np.ascontiguousarray(image).reshape(height, width * 2)[:, y_first::2]
        if fmt in ("MJPG", "JPEG") and (image.ndim == 1 or image.shape[0] == 1):
            try:
                decoded = cv2.imdecode(image.reshape(-1), cv2.IMREAD_GRAYSCALE)
            except Exception:
                decoded = None
            return None if decoded is None else np.asarray(decoded, dtype=np.uint8)
        if image.ndim == 2 and image.shape == (height, width):  # GREY
            return image
        if image.ndim == 3 and image.shape[2] == 3:  # the backend converted to BGR after all
            return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
        raise CameraLost(
            f"{self.name}: unexpected frame layout {image.shape} for format {fmt or '?'}"
        )

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            _try(f"{self.name}: release", cap.release)
            log.info("%s closed", self.name)


# ---------------------------------------------------------------------------
# Replay (image file, followed folder, video)

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mjpg",
        ".mjpeg",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".h264",
        ".264",
        ".ts",
    }
)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def load_grey_image(path: Path) -> Grey:
    """An image file as a 2-D uint8 luma array (PIL); PIL's own errors pass through."""
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("L", im.size)  # let libjpeg decode the luma only
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: keep the high byte
            wide = np.asarray(im, dtype=np.uint16)
            return (wide >> 8).astype(np.uint8)
        grey = im if im.mode == "L" else im.convert("L")
        array = np.array(grey, dtype=np.uint8)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"decoded to an unusable {array.shape} array")
    return array


class ReplaySource(CameraSource):
    """Frames from an image file, a followed folder or a video, paced at cfg.fps."""

    live = False

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        frames_per_image: int = 1,
        poll_interval_s: float = 0.2,
    ) -> None:
        if frames_per_image < 1:
            raise ValueError(f"frames_per_image must be at least 1, not {frames_per_image}")
        self._cfg = cfg
        self._path = Path(cfg.path)
        self._period = 1.0 / cfg.fps
        self._clock = clock
        self._closing = threading.Event()
        # sleeping on an event lets close() cut a wait short
        self._sleep: Sleep = sleep if sleep is not None else self._closing.wait
        self._frames_per_image = frames_per_image
        self._poll = poll_interval_s
        self._opened = False
        self._is_dir = False
        self._playing: Iterator[Grey] | None = None  # frames of the current file
        self._video: Any = None  # the cv2.VideoCapture being played
        self._pending: Grey | None = None  # decoded, waiting for its time
        self._due: float | None = None
        self._index = 0
        self._last_name = ""  # folder: the last file started, in name order
        self._played_in_cycle = 0
        self._file_done = False  # single file: played once
        # (path, mtime_ns, image) of the last image decoded: a looped file is decoded once
        self._cache: tuple[Path, int, Grey] | None = None
        self._warned: set[tuple[str, int]] = set()
        self.skipped_files = 0

    @property
    def name(self) -> str:
        return f"replay {self._path}"

    def open(self) -> None:
        path = self._path
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise CameraOpenError(f"replay path {path}: no such file or folder") from None
        except OSError as e:
            raise CameraOpenError(f"replay path {path}: {e.strerror}") from None
        self._reset()
        self._is_dir = stat.S_ISDIR(mode)
        if self._is_dir:
            try:
                with os.scandir(path) as entries:
                    next(entries, None)
            except OSError as e:
                raise CameraOpenError(
                    f"replay folder {path}: cannot be listed: {e.strerror}"
                ) from None
        elif _is_video(path):
            video = self._open_video(path)
            if video is None:
                raise CameraOpenError(f"replay video {path}: cannot be read as a video")
            video.release()
        else:
            try:
                self._image(path)
            except Exception as e:
                raise CameraOpenError(
                    f"replay image {path}: not a readable image: {_why(e)}"
                ) from None
        self._opened = True
        self._closing.clear()
        log.info(
            "%s open (%s, %g fps, loop=%s)",
            self.name,
            "folder, followed" if self._is_dir else "file",
            self._cfg.fps,
            self._cfg.loop,
        )

    def _reset(self) -> None:
        self._stop_playing()
        self._pending = None
        self._due = None
        self._index = 0
        self._last_name = ""
        self._played_in_cycle = 0
        self._file_done = False

    def read(self, timeout: float) -> Frame | None:
        if not self._opened:
            raise CameraLost(f"{self.name}: not open")
        now = self._clock()
        deadline = now + max(0.0, timeout)
        while not self._closing.is_set():  # close() from another thread ends a wait
            if self._pending is None:
                self._pending = self._next_image()
            if self._pending is not None:
                due = now if self._due is None else self._due
                if due > deadline:
                    self._sleep(deadline - now)
                    return None
                if due > now:
                    self._sleep(due - now)
                image, self._pending = self._pending, None
                return self._deliver(image, due)
            if not self._is_dir or now >= deadline:
                # a single file that ended: no frame, not a fault
                if deadline > now:
                    self._sleep(deadline - now)
                return None
            self._sleep(min(self._poll, deadline - now))  # a followed folder: look again soon
            now = self._clock()
        return None

    def _deliver(self, image: Grey, due: float) -> Frame:
        now = self._clock()
        # the next frame one period on; after a late read, one period from now: no burst
        late = now - due > self._period
        self._due = (now if late else due) + self._period
        frame = Frame(image, now, self._index)
        self._index += 1
        return frame

    def _next_image(self) -> Grey | None:
        """The next image to show, or None if there is none for now."""
        while True:
            if self._playing is not None:
                image = next(self._playing, None)
                if image is not None:
                    self._played_in_cycle += 1
                    return image
                self._stop_playing()
            if not self._start_next_file():
                return None

    def _start_next_file(self) -> bool:
        """Start the next file; False if there is none for now."""
        # a loop starts again only if the last round gave frames: no endless spin on bad files
        if not self._is_dir:
            if self._file_done and (not self._cfg.loop or not self._played_in_cycle):
                return False
            self._file_done, self._played_in_cycle = True, 0
            return self._start_file(self._path, fatal=True)
        while True:
            name = self._next_name()
            if name is None:
                if not self._cfg.loop or not self._played_in_cycle:
                    return False
                self._last_name, self._played_in_cycle = "", 0  # loop: from the first file again
                continue
            self._last_name = name
            if self._start_file(self._path / name, fatal=False):
                return True

    def _next_name(self) -> str | None:
        """The first file name after the last one started, skipping dot-files (being written)."""
        try:
            with os.scandir(self._path) as listing:
                entries = list(listing)
        except OSError as e:
            raise CameraLost(
                f"replay folder {self._path}: cannot be listed: {e.strerror}"
            ) from None
        best: str | None = None
        for entry in entries:
            name = entry.name
            if (
                name.startswith(".")
                or name <= self._last_name
                or (best is not None and name >= best)
            ):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file():
                    best = name
        return best

    def _start_file(self, path: Path, *, fatal: bool) -> bool:
        if _is_video(path):
            video = self._open_video(path)
            if video is None:
                return self._unreadable(path, "cannot be read as a video", fatal)
            self._video = video
            self._playing = self._video_frames(path, video)
            return True
        try:
            image = self._image(path)
        except Exception as e:
            return self._unreadable(path, f"not a readable image: {_why(e)}", fatal)
        self._playing = iter([image] * self._frames_per_image)
        return True

    def _unreadable(self, path: Path, why: str, fatal: bool) -> bool:
        if fatal:
            raise CameraLost(f"replay file {path}: {why}")
        self.skipped_files += 1
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            key = (str(path), 0)
        if key not in self._warned:  # once per file version, not on every loop
            self._warned.add(key)
            log.warning("replay: skipped %s: %s", path, why)
        return False

    def _image(self, path: Path) -> Grey:
        mtime = path.stat().st_mtime_ns
        if self._cache is not None and self._cache[0] == path and self._cache[1] == mtime:
            return self._cache[2]
        image = load_grey_image(path)
        self._cache = (path, mtime, image)
        return image

    def _open_video(self, path: Path) -> Any:
        try:
            cv2 = _import_cv2(f"replaying the video {path}")
        except CameraOpenError as e:
            log.warning("%s", e)
            return None
        try:
            video = cv2.VideoCapture(str(path))
            if video.isOpened():
                return video
            video.release()
        except Exception as e:
            log.debug("replay: %s: %s", path, _why(e))
        return None

    def _video_frames(self, path: Path, video: Any) -> Iterator[Grey]:
        cv2 = importlib.import_module("cv2")
        while True:
            try:
                ok, image = video.read()
            except Exception as e:
                log.warning("replay: %s: read failed, the rest is skipped: %s", path, _why(e))
                return
            if not ok or image is None:
                return
            array = np.asarray(image)
            if array.ndim == 3:
                array = cv2.cvtColor(
                    array, cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
                )
            yield np.asarray(array, dtype=np.uint8)

    def _stop_playing(self) -> None:
        self._playing = None
        video, self._video = self._video, None
        if video is not None:
            _try(f"replay: release {self._path}", video.release)

    def close(self) -> None:
        self._closing.set()
        self._opened = False
        self._stop_playing()
        self._pending = None


# ---------------------------------------------------------------------------
# The newest-frame reader


@dataclass(frozen=True, slots=True)
class ReaderStats:
    """Counters of a LatestFrameReader, for telemetry."""

    frames: int  # frames read from the source
    dropped: int  # frames replaced by a newer one before anyone took them
    reopens: int  # times the source was closed after a failure and opened again
    ok: bool  # the camera state last reported
    message: str
    last_frame_at: float | None  # time.monotonic() of the last frame, None before the first


@dataclass(slots=True)
class Backoff:
    """Capped exponential delays: first, 2x first, 4x first, ... up to cap; reset() starts again."""

    first: float
    cap: float
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class LatestFrameReader(Service):
    """Reads a FrameSource on its own thread and keeps only the newest frame (a slot of one).

    `get(timeout)` gives the analysis thread the newest frame; that frame stays
    valid until its next `get()`. Frames nobody took are dropped and counted,
    never queued. A CameraError (or a live source silent for stall_timeout_s)
    is reported through on_state(False, message); the source is closed and
    opened again with capped exponential back-off, and on_state(True, ...)
    follows once it is open. A replay that ended is not a fault.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        stall_timeout_s: float,
        on_state: Callable[[bool, str], None] | None = None,
        clock: Clock = time.monotonic,
        backoff_first_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        read_timeout_s: float = 0.25,
        release_grace_s: float = 2.0,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._source = source
        self._stall = stall_timeout_s
        self._on_state = on_state
        self._clock = clock
        self._backoff = Backoff(backoff_first_s, backoff_cap_s)
        self._read_timeout = read_timeout_s
        self._grace = release_grace_s
        self._stop = threading.Event()
        # back-off waits end early on stop()
        self._wait: Callable[[float], object] = wait if wait is not None else self._stop.wait
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._given: Frame | None = None  # the frame the analysis thread holds
        self._consumer_clear = True  # its last get() returned None: it holds no frame
        self._paused = True  # between a loss and the next open: no frames
        self._is_open = False
        self._thread: threading.Thread | None = None
        self._frames = 0
        self._dropped = 0
        self._reopens = 0
        self._last_frame_at: float | None = None
        self._state: tuple[bool, str] | None = None
        self._name = str(getattr(source, "name", type(source).__name__))
        self._live = bool(getattr(source, "live", True))

    # -- the analysis side

    def get(self, timeout: float) -> Frame | None:
        """The newest frame, or None if none came within timeout (the previous one is released)."""
        with self._cond:
            gave_back = self._given is not None
            self._give_back()
            # after a loss, a call that gave a frame back returns at once: the caller's last
            # reference goes, and the reader may close the camera under it
            self._cond.wait_for(
                lambda: (
                    self._slot is not None or self._stop.is_set() or (self._paused and gave_back)
                ),
                max(0.0, timeout),
            )
            frame = None
            if self._slot is not None and not self._stop.is_set():
                frame, self._slot = self._slot, None
            self._given = frame
            self._consumer_clear = frame is None
            self._cond.notify_all()  # the reader may be waiting for the consumer to let go
            return frame

    def _drop_slot(self) -> None:
        # a helper, so that no local name keeps the frame alive after the source is closed
        frame, self._slot = self._slot, None
        if frame is not None:
            self._release(frame)

    def _give_back(self) -> None:
        frame, self._given = self._given, None
        if frame is not None:
            self._release(frame)

    def _release(self, frame: Frame) -> None:
        try:
            release_frame(self._source, frame)
        except Exception as e:
            log.warning("%s: releasing frame %d failed: %s", self._name, frame.index, _why(e))

    @property
    def last_frame_at(self) -> float | None:
        """time.monotonic() of the last frame's arrival (for the watchdog); None before one."""
        return self._last_frame_at

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def dropped(self) -> int:
        return self._dropped

    def stats(self) -> ReaderStats:
        ok, message = self._state if self._state is not None else (False, "not open yet")
        return ReaderStats(
            self._frames, self._dropped, self._reopens, ok, message, self._last_frame_at
        )

    # -- life cycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._is_open = False
        self._thread = threading.Thread(target=self._run, name="camera-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, release every frame and close the source (stop the analysis first)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("%s: the reader thread did not stop within %.1f s", self._name, timeout)

    # -- the reading thread

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            self._shutdown()

    def _step(self) -> None:
        """One turn of the loop: a method, so that no frame outlives it in a local name."""
        if not self._is_open:
            self._is_open = self._open()
            if not self._is_open:
                self._wait(self._backoff.next())
            return
        frame, failure = self._read_once()
        if failure is not None:
            self._lost(failure)
            self._is_open = False
            self._wait(self._backoff.next())
        elif frame is not None:
            self._backoff.reset()
            self._publish(frame)

    def _read_once(self) -> tuple[Frame | None, str | None]:
        """One read: (frame or None, None), or (None, why the source is considered lost)."""
        try:
            frame = self._source.read(self._read_timeout)
        except CameraError as e:
            return None, str(e)
        except Exception as e:  # a bug or a library surprise: same cure as a lost camera
            log.exception("%s: read failed", self._name)
            return None, f"{self._name}: read failed: {_why(e)}"
        if frame is None and self._live and self._last_frame_at is not None:
            silent = self._clock() - self._last_frame_at
            if silent > self._stall:
                return None, f"{self._name}: no frame for {silent:.1f} s"
        return frame, None

    def _open(self) -> bool:
        try:
            self._source.open()
        except CameraError as e:
            self._report(False, str(e))
            return False
        except Exception as e:
            log.exception("%s: open failed", self._name)
            self._report(False, f"{self._name}: open failed: {_why(e)}")
            return False
        with self._cond:
            self._paused = False
        # the stall clock starts at the open: a camera that never gives a frame is lost too
        self._last_frame_at = self._clock()
        self._report(True, f"{self._name}: open")
        return True

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            old, self._slot = self._slot, frame
            self._frames += 1
            self._last_frame_at = self._clock()
            if old is not None:
                self._dropped += 1
                self._release(old)
            self._cond.notify_all()

    def _lost(self, message: str) -> None:
        self._report(False, message)
        self._reopens += 1
        with self._cond:
            self._paused = True  # get() hands out nothing until the source is open again
            self._drop_slot()
            self._cond.notify_all()
            # a frame in the analysis thread's hands must be let go before its buffer is freed
            if not self._cond.wait_for(
                lambda: self._consumer_clear or self._stop.is_set(), self._grace
            ):
                log.warning(
                    "%s: closing while the analysis still holds frame %s",
                    self._name,
                    None if self._given is None else self._given.index,
                )
        self._close_source()

    def _shutdown(self) -> None:
        with self._cond:
            self._paused = True
            self._drop_slot()
            self._give_back()
            self._cond.notify_all()
        self._close_source()

    def _close_source(self) -> None:
        try:
            self._source.close()
        except Exception as e:
            log.warning("%s: close failed: %s", self._name, _why(e))

    def _report(self, ok: bool, message: str) -> None:
        if self._state == (ok, message):
            return
        self._state = (ok, message)
        (log.info if ok else log.warning)("%s", message)
        if self._on_state is not None:
            try:
                self._on_state(ok, message)
            except Exception:
                log.exception("%s: the camera state callback failed", self._name)
