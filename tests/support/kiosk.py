"""A whole kiosk under test: its config, scenes put in front of its replay camera,
its mock pins, the daemon as a child process, and what the process listens on.

Scenes come from ordoscan.devtools.scenes (seeded, so the same pictures every run) and
are dropped into the folder the replay camera follows, one file per frame:
written as a dot-file, then renamed, so the camera never sees half a file.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gpiozero.pins.mock import MockFactory, MockPin
from ordoscan.app import App
from ordoscan.config import Config, parse_config, to_toml
from ordoscan.devtools.frames import FrameCounter
from ordoscan.devtools.scenes import Scene, render
from ordoscan.feedback import BEEP_S, GOOD_READ_DIP_S, REFUSED_GAP_S, REFUSED_RED_S
from PIL import Image

from tests.support.pins import InstantPin
from tests.support.pins import assert_timeline as timeline
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "kiosk-e2e"
SITE = "pharmacie-e2e"
PREFIX = f"pharmacy/{SITE}/kiosk/{DEVICE}"


def kiosk_data(tmp: Path, port: int, **sections: dict[str, Any]) -> dict[str, Any]:
    """A desk kiosk: replay from tmp/camera (followed), mock GPIO, plaintext loopback MQTT."""
    data: dict[str, Any] = {
        "device": {"id": DEVICE, "site": SITE},
        "camera": {"source": "replay", "path": str(tmp / "camera"), "fps": 15},
        "scan": {"same_code_timeout_s": 0.5},
        "gpio": {"pin_factory": "mock"},
        "mqtt": {"host": "127.0.0.1", "port": port, "tls": False, "keepalive_s": 5,
                 "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "telemetry_interval_s": 0},
        "outbox": {"path": str(tmp / "outbox" / "outbox.sqlite3")},
        "log": {"level": "debug"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    (tmp / "camera").mkdir(parents=True, exist_ok=True)
    return data


def kiosk_config(tmp: Path, port: int, **sections: dict[str, Any]) -> Config:
    return parse_config(kiosk_data(tmp, port, **sections), "<test>", env={})


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.write_text(to_toml(data))
    return path


@lru_cache(maxsize=32)
def scene(kind: str, seed: int) -> Scene:
    """A rendered scene, once per test session (rendering takes a fraction of a second)."""
    return render(kind, seed)


def payloads(s: Scene, kind: str) -> list[str]:
    """The payloads of one kind of code truly in a scene."""
    return [p for k, p in s.truth if k.value == kind]


class Camera:
    """The replay folder: each shown scene is one new file, hence one frame."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def show(self, s: Scene | npt.NDArray[np.uint8], label: str = "") -> Path:
        self.count += 1
        if isinstance(s, Scene):
            label = label or f"{s.kind}-{s.seed}"
        name = f"{self.count:03d}-{label or 'frame'}.png"
        hidden = self.folder / f".{name}"
        if isinstance(s, Scene):
            s.save(hidden)
        else:
            Image.fromarray(s).save(hidden, format="PNG")
        final = self.folder / name
        hidden.rename(final)
        return final


