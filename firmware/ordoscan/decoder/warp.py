"""A QR Code on a surface that is not flat (cloth, a curled or creased page), flattened.

zxing-cpp samples a QR Code through one perspective transform (from its finder and
alignment patterns). On a curved or wrinkled surface the modules drift off that grid by
a fraction of a module here and there: the symbol is found, its format and version read,
then too many codewords come out wrong (a checksum error). The drift is slow across
the symbol, so it can be measured locally:
- the region is resampled through zxing-cpp's own transform, PPM pixels a module;
- on that image, module boundaries are periodic with period PPM both ways; the phase of
  the gradient's component at that period, averaged over a Gaussian window a few modules
  wide, says locally how far the boundaries sit from the grid's (less than half a module);
- the sampling grid is moved by that much and the measure repeated (ROUNDS times);
- the flattened image, with a quiet zone, goes back to zxing-cpp's detector.
numpy only; no model of the scene.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ordoscan.decoder.deblur import to_grey

Grey = npt.NDArray[np.uint8]
_F = npt.NDArray[np.float64]
Point = tuple[float, float]

PPM = 8  # pixels a module of the flattened image
SIGMA = 2.0  # modules: the window the local drift is measured over
ROUNDS = 2  # measure-and-move rounds
QUIET = 4  # modules of quiet zone around the flattened symbol
MAX_VERSION = 6  # larger symbols (45+ modules) are left alone: their time (about 35 ms
# at 41 modules on one x86 core) would take a frame's budget


def dimension(version: str | None) -> int | None:
    """Modules a side of a QR Code of this version ("1".."40"), None when unknown or too large."""
    if version is None or not version.isdigit() or not 1 <= int(version) <= MAX_VERSION:
        return None
    return 17 + 4 * int(version)


def homography(src: list[Point], dst: list[Point]) -> _F:
    """The 3x3 projective transform taking the four `src` points to the four `dst` points."""
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for i, ((u, v), (x, y)) in enumerate(zip(src, dst, strict=True)):
        a[2 * i] = (u, v, 1, 0, 0, 0, -x * u, -x * v)
        a[2 * i + 1] = (0, 0, 0, u, v, 1, -y * u, -y * v)
        b[2 * i], b[2 * i + 1] = x, y
    h = np.linalg.solve(a, b)  # LinAlgError when three corners are in line
    return np.append(h, 1.0).reshape(3, 3)


def project(h: _F, u: _F, v: _F) -> tuple[_F, _F]:
    w = h[2, 0] * u + h[2, 1] * v + h[2, 2]
    return (h[0, 0] * u + h[0, 1] * v + h[0, 2]) / w, (h[1, 0] * u + h[1, 1] * v + h[1, 2]) / w


def bilinear(img: _F, x: _F, y: _F) -> _F:
    """img sampled at the points (x, y), interpolated bilinearly; points off the image
    take its nearest edge."""
    hgt, wid = img.shape
    x = np.clip(x, 0, wid - 1.001)
    y = np.clip(y, 0, hgt - 1.001)
    x0 = x.astype(np.intp)
    y0 = y.astype(np.intp)
    fx, fy = x - x0, y - y0
    flat = img.ravel()
    i = y0 * wid + x0
    top = flat.take(i) * (1 - fx) + flat.take(i + 1) * fx
    bottom = flat.take(i + wid) * (1 - fx) + flat.take(i + wid + 1) * fx
    out: _F = top * (1 - fy) + bottom * fy
    return out


def _window(dim: int) -> _F:
    """Per module, the Gaussian window (SIGMA modules) over the module centres, rows
    normalised (so the symbol's edges are not darkened)."""
    d = np.arange(dim)[:, None] - np.arange(dim)[None, :]
    g: _F = np.exp(-0.5 * (d / SIGMA) ** 2)
    out: _F = g / g.sum(axis=1, keepdims=True)
    return out


def _smooth(g: _F, a: npt.NDArray[np.complex128]) -> npt.NDArray[np.complex128]:
    """g @ a @ g.T without BLAS (its threads cost more than these small products)."""
    rows = (g[:, :, None] * a[None, :, :]).sum(axis=1)
    out: npt.NDArray[np.complex128] = (rows[:, None, :] * g[None, :, :]).sum(axis=2)
    return out


def _upsample(a: _F, n: int) -> _F:
    """A per-module field at every pixel, interpolated linearly between module centres."""
    dim = a.shape[0]
    at = np.clip((np.arange(n) + 0.5) / PPM - 0.5, 0, dim - 1)
    lo = np.minimum(at.astype(np.intp), dim - 2)
    f = at - lo
    rows = a[lo] * (1 - f)[:, None] + a[lo + 1] * f[:, None]
    out: _F = rows[:, lo] * (1 - f)[None, :] + rows[:, lo + 1] * f[None, :]
    return out


def _drift(r: _F, axis: int, g: _F) -> _F:
    """How far (pixels) the module boundaries along `axis` sit from the grid's, at each pixel.

    The phasor of each edge pixel is summed per module and averaged over the window
    `g`; the drift is slow, so it is measured per module and interpolated."""
    n = r.shape[axis]
    dim = n // PPM
    edges = np.abs(np.diff(r, axis=axis))  # index k: the edge between pixels k and k+1
    phasor = np.exp(-2j * math.pi * (np.arange(n - 1) + 1) / PPM)
    c = edges * (phasor[None, :] if axis == 1 else phasor[:, None])
    pad = ((0, 0), (0, 1)) if axis == 1 else ((0, 1), (0, 0))
    per_module = np.pad(c, pad).reshape(dim, PPM, dim, PPM).sum(axis=(1, 3))
    shift = -np.angle(_smooth(g, per_module)) / (2 * math.pi) * PPM
    return _upsample(shift, n)


def flatten(region: Grey, corners: list[Point], dim: int) -> tuple[Grey, _F]:
    """The symbol resampled on its own module grid, with a quiet zone.

    `corners`: the symbol's outer corners in the region (top-left, top-right,
    bottom-right, bottom-left, as zxing-cpp gives them); `dim`: modules a side.
    Returns the flattened image and the transform from its pixels back to the
    region's (for the symbol's position). LinAlgError when the corners are degenerate.
    """
    h = homography([(0.0, 0.0), (dim, 0.0), (dim, dim), (0.0, dim)], corners)
    img = region.astype(np.float64)
    n = dim * PPM
    centres = (np.arange(n) + 0.5) / PPM
    u, v = np.meshgrid(centres, centres)
    du = np.zeros_like(u)
    dv = np.zeros_like(v)
    g = _window(dim)
    for _ in range(ROUNDS):
        r = bilinear(img, *project(h, u + du, v + dv))
        du += _drift(r, 1, g) / PPM
        dv += _drift(r, 0, g) / PPM
    r = bilinear(img, *project(h, u + du, v + dv))
    light = float(r.max())
    flat = np.pad(r, QUIET * PPM, constant_values=light)
    return to_grey(flat), to_region(h, PPM)


def to_region(h: _F, ppm: int) -> _F:
    """The transform from the pixels of a symbol drawn `ppm` pixels a module with QUIET
    modules of quiet zone to the region's, given `h` from module coordinates to the region:
    pixels (x, y) -> module units (x / ppm - QUIET) -> region pixels."""
    out: _F = h @ np.array([[1 / ppm, 0, -QUIET], [0, 1 / ppm, -QUIET], [0, 0, 1]])
    return out


def draw_modules(dark: npt.NDArray[np.bool_], ppm: int) -> Grey:
    """A clean symbol from its dark modules: `ppm` pixels a module, QUIET modules of quiet
    zone (see to_region for the way back)."""
    img = np.pad(np.where(dark, 0, 255).astype(np.uint8), QUIET, constant_values=255)
    return np.asarray(np.kron(img, np.ones((ppm, ppm), np.uint8)), np.uint8)


# -- a symbol squared on its three finder patterns ---------------------------------------
#
# Under a strong tilt (a page held at 35-40 degrees both ways) the finder patterns' sizes
# and spacing disagree so much that zxing-cpp's detector cannot size the symbol ("invalid
# symbol size"), so the flatten pass above never sees it. The affine map that puts the
# three finder centres on an upright right isosceles corner takes out the rotation, the
# shear and the unequal scales, which are most of the distortion: what is left, the
# perspective's own curvature over the symbol, zxing-cpp's alignment pattern absorbs.
SQUARE_PPM = 4  # pixels a module of the squared symbol


def squared(region: Grey, tl: Point, tr: Point, bl: Point, module: float) -> tuple[Grey, _F]:
    """The region resampled so that these finder centres (top-left, top-right and
    bottom-left, clockwise on screen) form an upright corner, SQUARE_PPM pixels a module
    (`module`: the region's pixels a module), with the symbol's outer modules and QUIET
    modules of quiet zone around; and the transform from its pixels back to the region's."""
    a, b, c = (np.asarray(p, np.float64) for p in (tl, tr, bl))
    n = (float(np.hypot(*(b - a))) + float(np.hypot(*(c - a)))) / 2 / module  # centres apart
    q = 3.5 + QUIET  # modules from a finder's centre to the image's edge
    side = round((n + 2 * q) * SQUARE_PPM)
    # pixels -> module units from the top-left centre -> region pixels
    to_units = np.array([[1 / SQUARE_PPM, 0, -q], [0, 1 / SQUARE_PPM, -q], [0, 0, 1]])
    affine = np.array([[*((b - a) / n), a[0]], [*((c - a) / n), a[1]], [0, 0, 1]])
    affine[:2, :2] = affine[:2, :2].T  # columns: one module along the top, down the side
    back: _F = affine @ to_units
    return _upright(region.astype(np.float64), back, side), back


def _upright(img: _F, back: _F, side: int) -> Grey:
    """A `side`-pixel square image whose pixels `back` takes to `img`'s, sampled there
    (a point beyond a projective map's horizon samples the image's corner)."""
    x, y = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5)
    rx, ry = project(back, x, y)
    rx, ry = np.nan_to_num(rx, nan=0.0), np.nan_to_num(ry, nan=0.0)
    return to_grey(bilinear(img, rx - 0.5, ry - 0.5))


