"""The zxing-cpp passes: what each one does to a region, and running one.

A pass is one zxing-cpp call on a prepared version of a region of the frame (resized,
another binarizer, or read from the camera's full-resolution main stream). The fast
passes run on every frame; the extra passes only where there is a sign of a code the
fast pass did not read (see ordoscan.decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image, ImageFilter

from ordoscan.decoder import deblur, finders, modules, warp
from ordoscan.decoder.finders import CodeGuess
from ordoscan.decoder.regions import Box, Grey, pad
from ordoscan.errors import DecodeError

# The full-resolution twin of a frame: (x0, y0, x1, y1), a box of the frame in its own
# pixels (x1, y1 excluded), gives the same region from the camera's main stream, grey, or
# None when there is none. A real zoom: more pixels per module than the frame has.
Zoom = Callable[[int, int, int, int], Grey | None]
T = TypeVar("T")
# Whether a pass's time is up: a pass of several steps (versions of a deblurred region,
# grids of a solve, corners to square on) stops between two steps once it says so, so
# that one costly region cannot hold the scan loop past the frame's budget.
Stop = Callable[[], bool]

# zxing-cpp's "QRCode" also covers Micro QR and rMQR: only full QR Codes are read.
QR = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCodeModel1, zxingcpp.BarcodeFormat.QRCodeModel2]
)
DM = zxingcpp.BarcodeFormats([zxingcpp.BarcodeFormat.DataMatrix])
_MAX_SIDE = 16384  # larger arrays are refused rather than risk zxing-cpp's int sizes
MIN_SIDE = 8  # nothing decodable fits in fewer pixels
MAX_PASS_PIXELS = 16_000_000  # an upscaled pass larger than this is skipped (memory, time)

# Small codes found by their finder patterns (ordoscan.decoder.finders).
SMALL_MODULE = 3.5  # px per module: below this a found code gets a pass fitted to its size
ZOOM_BELOW = 3.0  # px per module: below this the main stream's region is asked for
_FIT_MODULE = 4.0  # px per module the fitted pass scales a small code to (zxing reads it well)
FIT_SCALE = (1.5, 3.0)  # ... within these factors
MAX_FITTED = 4  # small-code guesses given a fitted pass per frame, best first


@dataclass(frozen=True, slots=True)
class Symbol:
    """One decoded symbol, before classification."""

    format: str  # "QRCode", "DataMatrix", ... (zxing-cpp format name)
    symbology_id: str  # ISO/IEC 15424 identifier, e.g. "]Q1", "]d2"
    text: str  # decoded text (GS1: with the GS separators)
    raw: bytes  # the symbol's bytes
    position: tuple[tuple[int, int], ...]  # corners, clockwise from top-left


@dataclass(frozen=True, slots=True)
class Pass:
    """One zxing-cpp call on a prepared version of the frame."""

    name: str
    formats: zxingcpp.BarcodeFormats
    scale: float = 1.0  # resize factor applied to the frame first
    invert: bool = True  # also try light-on-dark symbols (phones in dark mode)
    downscale: bool = True  # let zxing-cpp also try smaller versions
    binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage
    zoom: bool = False  # read the region from the main stream (Zoom) instead of the frame
    erode: bool = False  # a 3x3 minimum first: dark modules regain what blooming took
    # grey levels under each of these turned black, the rest white, first (in turn)
    clip_levels: tuple[int, ...] = ()
    # undo the region's motion blur first, in turn at each version (deblur.Version: a multiple
    # of its measured length, the Wiener noise ratio, degrees off its measured angle)
    deblur: tuple[deblur.Version, ...] = ()
    # a deblur pass: nothing done unless the frame's region may be smeared (deblur.may_smear
    # at this anisotropy), before the main stream is read
    smear_floor: float = 0.0
    # undo the region's defocus disc first, these times its measured radius in turn
    defocus: tuple[float, ...] = ()
    flatten: bool = False  # QR Codes detected but unread: resampled on their own grid (warp.py)
    # each version of the region read again with the global-histogram binarizer when the
    # local one reads nothing (a deconvolution's ringing fools the local averages)
    histogram_too: bool = False
    # a QR Code's modules solved for on its grid, the disc as measured (modules.py)
    unmix: bool = False
    # ... the smear as measured instead (a deblur pass's region: modules.unsmeared)
    unsmear: bool = False
    # the region's QR finder patterns found again, the symbol squared on them (warp.squared)
    square: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """One extra pass on one region."""

    p: Pass
    box: Box


@dataclass(frozen=True, slots=True)
class Defocused:
    """A region as a defocus pass prepared it, and its disc as measured there."""

    prepared: Grey
    disc: deblur.Disc | None  # deblur.measure_defocus
    main: bool  # read from the main stream


@dataclass(slots=True)
class Smeared:
    """A region as a deblur pass prepared it, its smear as measured there (None: none), and
    that smear undone as deblur.deconvolve undoes it, once the pass has drawn it."""

    prepared: Grey
    main: bool  # read from the main stream
    motion: deblur.Motion | None
    undone: Grey | None = None


@dataclass(slots=True)
class Measured:
    """One frame's regions as its passes prepared and measured them, for a later pass on the
    same region to take rather than read and measure again (a zoom gives that frame's
    pixels only, so one a frame):
    - `defocused`, from a defocus pass, for the unmix pass after it (the main stream read
      and the measure are a third of its cost); keyed on the region and how a pass
      prepares it;
    - `smeared`, from a deblur pass, for the unsmear pass (the main stream read, the smear
      measured and undone: half its CPU time on gen2 dev 250 000-250 479, every pass
      due); keyed on the region (both are zoom passes, prepared alike)."""

    defocused: dict[tuple[Box, bool, float, bool], Defocused] = field(default_factory=dict)
    smeared: dict[Box, Smeared] = field(default_factory=dict)
    paused: Paused | None = None  # an unmix pass the frame's time stopped part way


Seen = list[tuple[zxingcpp.Barcode, "Corners"]]  # what zxing-cpp read, in a region's pixels


# The module solve (the unmix pass) costs a Pi 4 4-5 ms a solve, and a tilted page out of
# focus reads only after a grid's refinement: 30-50 solves, several frames' budget. Cut at
# each frame's budget and started again on the next, it seldom got there (af_miss dev
# presentations at pi4). Stopped by the budget, it is kept instead, with the region as its
# frame's main stream gave it (a copy: no camera buffer is held), and the decoder goes on
# with it on the next frames while the view keeps still (ordoscan.decoder: _resumed).
@dataclass(slots=True)
class Paused:
    """An unmix pass stopped between two steps: the rest of its steps (None, or what the
    symbol it drew read, last), on `prepared`, the region `box` of the frame it started on."""

    p: Pass
    box: Box
    prepared: Grey
    steps: Iterator[Seen | None]


def go_on(paused: Paused, frame: Grey, found: dict[tuple[str, bytes], Symbol],
          stop: Stop | None) -> bool | None:
    """The paused pass's steps until one reads (True: added to `found`, placed in `frame`,
    which shows the same view), they end (False), or `stop()` says the frame's time is up
    (None: `paused` keeps the rest)."""
    for seen in paused.steps:
        if seen:
            _collect(seen, paused.prepared, frame, paused.box, found)
            return True
        if stop is not None and stop():
            return None
    return False


# The fast pass: QR Codes first (cheap, and the prescription's symbology), then
# DataMatrix without the inverted try (printed packs and documents are dark on
# light, and the inverted try doubles the DataMatrix cost) nor the downscaled one: it
# read no DataMatrix more on gen2 dev 250 000-250 239 (43), gen1 dev sets 0-3 (49),
# ZXing's DataMatrix photos (23) nor dev presentations (33 in 2 058 frames), and it cost
# 16 % of the pass on those stills; in the scan loop on dev presentations at Pi 4 speed
# the pass went from 13.1 to 11.8 ms a turn (more than the QR pass's 8).
FAST_PASSES: tuple[Pass, ...] = (
    Pass("qr", QR),
    Pass("datamatrix", DM, invert=False, downscale=False),
)
# Extra passes on hard frames, most useful first (measured, see the module doc):
# small and blurred codes read once upscaled (x1.5 reads most of them, x2.5 a
# few more); global-histogram binarizing saves photos of codes with large even
# areas (ZXing's corpus); DataMatrix gets the same upscaling. Tried and dropped
# for earning nothing on top of these: x2, x0.75, sharpening, smoothing,
# histogram equalisation, contrast stretching, inverted DataMatrix.
EXTRA_PASSES: tuple[Pass, ...] = (
    Pass("qr-x1.5", QR, scale=1.5, downscale=False),
    Pass("qr-histogram", QR, binarizer=zxingcpp.Binarizer.GlobalHistogram),
    Pass("datamatrix-x1.5", DM, scale=1.5, invert=False, downscale=False),
    Pass("qr-x2.5", QR, scale=2.5, downscale=False),
)


# On a region with clipped whites (a phone screen or glare, over-exposed): light bleeds
# into the dark modules and thins them until zxing-cpp's binarizer loses them; a minimum
# filter on the main stream's pixels gives them back (on the second generator's
# development scenes: 3 of 13 ordonnances missed until then, all phones).
ERODE_PASS = Pass("qr-zoom-erode", QR, zoom=True, erode=True, downscale=False)
CLIPPED = 250  # grey level from which a pixel counts as clipped
CLIPPED_SHARE = 0.005  # a region with this share of clipped pixels gets ERODE_PASSES
# Blooming lifts a dark module's edges and small modules towards white, but short of the
# clipped white around them: every pixel under CLIP_LEVEL is ink, whatever its grey (a
# binarizer's local mean, pulled up by the clipped whites, calls it white). The main
# stream split at that level, then a 3x3 minimum, reads blown-out phones that the erode
# pass alone does not (on the second generator's dev split, seeds 0-159: 5 of the 6
# phones, blown out in a dim room or in dark mode, that every pass missed). Where the
# bloom is milder the split at 240 leaves the dark modules fat enough that the minimum
# merges them: the same main-stream read split lower next (on seeds 400-999, dim light
# and dark phones: 2 of the 3 blown-out phones every pass missed; 220 read those 5 too).
CLIP_LEVEL = 240
CLIP_LEVELS = (CLIP_LEVEL, 220)
ERODE_PASSES = (
    ERODE_PASS,
    Pass("qr-zoom-clip", QR, zoom=True, erode=True, clip_levels=CLIP_LEVELS, downscale=False),
)

# A page moving during a long exposure (dim light) smears the modules together: on a
# region whose blur measures as linear motion, the main stream deconvolved (see deblur.py;
# on the second generator's dev split it read 3 of 6 such codes tried); the length as
# measured, then a little shorter (the measure tends to overshoot by a pixel). One pass:
# the main stream's region is read and the motion measured once for both lengths. Each
# version is read again with the global-histogram binarizer (dev seeds 200 000-200 239:
# 130 -> 131 of 142; a Wiener noise ratio of 0.03 instead read 2 fewer). A third version
# at that noisier ratio, after the two: dim rooms at high gain (dev seeds 300 240-300 479,
# every pass due: 133 -> 135 of 143, with the measure on the busiest square, deblur.py).
# Last, where none of those read but one showed a QR Code detected but unread, the length
# as measured turned 4 degrees off the angle as measured, either way: the measure's
# direction can be a few degrees off (the tensor's leans towards the code's own axes), and
# a smear of 13-19 px undone that far off leaves the modules merged. Dev seeds
# 300 240-300 479 (tuned on): 136 -> 138 of 143, every pass due and deployed (3 degrees
# read one of the two); 200 240-200 479, 100 000-100 239 unchanged; af_miss 0-119
# 91 -> 92; the deblur passes' CPU as before (every pass due; +35-45% where the turned
# versions were undone without a detection asked: print smeared, mostly).
# Before the turned ones, where the smear's edges across it measure a defocus disc too
# (deblur.across: a page moving in dim light under a lens focused elsewhere), the smear
# and that disc undone together, at both noise ratios: undoing either blur alone leaves the
# modules merged. af_miss 0-119, every pass due: 97 -> 99 of 120; gen2 dev 250 000-250 239
# 132 -> 133 of 143 (tuned on both).
DEBLUR_VERSIONS = (
    deblur.UNDONE,
    deblur.Version(0.9, deblur.MOTION_NSR),
    deblur.Version(1.0, deblur.NOISY_NSR),
    deblur.Version(1.0, deblur.MOTION_NSR, disc=1.0),
    deblur.Version(1.0, deblur.NOISY_NSR, disc=1.0),
    deblur.Version(1.0, deblur.MOTION_NSR, -4.0),
    deblur.Version(1.0, deblur.MOTION_NSR, 4.0),
)
DEBLUR_PASSES = (Pass("qr-zoom-deblur", QR, zoom=True, deblur=DEBLUR_VERSIONS,
                      downscale=False,
                      histogram_too=True),)
# The same on a region whose middle does not measure smeared in the frame: after the generic
# passes, it measures the main stream's region itself, on its middle and then on its busiest
# square (deblur.estimate: a code off a merged region's middle), and does nothing where
# neither measures a smear. Measured inside the pass, not while the frame's jobs are drawn
# up, so that the budget and the duty cycle count it (its cost learnt apart). Most such
# regions measure no smear, and some a false one (paper grain, noise at high gain) that
# costs three deconvolutions read in vain: the frame's own region is looked at first (its
# busiest square's anisotropy: no FFT, a third of the main stream's pixels), and under
# LATE_SMEAR_FLOOR the main stream is neither read nor measured. The codes the pass read on
# the dev seeds measured 0.37-0.42 there; the regions whose main stream measured no smear,
# 0.12 in the median, 0.33 at the 90th percentile. Dev seeds 100 000-100 239, 200 240-479,
# 300 240-479, every pass due: main-stream reads 51, 48, 50 -> 21, 15, 18, the same reads.
LATE_SMEAR_FLOOR = 0.3
DEBLUR_LATE_PASSES = tuple(replace(p, name=f"{p.name}-late", smear_floor=LATE_SMEAR_FLOOR)
                           for p in DEBLUR_PASSES)
# Where the deblur passes read nothing, the modules solved on their lattice with the smear
# as the blur (modules.unsmeared: a tilted page moving in a dim room, its deconvolved
# finder patterns clear, its modules not). A pass of its own, last but the whole frame's
# (15-50 ms of x86 CPU a region, the finder patterns found and the grid chosen and refined
# included; half of that where it takes a deblur pass's main-stream read, smear measure
# and deconvolution of the region: Measured), on any small region with a sign of a code
# that may be smeared: gen2 dev 250 000-250 479, hard, 5 more of 292 codes read every pass
# due, 3-4 more deployed; see modules.py. Right after the generic passes on a region that
# measured smeared in the frame (its deblur pass first): gen2 dev 250 000-250 239 to 33 ms,
# deployed x1, 134 -> 135 of 143 (every pass due: 135), 1.90x -> 1.80x raw.
UNSMEAR_PASS = Pass("qr-zoom-unsmear", QR, zoom=True, downscale=False,
                    smear_floor=LATE_SMEAR_FLOOR, unsmear=True)

# A page nearer or farther than the lens is focused (autofocus hunting or lagging, or a
# fixed-focus lens) blurs each module into a disc: on a region whose steepest edges
# measure a disc of MIN_DEFOCUS px or more in the main stream (and no motion), the disc
# deconvolved (see deblur.py). It reads codes blurred by discs as wide as their modules,
# which no binarizer separates (tests/test_decoder_deblur.py). A disc wider than a module
# measures well short of its radius (the modules never reach the full contrast): the
# autofocus-miss dev family (ordoscan.devtools.af_miss) read some only at 1.5-1.9 times it.
# The rings of zeros in the region's spectrum measure such a disc far closer (on af_miss
# 4-29, 12 of the 16 discs of 4 px and more within 0.2 px, two read at about half): that
# radius is undone first, then the multiples of the short measure. Each
# version is read again with the global-histogram binarizer (a deconvolution's ringing
# fools the local averages). On af_miss 0-59, every pass due: 36 -> 38 of 60.
# Where no version reads, the next pass solves for the modules themselves on the grid the
# finder patterns' centres give (modules.py: one unknown a module, well conditioned where
# the per-pixel deconvolution is not): af_miss 0-59, every pass due, 38 -> 41 of 60. A
# pass of its own, so that its cost (about 10-45 ms of x86 CPU a region) is estimated and
# budgeted apart from the per-pixel one's.
# Where the rings' radius is the slope's own (within UNMIX_SAME of it) or the rings show
# none, the solve is tried again at UNMIX_LARGER times the slope's radius (unmix_radii): a
# disc under a module's width leaves the modules' own dip where its first zero would be.
# Every pass due: af_miss 0-119 101 -> 102 of 120, af_near 0-119 110 -> 111 (1.35 read
# as many, 1.85 one fewer); af_pale, pale, gen2 dev 250 000-250 239 unchanged.
# A lens's defocus is a disc only in the geometric limit; rounded off (aberrations,
# diffraction, the ISP) it is closer to a Gaussian, and solved with a disc such modules stay
# mixed. Where the region's spectrum fits a Gaussian far better than any disc
# (deblur.spectrum_blur), the solve assumes that Gaussian first (unmix_blurs), the discs
# after. On the dev presentations with the lens locked behind the page (af_miss, 400 000-
# 400 119, at pi4): never read within 3 s 6 -> 2-3 of 120, p95 1.66-2.14 -> 1.22-1.29 s;
# dev presentations and stills (gen2 dev, af_miss, af_near, pale, af_pale, gen1, ZXing)
# unchanged: their discs are not taken for Gaussians.
# A disc of several modules (no steep edge left for the slope's measure) is measured by the
# spectrum's rings alone, up to deblur.WIDE_DEFOCUS, and only solved for, at that radius: the
# per-pixel pass read none of them (af_miss 0-119, every pass due, 102 -> 104 of 120, both by
# this pass; dev presentations with the lens behind the page at pi4, mean 0.43 -> 0.41 s).
UNMIX_LARGER = 1.6
UNMIX_SAME = 0.2
UNMIX_PASS = Pass("qr-zoom-unmix", QR, zoom=True, defocus=(1.15,), downscale=False,
                  unmix=True)
DEFOCUS_PASSES = (
    Pass("qr-zoom-defocus", QR, zoom=True, defocus=(1.15, 1.3, 1.6), downscale=False,
         histogram_too=True),
    UNMIX_PASS,
)

# A QR Code detected but unread (a checksum error) on a surface that is not flat (cloth,
# a curled or creased page): its modules drift off zxing-cpp's one perspective grid;
# warp.py measures the drift and resamples the symbol on its own grid. Last on the
# regions of detected QR Codes only (on ZXing's photos of codes printed on cloth it read
# 5 of the 8 such symbols no other pass read).
FLATTEN_PASS = Pass("qr-flatten", QR, downscale=False, flatten=True)
FLATTEN_ZOOM_PASS = Pass("qr-zoom-flatten", QR, zoom=True, downscale=False, flatten=True)

# A QR Code whose finder patterns were found at a full corner but that no generic pass read:
# a strong tilt can leave zxing-cpp's detector unable to size it. Its finder patterns
# found again in the main stream's region, the symbol squared on them (warp.squared);
# the best SQUARE_TRIES corners among the SQUARE_FINDERS best-crossed patterns, sharing
# patterns or not: a grazing view bends the right angle to 55 degrees (a cosine up to
# SQUARE_MAX_COS; the search keeps a tight bound against print), and then which of the
# three is the corner is unclear (dev seed 300 411 read with the third choice). Where the
# affine squaring does not read, the projective map fitted to the three finders' outlines
# does (a wide lens 14 cm from a page tilted 40 degrees both ways: dev seed 250 185). Also
# run where a pass's zxing-cpp call failed on a QR Code it could not place (UNSIZED).
SQUARE_PASS = Pass("qr-zoom-square", QR, zoom=True, downscale=False, square=True)
SQUARE_FINDERS = 5
SQUARE_TRIES = 4
SQUARE_MAX_COS = 0.65
# A grazing view foreshortens a finder pattern across by up to half: its rows and columns
# measure modules up to twice apart (dev seed 250 089, a phone at 31 cm turned 33 degrees
# from the wide camera), which the search allows here only, in a region where a code was
# seen; the corner's legs may measure 0.6 of each other (the outline fit tells a wrong
# three apart); and where that finds no corner that reads, the finders are searched again
# on the region upscaled 1.5 times: the far ones are sheared to two pixels a module
# across, too few for the run lengths (dev seed 250 161).
SQUARE_MODULE_MATCH = 2.0
SQUARE_MIN_LEGS = 0.6
SQUARE_SCALES = (1.0, 1.5)
UNSIZED = "QRCode-unsized"  # run_pass's symbology for a QR Code failure with no position

# When the fast pass read nothing on a view that is not blank: its busy part upscaled.
BUSY_PASS = Pass("qr-busy-x1.5", QR, scale=1.5, downscale=False)


# A small code's region read from the main stream (Zoom) as it comes.
ZOOM_PASS = Pass("qr-zoom", QR, zoom=True)


def fitted(guess: CodeGuess, zoom: bool) -> Pass:
    """The pass for a small code whose module size the finder patterns gave."""
    if zoom:
        return ZOOM_PASS
    scale = min(max(_FIT_MODULE / guess.module, FIT_SCALE[0]), FIT_SCALE[1])
    return Pass("qr-fit", QR, scale=round(scale, 1), downscale=False)


def clipped(frame: Grey, box: Box) -> bool:
    """Whether the region's whites are clipped (over-exposed) enough for ERODE_PASS."""
    region = frame[box.y0 : box.y1, box.x0 : box.x1]
    return bool(region.size) and bool(
        np.count_nonzero(region >= CLIPPED) >= CLIPPED_SHARE * region.size
    )