class Daemon:
    """`ordoscan run --config PATH` as a child process; its stderr lines are collected."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ordoscan", "run", "--config", str(config)],
            cwd=ROOT, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._read, args=(s,), daemon=True)
                         for s in (self.proc.stdout, self.proc.stderr)]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str] | None:
        """The first log line matching pattern (a regex), waiting for it."""
        rx = re.compile(pattern)
        found: list[re.Match[str]] = []

        def look() -> bool:
            with self._lock:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        found.append(m)
                        return True
            return self.proc.poll() is not None

        wait_until(look, timeout, every=0.05)
        return found[0] if found else None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for t in self._readers:
            t.join(5)


# -- an App in this process, its pins ---------------------------------------------------------

CHANNELS = ("green", "amber", "red", "buzzer")
GAP_S = 0.9  # between two scenes: more than same_code_timeout_s (0.5 s), so codes leave view

Expected = list[tuple[bool, float | None]]  # (state, seconds since the previous change); None: any


def assert_pin(name: str, pin: MockPin, expected: Expected, *, first: bool = False) -> None:
    """The pin went through exactly these states (first=True: began with them, for a
    blinking pin), with these durations between changes (never early; late by at most
    what a loaded machine may cost, tests/support/pins.py)."""
    states = list(pin.states)
    if first:
        states = states[: len(expected)]
    assert [bool(s.state) for s in states] == [st for st, _ in expected], (
        f"{name}: states {[(round(s.timestamp, 3), s.state) for s in states]}"
    )
    # the first step is the state at clear_states(): its time is nothing to check
    steps = [(t if i else None, st) for i, (st, t) in enumerate(expected)]
    timeline(_Prefix(states), steps)


class _Prefix:
    """The first states of a pin, for a blinking pin checked on its beginning only."""

    def __init__(self, states: list[Any]) -> None:
        self.states = states


def steady(on: bool) -> Expected:
    return [(on, 0.0)]


GOOD_READ = {
    "green": [(True, 0.0), (False, None), (True, GOOD_READ_DIP_S)],
    "amber": steady(False),
    "red": steady(False),
    "buzzer": [(False, 0.0), (True, None), (False, BEEP_S)],
}
REFUSED = {
    "green": steady(True),
    "amber": steady(False),
    "red": [(False, 0.0), (True, None), (False, REFUSED_RED_S)],
    "buzzer": [(False, 0.0), (True, None), (False, BEEP_S), (True, REFUSED_GAP_S), (False, BEEP_S)],
}
NOTHING = {"green": steady(True), "amber": steady(False), "red": steady(False),
           "buzzer": steady(False)}


@dataclass
class Kiosk:
    """The App under test with what the test looks at."""

    app: App
    pins: dict[str, MockPin]
    camera: Camera
    tmp: Path
    frames: FrameCounter
    last_shown: float = 0.0

    def show(self, kind: str, seed: int, label: str = "") -> None:
        """One frame of a scene; waits until it is handled and its signals are over."""
        self.show_image(scene(kind, seed), label or f"{kind}-{seed}")

    def show_image(
        self, image: Scene | npt.NDArray[np.uint8], label: str, *, settle: bool = True
    ) -> None:
        """One frame of any picture, as show(); settle=False for a signal that lasts (a fault)."""
        wait = GAP_S - (time.monotonic() - self.last_shown)
        if wait > 0:
            time.sleep(wait)  # spacing, not a timing assertion: codes must leave the view
        for pin in self.pins.values():
            pin.clear_states()
        before = self.frames.count
        self.camera.show(image, label)
        self.last_shown = time.monotonic()
        wait_until(lambda: self.frames.count > before, 30, f"{label}: a frame handled")
        assert self.app.feedback is not None
        if settle:
            assert self.app.feedback.wait_idle(15), "the feedback never settled"

    def assert_signals(self, expected: dict[str, Expected]) -> None:
        for name in CHANNELS:
            assert_pin(name, self.pins[name], expected[name])


def start_kiosk(tmp: Path, port: int, app_options: dict[str, Any] | None = None,
                **sections: dict[str, Any]) -> Kiosk:
    """The App started on the test's broker and a folder camera (`app_options`: more of the
    App's keyword arguments; `sections`: the config's, over kiosk_data's)."""
    factory = MockFactory(pin_class=InstantPin)
    cfg = kiosk_config(tmp, port, **sections)
    frames = FrameCounter()
    app = App(cfg, pin_factory=factory, on_frame=frames, **(app_options or {}))
    app.start()
    pins = {name: factory.pin(getattr(cfg.gpio, name)) for name in CHANNELS}
    return Kiosk(app, pins, Camera(tmp / "camera"), tmp, frames)


def wait_ready(k: Kiosk) -> None:
    """The camera is open and the boot signals are over."""
    assert wait_until(lambda: k.app.status()["camera"] in ("ok", "idle"), 30)
    assert k.app.feedback is not None and k.app.feedback.wait_idle(15)


# -- sockets a process listens on --------------------------------------------------------

_TCP_LISTEN = "0A"
_UNIX_ACCEPTCON = 0x10000


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def listening_sockets(pid: int) -> list[str]:
    """Every socket of the process that accepts connections or datagrams from others.

    TCP in LISTEN state, UDP bound to a port and not connected (it receives from
    anyone), and Unix sockets that accept connections (flag __SO_ACCEPTCON);
    one line for each, saying what it is.
    """
    mine = _socket_inodes(pid)
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
            if inode not in mine:
                continue
            if proto.startswith("tcp") and state == _TCP_LISTEN:
                found.append(f"{proto} listening on {local}")
            elif proto.startswith("udp") and remote.endswith(":0000") and local[-5:] != ":0000":
                found.append(f"{proto} bound to {local}, open to any sender")
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        cols = line.split()
        flags, inode = int(cols[3], 16), int(cols[6])
        if inode in mine and flags & _UNIX_ACCEPTCON:
            found.append(f"unix socket accepting connections: {' '.join(cols[7:]) or '(unnamed)'}")
    return found


def socket_count(pid: int) -> int:
    """How many sockets the process holds (to prove the inspection sees them at all)."""
    return len(_socket_inodes(pid))
