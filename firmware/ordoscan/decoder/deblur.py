"""Motion blur and defocus: measured on a region, and undone (Wiener deconvolution).

A page moving during a long exposure (dim light: 30 ms and more) smears each module
along the motion by several modules: no binarizer separates them. Linear motion blur is
a convolution with a short line segment, which leaves two marks a deconvolution can use:
- along the motion the image has the least gradient energy (the structure tensor's
  direction of smallest change);
- the derivative along the motion is the difference of two copies of the sharp image
  one blur length apart, so its autocorrelation dips to a minimum at that length.
Both are measured on the region itself (numpy, two FFTs); no model of the scene.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

Grey = npt.NDArray[np.uint8]
_F = npt.NDArray[np.float64]

MIN_ANISOTROPY = 0.4  # structure tensor (l1 - l2) / (l1 + l2): a sharp code's is ~0.1-0.3
# ... on a region's busiest square, mostly the code itself: no page edge or margin there to
# add to it (dev seed 200 316 measured 0.37; at 0.35 on a region's middle, a defocused code
# of af_miss measured as a smear and lost its defocus passes)
MIN_ANISOTROPY_BUSIEST = 0.35
_LENGTHS = (3, 24)  # blur lengths searched, in the region's pixels
_MIN_DIP = -0.15  # the autocorrelation's dip at the blur length (normalised): deeper is blur
_SECTOR = 15.0  # degrees either side of the structure tensor's direction searched
MOTION_NSR = 0.01  # Wiener noise-to-signal ratio (8-bit sensor noise over a code's contrast)
# ... for a noisy region (dim light, high gain): three times the noise undone less hard
NOISY_NSR = 0.03
_MAX_SIDE = 320  # pixels a side of the patch the blur is measured on
WINDOW = 0.6  # the busiest square's side, as a share of the region's shorter side


@dataclass(frozen=True, slots=True)
class Motion:
    """A linear motion blur: direction in degrees (image axes, y down) and length in pixels."""

    angle: float
    length: float


def _gradients(f: _F) -> tuple[_F, _F]:
    gx = np.zeros_like(f)
    gy = np.zeros_like(f)
    gx[:, 1:-1] = (f[:, 2:] - f[:, :-2]) / 2
    gy[1:-1] = (f[2:] - f[:-2]) / 2
    return gx, gy


def _smooth(n: int) -> bool:
    """Whether n's only prime factors are 2, 3 and 5: a fast FFT length (a prime length
    costs many times more)."""
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def fast_len(n: int) -> int:
    """The smallest fast FFT length >= n."""
    while not _smooth(n):
        n += 1
    return n


def reflected_rfft2(f: npt.NDArray[np.floating[Any]], rows: tuple[int, int], cols: tuple[int, int]
                    ) -> npt.NDArray[np.complex128]:
    """np.fft.rfft2(np.pad(f, (rows, cols), mode="reflect")), to the bit, in less time:
    numpy transforms along x first, row by row, and the rows the padding repeats are
    transformed once."""
    along_x = np.fft.rfft(np.pad(f, ((0, 0), cols), mode="reflect"), axis=1)
    out: npt.NDArray[np.complex128] = np.fft.fft(
        along_x[np.pad(np.arange(f.shape[0]), rows, mode="reflect")], axis=0)
    return out


def irfft2_rows(spectrum: npt.NDArray[np.inexact[Any]], shape: tuple[int, int],
                rows: slice) -> _F:
    """np.fft.irfft2(spectrum, s=shape)[rows], to the bit, in less time: numpy inverts along
    y first, then along x row by row, so the rows cut off need no inverse along x (a
    padded region's padding rows, a fifth of them and more)."""
    out: _F = np.fft.irfft(np.fft.ifft(spectrum, axis=0)[rows], n=shape[1], axis=1)
    return out


def to_grey(f: _F) -> Grey:
    """Grey levels of f, clipped to 0-255: np.clip's bytes (a NaN too: both keep it), in
    place (numpy 1.24's clip, a kiosk's, checks its casts at some cost on every call)."""
    np.maximum(f, 0, out=f)
    np.minimum(f, 255, out=f)
    return f.astype(np.uint8)


def _fast_below(n: int) -> int:
    """The largest fast FFT length <= n."""
    while not _smooth(n):
        n -= 1
    return n


def estimate(region: Grey, busiest: bool = True) -> Motion | None:
    """The region's motion blur, or None when it does not look motion-blurred.

    Measured on the region's middle, at most _MAX_SIDE pixels a side (the code is near
    the middle of most regions proposed, and the blur is the same across a small code).
    Where the middle does not measure as blurred, with `busiest` on the region's busiest
    square too: a region merged from several boxes may hold its code well off its middle,
    and there the page's margin and text around the code outweigh the code's own smear
    (dev seeds 200 334, 200 316). Lines of print can measure as a smear there too, more
    often than a code's middle does (see Decoder.decode: such regions' passes come later)."""
    if min(region.shape) < 16:
        return None
    h, w = (_fast_below(min(n, _MAX_SIDE)) for n in region.shape)
    y0, x0 = (region.shape[0] - h) // 2, (region.shape[1] - w) // 2
    found = _measure(region[y0 : y0 + h, x0 : x0 + w], MIN_ANISOTROPY)
    if found is not None or not busiest:
        return found
    square = _busiest_square(region)
    return None if square is None else _measure(square, MIN_ANISOTROPY_BUSIEST)


def may_smear(region: Grey, floor: float) -> bool:
    """Whether the region's busiest square (see estimate) is at least `floor` anisotropic,
    or too small to tell: the structure tensor only, no FFT. On the frame's region, before
    the main stream's is read and measured (DEBLUR_LATE_PASSES)."""
    if min(region.shape) < 16:
        return True
    square = _busiest_square(region)
    return square is None or _anisotropy(*_tensor(square)[2:]) >= floor


def _busiest_square(region: Grey) -> Grey | None:
    """The region's busiest square (WINDOW of its shorter side, a fast FFT length), or None
    when it would be under 32 pixels a side."""
    side = _fast_below(min(int(WINDOW * min(region.shape)), _MAX_SIDE))
    if side < 32:
        return None
    y0, x0 = _busiest(region, side)
    return region[y0 : y0 + side, x0 : x0 + side]


def _busiest(region: Grey, side: int) -> tuple[int, int]:
    """The top-left corner of the `side`-pixel square with the most gradient energy (on a
    4-pixel grid: the code's modules are the densest edges of a page)."""
    f = region.astype(np.float32)
    e = np.zeros(f.shape, np.float32)
    e[:, 1:] += np.abs(np.diff(f, axis=1))
    e[1:] += np.abs(np.diff(f, axis=0))
    c = np.zeros((region.shape[0] + 1, region.shape[1] + 1), np.float64)
    c[1:, 1:] = e.cumsum(0).cumsum(1)
    ys = np.arange(0, region.shape[0] - side + 1, 4)
    xs = np.arange(0, region.shape[1] - side + 1, 4)
    sums = (c[ys[:, None] + side, xs[None, :] + side] - c[ys[:, None], xs[None, :] + side]
            - c[ys[:, None] + side, xs[None, :]] + c[ys[:, None], xs[None, :]])
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(ys[i]), int(xs[j])


def _tensor(patch: Grey) -> tuple[_F, _F, float, float, float]:
    """The patch's gradients (less their means) and their structure tensor jxx, jyy, jxy."""
    gx, gy = _gradients(patch.astype(np.float64))
    gx -= gx.mean()
    gy -= gy.mean()
    return gx, gy, float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())


