#!/usr/bin/python3
"""A camera for the virtual kiosk: scene pictures played into a v4l2loopback device.

Runs in the test image (unit kiosk-camfeed.service, before ordoscan.service).
It opens the loopback device as its writer, sets a YUYV format (the one the
kiosk's v4l2 source prefers) and writes frames at a steady rate, as a USB camera
streams: a blank counter, or the picture put in front of it. Pictures come as
PNG files into a folder (each renamed in whole, as the tests' `feed` does); each
is shown for HOLD_S seconds, in name order, then the counter is blank for GAP_S
(the code leaves the view) and the file is deleted.

    camfeed.py DEVICE FOLDER WIDTH HEIGHT FPS HOLD_S GAP_S
"""

import fcntl
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

VIDIOC_S_FMT = 0xC0D05605  # _IOWR('V', 5, struct v4l2_format): 208 bytes on 64-bit
V4L2_BUF_TYPE_VIDEO_OUTPUT = 2
V4L2_FIELD_NONE = 1
V4L2_COLORSPACE_SRGB = 8
YUYV = int.from_bytes(b"YUYV", "little")
BLANK_Y = 200  # a light counter top, no code on it


def set_format(fd: int, width: int, height: int) -> None:
    pix = struct.pack("12I", width, height, YUYV, V4L2_FIELD_NONE, width * 2, width * height * 2,
                      V4L2_COLORSPACE_SRGB, 0, 0, 0, 0, 0)
    fmt = struct.pack("I4x", V4L2_BUF_TYPE_VIDEO_OUTPUT) + pix.ljust(200, b"\0")
    fcntl.ioctl(fd, VIDIOC_S_FMT, bytearray(fmt))


def yuyv(luma: np.ndarray) -> bytes:
    """Packed 4:2:2 with the picture as Y and neutral chroma."""
    out = np.full((luma.shape[0], luma.shape[1] * 2), 128, dtype=np.uint8)
    out[:, 0::2] = luma
    return out.tobytes()


def picture(path: Path, width: int, height: int) -> bytes | None:
    try:
        with Image.open(path) as im:
            grey = im.convert("L")
            if grey.size != (width, height):
                grey = grey.resize((width, height))
            return yuyv(np.asarray(grey, dtype=np.uint8))
    except (OSError, ValueError) as e:
        print(f"camfeed: {path.name}: not a picture ({e})", file=sys.stderr, flush=True)
        return None


def main() -> None:
    device, folder = sys.argv[1], Path(sys.argv[2])
    width, height = int(sys.argv[3]), int(sys.argv[4])
    period, hold, gap = 1 / float(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(device, os.O_RDWR)
    set_format(fd, width, height)
    blank = yuyv(np.full((height, width), BLANK_Y, dtype=np.uint8))
    frame, until, showing = blank, 0.0, None  # showing: the file in view, until its end
    print(f"camfeed: {device} {width}x{height} YUYV at {1 / period:g} fps, following {folder}",
          flush=True)
    os.write(fd, blank)
    subprocess.run(["systemd-notify", "--ready"], check=False)  # a capture device from now on
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= until:
            if showing is not None:  # its time is over: blank for gap, then the next one
                showing.unlink(missing_ok=True)
                showing, frame, until = None, blank, now + gap
            else:
                waiting = sorted(p for p in folder.glob("*.png") if not p.name.startswith("."))
                if waiting:
                    showing = waiting[0]
                    shown = picture(showing, width, height)
                    frame, until = (shown, now + hold) if shown is not None else (blank, now)
                    print(f"camfeed: showing {showing.name}", flush=True)
        os.write(fd, frame)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic() - period)


if __name__ == "__main__":
    main()
