"""QR Code finder patterns, found by their own structure at any scale (numpy, no decoding).

A QR Code has three finder patterns: a dark 3x3 square in a light ring in a
dark ring, which any line through its centre crosses as dark, light, dark,
light, dark runs in the proportions 1:1:3:1:1, whatever the rotation. Rows and
columns of a binarized image are scanned for such runs, a row hit is kept when
a column hit crosses it at the same place with the same module size, and the
confirmed centres are grouped in threes that form the corner of a square (two
legs of about the same length at about a right angle). Nothing here depends on
what is around the code: a small code between lines of text is found as well
as one alone on a counter. An image pyramid (each level half the size of the
one before) keeps the binarizing window about the size of a finder pattern at
every scale.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

Grey = npt.NDArray[np.uint8]
_I = npt.NDArray[np.int64]
_F = npt.NDArray[np.float64]
T = TypeVar("T")
# runs fn(*args) and gives what waits for its value: on this thread when asked (later), or
# on the decoder's side core from now (Decoder._beside); called from the scan thread only
Beside = Callable[..., Callable[[], Any]]

# Module sizes searched at each level of the pyramid, in that level's pixels: under
# 1.2 px the runs cannot be told apart; over 5 px the next level sees them better.
_MODULE = (1.2, 5.0)
_BLOCK = 8  # pixels a side of the blocks whose grey-level range says "flat" (no code here)
_MIN_RANGE = 24  # grey levels: a smaller range in a block and its neighbours is flat
_NOISE_RANGE = 2.0  # ... or this many times the range of the frame's flattest blocks (noise)
# ... or, up to _NOISE_CAP, this many times the range of the flattest block within
# _NOISE_REACH blocks (the noise there). The ISP's tone curve lifts the shadows' noise: a
# dim counter at high gain gives its blocks ranges of 20-29 grey levels, where the lit page
# beside it gives 10-14 (the frame's flattest; af_miss dev presentation 400 042). Binarized,
# that noise made 1:1:3:1:1 runs by the thousand, all refused at the end (_MIN_CONTRAST),
# and the search cost a dim room's frame 1.7 times a lit one's (dev presentations 400 000-
# 400 119 and af_miss, every 6th frame: 22 ms of x86 CPU against 13 ms; 14 ms with this,
# no code guess lost on any frame; gen2, af_miss, pale, gen1 dev stills and ZXing's photos
# read the same with every pass due).
_NOISE_REACH = 6
_LOCAL_NOISE = 2.5
_NOISE_CAP = 36
_SLACK = 0.75  # pixels of run-length tolerance on top of zxing's (blur at 2-3 px a module)
_GRID = 4  # pixels a side of the cells that collect the row and column hits
_MIN_CROSSINGS = 2  # row hits and column hits a finder centre needs, each way
_MODULE_MATCH = 1.5  # the rows' and the columns' module sizes agree within this factor
_MIN_LEVEL_SIDE = 48  # a pyramid level smaller than this has no room for a code
_MAX_CENTRES = 40  # finder centres kept per frame, best confirmed first
_MAX_HITS = 20_000  # run-length hits kept per level (a page of fine print gives many)
# finder to finder, in modules: 14 (version 1; rows across a turned code overstate the
# module up to 1.4x, so 9) to 50 (version 9: larger codes are the fast pass's)
_LEG_MODULES = (9.0, 50.0)
_PAIR_HITS = 4  # a pair (no third finder seen) is proposed only if both are well crossed
_MAX_PAIRS = 4  # pairs of finders (third one unseen) proposed per frame, best crossed first


@dataclass(frozen=True, slots=True)
class Finder:
    """One confirmed finder pattern: its centre and module size, in frame pixels."""

    x: float
    y: float
    module: float
    hits: int  # rows and columns that crossed it with the right proportions


@dataclass(frozen=True, slots=True)
class CodeGuess:
    """Where a QR Code probably is: a box in frame pixels and its module size."""

    x0: int
    y0: int
    x1: int
    y1: int
    module: float  # frame pixels per module, from the finder patterns
    finders: int  # 3 for a full corner, 2 for a pair whose third finder was not seen


def _binarize(img: Grey) -> npt.NDArray[np.bool_]:
    """Dark pixels: below the mean of their 3x3 blocks, in blocks that are not flat.

    The threshold is one value per block (block means, smoothed over the
    neighbours), which costs a few reductions instead of a per-pixel window.
    """
    h, w = img.shape
    bh, bw = h // _BLOCK, w // _BLOCK
    if bh < 3 or bw < 3:
        return np.zeros((h, w), np.bool_)
    core = img[: bh * _BLOCK, : bw * _BLOCK].reshape(bh, _BLOCK, bw, _BLOCK)
    hi, lo, sums = _block_stats(img[: bh * _BLOCK, : bw * _BLOCK])
    spread = hi.astype(np.int16) - lo
    noise = float(np.percentile(spread, 10))
    floor = max(_MIN_RANGE, _NOISE_RANGE * noise)
    local = np.minimum(_LOCAL_NOISE * _min_around(spread, _NOISE_REACH), _NOISE_CAP)
    busy = spread >= np.maximum(local, floor)
    near = _max3(busy)  # a finder may straddle a busy block and a calmer one
    means = sums.astype(np.float32) / np.float32(_BLOCK * _BLOCK)  # exact: sums < 2**24
    thr = _mean3(means)
    # for whole grey levels, p < thr is p < ceil(thr): one uint8 comparison per pixel
    # (thr <= 255, a mean's); a flat block's 0 makes nothing dark there
    limit = np.ceil(thr).astype(np.uint8)
    limit[~near] = 0
    inner = (core < limit[:, None, :, None]).reshape(bh * _BLOCK, bw * _BLOCK)
    if inner.shape == (h, w):  # a camera's frame sizes: no border, no copy into a frame
        return inner
    dark = np.zeros((h, w), np.bool_)
    dark[: bh * _BLOCK, : bw * _BLOCK] = inner
    return dark


def _block_stats(img: Grey) -> tuple[Grey, Grey, npt.NDArray[np.uint16]]:
    """Max, min and sum of each _BLOCK x _BLOCK block (the image a whole number of blocks).

    Element-wise over the rows of each band of blocks (whole contiguous rows), then over
    strided columns of the band's result (an eighth of the pixels): several times cheaper
    than numpy's reductions over the axes of a (rows, _BLOCK, columns, _BLOCK) view, which
    walk 8-pixel runs one at a time, and than starting with the strided columns."""
    h, w = img.shape
    bands = img.reshape(h // _BLOCK, _BLOCK, w)
    hi = bands[:, 0].copy()
    lo = hi.copy()
    total = hi.astype(np.uint16)  # at most 64 x 255: no overflow
    for k in range(1, _BLOCK):
        row = bands[:, k]
        np.maximum(hi, row, out=hi)
        np.minimum(lo, row, out=lo)
        total += row
    bhi, blo, btotal = hi[:, 0::_BLOCK].copy(), lo[:, 0::_BLOCK].copy(), total[:, 0::_BLOCK].copy()
    for k in range(1, _BLOCK):
        np.maximum(bhi, hi[:, k::_BLOCK], out=bhi)
        np.minimum(blo, lo[:, k::_BLOCK], out=blo)
        btotal += total[:, k::_BLOCK]
    return bhi, blo, btotal


def _min_around(a: npt.NDArray[np.int16], r: int) -> npt.NDArray[np.int16]:
    """Each cell's minimum over the cells within r of it, both ways (those in the array)."""
    n = 2 * r + 1
    out = np.pad(a, r, constant_values=np.iinfo(a.dtype).max)
    for _ in range(2):  # along the columns, then (transposed) along the rows
        m, span = out, 1  # m[i]: the minimum of out[i : i + span]
        while 2 * span <= n:
            m, span = np.minimum(m[:-span], m[span:]), 2 * span
        if span < n:
            m = np.minimum(m[: m.shape[0] - (n - span)], m[n - span :])
        out = m.T
    return np.ascontiguousarray(out)


