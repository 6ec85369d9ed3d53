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
  one alone; a code under _ZOOM_BELOW pixels a module is read from the
  camera's full-resolution stream through `zoom` when there is one, else
  upscaled to about _FIT_MODULE pixels a module;
- when nothing was read, a patch that looks like a 2-D code (dense edges both
  ways, about as much dark as light; cheap statistics on a half-size frame),
  which also covers DataMatrix symbols;
- when nothing was read or detected on a view that is not blank (some cell
  with strong steps both ways), the whole frame upscaled x1.5, last: a
  blurred small code neither sign pointed at (on the second generator's
  development scenes it read 1 more of 32 ordonnances, no stray read).
They run on those regions (the last one on the whole frame), within a
per-frame time budget and a duty cycle (a share of the frame interval,
averaged over a second). The passes were
chosen by measurement on the synthetic counter scenes
(`ordoscan.devtools.scenes`) and ZXing's black-box corpus (see
tests/bench/test_bench_decoder.py).

Corrupt input never crashes: an array that is not a 2-D uint8 image raises
DecodeError, an empty one gives no symbols. Payloads are never logged here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image

from ordoscan.decoder.finders import CodeGuess, find_finders, guess_codes
from ordoscan.errors import DecodeError
from ordoscan.images import load_image as load_image  # the image loader lives in images.py

Grey = npt.NDArray[np.uint8]
# The full-resolution twin of a frame: (x0, y0, x1, y1), a box of the frame in its own
# pixels (x1, y1 excluded), gives the same region from the camera's main stream, grey, or
# None when there is none. A real zoom: more pixels per module than the frame has.
Zoom = Callable[[int, int, int, int], Grey | None]

# zxing-cpp's "QRCode" also covers Micro QR and rMQR: only full QR Codes are read.
_QR = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCodeModel1, zxingcpp.BarcodeFormat.QRCodeModel2]
)
_DM = zxingcpp.BarcodeFormats([zxingcpp.BarcodeFormat.DataMatrix])
_MAX_SIDE = 16384  # larger arrays are refused rather than risk zxing-cpp's int sizes
_MIN_SIDE = 8  # nothing decodable fits in fewer pixels
_MAX_PASS_PIXELS = 16_000_000  # an upscaled pass larger than this is skipped (memory, time)

# The region finder (measured on the hard counter scenes and blank counters: it
# finds every code the extra passes rescue, and nothing on most blank frames).
_CELL = 16  # frame pixels a side of one cell of the statistics map
_EDGE_MIN = 5.5  # mean grey-level step per pixel, across and along, over 3x3 cells
_EDGE_OVER_FLAT = 2.5  # ... and this many times the frame's flat cells (sensor noise)
_DARK_SHARE = (0.36, 0.72)  # share of pixels below the local mean: codes ~0.5, text ~0.3
_MAX_REGIONS = 3  # candidate regions searched per frame, densest first
_MIN_CODE_CELLS = 6  # a smaller patch is a word or a corner, not a code
_MIN_CODE_SIDE = 2  # cells across, both ways: a line of text is one cell high
_MAX_CODE_ASPECT = 3.0  # codes are square (seen slanted: under 2.5 measured); lines of text are not
_MAX_CODE_CELLS = 20  # a larger patch is not one small code: only its densest part is searched
_WHOLE_FRAME = 0.5  # regions covering more of the frame than this: search the whole frame

# Candidates from QR finder patterns (ordoscan.decoder.finders): the code's own structure.
_FINDER_LEVELS = 2  # pyramid levels searched: modules of about 1.2 to 10 frame pixels
_SMALL_MODULE = 3.5  # px per module: below this a found code gets a pass fitted to its size
_ZOOM_BELOW = 3.0  # px per module: below this the main stream's region is asked for
_FIT_MODULE = 4.0  # px per module the fitted pass scales a small code to (zxing reads it well)
_FIT_SCALE = (1.5, 3.0)  # ... within these factors
_MAX_FITTED = 4  # small-code guesses given a fitted pass per frame, best first


