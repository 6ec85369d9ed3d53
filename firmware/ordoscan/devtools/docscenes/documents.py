"""The printed things a patient holds up, laid out as real documents and rasterised.

Each document is a one-page PDF drawn with reportlab in millimetres, with real
TrueType fonts (DejaVu and Liberation, from Debian's font packages), and
rasterised by PDFium (pypdfium2) at the resolution the camera needs. QR codes
are made by segno and drawn as vector squares into the PDF; DataMatrix symbols
(INS, GS1 packs, 2D-Doc) come from zxing-cpp's writer, since segno makes QR only.

Every code placed on a page is returned with its payload, its kind and its
square in page millimetres (origin top-left, y down), which is the truth the
camera model carries into image coordinates. All payloads are synthetic.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pypdfium2 as pdfium  # type: ignore[import-untyped]
import segno
import zxingcpp
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas

from ordoscan.classifier import Kind

Rgb = npt.NDArray[np.uint8]

# Debian's font packages (fonts-dejavu-core, fonts-liberation2); ./dev installs both.
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/truetype/liberation2"),
    Path("/usr/share/fonts/truetype/liberation"),
)
_FONT_FILES = {
    "DejaVuSans": "DejaVuSans.ttf",
    "DejaVuSans-Bold": "DejaVuSans-Bold.ttf",
    "DejaVuSerif": "DejaVuSerif.ttf",
    "DejaVuSerif-Bold": "DejaVuSerif-Bold.ttf",
    "DejaVuSansCondensed": "DejaVuSansCondensed.ttf",
    "LiberationSans": "LiberationSans-Regular.ttf",
    "LiberationSans-Bold": "LiberationSans-Bold.ttf",
    "LiberationSans-Italic": "LiberationSans-Italic.ttf",
    "LiberationSerif": "LiberationSerif-Regular.ttf",
    "LiberationSerif-Italic": "LiberationSerif-Italic.ttf",
    "LiberationMono": "LiberationMono-Regular.ttf",
}


class FontsMissing(RuntimeError):
    """The TrueType fonts the documents are set in are not installed."""


@lru_cache(maxsize=1)
def fonts() -> dict[str, str]:
    """Register the installed fonts with reportlab; role name -> registered name."""
    found: dict[str, str] = {}
    for name, file in _FONT_FILES.items():
        for d in _FONT_DIRS:
            if (d / file).is_file():
                pdfmetrics.registerFont(TTFont(name, str(d / file)))
                found[name] = name
                break
    if "DejaVuSans" not in found or "DejaVuSerif" not in found:
        raise FontsMissing(
            "DejaVu fonts not found in /usr/share/fonts/truetype/dejavu:"
            " install fonts-dejavu-core (./dev setup does)"
        )
    # Liberation is optional on a desk: its roles fall back to DejaVu faces
    fallback = {
        "LiberationSans": "DejaVuSans",
        "LiberationSans-Bold": "DejaVuSans-Bold",
        "LiberationSans-Italic": "DejaVuSans",
        "LiberationSerif": "DejaVuSerif",
        "LiberationSerif-Italic": "DejaVuSerif",
        "LiberationMono": "DejaVuSans",
        "DejaVuSansCondensed": "DejaVuSans",
    }
    for role, alt in fallback.items():
        found.setdefault(role, found.get(alt, "DejaVuSans"))
    return found


@dataclass(frozen=True)
class PlacedCode:
    """A code printed on a page: its square in page millimetres (x0, y0, x1, y1), y down."""

    kind: Kind
    payload: str
    fmt: str  # "QRCode" or "DataMatrix"
    box_mm: tuple[float, float, float, float]
    modules: int  # modules across, quiet zone excluded


@dataclass(frozen=True)
class Document:
    """A one-page PDF and what is printed on it."""

    kind: str  # ordonnance, phone, medicine_pack, 2d_doc, url, blank
    size_mm: tuple[float, float]
    pdf: bytes
    codes: tuple[PlacedCode, ...]
    paper_rgb: tuple[float, float, float]  # reflectance of the bare page (0..1)
    emissive: bool = False  # a screen: light comes from it, it does not reflect the room's

    def raster(self, px_per_mm: float) -> Rgb:
        """The page as an RGB image at `px_per_mm` (PDFium, anti-aliased)."""
        pdf = pdfium.PdfDocument(self.pdf)
        try:
            page = pdf[0]
            bitmap = page.render(scale=px_per_mm * 25.4 / 72.0)
            img = np.array(bitmap.to_numpy()[:, :, :3], dtype=np.uint8, copy=True)
        finally:
            pdf.close()
        # PDFium gives BGR(x) by default
        return np.ascontiguousarray(img[:, :, ::-1])


# ---------------------------------------------------------------------------
# Payloads (synthetic, own shapes and name lists)

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_GIVEN = ("Camille", "Sophie", "Julien", "Nathalie", "Thierry", "Isabelle", "Mathieu",
          "Aurélie", "Didier", "Sandrine", "Olivier", "Hélène", "Benoît", "Céline")
_FAMILY = ("Lambert", "Fontaine", "Chevalier", "Rousseau", "Girard", "Bonnet", "Mercier",
           "Blanchard", "Guérin", "Boyer", "Garnier", "Lemaire", "Perrin", "Marchand")
_CITIES = (("Quimper", "29000"), ("Angers", "49000"), ("Poitiers", "86000"),
           ("Valence", "26000"), ("Colmar", "68000"), ("Pau", "64000"), ("Vannes", "56000"))
_STREETS = ("rue Victor Hugo", "avenue de la Gare", "place du Marché", "boulevard Pasteur",
            "rue des Écoles", "chemin des Vignes", "allée des Tilleuls")
_DRUGS = (
    ("PARACÉTAMOL 1 g", "comprimé", "1 comprimé 3 fois par jour si douleur, pendant 5 jours"),
    ("AMOXICILLINE 1 g", "comprimé dispersible", "1 comprimé matin et soir pendant 6 jours"),
    ("IBUPROFÈNE 400 mg", "comprimé pelliculé", "1 comprimé toutes les 8 h au cours d'un repas"),
    ("OMÉPRAZOLE 20 mg", "gélule gastro-résistante", "1 gélule le matin à jeun, 28 jours"),
    ("LÉVOTHYROXINE 75 µg", "comprimé sécable", "1 comprimé le matin, traitement de 3 mois"),
    ("METFORMINE 850 mg", "comprimé", "1 comprimé matin, midi et soir pendant les repas"),
    ("ATORVASTATINE 20 mg", "comprimé", "1 comprimé le soir, 3 mois, à renouveler 2 fois"),
    ("SALBUTAMOL 100 µg/dose", "suspension pour inhalation", "2 bouffées si gêne respiratoire"),
    ("CETIRIZINE 10 mg", "comprimé", "1 comprimé le soir pendant 15 jours"),
    ("VITAMINE D3 100 000 UI", "ampoule buvable", "1 ampoule tous les 3 mois"),
    ("KINÉSITHÉRAPIE", "séances", "15 séances de rééducation du genou droit, 2 à 3 par semaine"),
    ("BANDES DE CRÊPE 10 cm", "dispositif", "2 bandes, renouveler 1 fois"),
)
_SPECIALTIES = ("Médecine générale", "Pédiatrie", "Rhumatologie", "Cardiologie",
                "Dermatologie", "Médecine générale – Ostéopathie")


def _pick(rng: np.random.Generator, seq: tuple[str, ...]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _alnum(rng: np.random.Generator, n: int) -> str:
    return "".join(_ALNUM[int(i)] for i in rng.integers(0, 36, size=n))


def epu(rng: np.random.Generator) -> str:
    """An ePrescription identifier as on ANS examples: 18 of 0-9A-Z, here starting "01"."""
    return "01" + _alnum(rng, 16)


def _ins_payload(rng: np.random.Generator) -> str:
    sex = int(rng.integers(1, 3))
    nir13 = f"{sex}{int(rng.integers(40, 100)):02d}{int(rng.integers(1, 13)):02d}" + "".join(
        str(int(d)) for d in rng.integers(0, 10, size=8)
    )
    key = 97 - int(nir13) % 97
    return (f"IS01S1{nir13}{key:02d}\x1dS21.2.250.1.213.1.4.8\x1dS3{_pick(rng, _GIVEN).upper()}"
            f"\x1dS4{_pick(rng, _FAMILY).upper()}\x1dS5{'MF'[sex - 1]}"
            f"\x1dS6{int(rng.integers(1, 29)):02d}{int(rng.integers(1, 13)):02d}19"
            f"{int(rng.integers(40, 100)):02d}")


def _gtin(rng: np.random.Generator) -> str:
    body = "03400" + "".join(str(int(d)) for d in rng.integers(0, 10, size=8))
    s = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str((10 - s % 10) % 10)


def _gs1_pack(rng: np.random.Generator) -> tuple[str, str]:
    """(element string as decoded with GS, bracketed form for the writer)."""
    gtin = _gtin(rng)
    exp = f"{int(rng.integers(26, 31)):02d}{int(rng.integers(1, 13)):02d}00"
    lot, serial = _alnum(rng, int(rng.integers(5, 9))), _alnum(rng, int(rng.integers(10, 13)))
    return (f"01{gtin}17{exp}10{lot}\x1d21{serial}",
            f"(01){gtin}(17){exp}(10){lot}(21){serial}")


def _two_d_doc(rng: np.random.Generator) -> str:
    head = f"DC04FR05{_alnum(rng, 4)}{int(rng.integers(0x1000, 0xFFFF)):04X}" \
           f"{int(rng.integers(0x1000, 0xFFFF)):04X}0101FR"
    body = (f"10{_pick(rng, _GIVEN).upper()} {_pick(rng, _FAMILY).upper()}\x1d"
            f"21{int(rng.integers(1, 90))} {_pick(rng, _STREETS).upper()}\x1d"
            f"24{_CITIES[int(rng.integers(len(_CITIES)))][1]}\x1d")
    sig = "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[int(i)] for i in rng.integers(0, 32, 103))
    return head + body + "\x1f" + sig


def _url(rng: np.random.Generator) -> str:
    host = _pick(rng, ("www.pharmacie-des-halles.fr", "rdv.centre-vaccination.fr",
                       "www.mutuelle.example",
                       "www.mesdemarches.example", "qr.laboratoire.example"))
    return f"https://{host}/{_alnum(rng, int(rng.integers(5, 14))).lower()}"


# ---------------------------------------------------------------------------
# Drawing


def _qr_matrix(payload: str, ec: str) -> npt.NDArray[np.bool_]:
    """segno's QR symbol, quiet zone excluded (True = dark)."""
    q = segno.make_qr(payload, error=ec, boost_error=False)
    return np.array([[bool(b) for b in row] for row in q.matrix], dtype=bool)