# -- a version-1 symbol under perspective: its fourth corner searched for ------------------
#
# With no alignment pattern (version 1), zxing-cpp places the corner opposite the top-left
# finder by completing a parallelogram. Under a strong perspective (a page tilted close to
# the lens) that corner is off by a module or two, and the far modules are sampled off
# their centres: a checksum error on a sharp code. Here the corner is searched for around
# zxing-cpp's: for each candidate, the modules are sampled at their centres through the
# projective map of the four corners; the right corner puts every sample in the middle of
# a module (the samples split cleanly into dark and light, few in between) and makes the
# timing patterns alternate. The best few are drawn as clean symbols for zxing-cpp.
CORNER_SEARCH = 3.0  # modules each way around zxing-cpp's fourth corner
CORNER_STEP = 0.5  # modules between candidates
CORNER_TRIES = 3  # best-scoring candidates drawn and read (after the refined one)
_REFINE = 0.75  # modules each way a corner is refined ...
_REFINE_STEP = 0.25  # ... in steps of this many modules
_TIMING_WEIGHT = 0.25  # the timing patterns' correlation against the samples' split


def _square_to_quads(quads: _F) -> _F:
    """For each quad (n x 4 x 2: the images of (0,0), (1,0), (1,1), (0,1)), the projective
    map of the unit square onto it as (a, b, c, d, e, f, g, h): x = (a u + b v + c) / w,
    y = (d u + e v + f) / w, w = g u + h v + 1 (Heckbert's closed form; n x 8)."""
    x0, x1, x2, x3 = quads[:, :, 0].T
    y0, y1, y2, y3 = quads[:, :, 1].T
    sx, sy = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    dx1, dx2, dy1, dy2 = x1 - x2, x3 - x2, y1 - y2, y3 - y2
    den = dx1 * dy2 - dx2 * dy1
    den = np.where(np.abs(den) < 1e-9, 1e-9, den)  # a degenerate quad scores nothing
    g = (sx * dy2 - dx2 * sy) / den
    h = (dx1 * sy - sx * dy1) / den
    return np.stack([x1 - x0 + g * x1, x3 - x0 + h * x3, x0,
                     y1 - y0 + g * y1, y3 - y0 + h * y3, y0, g, h], axis=1)


