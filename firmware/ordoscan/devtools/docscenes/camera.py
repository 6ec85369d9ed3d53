"""A physical camera model: a page in 3-D under room light, seen through a lens onto a sensor.

The chain, in order, each step in linear light until the ISP:
- geometry: the page is a height field (curl as a cylinder, one fold as a crease) posed
  in camera space; each sensor pixel's ray is intersected with it (fixed-point iterations
  on the height), per row at the row's own time (rolling shutter) and at several instants
  inside the exposure (motion blur comes from the motion, not from a kernel);
- light: irradiance with a gradient and a soft shadow; specular glare computed from the
  surface normal, the view ray and a ceiling lamp (glossy paper and screen glass only);
  screens emit their own light through an RGB-stripe pixel grid (moiré comes from
  sampling that grid);
- lens: a defocus disc whose radius follows the focus error, a small Gaussian for the
  lens, and cos^4 vignetting;
- auto-exposure: a metering preview picks exposure time then analogue gain, capped;
- sensor: Bayer RGGB mosaic, shot noise, read noise scaled by gain, 10-bit ADC, clipping;
- ISP: demosaic, white balance, a tone curve, mild sharpening, BT.601 full-range YUV;
  the main stream is the sensor mode's size, the lores stream its 1280x720 downscale,
  both YUV420 (chroma at half resolution in both directions).

Nothing here is shared with ordoscan.devtools.scenes: only numpy and OpenCV are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def f32(a: object) -> F32:
    """An array as float32 (OpenCV's and numpy's mixed results, for the type checker)."""
    return np.asarray(a, dtype=np.float32)


@dataclass(frozen=True)
class CameraModel:
    """A camera module in one sensor mode."""

    name: str
    mode: tuple[int, int]  # sensor mode (main stream) size, pixels
    hfov_deg: float
    readout_ms: float  # rolling-shutter readout of a whole frame
    focus: str  # "auto" (focus follows the subject, small error) or "fixed"
    fixed_focus_mm: float  # where a fixed-focus lens is sharp
    blur_px: float  # lens Gaussian sigma at the sensor mode
    # defocus disc radius per dioptre of focus error, in pixels of a 2304-wide image: half
    # the entrance pupil times the focal length, over the pixel pitch
    aperture_px_per_dioptre: float
    vignetting: float  # cos^k falloff exponent
    read_noise_e: float  # electrons rms at unity gain
    full_well_e: float
    max_exposure_ms: float
    max_gain: float


CAMERAS: dict[str, CameraModel] = {
    # Raspberry Pi Camera Module 3 (IMX708), 2x2 binned mode (2.8 um pixels), autofocus;
    # f = 4.74 mm at f/1.8: 2.63 mm pupil -> 2.63e-3 * 4.74e-3 / 2 / 2.8e-6 = 2.2 px/D
    "cm3": CameraModel("cm3", (2304, 1296), 66.0, 18.0, "auto", 0.0, 0.55, 2.2, 4.0, 3.0,
                       9000.0, 33.0, 12.0),
    # Camera Module 3 Wide: 102 degrees, f = 2.75 mm at f/2.2 (0.6 px/D), stronger vignetting
    "cm3_wide": CameraModel("cm3_wide", (2304, 1296), 102.0, 18.0, "auto", 0.0, 0.65, 0.6, 5.5,
                            3.0, 9000.0, 33.0, 12.0),
    # an IMX219-class module (f = 3.04 mm at f/2.0) with its lens fixed for 40 cm, in a
    # 1920x1080 mode (1.9 um effective pixels): 1.2 px/D there, 1.45 px/D at 2304 wide
    "fixed_focus": CameraModel("fixed_focus", (1920, 1080), 62.0, 26.0, "fixed", 400.0, 0.7,
                               1.45, 4.0, 5.0, 4500.0, 33.0, 10.0),
}


@dataclass(frozen=True)
class Lighting:
    """The room's light on the counter."""

    name: str
    lux: tuple[float, float]  # range of illuminance on the counter
    gradient: tuple[float, float]  # fraction across the frame
    shadow: tuple[float, float]  # depth of a soft shadow (a head, a shelf)
    lamp_height_mm: tuple[float, float]  # the specular source above the counter
    lamp_size: float  # angular half-width of the specular lobe, radians
    warm: float  # white balance error left after AWB (0 neutral)


LIGHTS: dict[str, Lighting] = {
    "office": Lighting("office", (300, 700), (0.05, 0.25), (0.0, 0.25), (600, 1200), 0.25, 0.02),
    "dim": Lighting("dim", (60, 160), (0.1, 0.35), (0.1, 0.4), (500, 900), 0.18, 0.08),
    "window": Lighting("window", (800, 2500), (0.3, 0.7), (0.2, 0.6), (900, 2000), 0.4, -0.04),
    "spot": Lighting("spot", (400, 1500), (0.3, 0.6), (0.1, 0.5), (350, 700), 0.09, 0.1),
}


