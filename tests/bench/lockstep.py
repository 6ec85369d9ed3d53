"""A camera on a virtual 15 fps timeline, in lockstep with the App's scan loop.

A real-time replay on a shared machine measures the machine's load as much as the
kiosk: the scan loop gets a share of a core, falls behind the camera and skips frames
a kiosk would have analysed. Here time is virtual:

- frame n is captured at v0 + n / fps (v0: the monotonic time at open);
- the scan loop takes a frame when it is free, at max(free, capture time): the newest
  frame captured by then, never one it has already had (the kiosk's slot of one);
- each turn of the scan loop (decode, classify, de-duplicate, commit, signal) advances
  virtual time by the CPU time the scan thread really spent on it (time.thread_time),
  times `scale` (1: this machine's core, unloaded; >1: a slower core);
- the decoder's budget and duty cycle count in the same time (`decode_clock()`), so
  what it spends and what the timeline charges are one quantity.

While a turn runs, `frame_waiting()` (on the scan thread) says whether the next frame has
been captured by now on that timeline, as the reader's slot does on a kiosk. Only one
frame is out at a time: the source hands the next one over once the scan loop
has finished the last (`on_frame`, the App's hook, called on the scan thread). The rest
of the App (feedback, outbox, publisher, housekeeping) runs on the system clock, for
real. A frame's zoom (its main stream, `zoom`) is the caller's: what it costs the scan
thread counts, what another thread spends while the scan thread waits for it does not.
Not in the virtual time: the disk's wait in the outbox commit (fsync, not CPU) and the
feedback thread's hop to the pins; both are measured apart, in real time.

A timeline is a list of presentations (frame ids, each followed by `gap` frames of the
empty counter, id 0); once a presentation's code is read (the App committed a scan)
the hand takes it away: the gap starts at the next frame, as a patient leaves after
the beep. The frames after a read would change nothing measured: the de-duplication
reads a code once per appearance, and a gap of 1 s refills the duty cycle's credit.

The timeline runs faster than real time (a turn takes its CPU time for real, its CPU
time x `scale` on the timeline), but the good-read signal (a 150 ms dip, a beep) plays
in real time: two scans 1.4 s apart on the timeline could come 0.1 s apart for real,
their signals overlapping (merged, or queued and skipped), which no kiosk would see. So before
a presentation's first frame the camera waits, in real time and off the timeline, for
`settle()` (the App's feedback to have shown everything): one signal per read, as on a
kiosk, where the gap alone lasts 1 s.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from ordoscan.camera import CameraSource, Frame, Zoom
from ordoscan.decoder.side import SideCore, Task

T = TypeVar("T")


@dataclass
class Shown:
    """One presentation on the timeline: what happened to it."""

    frames: Sequence[int]  # frame ids, in order
    start: int = -1  # global frame number of its first frame
    read_frame: int | None = None  # global number of the frame whose turn committed a scan
    # virtual time of the commit (the good-read signal): within the turn when the App says
    # so (stored()), else the turn's end
    read_at: float | None = None
    read_wall: float | None = None  # time.monotonic() then
    turns: int = 0  # frames of it the scan loop analysed


class LockstepCamera(CameraSource):
    """Frames on a virtual timeline, one turn of the scan loop at a time."""

    live = False  # no wall-clock stall: a slow turn on a loaded machine is not a lost camera

    def __init__(
        self,
        frames: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
        presentations: Sequence[Sequence[int]],
        *,
        gap: int,
        fps: float,
        start: threading.Event,
        committed: Callable[[], int],
        scale: float = 1.0,
        zoom: Callable[[int], Zoom | None] | None = None,
        settle: Callable[[], object] | None = None,
    ) -> None:
        """`zoom`, when given, gives a frame id's Frame.zoom (its main stream), or None;
        `settle`, when given, is waited for before each presentation (see the module)."""
        self._frames = frames
        self._settle = settle
        self._settled = -1  # the last presentation settle() was waited for
        self._zoom = zoom
        self.shown = [Shown(list(p)) for p in presentations]
        self._gap = gap
        self._fps = fps
        self._start = start
        self._committed = committed  # how many scans the App has committed so far
        self._scale = scale
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False  # a frame is out with the scan loop
        self._v0 = 0.0
        self._n = -1  # global number of the last frame handed over
        self._taken_at = 0.0  # virtual time the scan loop took it
        self._free = 0.0  # virtual time the scan loop is free again
        self._cpu: float | None = None  # the scan thread's CPU time at the end of its last turn
        self.waits = Waits()  # the scan thread's waits for the side core
        self._seen = 0  # scans committed, as of the last turn
        self._k = -1  # presentation on the timeline (-1: warm-up, before start)
        self._end = 0  # global frame number at which the current presentation's gap ends
        self.handled = 0  # turns of the scan loop, warm-up included
        self.turns = 0  # turns while the timeline ran
        self.cpu_s = 0.0  # the scan thread's CPU time over the turns, unscaled
        # per turn on the timeline: (frame number, frame id, taken at, turn length), virtual s
        self.trace: list[tuple[int, int, float, float]] = []
        self._fid = 0
        self.finished = threading.Event()
        self.side_core: LockstepSide | None = None

    @property
    def name(self) -> str:
        return "lockstep replay"

    def open(self) -> None:
        with self._cond:
            self._closing = False
            self._v0 = self._free = time.monotonic()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def decode_clock(self) -> float:
        """The decoder's clock: the calling (scan) thread's CPU time, scaled, and its waits
        for the side core (charge())."""
        return time.thread_time() * self._scale + self.waits.total

    def now(self) -> float:
        """On the scan thread, during a turn: the virtual time."""
        if self._cpu is None:
            return self._taken_at
        return self._taken_at + (time.thread_time() - self._cpu) * self._scale + self.waits.turn

    def side(self) -> LockstepSide:
        """A side core for the decoder, on this timeline (kept as `side_core`)."""
        self.side_core = LockstepSide(self.now, self.waits.charge, self._scale)
        return self.side_core

    def stored(self) -> None:
        """On the scan thread, when the App commits a scan (its on_stored observer): the
        presentation on the timeline is read now, within the turn (the kiosk signals a read
        as soon as the decoder has it, while the frame's other passes still run)."""
        with self._cond:
            if self._busy:
                self._read(self.now())

    def _read(self, at: float) -> Shown | None:
        """The presentation on the timeline (None: none), read at virtual time `at` by the
        frame out now if it was not read before."""
        if not 0 <= self._k < len(self.shown):
            return None
        p = self.shown[self._k]
        if p.read_frame is None and self._n >= p.start:
            p.read_frame, p.read_at, p.read_wall = self._n, at, time.monotonic()
        return p

    def frame_waiting(self) -> bool:
        """On the scan thread, during a turn: has the next frame been captured by now?"""
        with self._cond:
            if not self._busy or self._cpu is None:
                return False
            return self.now() >= self.capture_time(self._n + 1)

    def capture_time(self, n: int) -> float:
        return self._v0 + n / self._fps

    # -- the timeline ------------------------------------------------------------------------

    def _frame_id(self, n: int) -> tuple[int, int]:
        """(frame id, presentation index or -1) of global frame n; moves the timeline on."""
        if self._k < 0:
            if not self._start.is_set():
                return 0, -1
            self._begin(0, n)
        while self._k < len(self.shown):
            p = self.shown[self._k]
            offset = n - p.start
            if p.read_frame is None and offset < len(p.frames):
                return p.frames[offset], self._k
            if n < self._end:
                return 0, -1  # the empty counter between two presentations
            self._begin(self._k + 1, self._end)
        self.finished.set()
        return 0, -1

    def _begin(self, k: int, n: int) -> None:
        self._k = k
        if k < len(self.shown):
            p = self.shown[k]
            p.start = n
            self._end = n + len(p.frames) + self._gap

    # -- the camera side (reader thread) -----------------------------------------------------

    def read(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._busy or self._closing, timeout):
                return None
            if self._closing or self.finished.is_set():
                return None
            # the newest frame captured once the scan loop is free, never one it has had
            n = max(self._n + 1, math.floor((self._free - self._v0) * self._fps + 1e-9))
            fid, k = self._frame_id(n)
            if self.finished.is_set():
                return None
            if k > self._settled and self._settle is not None:
                self._settled = k
                self._settle()  # the scan thread waits for this frame: no CPU time of its own
            self._n, self._fid = n, fid
            self._taken_at = max(self._free, self.capture_time(n))
            self._busy = True
            if k >= 0:
                self.shown[k].turns += 1
            zoom = None if self._zoom is None else self._zoom(fid)
            return Frame(self._frames[fid], self.capture_time(n), n, zoom)

    # -- the scan loop's side (App on_frame hook, scan thread) -------------------------------

    def on_frame(self) -> None:
        cpu = time.thread_time()
        with self._cond:
            spent = 0.0 if self._cpu is None else cpu - self._cpu
            turn = spent * self._scale + self.waits.turn  # virtual
            self.waits.turn = 0.0
            self.handled += 1
            if self._k >= 0 and not self.finished.is_set():
                self.turns += 1
                self.cpu_s += spent
                self.trace.append((self._n, self._fid, self._taken_at, turn))
            self._free = self._taken_at + turn
            committed = self._committed()
            if committed > self._seen:
                p = self._read(self._free)  # (no stored() before: at the turn's end)
                if p is not None and p.read_frame == self._n:
                    # the hand goes away after the beep: the gap starts at the next frame
                    self._end = self._n + 1 + self._gap
            self._seen = committed
            self._busy = False
            self._cond.notify_all()
        self._cpu = time.thread_time()  # this hook's own work is no turn's

    @property
    def frames_passed(self) -> int:
        """Frames the camera captured while the timeline ran (analysed or not)."""
        return 0 if not self.shown or self.shown[0].start < 0 else self._n - self.shown[0].start + 1

    def results(self, in_view: Sequence[int | None]) -> list[dict[str, Any]]:
        """Per presentation: time from its first frame wholly in view to the read (s)."""
        out = []
        for p, first in zip(self.shown, in_view, strict=True):
            t_in = None if first is None or p.start < 0 else self.capture_time(p.start + first)
            took = None if t_in is None or p.read_at is None else p.read_at - t_in
            out.append({"took": took, "turns": p.turns, "read_wall": p.read_wall})
        return out


class Waits:
    """The scan thread's waits for the side core (virtual s): in all, on the decoder's clock,
    and in the turn under way, on the timeline (reset by whoever ends a turn)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.turn = 0.0

    def charge(self, seconds: float) -> None:
        """On the scan thread: it waited this long for the side core."""
        self.total += seconds
        self.turn += seconds


# How LockstepSide charges the scan thread's waits: "cpu" (the model below), or "wall": the
# time the scan thread really waited for the task on this machine, times the scale. The
# second takes in what the model leaves out (the GIL, handing a task over, the caches), and
# whatever else runs on the machine: on an idle one it brackets the model from above.
SIDE_MODEL = os.environ.get("ORDOSCAN_BENCH_SIDE_MODEL", "cpu")


class LockstepSide(SideCore):
    """The decoder's side core on a virtual timeline: a second core as fast as the scan
    thread's (its tasks' CPU time times `scale`), free at the start of each task unless
    the one before still runs then.

    A task starts at max(its submission, the end of the task before) on the timeline and
    lasts its worker thread's CPU time x `scale`; when the scan thread asks for its result
    before it ends there, the scan thread waits the difference (`charge`): that wait is in
    its turn and on the decoder's clock. Not modelled: the two threads' contention for the
    GIL (zxing-cpp and numpy's loops release it; their Python glue does not) and for the
    memory bus: the side benchmark (tests/bench/test_bench_side.py) measures those in
    real time on this machine's two cores, and SIDE_MODEL "wall" charges the real waits
    instead."""

    def __init__(self, now: Callable[[], float], charge: Callable[[float], None],
                 scale: float) -> None:
        super().__init__()
        self._now = now
        self._charge = charge
        self._scale = scale
        self._free_at = -math.inf  # virtual time the last task ended
        self._submitted: dict[Task[Any], float] = {}  # virtual time each task was submitted
        self.waited = 0.0  # virtual s the scan thread waited for results

    def submit(self, fn: Callable[[], T]) -> Task[T]:
        task = super().submit(fn)
        self._submitted[task] = self._now()
        return task

    def result(self, task: Task[T]) -> T:
        t0 = time.perf_counter()
        task.wait()
        submitted = self._submitted.pop(task)
        if SIDE_MODEL == "wall":  # the real wait, scaled (see SIDE_MODEL)
            wait = (time.perf_counter() - t0) * self._scale
        else:
            start = max(submitted, self._free_at)
            self._free_at = start + task.spent * self._scale
            wait = self._free_at - self._now()
        if wait > 0:
            self._charge(wait)
            self.waited += wait
        return super().result(task)