def _timing(dim: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], _F]:
    """Module rows, columns and expected darkness (1 dark) of the two timing patterns."""
    k = np.arange(8, dim - 8)
    dark = (k % 2 == 0).astype(np.float64)
    six = np.full_like(k, 6)
    return np.concatenate([six, k]), np.concatenate([k, six]), np.concatenate([dark, dark])


def _scores(region: _F, quads: _F, dim: int) -> _F:
    """How well each quad (n x 4 x 2) puts a `dim`-module symbol's samples on module
    centres: the samples' split into dark and light plus the timing patterns' alternation."""
    m = _square_to_quads(quads)[:, :, None]
    centres = (np.arange(dim) + 0.5) / dim
    u, v = (a.ravel()[None, :] for a in np.meshgrid(centres, centres))
    w = m[:, 6] * u + m[:, 7] * v + 1
    w = np.where(np.abs(w) < 1e-9, 1e-9, w)
    s = bilinear(region, (m[:, 0] * u + m[:, 1] * v + m[:, 2]) / w,
                 (m[:, 3] * u + m[:, 4] * v + m[:, 5]) / w)  # quads x modules
    # samples on module centres take two values (about as many dark as light): their mean
    # distance to the mean is then their standard deviation; samples astride module edges
    # spread between the two and bring it down to ~0.8 of it
    dev = s - s.mean(axis=1, keepdims=True)
    split = np.abs(dev).mean(axis=1) / np.maximum(np.sqrt((dev * dev).mean(axis=1)), 1e-9)
    rows, cols, dark = _timing(dim)
    t = s[:, rows * dim + cols]
    t = t - t.mean(axis=1, keepdims=True)
    d = dark - dark.mean()
    corr = -(t @ d) / np.maximum(np.linalg.norm(t, axis=1) * np.linalg.norm(d), 1e-9)
    out: _F = split + _TIMING_WEIGHT * corr
    return out


