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

Grey = npt.NDArray[np.uint8]
_F = npt.NDArray[np.float64]
Point = tuple[float, float]

PPM = 8  # pixels a module of the flattened image
SIGMA = 2.0  # modules: the window the local drift is measured over
ROUNDS = 2  # measure-and-move rounds
QUIET = 4  # modules of quiet zone around the flattened symbol
MAX_VERSION = 10  # larger symbols (57+ modules) are left alone: time and memory


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


def _bilinear(img: _F, x: _F, y: _F) -> _F:
    hgt, wid = img.shape
    x = np.clip(x, 0, wid - 1.001)
    y = np.clip(y, 0, hgt - 1.001)
    x0 = x.astype(np.intp)
    y0 = y.astype(np.intp)
    fx, fy = x - x0, y - y0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    out: _F = top * (1 - fy) + bottom * fy
    return out


def _gauss_matrix(n: int, sigma: float) -> _F:
    """Rows: a Gaussian window at each pixel, normalised (so the edges are not darkened)."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    g: _F = np.exp(-0.5 * (d / sigma) ** 2)
    return g / g.sum(axis=1, keepdims=True)


def _drift(r: _F, axis: int, g: _F) -> _F:
    """How far (pixels) the module boundaries along `axis` sit from the grid's, at each pixel."""
    n = r.shape[axis]
    edges = np.zeros_like(r)
    if axis == 1:
        edges[:, 1:] = np.abs(np.diff(r, axis=1))  # column k: the edge between k-1 and k
        phasor = np.exp(-2j * math.pi * np.arange(n) / PPM)[None, :]
    else:
        edges[1:, :] = np.abs(np.diff(r, axis=0))
        phasor = np.exp(-2j * math.pi * np.arange(n) / PPM)[:, None]
    c = edges * phasor
    local = g @ c @ g.T  # the Gaussian window, both ways
    out: _F = -np.angle(local) / (2 * math.pi) * PPM
    return out


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
    g = _gauss_matrix(n, SIGMA * PPM)
    for _ in range(ROUNDS):
        r = _bilinear(img, *project(h, u + du, v + dv))
        du += _drift(r, 1, g) / PPM
        dv += _drift(r, 0, g) / PPM
    r = _bilinear(img, *project(h, u + du, v + dv))
    light = float(r.max())
    flat = np.pad(r, QUIET * PPM, constant_values=light)
    # flattened pixels (x, y) -> module units (x / PPM - QUIET) -> region pixels
    back = h @ np.array([[1 / PPM, 0, -QUIET], [0, 1 / PPM, -QUIET], [0, 0, 1]])
    return np.clip(flat, 0, 255).astype(np.uint8), back
