"""Decoder: zxing-cpp on grey frames, QR Code and DataMatrix.

`Decoder.decode(frame, zoom)` runs a fast first pass on the frame as it is (a
strided view such as the Y plane of a YUV buffer is read in place, without a
copy). Most camera frames show no code at all, so the extra passes (fitted to
a small code's size, upscaled, another binarizer) run only where there is a
sign of a code the fast pass did not read:
- a symbol zxing-cpp detected but could not decode;
- when no QR Code was read, QR finder patterns found by their own structure
  (`ordoscan.decoder.finders`: 1:1:3:1:1 runs both ways, grouped in threes, on
  an image pyramid), which find a small code among lines of text as well as
  one alone, or two of them when blur hid the third; a code under ZOOM_BELOW
  pixels a module is read from the camera's full-resolution stream through
  `zoom` when there is one, else upscaled to about 4 pixels a module;
- on the regions of a symbol detected but unread or of the statistics below
  (a code held far off or tilted, whose finder patterns blur hid), the main
  stream's pixels as they are, when there is one, before the other passes
  (it costs a fraction of a deblur or defocus pass);
- on any of those regions whose whites are clipped (an over-exposed phone
  screen), the main stream's pixels with a 3x3 minimum, then split at a grey
  level just under the clipped white and eroded (ERODE_PASSES);
- on any of those regions that measures as motion-blurred (a page moving
  during a long exposure), the main stream deconvolved (`deblur`): before the
  generic passes where the frame's region measures the smear in its middle,
  after them where only the main stream's does, and then on the code's own
  box too where its finder patterns lie inside a region over twice its size
  (the print merged around it may have set the smear measured there);
- on a QR Code detected but unread (by the fast pass or any later one), after
  the generic passes, the symbol resampled on its own module grid (`warp`): a
  code on cloth or on a curled or creased page, whose modules drift off
  zxing-cpp's perspective grid; a version-1 symbol (no alignment pattern) also
  redrawn through its fourth corner searched for; from the main stream when
  there is one;
- on any of those small regions with a sign of a QR Code still unread after
  the generic passes (before them where the frame's own pixels already measure
  a disc; or a patch the statistics below point at: a disc as
  wide as a module leaves no finder pattern), a defocus disc measured on the
  main stream (by its edges' slope and by the rings of its spectrum; by the
  rings alone where a disc of several modules leaves no steep edge, for the
  module solve only) and undone
  (`deblur`; nothing is done where the region measures in focus); where that
  reads nothing, the modules themselves solved for on the grid the finder
  patterns give, refined for a page seen in perspective (`modules`: one
  unknown a module, where a disc wider than a module has left a per-pixel
  deconvolution nothing to work with);
- on any small region with a sign of a code that may be smeared, where
  nothing above read its QR Code: the modules solved for with the smear as
  the blur (`modules`), on the grid of the finder patterns its deconvolved
  copy shows (a tilted page moving in a dim room, which no deconvolution alone
  reads); right after the generic passes where the frame's region measures
  the smear in its middle, last elsewhere;
- when nothing read, detected, nor pointed at by the finder patterns or the
  statistics, three round dark blobs at the corners of a square with a quiet
  zone outside (`finders.blurred_codes`: a code's finder patterns blurred by a
  disc of one or two modules, which leaves no 1:1:3:1:1 run and edges too soft
  for the statistics): the defocus passes only, on that region;
- a region whose QR Code has been read gets no more QR passes;
- when nothing was read, a patch that looks like a 2-D code (dense edges both
  ways, about as much dark as light; cheap statistics on a half-size frame),
  which also covers DataMatrix symbols;
- when nothing was read or detected on a view that is not blank, the part of
  the frame with strong steps both ways (the statistics' busy cells) upscaled
  x1.5, last: a small code neither sign pointed at (on the second generator's
  development scenes it read 1 more of 32 ordonnances, no stray read; on gen1
  dev sets 60-79, 1 of 567, a phone). Once on the whole frame: the busy cells
  span 4-23 % of it on average where the pass runs on dev scenes.
They run on those regions (the last one on the busy part), within a
per-frame time budget and a duty cycle (a share of the frame interval,
averaged over a second): a pass starts only if its learnt cost fits, and a
pass of several steps stops after the step it is on once the frame's time
is spent; on a camera stream, the passes a newer frame
overtakes are handed on to it (see Decoder.decode). The passes were
chosen by measurement on the synthetic counter scenes
(`ordoscan.devtools.scenes`) and ZXing's black-box corpus (see
tests/bench/test_bench_decoder.py).

Modules: `passes` (the zxing-cpp passes and running one), `regions` (where to look:
boxes, the statistics, the finder guesses), `finders` (QR finder patterns, sharp or
blurred to blobs), `deblur` (motion blur and defocus measured and undone), `warp` (a
symbol on an uneven surface flattened, a version-1 symbol's fourth corner found),
`modules` (a blurred symbol's modules solved for on their lattice), `side` (a second
core: the DataMatrix fast pass and part of the finder search beside the rest); the Decoder
here schedules the passes within the budget and the duty cycle.

Corrupt input never crashes: an array that is not a 2-D uint8 image raises
DecodeError, an empty one gives no symbols. Payloads are never logged here.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from ordoscan.decoder import deblur
from ordoscan.decoder.finders import CodeGuess, blurred_codes, later
from ordoscan.decoder.passes import (
    BUSY_PASS,
    DEBLUR_LATE_PASSES,
    DEBLUR_PASSES,
    DEFOCUS_PASSES,
    ERODE_PASSES,
    EXTRA_PASSES,
    FAST_PASSES,
    FLATTEN_PASS,
    FLATTEN_ZOOM_PASS,
    MAX_FITTED,
    MAX_PASS_PIXELS,
    QR,
    SMALL_MODULE,
    SQUARE_PASS,
    UNSIZED,
    UNSMEAR_PASS,
    ZOOM_BELOW,
    ZOOM_PASS,
    Job,
    Measured,
    Pass,
    Paused,
    Symbol,
    Zoom,
    check,
    clipped,
    fitted,
    go_on,
    motion_blurred,
    out_of_focus,
    run_pass,
)
from ordoscan.decoder.regions import (
    FAINT_EDGE_MIN,
    MAX_REGIONS,
    Box,
    EdgeMap,
    Grey,
    candidate_regions,
    edge_map,
    guess_box,
    merge_regions,
    moving,
    new_guesses,
    outline,
    pad,
    still,
    view,
    whole,
)
from ordoscan.decoder.side import SideCore
from ordoscan.errors import DecodeError
from ordoscan.images import load_image as load_image  # the image loader lives in images.py

T = TypeVar("T")

__all__ = [
    "BUSY_PASS",
    "DEFOCUS_PASSES",
    "EXTRA_PASSES",
    "FAST_PASSES",
    "DecodeStats",
    "Decoder",
    "Grey",
    "Symbol",
    "Zoom",
    "load_image",
]


# what a skipped pass's cost estimate keeps at each skip (see Decoder._extra_passes)
COST_AGEING = 0.8
# the share of each new measurement in a learnt cost (a pass's, the search's; see
# Decoder._learn): the estimate follows a core that slows down or speeds up within a few
# runs, and one slow run (a cold cache, another process) moves it a fifth of the way only
COST_WEIGHT = 0.2
# the search for signs of a code, its cost learnt beside the passes' (Decoder._cost)
SEARCH = "search"
# frames in a row that may take a search's regions from an earlier frame of a still view
# (see Decoder._reusable): the finder patterns of a code held still come and go with the
# noise and the tremor, so a fresh search still comes every few frames
MAX_REUSE = 2
# the last frames of a stream that tried passes, whose failed passes are remembered (see
# _least_tried): a pass that read nothing on a region goes after the passes not yet tried
# there, on the next frames
TRIED_FRAMES = 3
# An unmix pass the budget stopped part way goes on where it stopped, on the next frames of a
# view kept still since the frame it started on (see _resumed), for this many frames after
# that one at most: a second at 15 fps, some 15 budgets of solves.
PAUSED_FRAMES = 15
# An unmix pass can go on over several frames, so one whose whole cost fits no frame's budget
# is not skipped for it: it starts where this share of a budget is left (its first step, the
# blob search and a solve, cannot be cut) or its whole cost fits what is left.
UNMIX_START = 0.5


@dataclass(frozen=True, slots=True)
class _Pause:
    """An unmix pass a frame's budget stopped (passes.Paused), the view of the frame it
    started on, and that frame's number (Decoder._frames)."""

    paused: Paused
    view: npt.NDArray[np.float32]
    frame: int