@dataclass(frozen=True, slots=True)
class Symbol:
    """One decoded symbol, before classification."""

    format: str  # "QRCode", "DataMatrix", ... (zxing-cpp format name)
    symbology_id: str  # ISO/IEC 15424 identifier, e.g. "]Q1", "]d2"
    text: str  # decoded text (GS1: with the GS separators)
    raw: bytes  # the symbol's bytes
    position: tuple[tuple[int, int], ...]  # corners, clockwise from top-left


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


@dataclass(frozen=True, slots=True)
class _Pass:
    """One zxing-cpp call on a prepared version of the frame."""

    name: str
    formats: zxingcpp.BarcodeFormats
    scale: float = 1.0  # resize factor applied to the frame first
    invert: bool = True  # also try light-on-dark symbols (phones in dark mode)
    downscale: bool = True  # let zxing-cpp also try smaller versions
    binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage
    zoom: bool = False  # read the region from the main stream (Zoom) instead of the frame


@dataclass(frozen=True, slots=True)
class _Job:
    """One extra pass on one region."""

    p: _Pass
    box: _Box


@dataclass(frozen=True, slots=True)
class _Box:
    """A region of the frame, in pixels (x1, y1 excluded)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def overlaps(self, o: _Box) -> bool:
        return self.x0 < o.x1 and o.x0 < self.x1 and self.y0 < o.y1 and o.y0 < self.y1

    def union(self, o: _Box) -> _Box:
        return _Box(min(self.x0, o.x0), min(self.y0, o.y0), max(self.x1, o.x1), max(self.y1, o.y1))


# The fast pass: QR Codes first (cheap, and the prescription's symbology), then
# DataMatrix without the inverted try (printed packs and documents are dark on
# light, and the inverted try doubles the DataMatrix cost).
FAST_PASSES: tuple[_Pass, ...] = (
    _Pass("qr", _QR),
    _Pass("datamatrix", _DM, invert=False),
)
# Extra passes on hard frames, most useful first (measured, see the module doc):
# small and blurred codes read once upscaled (x1.5 reads most of them, x2.5 a
# few more); global-histogram binarizing saves photos of codes with large even
# areas (ZXing's corpus); DataMatrix gets the same upscaling. Tried and dropped
# for earning nothing on top of these: x2, x0.75, sharpening, smoothing,
# histogram equalisation, contrast stretching, inverted DataMatrix.
EXTRA_PASSES: tuple[_Pass, ...] = (
    _Pass("qr-x1.5", _QR, scale=1.5, downscale=False),
    _Pass("qr-histogram", _QR, binarizer=zxingcpp.Binarizer.GlobalHistogram),
    _Pass("datamatrix-x1.5", _DM, scale=1.5, invert=False, downscale=False),
    _Pass("qr-x2.5", _QR, scale=2.5, downscale=False),
)


# When the fast pass read nothing on a view that is not blank: the whole frame upscaled.
WHOLE_FRAME_PASS = _Pass("qr-frame-x1.5", _QR, scale=1.5, downscale=False)


def _fitted(guess: CodeGuess, zoom: bool) -> _Pass:
    """The pass for a small code whose module size the finder patterns gave."""
    if zoom:
        return _Pass("qr-zoom", _QR, zoom=True)
    scale = min(max(_FIT_MODULE / guess.module, _FIT_SCALE[0]), _FIT_SCALE[1])
    return _Pass("qr-fit", _QR, scale=round(scale, 1), downscale=False)


def _check(image: object) -> Grey | None:
    """The frame as a 2-D uint8 view (no copy); None if empty; DecodeError if corrupt."""
    if not isinstance(image, np.ndarray):
        raise DecodeError(f"frame is a {type(image).__name__}, expected a 2-D numpy uint8 array")
    if image.dtype != np.uint8:
        raise DecodeError(f"frame has dtype {image.dtype}, expected uint8 (grey levels)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise DecodeError(f"frame has shape {image.shape}, expected (height, width) grey pixels")
    h, w = image.shape
    if h > _MAX_SIDE or w > _MAX_SIDE:
        raise DecodeError(f"frame of {w}x{h} pixels is too large (at most {_MAX_SIDE} a side)")
    if h < _MIN_SIDE or w < _MIN_SIDE:
        return None
    return image


class Decoder:
    """zxing-cpp on grey frames: a fast pass, then extra passes where a code went unread."""

    def __init__(
        self,
        budget_ms: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        duty: float | None = 0.25,
        fps: float = 15.0,
    ) -> None:
        """`budget_ms` bounds the extra passes of one frame; 0 turns them off.

        An extra pass starts only if its expected cost (learnt from the frames
        before) ends within budget_ms of the end of the fast pass, which always
        runs, and within the duty cycle: each frame earns `duty` of a frame
        interval (1/`fps`) of extra-pass time, saved up to a second's worth (at
        least one full budget). A burst of hard frames gets its passes; a view
        that keeps looking code-like cannot hold a core. `duty=None` turns the
        cycle off (still images, where each one should get its whole budget).
        `clock` is the monotonic clock in seconds (tests give their own).
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
        # the duty cycle as a credit of extra-pass milliseconds (inf: no cycle)
        self._credit_step = duty * 1000.0 / fps if duty is not None else 0.0
        self._credit_max = max(duty * 1000.0, self.budget_ms) if duty is not None else math.inf
        self._credit = self._credit_max
        # expected cost of each extra pass, in ms per megapixel of input, learnt as a moving average
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

    def decode(self, image: Grey, zoom: Zoom | None = None) -> list[Symbol]:
        """The QR Codes and DataMatrix symbols of a grey frame, each once.

        `zoom`, when given, reads a region of the frame from the camera's
        full-resolution stream: a QR Code found too small to read here (under
        _ZOOM_BELOW pixels a module) is read there instead of upscaled.
        """
        start = self._clock()
        frame = _check(image)
        self._credit = min(self._credit + self._credit_step, self._credit_max)
        if frame is None:
            self._account((self._clock() - start) * 1000.0)
            return []
        found: dict[tuple[str, bytes], Symbol] = {}
        unread_qr: list[_Box] = []
        unread_other: list[_Box] = []
        for p in FAST_PASSES:
            for symbology, box in self._run(p, frame, _whole(frame), found, None):
                (unread_qr if symbology == "QRCode" else unread_other).append(box)
        qr_read = any(s.format == "QRCode" for s in found.values())
        if qr_read and not unread_qr and not unread_other:
            self._account((self._clock() - start) * 1000.0)
            return list(found.values())
        # No QR Code read (the prescription's symbology): look for its finder patterns,
        # even beside a DataMatrix that was read (an ordonnance's INS code).
        guesses = [] if qr_read else _new_guesses(frame, found, unread_qr)
        # the region statistics: a code whose finder patterns did not survive, or a DataMatrix
        candidates, busy = _candidates(frame) if not found else ([], True)
        jobs = [
            _Job(_fitted(g, zoom is not None and g.module < _ZOOM_BELOW), _guess_box(g))
            for g in [g for g in guesses if g.module < _SMALL_MODULE][:_MAX_FITTED]
        ]
        # the prescription's symbology first; DataMatrix "detections" are the
        # commonest false alarm on a blank counter (a few frames in ten)
        boxes = unread_qr + [_guess_box(g) for g in guesses[:_MAX_REGIONS]] + candidates
        regions = _regions(boxes + unread_other, frame)
        jobs += [_Job(p, box) for p in EXTRA_PASSES for box in regions]
        detected = unread_qr or unread_other
        if not found and not detected and busy and regions != [_whole(frame)]:
            # nothing read or detected, not a blank view: a small code may hide where neither
            # the finder patterns nor the statistics pointed (blur, glare); last, so the
            # budget and the duty cycle gate it
            jobs.append(_Job(WHOLE_FRAME_PASS, _whole(frame)))
        if not jobs:
            self._account((self._clock() - start) * 1000.0, blank=not found)
            return list(found.values())
        fast_end = self._clock()
        stop, extra, runs, zooms = self._extra_passes(frame, jobs, found, fast_end, zoom)
        end = self._clock()
        self._credit -= (end - fast_end) * 1000.0  # overruns too: the next frames pay them back
        self._account(
            (end - start) * 1000.0,
            hard=True,
            budget_stop=stop == "budget",
            duty_stop=stop == "duty",
            extra=extra,
            runs=runs,
            zooms=zooms,
        )
        return list(found.values())

    def _extra_passes(
        self,
        frame: Grey,
        jobs: list[_Job],
        found: dict[tuple[str, bytes], Symbol],
        fast_end: float,
        zoom: Zoom | None,
    ) -> tuple[str, int, int, int]:
        """Run the jobs in order (each generic pass on every region before the next pass).

        Returns what stopped them ("budget", "duty" or ""), how many symbols
        they added, how many zxing-cpp calls they made and how many of those
        read the main stream.
        """
        limit = min(self.budget_ms, self._credit)
        stop = ""
        extra = runs = zooms = 0
        for job in jobs:
            p, box = job.p, job.box
            # a zoomed region's size is known only once it is read: take the last ratio's
            mpx = box.area * (self._zoom_area if p.zoom else p.scale * p.scale) / 1e6
            if mpx * 1e6 > _MAX_PASS_PIXELS:
                continue
            now = self._clock()
            expected = self._cost.get(p.name, 0.0) * mpx
            if limit <= 0 or (now - fast_end) * 1000.0 + expected > limit:
                stop = "budget" if limit >= self.budget_ms else "duty"
                break
            before = len(found)
            zoomed: list[int] = []
            self._run(p, frame, box, found, zoom, zoomed)
            extra += len(found) - before
            runs += 1
            if zoomed:
                zooms += 1
                mpx = zoomed[0] / 1e6
                self._zoom_area = zoomed[0] / max(box.area, 1)
            spent = (self._clock() - now) * 1000.0 / max(mpx, 1e-6)
            old = self._cost.get(p.name)
            self._cost[p.name] = spent if old is None else 0.8 * old + 0.2 * spent
        return stop, extra, runs, zooms

    def _run(
        self,
        p: _Pass,
        frame: Grey,
        box: _Box,
        found: dict[tuple[str, bytes], Symbol],
        zoom: Zoom | None,
        zoomed: list[int] | None = None,
    ) -> list[tuple[str, _Box]]:
        """Run one pass on a region, add its symbols to `found`.

        Returns the symbology and box (with a margin, in frame pixels) of each
        symbol it detected but could not decode. A zoom pass reads the region
        from `zoom` (its pixel count is appended to `zoomed`); without one, or
        when it gives nothing usable, the region is upscaled as a fitted pass would.
        """
        region = frame[box.y0 : box.y1, box.x0 : box.x1]
        prepared: Grey | None = None
        if p.zoom and zoom is not None:
            prepared = _zoomed(zoom, box, region)
            if prepared is not None and zoomed is not None:
                zoomed.append(prepared.size)
        if prepared is None:
            if p.zoom:  # no main stream: the frame's own pixels, upscaled
                p = _Pass(p.name, p.formats, scale=_FIT_SCALE[1] / 1.5, downscale=False)
            prepared = _prepare(region, p)
        # TextMode.Plain: GS1 data as its element string with GS (0x1D) separators, as the
        # classifier wants it; the default HRI mode would give "(01)…" and escape controls.
        try:
            results = zxingcpp.read_barcodes(
                prepared,
                formats=p.formats,
                try_rotate=True,
                try_downscale=p.downscale,
                try_invert=p.invert,
                text_mode=zxingcpp.TextMode.Plain,
                binarizer=p.binarizer,
                return_errors=True,
            )
        except (ValueError, TypeError, RuntimeError) as e:  # zxing-cpp refused the buffer
            raise DecodeError(f"frame of shape {frame.shape} could not be decoded: {e}") from None
        unread: list[tuple[str, _Box]] = []
        sx = region.shape[1] / prepared.shape[1]
        sy = region.shape[0] / prepared.shape[0]
        for r in results:
            pos = r.position
            corners = tuple(
                (round(c.x * sx) + box.x0, round(c.y * sy) + box.y0)
                for c in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
            )
            if not r.valid or r.error is not None:
                xs, ys = [c[0] for c in corners], [c[1] for c in corners]
                # some failures come without a position (all corners at 0): nowhere to look
                if max(xs) - min(xs) >= _MIN_SIDE and max(ys) - min(ys) >= _MIN_SIDE:
                    outline = _Box(min(xs), min(ys), max(xs) + 1, max(ys) + 1)
                    unread.append((r.symbology.name, _pad(outline, frame)))
                continue
            key = (r.symbology.name, r.bytes)
            if key in found:
                continue
            found[key] = Symbol(
                format=r.symbology.name,
                symbology_id=r.symbology_identifier,
                text=r.text,
                raw=r.bytes,
                position=corners,
            )
        return unread

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
            )


