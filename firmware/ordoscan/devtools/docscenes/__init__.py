"""A second, independent scene generator: real documents through a physical camera model.

Built apart from ordoscan.devtools.scenes on purpose, so that a decoder tuned on one
is measured on the other: documents are laid out as PDF pages with real fonts
(reportlab), rasterised by PDFium, with QR codes from segno (see documents.py); the
camera is modelled from the page's 3-D pose to the ISP's YUV420 output (see camera.py).

A scene is drawn from a seed, a Setting (lighting, camera module, paper: named, so a
whole setting can be held out of tuning) and a difficulty. It is rendered at the
sensor mode's size (the main stream, e.g. 2304x1296 for a Camera Module 3) and at the
1280x720 lores size the kiosk analyses, from the same light (the lores image is the
ISP's downscale). Each scene carries its truth: every code's kind, payload and box in
both images, and which codes are only partly in view.

`shoot()` renders one frame of a document at a given pose and auto-exposure state; the
presentation sequences (hand brings the paper in, holds it, moves it) are built on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import cv2
import numpy as np
import numpy.typing as npt

from ordoscan.classifier import Kind
from ordoscan.devtools.docscenes import camera as cm
from ordoscan.devtools.docscenes import documents

Grey = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]

LORES = (1280, 720)
KINDS: tuple[str, ...] = ("ordonnance", "phone_light", "phone_dark", "medicine_pack", "2d_doc",
                          "url", "blank")
_MIX = (0.42, 0.08, 0.08, 0.12, 0.1, 0.08, 0.12)
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")


@dataclass(frozen=True)
class Setting:
    """Named capture conditions: the room's light, the camera module, the paper."""

    light: str = "office"
    camera: str = "cm3"
    paper: str = "plain"

    def __post_init__(self) -> None:
        for value, table, what in ((self.light, cm.LIGHTS, "light"),
                                   (self.camera, cm.CAMERAS, "camera"),
                                   (self.paper, cm.PAPERS, "paper")):
            if value not in table:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(table)}")

    def __str__(self) -> str:
        return f"{self.light}/{self.camera}/{self.paper}"


@dataclass(frozen=True)
class Code:
    """One code in a frame: where it is in the lores image and in the main stream."""

    kind: Kind
    payload: str
    fmt: str
    box: Box  # lores pixels, x0 y0 x1 y1 (the code's own square, quiet zone excluded)
    box_full: Box  # main-stream pixels
    module_px: float  # lores pixels per module (mean over the code)
    visible: bool  # wholly inside the frame


@dataclass(frozen=True)
class DocScene:
    """One rendered frame and its truth."""

    kind: str
    seed: int
    difficulty: str
    setting: Setting
    image: Grey  # lores Y plane, 1280x720 (what camera.Frame.image holds)
    full: Grey  # main-stream Y plane at the sensor mode's size
    chroma: tuple[Grey, Grey]  # lores U and V planes, 640x360 (YUV420)
    codes: tuple[Code, ...]
    params: dict[str, float] = field(default_factory=dict)

    @property
    def truth(self) -> tuple[tuple[Kind, str], ...]:
        """(kind, payload) of each code wholly in view (as ordoscan.devtools.scenes gives)."""
        return tuple((c.kind, c.payload) for c in self.codes if c.visible)

    @property
    def partial(self) -> tuple[str, ...]:
        """Payloads of codes only partly in view: a read of one is neither a hit nor a stray."""
        return tuple(c.payload for c in self.codes if not c.visible)

    @property
    def zoom_scale(self) -> float:
        """Main-stream pixels per lores pixel."""
        return float(self.full.shape[1] / self.image.shape[1])

    def zoom(self, x0: float, y0: float, x1: float, y1: float) -> Grey:
        """The main-stream pixels of a lores region (x0, y0, x1, y1), clamped to the frame:
        what a camera's zoom into its full-resolution stream gives."""
        s = self.zoom_scale
        h, w = self.full.shape
        a, b = max(0, int(x0 * s)), max(0, int(y0 * s))
        c, d = min(w, math.ceil(x1 * s)), min(h, math.ceil(y1 * s))
        if c <= a or d <= b:
            raise ValueError(f"zoom region {(x0, y0, x1, y1)} is empty inside the frame")
        return np.ascontiguousarray(self.full[b:d, a:c])