def _moved(quad: _F, corner: int, reach: float, step: float, module: float) -> _F:
    """Copies of `quad` with one corner moved on a grid of `step` modules, `reach` modules
    each way (the unmoved quad among them)."""
    steps = np.arange(-reach, reach + step / 2, step) * module
    dx, dy = (a.ravel() for a in np.meshgrid(steps, steps))
    quads = np.repeat(quad[None], dx.size, axis=0)
    quads[:, corner, 0] += dx
    quads[:, corner, 1] += dy
    return quads


def fourth_corners(region: Grey, corners: list[Point], dim: int) -> list[list[Point]]:
    """Candidate corner sets for a symbol of `dim` modules (zxing-cpp's order: top-left,
    top-right, bottom-right, bottom-left), best first: the bottom-right corner searched
    CORNER_SEARCH modules around zxing-cpp's, then each corner refined in turn (the three
    finders' corners are zxing-cpp's estimates too, good to half a module)."""
    img = region.astype(np.float64)
    quad = np.asarray(corners, np.float64)
    module = float(np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[3] - quad[0])) / 2 / dim
    tried = _moved(quad, 2, CORNER_SEARCH, CORNER_STEP, module)
    scores = _scores(img, tried, dim)
    best = [tried[i] for i in np.argsort(-scores)[:CORNER_TRIES]]
    quad = best[0]
    for corner in (*range(4), 2):
        tried = _moved(quad, corner, _REFINE, _REFINE_STEP, module)
        scores = _scores(img, tried, dim)
        quad = tried[int(np.argmax(scores))]
    return [[(float(x), float(y)) for x, y in q] for q in (quad, *best)]


def drawn(region: Grey, corners: list[Point], dim: int) -> tuple[Grey, _F]:
    """The symbol's modules sampled at their centres through these corners, each split at
    the middle of the samples' range, drawn clean (PPM px a module, a quiet zone);
    and the transform from its pixels back to the region's. LinAlgError when degenerate."""
    h = homography([(0.0, 0.0), (dim, 0.0), (dim, dim), (0.0, dim)], corners)
    centres = np.arange(dim) + 0.5
    u, v = np.meshgrid(centres, centres)
    s = bilinear(region.astype(np.float64), *project(h, u, v))
    lo, hi = np.percentile(s, (10, 90))
    return draw_modules(s < (lo + hi) / 2, PPM), to_region(h, PPM)