def _dm_matrix(payload: str, gs1_brackets: str | None = None) -> npt.NDArray[np.bool_]:
    if gs1_brackets is not None:
        bc = zxingcpp.create_barcode(gs1_brackets, zxingcpp.BarcodeFormat.DataMatrix, gs1=True,
                                     forceSquare=True)
    else:
        bc = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.DataMatrix,
                                     forceSquare=True)
    img = np.asarray(bc.to_image(scale=1, add_quiet_zones=False))
    return np.asarray(img < 128)


def _draw_matrix(c: pdfcanvas.Canvas, m: npt.NDArray[np.bool_], x_mm: float, top_mm: float,
                 size_mm: float, page_h: float, rgb: tuple[float, float, float] = (0, 0, 0)
                 ) -> None:
    """Dark modules as filled runs, one rectangle per horizontal run (PDF y is up)."""
    n = m.shape[0]
    cell = size_mm / n
    c.setFillColorRGB(*rgb)
    for r in range(n):
        row = m[r]
        col = 0
        while col < n:
            if row[col]:
                start = col
                while col < n and row[col]:
                    col += 1
                y = page_h - (top_mm + (r + 1) * cell)
                # a hair of overlap so PDFium leaves no seam between rows
                c.rect((x_mm + start * cell) * mm, y * mm, (col - start) * cell * mm,
                       (cell + 0.01) * mm, stroke=0, fill=1)
            else:
                col += 1