@dataclass(frozen=True, slots=True)
class _Search:
    """A search for signs of a code on a frame where nothing was read or detected."""

    view: npt.NDArray[np.float32]  # the frame's coarse look (regions.view)
    guesses: list[CodeGuess]
    candidates: list[Box]
    busy: Box | None  # the part of the frame with strong steps both ways (None: blank)
    blurred: list[CodeGuess]
    reused: int = 0  # later frames that took it


@dataclass(frozen=True, slots=True)
class DecodeStats:
    """Decoder counters for telemetry; times in milliseconds."""

    frames: int  # frames decoded
    last_ms: float  # time of the last frame
    mean_ms: float  # mean time per frame
    max_ms: float  # slowest frame
    hard_frames: int  # frames with a sign of a code the fast pass did not read: extra passes due
    budget_stops: int  # hard frames whose extra passes were cut by the per-frame budget
    extra_symbols: int  # symbols found only by an extra pass
    blank_frames: int = 0  # frames where nothing was read and nothing looked like a code
    duty_stops: int = 0  # hard frames whose extra passes were cut by the duty cycle
    extra_passes: int = 0  # zxing-cpp calls made by extra passes (regions, fitted, zoomed)
    zooms: int = 0  # regions read from the full-resolution main stream
    handed_on: int = 0  # hard frames whose extra passes went to a newer frame (see decode)
    searches_handed_on: int = 0  # frames whose search for signs of a code went to a newer one
    searches_reused: int = 0  # frames that took the search of an earlier one (a still view)
    searches_moving: int = 0  # frames of a stream left unsearched: the view was moving
    passes_resumed: int = 0  # frames that went on with an unmix pass an earlier one's budget
    # stopped part way (see Decoder._resumed)


