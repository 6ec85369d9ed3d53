"""gen1's objects drawn flat: the ordonnance, phone screens, packs, documents, hands."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ordoscan.classifier import Kind
from ordoscan.devtools.scenes.payloads import (
    FIRST_NAMES,
    GS,
    LAST_NAMES,
    TOWNS,
    chars,
    code_matrix,
    make_2ddoc,
    make_epu,
    make_gs1,
    make_ins,
    make_url,
    pick,
)

Difficulty = Literal["easy", "hard"]
Grey = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float64]  # geometry
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Pixels = npt.NDArray[np.float32]  # light, in grey levels


SS = 2  # supersampling factor: scenes are drawn at twice the size, then box-filtered down


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(px, 6))
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _text(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, px: float, fill: int
) -> None:
    draw.text(xy, text, fill=fill, font=_font(round(px)))


def _paste_code(
    img: Image.Image,
    matrix: npt.NDArray[np.bool_],
    x: float,
    y: float,
    size: float,
    dark: int,
    light: int,
    quiet_modules: int,
) -> Box:
    """Draw a code of side `size` px at (x, y) on its quiet zone; return the box of its modules."""
    rows, cols = matrix.shape
    w, h = round(size * cols / max(rows, cols)), round(size * rows / max(rows, cols))
    quiet = w / cols * quiet_modules
    ImageDraw.Draw(img).rectangle([x - quiet, y - quiet, x + w + quiet, y + h + quiet], fill=light)
    pix = np.where(matrix, dark, light).astype(np.uint8)
    img.paste(Image.fromarray(pix).resize((w, h), Image.Resampling.NEAREST), (round(x), round(y)))
    return (x, y, x + w, y + h)


# ASCII only: the small built-in font has no accented glyphs.
_WORDS = (
    "comprime",
    "matin",
    "soir",
    "pendant",
    "jours",
    "gelule",
    "boite",
    "renouveler",
    "fois",
    "par",
    "jour",
    "sachet",
    "repas",
    "apres",
    "avant",
    "traitement",
    "mois",
    "flacon",
    "une",
    "deux",
    "trois",
    "si",
    "douleur",
    "QSP",
    "mg",
    "ml",
    "application",
    "locale",
    "coucher",
)
_DRUGS = (
    "PARACETAMOL 1 g",
    "AMOXICILLINE 500 mg",
    "IBUPROFENE 400 mg",
    "METFORMINE 850 mg",
    "LEVOTHYROXINE 75 ug",
    "ATORVASTATINE 20 mg",
    "OMEPRAZOLE 20 mg",
    "SALBUTAMOL 100 ug",
)


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(pick(rng, _WORDS) for _ in range(n))


# ---------------------------------------------------------------------------
# Objects: drawn flat, in their own pixels, with a transparency mask


@dataclass
class Layer:
    """A flat object (page, phone, pack) before it is posed in the scene."""

    image: Image.Image  # "L"
    alpha: Image.Image  # "L", 255 where the object is
    codes: list[tuple[Kind, str, Box]]  # kind, payload, box of the code's modules
    bend: float = 0.0  # paper curl: bend angle (radians) across the object's width


def _layer(w: float, h: float, margin: float, fill: int) -> tuple[Image.Image, Image.Image, float]:
    """A blank object of w x h px inside a transparent margin (room for the hand)."""
    m = round(margin)
    size = (round(w) + 2 * m, round(h) + 2 * m)
    img = Image.new("L", size, fill)
    alpha = Image.new("L", size, 0)
    ImageDraw.Draw(alpha).rectangle([m, m, m + round(w) - 1, m + round(h) - 1], fill=255)
    return img, alpha, m


def _hand(
    img: Image.Image,
    alpha: Image.Image,
    rng: np.random.Generator,
    edge_x: float,
    edge_y: float,
    scale: float,
    side: int,
) -> None:
    """A hand holding the object by its edge at x = edge_x: the palm and fingers outside it
    (side +1: to the right, -1: to the left) and the thumb over the object's margin."""
    skin = int(rng.integers(120, 200))
    draw, mask = ImageDraw.Draw(img), ImageDraw.Draw(alpha)
    px, py = edge_x + side * 0.55 * scale, edge_y
    boxes = [(px - 0.5 * scale, py - 0.45 * scale, px + 0.5 * scale, py + 0.45 * scale)]
    t0, t1 = sorted((edge_x - side * 0.25 * scale, edge_x + side * 0.1 * scale))
    boxes.append((t0, py - 0.40 * scale, t1, py - 0.20 * scale))  # the thumb
    for k in range(4):  # fingers, curled behind the object, ends showing past the palm
        fy = py + (k - 1.5) * 0.2 * scale
        f0, f1 = sorted((px + side * 0.3 * scale, px + side * 0.75 * scale))
        boxes.append((f0, fy - 0.08 * scale, f1, fy + 0.08 * scale))
    for b in boxes:
        draw.ellipse(b, fill=skin)
        mask.ellipse(b, fill=255)