class _Page:
    """A reportlab canvas in millimetres, y measured down from the top."""

    def __init__(self, w_mm: float, h_mm: float, paper: tuple[float, float, float]) -> None:
        self.buf = io.BytesIO()
        self.w, self.h = w_mm, h_mm
        self.c = pdfcanvas.Canvas(self.buf, pagesize=(w_mm * mm, h_mm * mm))
        self.c.setFillColorRGB(*paper)
        self.c.rect(0, 0, w_mm * mm, h_mm * mm, stroke=0, fill=1)
        self.codes: list[PlacedCode] = []
        self.f = fonts()

    def text(self, x: float, y: float, s: str, font: str, pt: float,
             rgb: tuple[float, float, float] = (0.05, 0.05, 0.05), right: bool = False) -> float:
        """Draw `s` with its baseline at y mm; gives its width in mm."""
        name = self.f[font]
        self.c.setFont(name, pt)
        self.c.setFillColorRGB(*rgb)
        width = pdfmetrics.stringWidth(s, name, pt) / mm
        if right:
            x -= width
        self.c.drawString(x * mm, (self.h - y) * mm, s)
        return float(width)

    def line(self, x0: float, y0: float, x1: float, y1: float, w: float = 0.2,
             rgb: tuple[float, float, float] = (0.2, 0.2, 0.2)) -> None:
        self.c.setStrokeColorRGB(*rgb)
        self.c.setLineWidth(w * mm)
        self.c.line(x0 * mm, (self.h - y0) * mm, x1 * mm, (self.h - y1) * mm)

    def box(self, x: float, y: float, w: float, h: float, rgb: tuple[float, float, float],
            radius: float = 0.0) -> None:
        self.c.setFillColorRGB(*rgb)
        if radius:
            self.c.roundRect(x * mm, (self.h - y - h) * mm, w * mm, h * mm, radius * mm,
                             stroke=0, fill=1)
        else:
            self.c.rect(x * mm, (self.h - y - h) * mm, w * mm, h * mm, stroke=0, fill=1)

    def code(self, kind: Kind, payload: str, m: npt.NDArray[np.bool_], fmt: str, x: float,
             y: float, size: float, rgb: tuple[float, float, float] = (0, 0, 0)) -> None:
        _draw_matrix(self.c, m, x, y, size, self.h, rgb)
        self.codes.append(PlacedCode(kind, payload, fmt, (x, y, x + size, y + size), m.shape[0]))

    def finish(self, kind: str, paper: tuple[float, float, float], emissive: bool = False
               ) -> Document:
        self.c.showPage()
        self.c.save()
        return Document(kind, (self.w, self.h), self.buf.getvalue(), tuple(self.codes), paper,
                        emissive)