def _flatten_pass(zoom: Zoom | None) -> Pass:
    """The flatten pass, from the main stream when there is one (a small symbol's modules
    and its corners are better measured there)."""
    return FLATTEN_ZOOM_PASS if zoom is not None else FLATTEN_PASS


def _qr_read_in(found: dict[tuple[str, bytes], Symbol], box: Box) -> bool:
    """Whether a QR Code read already has its centre in the box."""
    for s in found.values():
        if s.format == "QRCode" and s.position:
            cx = sum(c[0] for c in s.position) / len(s.position)
            cy = sum(c[1] for c in s.position) / len(s.position)
            if box.x0 <= cx < box.x1 and box.y0 <= cy < box.y1:
                return True
    return False


def _fast(passes: tuple[Pass, ...], frame: Grey,
          found: dict[tuple[str, bytes], Symbol] | None = None
          ) -> tuple[dict[tuple[str, bytes], Symbol], list[tuple[str, Box]]]:
    """`passes` on the whole frame: the symbols read (added to `found`, or to a dict of their
    own) and the symbology and box of each symbol detected but unread."""
    found = {} if found is None else found
    detected = []
    for p in passes:
        for symbology, box in run_pass(p, frame, whole(frame), found, None):
            if symbology != UNSIZED:  # (nowhere to look in the whole frame)
                detected.append((symbology, box))
    return found, detected


def _no_look() -> None:
    """A frame's look where it is not to be taken (see Decoder._finish)."""
    return None


def _least_tried(jobs: list[Job], tried: Iterable[dict[str, list[Box]]]) -> list[Job]:
    """`jobs` with those whose pass read nothing on an overlapping region in more of the
    last frames (`tried`) after the others, in their order otherwise. On a slow core the
    budget and the duty cycle end a hard frame's passes after the first few: without this,
    a code held still gets those same few, frame after frame, and never the pass that
    would read it (a defocus or unsmear pass comes after the generic ones)."""
    history = list(tried)
    if not history:
        return jobs

    def times(job: Job) -> int:
        return sum(any(job.box.overlaps(b) for b in failed.get(job.p.name, ()))
                   for failed in history)

    return sorted(jobs, key=times)  # (stable)


def _statistics(frame: Grey) -> tuple[EdgeMap | None, list[Box], Box | None]:
    """The region statistics of a frame: its edge map, the regions that look like a 2-D
    code and its busy part (regions.candidate_regions)."""
    emap = edge_map(frame)
    if emap is None:
        return None, [], None
    candidates, busy = candidate_regions(frame, emap=emap)
    return emap, candidates, busy


