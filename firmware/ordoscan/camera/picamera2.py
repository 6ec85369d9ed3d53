"""CSI camera through picamera2 (imported lazily: an apt package on the Pi only).

Frame lifetime. The source hands out a read-only view into the camera's own
buffer: no conversion, no copy. That buffer goes back to the camera when the
frame is released, so a frame is *leased*: it stays valid until
`source.release(frame)` or `source.close()`. The reader releases a frame when a
newer one replaces it in its slot, and the frame it gave the analysis thread
when that thread asks for the next one. So the pipeline holds at most three
camera buffers (the newest, waiting; the one being decoded; the one just read)
and the camera gets `buffer_count` more of its own to fill, so it never stalls
for want of a buffer. picamera2 cannot unmap a buffer while a view of it is
alive, so before the reader closes a lost camera it waits for the analysis
thread to come back for a frame (it gets None and lets go of the old one).

Beside lores, the camera fills a main stream at half the sensor's full size
(imx708: 2304x1296, its fast binned mode). It is never read unless the decoder
asks a frame's `zoom` for a region: only then is that frame's main buffer
mapped, the region copied out and the buffer unmapped; the main buffer goes
back to the camera with the frame, so zoom works only while the frame is held.

The camera runs continuous autofocus where the module has it, a fixed frame
rate, and an exposure capped at `max_exposure_us` so that a moving hand does
not blur. libcamera has no control for an auto-exposure limit, so the cap goes
into the sensor's tuning, whose exposure profiles the Raspberry Pi AGC
follows: past the cap, the gain rises instead.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ordoscan.camera.base import (
    CameraSource,
    Frame,
    Grey,
    bounded,
    stall_message,
    teardown,
    why,
    zoom_box,
)
from ordoscan.camera.tuning import (
    TUNING_ENV,
    cap_exposure_profiles,
    forget_camera_manager,
    forget_failed_instance,
    is_mono,
    site_tuning_file,
)
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraLost, CameraOpenError

log = logging.getLogger("ordoscan.camera")

# Camera buffers the pipeline may hold at once: the newest frame waiting in the
# reader's slot, the one being decoded, and the one just read (for the instant
# before the slot's old frame is dropped). The camera gets buffer_count more.
MAX_LEASES = 3
# A SensorTimestamp further than this from our monotonic clock is not trusted.
_TIMESTAMP_SANITY_S = 5.0
# Each tear-down (stop, close) gets this long: picamera2's stop() can block for good after a
# cable pull (picamera2 issue #1065), and the daemon must still stop within 5 s.
TEARDOWN_TIMEOUT_S = 2.0
_STALL_HINT = (
    "a CSI camera stops streaming when its ribbon cable is loose or pulled: check it; "
    "the camera is restarted"
)


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
            f"picamera2 is not available ({why(e)}): on a Raspberry Pi install python3-picamera2 "
            "with apt and make the venv with --system-site-packages; elsewhere use "
            "camera.source = 'v4l2' or 'replay'"
        ) from None
    return Picamera2Api(picamera2.Picamera2, picamera2.MappedArray, libcamera.controls)


@dataclass(slots=True)
class _Hires:
    """What a frame's zoom needs: its request, while the lease holds it (no link to the frame,
    so that no cycle keeps a frame, and its view of the camera's buffer, alive)."""

    request: Any
    held: bool = True


@dataclass(slots=True)
class _Lease:
    frame: Frame
    stack: contextlib.ExitStack  # closing it unmaps the view and releases the request
    hires: _Hires | None = None


