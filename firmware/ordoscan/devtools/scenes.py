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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from ordoscan.classifier import Kind

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

_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_GS = "\x1d"
_US = "\x1f"
_SS = 2  # supersampling factor: scenes are drawn at twice the size, then box-filtered down


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


# ---------------------------------------------------------------------------
# Payloads (all synthetic)

_FIRST = (
    "JEAN",
    "MARIE",
    "LUC",
    "ANNE",
    "PAUL",
    "CLAIRE",
    "HUGO",
    "LEA",
    "LOUIS",
    "EMMA",
    "YVES",
    "NINA",
)
_LAST = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFEBVRE",
    "MICHEL",
    "GARCIA",
    "FAURE",
    "ROUSSEL",
)
_TOWNS = ("PARIS", "LYON", "BREST", "NANTES", "RENNES", "LILLE", "NICE", "DIJON", "TOURS", "METZ")


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _chars(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=n))


def make_epu(rng: np.random.Generator) -> str:
    """An ePrescription identifier of the ANS example shape: "01" then 16 of A-Z0-9."""
    return "01" + _chars(rng, _UPPER_DIGITS, 16)


def gs1_check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit of a digit string (weights 3,1,3,… from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def make_gtin(rng: np.random.Generator) -> str:
    """A GTIN-14 holding a French CIP13 ("03400" + 8 digits + check digit)."""
    body = "03400" + _chars(rng, "0123456789", 8)
    return body + gs1_check_digit(body)


def make_gs1(rng: np.random.Generator) -> str:
    """A medicine-pack GS1 element string, as decoded: AIs 01, 17, 10, 21, GS after the lot."""
    yy, mm, dd = int(rng.integers(25, 32)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    expiry = f"{yy:02d}{mm:02d}{dd:02d}"
    lot = _chars(rng, _UPPER_DIGITS, int(rng.integers(4, 9)))
    serial = _chars(rng, _UPPER_DIGITS, int(rng.integers(8, 14)))
    return f"01{make_gtin(rng)}17{expiry}10{lot}{_GS}21{serial}"


def make_ins(rng: np.random.Generator) -> str:
    """A synthetic INS DataMatrix payload (starts "IS01"; fields split by GS)."""
    nir = str(int(rng.integers(1, 3))) + _chars(rng, "0123456789", 12)
    key = f"{97 - int(nir) % 97:02d}"
    day, month = int(rng.integers(1, 29)), int(rng.integers(1, 13))
    year = int(rng.integers(1930, 2024))
    birth = f"{day:02d}{month:02d}{year}"
    return (
        f"IS01S1{nir}{key}{_GS}S21.2.250.1.213.1.4.8{_GS}S3{_pick(rng, _FIRST)}{_GS}"
        f"S4{_pick(rng, _LAST)}{_GS}S5{'MF'[int(rng.integers(2))]}{_GS}S6{birth}"
    )


def make_2ddoc(rng: np.random.Generator) -> str:
    """A synthetic 2D-Doc (version 04) header, message and base-32 signature."""
    ca = "FR0" + str(int(rng.integers(0, 10)))
    cert = _chars(rng, _UPPER_DIGITS, 4)
    dates = _chars(rng, "0123456789ABCDEF", 8)
    header = f"DC04{ca}{cert}{dates}0{int(rng.integers(0, 10))}01FR"
    message = (
        f"10{_pick(rng, _FIRST)} {_pick(rng, _LAST)}{_GS}22{int(rng.integers(1, 200))} RUE DU PORT"
        f"{_GS}24{int(rng.integers(10000, 96000))}{_GS}25{_pick(rng, _TOWNS)}"
    )
    return header + message + _US + _chars(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 103)


def make_url(rng: np.random.Generator) -> str:
    """A web address as printed on flyers."""
    host = _pick(
        rng,
        ("pharmacie-du-port.fr", "sante.gouv.fr", "ameli.fr", "exemple.org", "vaccination-info.fr"),
    )
    path = _chars(rng, "abcdefghijklmnopqrstuvwxyz0123456789", int(rng.integers(4, 12)))
    return f"https://www.{host}/{path}"


# ---------------------------------------------------------------------------
# Codes and text


def _matrix(payload: str, fmt: str, gs1: bool = False) -> npt.NDArray[np.bool_]:
    """The module matrix of a code (True = dark), made with zxing-cpp's writer."""
    if fmt == "qr":
        bc = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.QRCode, ecLevel="M")
    elif gs1:
        # forceSquare: left alone, the writer picks rectangular (DMRE) sizes, read as "]d8"
        bc = zxingcpp.create_barcode(
            _gs1_brackets(payload), zxingcpp.BarcodeFormat.DataMatrix, gs1=True, forceSquare=True
        )
    else:
        bc = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.DataMatrix, forceSquare=True)
    img = np.asarray(zxingcpp.write_barcode_to_image(bc, scale=1, add_quiet_zones=False))
    return np.asarray(img < 128)