def ordonnance(rng: np.random.Generator, ppm: float, qr_mm: float) -> Layer:
    """A printed A5 ordonnance numérique: header, QR code + EPU, often an INS DataMatrix."""
    w, h = 148 * ppm, 210 * ppm
    paper = int(rng.integers(225, 256))
    img, alpha, m = _layer(w, h, 60 * ppm, paper)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 50))
    line = 4.2 * ppm
    x0, y0 = m + 10 * ppm, m + 10 * ppm
    doctor = f"Dr {pick(rng, FIRST_NAMES).title()} {pick(rng, LAST_NAMES)}"
    for i, t in enumerate(
        (
            doctor,
            "Medecine generale",
            f"RPPS {chars(rng, '0123456789', 11)}",
            f"{int(rng.integers(1, 90))} rue {pick(rng, LAST_NAMES).title()}",
            f"{int(rng.integers(10000, 96000))} {pick(rng, TOWNS).title()}",
        )
    ):
        _text(draw, (x0, y0 + i * line), t, (3.6 if i == 0 else 3.0) * ppm, ink)
    epu = make_epu(rng)
    qr = code_matrix(epu, "qr")
    qx, qy = m + w - 10 * ppm - qr_mm * ppm, m + 10 * ppm
    codes: list[tuple[Kind, str, Box]] = [
        (Kind.ORDONNANCE, epu, _paste_code(img, qr, qx, qy, qr_mm * ppm, ink, paper, 4))
    ]
    _text(draw, (qx - 2 * ppm, qy + qr_mm * ppm + 2.5 * ppm), epu, 2.6 * ppm, ink)
    if rng.random() < 0.7:
        ins = make_ins(rng)
        dm_mm = qr_mm * float(rng.uniform(0.8, 1.0))
        dx = qx - dm_mm * ppm - 8 * ppm
        box = _paste_code(img, code_matrix(ins, "dm"), dx, qy + 1 * ppm, dm_mm * ppm, ink, paper, 2)
        codes.append((Kind.INS, ins, box))
        _text(draw, (dx, qy + dm_mm * ppm + 3 * ppm), "INS", 2.4 * ppm, ink)
    y = m + 60 * ppm
    _text(
        draw,
        (x0, y),
        f"Le {int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/2026",
        3.0 * ppm,
        ink,
    )
    _text(
        draw,
        (x0, y + line),
        f"{pick(rng, ('M.', 'Mme'))} {pick(rng, FIRST_NAMES).title()} {pick(rng, LAST_NAMES)}",
        3.2 * ppm,
        ink,
    )
    y += 3 * line
    for _ in range(int(rng.integers(2, 5))):
        _text(draw, (x0, y), pick(rng, _DRUGS), 3.2 * ppm, ink)
        _text(
            draw, (x0 + 6 * ppm, y + line), _sentence(rng, int(rng.integers(4, 9))), 3.0 * ppm, ink
        )
        y += 2.6 * line
    pts = [
        (x0 + 70 * ppm + i * 4 * ppm, y + 8 * ppm + float(rng.normal(0, 3)) * ppm) for i in range(9)
    ]
    draw.line(pts, fill=ink, width=max(1, round(0.5 * ppm)))  # signature
    _text(
        draw,
        (x0, m + h - 14 * ppm),
        "Ordonnance numerique - identifiant sous le QR code",
        2.4 * ppm,
        ink,
    )
    if rng.random() < 0.8:
        side = -1 if rng.random() < 0.5 else 1
        _hand(
            img,
            alpha,
            rng,
            m + (0 if side < 0 else w),
            m + h * float(rng.uniform(0.55, 0.85)),
            55 * ppm,
            side,
        )
    return Layer(img, alpha, codes, bend=float(rng.uniform(-0.6, 0.6)))