def _wrap(words: list[str], n: int) -> list[str]:
    return [" ".join(words[i:i + n]) for i in range(0, len(words), n)]


_FILLER = ("selon", "avis", "médical", "en", "cas", "de", "fièvre", "persistante", "consulter",
           "ne", "pas", "dépasser", "la", "dose", "prescrite", "renouvellement", "non",
           "autorisé", "substituable", "traitement", "à", "poursuivre", "jusqu'au", "prochain",
           "contrôle", "biologique", "prévu", "dans", "trois", "mois")


def _filler(rng: np.random.Generator, n: int) -> list[str]:
    return [_FILLER[int(i)] for i in rng.integers(0, len(_FILLER), size=n)]


def ordonnance(rng: np.random.Generator, qr_mm: float, placement: str) -> Document:
    """An A5 ordonnance numérique: prescriber header, patient, medicines, QR + EPU, often INS.

    placement: "top" (QR at the top right, as ANS examples), "inline" (a small QR between
    lines of text, in the body) or "foot" (QR in the footer among the legal lines).
    """
    tint = float(rng.uniform(0.0, 0.06))
    paper = (0.97 - tint * 0.3, 0.97 - tint * 0.5, 0.95 - tint)
    p = _Page(148.0, 210.0, paper)
    serif = bool(rng.random() < 0.5)
    body = "LiberationSerif" if serif else "LiberationSans"
    bold = "DejaVuSerif-Bold" if serif else "LiberationSans-Bold"
    ink = float(rng.uniform(0.0, 0.15))
    dark = (ink, ink, ink + 0.03)
    doctor = f"Dr {_pick(rng, _GIVEN)} {_pick(rng, _FAMILY).upper()}"
    city, cp = _CITIES[int(rng.integers(len(_CITIES)))]
    p.text(12, 16, doctor, bold, 12, dark)
    p.text(12, 21.5, _pick(rng, _SPECIALTIES), body, 8.5, dark)
    p.text(12, 26, f"{int(rng.integers(1, 90))} {_pick(rng, _STREETS)}, {cp} {city}", body, 8,
           dark)
    p.text(12, 30.5, f"Tél. 0{int(rng.integers(1, 6))} {int(rng.integers(10, 99))} "
           f"{int(rng.integers(10, 99))} {int(rng.integers(10, 99))} {int(rng.integers(10, 99))}",
           body, 8, dark)
    p.text(12, 35, f"RPPS {int(rng.integers(10**10, 10**11 - 1))}   AM "
           f"{int(rng.integers(10**8, 10**9 - 1))}", "LiberationMono", 7.5, dark)
    p.line(12, 39, 136, 39, 0.25, dark)
    epu_id = epu(rng)
    qr = _qr_matrix(epu_id, "M")
    has_ins = bool(rng.random() < 0.65)
    y = 46.0
    if placement == "top":
        x = 136 - qr_mm
        p.code(Kind.ORDONNANCE, epu_id, qr, "QRCode", x, 42, qr_mm, dark)
        p.text(x + qr_mm / 2 - 14, 42 + qr_mm + 4, epu_id, "LiberationMono", 6.5, dark)
        y = max(y, 42 + qr_mm + 9) if qr_mm > 24 else y
    p.text(12, y, f"Le {int(rng.integers(1, 29))}/{int(rng.integers(1, 13)):02d}/2026", body, 9,
           dark)
    patient = f"{_pick(rng, _GIVEN)} {_pick(rng, _FAMILY).upper()}"
    p.text(12, y + 7, f"Patient(e) : {patient}", bold, 10, dark)
    p.text(12, y + 12, f"Né(e) le {int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/"
           f"19{int(rng.integers(40, 100))}   Poids : {int(rng.integers(45, 110))} kg",
           body, 8.5, dark)
    if has_ins:
        ins = _ins_payload(rng)
        dm = _dm_matrix(ins)
        dm_mm = float(rng.uniform(9, 14))
        ins_x = 12.0 + 80 if placement != "top" else 12 + 72
        if placement == "top" and ins_x + dm_mm > 136 - qr_mm - 3:
            ins_x = 136 - qr_mm - 3 - dm_mm
        p.code(Kind.INS, ins, dm, "DataMatrix", ins_x, y + 1, dm_mm, dark)
        p.text(ins_x, y + dm_mm + 4, "INS", body, 6, dark)
        y += max(0.0, dm_mm - 9)
    y += 22
    meds = [_DRUGS[int(i)] for i in rng.choice(len(_DRUGS), size=int(rng.integers(2, 6)),
                                               replace=False)]
    inline_at = int(rng.integers(1, len(meds) + 1)) if placement == "inline" else -1
    for i, (name, form, how) in enumerate(meds):
        if i == inline_at:
            # a small code set between two prescription lines, text on both sides
            p.code(Kind.ORDONNANCE, epu_id, qr, "QRCode", 12, y - 3, qr_mm, dark)
            tx = 12 + qr_mm + 4
            p.text(tx, y + 1, "Ordonnance numérique", bold, 8, dark)
            p.text(tx, y + 5.5, epu_id, "LiberationMono", 7, dark)
            for k, ln in enumerate(_wrap(_filler(rng, 16), 8)[:2]):
                p.text(tx, y + 10 + 4.2 * k, ln, body, 7.5, dark)
            y += max(qr_mm, 16) + 4
        p.text(12, y, f"{name}, {form}", bold, 10, dark)
        p.text(16, y + 5, how, body, 9, dark)
        y += 13
    if placement == "inline" and inline_at >= len(meds):
        p.code(Kind.ORDONNANCE, epu_id, qr, "QRCode", 12, y - 3, qr_mm, dark)
        p.text(12 + qr_mm + 4, y + 2, epu_id, "LiberationMono", 7, dark)
        y += qr_mm + 3
    for ln in _wrap(_filler(rng, int(rng.integers(10, 30))), 10):
        if y > 170:
            break
        p.text(12, y, ln, body, 8, dark)
        y += 4.5
    p.text(100, min(y + 8, 176), "Signature", "LiberationSerif-Italic", 9, dark)
    if placement == "foot":
        fx = float(rng.uniform(12, 136 - qr_mm - 40))
        fy = 205 - qr_mm - 3
        p.code(Kind.ORDONNANCE, epu_id, qr, "QRCode", fx, fy, qr_mm, dark)
        p.text(fx + qr_mm + 3, fy + 4, "Ordonnance numérique", bold, 7, dark)
        p.text(fx + qr_mm + 3, fy + 8, epu_id, "LiberationMono", 6.5, dark)
        for k, ln in enumerate(_wrap(_filler(rng, 18), 6)[:3]):
            p.text(fx + qr_mm + 3, fy + 12 + 3.6 * k, ln, body, 6, dark)
    else:
        p.text(12, 200, "Ordonnance numérique – la pharmacie lit le QR code ou l'identifiant.",
               body, 6.5, dark)
        p.text(12, 204, "Document généré par un logiciel d'aide à la prescription certifié.", body,
               6.5, dark)
    return p.finish("ordonnance", paper)