# ---------------------------------------------------------------------------
# What a scene is made of, before any pose


@dataclass
class Subject:
    """A document, the paper it is on and the room: everything but the pose and the light's
    exposure. Its rasters are cached, so a sequence of frames reuses them."""

    kind: str
    setting: Setting
    doc: documents.Document
    surface: cm.Surface
    ink_fade: float
    gloss: float
    lux: float
    gradient: tuple[float, float]  # strength, angle
    shadow: tuple[float, float, float, float]  # depth, x, y, radius (fractions of the frame)
    lamp: tuple[float, float, float]
    screen_nits: float
    counter_seed: int
    _rasters: dict[float, npt.NDArray[np.float32]] = field(default_factory=dict)

    @cached_property
    def anchor(self) -> tuple[float, float]:
        """The page point a pose places: the first code's centre, or the page's centre."""
        if self.doc.codes:
            main = [c for c in self.doc.codes if c.kind is not Kind.INS]
            x0, y0, x1, y1 = (main or list(self.doc.codes))[0].box_mm
            return ((x0 + x1) / 2, (y0 + y1) / 2)
        return (self.doc.size_mm[0] / 2, self.doc.size_mm[1] / 2)

    def raster(self, ppm: float) -> npt.NDArray[np.float32]:
        """Page reflectance (or screen emission) as linear RGB 0..1 plus a coverage channel
        of ones (so one remap gives both), at `ppm` pixels per mm."""
        ppm = float(round(ppm * 2) / 2)
        if ppm not in self._rasters:
            srgb = self.doc.raster(ppm)
            lin = _SRGB_TO_LINEAR[srgb]
            if self.ink_fade:
                paper = np.array(self.doc.paper_rgb, np.float32) ** 2.2
                lin *= 1 - self.ink_fade
                lin += paper * self.ink_fade
            rgba = np.empty((*srgb.shape[:2], 4), np.float32)
            rgba[:, :, :3] = lin
            rgba[:, :, 3] = 1.0
            self._rasters.clear()  # one size at a time: a sequence keeps its size
            self._rasters[ppm] = rgba
        return self._rasters[ppm]


_SRGB = np.arange(256, dtype=np.float64) / 255.0
_SRGB_TO_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92,
                           ((_SRGB + 0.055) / 1.055) ** 2.4).astype(np.float32)


