"""A QR Code blurred past its modules, read by solving for the modules themselves.

A defocus disc as wide as a module or wider has a transfer function near zero at the
modules' own frequency: a per-pixel deconvolution (deblur.py) cannot bring them back.
But the unknowns are far fewer than the pixels: one grey level a module. Given the
symbol's grid (a homography from module coordinates to the region's pixels) and the
disc, the region is resampled on that grid, SAMPLES pixels a module, and modelled as

    image = disc * (sum over modules of x_ij * box_ij) + noise,

x_ij the module's grey level. The normal matrix of that least-squares problem is a
convolution on the module lattice whose transfer function is the sum over the aliases
of |disc * box|^2, which is never zero: a Tikhonov solve by FFT on the lattice is well
conditioned where the per-pixel one is not. A margin of quiet-zone modules is solved
too (blur spreads in from outside). Each module is then called dark or light with a
threshold calibrated on the modules every QR Code has (finder, separator and timing
patterns, the alignment pattern); a grid those modules disagree with is refused. A page
seen in perspective bends the grid the finders' three centres give: it is refined on how
close the solved modules lie to two levels (`refined`), each better grid read as it is
found, and solved again with the known modules held at their levels (`held`) where its
own symbol does not read. The clean symbol is drawn PPM
pixels a module, with a quiet zone, for zxing-cpp (its error correction absorbs a few
wrong modules). numpy only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ordoscan.decoder import deblur, finders, warp
from ordoscan.decoder.deblur import fast_len, irfft2_rows, reflected_rfft2

Grey = npt.NDArray[np.uint8]
_F = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]
_Blob = tuple[float, float, float]  # (strength, x, y)
# what the solves give, in turn: a clean symbol for zxing-cpp with the transform from its
# pixels back to the region's, or None after a step of work (a solve)
Step = tuple[Grey, _F] | None
# a corner of a code: its finders' centres (top-left, top-right, bottom-left) and whether
# it is shown light on dark (polar_corners)
Corner = tuple[tuple[_F, _F, _F], bool]

SAMPLES = 4  # pixels a module of the resampled region
MARGIN = 3  # modules of quiet zone solved around the symbol
PPM = 4  # pixels a module of the drawn symbol
LAMBDA = 0.001  # Tikhonov weight, relative to the normal matrix's largest eigenvalue
# Share of the known modules a solve must get right. On the autofocus-miss dev family
# (ordoscan.devtools.af_miss 0-59) the right grid and size get 0.98-1.00 of them, a wrong
# size or corner 0.53-0.84: the first solve on a grid says whether the others are worth it.
MIN_AGREEMENT = 0.85
MIN_REGION = 32  # px: a region narrower than this holds no code the solve could read


@lru_cache(maxsize=16)
def known_modules(dim: int) -> tuple[_B, _B]:
    """The modules every QR Code of `dim` modules a side has: (which are known, dark)."""
    known = np.zeros((dim, dim), np.bool_)
    dark = np.zeros((dim, dim), np.bool_)
    ring = np.maximum(*np.abs(np.mgrid[-3:4, -3:4]))  # Chebyshev distance from the centre
    for y, x in ((0, 0), (0, dim - 7), (dim - 7, 0)):
        known[y : y + 7, x : x + 7] = True
        dark[y : y + 7, x : x + 7] = ring != 2
    # separators: the light row and column inside the symbol around each finder
    for y0, y1, x0, x1 in ((0, 8, 0, 8), (0, 8, dim - 8, dim), (dim - 8, dim, 0, 8)):
        sep = np.zeros((dim, dim), np.bool_)
        sep[y0:y1, x0:x1] = True
        known |= sep  # the finder inside is already marked dark where dark
    # timing patterns: row 6 and column 6 between the separators, dark on even indices
    t = np.arange(8, dim - 8)
    known[6, t] = known[t, 6] = True
    dark[6, t] = dark[t, 6] = t % 2 == 0
    if dim >= 25:  # the bottom-right alignment pattern (versions 2-6 have only that one)
        c = dim - 7
        a = np.maximum(*np.abs(np.mgrid[-2:3, -2:3]))
        known[c - 2 : c + 3, c - 2 : c + 3] = True
        dark[c - 2 : c + 3, c - 2 : c + 3] = a != 1
    known.setflags(write=False)
    dark.setflags(write=False)
    return known, dark


def _jacobian(h: _F, u: float, v: float) -> _F:
    """d(region px) / d(module coords) of the homography at (u, v)."""
    e = 1e-3
    x0, y0 = warp.project(h, np.array([u, u + e, u]), np.array([v, v, v + e]))
    return np.array([[x0[1] - x0[0], x0[2] - x0[0]], [y0[1] - y0[0], y0[2] - y0[0]]]) / e


def _disc_spectrum(radius: float, jac: _F, n: int) -> _F:
    """The transfer function on an n x n resampled grid of a disc of `radius` region pixels:
    in the resampled frame (SAMPLES px a module) the disc is the ellipse of offsets d with
    |jac d / SAMPLES| <= radius; each pixel weighted by the share of it inside (4x4 samples)."""
    return deblur.transfer(*deblur.covered(radius, jac / SAMPLES), (n, n))  # (symmetric: real)


def _gauss_spectrum(sigma: float, jac: _F, n: int) -> _F:
    """The transfer function on an n x n resampled grid of a Gaussian of `sigma` region
    pixels (deblur.spectrum_blur): in the resampled frame its covariance is taken by the
    map from region pixels to the grid's (SAMPLES / jac), exp(-2 pi^2 f' C f) (real)."""
    a = SAMPLES * np.linalg.inv(jac)
    c = a @ a.T * sigma * sigma
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]  # laid out as rfft2's, as deblur.transfer
    out: _F = np.exp(-2 * math.pi**2 * (c[0, 0] * fx * fx + 2 * c[0, 1] * fx * fy
                                        + c[1, 1] * fy * fy))
    return out


@lru_cache(maxsize=4)
def _box_spectrum(n: int) -> _F:
    """|transfer function|^2 of one module's box (SAMPLES x SAMPLES) on an n x n grid."""
    b = np.zeros((n, n))
    b[:SAMPLES, :SAMPLES] = 1.0
    f = np.fft.rfft2(b)
    out: _F = (f * np.conj(f)).real
    out.setflags(write=False)
    return out