@dataclass(frozen=True)
class Paper:
    """The surface a document is printed on."""

    name: str
    gloss: tuple[float, float]  # specular reflectance
    curl: tuple[float, float]  # curvature range, 1/mm
    fold: tuple[float, float]  # fold angle range, degrees (0: none)
    fold_chance: float
    ink_fade: tuple[float, float]  # how far the ink lightens towards the paper (0: black)


PAPERS: dict[str, Paper] = {
    "plain": Paper("plain", (0.0, 0.02), (0.0, 1 / 900), (0, 8), 0.2, (0.0, 0.1)),
    "glossy": Paper("glossy", (0.08, 0.3), (0.0, 1 / 700), (0, 6), 0.15, (0.0, 0.05)),
    "folded": Paper("folded", (0.0, 0.04), (1 / 900, 1 / 300), (6, 22), 0.9, (0.0, 0.1)),
    # thermal-printer or faded inkjet print on thin paper: low contrast, curling
    "faded": Paper("faded", (0.02, 0.1), (1 / 800, 1 / 350), (0, 10), 0.4, (0.25, 0.5)),
}


@dataclass(frozen=True)
class Pose:
    """Where the page is in camera space (mm, degrees) and how it moves (mm/s)."""

    x: float
    y: float
    z: float  # distance along the optical axis, of the page's anchor point
    roll: float
    tilt_x: float
    tilt_y: float
    vx: float = 0.0
    vy: float = 0.0
    vz: float = 0.0
    anchor_mm: tuple[float, float] = (0.0, 0.0)  # the page point placed at (x, y, z)


@dataclass(frozen=True)
class Surface:
    """The page's shape: a cylinder curl and one fold (a crease), in page millimetres."""

    curl: float = 0.0  # curvature, 1/mm
    curl_dir: float = 0.0  # radians, direction across which the page bends
    fold_deg: float = 0.0
    fold_dir: float = 0.0
    fold_at: float = 0.0  # signed distance of the crease from the page centre, mm
    centre: tuple[float, float] = (74.0, 105.0)

    def height(self, u: F64, v: F64) -> F64:
        du, dv = u - self.centre[0], v - self.centre[1]
        a = du * math.cos(self.curl_dir) + dv * math.sin(self.curl_dir)
        h = 0.5 * self.curl * a * a
        if self.fold_deg:
            b = du * math.cos(self.fold_dir) + dv * math.sin(self.fold_dir) - self.fold_at
            h = h + math.tan(math.radians(self.fold_deg)) * np.maximum(b, 0.0)
        return np.asarray(h, dtype=np.float64)


def rotation(roll: float, tilt_x: float, tilt_y: float) -> F64:
    r, a, b = (math.radians(t) for t in (roll, tilt_x, tilt_y))
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return np.asarray(rx @ ry @ rz, dtype=np.float64)


def focal_px(cam: CameraModel, width: int) -> float:
    return (width / 2) / math.tan(math.radians(cam.hfov_deg) / 2)


def project(cam: CameraModel, size: tuple[int, int], pose: Pose, surface: Surface, u: F64,
            v: F64, t: float = 0.0) -> tuple[F64, F64]:
    """Page millimetres -> pixel coordinates of an image of `size` (same field of view)."""
    w, h = size
    f = focal_px(cam, w)
    rot = rotation(pose.roll, pose.tilt_x, pose.tilt_y)
    du, dv = u - pose.anchor_mm[0], v - pose.anchor_mm[1]
    hh = surface.height(u, v)
    t_vec = np.array([pose.x + pose.vx * t, pose.y + pose.vy * t, pose.z + pose.vz * t])
    pts = t_vec[:, None] + rot[:, 0:1] * du.ravel() + rot[:, 1:2] * dv.ravel() \
        + rot[:, 2:3] * hh.ravel()
    x = f * pts[0] / pts[2] + w / 2
    y = f * pts[1] / pts[2] + h / 2
    return x.reshape(u.shape), y.reshape(u.shape)