def phone(rng: np.random.Generator, dark: bool) -> Document:
    """A phone screen (content only, 68 x 148 mm of pixels) showing an ordonnance's QR code."""
    w, h = 68.0, 148.0
    bg = (0.07, 0.07, 0.09) if dark else (0.98, 0.98, 0.99)
    fg = (0.92, 0.92, 0.93) if dark else (0.08, 0.08, 0.1)
    p = _Page(w, h, bg)
    p.box(0, 0, w, 9, (0.12, 0.2, 0.45) if not dark else (0.15, 0.17, 0.22))
    p.text(4, 6.3, "Mon espace santé", "DejaVuSans-Bold", 9, (1, 1, 1))
    p.text(4, 17, "Ordonnance du " + f"{int(rng.integers(1, 29))}/{int(rng.integers(1, 13))}",
           "DejaVuSans-Bold", 8.5, fg)
    p.text(4, 22, f"Dr {_pick(rng, _FAMILY).upper()}", "DejaVuSans", 7.5, fg)
    epu_id = epu(rng)
    qr = _qr_matrix(epu_id, str(rng.choice(["L", "M"])))
    size = float(rng.uniform(34, 52))
    x, y = (w - size) / 2, 30.0
    inverted = dark and rng.random() < 0.5
    if inverted:  # light modules on the dark background
        p.code(Kind.ORDONNANCE, epu_id, qr, "QRCode", x, y, size, (0.93, 0.93, 0.93))
    else:
        card = size * 0.12
        p.box(x - card, y - card, size + 2 * card, size + 2 * card, (1, 1, 1), 2)
        p.code(Kind.ORDONNANCE, epu_id, qr, "QRCode", x, y, size, (0, 0, 0))
    p.text(w / 2 - 17, y + size + 9, epu_id, "LiberationMono", 8, fg)
    for k, ln in enumerate(_wrap(_filler(rng, 20), 5)):
        p.text(4, y + size + 17 + 5 * k, ln, "DejaVuSans", 7, fg)
    return p.finish("phone_dark" if dark else "phone_light", bg, emissive=True)