def motion_blurred(frame: Grey, box: Box) -> bool:
    """Whether the region's middle measures as motion-blurred (DEBLUR_PASSES are then due)."""
    return deblur.estimate(frame[box.y0 : box.y1, box.x0 : box.x1], busiest=False) is not None


def out_of_focus(frame: Grey, box: Box) -> bool:
    """Whether the region measures a defocus disc in the frame itself (DEFOCUS_PASSES are
    then due first). The frame's own pixels, cheaper than the main stream's: a disc wide
    enough to measure here is wider still there (on af_miss 0-59, 14 of 29 regions
    measured one; on gen2 dev 300 240-300 359, in focus, 1 of 59)."""
    return deblur.defocus(frame[box.y0 : box.y1, box.x0 : box.x1]) is not None


def check(image: object) -> Grey | None:
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
    if h < MIN_SIDE or w < MIN_SIDE:
        return None
    return image


def run_pass(
    p: Pass,
    frame: Grey,
    box: Box,
    found: dict[tuple[str, bytes], Symbol],
    zoom: Zoom | None,
    zoomed: list[int] | None = None,
    measured: Measured | None = None,
    stop: Stop | None = None,
) -> list[tuple[str, Box]]:
    """Run one pass on a region, add its symbols to `found`.

    Returns the symbology and box (with a margin, in frame pixels) of each
    symbol it detected but could not decode; (UNSIZED, `box`) for a QR Code
    zxing-cpp failed on without placing it. A zoom pass reads the region
    from `zoom` (its pixel count is appended to `zoomed`); without one, or
    when it gives nothing usable, the region is upscaled as a fitted pass would.
    A defocus pass takes the region from `measured` when an earlier one on the
    same frame prepared it alike, and leaves it there for the next; the unsmear pass
    takes a deblur pass's region, smear and deconvolution alike. A pass of several
    steps takes no step after its first once `stop()` says its time is up.
    """
    key = (box, p.zoom, p.scale, p.erode)
    if p.defocus and measured is not None and key in measured.defocused:
        d = measured.defocused[key]
        if d.main and zoomed is not None:
            zoomed.append(d.prepared.size)  # its cost is learnt per main-stream pixel all the same
        return _run_defocus(p if d.main or not p.zoom else _upscaled(p), d, frame, box, found,
                            stop, measured)
    region = frame[box.y0 : box.y1, box.x0 : box.x1]
    if p.smear_floor and not deblur.may_smear(region, p.smear_floor):
        return []  # no sign of a smear: the main stream is not read
    if p.unsmear and measured is not None and box in measured.smeared:
        sm = measured.smeared[box]
        if sm.main and zoomed is not None:
            zoomed.append(sm.prepared.size)  # (as for the defocus passes above)
        return _unsmear(p, sm, frame, box, found, stop)
    prepared: Grey | None = None
    if p.zoom and zoom is not None:
        prepared = from_main_stream(zoom, box, region)
        if prepared is not None and zoomed is not None:
            zoomed.append(prepared.size)
    if prepared is None:
        if p.zoom:
            p = _upscaled(p)
        prepared = prepare(region, p)
    if p.clip_levels:
        # one read of the main stream, split at each level in turn until one reads
        split = (np.where(prepared >= level, 255, 0).astype(np.uint8) for level in p.clip_levels)
        return _read_each(p, (_eroded(x) if p.erode else x for x in split), frame, box, found,
                          stop)
    if p.erode:
        prepared = _eroded(prepared)
    if p.square:
        return _collect(_squared(prepared, p, stop), prepared, frame, box, found)
    if p.deblur or p.unsmear:
        sm = Smeared(prepared, p.zoom, deblur.estimate(prepared))
        if p.unsmear:
            return _unsmear(p, sm, frame, box, found, stop)
        if measured is not None:
            measured.smeared[box] = sm
        return _read_deblurred(p, sm, frame, box, found, stop)
    if p.defocus:
        # (still a zoom pass only when the main stream gave the region)
        d = Defocused(prepared, deblur.measure_defocus(prepared), main=p.zoom)
        if measured is not None:
            measured.defocused[key] = d
        return _run_defocus(p, d, frame, box, found, stop, measured)
    return _read(p, prepared, frame, box, found)