def _gs1_brackets(element_string: str) -> str:
    """Turn a decoded element string of AIs 01/17/10/21 into the writer's "[01]…" input."""
    out, rest = [], element_string
    while rest:
        ai = rest[:2]
        if ai == "01":
            value, rest = rest[2:16], rest[16:]
        elif ai == "17":
            value, rest = rest[2:8], rest[8:]
        else:
            value, _, rest = rest[2:].partition(_GS)
        out.append(f"[{ai}]{value}")
    return "".join(out)


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
    return " ".join(_pick(rng, _WORDS) for _ in range(n))


# ---------------------------------------------------------------------------
# Objects: drawn flat, in their own pixels, with a transparency mask


@dataclass
class _Layer:
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


def _ordonnance(rng: np.random.Generator, ppm: float, qr_mm: float) -> _Layer:
    """A printed A5 ordonnance numérique: header, QR code + EPU, often an INS DataMatrix."""
    w, h = 148 * ppm, 210 * ppm
    paper = int(rng.integers(225, 256))
    img, alpha, m = _layer(w, h, 60 * ppm, paper)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 50))
    line = 4.2 * ppm
    x0, y0 = m + 10 * ppm, m + 10 * ppm
    doctor = f"Dr {_pick(rng, _FIRST).title()} {_pick(rng, _LAST)}"
    for i, t in enumerate(
        (
            doctor,
            "Medecine generale",
            f"RPPS {_chars(rng, '0123456789', 11)}",
            f"{int(rng.integers(1, 90))} rue {_pick(rng, _LAST).title()}",
            f"{int(rng.integers(10000, 96000))} {_pick(rng, _TOWNS).title()}",
        )
    ):
        _text(draw, (x0, y0 + i * line), t, (3.6 if i == 0 else 3.0) * ppm, ink)
    epu = make_epu(rng)
    qr = _matrix(epu, "qr")
    qx, qy = m + w - 10 * ppm - qr_mm * ppm, m + 10 * ppm
    codes: list[tuple[Kind, str, Box]] = [
        (Kind.ORDONNANCE, epu, _paste_code(img, qr, qx, qy, qr_mm * ppm, ink, paper, 4))
    ]
    _text(draw, (qx - 2 * ppm, qy + qr_mm * ppm + 2.5 * ppm), epu, 2.6 * ppm, ink)
    if rng.random() < 0.7:
        ins = make_ins(rng)
        dm_mm = qr_mm * float(rng.uniform(0.8, 1.0))
        dx = qx - dm_mm * ppm - 8 * ppm
        box = _paste_code(img, _matrix(ins, "dm"), dx, qy + 1 * ppm, dm_mm * ppm, ink, paper, 2)
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
        f"{_pick(rng, ('M.', 'Mme'))} {_pick(rng, _FIRST).title()} {_pick(rng, _LAST)}",
        3.2 * ppm,
        ink,
    )
    y += 3 * line
    for _ in range(int(rng.integers(2, 5))):
        _text(draw, (x0, y), _pick(rng, _DRUGS), 3.2 * ppm, ink)
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
    return _Layer(img, alpha, codes, bend=float(rng.uniform(-0.6, 0.6)))


