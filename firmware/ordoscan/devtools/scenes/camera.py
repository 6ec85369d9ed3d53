"""gen1's camera: pose, optics, sensor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from ordoscan.devtools.scenes.documents import Layer

Difficulty = Literal["easy", "hard"]
Grey = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float64]  # geometry
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Pixels = npt.NDArray[np.float32]  # light, in grey levels


# ---------------------------------------------------------------------------
# Camera: pose, optics, sensor


@dataclass(frozen=True)
class Conditions:
    """The capture conditions of one scene, drawn from the difficulty's ranges."""

    module_px: float  # QR/DataMatrix module size at the code centre, in output pixels
    roll: float  # degrees, in the image plane
    tilt_x: float  # degrees, around the horizontal axis
    tilt_y: float
    defocus: float  # Gaussian sigma, output pixels
    motion: float  # motion blur length, output pixels
    motion_angle: float
    glare: float  # 0..1, veiling glare strength at its centre
    low: float  # black level after exposure (0..255)
    high: float  # white level after exposure
    light_slope: float  # illumination gradient across the frame (fraction)
    shadow: float  # darkening of a soft shadow (fraction)
    noise: float  # sensor noise sigma (grey levels)
    jpeg: int  # JPEG quality, 0 for none


def conditions(rng: np.random.Generator, difficulty: str, screen: bool) -> Conditions:
    u = rng.uniform
    if difficulty == "easy":
        module = float(u(3.5, 6.5))
        c = Conditions(
            module_px=module,
            roll=float(u(-25, 25)),
            tilt_x=float(u(-15, 15)),
            tilt_y=float(u(-15, 15)),
            defocus=float(u(0.0, 0.6)),
            motion=float(u(0.0, 1.5)),
            motion_angle=float(u(0, 180)),
            glare=float(u(0.0, 0.25)) if rng.random() < 0.2 else 0.0,
            low=float(u(5, 40)),
            high=float(u(200, 250)),
            light_slope=float(u(0, 0.2)),
            shadow=float(u(0, 0.2)),
            noise=float(u(0.5, 2.5)),
            jpeg=int(rng.integers(75, 96)) if rng.random() < 0.3 else 0,
        )
    else:
        module = float(u(2.3, 4.3))
        low = float(u(20, 90))
        # An autofocus camera with a short exposure cap: the blur of defocus and hand
        # motion together stays within a third of a module (sigma), shared at random.
        blur = module * float(u(0.12, 0.33))
        share = float(u(0.3, 1.0))
        c = Conditions(
            module_px=module,
            roll=float(u(-180, 180)),
            tilt_x=float(u(-35, 35)),
            tilt_y=float(u(-35, 35)),
            defocus=max(0.3, blur * math.sqrt(share)),
            motion=math.sqrt(12 * (1 - share)) * blur,
            motion_angle=float(u(0, 180)),
            glare=float(u(0.25, 0.6)) if rng.random() < (0.6 if screen else 0.35) else 0.0,
            low=low,
            high=low + float(u(55, 130)),
            light_slope=float(u(0.1, 0.45)),
            shadow=float(u(0.1, 0.45)),
            noise=float(u(2.0, 6.0)),
            jpeg=int(rng.integers(45, 81)) if rng.random() < 0.5 else 0,
        )
    return c


def rotation(roll: float, tilt_x: float, tilt_y: float) -> Floats:
    a, b, c = (math.radians(v) for v in (roll, tilt_x, tilt_y))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    rot: Floats = rz @ rx @ ry
    return rot


class Pose:
    """Maps object pixels to canvas pixels: a bent sheet, rotated, seen through a pinhole."""

    def __init__(
        self,
        rot: Floats,
        focal: float,
        pivot: tuple[float, float],
        bend: float,
        width: float,
        centre: tuple[float, float],
    ) -> None:
        self.rot, self.focal, self.pivot, self.centre = rot, focal, pivot, centre
        self.radius = width / bend if abs(bend) > 1e-3 else 0.0

    def forward(self, u: Floats, v: Floats) -> tuple[Floats, Floats]:
        s, t = u - self.pivot[0], v - self.pivot[1]
        if self.radius:
            r = self.radius
            x, z = r * np.sin(s / r), r * (1 - np.cos(s / r))
        else:
            x, z = s, np.zeros_like(s)
        p = self.rot @ np.stack([x, t, z])
        depth = np.maximum(p[2] + self.focal, 1.0)
        return (
            self.focal * p[0] / depth + self.centre[0],
            self.focal * p[1] / depth + self.centre[1],
        )

    def inverse(self, x: Floats, y: Floats) -> tuple[Floats, Floats, npt.NDArray[np.bool_]]:
        """Object coordinates of canvas points (Newton's method), and which ones converged."""
        u = x - self.centre[0] + self.pivot[0]
        v = y - self.centre[1] + self.pivot[1]
        eps = 0.5
        for _ in range(12):
            fx, fy = self.forward(u, v)
            ex, ey = fx - x, fy - y
            ax, ay = self.forward(u + eps, v)
            bx, by = self.forward(u, v + eps)
            j11, j21 = (ax - fx) / eps, (ay - fy) / eps
            j12, j22 = (bx - fx) / eps, (by - fy) / eps
            det = j11 * j22 - j12 * j21
            det = np.where(np.abs(det) < 1e-9, 1e-9, det)
            du = (j22 * ex - j12 * ey) / det
            dv = (-j21 * ex + j11 * ey) / det
            u, v = u - np.clip(du, -500, 500), v - np.clip(dv, -500, 500)
        fx, fy = self.forward(u, v)
        ok = (np.abs(fx - x) < 0.5) & (np.abs(fy - y) < 0.5)
        return u, v, ok


