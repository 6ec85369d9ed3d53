"""The virtual rig: a followed folder as the camera, a pin trace as the LEDs and buzzer.

- camera: the daemon's replay source follows a folder (camera.source =
  "replay"); a feeder thread drops one frame file into it every 1/FEED_FPS s,
  a hard link to the encoded picture of whatever `show()` put up last, so
  holding a scene costs nothing. The daemon reads faster than that, so
  frames never pile up, and frames older than 1.5 s are pruned. Unplugging the camera
  renames the folder away: the source can no longer list it (CameraLost).
- LEDs and buzzer: gpio.pin_factory = "mock" and ORDOSCAN_PIN_TRACE, so the
  daemon's mock pins append their changes to a file this rig reads. Each change
  is taken at the instant the feedback worker meant it for (`due`), not when a
  starved worker got round to the write; the lateness is kept apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from ordoscan.devtools.pintrace import PIN_TRACE_ENV
from ordoscan.devtools.scenes import render
from PIL import Image

from tests.hil.rig import OUTPUT_PINS, DaemonRig, Grey
from tests.hil.signals import Change

FEED_FPS = 10.0  # frames the "camera" delivers per second
READ_FPS = 20.0  # the daemon's replay pace: faster, so a backlog (after a restart) clears soon
# Frame files kept in the folder; older ones are deleted, read or not (a camera drops frames
# too): what the daemon sees is never more than this old.
KEEP_FRAMES = 15
SCENE_SIZE = (960, 540)  # codes, INS DataMatrix included, read reliably at this size
_BY_BCM = {pin: name for name, pin in OUTPUT_PINS.items()}


def trace_change(rec: dict[str, Any]) -> Change | None:
    """One line of the pin trace as a change of an output (None: some other pin).

    Its time is the instant the level belongs to when the daemon recorded it (`due`, see
    ordoscan.devtools.pintrace), so a write that a loaded machine delayed keeps the lengths
    of the signal; how late it was written is kept apart."""
    channel = _BY_BCM.get(int(rec["bcm"]))
    if channel is None:
        return None
    written = float(rec["t"])
    t = float(rec.get("due", written))
    return Change(t, channel, float(rec["value"]) > 0, late=max(0.0, written - t))


class FolderCamera:
    """A folder that the daemon's replay source follows, fed at FEED_FPS with the current scene."""

    def __init__(self, root: Path, blank: Grey) -> None:
        self.folder = root / "camera"
        self.unplugged = root / "camera.unplugged"
        self.store = root / "scenes"
        for d in (self.folder, self.store):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._scenes = 0
        self._frames = 0
        self._plugged = True
        self._stop = threading.Event()
        self._blank = self._encode(blank)
        self._current = self._blank
        self._thread = threading.Thread(target=self._run, name="folder-camera", daemon=True)
        self._thread.start()

    def _encode(self, image: Grey) -> Path:
        with self._lock:
            self._scenes += 1
            n = self._scenes
        path = self.store / f"scene-{n:06d}.png"
        tmp = self.store / f".scene-{n:06d}.png"
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
        os.replace(tmp, path)
        return path

    def show(self, image: Grey) -> None:
        path = self._encode(image)
        with self._lock:
            self._current = path

    def blank(self) -> None:
        with self._lock:
            self._current = self._blank

    def flush(self) -> None:
        """Drop the frames nobody read (the daemon is about to start: a camera has no past)."""
        with self._lock:
            for f in self.folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()

    def unplug(self) -> None:
        with self._lock:
            self._plugged = False
            os.rename(self.folder, self.unplugged)

    def replug(self) -> None:
        with self._lock:
            shutil.rmtree(self.unplugged)  # a camera comes back with fresh frames only
            self.folder.mkdir()
            self._plugged = True

    def _run(self) -> None:
        period = 1.0 / FEED_FPS
        while not self._stop.wait(period):
            with self._lock:
                if not self._plugged:
                    continue
                self._frames += 1
                n = self._frames
                # a hard link appears whole: the source never sees a half-written frame
                os.link(self._current, self.folder / f"{n:09d}.png")
                old = self.folder / f"{n - KEEP_FRAMES:09d}.png"
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class VirtualRig(DaemonRig):
    """gpiozero MockFactory pins (traced), a followed folder, real mosquitto, real daemon."""

    name = "virtual"
    scene_size = SCENE_SIZE

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.trace_path = self.workdir / "pins.jsonl"
        self.trace_path.touch()
        self._changes: list[Change] = []
        self._offset = 0
        self._partial = b""
        self._read_lock = threading.Lock()
        blank = render("blank", 1, size=SCENE_SIZE).image
        self.camera = FolderCamera(self.workdir, blank)

    def _camera_config(self) -> dict[str, Any]:
        return {"source": "replay", "path": str(self.camera.folder), "fps": READ_FPS,
                "size": list(SCENE_SIZE)}

    def _gpio_config(self) -> dict[str, Any]:
        return {"pin_factory": "mock", **OUTPUT_PINS}

    def _daemon_env(self) -> dict[str, str]:
        return super()._daemon_env() | {PIN_TRACE_ENV: str(self.trace_path)}

    def _before_start(self) -> None:
        self.camera.flush()

    def _trace_files(self) -> list[Path]:
        return [self.trace_path]

    # -- display
    def show(self, image: Grey) -> None:
        self.camera.show(image)

    def blank(self) -> None:
        self.camera.blank()

    # -- pins
    def signals(self) -> list[Change]:
        with self._read_lock:
            with open(self.trace_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
            self._offset += len(data)
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()  # a line still being written
            for line in lines:
                if not line.strip():
                    continue
                change = trace_change(json.loads(line))
                if change is not None:
                    self._changes.append(change)
            return sorted([*self._changes, *self._markers], key=lambda c: c.t)

    # -- camera faults
    def camera_unplug(self) -> None:
        self.camera.unplug()
        self.injected["camera unplug"] += 1

    def camera_replug(self) -> None:
        self.camera.replug()

    def close(self) -> None:
        super().close()
        self.camera.close()