# -- a symbol under a strong perspective, mapped through its finder patterns' outlines ----
#
# A page tilted 35-40 degrees both ways close to a wide lens: the far finder pattern is
# two thirds of the near one's size, the right angle at the corner finder closes to 50
# degrees (past the corner search's bound, so the wrong finder may be taken for the
# corner), and neither zxing-cpp's detector ("invalid symbol size") nor the affine map
# above sizes the symbol. Each finder pattern's outer dark ring is a square of 7 modules
# whatever the view: its four corners, found on rays from its centre, are four points of
# the symbol's projective map, twelve for the three. For each symbol size and each choice
# of the corner finder the map is fitted to the twelve; the right choice fits them to a
# fraction of a pixel, a wrong one by several. The best fits are resampled upright.
OUTLINE_RAYS = 32  # rays from a finder's centre to its outer ring's edge
_MIN_OUTLINE = 12  # edge points a finder needs (some rays cross data or glare)
_OUTLINE_REACH = (2.0, 7.0)  # modules from the centre the outer edge may lie at (perspective)
_MIN_CONTRAST = 10.0  # grey levels between a finder's core and its light ring
_CORNER_CUT = 1.0  # modules: edge points this near a corner are left out of its sides' fit
MAX_FIT_ERROR = 0.4  # modules rms: a worse fit is not three finders of one symbol (the right
# three fit to 0.1-0.26 of a module on dev scenes, a wrong choice of corner to 0.9 and more)
PERSPECTIVE_DIMS = tuple(range(21, 17 + 4 * 10 + 1, 4))  # versions 1 to 10
PERSPECTIVE_TRIES = 2  # best fits resampled and read
_SQUARE = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])  # a finder's corners


def _outline(img: _F, x: float, y: float, module: float) -> _F | None:
    """Points on the outer edge of the finder pattern's dark ring (n x 2), None when too few
    rays cross core, light ring and dark ring in turn."""
    ang = np.arange(OUTLINE_RAYS) * (2 * math.pi / OUTLINE_RAYS)
    step = 0.25
    r = np.arange(0.0, _OUTLINE_REACH[1] * module + 1, step)
    xs = x + np.cos(ang)[:, None] * r[None, :]
    ys = y + np.sin(ang)[:, None] * r[None, :]
    s = bilinear(img, xs - 0.5, ys - 0.5)
    # the finder's own ink and paper (its module measured along one line may be off by a
    # third under perspective: no ring is assumed at a given radius)
    dark, light = (float(v) for v in np.percentile(s[:, r < 4 * module], (5, 95)))
    if light - dark < _MIN_CONTRAST:
        return None
    t = (dark + light) / 2
    pts = []
    for i in range(OUTLINE_RAYS):
        d = s[i] < t
        turns = np.flatnonzero(d[1:] != d[:-1])  # core -> ring -> dark ring -> outside
        if not d[0] or turns.size < 3:
            continue
        k = int(turns[2])
        a, b = float(s[i, k]), float(s[i, k + 1])
        rr = r[k] + (t - a) / (b - a) * step if b != a else r[k] + step / 2
        if _OUTLINE_REACH[0] * module < rr < _OUTLINE_REACH[1] * module:
            pts.append((x + math.cos(ang[i]) * rr, y + math.sin(ang[i]) * rr))
    return np.array(pts) if len(pts) >= _MIN_OUTLINE else None


def _quad(pts: _F, module: float) -> _F | None:
    """The quadrilateral through edge points of a finder's outline (4 x 2, in turn round it):
    rough corners from the points' extremes, then each side a line fitted to its points."""
    c = pts.mean(axis=0)
    p0 = pts[np.argmax(((pts - c) ** 2).sum(axis=1))]
    p2 = pts[np.argmax(((pts - p0) ** 2).sum(axis=1))]
    d = p2 - p0
    side = d[0] * (pts[:, 1] - p0[1]) - d[1] * (pts[:, 0] - p0[0])
    corners = np.array([p0, pts[np.argmax(side)], p2, pts[np.argmin(side)]])
    for _ in range(2):
        lines = []
        for j in range(4):
            a, b = corners[j], corners[(j + 1) % 4]
            ab = b - a
            length = float(np.hypot(*ab))
            if length < 1e-6:
                return None
            along = ((pts - a) @ ab) / length
            off = np.abs(ab[0] * (pts[:, 1] - a[1]) - ab[1] * (pts[:, 0] - a[0])) / length
            near = (along > _CORNER_CUT * module) & (along < length - _CORNER_CUT * module)
            q = pts[near & (off < module)]
            if len(q) < 2:
                return None
            mu = q.mean(axis=0)
            normal = np.linalg.svd(q - mu)[2][1]
            lines.append((normal, float(normal @ mu)))
        try:
            corners = np.array([np.linalg.solve(np.array([lines[j - 1][0], lines[j][0]]),
                                                [lines[j - 1][1], lines[j][1]])
                                for j in range(4)])
        except np.linalg.LinAlgError:  # two sides parallel: no quadrilateral
            return None
    return corners