def _upscaled(p: Pass) -> Pass:
    """A zoom pass without a main stream: on the frame's own pixels, upscaled (a disc is
    undone as it is)."""
    return replace(p, zoom=False, scale=1.0 if p.defocus else FIT_SCALE[1] / 1.5,
                   downscale=False)


def _run_defocus(
    p: Pass, d: Defocused, frame: Grey, box: Box, found: dict[tuple[str, bytes], Symbol],
    stop: Stop | None = None, measured: Measured | None = None,
) -> list[tuple[str, Box]]:
    """A defocus pass on its prepared region (see run_pass); an unmix pass the budget stops
    part way is left in `measured` (Paused)."""
    radii = deblur.defocus_radii(d.disc, p.defocus)
    if not radii or (d.disc is not None and d.disc.wide and not p.unmix):
        return []  # (a disc of several modules: only the module solve reads it, on af_miss)
    if p.unmix:
        prepared = d.prepared.copy()  # (a zoom's pixels may be a camera buffer's, lent)
        paused = Paused(p, box, prepared, _unmix_steps(p, prepared, d.disc, radii[0]))
        if go_on(paused, frame, found, stop) is None and measured is not None:
            measured.paused = paused
        return []
    return _read_each(p, deblur.undone_defocus(d.prepared, radii), frame, box, found, stop)