def _max3(a: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Each cell or any of its 8 neighbours."""
    out = a.copy()
    out[1:] |= a[:-1]
    out[:-1] |= a[1:]
    rows = out.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _sum3(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Sum over each cell's 3x3 neighbourhood (zero outside)."""
    out = a.copy()
    out[1:] += a[:-1]
    out[:-1] += a[1:]
    rows = out.copy()
    out[:, 1:] += rows[:, :-1]
    out[:, :-1] += rows[:, 1:]
    return out


def _mean3(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    n = _sum3(np.ones_like(a))
    out: npt.NDArray[np.float32] = _sum3(a) / n
    return out


def _line_hits(dark: npt.NDArray[np.bool_]) -> tuple[_I, _F, _F]:
    """1:1:3:1:1 dark-first runs along each row: (row, centre, module) of each."""
    # where a row changes colour: on the flattened image (one 1-D scan, several times
    # cheaper than a 2-D nonzero), leaving out each row's last pixel against the next row's
    w = dark.shape[1]
    flat = dark.view(np.uint8).ravel()
    at = np.flatnonzero(flat[1:] != flat[:-1])
    cols = at % w
    keep = cols != w - 1
    at, cols = at[keep], cols[keep]
    n = at.size - 5
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    # Five runs from each change: most are ruled out by three cheap tests on whole arrays
    # (a dark first run, the five in one row, about 7 modules long in all); the run
    # lengths are taken for the few left only (text gives hundreds of thousands of runs).
    total = at[5:] - at[:n]  # the five runs' length, when they are in one row
    near = flat[at[:n] + 1].view(np.bool_)  # a run starts right after each change
    near &= cols[:n] + total < w  # the fifth change in the same row
    near &= (total >= math.floor(7 * _MODULE[0])) & (total <= math.ceil(7 * _MODULE[1]))
    first = np.flatnonzero(near)
    # each of the six changes as a whole array (a 2-D gather and its transposed sums cost
    # twice as much on a page of print); a run's length is the step between two changes
    change = [at[first + k] for k in range(6)]
    u = total[first] / 7.0
    ok = (u >= _MODULE[0]) & (u <= _MODULE[1])
    # zxing's tolerance (half a module, 1.5 for the centre) plus some slack for blur at small scales
    side_tol = 0.5 * u + _SLACK
    for k in (0, 1, 3, 4):
        ok &= np.abs((change[k + 1] - change[k]) - u) <= side_tol
    ok &= np.abs((change[3] - change[2]) - 3 * u) <= 1.5 * u + _SLACK
    idx = np.nonzero(ok)[0][:_MAX_HITS]
    # the first dark run starts one pixel after its change; the centre is halfway along the
    # third run
    centre = (cols[first[idx]] + 1 + (change[2][idx] - change[0][idx])
              + (change[3][idx] - change[2][idx]) / 2.0)
    return at[first[idx]] // w, centre, u[idx]


def _grid(ys: _F, xs: _F, shape: tuple[int, int]) -> tuple[_I, npt.NDArray[np.float32]]:
    """Each hit's grid cell, and per grid cell the hits over its 3x3 cells."""
    gy = np.minimum((ys / _GRID).astype(np.int64), shape[0] - 1)
    gx = np.minimum((xs / _GRID).astype(np.int64), shape[1] - 1)
    key = gy * shape[1] + gx
    size = shape[0] * shape[1]
    return key, _sum3(np.bincount(key, minlength=size).astype(np.float32).reshape(shape))


def _sum3_at(key: _I, weights: _F, shape: tuple[int, int], gy: _I, gx: _I) -> _F:
    """_sum3 of the hits' weights per grid cell, at the cells (gy, gx) only: the same
    float32 additions in the same order (rows, then columns), without the whole grid."""
    a = np.zeros((shape[0] + 2, shape[1] + 2), np.float32)  # zero outside, as _sum3
    a[1:-1, 1:-1] = np.bincount(key, weights=weights, minlength=shape[0] * shape[1]).astype(
        np.float32).reshape(shape)

    def rows(dx: int) -> npt.NDArray[np.float32]:
        c = gx + 1 + dx
        out: npt.NDArray[np.float32] = (a[gy + 1, c] + a[gy, c]) + a[gy + 2, c]
        return out

    return ((rows(0) + rows(-1)) + rows(1)).astype(np.float32)


# Where a finder pattern's parts are, around its centre, in modules, whatever its rotation:
# the 3x3 centre is dark within 1 module; a circle of 2.2 modules runs in the light ring
# (between 1.5 and 2.5 modules from the centre along the axes, 1.56 to 2.2 at any angle).
# Rows and columns cross a turned pattern slantwise and overstate its module by up to
# 1.4x (45 degrees): the ring is also looked for on smaller circles.
_ANGLES = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_CENTRE = np.concatenate(
    [[[0.0, 0.0]], 0.8 * np.stack([np.cos(_ANGLES[::2]), np.sin(_ANGLES[::2])], 1)]
)
_RINGS = [r * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], 1) for r in (2.2, 1.9, 1.6)]
_CENTRE_DARK = 0.6  # share of the centre's samples that must be dark (blur, an inexact centre)
_RING_LIGHT = 0.6  # share of a ring's samples that must be light
# grey levels the light ring must be lighter than the centre, on average over their samples:
# sensor noise and wood grain binarized in a dim patch make 1:1:3:1:1 runs both ways by
# chance, with a ring about as dark as the centre (dev presentations' empty counters: 3
# grey levels in the median, 95 % under 10; the finder patterns of their codes read: 43
# and over)
_MIN_CONTRAST = 12.0