def _labels(quad: _F, centre: _F, frame: _F) -> _F:
    """Which corner of its 7-module square each quad corner is ((-1, -1) top-left... as
    _SQUARE), from their directions in the symbol's frame (`frame`: image vectors to
    module axes, from the finders' centres): the cyclic order that agrees best."""
    a = (frame @ (quad - centre).T).T
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-9)
    turn = float(np.sum(a[:, 0] * np.roll(a[:, 1], -1) - np.roll(a[:, 0], -1) * a[:, 1]))
    order = np.array([0, 1, 2, 3] if turn > 0 else [0, 3, 2, 1])
    shifts = [_SQUARE[(order + k) % 4] for k in range(4)]
    best: _F = shifts[int(np.argmax([float(np.sum(a * s)) for s in shifts]))]
    return best


def _fit(src: _F, dst: _F) -> tuple[_F, float]:
    """The projective map taking module points `src` to image points `dst` (least squares,
    n >= 4) and its rms error in image pixels."""
    u, v = src[:, 0], src[:, 1]
    x, y = dst[:, 0], dst[:, 1]
    o, z = np.ones_like(u), np.zeros_like(u)
    a = np.concatenate([np.stack([u, v, o, z, z, z, -x * u, -x * v, -x], axis=1),
                        np.stack([z, z, z, u, v, o, -y * u, -y * v, -y], axis=1)])
    h = np.linalg.svd(a)[2][-1].reshape(3, 3)
    if abs(h[2, 2]) < 1e-12:  # the module origin mapped to infinity: no symbol's map
        return h, math.inf
    h = h / h[2, 2]
    px, py = project(h, u, v)
    err = float(np.sqrt(np.mean((px - x) ** 2 + (py - y) ** 2)))
    return h, err if math.isfinite(err) else math.inf


def perspective(region: Grey, found: list[tuple[float, float, float]]) -> list[tuple[Grey, _F]]:
    """The symbol whose three finder patterns are `found` ((x, y, module) each, in any
    order), resampled upright SQUARE_PPM pixels a module with QUIET modules of quiet zone
    through its best-fitting projective maps (at most PERSPECTIVE_TRIES, best first; none
    when no fit is within MAX_FIT_ERROR), each with the transform back to the region."""
    img = region.astype(np.float64)
    quads = []
    for x, y, m in found:
        pts = _outline(img, x, y, m)
        q = None if pts is None else _quad(pts, m)
        if q is None:
            return []
        quads.append(q)
    centres = np.array([(x, y) for x, y, _ in found])
    module = float(np.mean([m for _, _, m in found]))
    fits: list[tuple[float, _F, int]] = []
    for k in range(3):  # each finder as the corner (top-left)
        i, j = (n for n in range(3) if n != k)
        e1, e2 = centres[i] - centres[k], centres[j] - centres[k]
        if e1[0] * e2[1] - e1[1] * e2[0] < 0:  # clockwise on screen: top-right, bottom-left
            i, j, e1, e2 = j, i, e2, e1
        try:
            frame = np.linalg.inv(np.stack([e1, e2], axis=1))
        except np.linalg.LinAlgError:
            continue
        labels = [_labels(quads[n], centres[n], frame) for n in (k, i, j)]
        dst = np.concatenate([quads[n] for n in (k, i, j)])
        for dim in PERSPECTIVE_DIMS:
            at = ((3.5, 3.5), (dim - 3.5, 3.5), (3.5, dim - 3.5))
            src = np.concatenate([np.asarray(c) + 3.5 * lab
                                  for c, lab in zip(at, labels, strict=True)])
            h, err = _fit(src, dst)
            if err <= MAX_FIT_ERROR * module:
                fits.append((err, h, dim))
    fits.sort(key=lambda f: f[0])
    out = []
    for _, h, dim in fits[:PERSPECTIVE_TRIES]:
        back = to_region(h, SQUARE_PPM)
        out.append((_upright(img, back, (dim + 2 * QUIET) * SQUARE_PPM), back))
    return out
