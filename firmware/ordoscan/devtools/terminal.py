"""The demo's live view of the LEDs and the buzzer, drawn on one terminal line."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import TextIO

from ordoscan.feedback import CHANNELS, LEDS
from ordoscan.lifecycle import Service

VIEW_INTERVAL_S = 0.025  # sampling: short enough to show an 80 ms beep
STOP_TIMEOUT_S = 2.0

_COLORS = {"green": "32", "amber": "33", "red": "31"}


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class TerminalView(Service):
    """One live terminal line showing the LEDs and the buzzer, e.g. `● green  ○ amber  ○ red  ♪`."""

    def __init__(
        self,
        read: Callable[[], Mapping[str, bool]],
        stream: TextIO | None = None,
        *,
        interval: float = VIEW_INTERVAL_S,
        color: bool | None = None,
    ) -> None:
        self._read = read
        self._stream: TextIO = stream if stream is not None else sys.stdout
        isatty = getattr(self._stream, "isatty", None)
        self._tty = bool(isatty()) if callable(isatty) else False
        self._color = self._tty if color is None else color
        self._interval = interval
        unicode = _can_encode(self._stream, "●○♪")
        self._lit, self._unlit, self._note = ("●", "○", "♪") if unicode else ("(*)", "( )", "beep")
        self._lock = threading.Lock()
        self._last: dict[str, bool] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, states: Mapping[str, bool]) -> str:
        """The text of one line for these states."""
        parts = []
        for name in LEDS:
            mark = self._lit if states.get(name) else self._unlit
            if self._color and states.get(name):
                mark = f"\x1b[{_COLORS[name]}m{mark}\x1b[0m"
            parts.append(f"{mark} {name}")
        parts.append(self._note if states.get("buzzer") else " " * len(self._note))
        return "  ".join(parts)

    def refresh(self) -> bool:
        """Read the pins and redraw if anything changed; True if it did."""
        try:
            raw = self._read()
            states = {c: bool(raw.get(c)) for c in CHANNELS}
        except Exception:  # the device is closing: keep the last line
            return False
        with self._lock:
            if states == self._last:
                return False
            self._last = states
            self._draw(states)
        return True

    def write_line(self, text: str) -> None:
        """Print a line of other output above the live line."""
        with self._lock:
            if self._tty:
                self._stream.write("\r\x1b[2K" + text + "\n")
                if self._last is not None:
                    self._stream.write(self.line(self._last))
            else:
                self._stream.write(text + "\n")
            self._stream.flush()

    def _draw(self, states: Mapping[str, bool]) -> None:
        text = self.line(states)
        if self._tty:
            self._stream.write("\r\x1b[2K" + text)
        else:  # a pipe or a file: one line per change
            self._stream.write(text.rstrip() + "\n")
        self._stream.flush()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="terminal-view", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()

    def _run(self) -> None:
        self.refresh()
        while not self._stop.wait(self._interval):
            self.refresh()