def subject(kind: str, rng: np.random.Generator, setting: Setting, small: bool | None = None
            ) -> Subject:
    """Draw a document and its surroundings for `kind` under `setting`."""
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
    light, paper = cm.LIGHTS[setting.light], cm.PAPERS[setting.paper]
    if kind == "ordonnance":
        if small is None:
            small = bool(rng.random() < 0.45)
        placement = str(rng.choice(["inline", "foot"])) if small else "top"
        qr_mm = float(rng.uniform(11, 15.5) if small else rng.uniform(16, 26))
        doc = documents.make(kind, rng, qr_mm, placement)
    else:
        doc = documents.make(kind, rng)
    screen = doc.emissive
    w, h = doc.size_mm
    surface = cm.Surface()
    if not screen and kind != "medicine_pack":
        fold = float(rng.uniform(*paper.fold)) if rng.random() < paper.fold_chance else 0.0
        surface = cm.Surface(
            curl=float(rng.uniform(*paper.curl)) * float(rng.choice([-1, 1])),
            curl_dir=float(rng.uniform(0, math.pi)),
            fold_deg=fold,
            fold_dir=float(rng.choice([0.0, math.pi / 2])) + float(rng.normal(0, 0.05)),
            fold_at=float(rng.uniform(-0.3, 0.3)) * min(w, h),
            centre=(w / 2, h / 2),
        )
    return Subject(
        kind=kind,
        setting=setting,
        doc=doc,
        surface=surface,
        ink_fade=0.0 if screen else float(rng.uniform(*paper.ink_fade)),
        gloss=float(rng.uniform(0.03, 0.08)) if screen else float(rng.uniform(*paper.gloss)),
        lux=float(rng.uniform(*light.lux)),
        gradient=(float(rng.uniform(*light.gradient)), float(rng.uniform(0, 2 * math.pi))),
        shadow=(float(rng.uniform(*light.shadow)), float(rng.uniform(0, 1)),
                float(rng.uniform(0, 1)), float(rng.uniform(0.2, 0.6))),
        lamp=(float(rng.normal(0, 0.25)), float(rng.normal(0, 0.25)),
              -float(rng.uniform(*light.lamp_height_mm))),
        screen_nits=float(rng.uniform(150, 500)),
        counter_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------
# Poses by difficulty


def _module_target(rng: np.random.Generator, difficulty: str, small_code: bool) -> float:
    if small_code:  # 50-60 px codes at 1280x720, at every difficulty
        return float(rng.uniform(2.0, 3.0))
    lo, hi = {"easy": (3.5, 6.0), "medium": (2.8, 4.5), "hard": (2.3, 4.0)}[difficulty]
    return float(rng.uniform(lo, hi))


def pose_for(sub: Subject, rng: np.random.Generator, difficulty: str) -> cm.Pose:
    """A still pose of the difficulty: distance from the code's module size, tilt, motion."""
    cam = cm.CAMERAS[sub.setting.camera]
    f_lores = cm.focal_px(cam, LORES[0])
    small = sub.kind == "ordonnance" and documents.module_mm(sub.doc) * 21 < 16
    mod_mm = documents.module_mm(sub.doc) or 0.8
    target = _module_target(rng, difficulty, small)
    # hand speeds while the code is held still enough to be aimed (mm/s)
    tilt, roll, speed = {"easy": (12, 30, 10), "medium": (25, 180, 30), "hard": (40, 180, 60)}[
        difficulty]
    tx, ty = float(rng.uniform(-tilt, tilt)), float(rng.uniform(-tilt, tilt))
    # a tilted code is foreshortened: stand closer so its mean module size stays the target
    z = f_lores * mod_mm / target * math.sqrt(math.cos(math.radians(tx)) *
                                              math.cos(math.radians(ty)))
    z = min(max(z, 80.0), 900.0)
    half_w = z * math.tan(math.radians(cam.hfov_deg) / 2)
    half_h = half_w * LORES[1] / LORES[0]
    code_half = 0.5 * 21 * mod_mm * 1.6
    x = float(np.clip(rng.normal(0, 0.2) * half_w, -half_w + code_half, half_w - code_half))
    y = float(np.clip(rng.normal(0, 0.2) * half_h, -half_h + code_half, half_h - code_half))
    v = float(rng.uniform(0, speed))
    a = float(rng.uniform(0, 2 * math.pi))
    return cm.Pose(x, y, z, float(rng.uniform(-roll, roll)), tx, ty, v * math.cos(a),
                   v * math.sin(a), float(rng.normal(0, v * 0.2)), sub.anchor)


# ---------------------------------------------------------------------------
# Taking a picture


@dataclass
class AutoExposure:
    """The camera's exposure state: it meters each frame and moves towards its target.
    `lag` < 1 makes it converge over frames (as libcamera's AGC does); 1 is instant."""

    exposure_ms: float = 10.0
    gain: float = 1.0
    lag: float = 1.0
    error_ev: float = 0.0  # a fixed miss of the target (metering on a dark counter, say)
    # the exposure profile's shutter stages clipped to this (ms), as the kiosk's tuning
    # clips them (camera.max_exposure_us): the gain takes over sooner; None: the module's own
    max_exposure_ms: float | None = None

    def meter(self, cam: cm.CameraModel, mean_radiance: float) -> None:
        """Pick exposure then gain as libcamera's normal profile does: shutter to 10 ms,
        gain to 2, shutter to the cap, then gain to the cap."""
        want = 0.2 * cam.full_well_e / (max(mean_radiance, 1e-4) * _SENSITIVITY)
        want *= 2.0 ** self.error_ev
        now = self.exposure_ms * self.gain
        target = now * (want / now) ** self.lag if self.lag < 1 else want
        cap = cam.max_exposure_ms
        if self.max_exposure_ms is not None:
            cap = min(cap, self.max_exposure_ms)
        steps = ((min(10.0, cap), 1.0), (min(10.0, cap), 2.0), (cap, 2.0), (cap, cam.max_gain))
        t, g = 0.1, 1.0
        for st, sg in steps:
            if target <= st * sg:
                if st * g >= target:
                    t = target / g
                else:
                    t, g = st, target / st
                break
            t, g = st, sg
        self.exposure_ms, self.gain = max(t, 0.05), float(min(max(g, 1.0), cam.max_gain))


class FixedExposure(AutoExposure):
    """A camera in manual mode: the exposure and gain set from outside (a USB camera under
    the kiosk's own auto-exposure, ordoscan.camera.exposure) whatever the frame meters."""

    def meter(self, cam: cm.CameraModel, mean_radiance: float) -> None:
        pass


_SENSITIVITY = 200.0  # electrons per ms per unit of radiance (white paper at 500 lux ~ 0.9)
_QE = np.array([0.55, 1.0, 0.45], np.float32)  # Bayer R, G, B relative response


def _counter(seed: int, size: tuple[int, int]) -> npt.NDArray[np.float32]:
    return cm.counter_texture(np.random.default_rng(seed), size)


def _sample_page(sub: Subject, raster: npt.NDArray[np.float32], ppm: float,
                 u: npt.NDArray[np.float32], v: npt.NDArray[np.float32]
                 ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The page's linear RGB at each pixel's page point, and its coverage (0..1)."""
    mx, my = u * ppm - 0.5, v * ppm - 0.5
    out = cm.f32(cv2.remap(raster, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=(0, 0, 0, 0)))
    if sub.doc.emissive:
        # a screen: each pixel lights three colour stripes side by side; the sensor pixel
        # averages them over its footprint (screen pixels across one sensor pixel)
        footprint = cm.f32(np.abs(np.gradient(mx, axis=1)) + np.abs(np.gradient(mx, axis=0)))
        for c in range(3):
            out[:, :, c] *= cm.stripe_box(cm.f32(mx + 0.5), footprint, c)
    return np.asarray(out[:, :, :3], np.float32), np.asarray(out[:, :, 3], np.float32)


def _radiance(sub: Subject, cam: cm.CameraModel, size: tuple[int, int], pose: cm.Pose,
              t0: float, raster: npt.NDArray[np.float32], ppm: float,
              counter: npt.NDArray[np.float32], light_field: npt.NDArray[np.float32]
              ) -> npt.NDArray[np.float32]:
    """Linear RGB radiance reaching the lens at one instant (rows at their readout times)."""
    lamp = np.array(sub.lamp, np.float64)
    lamp = -lamp / np.linalg.norm(lamp)  # from the page towards the lamp (lamp z < 0)
    u, v, cos_view, spec = cm.page_coords(cam, size, pose, sub.surface, 4, t0,
                                          cam.readout_ms / 1000, lamp)
    uf, vf = cm.upsample(u, size), cm.upsample(v, size)
    rgb, alpha = _sample_page(sub, raster, ppm, uf, vf)
    light = cm.LIGHTS[sub.setting.light]
    base = sub.lux / 500.0
    lobe = np.arccos(np.clip(spec, -1, 1))
    glare = np.exp(-(lobe / light.lamp_size) ** 2) * (sub.gloss * 8.0 * base)
    glare_f = cm.upsample(glare, size)
    if sub.doc.emissive:
        page = rgb * (sub.screen_nits / 143.0) + (0.04 * base + glare_f)[:, :, None]
    else:
        shade = cm.upsample(0.75 + 0.25 * cos_view, size)
        page = rgb * (base * light_field * shade)[:, :, None] + glare_f[:, :, None]
    room = counter * (base * light_field)[:, :, None]
    a = alpha[:, :, None]
    return np.asarray(page * a + room * (1 - a), np.float32)


def shoot(sub: Subject, pose: cm.Pose, rng: np.random.Generator, ae: AutoExposure,
          focus_error_d: float = 0.0, sensor: tuple[int, int] | None = None
          ) -> tuple[Grey, Grey, tuple[Grey, Grey], tuple[Code, ...], dict[str, float]]:
    """One frame of `sub` at `pose`: (lores Y, main Y, lores U/V, codes, parameters)."""
    cam = cm.CAMERAS[sub.setting.camera]
    size = sensor or cam.mode
    w, h = size
    f = cm.focal_px(cam, w)
    # page raster: ~1.5 page pixels per sensor pixel (screens: one per screen pixel)
    ppm = 16.0 if sub.doc.emissive else float(np.clip(1.2 * f / pose.z, 3.0, 12.0))
    ppm = float(round(ppm * 2) / 2)  # rasters are made in half steps (and cached)
    raster = sub.raster(ppm)
    if ppm > 3:
        sigma = 0.35 * ppm * pose.z / f  # the sensor pixel's aperture, in page pixels
        if sigma > 0.5:
            raster = cm.f32(cv2.GaussianBlur(raster, (0, 0), sigma))
    counter = _counter(sub.counter_seed, size)
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    g, ga = sub.gradient
    depth, sx, sy, sr = sub.shadow
    light_field = cm.f32((1 + g * 0.5 * (xx * math.cos(ga) + yy * math.sin(ga))) * (
        1 - depth * np.exp(-((xx - (2 * sx - 1)) ** 2 + (yy - (2 * sy - 1)) ** 2) / sr**2)))

    first = _radiance(sub, cam, size, pose, 0.0, raster, ppm, counter, light_field)
    # auto-exposure meters the scene (centre-weighted) before this frame's exposure
    weight = np.exp(-(xx**2 + yy**2) / 0.5)
    ae.meter(cam, float((first.mean(axis=2) * weight).sum() / weight.sum()))
    t_exp = ae.exposure_ms / 1000.0
    speed_px = math.hypot(pose.vx, pose.vy) * f / pose.z * t_exp
    n_sub = int(min(max(math.ceil(speed_px / 1.5), 1), 8))
    rad = first
    if n_sub > 1:
        rad = cm.f32(first / n_sub)
        for k in range(1, n_sub):
            more = _radiance(sub, cam, size, pose, t_exp * k / (n_sub - 1), raster, ppm,
                             counter, light_field)
            rad = cm.f32(np.add(rad, more / n_sub))

    # lens: defocus disc, lens blur, vignetting
    if cam.focus == "fixed":
        focus_error_d = abs(1000.0 / pose.z - 1000.0 / cam.fixed_focus_mm)
    scale = w / 2304.0
    radius = cam.aperture_px_per_dioptre * focus_error_d * scale
    if radius > 0.3:
        rad = cm.f32(cv2.filter2D(rad, -1, cm.disc_kernel(radius),
                                  borderType=cv2.BORDER_REFLECT))
    rad = cm.f32(cv2.GaussianBlur(rad, (0, 0), max(cam.blur_px * scale, 0.3)))
    rr = (xx * (w / 2 / f)) ** 2 + (yy * (h / 2 / f)) ** 2
    rad = cm.f32(rad * ((1.0 / (1.0 + rr)) ** (cam.vignetting / 2))[:, :, None])

    # sensor: Bayer RGGB mosaic, shot and read noise, gain, 10-bit ADC
    electrons = np.empty((h, w), np.float32)
    electrons[0::2, 0::2] = rad[0::2, 0::2, 0] * _QE[0]
    electrons[0::2, 1::2] = rad[0::2, 1::2, 1] * _QE[1]
    electrons[1::2, 0::2] = rad[1::2, 0::2, 1] * _QE[1]
    electrons[1::2, 1::2] = rad[1::2, 1::2, 2] * _QE[2]
    electrons *= ae.exposure_ms * _SENSITIVITY
    electrons = np.minimum(electrons, cam.full_well_e)
    noisy = electrons + rng.standard_normal((h, w), dtype=np.float32) * np.sqrt(
        electrons + cam.read_noise_e**2)
    dn = np.clip(np.rint(noisy * ae.gain / cam.full_well_e * 1023.0), 0, 1023).astype(np.uint16)

    # ISP: demosaic, white balance, exposure to display, tone curve, sharpening, YUV
    rgb = cv2.cvtColor(dn * np.uint16(64), cv2.COLOR_BayerRG2RGB).astype(np.float32) / 65472.0
    warm = cm.LIGHTS[sub.setting.light].warm
    wb = (1 / _QE) * np.array([1 - warm, 1.0, 1 + warm], np.float32)
    rgb = rgb * wb * (0.18 / 0.2)
    rgb = np.clip(rgb, 0, 1)
    tone = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    blur = cv2.GaussianBlur(tone, (0, 0), 1.0 * scale + 0.4)
    tone = np.clip(tone + 0.5 * (tone - blur), 0, 1)
    y_full = _luma(tone)
    small = cv2.resize(tone, LORES, interpolation=cv2.INTER_AREA)
    y_lo = _luma(small)
    uu = 0.5 - 0.168736 * small[:, :, 0] - 0.331264 * small[:, :, 1] + 0.5 * small[:, :, 2]
    vv = 0.5 + 0.5 * small[:, :, 0] - 0.418688 * small[:, :, 1] - 0.081312 * small[:, :, 2]
    half = (LORES[0] // 2, LORES[1] // 2)
    u8 = _u8(cv2.resize(uu, half, interpolation=cv2.INTER_AREA))
    v8 = _u8(cv2.resize(vv, half, interpolation=cv2.INTER_AREA))

    codes = _codes(sub, cam, size, pose, t_exp)
    params = {"z_mm": pose.z, "roll": pose.roll, "tilt_x": pose.tilt_x, "tilt_y": pose.tilt_y,
              "speed_mm_s": math.hypot(pose.vx, pose.vy), "exposure_ms": ae.exposure_ms,
              "gain": ae.gain, "defocus_px": radius, "lux": sub.lux, "gloss": sub.gloss,
              "ink_fade": sub.ink_fade, "curl": sub.surface.curl, "fold": sub.surface.fold_deg,
              "blur_samples": float(n_sub)}
    return y_lo, y_full, (u8, v8), codes, params


def _luma(rgb: npt.NDArray[np.float32]) -> Grey:
    return _u8(0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2])


def _u8(a: npt.NDArray[np.float32]) -> Grey:
    return np.ascontiguousarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))


def _codes(sub: Subject, cam: cm.CameraModel, size: tuple[int, int], pose: cm.Pose,
           t_exp: float) -> tuple[Code, ...]:
    w, h = size
    sx = LORES[0] / w
    out: list[Code] = []
    for c in sub.doc.codes:
        x0, y0, x1, y1 = c.box_mm
        uu = np.array([x0, x1, x1, x0, (x0 + x1) / 2])
        vv = np.array([y0, y0, y1, y1, (y0 + y1) / 2])
        px, py = cm.project(cam, size, pose, sub.surface, uu, vv, t_exp / 2)
        # the rows of the code are read at their own time: move by the readout delay
        t_row = t_exp / 2 + float(py[4]) / h * cam.readout_ms / 1000
        px, py = cm.project(cam, size, pose, sub.surface, uu, vv, t_row)
        full: Box = (float(px[:4].min()), float(py[:4].min()), float(px[:4].max()),
                     float(py[:4].max()))
        visible = full[0] >= 0 and full[1] >= 0 and full[2] < w and full[3] < h
        side = [math.hypot(px[(i + 1) % 4] - px[i], py[(i + 1) % 4] - py[i]) for i in range(4)]
        out.append(Code(c.kind, c.payload, c.fmt,
                        (full[0] * sx, full[1] * sx, full[2] * sx, full[3] * sx), full,
                        float(np.mean(side)) * sx / c.modules, visible))
    return tuple(out)


# ---------------------------------------------------------------------------
# Scenes


def _rng(seed: int, kind: str, difficulty: str, setting: Setting) -> np.random.Generator:
    key = [seed & 0xFFFFFFFF, KINDS.index(kind), DIFFICULTIES.index(difficulty),
           *(sorted(t).index(v) for t, v in ((cm.LIGHTS, setting.light),
                                             (cm.CAMERAS, setting.camera),
                                             (cm.PAPERS, setting.paper))), 0x0D0C]
    return np.random.default_rng(key)


def render(kind: str, seed: int, *, setting: Setting | None = None, difficulty: str = "medium",
           sensor: tuple[int, int] | None = None,
           focus_behind_mm: float | None = None, ink_fade: float | None = None,
           max_exposure_ms: float | None = None,
           exposure: tuple[float, float] | None = None) -> DocScene:
    """Render one scene; the same arguments give the same pixels.

    `focus_behind_mm`: the lens focused that far behind the page instead of on it (an
    autofocus that missed, ordoscan.devtools.af_miss); `ink_fade`: the print's ink that far
    lightened towards the paper (0: black; pale print, ordoscan.devtools.pale) instead of
    what the paper draws; `max_exposure_ms`: the auto-exposure's shutter capped there (the
    kiosk's picamera2 tuning, camera.max_exposure_us) instead of at the module's own 33 ms
    (a USB camera's); `exposure`: the shutter (ms) and gain set by hand instead of by the
    camera's auto-exposure (FixedExposure). Every other draw is the scene's own."""
    setting = setting or Setting()
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of "
                         f"{', '.join(DIFFICULTIES)}")
    if sensor is not None and not (LORES[0] <= sensor[0] <= 4608 and LORES[1] <= sensor[1] <= 2592
                                   and sensor[0] % 4 == 0 and sensor[1] % 4 == 0):
        raise ValueError(f"sensor size {sensor!r} out of range (1280x720 .. 4608x2592, "
                         "multiples of 4)")
    rng = _rng(seed, kind, difficulty, setting)
    sub = subject(kind, rng, setting)
    if ink_fade is not None and not sub.doc.emissive:
        sub = replace(sub, ink_fade=ink_fade)
    pose = pose_for(sub, rng, difficulty)
    ev = {"easy": 0.2, "medium": 0.4, "hard": 0.7}[difficulty]
    error_ev = float(rng.normal(0, ev))  # drawn whatever the exposure: the next draws stay
    ae = (AutoExposure(error_ev=error_ev, max_exposure_ms=max_exposure_ms) if exposure is None
          else FixedExposure(exposure_ms=exposure[0], gain=exposure[1]))
    cam = cm.CAMERAS[setting.camera]
    focus = abs(float(rng.normal(0, {"easy": 0.05, "medium": 0.1, "hard": 0.2}[difficulty])))
    if focus_behind_mm is not None:
        focus = 1000.0 / pose.z - 1000.0 / (pose.z + focus_behind_mm)  # dioptres
    lo, full, chroma, codes, params = shoot(sub, pose, rng, ae, focus, sensor or cam.mode)
    return DocScene(kind, seed, difficulty, setting, lo, full, chroma, codes, params)


def scene_kind(seed: int, index: int) -> str:
    """The kind of scene `index` of a mixed set (weighted, reproducible)."""
    x = float(np.random.default_rng([seed & 0xFFFFFFFF, index, 0x51]).random())
    acc = 0.0
    for kind, share in zip(KINDS, _MIX, strict=True):
        acc += share
        if x < acc:
            return kind
    return KINDS[-1]
