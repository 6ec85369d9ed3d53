"""A V4L2 device's controls (exposure, gain...) by ioctl, beside the capture OpenCV holds.

OpenCV's property API scales and renames the V4L2 controls differently across
versions and says nothing when a value is refused; the kernel's own calls
(VIDIOC_QUERYCTRL, VIDIOC_G_CTRL, VIDIOC_S_CTRL) give the ranges and the errors.
V4L2 lets a second file descriptor of the same device set controls while
another one streams, as `v4l2-ctl` does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from typing import Protocol


def _iowr(kind: str, number: int, size: int) -> int:
    # linux/ioctl.h's generic encoding (x86 and arm64 alike): read-write, size, type, number
    return (3 << 30) | (size << 16) | (ord(kind) << 8) | number


# struct v4l2_queryctrl: id, type, name[32], minimum, maximum, step, default_value, flags,
# reserved[2]; struct v4l2_control: id, value (linux/videodev2.h)
_QUERYCTRL = struct.Struct("=II32siiiiI2I")
_CONTROL = struct.Struct("=Ii")
VIDIOC_G_CTRL = _iowr("V", 27, _CONTROL.size)
VIDIOC_S_CTRL = _iowr("V", 28, _CONTROL.size)
VIDIOC_QUERYCTRL = _iowr("V", 36, _QUERYCTRL.size)

# control ids (linux/v4l2-controls.h)
CID_GAIN = 0x00980913
CID_EXPOSURE_AUTO = 0x009A0901  # a menu: EXPOSURE_MANUAL, EXPOSURE_APERTURE_PRIORITY...
CID_EXPOSURE_ABSOLUTE = 0x009A0902  # in units of 100 µs
CID_EXPOSURE_AUTO_PRIORITY = 0x009A0903  # 1: the camera may lower the frame rate to expose longer
EXPOSURE_MANUAL = 1
EXPOSURE_APERTURE_PRIORITY = 3  # a UVC camera's automatic mode
EXPOSURE_UNIT_US = 100

FLAG_DISABLED = 0x0001
FLAG_READ_ONLY = 0x0004


@dataclass(frozen=True)
class ControlInfo:
    """One control's name and range, as the driver reports it."""

    id: int
    name: str
    minimum: int
    maximum: int
    step: int
    default: int
    flags: int

    @property
    def writable(self) -> bool:
        """Whether a value can be set at all (not disabled, not read-only)."""
        return not self.flags & (FLAG_DISABLED | FLAG_READ_ONLY)

    def clamp(self, value: int) -> int:
        """The value brought into the range, on the control's step."""
        value = max(self.minimum, min(self.maximum, value))
        step = max(1, self.step)
        return self.minimum + (value - self.minimum) // step * step


class Controls(Protocol):
    """What the kiosk's auto-exposure needs of a camera's controls."""

    def query(self, cid: int) -> ControlInfo | None:
        """The control's range, or None if the camera has no such control."""

    def get(self, cid: int) -> int:
        """The control's current value (OSError if the camera refuses)."""

    def set(self, cid: int, value: int) -> None:
        """Sets the control (OSError if the camera refuses)."""

    def close(self) -> None:
        """Lets go of the device."""


class DeviceControls:
    """The controls of a V4L2 device node, on a file descriptor of their own."""

    def __init__(self, device: str) -> None:
        self.device = device
        # O_NONBLOCK: opening a capture node must never wait on the stream OpenCV holds
        self._fd: int | None = os.open(device, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def _ioctl(self, request: int, buffer: bytearray) -> None:
        if self._fd is None:
            raise OSError(errno.EBADF, f"{self.device}: controls closed")
        fcntl.ioctl(self._fd, request, buffer, True)

    def query(self, cid: int) -> ControlInfo | None:
        buffer = bytearray(_QUERYCTRL.size)
        _QUERYCTRL.pack_into(buffer, 0, cid, 0, b"", 0, 0, 0, 0, 0, 0, 0)
        try:
            self._ioctl(VIDIOC_QUERYCTRL, buffer)
        except OSError as e:
            if e.errno == errno.EINVAL:  # the driver's answer for a control it does not have
                return None
            raise
        got, _kind, name, low, high, step, default, flags, _r0, _r1 = _QUERYCTRL.unpack(buffer)
        if got != cid:
            return None
        text = name.split(b"\0", 1)[0].decode("ascii", "replace")
        return ControlInfo(cid, text, low, high, step, default, flags)

    def get(self, cid: int) -> int:
        buffer = bytearray(_CONTROL.pack(cid, 0))
        self._ioctl(VIDIOC_G_CTRL, buffer)
        return int(_CONTROL.unpack(buffer)[1])

    def set(self, cid: int, value: int) -> None:
        self._ioctl(VIDIOC_S_CTRL, bytearray(_CONTROL.pack(cid, value)))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
