"""The kiosk's own auto-exposure for a USB camera: the shutter stops at a cap, then the gain rises.

A UVC camera's automatic exposure lengthens the shutter as far as the frame
rate allows (33 ms and more in a dim pharmacy), and a hand moving the paper
then smears the code: the dim-room misses of the benchmarks are such frames.
UVC has no control for an exposure limit, so the kiosk switches the camera to
manual exposure and meters the frames itself, the way the Raspberry Pi's AGC
follows its capped tuning: brighter means a longer shutter up to the cap, then
more gain; darker means less gain first, then a shorter shutter.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import numpy as np

from ordoscan.camera.base import Grey, teardown, why
from ordoscan.camera.v4l2_controls import (
    CID_EXPOSURE_ABSOLUTE,
    CID_EXPOSURE_AUTO,
    CID_EXPOSURE_AUTO_PRIORITY,
    CID_GAIN,
    EXPOSURE_MANUAL,
    EXPOSURE_UNIT_US,
    ControlInfo,
    Controls,
)

log = logging.getLogger("ordoscan.camera")

TARGET = 110.0  # the frame's mean luma aimed at (8-bit): paper well clear of white
HIGHLIGHT = 235.0  # the 98th percentile is kept below this: white paper is not clipped
BAND = 0.15  # within ±15 % of the target nothing moves (no hunting)
PERIOD = 3  # frames between two steps: a UVC camera applies a control a frame or two late
MAX_STEP = 2.0  # one step changes the exposure at most ×2 or ÷2


def meter(luma: Grey) -> float:
    """The frame's level against the target: its mean luma, raised where highlights clip.

    One pixel in 64 is enough to meter. The level is the larger of the mean and
    what the mean would be once the 98th percentile sat at HIGHLIGHT, so a dark
    counter around a white page exposes for the page; a clipped 98th percentile
    asks for a full step down.
    """
    sample = luma[::8, ::8]
    counts = np.bincount(sample.ravel(), minlength=256)
    total = int(counts.sum())
    if total == 0:
        return TARGET
    mean = float(np.dot(counts, np.arange(256))) / total
    p98 = int(np.searchsorted(np.cumsum(counts), 0.98 * total))
    if p98 >= 254:  # clipped: how far over is unknown, so a full step down
        return max(mean, MAX_STEP * TARGET)
    return max(mean, p98 * TARGET / HIGHLIGHT, 1.0)


class KioskExposure:
    """Drives a camera's manual exposure and gain from the frames it gives (see the module)."""

    def __init__(
        self,
        controls: Controls,
        name: str,
        *,
        exposure: ControlInfo,
        cap: int,
        gain: ControlInfo | None,
        saved: dict[int, int],
    ) -> None:
        self._controls = controls
        self._name = name
        self._exposure_info = exposure
        self._cap = cap  # in the control's units (100 µs)
        self._gain_info = gain
        self._saved = saved  # the camera's own settings, put back by restore()
        # it starts from where the camera's own auto-exposure left it, under the cap
        self.exposure = exposure.clamp(min(saved[CID_EXPOSURE_ABSOLUTE], cap))
        self.gain = saved[CID_GAIN] if gain is not None else 0
        self._frames = 0
        self.steps = 0
        self.failed = False

    @classmethod
    def take_over(cls, controls: Controls, name: str, max_exposure_us: int) -> KioskExposure | None:
        """Switches the camera to manual exposure under the cap; None (logged) if it cannot be."""
        saved: dict[int, int] = {}
        try:
            mode = controls.query(CID_EXPOSURE_AUTO)
            exposure = controls.query(CID_EXPOSURE_ABSOLUTE)
            if mode is None or exposure is None or not (mode.writable and exposure.writable):
                log.warning(
                    "%s: the camera has no manual exposure; its own auto-exposure is used, "
                    "uncapped (a moving hand may blur in dim light)",
                    name,
                )
                return None
            gain = controls.query(CID_GAIN)
            gain = gain if gain is not None and gain.writable else None
            priority = controls.query(CID_EXPOSURE_AUTO_PRIORITY)
            saved[CID_EXPOSURE_AUTO] = controls.get(CID_EXPOSURE_AUTO)
            saved[CID_EXPOSURE_ABSOLUTE] = controls.get(CID_EXPOSURE_ABSOLUTE)
            if gain is not None:
                saved[CID_GAIN] = controls.get(CID_GAIN)
            controls.set(CID_EXPOSURE_AUTO, EXPOSURE_MANUAL)
            if priority is not None and priority.writable:
                # manual exposure must not slow the frame rate down either
                saved[CID_EXPOSURE_AUTO_PRIORITY] = controls.get(CID_EXPOSURE_AUTO_PRIORITY)
                controls.set(CID_EXPOSURE_AUTO_PRIORITY, 0)
            cap = exposure.clamp(max(1, max_exposure_us // EXPOSURE_UNIT_US))
            kiosk = cls(controls, name, exposure=exposure, cap=cap, gain=gain, saved=saved)
            controls.set(CID_EXPOSURE_ABSOLUTE, kiosk.exposure)
        except OSError as e:
            log.warning(
                "%s: manual exposure refused (%s); the camera's own auto-exposure is used, "
                "uncapped",
                name,
                why(e),
            )
            # whatever was changed before the refusal goes back (its automatic mode above all)
            teardown(f"{name}: restore the camera's own exposure", partial(_put_back, controls,
                                                                          saved))
            return None
        log.info(
            "%s: the kiosk's auto-exposure, shutter capped at %.1f ms (exposure %d..%d x100 us%s)",
            name,
            cap * EXPOSURE_UNIT_US / 1000,
            exposure.minimum,
            exposure.maximum,
            f", gain {gain.minimum}..{gain.maximum}" if gain is not None else ", no gain control",
        )
        return kiosk

    @property
    def gain_max(self) -> int | None:
        """The gain control's maximum (None: the camera has no gain control)."""
        return None if self._gain_info is None else self._gain_info.maximum

    @property
    def cap(self) -> int:
        """The longest exposure the kiosk sets, in the control's units (100 µs)."""
        return self._cap

    def observe(self, luma: Grey) -> None:
        """Meters every PERIOD-th frame and steps the exposure or the gain towards the target."""
        if self.failed:
            return
        self._frames += 1
        if self._frames % PERIOD:
            return
        ratio = TARGET / meter(luma)
        if abs(math.log(ratio)) <= math.log(1 + BAND):
            return
        # damped: a step goes most of the way, the next frames show the rest
        ratio = min(MAX_STEP, max(1 / MAX_STEP, ratio**0.75))
        try:
            if ratio > 1:
                self._brighter(ratio)
            else:
                self._darker(ratio)
        except OSError as e:
            # an unplugged camera shows in read(); here the frames go on as exposed now
            self.failed = True
            log.warning(
                "%s: exposure control failed (%s); exposure left as it is", self._name, why(e)
            )

    def _brighter(self, ratio: float) -> None:
        if self.exposure < self._cap:
            self._set_exposure(min(self._cap, max(self.exposure + 1, round(self.exposure * ratio))))
        elif self._gain_info is not None and self.gain < self._gain_info.maximum:
            self._set_gain(self.gain + self._gain_step(ratio))

    def _darker(self, ratio: float) -> None:
        if self._gain_info is not None and self.gain > self._gain_info.minimum:
            self._set_gain(self.gain - self._gain_step(1 / ratio))
        elif self.exposure > self._exposure_info.minimum:
            self._set_exposure(min(self.exposure - 1, round(self.exposure * ratio)))

    def _gain_step(self, ratio: float) -> int:
        # a UVC gain's unit is the maker's: a share of its range, as large as the error
        info = self._gain_info
        assert info is not None
        span = info.maximum - info.minimum
        return max(info.step, 1, round(span * (ratio - 1) / 4))

    def _set_exposure(self, value: int) -> None:
        value = self._exposure_info.clamp(min(value, self._cap))
        if value != self.exposure:
            self._controls.set(CID_EXPOSURE_ABSOLUTE, value)
            self.exposure = value
            self.steps += 1

    def _set_gain(self, value: int) -> None:
        assert self._gain_info is not None
        value = self._gain_info.clamp(value)
        if value != self.gain:
            self._controls.set(CID_GAIN, value)
            self.gain = value
            self.steps += 1

    def restore(self) -> None:
        """Puts the camera's own settings back (its automatic mode last) for the next user."""
        # the first refusal ends it (an unplugged camera refuses them all): one warning
        teardown(f"{self._name}: restore the camera's own exposure",
                 partial(_put_back, self._controls, self._saved))


def _put_back(controls: Controls, saved: dict[int, int]) -> None:
    """Sets the saved values again, the automatic mode last; the first refusal raises."""
    for cid in (CID_GAIN, CID_EXPOSURE_ABSOLUTE, CID_EXPOSURE_AUTO_PRIORITY, CID_EXPOSURE_AUTO):
        if cid in saved:
            controls.set(cid, saved[cid])
