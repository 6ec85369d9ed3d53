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

The main stream (the sensor mode's size, e.g. 2304x1296, of which lores is the downscale)
is not stored: a kiosk reads it only where its decoder zooms (Frame.zoom), so
`Scene.main_crop` renders just that region on demand, from the frame's recorded camera
state (`Shot`: exposure, gain, focus) and the same page, pose and motion, at the main
stream's resolution, with its own reproducible noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

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
    shot: Shot | None = None  # the camera's state, to render the main stream's crops


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


def _homography(cam: cm.CameraModel, pose: cm.Pose, ppm: float, size: tuple[int, int],
                origin: tuple[int, int] = (0, 0)) -> npt.NDArray[np.float64]:
    """Page raster pixels -> pixels of a stream of `size`, shifted so that `origin` is (0, 0),
    for a flat page."""
    u = np.array([0.0, 200.0, 200.0, 0.0])
    v = np.array([0.0, 0.0, 300.0, 300.0])
    x, y = cm.project(cam, size, pose, cm.Surface(), u, v)
    src = np.stack([u * ppm - 0.5, v * ppm - 0.5], axis=1).astype(np.float32)
    dst = np.stack([x - origin[0], y - origin[1]], axis=1).astype(np.float32)
    return np.asarray(cv2.getPerspectiveTransform(src, dst), np.float64)


@dataclass(frozen=True)
class Shot:
    """The camera's state for one frame: what the main stream's crops are rendered with."""

    t: float  # s since the presentation began
    blur_exposure_ms: float  # the exposure the motion blur spans (before this frame's metering)
    exposure_ms: float
    gain: float
    focus_z: float  # mm: where the lens is focused


@dataclass
class Scene:
    """Everything a presentation's frames are rendered from but the per-frame camera state."""

    seed: int
    style: str
    setting: Setting
    kind: str
    sub: Subject
    path: _Path
    ppm: float  # page raster pixels per mm at the lores size
    payload: str
    box_mm: tuple[float, float, float, float]  # the ordonnance's code on the page
    modules: int
    rng: np.random.Generator = field(repr=False)  # the lores frames' noise continues it
    _streams: dict[tuple[int, int], tuple[npt.NDArray[np.float32], ...]] = field(
        default_factory=dict, repr=False)
    _counter: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    _ppm: float = field(default=0.0, repr=False)  # the raster's pixels per mm, as made

    @property
    def cam(self) -> cm.CameraModel:
        return cm.CAMERAS[self.setting.camera]

    @property
    def main_size(self) -> tuple[int, int]:
        """The main stream's size: the camera's sensor mode (lores is its downscale)."""
        return self.cam.mode

    def _page(self, size: tuple[int, int]) -> tuple[npt.NDArray[np.float32], ...]:
        """For a stream of `size`: the page's luminance raster, its coverage (ones), the
        counter top's luminance over the whole stream."""
        if size not in self._streams:
            self._streams.clear()  # one stream at a time: rasters are large
            ppm = self.ppm
            if size != LORES:  # as many page pixels per stream pixel as at the lores size
                ppm = float(np.clip(round(2 * ppm * size[0] / LORES[0]) / 2, 3.0, 20.0))
            if self.sub.doc.emissive:
                ppm = min(ppm, 8.0 * size[0] / LORES[0])
            rgba = self.sub.raster(ppm)
            lum = cm.f32(0.2126 * rgba[:, :, 0] + 0.7152 * rgba[:, :, 1]
                         + 0.0722 * rgba[:, :, 2])
            if self.sub.doc.emissive:
                lum = cm.f32(lum * (self.sub.screen_nits / 143.0))
            if self._counter is None:
                self._counter = cm.f32(cm.counter_texture(
                    np.random.default_rng(self.sub.counter_seed), LORES).mean(axis=2))
            counter = self._counter
            if size != LORES:
                counter = cm.f32(cv2.resize(counter, size, interpolation=cv2.INTER_LINEAR))
            self._ppm = float(round(ppm * 2) / 2)
            self._streams[size] = (lum, np.ones(lum.shape, np.float32), counter)
        return self._streams[size]

    def radiance(self, t: float, exposure_ms: float, size: tuple[int, int],
                 box: tuple[int, int, int, int]) -> npt.NDArray[np.float32]:
        """Scene radiance over `box` (x0, y0, x1, y1) of a stream of `size`, motion blur
        included: the page's homography at sub-instants of the exposure."""
        cam, sub = self.cam, self.sub
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        w, h = size
        f = cm.focal_px(cam, w)
        lum, ones, counter = self._page(size)
        ppm = self._ppm
        p = self.path.at(t)
        q = self.path.at(t + 0.01)
        vel = tuple((b - a) / 0.01 for a, b in zip(p, q, strict=True))
        # sub-instants: about one per 1.2 stream pixels of motion (6 at the lores size at most)
        speed_px = math.hypot(vel[0], vel[1]) * f / p[2] * exposure_ms / 1000
        n_sub = int(min(max(math.ceil(speed_px / 1.2), 1), round(6 * w / LORES[0])))
        acc = np.zeros((bh, bw), np.float32)
        cover = np.zeros((bh, bw), np.float32)
        for k in range(n_sub):
            tau = (k / max(n_sub - 1, 1) - 0.5) * exposure_ms / 1000
            hm = _homography(cam, _pose(sub, self.path.at(t + tau), vel), ppm, size, (x0, y0))
            acc += cv2.warpPerspective(lum, hm, (bw, bh), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            cover += cv2.warpPerspective(ones, hm, (bw, bh), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        acc /= n_sub
        cover /= n_sub
        counter = _crop(counter, box)
        yy = _span(y0, y1, h)[:, None]
        xx = _span(x0, x1, w)[None, :]
        g, ga = sub.gradient
        light = cm.f32((1 + g * 0.5 * (xx * math.cos(ga) + yy * math.sin(ga)))
                       * (1.0 / (1.0 + (xx * w / 2 / f) ** 2 + (yy * h / 2 / f) ** 2))
                       ** (cam.vignetting / 2))
        base = sub.lux / 500.0
        page_light = 1.0 if sub.doc.emissive else base
        return cm.f32((acc * page_light + counter * base * (1 - cover)) * light)

    def expose(self, rad: npt.NDArray[np.float32], shot: Shot, size: tuple[int, int],
               rng: np.random.Generator) -> Grey:
        """Lens blur (focus), sensor and tone curve: radiance of a stream of `size` -> Y."""
        cam = self.cam
        w = size[0]
        sigma = self.blur_sigma(shot, size)
        if sigma > 0.3:
            rad = cm.f32(cv2.GaussianBlur(rad, (0, 0), sigma))
        # one lores pixel gathers ~3.2 photosites of the binned mode; a larger stream fewer
        sites = 3.2 * (LORES[0] / w) ** 2
        e = rad * shot.exposure_ms * 200.0 * sites
        e = np.minimum(e, cam.full_well_e * sites)
        e = e + rng.standard_normal(e.shape, dtype=np.float32) * np.sqrt(
            e + sites * cam.read_noise_e**2)
        lin = np.clip(e * shot.gain / (cam.full_well_e * sites) * (0.18 / 0.2) * 1.0, 0, 1)
        tone = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
        return np.ascontiguousarray(np.clip(np.rint(tone * 255), 0, 255).astype(np.uint8))

    def blur_sigma(self, shot: Shot, size: tuple[int, int]) -> float:
        """The lens blur (Gaussian sigma, stream pixels): the lens and the focus error."""
        dioptres = abs(1000.0 / self.path.at(shot.t)[2] - 1000.0 / shot.focus_z)
        radius = self.cam.aperture_px_per_dioptre * dioptres * (size[0] / 2304.0)
        return math.hypot(self.cam.blur_px * size[0] / 2304.0, radius / 2)

    def main_crop(self, index: int, shot: Shot, box: tuple[int, int, int, int]) -> Grey:
        """The main stream's pixels over `box` (x0, y0, x1, y1, main-stream pixels) of frame
        `index`: the same page, pose, motion, focus and exposure as its lores frame, at the
        sensor mode's resolution, with its own noise (reproducible from the arguments)."""
        size = self.main_size
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]):
            raise ValueError(f"main-stream box {box} is not inside {size[0]}x{size[1]}")
        m = math.ceil(3 * self.blur_sigma(shot, size)) + 2  # room for the lens blur's reach
        wide = (x0 - m, y0 - m, x1 + m, y1 + m)
        rad = self.radiance(shot.t, shot.blur_exposure_ms, size, wide)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, index, *box, 0x3A1])
        y = self.expose(rad, shot, size, rng)
        return np.ascontiguousarray(y[m:-m, m:-m])

    def in_view(self, t: float) -> tuple[bool, float]:
        """Whether the ordonnance's code is wholly in the lores frame at `t`, and its module
        size there (px)."""
        w, h = LORES
        pose = _pose(self.sub, self.path.at(t), (0.0, 0.0, 0.0))
        x0, y0, x1, y1 = self.box_mm
        cx, cy = cm.project(self.cam, LORES, pose, cm.Surface(), np.array([x0, x1, x1, x0]),
                            np.array([y0, y0, y1, y1]))
        inside = bool(cx.min() >= 0 and cy.min() >= 0 and cx.max() < w and cy.max() < h)
        side = float(np.mean([math.hypot(cx[(j + 1) % 4] - cx[j], cy[(j + 1) % 4] - cy[j])
                              for j in range(4)]))
        return inside, side / self.modules


