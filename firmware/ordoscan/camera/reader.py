"""The newest-frame reader: a camera read on its own thread, a slot of one, reopen on loss."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ordoscan.backoff import Backoff
from ordoscan.camera.base import Frame, FrameSource, release_frame, stall_message, why
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.errors import CameraError
from ordoscan.lifecycle import Service

log = logging.getLogger("ordoscan.camera")



@dataclass(frozen=True, slots=True)
class ReaderStats:
    """Counters of a LatestFrameReader, for telemetry."""

    frames: int  # frames read from the source
    dropped: int  # frames replaced by a newer one before anyone took them
    reopens: int  # times the source was closed after a failure and opened again
    ok: bool  # the camera state last reported
    message: str
    last_frame_at: float | None  # Clock.monotonic() of the last frame, None before the first


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
        clock: Clock = SYSTEM_CLOCK,
        backoff_first_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        read_timeout_s: float = 0.25,
        release_grace_s: float = 2.0,
    ) -> None:
        self._source = source
        self._stall = stall_timeout_s
        self._on_state = on_state
        self._clock = clock
        self._backoff = Backoff(backoff_first_s, backoff_cap_s)
        self._read_timeout = read_timeout_s
        self._grace = release_grace_s
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._given: Frame | None = None  # the frame the analysis thread holds
        self._consumer_clear = True  # its last get() returned None: it holds no frame
        self._awaiting_release = False  # a lost source waits for the analysis to let go
        self._paused = True  # between a loss and the next open: no frames
        self._is_open = False
        self._thread: threading.Thread | None = None
        self._frames = 0
        self._dropped = 0
        self._reopens = 0
        self._last_frame_at: float | None = None
        self._state: tuple[bool, str] | None = None

        self._live = bool(getattr(source, "live", True))

    @property
    def _name(self) -> str:
        # asked each time: a camera learns its model only once open
        return str(getattr(self._source, "name", type(self._source).__name__))

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

    def waiting(self) -> bool:
        """A frame newer than the one the analysis holds waits in the slot (any thread)."""
        return self._slot is not None

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
            log.warning("%s: releasing frame %d failed: %s", self._name, frame.index, why(e))

    @property
    def last_frame_at(self) -> float | None:
        """Clock.monotonic() of the last frame's arrival (for the watchdog); None before one."""
        return self._last_frame_at

    @property
    def awaiting_release(self) -> bool:
        """True while a lost source's close waits for the analysis to give its frame back."""
        return self._awaiting_release

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
                self._clock.wait(self._stop, self._backoff.next())  # ends early on stop()
            return
        frame, failure = self._read_once()
        if failure is not None:
            self._lost(failure)
            self._is_open = False
            self._clock.wait(self._stop, self._backoff.next())  # ends early on stop()
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
            return None, f"{self._name}: read failed: {why(e)}"
        if frame is None and self._live and self._last_frame_at is not None:
            silent = self._clock.monotonic() - self._last_frame_at
            if silent > self._stall:
                return None, stall_message(self._source, self._name, silent)
        return frame, None

    def _open(self) -> bool:
        try:
            self._source.open()
        except CameraError as e:
            self._report(False, str(e))
            return False
        except Exception as e:
            log.exception("%s: open failed", self._name)
            self._report(False, f"{self._name}: open failed: {why(e)}")
            return False
        with self._cond:
            self._paused = False
        # the stall clock starts at the open: a camera that never gives a frame is lost too
        self._last_frame_at = self._clock.monotonic()
        self._report(True, f"{self._name}: open")
        return True

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            old, self._slot = self._slot, frame
            self._frames += 1
            self._last_frame_at = self._clock.monotonic()
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
            self._awaiting_release = not self._consumer_clear
            let_go = self._cond.wait_for(
                lambda: self._consumer_clear or self._stop.is_set(), self._grace
            )
            self._awaiting_release = False
            if not let_go:
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
            log.warning("%s: close failed: %s", self._name, why(e))

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