def _anisotropy(jxx: float, jyy: float, jxy: float) -> float:
    """(l1 - l2) / (l1 + l2) of a structure tensor: 0 alike all ways (or flat), 1 one way."""
    return math.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy) if jxx + jyy > 0 else 0.0


def _measure(patch: Grey, min_anisotropy: float) -> Motion | None:
    """The motion blur of a patch whose sides are fast FFT lengths, or None."""
    h, w = patch.shape
    gx, gy, jxx, jyy, jxy = _tensor(patch)
    if jxx + jyy <= 0 or _anisotropy(jxx, jyy, jxy) < min_anisotropy:
        return None
    theta = 0.5 * math.atan2(2 * jxy, jxx - jyy) + math.pi / 2  # least change: the motion
    # The derivative along that direction, autocorrelated: its dip is sought over the whole
    # plane near the direction, not along rays (a ray's samples rounded to whole pixels
    # step by several degrees at the lengths of a smear; the tensor's direction is pulled
    # a few degrees towards the code's own axes): the dip's place is the blur's vector.
    c, s = math.cos(theta), math.sin(theta)
    fd = c * np.fft.rfft2(gx) + s * np.fft.rfft2(gy)
    a = np.fft.irfft2((fd * np.conj(fd)).real, s=patch.shape)
    if a[0, 0] <= 0:
        return None
    a = np.fft.fftshift(a / a[0, 0])
    cy, cx = h // 2, w // 2
    top = min(_LENGTHS[1], min(h, w) // 3)
    dy, dx = np.mgrid[-top : top + 1, -top : top + 1]
    near = a[cy - top : cy + top + 1, cx - top : cx + top + 1]
    off_axis = np.abs((np.degrees(np.arctan2(dy, dx) - theta) + 90) % 180 - 90)
    inside = (np.hypot(dx, dy) >= _LENGTHS[0]) & (off_axis <= _SECTOR)
    k = int(np.argmin(np.where(inside, near, np.inf)))
    iy, ix = divmod(k, near.shape[1])
    iy, ix = iy - top + cy, ix - top + cx
    if not a[iy, ix] < _MIN_DIP:
        return None
    # the dip's bottom between whole pixels (a parabola through three samples each way)
    vx = ix - cx + _vertex(a[iy, ix - 1], a[iy, ix], a[iy, ix + 1])
    vy = iy - cy + _vertex(a[iy - 1, ix], a[iy, ix], a[iy + 1, ix])
    return Motion(math.degrees(math.atan2(vy, vx)) % 180.0, math.hypot(vx, vy))


def _vertex(a: float, b: float, c: float) -> float:
    """Where the parabola through (-1, a), (0, b), (1, c) bottoms out, within half a step."""
    d = a - 2 * b + c
    return min(max(0.5 * (a - c) / d, -0.5), 0.5) if d > 0 else 0.0


def transfer(rows: npt.ArrayLike, cols: npt.ArrayLike, weights: npt.ArrayLike,
             shape: tuple[int, int]) -> _F:
    """The transfer function, laid out as rfft2's, of a kernel whose `weights` sit at the
    integer offsets (`rows`, `cols`) from pixel (0, 0), repeats added, normalised to sum 1,
    for an image of `shape`: its real part, which is all of it for a kernel symmetric
    about (0, 0) (a centred line segment, a disc: the sines cancel).

    The kernel spans a few dozen rows of an image that is zero elsewhere: only those rows
    are transformed along x, and the transform along y is taken of the half spectrum
    rfft2 keeps (about half rfft2's time on a 500-pixel region, the same figures to
    rounding; no matrix product, which a multithreaded BLAS would spread over cores)."""
    h, w = shape
    ys, iy = np.unique(np.asarray(rows, np.int64) % h, return_inverse=True)
    k = np.zeros((ys.size, w))
    np.add.at(k, (iy.ravel(), np.asarray(cols, np.int64).ravel() % w),
              np.asarray(weights, np.float64).ravel())
    k /= k.sum()
    spectrum = np.zeros((h, w // 2 + 1), np.complex128)
    spectrum[ys] = np.fft.rfft(k, axis=1)
    out: _F = np.fft.fft(spectrum, axis=0).real
    return out


def kernel(m: Motion, shape: tuple[int, int]) -> _F:
    """The blur's transfer function for an image of `shape` (real: see transfer): a
    centred line segment, its samples spread over their four nearest pixels (an even
    weight at any angle, and symmetric about the centre)."""
    a = math.radians(m.angle)
    t = np.linspace(-m.length / 2, m.length / 2, round(4 * m.length) + 1)
    x, y = t * math.cos(a), t * math.sin(a)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    return transfer(
        np.concatenate((y0, y0, y0 + 1, y0 + 1)),
        np.concatenate((x0, x0 + 1, x0, x0 + 1)),
        np.concatenate(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)),
        shape,
    )


class Version(NamedTuple):
    """One deconvolution of a measured motion blur."""

    length: float  # a multiple of the length as measured (the measure can overshoot)
    nsr: float  # the Wiener noise ratio
    turn: float = 0.0  # degrees off the angle as measured (the measure can be a few off)
    # this multiple of the defocus disc measured across the smear (across), undone with it
    # (0: the smear alone)
    disc: float = 0.0


UNDONE = Version(1.0, MOTION_NSR)  # the smear as measured, undone (deconvolve)


def deconvolve(region: Grey, m: Motion) -> Grey:
    """The region with the motion blur `m` undone (Wiener), as grey levels."""
    return next(deconvolved(region, m, (UNDONE,)))


def deconvolved(region: Grey, m: Motion, versions: tuple[Version, ...],
                disc: float | None = None) -> Iterator[Grey]:
    """The region with the motion blur `m` undone in each version in turn (Version: a
    multiple of its length, the Wiener noise ratio, degrees off its angle, a multiple of
    the defocus `disc` radius undone with it; a version with a disc is left out when
    `disc` is None). The region's transform is taken once."""
    w = Wiener(region)
    return (undone(w, m, v, disc or 0.0) for v in versions if not v.disc or disc)


def undone(w: Wiener, m: Motion, v: Version, disc: float = 0.0) -> Grey:
    """`w`'s region with the motion blur `m` undone in version `v` (with `disc`, the
    defocus radius the version's multiple applies to)."""
    moved = replace(m, length=m.length * v.length, angle=m.angle + v.turn)
    radius = v.disc * disc
    return w(partial(_smear, moved, radius), v.nsr, key=(moved, radius))


def _smear(m: Motion, radius: float, shape: tuple[int, int]) -> _F:
    """The transfer function of the smear `m`, and of a defocus disc of `radius` with it
    (0: none): the product of the two, both real."""
    k = kernel(m, shape)
    return k * _disc(radius, shape) if radius else k


class Wiener:
    """Wiener deconvolutions of one region, its transform taken once (on the first), and
    each transfer function drawn once (versions that differ in their noise ratio only)."""

    def __init__(self, region: Grey) -> None:
        self._f = region.astype(np.float64)
        self._spectrum: npt.NDArray[np.complex128] | None = None
        self._shape = (0, 0)
        self._kernels: dict[Hashable, _F] = {}

    def __call__(self, kernel: Callable[[tuple[int, int]], _F], nsr: float,
                 key: Hashable | None = None) -> Grey:
        """The region deconvolved by the transfer function `kernel(shape)` gives, at the
        noise ratio `nsr`; one `key` names one transfer function (drawn once). The
        transfer functions are real (symmetric kernels): the filter k / (k^2 + nsr) is too."""
        f = self._f
        if self._spectrum is None:
            # mirrored on the right and below: the FFT's wrap-around then meets like pixels
            ph, pw = (fast_len(n + n // 4) - n for n in f.shape)
            self._shape = (f.shape[0] + ph, f.shape[1] + pw)
            self._spectrum = reflected_rfft2(f, (0, ph), (0, pw))
        k = self._kernels.get(key) if key is not None else None
        if k is None:
            k = kernel(self._shape)
            if key is not None:
                self._kernels[key] = k
        out = irfft2_rows(self._spectrum * (k / (k * k + nsr)), self._shape, slice(f.shape[0]))
        return to_grey(out[:, : f.shape[1]])


def _wiener(
    region: Grey,
    kernels: list[tuple[Callable[[tuple[int, int]], _F], float]],
) -> Iterator[Grey]:
    """The region deconvolved (Wiener) by each transfer function `kernel(shape)` gives, at
    its noise ratio, in turn, lazily (a caller that reads the first stops there)."""
    w = Wiener(region)
    return (w(kernel, nsr) for kernel, nsr in kernels)


# -- defocus: a lens focused in front of or behind the page blurs each point into a disc --
#
# A step edge blurred by a disc of radius R has its steepest slope, contrast * 2 / (pi R),
# on the edge (the disc's line spread function at its centre): the radius follows from the
# region's contrast (2nd to 98th percentile of its grey levels) and the steep part of its
# edges (the 95th percentile of the gradients above a tenth of that contrast: the flat
# paper around a code does not count). Over a code's modules the measure reads 0.7 to
# 0.9 R for discs of 3-6 px (a disc as wide as a module never reaches the full contrast):
# DEFOCUS_PASSES undo it at more than one multiple. Under MIN_DEFOCUS the region is in
# focus for zxing-cpp (or the blur is the lens's own and the ISP's): nothing is undone.
MIN_DEFOCUS = 2.0  # px, as measured: a smaller disc leaves modules of 4 px and more readable
MAX_DEFOCUS = 12.0  # px: a bound; the slope reads no more than 20 / pi px (edges under a tenth
# of the contrast a pixel are not counted): a wider disc leaves too few edges, and the
# spectrum alone measures it (measure_defocus; on af_miss 0-119, discs of 12-17 px of
# which the module solve then reads some)
MAX_DEFOCUS_SPECTRUM = 14.0  # px: the spectrum's rings measure larger discs than the slope
_MIN_EDGES = 64  # steep gradients the slope's measure needs
_DEFOCUS_NSR = 0.02
WIDE_DEFOCUS = 24.0  # px: the widest disc the spectrum alone is trusted to measure


def defocus(region: Grey) -> float | None:
    """The radius in pixels of the region's defocus disc as measured (see above), or None
    when it looks in focus, or blurred one way (a motion: deconvolve that instead).

    Measured on the region's middle, at most _MAX_SIDE pixels a side."""
    return _slope_radius(region, None)


def across(region: Grey, m: Motion) -> float | None:
    """The radius of a defocus disc under the motion blur `m`, measured as defocus() does
    but on the gradients across the smear only (edges along the motion are blurred by the
    disc alone), or None when it measures no disc: a page moving in dim light under a lens
    focused elsewhere (a fixed focus and the page close, an autofocus that missed) carries
    both blurs, and undoing either alone leaves the modules merged."""
    return _slope_radius(region, math.radians(m.angle + 90.0))


def _slope_radius(region: Grey, normal: float | None) -> float | None:
    """defocus() and across(): the gradients' magnitudes, or their part along `normal`
    (radians), measured against the contrast."""
    return _edge_radius(_steep_edges(region, normal))


def _edge_radius(edges: tuple[float, _F] | None) -> float | None:
    """The disc's radius from a region's contrast and steep gradients (_steep_edges), or
    None where there are too few of them or it measures no defocus."""
    if edges is None or edges[1].size < _MIN_EDGES:
        return None
    contrast, steep = edges
    radius = 2 * contrast / (math.pi * float(np.percentile(steep, 95)))
    return radius if MIN_DEFOCUS <= radius <= MAX_DEFOCUS else None


def _steep_edges(region: Grey, normal: float | None) -> tuple[float, _F] | None:
    """The region's middle: its contrast and its gradients over a tenth of it (see above),
    or None where it is flat or (without `normal`) blurred one way."""
    if min(region.shape) < 16:
        return None
    h, w = (min(n, _MAX_SIDE) for n in region.shape)
    y0, x0 = (region.shape[0] - h) // 2, (region.shape[1] - w) // 2
    a = region[y0 : y0 + h, x0 : x0 + w]
    # In integers, four times the 2x2 mean (against the noise) and its steps: the float
    # values below are a quarter of these and their sums a sixteenth, exactly as computed
    # in floats (at most 37 significant bits), for a fraction of the cost.
    s = a[:-1, :-1].astype(np.int16) + a[1:, :-1]
    s += a[:-1, 1:]
    s += a[1:, 1:]
    dx, dy = s[:-1, 1:] - s[:-1, :-1], s[1:, :-1] - s[:-1, :-1]
    if normal is None:
        dx32 = dx.astype(np.int32)
        dx2, dy2 = dx32 * dx, dy.astype(np.int32) * dy
        jxx, jyy = int(dx2.sum(dtype=np.int64)) / 16, int(dy2.sum(dtype=np.int64)) / 16
        jxy = int((dx32 * dy).sum(dtype=np.int64)) / 16
        if jxx + jyy <= 0 or _anisotropy(jxx, jyy, jxy) >= MIN_ANISOTROPY:
            return None  # flat, or blurred one way: a motion
        squares = dx2 + dy2
    lo, hi = np.percentile(s, (2, 98)) / 4
    contrast = float(hi - lo)
    if contrast < 16:
        return None
    floor = 0.1 * contrast
    if normal is None:
        # the gradients' magnitudes where the exact squares say they may pass the floor
        # (hypot is within an ulp of them), then as before
        near = squares >= 16 * floor * floor * (1 - 1e-9)
        g = np.hypot(dx[near] / 4, dy[near] / 4)
    else:
        g = np.abs(math.cos(normal) * (dx / 4) + math.sin(normal) * (dy / 4))
    steep: _F = g[g > floor]
    return contrast, steep


# The disc's size from the region's spectrum (blur identification from spectral zeros): a
# disc of radius R multiplies the spectrum by jinc(2 pi f R) = 2 J1(x) / x, whose rings of
# zeros (the first at f = 0.61 / R cycles a pixel) mark the radially averaged power
# spectrum of any broadband subject, a code's modules included. The measure above reads
# short once the disc is wider than a module (the modules never reach the full contrast);
# the rings do not depend on contrast. The fit: log power = a + b log f + c log jinc^2,
# least squares for each radius on a grid, the best with a real share of jinc (c).
_SPECTRUM_SIDES = (256, 192, 128, 96, 64)  # pixels a side of the patch (the code's middle)
_SPECTRUM_RADII = np.arange(1.5, 24.05, 0.1)  # radii tried, px
_SPECTRUM_BAND = (2, 0.35)  # frequencies fitted: from 2 cycles a patch to 0.35 a pixel
_MIN_JINC_SHARE = 0.2  # c below this: the spectrum shows no disc
_JINC_FLOOR = 1e-3  # the noise floor under the zeros (8-bit noise over a code's contrast)


def _j1(x: _F) -> _F:
    """Bessel J1 by its integral, J1(x) = 1/pi int_0^pi cos(t - x sin t) dt (numpy has none)."""
    t = (np.arange(128) + 0.5) * (math.pi / 128)
    return np.asarray(np.cos(t - x[..., None] * np.sin(t)).mean(axis=-1), np.float64)


@lru_cache(maxsize=8)
def _jinc_table(n: int) -> tuple[_F, _F, _F]:
    """For an n-pixel patch: the fitted frequency bins, log f and log jinc^2 (radii x bins)."""
    lo, hi = _SPECTRUM_BAND[0], int(_SPECTRUM_BAND[1] * n)
    k = np.arange(lo, hi + 1, dtype=np.float64)
    x = 2 * math.pi * (k / n)[None, :] * _SPECTRUM_RADII[:, None]
    jinc = 2 * _j1(x) / x
    return k, np.log(k / n), np.log(jinc**2 + _JINC_FLOOR)


# A lens's blur is a disc only in the geometric limit: aberrations, diffraction and the
# ISP's filtering round it off, and a soft defocus of a small module's lens looks more like
# a Gaussian, whose spectrum falls off smoothly with no rings. The same fit with
# log (exp(-4 pi^2 sigma^2 f^2) + floor) in place of the jinc measures it; where it fits
# far better than any disc (GAUSSIAN_FIT), the Gaussian is the blur the module solve
# assumes first (passes.unmix_blurs): a disc's solve leaves such modules mixed.
_SPECTRUM_SIGMAS = np.arange(0.8, 12.05, 0.1)  # Gaussian sigmas tried, px
GAUSSIAN_FIT = 0.25  # the Gaussian's residual at most this share of the disc's


@lru_cache(maxsize=8)
def _gauss_table(n: int) -> _F:
    """For an n-pixel patch: log |Gaussian|^2 (sigmas x fitted bins), with the floor."""
    k = _jinc_table(n)[0]
    g = np.exp(-4 * math.pi**2 * (_SPECTRUM_SIGMAS[:, None] * (k / n)[None, :]) ** 2)
    return np.log(g + _JINC_FLOOR)


class _Fit(NamedTuple):
    """The least squares of log power = a + b log f + c model, for every row (size) of
    `model` at once, taken as far as it goes without the power: the design matrices
    (sizes x bins x 3) and the inverses of their normal matrices (None: one is singular)."""

    design: _F
    inverse: _F | None


def _fit_table(logf: _F, model: _F) -> _Fit:
    """The fit's parts that do not depend on the region (see _Fit)."""
    a = np.stack([np.broadcast_to(np.ones_like(logf), model.shape),
                  np.broadcast_to(logf, model.shape), model], axis=-1)
    try:
        inverse = np.linalg.inv(np.einsum("rbi,rbj->rij", a, a))
    except np.linalg.LinAlgError:
        return _Fit(a, None)
    return _Fit(a, inverse)


@lru_cache(maxsize=8)
def _fits(n: int) -> tuple[_Fit, _Fit]:
    """For an n-pixel patch: the disc's and the Gaussian's fits (see _best_fit)."""
    _, logf, model = _jinc_table(n)
    return _fit_table(logf, model), _fit_table(logf, _gauss_table(n))


def _best_fit(lp: _F, fit: _Fit, rows: int | None = None) -> tuple[int, float] | None:
    """The row of the fit's model (sizes x bins; its first `rows` only) that fits the log
    power `lp` best as a + b log f + c model, with c at least _MIN_JINC_SHARE:
    (row, residual), or None."""
    if fit.inverse is None:
        return None
    aty = np.einsum("rbi,b->ri", fit.design, lp)
    coef = np.einsum("rij,rj->ri", fit.inverse, aty)
    # the residual at the least-squares solution: |lp|^2 - coef . A'lp
    err = float(lp @ lp) - np.einsum("ri,ri->r", coef, aty)
    err[coef[:, 2] < _MIN_JINC_SHARE] = np.inf
    if rows is not None:
        err[rows:] = np.inf
    best = int(np.argmin(err))
    return (best, float(err[best])) if math.isfinite(float(err[best])) else None


@lru_cache(maxsize=8)
def _rings(n: int) -> tuple[_F, npt.NDArray[np.int64], _F]:
    """For an n-pixel patch: its window (Hann, both ways), each rfft2 bin's ring (its
    frequency rounded, in cycles a patch; flattened) and the bins of each fitted ring."""
    k = _jinc_table(n)[0]
    hann = np.hanning(n)
    fy = np.fft.fftfreq(n)[:, None] * n
    fx = np.arange(n // 2 + 1)[None, :]
    ring = np.rint(np.hypot(fy, fx)).astype(np.int64).ravel()
    counts = np.bincount(ring, minlength=int(k[-1]) + 1)[k.astype(np.int64)]
    return np.outer(hann, hann), ring, np.maximum(counts, 1).astype(np.float64)


def _ring_means(power: _F, n: int) -> _F:
    """The mean of an n-pixel patch's rfft2 power over each fitted ring (_rings)."""
    _, ring, counts = _rings(n)
    k = _jinc_table(n)[0]
    sums = np.bincount(ring, weights=power.ravel(), minlength=int(k[-1]) + 1)
    means: _F = sums[k.astype(np.int64)] / counts
    return means


def warm() -> None:
    """Build the spectrum's tables for every patch side now (about 80 ms of x86 CPU, four
    to five times that on a Pi 4), not at the first out-of-focus code a customer shows."""
    for n in _SPECTRUM_SIDES:
        _fits(n)
        _rings(n)


class Spectrum(NamedTuple):
    """A region's blur as its spectrum shows it: the disc's radius (None: no rings, or a
    small disc) and the Gaussian's sigma where it fits far better than any disc (None)."""

    ring: float | None
    sigma: float | None


def spectrum_blur(region: Grey, largest: float = MAX_DEFOCUS_SPECTRUM) -> Spectrum:
    """The region's blur from its radially averaged power spectrum (above), both lens
    models fitted, discs up to `largest` px (a fit just past it: none measured).
    Measured on the region's middle, at most 256 pixels a side."""
    n = next((s for s in _SPECTRUM_SIDES if s <= min(region.shape)), 0)
    if not n:
        return Spectrum(None, None)
    y0, x0 = (region.shape[0] - n) // 2, (region.shape[1] - n) // 2
    f = region[y0 : y0 + n, x0 : x0 + n].astype(np.float64)
    f -= f.mean()
    power = np.abs(np.fft.rfft2(f * _rings(n)[0])) ** 2
    lp = np.log(_ring_means(power, n) + 1e-9)
    disc_fit, gauss_fit = _fits(n)
    disc = _best_fit(lp, disc_fit, int(np.searchsorted(_SPECTRUM_RADII, largest + 2.05, "right")))
    gauss = _best_fit(lp, gauss_fit)
    radius = None if disc is None else float(_SPECTRUM_RADII[disc[0]])
    if radius is not None and not MIN_DEFOCUS <= radius <= largest:
        radius = None
    sigma = None
    if gauss is not None and (disc is None or gauss[1] < GAUSSIAN_FIT * disc[1]):
        sigma = float(_SPECTRUM_SIGMAS[gauss[0]])
    return Spectrum(radius, sigma)


def covered(radius: float, m: _F | None = None) -> tuple[npt.NDArray[np.int64],
                                                         npt.NDArray[np.int64], _F]:
    """The pixels a disc of `radius` covers, as offsets (rows, columns) from pixel (0, 0),
    and the share of each inside it (4x4 samples a pixel). With `m` (2x2): the ellipse
    of offsets d with |m d| <= radius (a disc seen through a linear map)."""
    m = np.eye(2) if m is None else m
    inv = np.linalg.inv(m)
    ext = radius * np.sqrt((inv * inv).sum(axis=1))  # its extent along each axis
    r = math.ceil(float(ext.max())) + 1
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    d = np.arange(-r, r + 1)
    ys = (d[:, None, None, None] + sub[None, None, :, None])
    xs = (d[None, :, None, None] + sub[None, None, None, :])
    px = m[0, 0] * xs + m[0, 1] * ys
    py = m[1, 0] * xs + m[1, 1] * ys
    cover = (px * px + py * py <= radius * radius).mean(axis=(2, 3))
    iy, ix = np.nonzero(cover)
    return iy - r, ix - r, cover[iy, ix]


def _disc(radius: float, shape: tuple[int, int]) -> _F:
    """A defocus disc's transfer function for an image of `shape` (real: see transfer):
    each pixel weighted by the share of it the disc covers, centred on pixel (0, 0)."""
    return transfer(*covered(radius), shape)


def undone_defocus(region: Grey, radii: list[float]) -> Iterator[Grey]:
    """The region with a defocus disc of each of these radii undone in turn: the region's
    transform is taken once."""
    return _wiener(region, [(partial(_disc, r), _DEFOCUS_NSR) for r in radii])


class Disc(NamedTuple):
    """A region's defocus measured both ways: by its edges' slope, by its spectrum's rings
    (None when they show none), and the spectrum's Gaussian where it fits far better;
    `wide`: by the rings alone (no steep edge left, the slope is the rings' radius)."""

    slope: float
    ring: float | None
    sigma: float | None = None
    wide: bool = False


def measure_defocus(region: Grey) -> Disc | None:
    """The region's defocus disc measured both ways, or None when the slope's measure sees
    no defocus (a sharp code's square modules leave dips of their own in the spectrum, as
    a disc of about 0.6 module would: the spectrum is then not measured). A region with
    contrast but hardly a steep edge (a disc so wide that no gradient reaches a tenth of
    the contrast a pixel) is measured by its spectrum's rings alone, up to WIDE_DEFOCUS."""
    edges = _steep_edges(region, None)  # (once: the wide measure looks at them too)
    slope = _edge_radius(edges)
    if slope is None:
        if edges is None or edges[1].size >= _MIN_EDGES:
            return None
        wide = spectrum_blur(region, WIDE_DEFOCUS)
        return None if wide.ring is None else Disc(wide.ring, wide.ring, wide.sigma, wide=True)
    return Disc(slope, *spectrum_blur(region))


def defocus_radii(disc: Disc | None, factors: tuple[float, ...]) -> list[float]:
    """The defocus discs to undo on a region measured as `disc` (measure_defocus), most
    likely first: none when it measured no defocus, else the spectrum's measure, then these
    multiples of the slope's (which reads short once the disc is as wide as a module)."""
    if disc is None:
        return []
    slope, ring = disc.slope, disc.ring
    radii = [ring] if ring is not None else []
    return radii + [slope * k for k in factors if all(abs(slope * k - r) > 0.05 * r for r in radii)]