def page_coords(cam: CameraModel, size: tuple[int, int], pose: Pose, surface: Surface,
                step: int, t0: float, readout_s: float, lamp: F64) -> tuple[F64, F64, F64, F64]:
    """For a grid of pixels (every `step`, at the centres of step x step cells), the page
    point each sees: u, v (mm), the cosine between the view ray and the surface normal,
    and the cosine between the reflected view ray and the lamp's direction `lamp` (unit
    vector from the page towards the lamp). Each grid row is taken at its own readout time."""
    w, h = size
    f = focal_px(cam, w)
    xs = np.arange(w // step, dtype=np.float64) * step + (step - 1) / 2
    ys = np.arange(h // step, dtype=np.float64) * step + (step - 1) / 2
    gx, gy = np.meshgrid(xs, ys)
    d = np.stack([(gx - w / 2) / f, (gy - h / 2) / f, np.ones_like(gx)])
    t = t0 + (gy / h) * readout_s
    tx, ty, tz = pose.x + pose.vx * t, pose.y + pose.vy * t, pose.z + pose.vz * t
    rot = rotation(pose.roll, pose.tilt_x, pose.tilt_y)
    eu, ev, n = rot[:, 0], rot[:, 1], rot[:, 2]
    n_d = n[0] * d[0] + n[1] * d[1] + n[2] * d[2]
    n_d = np.where(np.abs(n_d) < 1e-6, 1e-6, n_d)
    n_t = n[0] * tx + n[1] * ty + n[2] * tz
    hh = np.zeros_like(gx)
    u = v = gx
    for _ in range(4):  # the height moves the hit point a little: converges in a few steps
        s = (n_t + hh) / n_d
        px, py, pz = s * d[0] - tx, s * d[1] - ty, s * d[2] - tz
        u = eu[0] * px + eu[1] * py + eu[2] * pz + pose.anchor_mm[0]
        v = ev[0] * px + ev[1] * py + ev[2] * pz + pose.anchor_mm[1]
        hh = surface.height(u, v)
    # surface normal from the height field's slope, then the view geometry
    e = 0.5
    hu = (surface.height(u + e, v) - surface.height(u - e, v)) / (2 * e)
    hv = (surface.height(u, v + e) - surface.height(u, v - e)) / (2 * e)
    nx = n[0] - hu * eu[0] - hv * ev[0]
    ny = n[1] - hu * eu[1] - hv * ev[1]
    nz = n[2] - hu * eu[2] - hv * ev[2]
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    nx, ny, nz = nx / norm, ny / norm, nz / norm
    dn = np.sqrt(d[0] ** 2 + d[1] ** 2 + 1)
    dx, dy, dz = d[0] / dn, d[1] / dn, d[2] / dn
    cos_view = np.abs(nx * dx + ny * dy + nz * dz)
    # the view ray reflected by the surface: r = d - 2 (d.n) n, compared with the lamp
    dot = dx * nx + dy * ny + dz * nz
    rx, ry, rz = dx - 2 * dot * nx, dy - 2 * dot * ny, dz - 2 * dot * nz
    spec = rx * lamp[0] + ry * lamp[1] + rz * lamp[2]
    behind = s <= 0
    u = np.where(behind, -1e6, u)
    return u, v, cos_view, spec


def upsample(a: F64, size: tuple[int, int]) -> F32:
    """A grid from page_coords back to every pixel (cell centres line up with resize's)."""
    return np.asarray(cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_LINEAR),
                      dtype=np.float32)


def disc_kernel(radius: float) -> F32:
    r = max(radius, 0.0)
    n = math.ceil(r) + 1
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float32)
    # anti-aliased disc edge
    k = np.clip(r + 0.5 - np.sqrt(xx * xx + yy * yy), 0.0, 1.0).astype(np.float32)
    if k.sum() <= 0:
        k[n, n] = 1.0
    return np.asarray(k / k.sum(), dtype=np.float32)


def stripe_box(u_px: F32, width: F32, channel: int, fill: float = 0.8) -> F32:
    """An RGB-stripe screen seen by a sensor pixel: the mean of subpixel `channel`'s lit
    stripe (a third of the screen pixel, minus the black matrix; 3 where lit, so a white
    pixel averages `fill`) over the pixel's footprint [u - width/2, u + width/2], in screen
    pixels. Exact box integration: what is left of the stripes beats with the sensor grid
    (moiré) instead of aliasing."""
    lo = channel / 3 + (1 - fill) / 6
    span = 1 / 3 - (1 - fill) / 3

    def primitive(x: F32) -> F32:
        whole = np.floor(x)
        return f32(3.0 * (whole * span + np.clip(x - whole - lo, 0.0, span)))

    w = f32(np.maximum(width, 1e-3))
    hi, low = primitive(f32(u_px + w / 2)), primitive(f32(u_px - w / 2))
    return f32(np.subtract(hi, low) / w)


@dataclass
class Exposure:
    """What auto-exposure chose."""

    exposure_ms: float
    gain: float


def counter_texture(rng: np.random.Generator, size: tuple[int, int]) -> F32:
    """A laminate counter top: a base colour, long grain and low-frequency blotches (RGB)."""
    w, h = size
    base = rng.uniform(0.15, 0.6) * np.array(
        [rng.uniform(0.8, 1.1), rng.uniform(0.7, 0.95), rng.uniform(0.5, 0.8)])
    grain = rng.normal(0, 1, (max(h // 16, 2), max(w // 2, 2))).astype(np.float32)
    grain = f32(cv2.resize(grain, (w, h), interpolation=cv2.INTER_CUBIC))
    angle = float(rng.uniform(-20, 20))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    grain = f32(cv2.warpAffine(grain, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    blot = cv2.resize(rng.normal(0, 1, (6, 10)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    tone = 1 + 0.06 * grain + 0.12 * blot
    return np.asarray(tone[:, :, None] * base[None, None, :].astype(np.float32),
                      dtype=np.float32)