def _looks_like_finder(img: Grey, dark: npt.NDArray[np.bool_], x: _F, y: _F, u: _F
                       ) -> npt.NDArray[np.bool_]:
    """A dark centre in a light ring at each (x, y) of module u (a letter's blot has no
    ring), the ring lighter by _MIN_CONTRAST (noise has no contrast); `dark`: img binarized."""
    h, w = dark.shape

    def at(offsets: npt.NDArray[np.float64]) -> tuple[_I, _I]:
        sx = np.clip(np.rint(x[:, None] + offsets[None, :, 0] * u[:, None]), 0, w - 1)
        sy = np.clip(np.rint(y[:, None] + offsets[None, :, 1] * u[:, None]), 0, h - 1)
        return sy.astype(np.int64), sx.astype(np.int64)

    def mean(a: npt.NDArray[Any], where: tuple[_I, _I]) -> _F:
        got: _F = a[where].mean(axis=1)
        return got

    centre = at(_CENTRE)
    rings = [at(offsets) for offsets in _RINGS]
    ring = np.zeros(x.shape, np.bool_)
    for where in rings:
        ring |= 1 - mean(dark, where) >= _RING_LIGHT
    contrast: _F = np.max([mean(img, where) for where in rings], axis=0) - mean(img, centre)
    looks: npt.NDArray[np.bool_] = (mean(dark, centre) >= _CENTRE_DARK) & ring
    return looks & (contrast >= _MIN_CONTRAST)