def unmix_radii(disc: deblur.Disc | None, first: float) -> list[float]:
    """The discs the unmix pass solves with, in turn: `first` (the likeliest), then, where
    the rings' radius is the slope's own (within UNMIX_SAME) or the rings show none, the
    slope's UNMIX_LARGER multiple: a disc under a module's width leaves the modules' own dip
    in the spectrum where the disc's first zero would be, and the slope reads it short."""
    if disc is None or disc.wide or not UNMIX_LARGER:
        return [first]  # (a wide disc is the rings' own measure: nothing reads short)
    slope, ring = disc.slope, disc.ring
    larger = slope * UNMIX_LARGER
    if (ring is None or abs(ring - slope) <= UNMIX_SAME * slope) and larger > 1.1 * first:
        return [first, larger]
    return [first]


def unmix_blurs(disc: deblur.Disc | None, first: float) -> list[tuple[float, bool]]:
    """The blurs the unmix pass solves with, in turn, as (size in px, Gaussian or not): the
    spectrum's Gaussian first where it fits far better than a disc (deblur.spectrum_blur),
    then the discs of unmix_radii."""
    blurs = [(r, False) for r in unmix_radii(disc, first)]
    if disc is not None and disc.sigma is not None:
        blurs.insert(0, (disc.sigma, True))
    return blurs


