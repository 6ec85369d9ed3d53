"""The Raspberry Pi rig: the real camera facing a display, the outputs looped back to inputs.

Wiring and placement: docs/HIL.md. On the Pi the test process itself

- shows each scene full screen on the display through the Linux framebuffer
  (/dev/fb0: Raspberry Pi OS Lite has no desktop, and nothing more is needed);
- reads the LED and buzzer pins, each wired to an input pin through a
  resistor, with gpiozero (lgpio) edge callbacks stamped with time.monotonic(),
  the clock the decoder of tests.hil.signals expects;
- runs its own mosquitto and the real `ordoscan run` with the lgpio pin
  factory and the configured camera.

Everything else (broker, outages, network cuts, SIGKILL, small disk) is
DaemonRig's, shared with the virtual rig. The rig's own settings (camera,
display, loop-back pins) come from the TOML file named by
ORDOSCAN_HIL_PI_CONFIG, each key with a default that matches docs/HIL.md.
"""

from __future__ import annotations

import os
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.hil.rig import OUTPUT_PINS, DaemonRig, Grey, Unsupported
from tests.hil.signals import CHANNELS, Change

CONFIG_ENV = "ORDOSCAN_HIL_PI_CONFIG"
# Input pins wired to the outputs (BCM), the defaults of docs/HIL.md.
LOOPBACK_PINS = {"green": 5, "amber": 6, "red": 13, "buzzer": 19}
DISPLAY_SETTLE_S = 0.2  # a frame drawn, the screen refreshed and the camera exposed


@dataclass(frozen=True)
class PiRigConfig:
    camera_source: str = "picamera2"  # picamera2 | v4l2
    camera_size: tuple[int, int] = (1280, 720)
    camera_fps: float = 15.0
    camera_device: str = "/dev/video0"  # v4l2 only
    usb_port: str = ""  # v4l2: the camera's USB port in sysfs (e.g. "1-1.3"), for unplugging
    framebuffer: str = "/dev/fb0"
    loopback: dict[str, int] = field(default_factory=lambda: dict(LOOPBACK_PINS))

    @classmethod
    def load(cls, path: str | None) -> PiRigConfig:
        if not path:
            return cls()
        data = tomllib.loads(Path(path).read_text())
        cam, disp = data.get("camera", {}), data.get("display", {})
        size = cam.get("size", (1280, 720))
        loop = dict(LOOPBACK_PINS) | {k: int(v) for k, v in data.get("loopback", {}).items()}
        unknown = set(loop) - set(CHANNELS)
        if unknown:
            raise ValueError(f"{path}: [loopback] knows only {', '.join(CHANNELS)}")
        return cls(
            camera_source=cam.get("source", "picamera2"),
            camera_size=(int(size[0]), int(size[1])),
            camera_fps=float(cam.get("fps", 15.0)),
            camera_device=cam.get("device", "/dev/video0"),
            usb_port=cam.get("usb_port", ""),
            framebuffer=disp.get("framebuffer", "/dev/fb0"),
            loopback=loop,
        )


def pi_unavailable() -> str | None:
    """Why the Pi rig cannot run on this machine, or None if it can."""
    try:
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\0\n ")
    except OSError:
        model = ""
    if "Raspberry Pi" not in model:
        return f"not a Raspberry Pi (device-tree model: {model or 'none'}); see docs/HIL.md"
    try:
        import lgpio  # noqa: F401
    except ImportError:
        return "python3-lgpio is not importable (make the venv with --system-site-packages)"
    cfg = PiRigConfig.load(os.environ.get(CONFIG_ENV))
    if not Path(cfg.framebuffer).exists():
        return f"no framebuffer at {cfg.framebuffer}: is the display connected?"
    return None


# -- the display ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramebufferGeometry:
    width: int
    height: int
    bits_per_pixel: int  # 16 (RGB565) or 32 (XRGB8888)
    stride: int  # bytes per line

    @classmethod
    def of(cls, device: str) -> FramebufferGeometry:
        sysfs = Path("/sys/class/graphics") / Path(device).name
        w, h = (int(v) for v in (sysfs / "virtual_size").read_text().strip().split(","))
        bpp = int((sysfs / "bits_per_pixel").read_text())
        stride = int((sysfs / "stride").read_text())
        return cls(w, h, bpp, stride)