def _prepare(frame: Grey, p: _Pass) -> Grey:
    """The frame as the pass wants it: the view itself when nothing is to be done."""
    if p.scale == 1.0:
        return frame
    img = Image.fromarray(frame)  # copies a strided view once
    size = (max(1, round(img.width * p.scale)), max(1, round(img.height * p.scale)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR))


def _zoomed(zoom: Zoom, box: _Box, region: Grey) -> Grey | None:
    """The box from the main stream: a grey image larger than the region, else None."""
    got = zoom(box.x0, box.y0, box.x1, box.y1)
    if got is None:
        return None
    try:
        image = _check(got)
    except DecodeError:
        return None  # a misbehaving zoom must not cost the frame: the upscaled pass instead
    if image is None or image.shape[0] <= region.shape[0] or image.shape[1] <= region.shape[1]:
        return None
    return image


def _new_guesses(
    frame: Grey, found: dict[tuple[str, bytes], Symbol], unread: list[_Box]
) -> list[CodeGuess]:
    """QR Codes the finder patterns point at, away from the symbols already read or detected."""
    known = [_Box(*_outline(s.position)) for s in found.values()] + unread
    out = []
    for g in guess_codes(find_finders(frame, _FINDER_LEVELS), frame.shape):
        cx, cy = (g.x0 + g.x1) // 2, (g.y0 + g.y1) // 2
        centre = _Box(cx, cy, cx + 1, cy + 1)
        if not any(k.overlaps(centre) for k in known):
            out.append(g)
    return out


