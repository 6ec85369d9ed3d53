"""Presentations: a hand brings a document under the camera, holds it, moves it, at 15 fps.

A sequence is what the kiosk's lores stream sees while a patient presents one document:
the page comes in from outside the frame, settles, trembles in the hand, and in some
presentations is first held too far away, or tilted, or moved aside and back. Each frame
has its truth (is the code wholly in view), so the time from the code's first appearance
to the good read can be measured.

Hundreds of frames per presentation are too many for the full camera model of
docscenes.shoot (seconds a frame), so frames are made by a reduced model of the same
camera, at the lores size directly: the same PDF page raster and the same poses and
projection, the page kept flat (one homography per instant), motion blur from sub-instants
of the exposure, autofocus that lags behind a moving page (defocus while it settles),
auto-exposure that converges over frames (libcamera-like lag), the lens blur, the light
gradient, shot and read noise at the gain chosen, and the tone curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from ordoscan.classifier import Kind
from ordoscan.devtools.docscenes import LORES, AutoExposure, Setting, Subject, documents, subject
from ordoscan.devtools.docscenes import camera as cm

Grey = npt.NDArray[np.uint8]
FPS = 15.0
STYLES = ("plain", "too_far", "tilted", "moved")


@dataclass(frozen=True)
class PresentedFrame:
    """One frame of a presentation."""

    image: Grey
    in_view: bool  # the ordonnance's code is wholly inside the frame
    module_px: float


@dataclass(frozen=True)
class Presentation:
    """A presentation's frames at 15 fps and what it shows."""

    seed: int
    style: str
    setting: Setting
    kind: str
    payload: str
    frames: tuple[PresentedFrame, ...]

    @property
    def first_in_view(self) -> int | None:
        return next((i for i, f in enumerate(self.frames) if f.in_view), None)


