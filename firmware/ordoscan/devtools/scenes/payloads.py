"""gen1's payloads (all synthetic) and their code matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import zxingcpp

Difficulty = Literal["easy", "hard"]
Grey = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float64]  # geometry
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Pixels = npt.NDArray[np.float32]  # light, in grey levels

_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
GS = "\x1d"
_US = "\x1f"


# ---------------------------------------------------------------------------
# Payloads (all synthetic)

FIRST_NAMES = (
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
LAST_NAMES = (
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
TOWNS = ("PARIS", "LYON", "BREST", "NANTES", "RENNES", "LILLE", "NICE", "DIJON", "TOURS", "METZ")


def pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def chars(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join(alphabet[int(i)] for i in rng.integers(len(alphabet), size=n))


def make_epu(rng: np.random.Generator) -> str:
    """An ePrescription identifier of the ANS example shape: "01" then 16 of A-Z0-9."""
    return "01" + chars(rng, _UPPER_DIGITS, 16)


def gs1_check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit of a digit string (weights 3,1,3,… from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def make_gtin(rng: np.random.Generator) -> str:
    """A GTIN-14 holding a French CIP13 ("03400" + 8 digits + check digit)."""
    body = "03400" + chars(rng, "0123456789", 8)
    return body + gs1_check_digit(body)


def make_gs1(rng: np.random.Generator) -> str:
    """A medicine-pack GS1 element string, as decoded: AIs 01, 17, 10, 21, GS after the lot."""
    yy, mm, dd = int(rng.integers(25, 32)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    expiry = f"{yy:02d}{mm:02d}{dd:02d}"
    lot = chars(rng, _UPPER_DIGITS, int(rng.integers(4, 9)))
    serial = chars(rng, _UPPER_DIGITS, int(rng.integers(8, 14)))
    return f"01{make_gtin(rng)}17{expiry}10{lot}{GS}21{serial}"


def make_ins(rng: np.random.Generator) -> str:
    """A synthetic INS DataMatrix payload (starts "IS01"; fields split by GS)."""
    nir = str(int(rng.integers(1, 3))) + chars(rng, "0123456789", 12)
    key = f"{97 - int(nir) % 97:02d}"
    day, month = int(rng.integers(1, 29)), int(rng.integers(1, 13))
    year = int(rng.integers(1930, 2024))
    birth = f"{day:02d}{month:02d}{year}"
    return (
        f"IS01S1{nir}{key}{GS}S21.2.250.1.213.1.4.8{GS}S3{pick(rng, FIRST_NAMES)}{GS}"
        f"S4{pick(rng, LAST_NAMES)}{GS}S5{'MF'[int(rng.integers(2))]}{GS}S6{birth}"
    )


def make_2ddoc(rng: np.random.Generator) -> str:
    """A synthetic 2D-Doc (version 04) header, message and base-32 signature."""
    ca = "FR0" + str(int(rng.integers(0, 10)))
    cert = chars(rng, _UPPER_DIGITS, 4)
    dates = chars(rng, "0123456789ABCDEF", 8)
    header = f"DC04{ca}{cert}{dates}0{int(rng.integers(0, 10))}01FR"
    message = (
        f"10{pick(rng, FIRST_NAMES)} {pick(rng, LAST_NAMES)}{GS}"
        f"22{int(rng.integers(1, 200))} RUE DU PORT"
        f"{GS}24{int(rng.integers(10000, 96000))}{GS}25{pick(rng, TOWNS)}"
    )
    return header + message + _US + chars(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 103)


def make_url(rng: np.random.Generator) -> str:
    """A web address as printed on flyers."""
    host = pick(
        rng,
        ("pharmacie-du-port.fr", "sante.gouv.fr", "ameli.fr", "exemple.org", "vaccination-info.fr"),
    )
    path = chars(rng, "abcdefghijklmnopqrstuvwxyz0123456789", int(rng.integers(4, 12)))
    return f"https://www.{host}/{path}"


# ---------------------------------------------------------------------------
# Codes and text


def code_matrix(payload: str, fmt: str, gs1: bool = False) -> npt.NDArray[np.bool_]:
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
            value, _, rest = rest[2:].partition(GS)
        out.append(f"[{ai}]{value}")
    return "".join(out)