def framebuffer_bytes(image: Grey, geo: FramebufferGeometry) -> bytes:
    """The grey image scaled to fit the screen, centred on black, in the framebuffer's format."""
    if geo.bits_per_pixel not in (16, 32):
        raise ValueError(f"unsupported framebuffer depth: {geo.bits_per_pixel} bits per pixel")
    h, w = image.shape
    scale = min(geo.width / w, geo.height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    screen = np.zeros((geo.height, geo.width), dtype=np.uint8)
    x0, y0 = (geo.width - size[0]) // 2, (geo.height - size[1]) // 2
    screen[y0:y0 + size[1], x0:x0 + size[0]] = scaled
    g = screen.astype(np.uint32)
    if geo.bits_per_pixel == 16:
        pixels = (((g >> 3) << 11) | ((g >> 2) << 5) | (g >> 3)).astype("<u2")
    else:
        pixels = ((g << 16) | (g << 8) | g).astype("<u4")
    row = geo.width * pixels.itemsize
    out = np.zeros((geo.height, geo.stride), dtype=np.uint8)
    out[:, :row] = pixels.view(np.uint8).reshape(geo.height, row)
    return out.tobytes()


class FramebufferDisplay:
    """Draws grey pictures full screen on a Linux framebuffer device (or any file)."""

    def __init__(self, device: str, geometry: FramebufferGeometry | None = None) -> None:
        self.device = device
        self.geometry = geometry or FramebufferGeometry.of(device)
        self._fd = os.open(device, os.O_RDWR)

    def show(self, image: Grey) -> None:
        os.pwrite(self._fd, framebuffer_bytes(image, self.geometry), 0)

    def close(self) -> None:
        os.close(self._fd)


# -- the loop-backs ------------------------------------------------------------------------------


class LoopbackRecorder:
    """Edges of the input pins wired to the kiosk's outputs, as tests.hil.signals changes."""

    def __init__(self, pins: dict[str, int]) -> None:
        from gpiozero.pins.lgpio import LGPIOFactory

        self._factory = LGPIOFactory()
        self._lock = threading.Lock()
        self.changes: list[Change] = []
        self._pins = []
        for channel, bcm in pins.items():
            pin = self._factory.pin(bcm)
            pin.function = "input"
            pin.pull = "down"  # an output released by a dead daemon reads as off
            pin.edges = "both"
            pin.bounce = None
            pin.when_changed = self._callback(channel)
            if pin.state:
                self._add(channel, True)
            self._pins.append(pin)

    def _callback(self, channel: str) -> Any:
        def changed(_ticks: int, state: int) -> None:
            self._add(channel, bool(state))

        return changed

    def _add(self, channel: str, on: bool) -> None:
        with self._lock:
            self.changes.append(Change(time.monotonic(), channel, on))

    def snapshot(self) -> list[Change]:
        with self._lock:
            return list(self.changes)

    def close(self) -> None:
        for pin in self._pins:
            pin.when_changed = None
            pin.close()
        self._factory.close()


class PiRig(DaemonRig):
    """The real camera facing a display, outputs looped back to inputs, a real broker."""

    name = "pi"

    def __init__(self, workdir: Path) -> None:
        self.cfg = PiRigConfig.load(os.environ.get(CONFIG_ENV))
        self.scene_size = self.cfg.camera_size
        super().__init__(workdir)
        self.display = FramebufferDisplay(self.cfg.framebuffer)
        self.recorder = LoopbackRecorder(self.cfg.loopback)
        self._blank = np.full((self.scene_size[1], self.scene_size[0]), 128, dtype=np.uint8)
        self.display.show(self._blank)

    def _camera_config(self) -> dict[str, Any]:
        return {"source": self.cfg.camera_source, "size": list(self.cfg.camera_size),
                "fps": self.cfg.camera_fps, "device": self.cfg.camera_device}

    def _gpio_config(self) -> dict[str, Any]:
        # an active buzzer: a tonal one would toggle its loop-back input at audio rate
        return {"pin_factory": "lgpio", "buzzer_type": "active", **OUTPUT_PINS}

    def show(self, image: Grey) -> None:
        self.display.show(image)
        time.sleep(DISPLAY_SETTLE_S)

    def blank(self) -> None:
        self.display.show(self._blank)

    def signals(self) -> list[Change]:
        return sorted([*self.recorder.snapshot(), *self._markers], key=lambda c: c.t)

    def _usb_authorized(self, value: str) -> None:
        if not self.cfg.usb_port:
            raise Unsupported(
                "camera lost needs a USB camera with [camera] usb_port set in "
                f"${CONFIG_ENV}: a CSI camera cannot be unplugged by a test"
            )
        Path(f"/sys/bus/usb/devices/{self.cfg.usb_port}/authorized").write_text(value)

    def camera_unplug(self) -> None:
        self._usb_authorized("0")  # the kernel drops the device, as if the cable were pulled
        self.injected["camera unplug"] += 1

    def camera_replug(self) -> None:
        self._usb_authorized("1")

    def close(self) -> None:
        super().close()
        self.recorder.close()
        self.display.close()