def _outline(corners: tuple[tuple[int, int], ...]) -> tuple[int, int, int, int]:
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _guess_box(g: CodeGuess) -> _Box:
    return _Box(g.x0, g.y0, g.x1, g.y1)


def _whole(frame: Grey) -> _Box:
    return _Box(0, 0, frame.shape[1], frame.shape[0])


def _pad(box: _Box, frame: Grey) -> _Box:
    """The box with room for a quiet zone and the finder's coarse outline, inside the frame."""
    m = max(_CELL * 2, (box.x1 - box.x0 + box.y1 - box.y0) // 8)
    return _Box(
        max(0, box.x0 - m),
        max(0, box.y0 - m),
        min(frame.shape[1], box.x1 + m),
        min(frame.shape[0], box.y1 + m),
    )


def _regions(boxes: list[_Box], frame: Grey) -> list[_Box]:
    """The boxes merged where they overlap, at most _MAX_REGIONS in the order given;
    the whole frame if they cover most of it."""
    merged: list[_Box] = []
    for b in boxes:
        for i, m in enumerate(merged):
            if m.overlaps(b):
                merged[i] = m.union(b)
                break
        else:
            if len(merged) < _MAX_REGIONS:
                merged.append(b)
    changed = True
    while changed:  # a union can reach a box it did not overlap before
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                if merged[i].overlaps(merged[j]):
                    merged[i] = merged[i].union(merged.pop(j))
                    changed = True
                    break
            if changed:
                break
    if sum(b.area for b in merged) > _WHOLE_FRAME * frame.size:
        return [_whole(frame)]
    return merged


def _box3(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mean over each cell's 3x3 neighbourhood (edge cells repeated)."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    out = p[0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            if dy or dx:
                out += p[dy : dy + h, dx : dx + w]
    return out / 9.0


def _candidates(frame: Grey) -> tuple[list[_Box], bool]:
    """Regions that look like a 2-D code, densest first (cheap statistics, no decoding),
    and whether any cell had strong steps both ways (False: a blank view).

    A QR Code or DataMatrix is a patch with strong grey-level steps both
    across and along, well above the sensor noise, with about as many dark
    as light pixels. Counters, hands, gradients, noise and wood grain fail the
    first tests; printed text is mostly light, so it fails the last.
    """
    h2, w2 = frame.shape[0] // 2, frame.shape[1] // 2
    c = _CELL // 2
    ch, cw = (h2 - 1) // c, (w2 - 1) // c
    if ch < 3 or cw < 3:
        return [], False
    # 2x2 sums: a quarter of the pixels to visit, and half the sensor noise
    rows = frame[0 : 2 * h2 : 2].astype(np.int16)
    rows += frame[1 : 2 * h2 : 2]
    half = rows[:, 0 : 2 * w2 : 2] + rows[:, 1 : 2 * w2 : 2]
    core = half[: ch * c, : cw * c]

    def cell_sums(a: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
        per_row = a.reshape(ch, c, cw * c).sum(axis=1, dtype=np.int32)
        sums: npt.NDArray[np.float64] = per_row.reshape(ch, cw, c).sum(axis=2, dtype=np.float64)
        return sums

    step = half[: ch * c, 1 : cw * c + 1] - core
    np.abs(step, out=step)
    across = cell_sums(step)
    step = half[1 : ch * c + 1, : cw * c] - core
    np.abs(step, out=step)
    along = cell_sums(step)
    per_pixel = 1.0 / (4 * c * c)  # 2x2 sums: grey levels times 4
    flat = max(float(np.percentile(np.minimum(across, along), 10)) * per_pixel, 0.5)
    edges = np.minimum(_box3(across), _box3(along)) * per_pixel
    strong = (edges >= _EDGE_MIN) & (edges >= _EDGE_OVER_FLAT * flat)
    if not strong.any():
        return [], False
    # share of dark pixels, only near the strong cells: text is the common look-alike
    near = _box3(strong.astype(np.float64)) > 0
    ys, xs = np.nonzero(near)
    local_mean = _box3(cell_sums(core)) / (c * c)
    blocks = core.reshape(ch, c, cw, c)[ys, :, xs, :]
    dark = np.zeros((ch, cw))
    dark[ys, xs] = (blocks < local_mean[ys, xs][:, None, None]).mean(axis=(1, 2))
    dark = _box3(dark)
    mask = strong & (dark >= _DARK_SHARE[0]) & (dark <= _DARK_SHARE[1])
    found = []
    for y0, x0, y1, x1, (py, px), cells in _components(mask, edges):
        h, w = y1 - y0 + 1, x1 - x0 + 1
        if cells < _MIN_CODE_CELLS or min(h, w) < _MIN_CODE_SIDE:
            continue
        if max(h, w) > _MAX_CODE_ASPECT * min(h, w):
            continue
        # a large patch (a page of text, a code filling the view) is not a small code the
        # fast pass missed: search a code's size around its densest cell
        half_side = _MAX_CODE_CELLS // 2
        if y1 - y0 >= _MAX_CODE_CELLS:
            y0, y1 = max(y0, py - half_side), min(y1, py + half_side - 1)
        if x1 - x0 >= _MAX_CODE_CELLS:
            x0, x1 = max(x0, px - half_side), min(x1, px + half_side - 1)
        score = float((edges[y0 : y1 + 1, x0 : x1 + 1] * mask[y0 : y1 + 1, x0 : x1 + 1]).sum())
        patch = _Box(x0 * _CELL, y0 * _CELL, (x1 + 1) * _CELL, (y1 + 1) * _CELL)
        found.append((score, _pad(patch, frame)))
    found.sort(key=lambda f: -f[0])
    return [b for _, b in found[:_MAX_REGIONS]], True


def _components(
    mask: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]
) -> list[tuple[int, int, int, int, tuple[int, int], int]]:
    """8-connected groups of cells: (y0, x0, y1, x1, highest-scoring cell, cell count) each."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    out = []
    for y, x in zip(*(a.tolist() for a in np.nonzero(mask)), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        todo = [(y, x)]
        y0, y1, x0, x1, peak, count = y, y, x, x, (y, x), 0
        while todo:
            cy, cx = todo.pop()
            count += 1
            if score[cy, cx] > score[peak]:
                peak = (cy, cx)
            y0, y1, x0, x1 = min(y0, cy), max(y1, cy), min(x0, cx), max(x1, cx)
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
        out.append((y0, x0, y1, x1, peak, count))
    return out