def warp(layer: Layer, pose: Pose, canvas: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Project the object onto the canvas with a piecewise-bilinear mesh of the exact mapping."""
    w, h = layer.image.size
    t = np.linspace(0, 1, 33)
    bu = np.concatenate([t * w, np.full(33, w), t * w, np.zeros(33)])
    bv = np.concatenate([np.zeros(33), t * h, np.full(33, h), t * h])
    fx, fy = pose.forward(bu, bv)  # the object's outline on the canvas
    x0, x1 = max(0, int(fx.min()) - 2), min(canvas[0], int(fx.max()) + 3)
    y0, y1 = max(0, int(fy.min()) - 2), min(canvas[1], int(fy.max()) + 3)
    if x1 <= x0 or y1 <= y0:
        return Image.new("L", canvas, 0), Image.new("L", canvas, 0)
    n = 32  # mesh cells a side: under half a pixel from the exact projection
    gx = np.linspace(x0, x1, n + 1)
    gy = np.linspace(y0, y1, n + 1)
    mx, my = np.meshgrid(gx, gy)
    u, v, ok = pose.inverse(mx.ravel(), my.ravel())
    u = np.where(ok, u, -1e5).reshape(mx.shape)
    v = np.where(ok, v, -1e5).reshape(mx.shape)
    mesh = []
    for j in range(n):
        for i in range(n):
            box = (round(gx[i]), round(gy[j]), round(gx[i + 1]), round(gy[j + 1]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            quad = (
                u[j, i],
                v[j, i],
                u[j + 1, i],
                v[j + 1, i],
                u[j + 1, i + 1],
                v[j + 1, i + 1],
                u[j, i + 1],
                v[j, i + 1],
            )
            mesh.append((box, tuple(float(q) for q in quad)))
    img = layer.image.transform(
        canvas, Image.Transform.MESH, mesh, Image.Resampling.BILINEAR, fillcolor=0
    )
    alpha = layer.alpha.transform(
        canvas, Image.Transform.MESH, mesh, Image.Resampling.BILINEAR, fillcolor=0
    )
    return img, alpha


def _smooth_field(
    rng: np.random.Generator, size: tuple[int, int], cells: tuple[int, int]
) -> Pixels:
    """Low-frequency noise in -1..1, the size of the canvas."""
    small = Image.fromarray((rng.random((cells[1], cells[0])) * 255).astype(np.uint8))
    return np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0


def counter(rng: np.random.Generator, size: tuple[int, int]) -> Pixels:
    """A counter top: a base tone, slow variation, a faint grain and some clutter."""
    w, h = size
    base = float(rng.uniform(60, 170))
    out = base + 25 * _smooth_field(rng, size, (8, 5))
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    angle = float(rng.uniform(0, math.pi))
    grain = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / float(rng.uniform(3, 15)))
    out = out + float(rng.uniform(0, 8)) * grain
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):  # a card terminal, a pen, a box of leaflets
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        bw, bh = float(rng.uniform(0.03, 0.25)) * w, float(rng.uniform(0.03, 0.25)) * h
        shape = draw.rectangle if rng.random() < 0.6 else draw.ellipse
        shape([x, y, x + bw, y + bh], fill=int(rng.integers(10, 240)))
    return np.asarray(img, dtype=np.float32)


def motion_blur(img: Pixels, length: float, angle: float) -> Pixels:
    """Average of the image shifted along a line (hand movement during exposure)."""
    if length < 0.75:
        return img
    taps = max(2, math.ceil(length * 2) + 1)
    a = math.radians(angle)
    pad = math.ceil(length / 2) + 1
    padded = np.pad(img, pad, mode="edge")
    h, w = img.shape
    out = np.zeros_like(img)
    for t in np.linspace(-length / 2, length / 2, taps):
        dx, dy = round(t * math.cos(a)), round(t * math.sin(a))
        out += padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    out /= taps
    return out


def grow(box: Box, share: float) -> Box:
    dx, dy = (box[2] - box[0]) * share, (box[3] - box[1]) * share
    return (box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy)


def code_corners(layer: Layer, pose: Pose, box: Box) -> tuple[Floats, Floats]:
    u = np.array([box[0], box[2], box[2], box[0]])
    v = np.array([box[1], box[1], box[3], box[3]])
    return pose.forward(u, v)