def _span(a: int, b: int, n: int) -> npt.NDArray[np.float32]:
    """Pixels a..b-1 of an axis of n pixels, as -1..1 across the stream (beyond it outside)."""
    i = np.arange(a, b)
    out = -1 + 2 * i.astype(np.float32) / np.float32(n - 1)
    inside = (i >= 0) & (i < n)
    out[inside] = np.linspace(-1, 1, n, dtype=np.float32)[i[inside]]
    return cm.f32(out)


def _crop(a: npt.NDArray[np.float32], box: tuple[int, int, int, int]) -> npt.NDArray[np.float32]:
    """`a` over box (x0, y0, x1, y1), edge pixels repeated where the box leaves it."""
    x0, y0, x1, y1 = box
    h, w = a.shape
    ys = np.clip(np.arange(y0, y1), 0, h - 1)
    xs = np.clip(np.arange(x0, x1), 0, w - 1)
    return cm.f32(a[np.ix_(ys, xs)])


def scene(seed: int, setting: Setting, style: str, kind: str = "ordonnance",
          seconds: float = 3.6, ink_fade: float | None = None) -> Scene:
    """A presentation's document, room and hand's path, before any frame (reproducible);
    `ink_fade`: a printed document's ink that far lightened towards the paper instead of
    the paper's own draw (ordoscan.devtools.pale; a screen has no ink: unchanged), every
    other draw the same."""
    if style not in STYLES:
        raise ValueError(f"unknown presentation style {style!r}; expected one of "
                         f"{', '.join(STYLES)}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, STYLES.index(style), 0x9E5])
    sub = subject(kind, rng, setting)
    if ink_fade is not None and not sub.doc.emissive:
        sub = replace(sub, ink_fade=ink_fade)
    main = next(c for c in sub.doc.codes if c.kind is Kind.ORDONNANCE)
    cam = cm.CAMERAS[setting.camera]
    path = _plan(rng, sub, style, seconds)
    f = cm.focal_px(cam, LORES[0])
    z_min = min(k[1][2] for k in path.keys)
    ppm = float(np.clip(round(2 * 1.3 * f / z_min) / 2, 3.0, 12.0))
    if sub.doc.emissive:
        ppm = min(ppm, 8.0)
    return Scene(seed, style, setting, kind, sub, path, ppm, main.payload, main.box_mm,
                 main.modules, rng)


def present(seed: int, setting: Setting, style: str, kind: str = "ordonnance",
            seconds: float = 3.6, max_exposure_ms: float | None = None,
            focus_behind_mm: float | None = None, ink_fade: float | None = None
            ) -> Presentation:
    """Render one presentation's lores frames (reproducible from its arguments);
    `max_exposure_ms`: the auto-exposure's shutter capped there (the kiosk's tuning);
    `focus_behind_mm`: the lens locked that far behind where the page is held, for the whole
    presentation (an autofocus that stayed on the counter), instead of the camera's own;
    `ink_fade`: a printed document's ink lightened that far (scene())."""
    sc = scene(seed, setting, style, kind, seconds, ink_fade)
    rng = sc.rng
    cam = sc.cam
    ae = AutoExposure(lag=0.35, max_exposure_ms=max_exposure_ms)
    focus_z = sc.path.at(0.0)[2]
    # the hold: the path's last keyframe (the page's z there, without the tremor)
    locked = None if focus_behind_mm is None else sc.path.keys[-1][1][2] + focus_behind_mm
    frames: list[PresentedFrame] = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        blur_exposure = ae.exposure_ms  # auto-exposure meters on the last frame's light
        rad = sc.radiance(t, blur_exposure, LORES, (0, 0, *LORES))
        ae.meter(cam, float(rad.mean()))
        # autofocus follows the page with a lag of ~0.2 s (contrast AF hunting)
        if locked is not None:
            focus_z = locked
        elif cam.focus == "auto":
            focus_z += (sc.path.at(t)[2] - focus_z) * (1 - math.exp(-(1 / FPS) / 0.2))
        else:
            focus_z = cam.fixed_focus_mm
        shot = Shot(t, blur_exposure, ae.exposure_ms, ae.gain, focus_z)
        img = sc.expose(rad, shot, LORES, rng)
        in_view, module_px = sc.in_view(t)
        frames.append(PresentedFrame(img, in_view, module_px, shot))
    return Presentation(seed, style, setting, kind, sc.payload, tuple(frames))


def presentations(seeds: range, settings: tuple[Setting, ...],
                  max_exposure_ms: float | None = None,
                  focus_behind: Callable[[int], float] | None = None,
                  ink_fade: Callable[[int], float] | None = None
                  ) -> Iterator[Presentation]:
    """One presentation per seed: styles, kinds and settings cycle with the seed;
    `focus_behind(seed)`: the lens locked that many mm behind the page, `ink_fade(seed)`: a
    printed document's ink lightened that far (present())."""
    for seed in seeds:
        style = STYLES[seed % len(STYLES)]
        kind = ("ordonnance", "ordonnance", "phone_light", "ordonnance", "phone_dark")[
            (seed // len(STYLES)) % 5]
        yield present(seed, settings[seed % len(settings)], style, kind,
                      max_exposure_ms=max_exposure_ms,
                      focus_behind_mm=None if focus_behind is None else focus_behind(seed),
                      ink_fade=None if ink_fade is None else ink_fade(seed))