def _unmix_steps(p: Pass, prepared: Grey, disc: deblur.Disc | None, first: float
                 ) -> Iterator[Seen | None]:
    """The unmix pass's steps on its prepared region: None after each solve, and last, what
    a symbol it drew read (in the region's pixels), once one reads. The blob search's
    corners are found once, for every blur tried (with the first blur's first solve)."""
    corners = None
    for size, gaussian in unmix_blurs(disc, first):
        if corners is None and min(prepared.shape) >= modules.MIN_REGION:
            corners = modules.polar_corners(prepared)
        for step in _read_solved(p, modules.unmixed(prepared, size, gaussian, corners)):
            yield step
            if step:
                return


def _read_solved(p: Pass, symbols: Iterator[modules.Step]) -> Iterator[Seen | None]:
    """A QR Code blurred past its modules, its modules solved for (modules.py): the clean
    `symbols` read in turn until one reads (what it read, in the prepared region's pixels);
    None for each step of the solve between them."""
    for step in symbols:
        if step is None:
            yield None
            continue
        clean, back = step
        results = zxingcpp.read_barcodes(
            clean, formats=p.formats, try_rotate=False, try_downscale=False, try_invert=False,
            text_mode=zxingcpp.TextMode.Plain,
        )
        seen = _in_region(results, back)
        if seen:
            yield seen
            return