def _phone(rng: np.random.Generator, ppm: float, qr_mm: float, dark: bool) -> _Layer:
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
        (Kind.ORDONNANCE, epu, _paste_code(img, _matrix(epu, "qr"), qx, qy, qr_mm * ppm, fg, bg, 4))
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
    return _Layer(img, alpha, codes)


def _medicine_pack(rng: np.random.Generator, ppm: float, dm_mm: float) -> _Layer:
    """The face of a medicine box with its GS1 DataMatrix, lot and expiry printed beside it."""
    w, h = float(rng.uniform(80, 110)) * ppm, float(rng.uniform(40, 60)) * ppm
    card = int(rng.integers(200, 245))
    img, alpha, m = _layer(w, h, 40 * ppm, card)
    draw = ImageDraw.Draw(img)
    band = int(rng.integers(60, 190))
    draw.rectangle([m, m, m + w, m + 12 * ppm], fill=band)
    ink = int(rng.integers(10, 60))
    _text(draw, (m + 4 * ppm, m + 2 * ppm), _pick(rng, _DRUGS), 6 * ppm, 255 if band < 130 else ink)
    _text(
        draw, (m + 4 * ppm, m + 15 * ppm), f"{int(rng.integers(8, 60))} comprimes", 3.5 * ppm, ink
    )
    gs1 = make_gs1(rng)
    dx, dy = m + 4 * ppm, m + h - dm_mm * ppm - 5 * ppm
    box = _paste_code(img, _matrix(gs1, "dm", gs1=True), dx, dy, dm_mm * ppm, ink, card, 2)
    lot = gs1.split(_GS)[0][26:]
    for i, t in enumerate((f"GTIN {gs1[2:16]}", f"EXP {gs1[20:22]}/20{gs1[18:20]}", f"LOT {lot}")):
        _text(draw, (dx + dm_mm * ppm + 5 * ppm, dy + i * 4 * ppm), t, 3 * ppm, ink)
    return _Layer(img, alpha, [(Kind.MEDICINE_PACK, gs1, box)], bend=float(rng.uniform(-0.1, 0.1)))


def _document(rng: np.random.Generator, ppm: float, code_mm: float, url: bool) -> _Layer:
    """A 2D-Doc (invoice, certificate) or a flyer with a URL QR code."""
    w, h = (105 * ppm, 148 * ppm) if url else (148 * ppm, 180 * ppm)
    paper = int(rng.integers(215, 256))
    img, alpha, m = _layer(w, h, 50 * ppm, paper)
    draw = ImageDraw.Draw(img)
    ink = int(rng.integers(0, 60))
    x0 = m + 8 * ppm
    if url:
        payload = make_url(rng)
        kind, matrix = Kind.URL, _matrix(payload, "qr")
        _text(
            draw,
            (x0, m + 8 * ppm),
            _pick(rng, ("Vaccination", "Horaires", "Conseils", "Rendez-vous")),
            9 * ppm,
            ink,
        )
        cx, cy = m + (w - code_mm * ppm) / 2, m + 30 * ppm
    else:
        payload = make_2ddoc(rng)
        kind, matrix = Kind.DOC_2D, _matrix(payload, "dm")
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
    return _Layer(img, alpha, [(kind, payload, box)], bend=float(rng.uniform(-0.4, 0.4)))


def _blank_object(rng: np.random.Generator, ppm: float) -> _Layer | None:
    """Something without a code: a hand, a printed leaflet, a card, or nothing."""
    choice = int(rng.integers(4))
    if choice == 0:
        return None
    if choice == 1:
        img, alpha, m = _layer(1, 1, 70 * ppm, 0)
        alpha = Image.new("L", img.size, 0)
        _hand(img, alpha, rng, m - 33 * ppm, m, 60 * ppm, 1)  # a hand alone, its palm centred
        return _Layer(img, alpha, [])
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
    return _Layer(img, alpha, [], bend=float(rng.uniform(-0.3, 0.3)))


# ---------------------------------------------------------------------------
# Camera: pose, optics, sensor