def medicine_pack(rng: np.random.Generator) -> Document:
    """The face of a medicine box with its GS1 DataMatrix and printed codes."""
    w, h = float(rng.uniform(90, 130)), float(rng.uniform(45, 70))
    hue = rng.uniform(0.3, 0.95, size=3)
    paper = (0.96, 0.96, 0.95)
    p = _Page(w, h, paper)
    p.box(0, 0, w, h * 0.3, (float(hue[0]), float(hue[1]), float(hue[2])))
    name, form, _ = _DRUGS[int(rng.integers(0, 10))]
    p.text(4, h * 0.2, name, "LiberationSans-Bold", 11, (1, 1, 1))
    p.text(4, h * 0.42, f"{int(rng.integers(8, 31))} {form}s", "LiberationSans", 8)
    data, brackets = _gs1_pack(rng)
    dm = _dm_matrix(data, brackets)
    size = float(rng.uniform(10, 15))
    x, y = w - size - 6, h - size - 5
    p.code(Kind.MEDICINE_PACK, data, dm, "DataMatrix", x, y, size)
    p.text(4, h - 12, f"GTIN {data[2:16]}", "LiberationMono", 6.5)
    p.text(4, h - 8, f"EXP {data[18:20]}/{data[20:22]}  LOT {data[26:data.index(chr(29))]}",
           "LiberationMono", 6.5)
    return p.finish("medicine_pack", paper)