def later(fn: Callable[..., T], *args: object) -> Callable[[], T]:
    """fn(*args), run on this thread when its value is asked for (see Beside)."""
    return lambda: fn(*args)


def _column_hits(dark: npt.NDArray[np.bool_]) -> tuple[_I, _F, _F]:
    """_line_hits along the columns: "row" is x, "centre" is y."""
    return _line_hits(_transposed(dark))


_TILE = 64  # rows of the image transposed at a time: 64 bytes, a cache line, a column


def _transposed(a: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """a.T, contiguous: a band of _TILE rows at a time, so each output row is written a
    cache line at a time (numpy's copy of a transposed view reads one byte of every image
    row for each output row: twice the time on a whole frame)."""
    h, w = a.shape
    out = np.empty((w, h), a.dtype)
    for y in range(0, h, _TILE):
        out[:, y : y + _TILE] = a[y : y + _TILE].T
    return out


def _level_finders(img: Grey, scale: float, module_match: float = _MODULE_MATCH,
                   beside: Beside = later) -> list[Finder]:
    """Finder centres of one pyramid level, in frame pixels (the column hits `beside`).

    A centre is a grid cell crossed by at least two row hits and two column
    hits (the 3-module centre square is crossed by about 3 modules' worth of
    pixel rows each way) of about the same module size, the best-crossed cell
    among its neighbours, with a dark centre in a light ring around it.
    """
    dark = _binarize(img)
    columns = beside(_column_hits, dark)
    try:
        ry, rx, ru = _line_hits(dark)
    finally:
        cx, cy, cu = columns()
    if not ry.size or not cx.size:
        return []
    h, w = dark.shape
    shape = (h // _GRID + 1, w // _GRID + 1)
    ryf, cxf = ry.astype(np.float64), cx.astype(np.float64)
    rkey, rn = _grid(ryf, rx, shape)
    ckey, cn = _grid(cy, cxf, shape)
    both = (rn >= _MIN_CROSSINGS) & (cn >= _MIN_CROSSINGS)
    if not both.any():
        return []
    score = np.where(both, np.minimum(rn, cn), 0).astype(np.float32)
    peak = score.copy()  # the best cell of its neighbourhood
    peak[1:] = np.maximum(peak[1:], score[:-1])
    peak[:-1] = np.maximum(peak[:-1], score[1:])
    rows = peak.copy()
    peak[:, 1:] = np.maximum(peak[:, 1:], rows[:, :-1])
    peak[:, :-1] = np.maximum(peak[:, :-1], rows[:, 1:])
    gy, gx = np.nonzero(both & (score >= peak))
    n_r, n_c = rn[gy, gx], cn[gy, gx]
    ur = _sum3_at(rkey, ru, shape, gy, gx) / n_r
    uc = _sum3_at(ckey, cu, shape, gy, gx) / n_c
    # row hits place x exactly and column hits y; each is spread the other way
    rx_sum, cx_sum = _sum3_at(rkey, rx, shape, gy, gx), _sum3_at(ckey, cxf, shape, gy, gx)
    ry_sum, cy_sum = _sum3_at(rkey, ryf, shape, gy, gx), _sum3_at(ckey, cy, shape, gy, gx)
    x = ((rx_sum + cx_sum) / (n_r + n_c)).astype(np.float64) + 0.5
    y = ((ry_sum + cy_sum) / (n_r + n_c)).astype(np.float64) + 0.5
    u = ((ur + uc) / 2).astype(np.float64)
    keep = np.maximum(ur, uc) <= module_match * np.minimum(ur, uc)
    keep &= _looks_like_finder(img, dark, x, y, u)
    hits = score[gy, gx].astype(np.int64)
    return [
        Finder(fx * scale, fy * scale, fu * scale, n)
        for fx, fy, fu, n in zip(
            x[keep].tolist(), y[keep].tolist(), u[keep].tolist(), hits[keep].tolist(), strict=True
        )
    ]


def _pyramid(frame: Grey, n: int = 4) -> list[tuple[Grey, float]]:
    """The frame and up to n - 1 halvings of it, each with its scale."""
    levels = [(frame, 1.0)]
    img, scale = frame, 1.0
    while min(img.shape) // 2 >= _MIN_LEVEL_SIDE and len(levels) < n:
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        s = img[0:h:2, 0:w:2].astype(np.uint16) + img[1:h:2, 0:w:2]
        s += img[0:h:2, 1:w:2]
        s += img[1:h:2, 1:w:2]
        img = ((s + 2) >> 2).astype(np.uint8)
        scale *= 2
        levels.append((img, scale))
    return levels


def _coarse_finders(frame: Grey, levels: int, module_match: float) -> list[Finder]:
    """The finder centres of the pyramid's levels after the first."""
    seen: list[Finder] = []
    for img, scale in _pyramid(frame, levels)[1:]:
        seen.extend(_level_finders(np.ascontiguousarray(img), scale, module_match))
    return seen


def find_finders(frame: Grey, levels: int = 3, module_match: float = _MODULE_MATCH,
                 beside: Beside = later) -> list[Finder]:
    """Finder patterns of QR Codes in a grey frame, best confirmed first (`module_match`:
    how far the rows' and the columns' module sizes may differ, as a factor).

    `beside` runs part of the work elsewhere (the decoder's side core: the coarser levels,
    and the full-size level's column hits, beside its row hits); the same finders."""
    coarse = beside(_coarse_finders, frame, levels, module_match) if levels > 1 else None
    try:
        seen = _level_finders(np.ascontiguousarray(frame), 1.0, module_match, beside)
    finally:  # (joined whatever happened: the frame is lent)
        seen_coarse = [] if coarse is None else coarse()
    seen.extend(seen_coarse)
    if not seen:
        return []
    seen.sort(key=lambda f: -f.hits)
    seen = seen[: _MAX_CENTRES * 4]
    xs = np.array([f.x for f in seen])
    ys = np.array([f.y for f in seen])
    us = np.array([f.module for f in seen])
    free = np.ones(len(seen), np.bool_)
    found: list[Finder] = []
    for i in range(len(seen)):
        if not free[i]:
            continue
        found.append(seen[i])
        if len(found) == _MAX_CENTRES:
            break
        # a pattern seen again (next cell, next level) is the same pattern
        free &= (np.abs(xs - xs[i]) >= 2 * us[i]) | (np.abs(ys - ys[i]) >= 2 * us[i])
    return found


def corners(finders: list[Finder], max_cos: float = 0.3, disjoint: bool = True,
            min_legs: float = 0.8) -> list[tuple[float, tuple[Finder, Finder, Finder]]]:
    """Triples of finder patterns that form a QR Code's three corners, best first (with
    `disjoint`, none sharing a pattern): (how far from a right isosceles corner, (the
    right-angle corner, then top-right and bottom-left as seen: y down, the top-right one
    clockwise of the bottom-left)). `max_cos`: how far perspective may bend the right
    angle; `min_legs`: how far it may shorten one leg against the other (their ratio)."""
    if len(finders) < 3:
        return []
    pts = np.array([(f.x, f.y) for f in finders])
    mod = np.array([f.module for f in finders])
    tri = np.array(list(itertools.combinations(range(len(finders)), 3)))
    best: list[tuple[float, tuple[int, int, int]]] = []
    for corner in range(3):  # each of the three as the right-angle corner
        ia = tri[:, corner]
        ib = tri[:, (corner + 1) % 3]
        ic = tri[:, (corner + 2) % 3]
        va, vb = pts[ib] - pts[ia], pts[ic] - pts[ia]
        la, lb = np.hypot(*va.T), np.hypot(*vb.T)
        um = (mod[ia] + mod[ib] + mod[ic]) / 3
        umin = np.minimum(np.minimum(mod[ia], mod[ib]), mod[ic])
        umax = np.maximum(np.maximum(mod[ia], mod[ib]), mod[ic])
        cos = (va * vb).sum(axis=1) / np.maximum(la * lb, 1e-9)
        legs = np.minimum(la, lb) / np.maximum(np.maximum(la, lb), 1e-9)
        # perspective bends the right angle and the legs' ratio: loose bounds
        ok = (umax <= 1.5 * umin) & (np.abs(cos) <= max_cos) & (legs >= min_legs)
        ok &= np.minimum(la, lb) >= _LEG_MODULES[0] * um
        ok &= np.maximum(la, lb) <= _LEG_MODULES[1] * um
        for i in np.nonzero(ok)[0].tolist():
            err = abs(float(cos[i])) + (1 - float(legs[i])) + float(umax[i] / umin[i]) - 1
            best.append((err, (int(ia[i]), int(ib[i]), int(ic[i]))))
    best.sort()
    used: set[int] = set()
    out: list[tuple[float, tuple[Finder, Finder, Finder]]] = []
    for err, (a, b, c) in best:
        if disjoint and {a, b, c} & used:
            continue
        used |= {a, b, c}
        fa, fb, fc = finders[a], finders[b], finders[c]
        if (fb.x - fa.x) * (fc.y - fa.y) - (fb.y - fa.y) * (fc.x - fa.x) < 0:
            fb, fc = fc, fb
        out.append((err, (fa, fb, fc)))
    return out


def guess_codes(finders: list[Finder], shape: tuple[int, int]) -> list[CodeGuess]:
    """Boxes where finder patterns form a QR Code's corners: full corners first, then pairs."""
    h, w = shape
    guesses: list[tuple[float, CodeGuess]] = []
    for err, (fa, fb, fc) in corners(finders):
        xs = [fa.x, fb.x, fc.x, fb.x + fc.x - fa.x]
        ys = [fa.y, fb.y, fc.y, fb.y + fc.y - fa.y]
        u = (fa.module + fb.module + fc.module) / 3
        guesses.append((err, _box(xs, ys, u, 8.0, 3, w, h)))
    pairs: list[tuple[float, CodeGuess]] = []
    for i, j in itertools.combinations(range(len(finders)), 2):
        if guesses:
            break  # a full corner was seen: pairs would be its leftovers or print
        fi, fj = finders[i], finders[j]
        if min(fi.hits, fj.hits) < _PAIR_HITS:
            continue
        u = (fi.module + fj.module) / 2
        if max(fi.module, fj.module) > 1.5 * min(fi.module, fj.module):
            continue
        d = float(np.hypot(fi.x - fj.x, fi.y - fj.y))
        # small codes (the ones the fast pass misses); rows across a turned, blurred code
        # overstate its module as for a full corner, hence the same lower bound
        if not _LEG_MODULES[0] * u <= d <= 60 * u:
            continue
        # the third corner is on either side (or across, if these two are a diagonal)
        mx, my = (fi.x + fj.x) / 2, (fi.y + fj.y) / 2
        xs, ys = [mx - d, mx + d], [my - d, my + d]
        pairs.append((-float(fi.hits + fj.hits), _box(xs, ys, u, 4.0, 2, w, h)))
    pairs.sort(key=lambda p: p[0])
    return [g for _, g in guesses] + [g for _, g in pairs[:_MAX_PAIRS]]


def _box(
    xs: list[float], ys: list[float], u: float, pad: float, n: int, w: int, h: int
) -> CodeGuess:
    """The points' bounding box, `pad` modules wider each way (finder half and quiet zone)."""
    m = pad * u
    return CodeGuess(
        max(0, int(min(xs) - m)),
        max(0, int(min(ys) - m)),
        min(w, int(max(xs) + m) + 1),
        min(h, int(max(ys) + m) + 1),
        u,
        n,
    )


# -- a code blurred past its modules ----------------------------------------------------
#
# A defocus disc of one or two modules leaves no 1:1:3:1:1 run, and the code's edges too
# soft for the region statistics (regions.py), but each finder pattern is still a round
# dark blob, lighter all around (its separator, then the quiet zone or the data). A box
# difference of means (a box of radius r against one _BLOB_OUTER times wider, on a map of
# _BLOB_STEP x _BLOB_STEP pixel means: a few cumulative sums, a few ms a frame) marks such
# blobs at a few sizes; three of about the same size and darkness at the corners of a
# right isosceles triangle are a code. On the autofocus-miss dev family
# (ordoscan.devtools.af_miss 0-59) this pointed at the code in most of the frames where
# nothing else did; blank counters and a hand give none.
_BLOB_STEP = 4  # frame pixels a side of one pixel of the blob map
_BLOB_RADII = (1, 2, 3)  # map pixels: a finder's core, modules of ~2.7-8 frame px
_BLOB_OUTER = 2.2  # the surround's radius over the blob's
_BLOB_MODULE = 1.5  # blob radius over the module (the 3x3 core's half-width)
_BLOB_PEAKS = 24  # darkest blobs kept per frame
_BLOB_MIN = 6.0  # grey levels darker than the surround: less is noise or faint print
_BLOB_RING = 0.3  # each side's excess of light over the blob's centre, over its darkness
_DIRECTIONS = [(math.sin(a), math.cos(a)) for a in np.arange(8) * (math.pi / 4)]
_BLOB_SIMILAR = 2.5  # the three blobs' darkness within this factor (print is uneven)
# legs in modules of the blobs' size, a loose measure of the module: versions 1-9 (14 to
# 46 modules between finder centres) with room for it
_BLOB_LEGS = (14 * 0.7, 46 * 1.4)
_BLOB_LEG = 18.0  # modules between finder centres (version 2) for the box's margin
_BLOB_TRIES = 8  # triangles checked for a quiet zone, best first
# The quiet zone: strips 0.3 legs outside the finders' centres (about 2 modules past the
# symbol's edge), lighter than the finders by this share of their darkness at 9 in 10
# points. On af_miss 0-59 the codes found measured 0.97-2.6, triangles in print 0.5 or less.
_QUIET_OUT = 0.3
_QUIET_LIGHT = 0.7


def _integral(img: npt.NDArray[np.float32], m: int) -> _F:
    """The summed-area table of the image with its edges repeated `m` pixels out."""
    ii = np.zeros((img.shape[0] + 2 * m + 1, img.shape[1] + 2 * m + 1))  # exact sums
    ii[1:, 1:] = np.pad(img, m, mode="edge").cumsum(0).cumsum(1)
    return ii


def _box_means(ii: _F, m: int, shape: tuple[int, int], r: int) -> npt.NDArray[np.float32]:
    """Mean over the (2r+1)-pixel square around each pixel (ii: _integral(img, m >= r))."""
    h, w = shape
    a, b = m - r, m + r + 1
    s = ii[b : b + h, b : b + w] - ii[a : a + h, b : b + w]
    s -= ii[b : b + h, a : a + w]
    s += ii[a : a + h, a : a + w]
    return (s * (1.0 / (2 * r + 1) ** 2)).astype(np.float32)


def _bar_means(ii: _F, m: int, ys: _I, xs: _I, ry: _I, rx: _I) -> _F:
    """Mean over the (2ry+1) x (2rx+1) rectangle around each (y, x) (ii as _box_means)."""
    y0, y1, x0, x1 = ys + m - ry, ys + m + ry + 1, xs + m - rx, xs + m + rx + 1
    s = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    out: _F = s / ((2 * ry + 1) * (2 * rx + 1))
    return out


def block_sums(image: Grey, k: int) -> npt.NDArray[np.uint16]:
    """The sum of each whole k x k block of the image (k <= 16: the sums fit 16 bits), by
    strided slices: numpy's reductions over a reshaped axis are far slower."""
    h, w = image.shape[0] // k, image.shape[1] // k
    rows = image[0 : h * k : k].astype(np.uint16)
    for i in range(1, k):
        rows += image[i : h * k : k]
    sums = rows[:, 0 : w * k : k].copy()
    for i in range(1, k):
        sums += rows[:, i : w * k : k]
    return sums


def _dark_blobs(frame: Grey) -> tuple[_F, _F, _F, _F, _F, int]:
    """The darkest round blobs of the frame: darkness, x, y, radius (frame pixels), darkest
    first; and the blob map's summed-area table with its margin (see _integral)."""
    k = _BLOB_STEP
    sums = block_sums(frame, k)
    h, w = sums.shape
    small = sums.astype(np.float32) * np.float32(1 / (k * k))
    outer = [round(_BLOB_OUTER * r) for r in _BLOB_RADII]
    m = max(outer)
    ii = _integral(small, m)
    diffs = [_box_means(ii, m, (h, w), o) - _box_means(ii, m, (h, w), r)
             for r, o in zip(_BLOB_RADII, outer, strict=True)]
    best = diffs[0].copy()
    for d in diffs[1:]:
        np.maximum(best, d, out=best)
    # local maxima over 3x3 map pixels, strong enough
    peak = np.full((h + 2, w + 2), -np.inf, np.float32)
    peak[1:-1, 1:-1] = best
    rows3 = np.maximum(np.maximum(peak[:-2], peak[1:-1]), peak[2:])
    peak = np.maximum(np.maximum(rows3[:, :-2], rows3[:, 1:-1]), rows3[:, 2:])
    ys, xs = np.nonzero((best >= peak) & (best >= _BLOB_MIN))
    v = best[ys, xs].astype(np.float64)
    which = np.stack([d[ys, xs] for d in diffs]).argmax(axis=0)
    # a finder's blob is lighter all around (its separator, then the quiet zone or the
    # data): the gap between two fingers, a stroke of print, a dark corner of the
    # background are dark on some side. Each of 8 directions, one blob radius past
    # the blob: all but one (a neighbouring dark module blurred in) lighter than the blob.
    r = np.array(_BLOB_RADII)[which]
    d = r + np.array(outer)[which] // 2
    centre = _bar_means(ii, m, ys, xs, r, r)
    lighter = np.zeros(ys.shape, np.int64)
    for dy, dx in _DIRECTIONS:
        py = np.clip(ys + np.rint(dy * d).astype(np.int64), 0, h - 1)
        px = np.clip(xs + np.rint(dx * d).astype(np.int64), 0, w - 1)
        lighter += _bar_means(ii, m, py, px, r, r) - centre >= _BLOB_RING * v
    keep = lighter >= len(_DIRECTIONS) - 1
    ys, xs, v, which = ys[keep], xs[keep], v[keep], which[keep]
    order = np.argsort(-v)[:_BLOB_PEAKS]
    ys, xs, which = ys[order], xs[order], which[order]
    radius: _F = np.array(_BLOB_RADII, np.float64)[which] * k
    cx: _F = (xs + 0.5).astype(np.float64) * k
    cy: _F = (ys + 0.5).astype(np.float64) * k
    return v[order], cx, cy, radius, ii, m


@lru_cache(maxsize=_BLOB_PEAKS + 1)
def _triangles(n: int) -> _I:
    """Every three of n points, as rows of indices."""
    out = np.array(list(itertools.combinations(range(n), 3)), np.int64)
    out.setflags(write=False)
    return out


def _quiet(ii: _F, m: int, shape: tuple[int, int], pts: _F, corner: _F, u: _F, v: _F,
           dark: float) -> bool:
    """Whether the strips just outside the symbol's two outer sides (the quiet zone, past
    the finders at `pts`, corner `corner`, legs `u` and `v`, frame pixels) are lighter
    than the finders' blobs (their `dark`ness) nearly all along: a line of print above a
    blob or beside it is not."""
    k = _BLOB_STEP
    s = np.linspace(-0.2, 1.2, 15)[:, None]
    strip = np.concatenate([corner + s * u - _QUIET_OUT * v, corner - _QUIET_OUT * u + s * v])
    at = np.concatenate([strip, pts]) / k
    xs = np.clip(at[:, 0].astype(np.int64), 0, shape[1] - 1)
    ys = np.clip(at[:, 1].astype(np.int64), 0, shape[0] - 1)
    one = np.ones_like(xs)
    means = _bar_means(ii, m, ys, xs, one, one)
    light = means[: len(strip)] - means[len(strip) :].mean()
    return bool(np.percentile(light, 10) >= _QUIET_LIGHT * dark)


def blurred_codes(frame: Grey) -> list[CodeGuess]:
    """Where a QR Code blurred past its modules probably is: the three dark blobs most like
    a code's finder patterns at the corners of a square, with a quiet zone outside them
    (none or one guess)."""
    h, w = frame.shape
    if min(h, w) < 4 * _MIN_LEVEL_SIDE:
        return []
    v, x, y, r, ii, m = _dark_blobs(frame)
    if v.size < 3:
        return []
    tri = _triangles(v.size)
    scores, triangles = [], []
    for corner in range(3):  # each of the three as the right-angle corner
        ia, ib, ic = tri[:, corner], tri[:, (corner + 1) % 3], tri[:, (corner + 2) % 3]
        ux, uy, vx, vy = x[ib] - x[ia], y[ib] - y[ia], x[ic] - x[ia], y[ic] - y[ia]
        lu, lv = np.hypot(ux, uy), np.hypot(vx, vy)
        lo, hi = np.minimum(lu, lv), np.maximum(lu, lv)
        cos = (ux * vx + uy * vy) / np.maximum(lu * lv, 1e-9)
        rs = np.stack([r[ia], r[ib], r[ic]])
        vs = np.stack([v[ia], v[ib], v[ic]])
        u = rs.mean(axis=0) / _BLOB_MODULE
        ok = (np.abs(cos) <= 0.3) & (hi <= 1.25 * lo)
        ok &= rs.max(axis=0) <= 2 * rs.min(axis=0)
        ok &= vs.max(axis=0) <= _BLOB_SIMILAR * vs.min(axis=0)
        ok &= (lo >= _BLOB_LEGS[0] * u) & (hi <= _BLOB_LEGS[1] * u)
        # the faintest of the three, less for a bent right angle
        scores.append(np.where(ok, vs.min(axis=0) * (1 - np.abs(cos)), 0.0))
        triangles.append(np.stack([ia, ib, ic], axis=1))
    score, tri = np.concatenate(scores), np.concatenate(triangles)
    best = np.argsort(-score, kind="stable")[:_BLOB_TRIES]
    pts = np.stack([x, y], axis=1)
    for a, b, c in tri[best[score[best] > 0]].tolist():
        if not _quiet(ii, m, (h // _BLOB_STEP, w // _BLOB_STEP), pts[[a, b, c]], pts[a],
                      pts[b] - pts[a], pts[c] - pts[a], float(v[[a, b, c]].min())):
            continue
        xs = [float(x[a]), float(x[b]), float(x[c]), float(x[b] + x[c] - x[a])]
        ys = [float(y[a]), float(y[b]), float(y[c]), float(y[b] + y[c] - y[a])]
        # the legs measure the module far closer than the blobs' sizes do (a version-2
        # code's are 18 modules; versions 1-3 span 14-22)
        legs = math.hypot(xs[1] - xs[0], ys[1] - ys[0]) + math.hypot(xs[2] - xs[0], ys[2] - ys[0])
        return [_box(xs, ys, legs / 2 / _BLOB_LEG, 7.0, 3, w, h)]
    return []
