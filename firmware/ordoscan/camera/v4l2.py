"""USB UVC camera (V4L2) through OpenCV; only the luma is kept.

The frames come through OpenCV; the exposure is the kiosk's own (camera/exposure.py),
set on the camera's controls by ioctl (camera/v4l2_controls.py), so that the shutter
stops at camera.max_exposure_us as the picamera2 source's does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ordoscan.camera.base import CameraSource, Frame, Grey, import_cv2, teardown, why
from ordoscan.camera.exposure import KioskExposure
from ordoscan.camera.v4l2_controls import EXPOSURE_UNIT_US, Controls, DeviceControls
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraLost, CameraOpenError

log = logging.getLogger("ordoscan.camera")


def _fourcc_text(code: float) -> str:
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4)).strip("\0 ")


class V4L2Source(CameraSource):
    """USB UVC camera through OpenCV's V4L2 backend; only the luma is kept."""

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        cv2_module: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        open_controls: Callable[[str], Controls] = DeviceControls,
    ) -> None:
        self._cfg = cfg
        self._cv2_module = cv2_module
        self._open_controls = open_controls
        self._controls: Controls | None = None
        self.kiosk_exposure: KioskExposure | None = None
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
            else import_cv2("camera.source = 'v4l2'")
        )
        try:
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
            opened = bool(cap.isOpened())
        except Exception as e:
            raise CameraOpenError(f"v4l2 device {device}: cannot be opened: {why(e)}") from None
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
                f"v4l2 device {device}: cannot be configured: {why(e)}"
            ) from None
        self._cv2, self._cap, self._index = cv2, cap, 0
        log.info("%s open: %s %dx%d", self.name, self._fourcc or "?", *self._size)
        if self._cfg.auto_exposure == "kiosk":
            self._take_exposure()

    def exposure_state(self) -> dict[str, Any] | None:
        """The kiosk's auto-exposure where it runs (shutter, cap and gain in the camera's
        units: 100 us steps, the maker's gain), else the camera's own; None when closed."""
        kiosk = self.kiosk_exposure
        if kiosk is not None:
            return {"by": "kiosk", "exposure_us": kiosk.exposure * EXPOSURE_UNIT_US,
                    "cap_us": kiosk.cap * EXPOSURE_UNIT_US, "gain": kiosk.gain,
                    "gain_max": kiosk.gain_max, "failed": kiosk.failed}
        return None if self._cap is None else {"by": "camera"}

    def _take_exposure(self) -> None:
        """The kiosk's capped auto-exposure, where the camera has manual controls (else logged)."""
        try:
            controls = self._open_controls(self._cfg.device)
        except OSError as e:
            log.warning("%s: controls unavailable (%s); the camera's own exposure is used",
                        self.name, why(e))
            return
        kiosk = KioskExposure.take_over(controls, self.name, self._cfg.max_exposure_us)
        if kiosk is None:
            controls.close()
        else:
            self.kiosk_exposure, self._controls = kiosk, controls

    def read(self, timeout: float) -> Frame | None:
        # cap.read() waits at most one frame interval, or the read timeout on a stall
        cap = self._cap
        if cap is None:
            raise CameraLost(f"{self.name}: not open")
        try:
            ok, image = cap.read()
        except Exception as e:
            raise CameraLost(f"{self.name}: read failed: {why(e)}") from None
        if not ok or image is None:
            raise CameraLost(f"{self.name}: no frame (unplugged, or stalled)")
        luma = self._luma(np.asarray(image))
        if luma is None:
            self.corrupt_frames += 1
            return None
        if self.kiosk_exposure is not None:
            self.kiosk_exposure.observe(luma)
        frame = Frame(luma, self._clock.monotonic(), self._index)
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
        exposure, self.kiosk_exposure = self.kiosk_exposure, None
        controls, self._controls = self._controls, None
        if exposure is not None:
            exposure.restore()
        if controls is not None:
            controls.close()
        cap, self._cap = self._cap, None
        if cap is not None:
            teardown(f"{self.name}: release", cap.release)
            log.info("%s closed", self.name)