def _unsmear(
    p: Pass, sm: Smeared, frame: Grey, box: Box, found: dict[tuple[str, bytes], Symbol],
    stop: Stop | None = None,
) -> list[tuple[str, Box]]:
    """The unsmear pass on a region as prepared and measured (see run_pass): nothing where
    no smear was measured."""
    if sm.motion is not None:
        steps = _read_solved(p, modules.unsmeared(sm.prepared, sm.motion, sm.undone))
        go_on(Paused(p, box, sm.prepared, steps), frame, found, stop)  # (not kept: see above)
    return []


def _read_deblurred(
    p: Pass, sm: Smeared, frame: Grey, box: Box, found: dict[tuple[str, bytes], Symbol],
    stop: Stop | None = None,
) -> list[tuple[str, Box]]:
    """A deblur pass's versions of its region read in turn until one reads (see run_pass);
    nothing where no smear was measured. Those turned off the measured angle only once an
    earlier one showed a QR Code detected but unread: most regions a deblur pass reads
    nothing on are print or a smear past undoing, where they would only add to the pass's
    cost. The version deblur.deconvolve makes is kept in `sm` as it is drawn (for the
    unsmear pass)."""
    motion = sm.motion
    if motion is None:
        return []
    detected: list[tuple[str, Box]] = []

    def versions() -> Iterator[Grey]:
        w = deblur.Wiener(sm.prepared)  # each version undone when drawn
        # measured across the smear once, when a version first asks
        disc = cache(lambda: deblur.across(sm.prepared, motion))
        for v in p.deblur:
            if v.turn and not any(symbology == "QRCode" for symbology, _ in detected):
                return
            radius = disc() if v.disc else 0.0
            if radius is None:
                continue  # no disc measured: the versions that undo one are left out
            image = deblur.undone(w, motion, v, radius)
            if v == deblur.UNDONE:
                sm.undone = image
            yield image

    return _read_each(p, versions(), frame, box, found, stop, detected)