@dataclass(frozen=True)
class _Conditions:
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


def _conditions(rng: np.random.Generator, difficulty: str, screen: bool) -> _Conditions:
    u = rng.uniform
    if difficulty == "easy":
        module = float(u(3.5, 6.5))
        c = _Conditions(
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
        c = _Conditions(
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


def _rotation(roll: float, tilt_x: float, tilt_y: float) -> Floats:
    a, b, c = (math.radians(v) for v in (roll, tilt_x, tilt_y))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    ry = np.array([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
    rot: Floats = rz @ rx @ ry
    return rot


class _Pose:
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


def _warp(layer: _Layer, pose: _Pose, canvas: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
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


def _counter(rng: np.random.Generator, size: tuple[int, int]) -> Pixels:
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


def _motion_blur(img: Pixels, length: float, angle: float) -> Pixels:
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


def _grow(box: Box, share: float) -> Box:
    dx, dy = (box[2] - box[0]) * share, (box[3] - box[1]) * share
    return (box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy)


def _code_corners(layer: _Layer, pose: _Pose, box: Box) -> tuple[Floats, Floats]:
    u = np.array([box[0], box[2], box[2], box[0]])
    v = np.array([box[1], box[1], box[3], box[3]])
    return pose.forward(u, v)


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
    cond = _conditions(rng, difficulty, screen)
    canvas = (width * _SS, height * _SS)
    scale = min(width / 1280, height / 720)  # module sizes are given for a 1280x720 frame
    # object px per module: the code centre sits at depth = focal (1 object px = 1 canvas px)
    module = cond.module_px * scale * _SS

    layer: _Layer | None
    if kind == "ordonnance":
        qr_mm = float(rng.uniform(18, 26))
        layer = _ordonnance(rng, module / (qr_mm / 21), qr_mm)
    elif screen:
        qr_mm = float(rng.uniform(30, 45))
        layer = _phone(rng, module / (qr_mm / 21), qr_mm, dark=kind == "phone_dark")
    elif kind == "medicine_pack":
        dm_mm = float(rng.uniform(10, 14))
        layer = _medicine_pack(rng, module / (dm_mm / 22), dm_mm)
    elif kind in ("2d_doc", "url"):
        mm = float(rng.uniform(18, 26))
        layer = _document(
            rng, module / (mm / (40 if kind == "2d_doc" else 29)), mm, url=kind == "url"
        )
    else:
        layer = _blank_object(rng, float(rng.uniform(2, 6)) * scale * _SS)

    radiance = _counter(rng, size)
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
        rot = _rotation(cond.roll, cond.tilt_x, cond.tilt_y)
        iw = float(layer.image.size[0])
        pose = _Pose(rot, focal, pivot, layer.bend, iw, (0.0, 0.0))
        # place the codes with room for their quiet zones inside the frame, near the middle
        xs: list[float] = []
        ys: list[float] = []
        for _, _, box in layer.codes:
            cx, cy = _code_corners(layer, pose, _grow(box, 0.15))
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
        pose = _Pose(rot, focal, pivot, layer.bend, iw, centre)
        obj, alpha = _warp(layer, pose, canvas)
        # box-filtering is linear: composite premultiplied, at the output size
        premultiplied = ImageChops.multiply(obj, alpha).reduce(_SS)
        a = np.asarray(alpha.reduce(_SS), dtype=np.float32) / 255.0
        radiance = radiance * (1 - a) + np.asarray(premultiplied, dtype=np.float32)
        for code_kind, payload, box in layer.codes:
            cx, cy = _code_corners(layer, pose, box)
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
    out = _motion_blur(np.asarray(img, dtype=np.float32), cond.motion * scale, cond.motion_angle)
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


def scene_set(
    seed: int, n: int, difficulty: Difficulty = "hard", *, size: tuple[int, int] = (1280, 720)
) -> Iterator[Scene]:
    """`n` mixed scenes, reproducible from `seed` (rendered lazily, one at a time)."""
    for i in range(n):
        yield render(scene_kind(seed, i), seed * 100_003 + i, size=size, difficulty=difficulty)