def document_2d(rng: np.random.Generator) -> Document:
    """The top of a bill or notice bearing a 2D-Doc DataMatrix."""
    paper = (0.97, 0.97, 0.97)
    p = _Page(148.0, 105.0, paper)
    p.text(10, 14, _pick(rng, ("Avis d'impôt 2026", "Facture d'électricité",
                               "Attestation de droits")), "DejaVuSans-Bold", 12)
    data = _two_d_doc(rng)
    size = float(rng.uniform(18, 26))
    p.code(Kind.DOC_2D, data, _dm_matrix(data), "DataMatrix", 148 - size - 10, 8, size)
    for k, ln in enumerate(_wrap(_filler(rng, 60), 9)):
        p.text(10, 28 + 5 * k, ln, "LiberationSans", 8.5)
    return p.finish("2d_doc", paper)


def flyer(rng: np.random.Generator) -> Document:
    """A pharmacy flyer with a web address QR code."""
    paper = (0.98, 0.97, 0.93)
    p = _Page(105.0, 148.0, paper)
    p.box(0, 0, 105, 30, (0.1, 0.5, 0.3))
    p.text(6, 18, "Campagne de vaccination", "LiberationSans-Bold", 13, (1, 1, 1))
    data = _url(rng)
    size = float(rng.uniform(20, 32))
    p.code(Kind.URL, data, _qr_matrix(data, "M"), "QRCode", (105 - size) / 2, 45, size)
    for k, ln in enumerate(_wrap(_filler(rng, 30), 7)):
        p.text(8, 45 + size + 10 + 5 * k, ln, "LiberationSans", 9)
    return p.finish("url", paper)


def text_page(rng: np.random.Generator) -> Document:
    """A page of print with no code at all (a paper ordonnance of old, a letter)."""
    paper = (0.96, 0.96, 0.94)
    p = _Page(148.0, 210.0, paper)
    p.text(12, 18, f"Dr {_pick(rng, _GIVEN)} {_pick(rng, _FAMILY).upper()}", "DejaVuSerif-Bold",
           12)
    y = 30.0
    pt = float(rng.uniform(7, 12))
    while y < 200:
        p.text(12, y, " ".join(_filler(rng, int(110 / pt))), "LiberationSerif", pt)
        y += pt * 0.55
    return p.finish("blank", paper)


def make(kind: str, rng: np.random.Generator, qr_mm: float = 20.0, placement: str = "top"
         ) -> Document:
    """The document of a scene kind."""
    if kind == "ordonnance":
        return ordonnance(rng, qr_mm, placement)
    if kind in ("phone_light", "phone_dark"):
        return phone(rng, dark=kind == "phone_dark")
    if kind == "medicine_pack":
        return medicine_pack(rng)
    if kind == "2d_doc":
        return document_2d(rng)
    if kind == "url":
        return flyer(rng)
    if kind == "blank":
        return text_page(rng)
    raise ValueError(f"unknown document kind {kind!r}")


def module_mm(doc: Document) -> float:
    """The module size of the first code of a document, in millimetres (0 if none)."""
    if not doc.codes:
        return 0.0
    c = doc.codes[0]
    return (c.box_mm[2] - c.box_mm[0]) / c.modules