def _eroded(image: Grey) -> Grey:
    """A 3x3 minimum: dark modules regain what blooming took."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.MinFilter(3)))


def _read_each(
    p: Pass,
    versions: Iterator[Grey],
    frame: Grey,
    box: Box,
    found: dict[tuple[str, bytes], Symbol],
    stop: Stop | None = None,
    detected: list[tuple[str, Box]] | None = None,
) -> list[tuple[str, Box]]:
    """The versions of one prepared region (one blur measure, each multiple of it undone)
    read in turn until one reads, or until `stop()` after the first (see run_pass); each
    symbol detected but unread on any version is added to `detected` as it is read (the
    versions may be drawn from it)."""
    unread: list[tuple[str, Box]] = []
    again = replace(p, binarizer=zxingcpp.Binarizer.GlobalHistogram) if p.histogram_too else None
    for version in _until(versions, stop):
        before = len(found)
        unread = _read(p, version, frame, box, found)
        if detected is not None:
            detected += unread
        if len(found) == before and again is not None:
            unread = _read(again, version, frame, box, found)
            if detected is not None:
                detected += unread
        if len(found) > before:
            break
    return unread


def _until(steps: Iterable[T], stop: Stop | None) -> Iterator[T]:
    """The steps in turn: the first always, each next one only while `stop()` is false
    (checked before drawing it: a version's work is done as it is drawn)."""
    for step in steps:
        yield step
        if stop is not None and stop():
            return


def _read(
    p: Pass, prepared: Grey, frame: Grey, box: Box, found: dict[tuple[str, bytes], Symbol]
) -> list[tuple[str, Box]]:
    """One zxing-cpp call on the prepared region (see run_pass)."""
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
    seen = [(r, _corners(r)) for r in results]
    if p.flatten:
        seen = _flattened(prepared, seen, p)
    return _collect(seen, prepared, frame, box, found)


def _collect(
    seen: list[tuple[zxingcpp.Barcode, Corners]], prepared: Grey, frame: Grey, box: Box,
    found: dict[tuple[str, bytes], Symbol],
) -> list[tuple[str, Box]]:
    """The symbols seen on the prepared region (corners in its pixels) added to `found`;
    the symbology and box of each detected but unread (see run_pass)."""
    region_h, region_w = box.y1 - box.y0, box.x1 - box.x0
    unread: list[tuple[str, Box]] = []
    sx = region_w / prepared.shape[1]
    sy = region_h / prepared.shape[0]
    for r, at in seen:
        corners = tuple((round(x * sx) + box.x0, round(y * sy) + box.y0) for x, y in at)
        if not r.valid or r.error is not None:
            xs, ys = [c[0] for c in corners], [c[1] for c in corners]
            if max(xs) - min(xs) >= MIN_SIDE and max(ys) - min(ys) >= MIN_SIDE:
                box_seen = Box(min(xs), min(ys), max(xs) + 1, max(ys) + 1)
                unread.append((r.symbology.name, pad(box_seen, frame)))
            elif r.symbology.name == "QRCode" and (UNSIZED, box) not in unread:
                # some failures come without a position (all corners at 0): three finder
                # patterns the detector could not size a symbol on, somewhere in the region
                unread.append((UNSIZED, box))
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


Corners = list[tuple[float, float]]  # top-left, top-right, bottom-right, bottom-left


def _corners(r: zxingcpp.Barcode) -> Corners:
    pos = r.position
    return [(c.x, c.y) for c in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]


def _flattened(
    prepared: Grey, seen: list[tuple[zxingcpp.Barcode, Corners]], p: Pass
) -> list[tuple[zxingcpp.Barcode, Corners]]:
    """The symbols of a flatten pass: each QR Code detected but unread, read once flattened,
    or (version 1) redrawn through its fourth corner searched for (warp.py); its corners
    taken back to the prepared region's. Unread: as it was."""
    out: list[tuple[zxingcpp.Barcode, Corners]] = []
    for r, corners in seen:
        extra = r.extra if isinstance(r.extra, dict) else {}  # None on some failures
        dim = None if r.valid else warp.dimension(extra.get("Version"))
        again: list[tuple[zxingcpp.Barcode, Corners]] = []
        if dim is not None:
            again = _reread(partial(warp.flatten, prepared, corners, dim), p)
        if dim == 21 and not again:  # no alignment pattern: the fourth corner may be wrong
            for tried in warp.fourth_corners(prepared, corners, dim):
                again = _reread(partial(warp.drawn, prepared, tried, dim), p)
                if again:
                    break
        out += again or [(r, corners)]
    return out


def _squared(
    prepared: Grey, p: Pass, stop: Stop | None = None
) -> list[tuple[zxingcpp.Barcode, Corners]]:
    """The symbols of a square pass: the region's best corners of finder patterns in turn,
    the symbol squared on each, then mapped through their outlines (warp.perspective),
    until one reads or `stop()` after the first (corners in the region's pixels); the
    finders searched at each of SQUARE_SCALES in turn."""
    outlined: set[frozenset[tuple[int, int]]] = set()
    for scale in _until(SQUARE_SCALES, stop):
        found = _square_finders(prepared, scale)
        tries = finders.corners(found, SQUARE_MAX_COS, disjoint=False,
                                min_legs=SQUARE_MIN_LEGS)[:SQUARE_TRIES]
        for _, (tl, tr, bl) in _until(tries, stop):
            module = (tl.module + tr.module + bl.module) / 3
            again = _reread(partial(warp.squared, prepared, (tl.x, tl.y), (tr.x, tr.y),
                                    (bl.x, bl.y), module), p)
            if any(r.valid for r, _ in again):
                return again
            # the same three through their outlines (any of them the corner), once
            three = frozenset((round(f.x), round(f.y)) for f in (tl, tr, bl))
            if three in outlined:
                continue
            outlined.add(three)
            mapped = warp.perspective(prepared, [(f.x, f.y, f.module) for f in (tl, tr, bl)])
            for image, back in mapped:
                again = _read_resampled(image, back, p)
                if any(r.valid for r, _ in again):
                    return again
    return []


def _square_finders(prepared: Grey, scale: float) -> list[finders.Finder]:
    """The region's SQUARE_FINDERS best-crossed finder patterns, searched on it upscaled by
    `scale`, in the region's pixels."""
    img = _resized(prepared, scale)
    found = finders.find_finders(img, module_match=SQUARE_MODULE_MATCH)[:SQUARE_FINDERS]
    return [replace(f, x=f.x / scale, y=f.y / scale, module=f.module / scale) for f in found]


def _reread(
    resample: Callable[[], tuple[Grey, npt.NDArray[np.float64]]], p: Pass
) -> list[tuple[zxingcpp.Barcode, Corners]]:
    """The symbols zxing-cpp reads on a resampled symbol (`resample()`: the image and the
    transform from its pixels back to the region's), their corners in the region."""
    try:
        image, back = resample()
    except np.linalg.LinAlgError:  # degenerate corners: nothing to resample
        return []
    return _read_resampled(image, back, p)


def _read_resampled(
    image: Grey, back: npt.NDArray[np.float64], p: Pass
) -> list[tuple[zxingcpp.Barcode, Corners]]:
    """The symbols zxing-cpp reads on a resampled symbol, their corners taken back to the
    region's pixels through `back`."""
    found = zxingcpp.read_barcodes(
        image,
        formats=p.formats,
        try_downscale=False,
        try_invert=p.invert,
        text_mode=zxingcpp.TextMode.Plain,
        binarizer=p.binarizer,
    )
    return _in_region(found, back)


def _in_region(
    results: list[zxingcpp.Barcode], back: npt.NDArray[np.float64]
) -> list[tuple[zxingcpp.Barcode, Corners]]:
    """Symbols read on a resampled or redrawn image, their corners taken back to the
    region's pixels through `back`."""
    out: list[tuple[zxingcpp.Barcode, Corners]] = []
    for r in results:
        xs, ys = zip(*_corners(r), strict=True)
        bx, by = warp.project(back, np.array(xs), np.array(ys))
        out.append((r, list(zip(bx.tolist(), by.tolist(), strict=True))))
    return out


def prepare(frame: Grey, p: Pass) -> Grey:
    """The frame as the pass wants it: the view itself when nothing is to be done."""
    return _resized(frame, p.scale)


def _resized(frame: Grey, scale: float) -> Grey:
    """The frame scaled by `scale` (bilinear): the view itself at 1."""
    if scale == 1.0:
        return frame
    img = Image.fromarray(frame)  # copies a strided view once
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR))


def from_main_stream(zoom: Zoom, box: Box, region: Grey) -> Grey | None:
    """The box from the main stream: a grey image larger than the region, else None."""
    got = zoom(box.x0, box.y0, box.x1, box.y1)
    if got is None:
        return None
    try:
        image = check(got)
    except DecodeError:
        return None  # a misbehaving zoom must not cost the frame: the upscaled pass instead
    if image is None or image.shape[0] <= region.shape[0] or image.shape[1] <= region.shape[1]:
        return None
    return image