def resample(region: _F, h: _F, dim: int) -> _F:
    """The region on the symbol's grid, SAMPLES pixels a module, MARGIN modules around."""
    side = (dim + 2 * MARGIN) * SAMPLES
    at = (np.arange(side) + 0.5) / SAMPLES - MARGIN
    # a row of u and a column of v broadcast: the same sums, a third of the full-grid passes
    return warp.bilinear(region, *warp.project(h, at[None, :], at[:, None]))


class Normal(NamedTuple):
    """What a solve on a grid takes from its scale and its blur (normal())."""

    blur: _F  # the blur's transfer function on the resampled grid (rfft2's layout; real)
    lattice: _F  # the regularised normal matrix's on the module lattice (rfft2's; real)
    # A^T's on the resampled grid (rfft2's), before the alias sum onto the lattice
    # (_lattice_atr): the blur's times that of the sum over a module's pixels, / SAMPLES^2
    adjoint: npt.NDArray[np.complex128]


def normal(h: _F, dim: int, radius: float, lam: float = LAMBDA,
           gaussian: bool = False) -> Normal:
    """The parts of the solve that depend only on the grid's scale and the disc: the disc's
    transfer function on the resampled grid and the regularised normal matrix's transfer
    function on the module lattice (a convolution: the normal kernel sampled at whole
    modules, whose transform is the sum over the aliases of |disc * box|^2). With
    `gaussian`, the blur is a Gaussian of sigma `radius` instead of a disc."""
    n = (dim + 2 * MARGIN) * SAMPLES
    spectrum = _gauss_spectrum if gaussian else _disc_spectrum
    return _normal(spectrum(radius, _jacobian(h, dim / 2, dim / 2), n), lam)


def smear_normal(h: _F, dim: int, motion: deblur.Motion, lam: float = LAMBDA) -> Normal:
    """normal() for a motion blur (deblur.Motion, region pixels) instead of a disc: on the
    resampled grid the smear is still a line segment, taken there by the grid's Jacobian."""
    n = (dim + 2 * MARGIN) * SAMPLES
    a = math.radians(motion.angle)
    v = SAMPLES * np.linalg.solve(_jacobian(h, dim / 2, dim / 2),
                                  motion.length * np.array([math.cos(a), math.sin(a)]))
    along = deblur.Motion(math.degrees(math.atan2(v[1], v[0])), float(np.hypot(*v)))
    return _normal(deblur.kernel(along, (n, n)), lam)


def _normal(k: _F, lam: float) -> Normal:
    """normal() from the blur's transfer function `k` on the resampled grid (n x n; real,
    the kernel being symmetric: deblur.transfer)."""
    n = k.shape[0]
    c = irfft2_rows(k * k * _box_spectrum(n), (n, n), slice(None, None, SAMPLES))[:, ::SAMPLES]
    cf = np.fft.rfft2(c).real
    return Normal(k, cf + lam * cf[0, 0], k * _block_sum_spectrum(n))