class Picamera2Source(CameraSource):
    """CSI camera through picamera2: the Y plane of a lores YUV420 stream, without a copy."""

    stall_hint = _STALL_HINT

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        api: Picamera2Api | None = None,
        camera_num: int = 0,
        clock: Clock = SYSTEM_CLOCK,
        teardown_timeout_s: float = TEARDOWN_TIMEOUT_S,
    ) -> None:
        self._cfg = cfg
        self._teardown_s = teardown_timeout_s
        self._closing: threading.Thread | None = None  # a tear-down that overran its time
        self._closing_since = 0.0
        # (frame index, weak reference to the array that maps the frame's buffer)
        self._views: list[tuple[int, weakref.ref[Any]]] = []
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
        self._main_size = cfg.size  # the full-resolution stream beside lores (zoom)
        self._model = "?"
        self._metadata: dict[str, Any] = {}
        self._recall_warned = False
        self._tuning_warned = False
        self._site_tuning = site_tuning_file()

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

    def exposure_state(self) -> dict[str, Any] | None:
        """libcamera's AGC, as the last frame's metadata has it; its cap, unless the tuning
        could not be capped."""
        md = self._metadata
        shutter, gain = md.get("ExposureTime"), md.get("AnalogueGain")
        if not isinstance(shutter, int | float) or not isinstance(gain, int | float):
            return None
        cap = None if self._tuning_warned else self._cfg.max_exposure_us
        return {"by": "camera", "exposure_us": int(shutter), "gain": round(float(gain), 2),
                "cap_us": cap}

    def open(self) -> None:
        if self._cam is not None:
            return
        closing = self._closing
        if closing is not None and closing.is_alive():
            # its Picamera2 still owns the camera: another would fail "busy" and leak
            raise CameraOpenError(
                f"{self.name}: the previous session is still closing (picamera2 stop() "
                f"blocked for {self._clock.monotonic() - self._closing_since:.0f} s); "
                "if this lasts, restart the service"
            )
        self._closing = None
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
            raise CameraOpenError(f"picamera2: cannot list the cameras: {why(e)}") from None
        if len(cameras) <= self._num:
            raise CameraOpenError(
                f"picamera2: no camera {self._num} ({len(cameras)} connected): check the ribbon "
                "cable and that `rpicam-hello --list-cameras` sees it"
            )
        self._model = str(cameras[self._num].get("Model", "?"))
        mono = is_mono(picam_cls, str(cameras[self._num].get("Id", "")))
        tuning: dict[str, Any] | str | None = self._capped_tuning(picam_cls, mono)
        if tuning is not None:
            forget_camera_manager(picam_cls)
        else:
            tuning = self._site_tuning  # uncapped, but still the site's own file if it has one
        registered = dict(getattr(getattr(picam_cls, "_cm", None), "cameras", None) or {})
        try:
            cam = picam_cls(self._num) if tuning is None else picam_cls(self._num, tuning=tuning)
        except Exception as e:
            forget_failed_instance(picam_cls, registered)
            raise CameraOpenError(
                f"{self.name}: cannot be opened: {why(e)} (is another program using the camera?)"
            ) from None
        try:
            self._configure_and_start(cam, api)
        except Exception as e:
            bounded(f"{self.name}: close", cam.close, self._teardown_s)
            raise CameraOpenError(
                f"{self.name}: cannot be configured and started: {why(e)}"
            ) from None
        with self._lock:
            self._cam = cam
            self._mapped_array_cls = api.mapped_array_cls
            self._job = None
            self._index = 0
        log.info("%s open: %dx%d at %g fps", self.name, self._size[0], self._size[1], self._cfg.fps)

    def _capped_tuning(self, picam_cls: Any, mono: bool) -> dict[str, Any] | None:
        """The sensor's tuning with its exposure profiles capped, or None if it cannot be had."""
        site = Path(self._site_tuning) if self._site_tuning else None
        # the file libcamera itself would load: mono sensors have their own
        filename = site.name if site else f"{self._model}{'_mono' if mono else ''}.json"
        try:
            if site:
                tuning = picam_cls.load_tuning_file(site.name, dir=str(site.parent))
            else:
                tuning = picam_cls.load_tuning_file(filename)
            agc = picam_cls.find_tuning_algo(tuning, "rpi.agc")
        except Exception as e:
            self._warn_tuning(f"tuning {filename} unusable ({why(e)})")
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
        config = cam.create_video_configuration(
            # main: the sharper picture a small code is zoomed into; YUV420 is the ISP's
            # cheapest output, and its Y plane is the grey the decoder wants
            main={"size": main_size(cam, (width, height)), "format": "YUV420"},
            lores={"size": (width, height), "format": "YUV420"},
            raw=None,
            buffer_count=self._cfg.buffer_count + MAX_LEASES,
            display=None,
            encode=None,
            # no picamera2-side queue: capture_request() waits for the next frame, never an old one
            queue=False,
        )
        cam.configure(config)
        # the sensor mode's limits, and the lens controls if the lens validated, are known
        # only now: before configure() the IPA advertises 33-250,000 ms frames, so any
        # rate above 30 fps would be clamped to 30
        cam.set_controls(self._controls(cam.camera_controls, api))
        lores = cam.stream_configuration("lores")
        self._size = (int(lores["size"][0]), int(lores["size"][1]))
        main = cam.stream_configuration("main")
        self._main_size = (int(main["size"][0]), int(main["size"][1]))
        if self._size != (width, height):
            log.info(
                "%s: lores size adjusted from %dx%d to %dx%d", self.name, width, height, *self._size
            )
        cam.start()

    def _controls(self, advertised: dict[str, Any], api: Picamera2Api) -> dict[str, Any]:
        controls: dict[str, Any] = {}
        if "FrameDurationLimits" in advertised:
            lo, hi = advertised["FrameDurationLimits"][:2]
            duration = round(1_000_000 / self._cfg.fps)
            clamped = max(int(lo or 0), min(duration, int(hi or duration)))
            if clamped != duration:
                log.warning(
                    "%s: %g fps is outside the sensor mode's %d-%d us frames: %.1f fps",
                    self.name, self._cfg.fps, lo, hi, 1e6 / clamped,
                )
            controls["FrameDurationLimits"] = (clamped, clamped)  # a steady frame rate
        if "AfMode" in advertised:  # Camera Module 3; fixed-focus modules have no AF controls
            controls["AfMode"] = api.controls.AfModeEnum.Continuous
        elif self._model == "imx708":
            log.warning("%s: no autofocus control (lens not found): running at fixed focus",
                        self.name)
        return controls

    def read(self, timeout: float) -> Frame | None:
        cam = self._cam
        if cam is None:
            raise CameraLost(f"{self.name}: not open")
        if self._job is None:
            try:
                self._job = cam.capture_request(wait=False)
            except Exception as e:
                raise CameraLost(f"{self.name}: capture failed: {why(e)}") from None
            self._job_since = self._clock.monotonic()
        try:
            # the job survives a timeout: the next read() waits for the same frame
            request = cam.wait(self._job, max(0.0, timeout))
        except TimeoutError:
            waited = self._clock.monotonic() - self._job_since
            if waited > self._cfg.stall_timeout_s:
                raise CameraLost(stall_message(self, self.name, waited)) from None
            return None
        except Exception as e:
            self._job = None
            raise CameraLost(f"{self.name}: capture failed: {why(e)}") from None
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
            raise CameraLost(f"{self.name}: bad frame buffer: {why(e)}") from None
        hires = None
        if self._main_size[0] > width and self._main_size[1] > height:
            hires = _Hires(request)
        zoom = None if hires is None else partial(self._zoom, hires)
        frame = Frame(luma, self._timestamp(metadata), self._index, zoom)
        self._index += 1
        self._metadata = metadata
        # the array that maps the buffer outlives every view of it (numpy collapses bases)
        self._views = [v for v in self._views if v[1]() is not None]
        self._views.append((frame.index, weakref.ref(_root(luma))))
        recalled: list[_Lease] = []
        with self._lock:
            self._leases[id(frame)] = _Lease(frame, stack, hires)
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
        now = self._clock.monotonic()
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

    def _zoom(self, hires: _Hires, x0: int, y0: int, x1: int, y1: int) -> Grey | None:
        """The box (lores pixels) from the main stream, grey, copied out of the buffer."""
        with self._lock:  # the lease may end on another thread: not while the buffer is read
            if not hires.held:
                return None  # released: the buffer is the camera's again
            box = zoom_box((x0, y0, x1, y1), self._size, self._main_size)
            if box is None:
                return None
            bx0, by0, bx1, by1 = box
            # mapped only now, and unmapped before returning: the copy owns its pixels
            with self._mapped_array_cls(hires.request, "main", write=False) as mapped:
                planes = mapped.array  # YUV420: Y on top, (height * 3 // 2, stride)
                if planes is None or planes.shape[0] < by1 or planes.shape[1] < bx1:
                    return None
                region: Grey = np.array(planes[by0:by1, bx0:bx1], dtype=np.uint8)
                del planes
            return region

    def _end_lease(self, lease: _Lease) -> None:
        if lease.hires is not None:
            with self._lock:
                lease.hires.held = False
                lease.hires.request = None
        try:
            lease.stack.close()
        except Exception as e:  # a request released twice or after close: nothing left to free
            log.debug("%s: releasing frame %d: %s", self.name, lease.frame.index, why(e))

    def close(self) -> None:
        with self._lock:
            cam, job, leases = self._cam, self._job, list(self._leases.values())
            self._cam, self._job = None, None
            self._leases.clear()
        if cam is None:
            return
        # every step on a thread with a deadline: after a cable pull picamera2's stop() may
        # never return, and close() must (the daemon has 5 s to stop, the reader must reopen)
        self._closing_since = self._clock.monotonic()
        self._closing = bounded(
            f"{self.name}: close", lambda: self._teardown(cam, job, leases), self._teardown_s
        )
        if self._closing is None:
            log.info("%s closed", self.name)

    def _teardown(self, cam: Any, job: Any, leases: list[_Lease]) -> None:
        if job is not None:
            self._drop_job(cam, job)
        # stop first: the camera no longer writes, so a frame still being decoded stays intact
        teardown(f"{self.name}: stop", cam.stop)
        # leases before close, and pop, not iterate: no reference to a frame may be left when
        # picamera2 unmaps the buffers (it cannot unmap one that a view still points into)
        while leases:
            self._end_lease(leases.pop())
        held = self._views_alive()
        if held:
            log.warning(
                "%s: frame(s) %s still in use at close: picamera2 cannot unmap their buffers "
                "and the camera's memory leaks (frames must be given back before close)",
                self.name, ", ".join(map(str, held)),
            )
        teardown(f"{self.name}: close", cam.close)

    def _views_alive(self) -> list[int]:
        alive = [index for index, ref in self._views if ref() is not None]
        self._views = []
        return alive

    def _drop_job(self, cam: Any, job: Any) -> None:
        """Cancel a capture still waiting; if it completed meanwhile, give its request back."""
        teardown(f"{self.name}: cancel capture", cam.cancel_all_and_flush)
        try:
            request = cam.wait(job, 0.2)
        except Exception:  # cancelled (the usual case) or timed out: nothing to give back
            return
        teardown(f"{self.name}: release request", request.release)


def main_size(cam: Any, lores: tuple[int, int]) -> tuple[int, int]:
    """The main (zoom) stream's size: half the sensor's full size on each side, which every
    Pi camera reads binned at a high frame rate (imx708: 2304x1296 at up to 56 fps), or the
    full size if half is not larger than lores; never smaller than lores (picamera2's rule).
    YUV420 at 2304x1296 is 4.5 MB a buffer, buffer_count + 3 of them."""
    try:
        full_w, full_h = (int(v) for v in cam.sensor_resolution)
    except Exception:  # a double or an old picamera2 without it: no zoom
        return lores
    half = (full_w // 2 - full_w // 2 % 2, full_h // 2 - full_h // 2 % 2)
    size = half if half[0] > lores[0] and half[1] > lores[1] else (full_w, full_h)
    return (max(size[0], lores[0]), max(size[1], lores[1]))


def _root(array: Any) -> Any:
    """The array that maps a buffer, under every view of it."""
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    return array