def phone(rng: np.random.Generator, ppm: float, qr_mm: float, dark: bool) -> Layer:
    """A phone showing the ordonnance's QR code, in light or dark mode."""
    w, h = 72 * ppm, 150 * ppm
    img, alpha, m = _layer(w, h, 50 * ppm, 0)
    alpha = Image.new("L", img.size, 0)
    body = int(rng.integers(10, 60))
    r = 9 * ppm
    ImageDraw.Draw(alpha).rounded_rectangle([m, m, m + w, m + h], radius=r, fill=255)
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([m, m, m + w, m + h], radius=r, fill=body)
    bg, fg = (
        (int(rng.integers(15, 45)), int(rng.integers(200, 240)))
        if dark
        else (int(rng.integers(215, 250)), int(rng.integers(0, 40)))
    )
    sx0, sy0, sx1, sy1 = m + 3 * ppm, m + 3 * ppm, m + w - 3 * ppm, m + h - 3 * ppm
    draw.rounded_rectangle([sx0, sy0, sx1, sy1], radius=7 * ppm, fill=bg)
    bar = int(rng.integers(60, 140)) if not dark else int(rng.integers(40, 80))
    draw.rectangle([sx0, sy0 + 8 * ppm, sx1, sy0 + 20 * ppm], fill=bar)
    _text(draw, (sx0 + 5 * ppm, sy0 + 11 * ppm), "Mon ordonnance", 5 * ppm, fg if dark else 250)
    epu = make_epu(rng)
    qx, qy = m + (w - qr_mm * ppm) / 2, sy0 + 35 * ppm
    codes: list[tuple[Kind, str, Box]] = [
        (Kind.ORDONNANCE, epu,
         _paste_code(img, code_matrix(epu, "qr"), qx, qy, qr_mm * ppm, fg, bg, 4))
    ]
    _text(draw, (qx, qy + qr_mm * ppm + 6 * ppm), epu, 3.2 * ppm, fg)
    for i in range(3):
        _text(
            draw,
            (sx0 + 5 * ppm, qy + qr_mm * ppm + (14 + 6 * i) * ppm),
            _sentence(rng, 3),
            3.2 * ppm,
            fg,
        )
    if rng.random() < 0.8:
        _hand(
            img,
            alpha,
            rng,
            m + w * float(rng.uniform(0.3, 0.7)),
            m + h + 10 * ppm,
            45 * ppm,
            -1 if rng.random() < 0.5 else 1,
        )
    return Layer(img, alpha, codes)


def medicine_pack(rng: np.random.Generator, ppm: float, dm_mm: float) -> Layer:
    """The face of a medicine box with its GS1 DataMatrix, lot and expiry printed beside it."""
    w, h = float(rng.uniform(80, 110)) * ppm, float(rng.uniform(40, 60)) * ppm
    card = int(rng.integers(200, 245))
    img, alpha, m = _layer(w, h, 40 * ppm, card)
    draw = ImageDraw.Draw(img)
    band = int(rng.integers(60, 190))
    draw.rectangle([m, m, m + w, m + 12 * ppm], fill=band)
    ink = int(rng.integers(10, 60))
    _text(draw, (m + 4 * ppm, m + 2 * ppm), pick(rng, _DRUGS), 6 * ppm, 255 if band < 130 else ink)
    _text(
        draw, (m + 4 * ppm, m + 15 * ppm), f"{int(rng.integers(8, 60))} comprimes", 3.5 * ppm, ink
    )
    gs1 = make_gs1(rng)
    dx, dy = m + 4 * ppm, m + h - dm_mm * ppm - 5 * ppm
    box = _paste_code(img, code_matrix(gs1, "dm", gs1=True), dx, dy, dm_mm * ppm, ink, card, 2)
    lot = gs1.split(GS)[0][26:]
    for i, t in enumerate((f"GTIN {gs1[2:16]}", f"EXP {gs1[20:22]}/20{gs1[18:20]}", f"LOT {lot}")):
        _text(draw, (dx + dm_mm * ppm + 5 * ppm, dy + i * 4 * ppm), t, 3 * ppm, ink)
    return Layer(img, alpha, [(Kind.MEDICINE_PACK, gs1, box)], bend=float(rng.uniform(-0.1, 0.1)))