@lru_cache(maxsize=4)
def _block_sum_spectrum(n: int) -> npt.NDArray[np.complex128]:
    """The transfer function (rfft2's layout, n x n) of the sum of each pixel and the
    SAMPLES - 1 after it, both ways, divided by SAMPLES^2. At every SAMPLES-th pixel that
    sum is a module's; taking those pixels only sums the spectrum over its SAMPLES^2
    aliases and divides it by SAMPLES^2 (_lattice_atr), hence the division here."""
    a = np.arange(SAMPLES)
    d = np.exp(2j * np.pi * np.outer(np.arange(n), a) / n).sum(axis=1) / SAMPLES
    out = np.outer(d, d[: n // 2 + 1])
    out.setflags(write=False)
    return out


def _lattice_atr(resampled: _F, nm: Normal, dim: int) -> npt.NDArray[np.complex128]:
    """A^T r on the module lattice, as its spectrum (rfft2's layout): the image correlated
    with the blur and summed over each module's pixels (_atr), with no transform back to
    the resampled grid nor forward on the lattice. Subsampling every SAMPLES-th pixel sums
    the spectrum over its aliases, SAMPLES apart each way: along y, rows `big` apart of
    the rfft layout; along x its columns past the middle are the mirrored ones conjugated
    (a real image's), rows turned to -y."""
    n = resampled.shape[0]
    big = dim + 2 * MARGIN
    half = n // 2 + 1
    spec = np.fft.rfft2(resampled - resampled.mean()) * nm.adjoint
    rows = spec.reshape(SAMPLES, big, half).sum(axis=0)  # y aliases: (big, half)
    flip = (-np.arange(big)) % big
    full = np.concatenate([rows, np.conj(rows[flip, n - half : 0 : -1])], axis=1)  # (big, n)
    out: npt.NDArray[np.complex128] = full.reshape(big, SAMPLES, big).sum(axis=1)[
        :, : big // 2 + 1]
    return out


def solve(resampled: _F, nm: Normal, dim: int) -> _F:
    """Each module's grey level (relative to the region's mean), MARGIN modules around
    included: the Tikhonov solve on the module lattice (see the module doc)."""
    big = dim + 2 * MARGIN
    x: _F = np.fft.irfft2(_lattice_atr(resampled, nm, dim) / nm.lattice, s=(big, big))
    return x


def _atr(resampled: _F, nm: Normal, dim: int) -> _F:
    """A^T r: the image correlated with the blur, summed over each module's pixels."""
    big = dim + 2 * MARGIN
    out: _F = np.fft.irfft2(_lattice_atr(resampled, nm, dim), s=(big, big))
    return out


def _levels(x: _F, dim: int) -> tuple[float, float]:
    """The mean solved level (solve) of the symbol's known dark modules and of its known
    light ones."""
    core = x[MARGIN : MARGIN + dim, MARGIN : MARGIN + dim]
    known, dark = known_modules(dim)
    return float(core[known & dark].mean()), float(core[known & ~dark].mean())


# The solve again with the known modules (known_modules) held at the two levels the first
# solve gives them: the blur no longer smears unknown grey from them into their
# neighbours, and half a version-1 symbol's modules are no longer unknowns. The normal
# matrix is a convolution on the lattice, so its restriction to the other modules is
# solved by conjugate gradients, HELD_STEPS of them (two FFTs of the lattice each: about
# 1.5 ms of x86 CPU with the A^T r it takes again; 10 steps read as many grids as 60).
# Read where a refined grid's own symbol does not (_symbols): every pass due, gen2 dev
# 250 240-250 479 142 -> 143 of 149, 250 000-250 239 and af_miss 0-119 the same (131,
# 97), the unsmear pass reading 6 codes rather than 5 for no more time. On the unmix
# pass's TRIES it read nothing more for 16 % more time there, so it is not done there.
HELD_STEPS = 10


def held(resampled: _F, nm: Normal, dim: int, x: _F) -> _F:
    """solve()'s modules again (given its result `x`), the known modules held at the mean
    levels of the known dark and light ones in `x`."""
    big = dim + 2 * MARGIN
    known, dark = known_modules(dim)
    lo, hi = _levels(x, dim)
    free = np.ones((big, big), np.bool_)
    free[MARGIN : MARGIN + dim, MARGIN : MARGIN + dim] = ~known
    fixed = np.zeros((big, big))
    fixed[MARGIN : MARGIN + dim, MARGIN : MARGIN + dim][known] = np.where(dark[known], lo, hi)

    def normal_times(v: _F) -> _F:
        out: _F = np.fft.irfft2(np.fft.rfft2(v) * nm.lattice, s=(big, big))
        return out

    # minimise over the free modules with the others fixed: M_ff y = (A^T r - M fixed)_f
    b = (_atr(resampled, nm, dim) - normal_times(fixed)) * free
    y = x * free
    r = b - normal_times(y) * free
    d, rr = r.copy(), float((r * r).sum())
    for _ in range(HELD_STEPS):
        md = normal_times(d) * free
        dmd = float((d * md).sum())
        if not dmd > 0 or not rr > 1e-24:
            break
        a = rr / dmd
        y, r = y + a * d, r - a * md
        rr_next = float((r * r).sum())
        d, rr = r + (rr_next / rr) * d, rr_next
    out: _F = y * free + fixed
    return out


def classify(x: _F, dim: int) -> tuple[_B | None, float]:
    """The symbol's dark modules from the solved grey levels, and the share of the known
    modules they get right; None for the modules when too few are right (a wrong grid,
    a wrong size, or no code)."""
    core = x[MARGIN : MARGIN + dim, MARGIN : MARGIN + dim]
    known, dark = known_modules(dim)
    kv, kd = core[known], dark[known]
    # the threshold that gets the most known modules right (dark is the lower level)
    cand = np.sort(kv)
    t_all = (cand[:-1] + cand[1:]) / 2
    right = ((kv[None, :] < t_all[:, None]) == kd[None, :]).sum(axis=1)
    best = int(np.argmax(right))
    share = float(right[best]) / kv.size
    if share < MIN_AGREEMENT:
        return None, share
    bits: _B = core < t_all[best]
    return bits, share


# -- the grid: from the finder patterns' centres ---------------------------------------
#
# Blurred past its modules, a finder pattern is still a dark blob (its 3x3 core) in a light
# ring: a difference of Gaussians (the outer _OUTER times wider than the inner) marks its
# centre at a few scales. Three such centres at the corners of a square (two legs of
# about the same length, at about a right angle) give the grid: the finders' centres sit
# at modules (3.5, 3.5), (dim - 3.5, 3.5) and (3.5, dim - 3.5), an affine map for each dim.
# A phone in dark mode may show its code light on the dark screen: its finder patterns are
# light blobs in dark rings, and the code is solved as its negative. Its corners are tried
# after the dark-on-light ones (blurred codes shown light on dark read as their dark-on-light
# twins do, tests/test_decoder_modules.py; every dev family's stills read the same).
_SCALES = (1.2, 1.6, 2.0, 2.6, 3.2, 4.0)  # px, the inner Gaussian's sigma (about a module)
_OUTER = 2.2  # the outer Gaussian's sigma over the inner one's
_PEAKS = 6  # darkest blobs kept
_TRIPLES = 4  # corners of a square tried, best first
# shortest leg (px), longest over shortest, |cos| of the angle: loose enough for a page
# tilted 40 degrees to the lens, which shortens one leg to 0.77 of the other and bends
# the right angle (on af_miss 0-119, with the grid's refinement below: 93 -> 95 of 120
# read every pass due, where (10, 1.25, 0.3) and 2 corners found no grid on two codes
# tilted 32-39 degrees)
_LEGS = (10.0, 1.45, 0.5)
DIMS = (21, 25, 29)  # versions 1-3: a prescription's payload is short
# Tries on a grid, most useful first (on af_miss 0-59): (scale of the finders' triangle,
# times the measured radius, shift x, shift y in px); the first says whether the grid
# is worth the others. Three more ((1, 1, -0.5, -0.5), (1.02, 1, 0, 0), (1, 1.2, -0.5, 0))
# read nothing more there.
TRIES = (
    (1.0, 1.0, 0.0, 0.0),
    (1.0, 1.0, -0.5, 0.0),
    (1.0, 1.0, 0.0, -0.5),
    (1.0, 1.1, 0.0, 0.0),
    (1.0, 1.1, -0.5, 0.0),
    (0.98, 1.0, 0.0, 0.0),
)
GAMMA = 2.2  # the ISP's tone curve undone: the blur mixes light, not grey levels
# each grey level in light (GAMMA undone), looked up: a power of every pixel of a main-stream
# region cost a Pi 4 about as much as a whole solve
_LIGHT = 255.0 * (np.arange(256) / 255.0) ** GAMMA
_LIGHT.setflags(write=False)


def _vertex(a: float, b: float, c: float) -> float:
    """Where the parabola through (-1, a), (0, b), (1, c) peaks, within half a step."""
    d = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / d, -0.5, 0.5)) if d < 0 else 0.0


def _blobs(region: Grey) -> tuple[list[_Blob], list[_Blob]]:
    """The strongest blobs, strongest first: dark ones in light rings, and light ones in
    dark rings (a code shown light on dark: a phone in dark mode). Found at half the
    region's size (blurred past its modules, it loses nothing there). A difference of
    Gaussians sums to zero, so the light blobs' response is the dark ones' negated: one
    set of transforms gives both."""
    # (the mean of each 2x2 block: four small integers summed, exactly as a float mean)
    half = finders.block_sums(region, 2) * 0.25
    h2, w2 = half.shape
    pad = 8
    h, w = (fast_len(n + 2 * pad) for n in half.shape)
    spectrum = reflected_rfft2(half, (pad, h - h2 - pad), (pad, w - w2 - pad))
    dark = np.full((h2, w2), -np.inf)
    light = np.full((h2, w2), -np.inf)
    for band in _dog_bands(h, w):
        dog = irfft2_rows(spectrum * band, (h, w), slice(pad, pad + h2))[:, pad : pad + w2]
        dog /= dog.std() + 1e-9
        np.maximum(dark, dog, out=dark)
        np.maximum(light, -dog, out=light)
    return _peaks(dark), _peaks(light)


def _dog_bands(h: int, w: int) -> Iterator[_F]:
    """The difference of Gaussians of each of _SCALES (half-size pixels: s / 2) on an h x w
    padded region, as rfft2's transfer functions, in turn. A Gaussian is separable: each is
    the product of a column's and a row's, exponentials of h + w values (those of the whole
    h x w grid, and a power of them, cost a Pi 4 more than the transforms they filter)."""
    fy2, fx2 = np.fft.fftfreq(h) ** 2, np.fft.rfftfreq(w) ** 2
    for s in _SCALES:
        a, b = (-2 * math.pi**2 * (s / 2 * k) ** 2 for k in (1.0, _OUTER))
        band: _F = np.outer(np.exp(b * fy2), np.exp(b * fx2))
        band -= np.outer(np.exp(a * fy2), np.exp(a * fx2))
        yield band


def _peaks(best: _F) -> list[_Blob]:
    """The _PEAKS strongest peaks of a blob response at half size: (strength, x, y) in the
    region's pixels."""
    h2, w2 = best.shape
    out = []
    left = best.copy()
    for _ in range(_PEAKS):
        y, x = divmod(int(np.argmax(left)), left.shape[1])
        if not left[y, x] > 0:
            break
        if not (0 < y < h2 - 1 and 0 < x < w2 - 1):
            left[y, x] = -np.inf
            continue
        # the peak between pixels: a parabola through three samples each way
        dy, dx = (_vertex(best[y - 1, x], best[y, x], best[y + 1, x]),
                  _vertex(best[y, x - 1], best[y, x], best[y, x + 1]))
        # half-size pixel centres back to the region's
        out.append((float(best[y, x]), 2 * (x + dx) + 0.5, 2 * (y + dy) + 0.5))
        left[max(0, y - 4) : y + 5, max(0, x - 4) : x + 5] = -np.inf
    return out


def _triples(blobs: list[_Blob]) -> list[tuple[float, tuple[_F, _F, _F]]]:
    """Each three blobs at the corners of a square, as (strength, (top-left, top-right,
    bottom-left)), strongest first."""
    found: list[tuple[float, tuple[_F, _F, _F]]] = []
    for a, b, c in itertools.permutations(range(len(blobs)), 3):
        if b > c:
            continue
        pa = np.array(blobs[a][1:])
        square = _right_angle(pa, np.array(blobs[b][1:]), np.array(blobs[c][1:]))
        if square is None:
            continue
        pb, pc, cos = square
        strength = blobs[a][0] + blobs[b][0] + blobs[c][0] - 5 * cos
        found.append((strength, (pa, pb, pc)))
    found.sort(key=lambda t: -t[0])
    return found


def corners(region: Grey) -> list[tuple[_F, _F, _F]]:
    """Finder centres (top-left, top-right, bottom-left) of likely QR Codes shown dark on
    light, best first."""
    return [c for _, c in _triples(_blobs(region)[0])[:_TRIPLES]]


def polar_corners(region: Grey) -> list[Corner]:
    """The likeliest corners of a code shown dark on light, strongest first, then those of
    one shown light on dark, each with whether it is (see corners). Not ranked together:
    the insides of printed letters are light blobs in dark rings too, and among lines of
    print they displaced a code's own corners (dev stills, 3 of 87 solves)."""
    dark, light = _blobs(region)
    return ([(c, False) for _, c in _triples(dark)[:_TRIPLES]]
            + [(c, True) for _, c in _triples(light)[:_TRIPLES]])


def _right_angle(tl: _F, pb: _F, pc: _F) -> tuple[_F, _F, float] | None:
    """`pb` and `pc` as the top-right and bottom-left finder centres of a code whose
    top-left one is `tl`, with the |cos| of the angle at `tl`; None where the legs are
    out of _LEGS."""
    u, v = pb - tl, pc - tl
    lu, lv = float(np.hypot(*u)), float(np.hypot(*v))
    if min(lu, lv) < _LEGS[0] or max(lu, lv) / min(lu, lv) > _LEGS[1]:
        return None
    cos = abs(float(u @ v) / (lu * lv))
    if cos > _LEGS[2]:
        return None
    if u[0] * v[1] - u[1] * v[0] < 0:  # y down: top-right is clockwise of bottom-left
        return pc, pb, cos
    return pb, pc, cos


def grid(tl: _F, tr: _F, bl: _F, dim: int, br: _F | None = None) -> _F:
    """The homography from module coordinates to region pixels, from the finders' centres
    and, where given, the point `br` (module (dim - 3.5, dim - 3.5), where the symbol has
    no finder pattern); without it the grid is affine."""
    src = [(3.5, 3.5), (dim - 3.5, 3.5), (3.5, dim - 3.5), (dim - 3.5, dim - 3.5)]
    if br is None:
        br = tr + bl - tl
    dst = [(float(p[0]), float(p[1])) for p in (tl, tr, bl, br)]
    return warp.homography(src, dst)


# -- the grid refined: a page tilted to the lens is seen in perspective -------------------
#
# Three finder centres give an affine grid; on a page tilted 30-40 degrees the grid's far
# corner then lies a module or so off the symbol's, and the modules solved there are wrong
# past the error correction (af_miss 78, a 10.7 px disc on 8 px modules: 23 of 441 wrong on
# the affine grid, none on the grid refined). The four points that span the grid (the
# finders' centres and the fourth corner) are refined by coordinate descent, in steps of
# REFINE_STEPS modules, on the spread of the solved modules about the levels of the known
# dark and light ones: on the right grid each module solves near one of the two (af_miss
# 78: a spread of 0.014 there, 0.041 on the affine grid; the share of known modules right
# is 1.0 on both). Only a grid whose affine solve already gets REFINE_FLOOR of the known
# modules right is refined: a wrong corner or size gets about half.
# The descent goes round the 16 moves (8 coordinates, both ways) without starting again
# after each move that helps, and tries that move again first; each better grid is handed
# out as it is found, so that reading can stop there. On the 16 refinements of gen2 dev
# 250 000-250 479 and af_miss 0-119 (every pass due) that took 1 230 solves to their end,
# 674 against 901 where the first better grid read (one read only part way, af_miss 82).
REFINE_FLOOR = 0.75
REFINE_STEPS = (0.5, 0.25)
REFINE_ROUNDS = 6  # moves that help, at most, for each step
# (coordinate, sign): the fourth corner's two coordinates first. The finders' centres are
# found within about a pixel, but the fourth corner is the affine grid's guess, a module or
# so off on a tilted page: its moves are the ones that help. On the unmix regions of af_miss
# dev presentations 400 000-400 119 (every pass due) the refinement's 4 reads took 29, 9, 42
# and 15 solves rather than 53, 21, 66 and 27, the same 15 of 474 regions read, and af_miss
# dev stills 0-119 read the same 104 of 120.
_MOVES = tuple(itertools.product((6, 7, 0, 1, 2, 3, 4, 5), (1.0, -1.0)))


def spread(x: _F, dim: int) -> float:
    """How far the solved modules (solve) lie from the two levels, the mean of the known
    dark and of the known light ones, relative to the gap between those: 0 for a clean
    two-level symbol, inf where the known modules are not darker where dark."""
    core = x[MARGIN : MARGIN + dim, MARGIN : MARGIN + dim]
    lo, hi = _levels(x, dim)
    if not hi > lo:
        return math.inf
    nearest = np.where(core < (lo + hi) / 2, lo, hi)
    return float(((core - nearest) ** 2).mean()) / (hi - lo) ** 2


class Grid(NamedTuple):
    """A grid tried: its homography, its solved modules, the region resampled on it."""

    h: _F
    x: _F
    resampled: _F


def refined(light: _F, points: _F, dim: int, nm: Normal) -> Iterator[Grid | None]:
    """The grid on `points` (tl, tr, bl, br: 4 x 2 region pixels), then each better one
    the coordinate descent above finds, as found; None before each solve after the first
    (a step: see unmixed)."""

    def solved(pts: _F) -> tuple[float, Grid] | None:
        try:
            h = grid(pts[0], pts[1], pts[2], dim, pts[3])
        except np.linalg.LinAlgError:
            return None
        resampled = resample(light, h, dim)
        x = solve(resampled, nm, dim)
        return spread(x, dim), Grid(h, x, resampled)

    best = solved(points)
    if best is None:
        raise np.linalg.LinAlgError("the grid's points are in line")
    yield best[1]
    module = float(np.hypot(*(points[1] - points[0]))) / (dim - 7)
    for step in REFINE_STEPS:
        k, failed, moved = 0, 0, 0
        back: tuple[int, float] | None = None  # the move that undoes the last one
        while failed < len(_MOVES) and moved < REFINE_ROUNDS:
            c, sign = _MOVES[k]
            if (c, sign) != back:
                yield None  # one solve is the unit of time here
                pts = points.copy()
                pts[c // 2, c % 2] += sign * step * module
                trial = solved(pts)
                if trial is not None and trial[0] < best[0]:
                    best, points, back = trial, pts, (c, -sign)
                    moved, failed = moved + 1, 0
                    yield best[1]
                    continue  # the same move again
            k, failed = (k + 1) % len(_MOVES), failed + 1


def _drawn(grids: Iterable[Grid | None], nm: Normal, dim: int) -> Iterator[Step]:
    """The grids' solved modules that classify as a symbol, drawn for zxing-cpp (_symbols);
    the steps (None) between them as they come."""
    for g in grids:
        if g is None:
            yield None
            continue
        bits, _ = classify(g.x, dim)
        if bits is not None:
            yield from _symbols(g, bits, nm, dim)


def _symbols(g: Grid, bits: _B, nm: Normal, dim: int) -> Iterator[tuple[Grey, _F]]:
    """A grid's symbol drawn for zxing-cpp, with the transform back to the region's pixels;
    then, where the caller reads on, the symbol of its solve with the known modules held
    (`held`), where that differs."""
    back = warp.to_region(g.h, PPM)
    yield warp.draw_modules(bits, PPM), back
    again, _ = classify(held(g.resampled, nm, dim, g.x), dim)
    if again is not None and (again != bits).any():
        yield warp.draw_modules(again, PPM), back


def unmixed(region: Grey, radius: float, gaussian: bool = False,
            corners: list[Corner] | None = None) -> Iterator[Step]:
    """Clean symbols for zxing-cpp, most likely first, each with the transform from its
    pixels back to the region's: for each likely corner of finder patterns and each
    symbol size, the modules solved on that grid with the disc as measured (`radius`,
    region pixels); where the known modules agree, again on the TRIES around it (the
    centres are found within about a pixel; the lens and the ISP blur a little more than
    the disc), and called dark or light. Once a grid has been tried through, no other
    is. Then, where none read, the first grid that got REFINE_FLOOR of the known modules
    right refined for a view in perspective (`refined`), each better grid as found.
    With `gaussian`, the blur is a Gaussian of sigma `radius` (normal()).
    A None between them after each solve is a step: the caller may stop there, or keep the
    generator and go on later (the solve is dear on a slow core: passes.Paused).
    `corners`: polar_corners(region), where the caller has them (they depend on the region
    alone, and the blob search is the dearest step on a large one)."""
    if min(region.shape) < MIN_REGION:
        return
    light = _LIGHT[region]
    # a code shown light on dark is solved as its negative (in light: the solve is linear),
    # which is the symbol zxing-cpp reads
    levels = (light, 255.0 - light)
    firsts: list[_First] = []
    found = polar_corners(region) if corners is None else corners
    yield from _tried(levels, found, radius, firsts, gaussian)
    first = next((f for f in firsts if f.share >= REFINE_FLOOR), None)
    if first is None:
        return
    tl, tr, bl = first.centres
    grids = refined(levels[first.inverted], np.array([tl, tr, bl, tr + bl - tl]), first.dim,
                    first.nm)
    next(grids)  # the affine grid: _tried read it
    yield from _drawn(grids, first.nm, first.dim)


class _First(NamedTuple):
    """A corner and size's first solve in _tried (its affine grid), for the refinement."""

    share: float  # of the known modules right (classify)
    centres: tuple[_F, _F, _F]  # the finders' (top-left, top-right, bottom-left)
    dim: int
    nm: Normal
    inverted: bool  # the code shown light on dark


def _grids(tl: _F, tr: _F, bl: _F, dims: Iterable[int]) -> Iterator[tuple[int, _F]]:
    """Each size's affine grid on these finder centres in turn (none once they are in line)."""
    for dim in dims:
        try:
            yield dim, grid(tl, tr, bl, dim)
        except np.linalg.LinAlgError:
            return


def _share(light: _F, h: _F, dim: int, nm: Normal) -> float:
    """The share of the known modules the solve on grid `h` gets right (classify)."""
    return classify(solve(resample(light, h, dim), nm, dim), dim)[1]


def _tried(
    levels: tuple[_F, _F], found: list[Corner], radius: float,
    firsts: list[_First], gaussian: bool = False,
) -> Iterator[Step]:
    """unmixed's first part: each corner and size, on the affine grid and its TRIES, solved
    on `levels` (the region in light, and its negative for a corner found light on dark);
    the affine grid's solve of each is appended to `firsts`."""
    for (tl, tr, bl), inverted in found:
        light = levels[inverted]
        mid = (tl + tr + bl) / 3
        for dim in DIMS:
            normals: dict[tuple[float, float], Normal] = {}  # a shift leaves it as it is
            for i, (scale, wider, dx, dy) in enumerate(TRIES):
                a, b, c = (mid + (p - mid) * scale + np.array([dx, dy]) for p in (tl, tr, bl))
                try:
                    h = grid(a, b, c, dim)
                except np.linalg.LinAlgError:
                    break
                nm = normals.get((scale, wider))
                if nm is None:
                    nm = normals[scale, wider] = normal(h, dim, radius * wider,
                                                        gaussian=gaussian)
                x = solve(resample(light, h, dim), nm, dim)
                bits, share = classify(x, dim)
                if i == 0:
                    firsts.append(_First(share, (tl, tr, bl), dim, nm, inverted))
                if bits is not None:
                    yield warp.draw_modules(bits, PPM), warp.to_region(h, PPM)
                yield None
                if bits is None and i == 0:
                    break  # not this size, or not a code here
            else:
                return  # the code's grid and size, and none of its tries read: no other


# -- a smear: the same solve, the blur a line segment -----------------------------------
#
# A page moving during a dim room's long exposure smears each module along the motion by a
# module or two; on a page tilted to the lens as well, the deconvolved region (deblur.py)
# shows the finder patterns again, but zxing-cpp reads none of it (the ringing, the
# perspective). Solved on the module lattice with the measured smear as the blur, on the
# grid of the finder patterns found on the deconvolved copy, refined as above, it reads
# (on gen2 dev 250 000-250 479, hard, every pass due: 5 more of 292 codes; on 300 240-300
# 479 none more, none fewer). Which three finder patterns, and which of them is the
# corner, is decided by the solve itself: each corner of a square among the SMEAR_FINDERS
# most-crossed finder patterns, at the sizes its legs and modules allow, is solved once,
# and the one whose known modules come out most right is refined.
SMEAR_FINDERS = 5


def _square_corners(found: list[finders.Finder]) -> Iterator[tuple[_F, _F, _F, int]]:
    """Each (top-left, top-right, bottom-left) among the finder patterns that could be a
    code's seen at a slant (_right_angle), with the likeliest size."""
    for trio in itertools.combinations(found, 3):
        pts = [np.array([f.x, f.y], np.float64) for f in trio]
        module = float(np.median([f.module for f in trio]))
        for i in range(3):
            tl = pts[i]
            square = _right_angle(tl, pts[(i + 1) % 3], pts[(i + 2) % 3])
            if square is None:
                continue
            tr, bl, _ = square
            legs = (float(np.hypot(*(tr - tl))) + float(np.hypot(*(bl - tl)))) / 2
            size = legs / module + 7  # finder centres are dim - 7 modules apart
            yield tl, tr, bl, min(DIMS, key=lambda d: abs(d - size))


def unsmeared(
    region: Grey, motion: deblur.Motion, undone: Grey | None = None,
) -> Iterator[Step]:
    """Clean symbols for zxing-cpp, each with the transform from its pixels back to the
    region's (as unmixed), for a region smeared by `motion` (deblur.estimate): the modules
    solved with the smear as the blur on the grid the finder patterns give (see above),
    then on each better grid its refinement finds; none where no grid gets REFINE_FLOOR
    of the known modules right. `undone`: the region deconvolved already
    (deblur.deconvolve), where a deblur pass made it. Steps (None) between, as unmixed."""
    if min(region.shape) < MIN_REGION:
        return
    light = _LIGHT[region]
    if undone is None:
        undone = deblur.deconvolve(region, motion)
    seen = finders.find_finders(undone)
    yield None
    found = sorted(seen, key=lambda f: -f.hits)[:SMEAR_FINDERS]
    best: tuple[float, _F, int, Normal] | None = None
    for tl, tr, bl, size in _square_corners(found):
        for dim, h in _grids(tl, tr, bl, (size,)):
            nm = smear_normal(h, dim, motion)
            share = _share(light, h, dim, nm)
            if best is None or share > best[0]:
                best = share, np.array([tl, tr, bl, tr + bl - tl]), dim, nm
        yield None
    if best is None or best[0] < REFINE_FLOOR:
        return
    _, points, dim, nm = best
    yield from _drawn(refined(light, points, dim, nm), nm, dim)
