"""Synthetic counter scenes: what the kiosk camera sees, and the codes truly in it.

A seeded, reproducible generator of grey camera frames: a printed A5
ordonnance numérique (QR code with its EPU identifier, often an INS DataMatrix
beside it) held under the camera, phone screens in light and dark mode,
medicine packs (GS1 DataMatrix), 2D-Doc documents, URL flyers and blank
counters. Every picture is made the way a camera makes it: a 3-D pose with
perspective and a slight paper bend, uneven light and glare, defocus and
motion blur, exposure (contrast), sensor noise and optionally JPEG loss.

Only PIL and numpy are used (plus zxing-cpp's writer for the codes): the demo
and the hardware-in-loop rig call it at run time. All payloads are synthetic.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageChops, ImageFilter

from ordoscan.classifier import Kind
from ordoscan.devtools.scenes.camera import (
    Pose,
    code_corners,
    conditions,
    counter,
    grow,
    motion_blur,
    rotation,
    warp,
)
from ordoscan.devtools.scenes.documents import (
    SS,
    Layer,
    blank_object,
    document,
    medicine_pack,
    ordonnance,
    phone,
)
from ordoscan.devtools.scenes.payloads import (  # re-exported: the payload makers
    gs1_check_digit,
    make_2ddoc,
    make_epu,
    make_gs1,
    make_gtin,
    make_ins,
    make_url,
)

__all__ = [
    "SCENE_KINDS", "Scene", "gs1_check_digit", "make_2ddoc", "make_epu", "make_gs1",
    "make_gtin", "make_ins", "make_url", "render", "scene_kind", "scene_set",
]

Difficulty = Literal["easy", "hard"]
Grey = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float64]  # geometry
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Pixels = npt.NDArray[np.float32]  # light, in grey levels

# Scene kinds and their share of a mixed set (scene_set).
SCENE_KINDS: tuple[str, ...] = (
    "ordonnance",
    "phone_light",
    "phone_dark",
    "medicine_pack",
    "2d_doc",
    "url",
    "blank",
)
_MIX: dict[str, float] = dict(
    zip(SCENE_KINDS, (0.34, 0.10, 0.10, 0.14, 0.10, 0.10, 0.12), strict=True)
)


@dataclass(frozen=True)
class Scene:
    """One rendered counter scene and the codes fully visible in it."""

    kind: str
    seed: int
    difficulty: str
    image: Grey  # uint8, H x W, grey (what camera.Frame.image holds)
    truth: tuple[tuple[Kind, str], ...]  # (kind, payload) of each code in the picture
    params: dict[str, float] = field(default_factory=dict)  # conditions drawn, never payloads

    def save(self, path: str | Path, quality: int = 95) -> None:
        """Write the image (PNG, or JPEG by suffix)."""
        img = Image.fromarray(self.image)
        if Path(path).suffix.lower() in (".jpg", ".jpeg"):
            img.save(path, quality=quality)
        else:
            img.save(path)


def render(
    kind: str, seed: int, *, size: tuple[int, int] = (1280, 720), difficulty: Difficulty = "easy"
) -> Scene:
    """Render one scene of `kind` (see SCENE_KINDS); the same arguments give the same pixels."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {', '.join(SCENE_KINDS)}")
    if difficulty not in ("easy", "hard"):
        raise ValueError(f"unknown difficulty {difficulty!r}; expected 'easy' or 'hard'")
    width, height = size
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise ValueError(f"scene size {size!r} out of range (64..4096 pixels a side)")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, SCENE_KINDS.index(kind), difficulty == "hard"])
    screen = kind.startswith("phone")
    cond = conditions(rng, difficulty, screen)
    canvas = (width * SS, height * SS)
    scale = min(width / 1280, height / 720)  # module sizes are given for a 1280x720 frame
    # object px per module: the code centre sits at depth = focal (1 object px = 1 canvas px)
    module = cond.module_px * scale * SS

    layer: Layer | None
    if kind == "ordonnance":
        qr_mm = float(rng.uniform(18, 26))
        layer = ordonnance(rng, module / (qr_mm / 21), qr_mm)
    elif screen:
        qr_mm = float(rng.uniform(30, 45))
        layer = phone(rng, module / (qr_mm / 21), qr_mm, dark=kind == "phone_dark")
    elif kind == "medicine_pack":
        dm_mm = float(rng.uniform(10, 14))
        layer = medicine_pack(rng, module / (dm_mm / 22), dm_mm)
    elif kind in ("2d_doc", "url"):
        mm = float(rng.uniform(18, 26))
        layer = document(
            rng, module / (mm / (40 if kind == "2d_doc" else 29)), mm, url=kind == "url"
        )
    else:
        layer = blank_object(rng, float(rng.uniform(2, 6)) * scale * SS)

    radiance = counter(rng, size)
    truth: list[tuple[Kind, str]] = []
    focal = 0.8 * canvas[0]
    if layer is not None:
        if layer.codes:
            boxes = np.array([c[2] for c in layer.codes])
            pivot = (
                (boxes[:, 0].min() + boxes[:, 2].max()) / 2,
                (boxes[:, 1].min() + boxes[:, 3].max()) / 2,
            )
        else:
            pivot = (layer.image.size[0] / 2, layer.image.size[1] / 2)
        rot = rotation(cond.roll, cond.tilt_x, cond.tilt_y)
        iw = float(layer.image.size[0])
        pose = Pose(rot, focal, pivot, layer.bend, iw, (0.0, 0.0))
        # place the codes with room for their quiet zones inside the frame, near the middle
        xs: list[float] = []
        ys: list[float] = []
        for _, _, box in layer.codes:
            cx, cy = code_corners(layer, pose, grow(box, 0.15))
            xs.extend(float(x) for x in cx)
            ys.extend(float(y) for y in cy)
        margin = 0.03 * canvas[0]
        if xs:
            lo_x, hi_x = margin - min(xs), canvas[0] - margin - max(xs)
            lo_y, hi_y = margin - min(ys), canvas[1] - margin - max(ys)
        else:
            lo_x, hi_x, lo_y, hi_y = (
                0.2 * canvas[0],
                0.8 * canvas[0],
                0.2 * canvas[1],
                0.8 * canvas[1],
            )
        # people hold the code roughly under the camera: near the middle, rarely at an edge
        want_x = canvas[0] * (0.5 + float(rng.normal(0, 0.15)))
        want_y = canvas[1] * (0.5 + float(rng.normal(0, 0.15)))
        centre = (min(max(want_x, lo_x), max(lo_x, hi_x)), min(max(want_y, lo_y), max(lo_y, hi_y)))
        pose = Pose(rot, focal, pivot, layer.bend, iw, centre)
        obj, alpha = warp(layer, pose, canvas)
        # box-filtering is linear: composite premultiplied, at the output size
        premultiplied = ImageChops.multiply(obj, alpha).reduce(SS)
        a = np.asarray(alpha.reduce(SS), dtype=np.float32) / 255.0
        radiance = radiance * (1 - a) + np.asarray(premultiplied, dtype=np.float32)
        for code_kind, payload, box in layer.codes:
            cx, cy = code_corners(layer, pose, box)
            if cx.min() >= 0 and cy.min() >= 0 and cx.max() < canvas[0] and cy.max() < canvas[1]:
                truth.append((code_kind, payload))

    # light: a slope across the frame, a soft shadow, veiling glare
    yy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    ang = float(rng.uniform(0, 2 * math.pi))
    light = 1 + cond.light_slope * 0.5 * (xx * math.cos(ang) + yy * math.sin(ang))
    sx, sy, sr = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), float(rng.uniform(0.3, 0.9))
    light = light * (1 - cond.shadow * np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / sr**2))
    radiance = (radiance * light).astype(np.float32, copy=False)
    if cond.glare > 0:
        gx, gy = float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.6, 0.6))
        gr = float(rng.uniform(0.15, 0.45))
        g = cond.glare * np.exp(-((xx - gx) ** 2 + ((yy - gy) * height / width) ** 2) / gr**2)
        radiance = (radiance * (1 - g) + 255 * g).astype(np.float32, copy=False)

    # lens and sensor
    img = Image.fromarray(np.clip(radiance, 0, 255).astype(np.uint8))
    if cond.defocus > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cond.defocus * scale))
    out = motion_blur(np.asarray(img, dtype=np.float32), cond.motion * scale, cond.motion_angle)
    out = cond.low + out * ((cond.high - cond.low) / 255.0)
    out = out + rng.normal(0.0, cond.noise, out.shape).astype(np.float32)
    frame = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if cond.jpeg:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=cond.jpeg)
        frame = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    params = {k: float(v) for k, v in cond.__dict__.items()}
    return Scene(kind, seed, difficulty, np.ascontiguousarray(frame), tuple(truth), params)


def scene_kind(seed: int, index: int) -> str:
    """The kind of scene `index` of a mixed set (weighted, reproducible)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index, 7])
    x, acc = float(rng.random()), 0.0
    for kind, share in _MIX.items():
        acc += share
        if x < acc:
            return kind
    return SCENE_KINDS[-1]


# scene i of set s is rendered from seed s * SET_STRIDE + i: two sets never share a render
# seed while they hold fewer scenes than this (ordoscan.devtools.splits keeps its dev and
# held-out sets apart by it)
SET_STRIDE = 100_003


def scene_set(
    seed: int, n: int, difficulty: Difficulty = "hard", *, size: tuple[int, int] = (1280, 720)
) -> Iterator[Scene]:
    """`n` mixed scenes, reproducible from `seed` (rendered lazily, one at a time)."""
    for i in range(n):
        yield render(scene_kind(seed, i), seed * SET_STRIDE + i, size=size,
                     difficulty=difficulty)