class Decoder:
    """zxing-cpp on grey frames: a fast pass, then extra passes where a code went unread."""

    def __init__(
        self,
        budget_ms: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        duty: float | None = 0.25,
        fps: float = 15.0,
        side: SideCore | None = None,
    ) -> None:
        """`budget_ms` bounds the extra passes of one frame; 0 turns them off.

        An extra pass starts only if its expected cost (learnt from the frames
        before) ends within budget_ms of the end of the fast pass, which always
        runs, and within the duty cycle: each frame earns `duty` of a frame
        interval (1/`fps`) of extra-pass time, saved up to a second's worth (at
        least one full budget). A burst of hard frames gets its passes; a view
        that keeps looking code-like cannot hold a core. A pass of several steps
        (deblurred versions, solved grids, squared corners) that runs past that
        limit stops after its current step: an estimate is not a bound. `duty=None` turns the
        cycle off (still images, where each one should get its whole budget).
        `clock` is the monotonic clock in seconds (tests give their own).
        `side`, when given, is a second core (ordoscan.decoder.side): the DataMatrix fast
        pass runs there beside the QR Code pass, and part of the finder search beside the
        rest; this thread takes the frame's coarse look and the region statistics while it
        waits. What a frame gives is the same.
        decode() is for one thread at a time; stats() may be called from any.
        """
        if not budget_ms >= 0:  # also refuses NaN
            raise DecodeError(f"decode budget_ms = {budget_ms!r}: must be a number >= 0")
        if duty is not None and not 0 <= duty <= 1:  # also refuses NaN
            raise DecodeError(f"decode duty = {duty!r}: must be a share between 0 and 1")
        if not 0 < fps <= 1000:
            raise DecodeError(f"decode fps = {fps!r}: must be a frame rate in (0, 1000]")
        self.budget_ms = float(budget_ms)
        self._clock = clock
        self._side = side
        self._fillers: list[Callable[[], None]] = []  # see _meanwhile
        # the duty cycle as a credit of extra-pass milliseconds (inf: no cycle)
        self._credit_step = duty * 1000.0 / fps if duty is not None else 0.0
        self._interval_ms = 1000.0 / fps
        self._credit_max = max(duty * 1000.0, self.budget_ms) if duty is not None else math.inf
        self._credit = self._credit_max
        # expected cost of each extra pass and of the search (SEARCH), in ms per megapixel of
        # input (the search's: the frame), learnt from the runs (see _learn)
        self._cost: dict[str, float] = {}
        self._lock = threading.Lock()
        self._frames = 0
        self._total_ms = 0.0
        self._last_ms = 0.0
        self._max_ms = 0.0
        self._hard = 0
        self._stops = 0
        self._extra = 0
        self._blank = 0
        self._duty_stops = 0
        self._passes = 0
        self._zooms = 0
        self._zoom_area = 4.0  # main-stream pixels per frame pixel, learnt from the zooms
        self._handed: list[Job] = []  # extra passes the last frame left to this one
        self._handed_on = 0
        self._search_handed = False  # the last frame left its search to this one
        self._searches_handed_on = 0
        self._searched: _Search | None = None  # the last search, while the view stays still
        self._searches_reused = 0
        self._look: npt.NDArray[np.float32] | None = None  # the last frame's view, if plain
        self._searches_moving = 0
        self._on_read: Callable[[Symbol], None] | None = None  # this frame's (see decode)
        self._reported: set[tuple[str, bytes]] = set()  # the symbols given to it so far
        # on a stream, the passes that ran on each region and read nothing, for the last
        # TRIED_FRAMES frames (newest last): pass name -> regions
        self._tried: collections.deque[dict[str, list[Box]]] = collections.deque(
            maxlen=TRIED_FRAMES)
        self._paused: _Pause | None = None  # on a stream: an unmix pass to go on with
        self._resumes = 0

    def decode(
        self, image: Grey, zoom: Zoom | None = None, newer: Callable[[], bool] | None = None,
        on_read: Callable[[Symbol], None] | None = None,
    ) -> list[Symbol]:
        """The QR Codes and DataMatrix symbols of a grey frame, each once.

        `on_read`, when given, is called on this thread with each symbol as soon as it is
        read, once per symbol: the QR Code fast pass's before the side core's DataMatrix
        pass is waited for, an extra pass's before the next pass starts. A caller acts on a
        read (stores it, signals it) while the frame's other passes still run, instead of
        at their end: on a slow core that is up to a budget sooner. The list returned holds
        every symbol all the same; an exception from `on_read` ends the frame's decoding
        and is raised here.

        `zoom`, when given, reads a region of the frame from the camera's
        full-resolution stream: a QR Code found too small to read here (under
        ZOOM_BELOW pixels a module) is read there instead of upscaled.

        `newer`, when given (a camera stream), says whether a newer frame is
        waiting. The extra passes then go to the newest frame: once a newer one
        waits, this frame's remaining passes are handed on to the next call,
        which runs its own fast pass first (the code may read at once there)
        and then the handed passes on its own pixels, in place of a search of
        its own, whatever waits by then (so they are never handed on forever).
        On a slow core the search and the passes of a stale frame would
        otherwise hold back the fast pass on the frame the code became
        readable in. For the same reason, when a newer frame already waits
        once the fast pass is done and it read or detected no QR Code, the
        search for signs of a code (QR finder patterns, the region
        statistics: the dearest part of a frame after the fast pass) is left
        to that frame too; never twice in a row, so that a slow core still
        searches at least every other frame. Nor is it run on a frame of a stream
        whose view moved much since the last (a page brought in or moved aside:
        its code smeared, the fast pass on the next frames the better bet) when
        it would not end before the next frame is due (a slow core), and a
        view kept still since the last search takes that search's regions for its
        own, MAX_REUSE frames in a row at most (regions.still, regions.moving).
        """
        start = self._clock()
        self._on_read, self._reported = on_read, set()
        handed, self._handed = self._handed, []
        frame = check(image)
        self._credit = min(self._credit + self._credit_step, self._credit_max)
        if frame is None:
            self._account((self._clock() - start) * 1000.0)
            return []
        self._fillers.clear()  # (a frame's work is its own)
        # the frame's coarse look, for a view with nothing read (below): with a side core,
        # taken while this thread waits for the DataMatrix pass
        look_of = self._meanwhile(view, frame)
        found: dict[tuple[str, bytes], Symbol] = {}
        unread_qr: list[Box] = []
        unread_other: list[Box] = []
        for symbology, box in self._fast_passes(frame, found):
            (unread_qr if symbology == "QRCode" else unread_other).append(box)
        qr_read = any(s.format == "QRCode" for s in found.values())
        if qr_read:
            self._paused = None  # (a read: the page goes)
            self._tried.clear()  # (see _finish)
        if qr_read and not unread_qr and not unread_other:
            self._search_handed = False
            self._account((self._clock() - start) * 1000.0)
            return list(found.values())
        search_handed, self._search_handed = self._search_handed, False
        if handed and not qr_read:
            # the last frame's search, on this newer frame: the code has moved a few pixels
            # at most, well within the regions' margins (a symbol detected here again is
            # among them: searching anew would hand the passes on again, for ever)
            # (the view's look, taken only where a paused pass may go on or one pauses here:
            # see _finish; none where the fast pass read or detected a QR Code)
            seen = look_of if not found and not unread_qr else _no_look
            return self._finish(frame, handed, found, start, zoom, None, stream=True, look=seen)
        # a search on a still view can stand for this frame's: nothing to hand on then
        plain = not found and not unread_qr  # the search depends on the pixels alone
        look = look_of() if plain else None
        searched = self._reusable(look) if look is not None else None
        moved = look is not None and self._look is not None and moving(self._look, look)
        self._look = look
        if (newer is not None and searched is None and moved
                and (self._clock() - start) * 1000.0 + self._expected(SEARCH, frame.size / 1e6)
                > self._interval_ms):
            # a view in motion (a page brought in, moved aside) on a core too slow to search
            # it before the next frame: its code, smeared, seldom reads even once found, and
            # the search holds back the fast pass on the next frames, where the code may
            # have come to rest readable
            self._account((self._clock() - start) * 1000.0, search_moving=True)
            return list(found.values())
        if (newer is not None and searched is None and not handed and not qr_read
                and not unread_qr and not search_handed and newer()):
            # a newer frame waits: it gets the search (after its own fast pass)
            self._search_handed = True
            self._account((self._clock() - start) * 1000.0, search_handed_on=True)
            return list(found.values())
        if searched is not None:
            guesses, candidates, busy = searched.guesses, searched.candidates, searched.busy
            blurred = [] if unread_other else searched.blurred  # as a search would say
        else:
            # No QR Code read (the prescription's symbology): look for its finder patterns,
            # even beside a DataMatrix that was read (an ordonnance's INS code).
            known = [Box(*outline(s.position)) for s in found.values()] + unread_qr
            # (on a stream: see the moving view above)
            search_start = self._clock() if newer is not None and plain else None
            # the region statistics (a code whose finder patterns did not survive, or a
            # DataMatrix); with a side core, done while this thread waits for its part of
            # the finder search
            stats_of = None if found else self._meanwhile(_statistics, frame)
            try:
                guesses = [] if qr_read else new_guesses(frame, known, self._beside)
            finally:
                emap, candidates, busy = (None, [], None) if stats_of is None else stats_of()
            blurred = []
            if not (found or unread_qr or unread_other or guesses or candidates):
                # a code blurred past its modules leaves no finder pattern's runs and may fail
                # the statistics: where nothing else points, its finders' dark blobs at the
                # corners of a square do (the defocus passes below read it)
                blurred = blurred_codes(frame)
                # pale print blurred by a disc as wide as its modules: its steps are too faint
                # for the statistics' floor, not for their noise test; kept where the frame
                # measures the disc (a page of print in dim light is faint too, and sharp)
                candidates = [b for b in candidate_regions(frame, FAINT_EDGE_MIN, emap)[0]
                              if out_of_focus(frame, b)]
            if search_start is not None:  # the whole search's cost, learnt as a pass's is
                self._learn(SEARCH, (self._clock() - search_start) * 1000.0 / (frame.size / 1e6))
            self._searched = (None if look is None
                              else _Search(look, guesses, candidates, busy, blurred))
        jobs = [
            Job(fitted(g, zoom is not None and g.module < ZOOM_BELOW), guess_box(g))
            for g in [g for g in guesses if g.module < SMALL_MODULE][:MAX_FITTED]
        ]
        # the prescription's symbology first; DataMatrix "detections" are the
        # commonest false alarm on a blank counter (a few frames in ten)
        boxes = unread_qr + [guess_box(g) for g in guesses[:MAX_REGIONS]] + candidates
        regions = merge_regions(boxes + unread_other, frame)
        # A region whose look says why the fast pass failed gets the pass made for that
        # first: the generic passes seldom read a smeared or blown-out code, and the budget
        # may not reach past them. Small regions only: the main stream of a whole frame
        # costs three frames' worth.
        small = [box for box in regions if box != whole(frame)]
        if zoom is not None:
            # A code the statistics or zxing-cpp's detector saw but could not read is most
            # often too small in this frame (held far off, or tilted): the main stream's
            # pixels read it where the upscaled frame does not, for about the cost of one
            # upscaled pass, a fraction of a deblur or defocus pass's: before those too (a
            # region measured smeared or out of focus here may read as it is there). Not on
            # a blown-out region: its erode passes read the main stream already.
            jobs += [Job(ZOOM_PASS, box) for box in small
                     if any(box.overlaps(q) for q in unread_qr + candidates)
                     and not clipped(frame, box) and Job(ZOOM_PASS, box) not in jobs]
        # A blown-out region that also measures smeared is a phone screen whose clipped
        # whites fake the blur's marks: its erode pass comes first.
        jobs += [Job(p, box) for box in small if clipped(frame, box) for p in ERODE_PASSES]
        smeared = [box for box in small if motion_blurred(frame, box)]
        jobs += [Job(p, box) for p in DEBLUR_PASSES for box in smeared]
        # where a code was seen, a region out of focus even at this size (a lens focused
        # behind the page, or a fixed focus and the page close): the generic passes read
        # no such code, so its defocus passes come before them rather than after. A sign of a
        # code: a disc as wide as a module leaves no finder pattern, the statistics count too
        qr_signs = unread_qr + [guess_box(g) for g in guesses[:MAX_REGIONS]] + candidates
        signed = [box for box in small
                  if box not in smeared and any(box.overlaps(q) for q in qr_signs)]
        unfocused = [box for box in signed if out_of_focus(frame, box)]
        jobs += [Job(p, box) for p in DEFOCUS_PASSES for box in unfocused]
        jobs += [Job(p, box) for p in EXTRA_PASSES for box in regions]
        # a region that measures smeared in its middle and shows a sign of a QR Code, its
        # deblur pass done: the smear is what fails the generic passes, so its modules solved
        # for with that smear as the blur come next (the pass takes the deblur pass's read
        # and measure of the region), before the passes for other causes
        unsmear_first = [box for box in smeared if any(box.overlaps(q) for q in qr_signs)]
        jobs += [Job(UNSMEAR_PASS, box) for box in unsmear_first]
        # the others may hold a smeared code off their middle, or their smear may be lines of
        # print: measured in the pass, after the generic passes (DEBLUR_LATE_PASSES). A
        # code's finder patterns inside a region merged with print around them first: the
        # smear measured on the whole region may be the print's; measured and undone on the
        # code's own box (a fraction of the region's cost), then on the whole region
        inner = [pad(guess_box(g), frame) for g in guesses[:MAX_REGIONS]]
        jobs += [Job(p, b) for p in DEBLUR_LATE_PASSES for b in inner
                 if any(r.overlaps(b) and r.area > 2 * b.area for r in small)]
        jobs += [Job(p, box) for p in DEBLUR_LATE_PASSES for box in small if box not in smeared]
        # a full corner of finder patterns the generic passes did not read: a strong tilt
        # may leave zxing-cpp unable to size the symbol; squared on its finders it reads
        # (the whole region: a tilt bends the corner, the guess's box may have missed part)
        cornered = [guess_box(g) for g in guesses[:MAX_REGIONS] if g.finders == 3]
        jobs += [Job(SQUARE_PASS, box) for box in small if any(box.overlaps(c) for c in cornered)]
        # a QR Code detected but unread may lie on a surface that is not flat: last, as the
        # generic passes read most detected codes
        jobs += [Job(_flatten_pass(zoom), box) for box in unread_qr]
        # a code still unread after the generic passes may be out of focus (the main stream's
        # pixels say: the pass does nothing on a region that measures in focus)
        jobs += [Job(p, box) for p in DEFOCUS_PASSES for box in signed if box not in unfocused]
        # the generic passes read no code blurred past its modules: the defocus passes only
        jobs += [Job(p, guess_box(g)) for p in DEFOCUS_PASSES for g in blurred]
        # a smeared code none of the above read: its modules solved for, the smear as the blur
        # (where a code was seen: the solve is dear, a slow core's budget seldom has room; the
        # regions measured smeared had theirs after the generic passes, the rest are `signed`)
        jobs += [Job(UNSMEAR_PASS, box) for box in signed]
        detected = unread_qr or unread_other
        if not found and not detected and busy is not None and regions != [whole(frame)]:
            # nothing read or detected, not a blank view: a small code may hide where neither
            # the finder patterns nor the statistics pointed (blur, glare), among the busy
            # cells (a code's modules make strong steps); last, so the budget and the duty
            # cycle gate it
            jobs.append(Job(BUSY_PASS, busy))
        if not jobs:
            if not found:
                self._tried.clear()  # nothing in view: the next page is another one
            self._account((self._clock() - start) * 1000.0, blank=not found)
            return list(found.values())
        if newer is not None:  # a stream: the next frames show the same regions
            jobs = _least_tried(jobs, self._tried)
        return self._finish(frame, jobs, found, start, zoom, newer, stream=newer is not None,
                            look=lambda: look)

    def _beside(self, fn: Callable[..., T], *args: object) -> Callable[[], T]:
        """`fn(*args)` on the side core, started now; what is returned waits for its value,
        doing the work queued by _meanwhile first (without a side core: runs fn then, on
        this thread)."""
        side = self._side
        if side is None:
            return later(fn, *args)
        task = side.submit(partial(fn, *args))

        def join() -> T:
            try:
                while self._fillers:
                    self._fillers.pop(0)()
            finally:  # (joined whatever happened: the frame is lent)
                value = side.result(task)
            return value

        return join

    def _meanwhile(self, fn: Callable[..., T], *args: object) -> Callable[[], T]:
        """`fn(*args)` on this thread, at the next wait for the side core or when its value
        is asked for, whichever comes first (once): work for the time the scan thread would
        wait, in the order queued (without a side core: when asked)."""
        done: list[T] = []

        def run() -> None:
            if not done:
                done.append(fn(*args))

        if self._side is not None:
            self._fillers.append(run)

        def value() -> T:
            run()
            return done[0]

        return value

    def _fast_passes(self, frame: Grey, found: dict[tuple[str, bytes], Symbol]
                     ) -> list[tuple[str, Box]]:
        """The fast passes on the whole frame, their symbols added to `found` (in the passes'
        order); the symbology and box of each symbol detected but unread. With a side core,
        the QR Code pass runs here and the others there, at the same time."""
        rest = self._beside(_fast, FAST_PASSES[1:], frame)
        try:
            detected = _fast(FAST_PASSES[:1], frame, found)[1]
            self._report(found)  # (the side core's pass may take a while yet)
        finally:
            rest_found, rest_detected = rest()  # (joined whatever happened: the frame is lent)
        found.update(rest_found)
        self._report(found)
        return detected + rest_detected

    def _report(self, found: dict[tuple[str, bytes], Symbol]) -> None:
        """The frame's new symbols, to its on_read (see decode)."""
        if self._on_read is None:
            return
        for key, symbol in list(found.items()):
            if key not in self._reported:
                self._reported.add(key)
                self._on_read(symbol)

    def _resumed(self, look: Callable[[], npt.NDArray[np.float32] | None]) -> _Pause | None:
        """The unmix pass an earlier frame's budget stopped, for this frame to go on with
        (taken from the decoder): while the view (`look()`: this frame's; None where it is
        not to be taken) has kept still since the frame it started on (regions.still: the code is
        still within its region's margins), PAUSED_FRAMES frames after that one at most. Its
        pixels are that frame's: the same code, held still."""
        paused, self._paused = self._paused, None
        if paused is None or self._frames - paused.frame > PAUSED_FRAMES:
            return None
        view_now = look()
        return None if view_now is None or not still(paused.view, view_now) else paused

    def _reusable(self, look: npt.NDArray[np.float32]) -> _Search | None:
        """The last search, if this frame may take it for its own (and counted as taken):
        the view has kept still since (regions.still: the code is still within the
        regions' margins) and it has not stood for MAX_REUSE frames in a row yet. A view
        held still then gets its passes on each frame instead of a search every other
        frame; on a slow core the search costs more than the fast pass."""
        last = self._searched
        if last is None or last.reused >= MAX_REUSE or not still(last.view, look):
            return None
        self._searched = replace(last, reused=last.reused + 1)
        self._searches_reused += 1
        return last

    def _finish(
        self,
        frame: Grey,
        jobs: list[Job],
        found: dict[tuple[str, bytes], Symbol],
        start: float,
        zoom: Zoom | None,
        newer: Callable[[], bool] | None,
        stream: bool,
        look: Callable[[], npt.NDArray[np.float32] | None] = _no_look,
    ) -> list[Symbol]:
        """Run the extra passes (or hand them on to a newer frame) and account the frame.
        On a stream (`stream`: handed passes run with no `newer`, so that they are not handed
        on again) the passes that read nothing are remembered (see _least_tried), and an
        unmix pass the budget stops part way is kept to go on with on the next frames of the
        same view (`look()`: this frame's, None where it is not to be taken; asked only
        where a paused pass may go on or one paused here, so that a pass that pauses on any
        frame is kept, and no frame where none does pays for the look; see _resumed)."""
        fast_end = self._clock()
        failed: dict[str, list[Box]] | None = {} if stream else None
        measured = Measured()  # this frame's regions as its passes measured them
        resume = self._resumed(look) if stream else None
        stop, extra, runs, zooms = self._extra_passes(frame, jobs, found, fast_end, zoom,
                                                      measured, newer, failed, resume)
        if resume is not None and measured.paused is resume.paused:
            self._paused = resume  # still going, from the view it started on
        elif stream and measured.paused is not None and (view_now := look()) is not None:
            self._paused = _Pause(measured.paused, view_now, self._frames)
        if failed is not None:
            if any(sym.format == "QRCode" for sym in found.values()):
                self._tried.clear()  # a read: the page goes, its regions' history with it
            elif failed:
                # (a frame whose passes were all handed on or left to the budget tried none:
                # on a slow core every other frame, which would halve the history)
                self._tried.append(failed)
        end = self._clock()
        self._credit -= (end - fast_end) * 1000.0  # overruns too: the next frames pay them back
        self._account(
            (end - start) * 1000.0,
            hard=True,
            budget_stop=stop == "budget",
            duty_stop=stop == "duty",
            handed_on=stop == "newer",
            extra=extra,
            runs=runs,
            zooms=zooms,
        )
        return list(found.values())

    def _extra_passes(
        self,
        frame: Grey,
        jobs: list[Job],
        found: dict[tuple[str, bytes], Symbol],
        fast_end: float,
        zoom: Zoom | None,
        measured: Measured,
        newer: Callable[[], bool] | None = None,
        failed: dict[str, list[Box]] | None = None,
        resume: _Pause | None = None,
    ) -> tuple[str, int, int, int]:
        """Run the jobs in order (each generic pass on every region before the next pass);
        each that ran and read nothing is added to `failed` (pass name -> regions), if given.
        An unmix pass an earlier frame's budget stopped (`resume`) goes on in the place of
        the unmix pass on an overlapping region, or last where none is due; one that stops
        part way here, or is not reached, is left in `measured` (this frame's regions as its
        passes measured them).

        Returns what stopped them ("budget", "duty", "newer": handed on to the
        next frame, or ""), how many symbols they added, how many zxing-cpp
        calls they made and how many of those read the main stream.
        """
        limit = min(self.budget_ms, self._credit)
        stop = ""
        extra = runs = zooms = 0

        def out_of_time() -> bool:
            # a pass of several steps stops between two once the frame's limit is spent: its
            # cost learnt so far is an estimate, and one region can cost many times it
            return (self._clock() - fast_end) * 1000.0 > limit

        def go_on_paused(paused: Paused) -> None:
            nonlocal extra, runs
            before = len(found)
            went = go_on(paused, frame, found, out_of_time)
            with self._lock:
                self._resumes += 1
            runs += 1
            if len(found) > before:
                extra += len(found) - before
                self._report(found)
            elif went is None:
                measured.paused = paused
            elif failed is not None:
                failed.setdefault(paused.p.name, []).append(paused.box)

        paused = resume.paused if resume is not None else None
        for i, job in enumerate(jobs):
            if newer is not None and not found and newer():
                self._handed = jobs[i:]
                stop = "newer"
                break
            p, box = job.p, job.box
            if p.formats is QR and box != whole(frame) and _qr_read_in(found, box):
                continue  # this region's QR Code is read: its other QR passes would cost only
            if paused is not None and p.unmix and box.overlaps(paused.box):
                # the pass an earlier frame stopped goes on in this one's place in the order
                if limit <= 0 or out_of_time():
                    stop = "budget" if limit >= self.budget_ms else "duty"
                    break
                go_on_paused(paused)
                paused = None
                continue
            # a zoomed region's size is known only once it is read: take the last ratio's
            mpx = box.area * (self._zoom_area if p.zoom else p.scale * p.scale) / 1e6
            if mpx * 1e6 > MAX_PASS_PIXELS:
                continue
            now = self._clock()
            expected = self._expected(p.name, mpx)
            if p.unmix and failed is not None:  # (a stream: it may go on on the next frames)
                expected = min(expected, self.budget_ms * UNMIX_START)
            if limit > 0 and expected > self.budget_ms:
                # It fits no frame's budget, so waiting would not help: skip it and go on
                # with the cheaper jobs. The estimate is only corrected when the pass runs,
                # so age it: one slow measurement cannot keep the pass off for good.
                self._cost[p.name] *= COST_AGEING
                continue
            if limit <= 0 or (now - fast_end) * 1000.0 + expected > limit:
                stop = "budget" if limit >= self.budget_ms else "duty"
                break
            before, was = len(found), measured.paused
            zoomed: list[int] = []
            unread = run_pass(p, frame, box, found, zoom, zoomed, measured, out_of_time)
            unfinished = measured.paused is not was  # (stopped part way: not done nor failed)
            extra += len(found) - before
            if len(found) > before:
                self._report(found)
            elif failed is not None and not unfinished:
                failed.setdefault(p.name, []).append(box)
            if not p.flatten:
                # a QR Code only this pass detected (upscaled, deblurred...) gets flattened
                # too, once, last: the fast pass's detections are already queued
                jobs += [Job(_flatten_pass(zoom), b) for symbology, b in unread
                         if symbology == "QRCode"
                         and not any(j.p.flatten and j.box.overlaps(b) for j in jobs)]
                # one it could not place: its finder patterns squared, once per region,
                # next (zxing-cpp found three finder patterns there: the other generic
                # passes would fail alike, and a slow core's budget ends before the last)
                jobs[i + 1:i + 1] = [Job(SQUARE_PASS, b) for symbology, b in unread
                                     if symbology == UNSIZED and Job(SQUARE_PASS, b) not in jobs]
            runs += 1
            if zoomed:
                zooms += 1
                mpx = zoomed[0] / 1e6
                self._zoom_area = zoomed[0] / max(box.area, 1)
            if not unfinished:  # (a part of its cost only)
                self._learn(p.name, (self._clock() - now) * 1000.0 / max(mpx, 1e-6))
        else:
            if paused is not None and limit > 0 and not out_of_time():
                go_on_paused(paused)  # its region's pass is not due on this frame: last
                paused = None
        if paused is not None and measured.paused is None:
            measured.paused = paused  # not reached on this frame: kept for the next
        return stop, extra, runs, zooms

    def _expected(self, name: str, mpx: float) -> float:
        """The learnt cost of `name` (a pass or SEARCH) on `mpx` megapixels, in ms (0 before
        its first run: it runs once to be measured)."""
        return self._cost.get(name, 0.0) * mpx

    def _learn(self, name: str, spent: float) -> None:
        """One run's cost (ms per megapixel) learnt into the estimate of `name` (a pass's or
        SEARCH): the first run's as it is, then a moving average (COST_WEIGHT)."""
        old = self._cost.get(name)
        self._cost[name] = spent if old is None else (1 - COST_WEIGHT) * old + COST_WEIGHT * spent

    def _account(
        self,
        ms: float,
        *,
        hard: bool = False,
        budget_stop: bool = False,
        duty_stop: bool = False,
        extra: int = 0,
        blank: bool = False,
        runs: int = 0,
        zooms: int = 0,
        handed_on: bool = False,
        search_handed_on: bool = False,
        search_moving: bool = False,
    ) -> None:
        with self._lock:
            self._frames += 1
            self._total_ms += ms
            self._last_ms = ms
            self._max_ms = max(self._max_ms, ms)
            self._hard += hard
            self._stops += budget_stop
            self._duty_stops += duty_stop
            self._extra += extra
            self._blank += blank
            self._passes += runs
            self._zooms += zooms
            self._handed_on += handed_on
            self._searches_handed_on += search_handed_on
            self._searches_moving += search_moving

    def warm(self) -> None:
        """Build the tables the passes would otherwise build on their first use (the
        defocus spectrum's: deblur.warm): a kiosk calls it before its first frame."""
        deblur.warm()

    def stats(self) -> DecodeStats:
        """A snapshot of the counters since the decoder was made."""
        with self._lock:
            mean = self._total_ms / self._frames if self._frames else 0.0
            return DecodeStats(
                self._frames,
                self._last_ms,
                mean,
                self._max_ms,
                self._hard,
                self._stops,
                self._extra,
                self._blank,
                self._duty_stops,
                self._passes,
                self._zooms,
                self._handed_on,
                self._searches_handed_on,
                self._searches_reused,
                self._searches_moving,
                self._resumes,
            )