def document(rng: np.random.Generator, ppm: float, code_mm: float, url: bool) -> Layer:
    """A 2D-Doc (invoice, certificate) or a flyer with a URL QR code."""
    w, h = (105 * ppm, 148 * ppm) if url else (148 * ppm, 180 * ppm)
    paper = int(rng.integers(215, 256))
    img, alpha, m = _layer(w, h, 50 * ppm, paper)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 60))
    x0 = m + 8 * ppm
    if url:
        payload = make_url(rng)
        kind, matrix = Kind.URL, code_matrix(payload, "qr")
        _text(
            draw,
            (x0, m + 8 * ppm),
            pick(rng, ("Vaccination", "Horaires", "Conseils", "Rendez-vous")),
            9 * ppm,
            ink,
        )
        cx, cy = m + (w - code_mm * ppm) / 2, m + 30 * ppm
    else:
        payload = make_2ddoc(rng)
        kind, matrix = Kind.DOC_2D, code_matrix(payload, "dm")
        cx, cy = x0, m + 8 * ppm
        _text(draw, (cx + code_mm * ppm + 6 * ppm, cy), "2D-DOC", 5 * ppm, ink)
        _text(
            draw,
            (cx + code_mm * ppm + 6 * ppm, cy + 8 * ppm),
            "Justificatif de domicile",
            3 * ppm,
            ink,
        )
    box = _paste_code(img, matrix, cx, cy, code_mm * ppm, ink, paper, 4 if url else 2)
    y = cy + code_mm * ppm + 10 * ppm
    while y < m + h - 12 * ppm:
        _text(draw, (x0, y), _sentence(rng, int(rng.integers(5, 10))), 3 * ppm, ink)
        y += 5 * ppm
    if rng.random() < 0.6:
        _hand(img, alpha, rng, m + w, m + h * float(rng.uniform(0.6, 0.9)), 55 * ppm, 1)
    return Layer(img, alpha, [(kind, payload, box)], bend=float(rng.uniform(-0.4, 0.4)))


def blank_object(rng: np.random.Generator, ppm: float) -> Layer | None:
    """Something without a code: a hand, a printed leaflet, a card, or nothing."""
    choice = int(rng.integers(4))
    if choice == 0:
        return None
    if choice == 1:
        img, alpha, m = _layer(1, 1, 70 * ppm, 0)
        alpha = Image.new("L", img.size, 0)
        _hand(img, alpha, rng, m - 33 * ppm, m, 60 * ppm, 1)  # a hand alone, its palm centred
        return Layer(img, alpha, [])
    w, h = (140 * ppm, 190 * ppm) if choice == 2 else (86 * ppm, 54 * ppm)
    paper = int(rng.integers(150, 250))
    img, alpha, m = _layer(w, h, 10 * ppm, paper)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 70))
    y = m + 8 * ppm
    while y < m + h - 8 * ppm:
        _text(draw, (m + 6 * ppm, y), _sentence(rng, int(rng.integers(3, 9))), 3.2 * ppm, ink)
        y += 5.5 * ppm
    if choice == 3:  # a card and its chip
        draw.rectangle(
            [m + 8 * ppm, m + 15 * ppm, m + 20 * ppm, m + 24 * ppm],
            fill=int(rng.integers(120, 200)),
        )
    return Layer(img, alpha, [], bend=float(rng.uniform(-0.3, 0.3)))