def _ease(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class _Path:
    """The page's pose over time: keyframes blended smoothly, plus hand tremor."""

    keys: tuple[tuple[float, tuple[float, ...]], ...]  # (time s, (x, y, z, roll, tx, ty))
    tremor: npt.NDArray[np.float64]  # per-frame offsets (x, y, z mm; roll, tx, ty deg)

    def at(self, t: float) -> tuple[float, ...]:
        keys = self.keys
        if t <= keys[0][0]:
            base = keys[0][1]
        elif t >= keys[-1][0]:
            base = keys[-1][1]
        else:
            k = next(i for i in range(1, len(keys)) if keys[i][0] >= t)
            (t0, a), (t1, b) = keys[k - 1], keys[k]
            w = _ease((t - t0) / (t1 - t0))
            base = tuple(p + (q - p) * w for p, q in zip(a, b, strict=True))
        # tremor interpolated between frames
        f = t * FPS
        i = min(max(int(f), 0), len(self.tremor) - 2)
        frac = min(max(f - i, 0.0), 1.0)
        tr = self.tremor[i] * (1 - frac) + self.tremor[i + 1] * frac
        return tuple(float(b + d) for b, d in zip(base, tr, strict=True))


def _plan(rng: np.random.Generator, sub: Subject, style: str, seconds: float) -> _Path:
    cam = cm.CAMERAS[sub.setting.camera]
    f = cm.focal_px(cam, LORES[0])
    mod_mm = documents.module_mm(sub.doc) or 0.8
    small = sub.kind == "ordonnance" and mod_mm * 21 < 16
    target = float(rng.uniform(2.2, 3.0) if small else rng.uniform(2.8, 5.5))
    z = min(max(f * mod_mm / target, 80.0), 700.0)
    half_w = z * math.tan(math.radians(cam.hfov_deg) / 2)
    hold = (float(rng.normal(0, 0.12) * half_w), float(rng.normal(0, 0.12) * half_w * 0.56), z,
            float(rng.uniform(-30, 30)), float(rng.uniform(-12, 12)),
            float(rng.uniform(-12, 12)))
    side = float(rng.uniform(0, 2 * math.pi))
    start = (hold[0] + math.cos(side) * half_w * 2.2, hold[1] + math.sin(side) * half_w * 1.4,
             z * 1.15, hold[3] + float(rng.uniform(-25, 25)), hold[4] + 15, hold[5])
    t_in = float(rng.uniform(0.35, 0.8))  # the approach
    keys: list[tuple[float, tuple[float, ...]]] = [(0.0, start)]
    if style == "too_far":  # first held at 1.7-2.2x the distance, then brought closer
        far = (hold[0], hold[1], z * float(rng.uniform(1.7, 2.2)), *hold[3:])
        dwell = float(rng.uniform(0.5, 1.0))
        keys += [(t_in, far), (t_in + dwell, far), (t_in + dwell + 0.4, hold)]
    elif style == "tilted":  # first held at a steep tilt, then straightened
        steep = (*hold[:4], float(rng.choice([-1, 1]) * rng.uniform(40, 55)), hold[5])
        dwell = float(rng.uniform(0.4, 0.9))
        keys += [(t_in, steep), (t_in + dwell, steep), (t_in + dwell + 0.3, hold)]
    elif style == "moved":  # settles, then slides aside and back
        aside = (hold[0] + float(rng.uniform(-1, 1)) * half_w * 0.4,
                 hold[1] + float(rng.uniform(-1, 1)) * half_w * 0.2, *hold[2:])
        t_move = t_in + float(rng.uniform(0.2, 0.6))
        keys += [(t_in, hold), (t_move, hold), (t_move + 0.35, aside), (t_move + 0.8, hold)]
    else:
        keys += [(t_in, hold)]
    n = int(seconds * FPS) + 2
    # hand tremor: low-passed random walk, about 1-2 mm and a degree
    raw = rng.normal(0, 1, (n, 6)) * np.array([0.8, 0.8, 1.5, 0.4, 0.5, 0.5])
    tremor = np.cumsum(raw, axis=0)
    tremor -= np.linspace(0, 1, n)[:, None] * tremor[-1]  # no long drift
    tremor = cv2.GaussianBlur(tremor, (1, 0), sigmaX=0.1, sigmaY=2.0)
    tremor = tremor * float(rng.uniform(0.5, 1.5))
    return _Path(tuple(keys), np.asarray(tremor, np.float64))


def _pose(sub: Subject, p: tuple[float, ...], v: tuple[float, ...]) -> cm.Pose:
    return cm.Pose(p[0], p[1], p[2], p[3], p[4], p[5], v[0], v[1], v[2], sub.anchor)


def _homography(cam: cm.CameraModel, pose: cm.Pose, ppm: float) -> npt.NDArray[np.float64]:
    """Page raster pixels -> lores pixels, for a flat page."""
    u = np.array([0.0, 200.0, 200.0, 0.0])
    v = np.array([0.0, 0.0, 300.0, 300.0])
    x, y = cm.project(cam, LORES, pose, cm.Surface(), u, v)
    src = np.stack([u * ppm - 0.5, v * ppm - 0.5], axis=1).astype(np.float32)
    dst = np.stack([x, y], axis=1).astype(np.float32)
    return np.asarray(cv2.getPerspectiveTransform(src, dst), np.float64)


def present(seed: int, setting: Setting, style: str, kind: str = "ordonnance",
            seconds: float = 3.6) -> Presentation:
    """Render one presentation (reproducible from its arguments)."""
    if style not in STYLES:
        raise ValueError(f"unknown presentation style {style!r}; expected one of "
                         f"{', '.join(STYLES)}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, STYLES.index(style), 0x9E5])
    sub = subject(kind, rng, setting)
    main = next(c for c in sub.doc.codes if c.kind is Kind.ORDONNANCE)
    cam = cm.CAMERAS[setting.camera]
    path = _plan(rng, sub, style, seconds)
    f = cm.focal_px(cam, LORES[0])
    z_min = min(k[1][2] for k in path.keys)
    ppm = float(np.clip(round(2 * 1.3 * f / z_min) / 2, 3.0, 12.0))
    if sub.doc.emissive:
        ppm = min(ppm, 8.0)
    rgba = sub.raster(ppm)
    lum = cm.f32(0.2126 * rgba[:, :, 0] + 0.7152 * rgba[:, :, 1] + 0.0722 * rgba[:, :, 2])
    if sub.doc.emissive:
        lum = cm.f32(lum * (sub.screen_nits / 143.0))
    counter = cm.f32(cm.counter_texture(np.random.default_rng(sub.counter_seed), LORES)
                     .mean(axis=2))
    w, h = LORES
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    g, ga = sub.gradient
    light = cm.f32((1 + g * 0.5 * (xx * math.cos(ga) + yy * math.sin(ga)))
                   * (1.0 / (1.0 + (xx * w / 2 / f) ** 2 + (yy * h / 2 / f) ** 2))
                   ** (cam.vignetting / 2))
    base = sub.lux / 500.0
    ae = AutoExposure(lag=0.35)
    focus_z = path.at(0.0)[2]
    frames: list[PresentedFrame] = []
    ones = np.ones(lum.shape, np.float32)
    for i in range(int(seconds * FPS)):
        t = i / FPS
        p = path.at(t)
        q = path.at(t + 0.01)
        vel = tuple((b - a) / 0.01 for a, b in zip(p, q, strict=True))
        pose = _pose(sub, p, vel)
        # auto-exposure meters on the last frame's light; exposure sets the blur samples
        speed_px = math.hypot(vel[0], vel[1]) * f / p[2] * ae.exposure_ms / 1000
        n_sub = int(min(max(math.ceil(speed_px / 1.2), 1), 6))
        acc = np.zeros((h, w), np.float32)
        cover = np.zeros((h, w), np.float32)
        for k in range(n_sub):
            tau = (k / max(n_sub - 1, 1) - 0.5) * ae.exposure_ms / 1000
            pk = path.at(t + tau)
            hm = _homography(cam, _pose(sub, pk, vel), ppm)
            acc += cv2.warpPerspective(lum, hm, LORES, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            cover += cv2.warpPerspective(ones, hm, LORES, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        acc /= n_sub
        cover /= n_sub
        page_light = 1.0 if sub.doc.emissive else base
        rad = cm.f32((acc * page_light + counter * base * (1 - cover)) * light)
        ae.meter(cam, float(rad.mean()))
        # autofocus follows the page with a lag of ~0.2 s (contrast AF hunting)
        if cam.focus == "auto":
            focus_z += (p[2] - focus_z) * (1 - math.exp(-(1 / FPS) / 0.2))
        else:
            focus_z = cam.fixed_focus_mm
        dioptres = abs(1000.0 / p[2] - 1000.0 / focus_z)
        radius = cam.aperture_px_per_dioptre * dioptres * (w / 2304.0)
        sigma = math.hypot(cam.blur_px * w / 2304.0, radius / 2)
        if sigma > 0.3:
            rad = cm.f32(cv2.GaussianBlur(rad, (0, 0), sigma))
        # sensor at the lores size: one lores pixel gathers ~3.2 photosites of the binned mode
        e = rad * ae.exposure_ms * 200.0 * 3.2
        e = np.minimum(e, cam.full_well_e * 3.2)
        e = e + rng.standard_normal(e.shape, dtype=np.float32) * np.sqrt(
            e + 3.2 * cam.read_noise_e**2)
        lin = np.clip(e * ae.gain / (cam.full_well_e * 3.2) * (0.18 / 0.2) * 1.0, 0, 1)
        tone = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
        img = np.ascontiguousarray(np.clip(np.rint(tone * 255), 0, 255).astype(np.uint8))
        # is the ordonnance's code wholly in view, and how big
        x0, y0, x1, y1 = main.box_mm
        cx, cy = cm.project(cam, LORES, pose, cm.Surface(), np.array([x0, x1, x1, x0]),
                            np.array([y0, y0, y1, y1]))
        in_view = bool(cx.min() >= 0 and cy.min() >= 0 and cx.max() < w and cy.max() < h)
        side = float(np.mean([math.hypot(cx[(j + 1) % 4] - cx[j], cy[(j + 1) % 4] - cy[j])
                              for j in range(4)]))
        frames.append(PresentedFrame(img, in_view, side / main.modules))
    return Presentation(seed, style, setting, kind, main.payload, tuple(frames))


def presentations(seeds: range, settings: tuple[Setting, ...]) -> Iterator[Presentation]:
    """One presentation per seed: styles, kinds and settings cycle with the seed."""
    for seed in seeds:
        style = STYLES[seed % len(STYLES)]
        kind = ("ordonnance", "ordonnance", "phone_light", "ordonnance", "phone_dark")[
            (seed // len(STYLES)) % 5]
        yield present(seed, settings[seed % len(settings)], style, kind)
