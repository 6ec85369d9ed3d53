"""Classifier: every decoded symbol becomes exactly one kind (SPEC §1).

The checks run in a fixed order so that nothing sensitive can pass for a
prescription whatever the `accept` rules say: INS first (its content is
dropped here and goes no further), then payloads that are too long, binary
or oddly encoded, then GS1 medicine packs, 2D-Doc, the accept rules, URLs,
and the rest. Classification never raises: a strange symbol is a Kind with a
reason. It runs on every frame, so it is pure and does no I/O.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from ordoscan.config import ScanConfig
from ordoscan.decoder import Symbol


class Kind(StrEnum):
    """What a symbol is (SPEC §1); the value is the `kind` of messages and `decode` output."""

    ORDONNANCE = "ordonnance_numerique"
    MEDICINE_PACK = "medicine_pack"
    DOC_2D = "2d_doc"
    INS = "ins"
    URL = "url"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Classified:
    """A classified symbol. For Kind.INS payload is "" and key is "ins": nothing of it is kept."""

    kind: Kind
    format: str
    symbology_id: str
    payload: str  # relayed unchanged for an ordonnance; "" for INS
    key: str  # de-duplication identity (the payload; "ins" for every INS code)
    # e.g. GS1 gtin, cip13, expiry, lot, serial; never a prescription payload
    details: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # why it was refused, for logs (never the payload)


GS = "\x1d"  # ASCII group separator: FNC1 inside a GS1 element string
INS_PREFIX = "IS01"
INS_KEY = "ins"
# ISO/IEC 15424 identifiers that announce GS1 data (DataMatrix, QR Code, Code 128, DataBar).
GS1_SYMBOLOGY_IDS = frozenset({"]d2", "]Q3", "]C1", "]e0"})
# Characters a scanner may put before the data (FNC1 as GS, a BOM, spaces):
# skipped before the INS test so that no padding can hide an INS code.
_LEADING_NOISE = GS + "\ufeff \t\r\n"
_LEADING_NOISE_BYTES = GS.encode() + b"\xef\xbb\xbf \t\r\n"
_DOC_2D = re.compile(r"DC0[0-9]")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
# A control byte in the raw data (GS is allowed for GS1 only, checked apart; tab, line
# feed and carriage return are ordinary text: a vCard, a Wi-Fi card, a note).
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1c\x1e\x1f\x7f]")
_LINE_BREAKS = frozenset("\t\n\r")
_RAW_GS = re.compile(rb"\x1d")
# Unicode categories that make a text unfit to show or relay: controls,
# invisible formatting (bidi overrides, zero-width), surrogates, private use,
# unassigned.
_BAD_CATEGORIES = {"Cc": "binary payload", "Cf": "odd encoding", "Cs": "odd encoding",
                   "Co": "odd encoding", "Cn": "odd encoding"}


def _is_datamatrix(fmt: str) -> bool:
    return fmt.replace(" ", "").replace("_", "").lower() == "datamatrix"


def _starts_ins(symbol: Symbol) -> bool:
    """True if the text or the raw bytes begin with IS01, after any leading padding."""
    text = symbol.text if isinstance(symbol.text, str) else ""
    raw = symbol.raw if isinstance(symbol.raw, bytes | bytearray) else b""
    return text.lstrip(_LEADING_NOISE).startswith(INS_PREFIX) or bytes(raw).lstrip(
        _LEADING_NOISE_BYTES
    ).startswith(INS_PREFIX.encode())


def _text_problem(text: str, allow_gs: bool) -> str:
    """Why a decoded text is not plain printable text, or "" if it is."""
    if "\ufffd" in text:
        return "odd encoding (undecodable characters)"
    if text.isprintable():  # the common case, checked in C
        return ""
    for ch in text:
        if ch.isprintable() or ch == " " or ch in _LINE_BREAKS:
            continue
        if ch == GS and allow_gs:
            continue
        cat = unicodedata.category(ch)
        if cat in _BAD_CATEGORIES:
            return f"{_BAD_CATEGORIES[cat]} (character class {cat})"
        if cat in ("Zl", "Zp", "Zs"):  # line/paragraph separators, odd spaces
            return f"odd encoding (character class {cat})"
    return ""


# --- GS1 element strings -------------------------------------------------

# Length of an application identifier, by its first two digits (GS1 General
# Specifications, the AI table). Prefixes absent here are not assigned.
_AI_LENGTH: dict[str, int] = {}
for _p in ("00", "01", "02", "03", "04", "10", "11", "12", "13", "15", "16", "17",
           "20", "21", "22", "30", "37", *(f"{n}" for n in range(90, 100))):
    _AI_LENGTH[_p] = 2
for _p in ("23", "24", "25", "40", "41", "42", "71"):
    _AI_LENGTH[_p] = 3
for _p in ("31", "32", "33", "34", "35", "36", "39", "43", "70", "72", "80", "81", "82"):
    _AI_LENGTH[_p] = 4

# AIs whose data has a fixed length (no GS after them), by the first two
# digits of the AI: the "predefined length" table of the GS1 specifications.
_FIXED_DATA: dict[str, int] = {
    "00": 18, "01": 14, "02": 14, "03": 14, "04": 16,
    "11": 6, "12": 6, "13": 6, "14": 6, "15": 6, "16": 6, "17": 6, "18": 6, "19": 6,
    "20": 2, "31": 6, "32": 6, "33": 6, "34": 6, "35": 6, "36": 6, "41": 13,
}
# Longest data of the variable-length AIs read here; any other AI: 90.
_MAX_DATA: dict[str, int] = {"10": 20, "21": 20, "22": 20, "30": 8, "37": 8,
                             "710": 20, "711": 20, "712": 20, "713": 20, "714": 20, "715": 20}
_NUMERIC_AIS = frozenset(
    {"00", "01", "02", "03", "11", "12", "13", "15", "16", "17", "20", "30", "37"}
)
_HRI_PAIR = re.compile(r"\((\d{2,4})\)([^()]*)")


def gtin_check_digit_ok(gtin: str) -> bool:
    """GS1 mod-10 check: weights 3,1,3,... from the right, on all digits but the last."""
    if not gtin.isascii() or not gtin.isdigit() or len(gtin) < 2:
        return False
    body, check = gtin[:-1], int(gtin[-1])
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


def gs1_date(yymmdd: str) -> str | None:
    """AI 17 style YYMMDD as an ISO date; DD=00 means the last day of the month."""
    if len(yymmdd) != 6 or not yymmdd.isascii() or not yymmdd.isdigit():
        return None
    # Expiry dates are near the present: 20YY holds until 2099 and keeps this pure.
    year, month, day = 2000 + int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    if not 1 <= month <= 12:
        return None
    last = calendar.monthrange(year, month)[1]
    if day == 0:
        day = last
    if day > last:
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


def parse_gs1(data: str) -> tuple[list[tuple[str, str]], str]:
    """Split a GS1 element string into (AI, value) pairs; the second item is a problem or ""."""
    data = data.lstrip(GS)
    fields: list[tuple[str, str]] = []
    hri = _HRI_PAIR.findall(data) if data.startswith("(") else []
    if hri:  # the human-readable form "(01)...(17)...", as some decoders give it
        return [(ai, value) for ai, value in hri], ""
    i = 0
    while i < len(data):
        if data[i] == GS:
            i += 1
            continue
        head = data[i:i + 2]
        ai_len = _AI_LENGTH.get(head)
        if ai_len is None or len(data) < i + ai_len:
            return fields, f"GS1: unknown application identifier at character {i}"
        ai = data[i:i + ai_len]
        if not ai.isdigit():
            return fields, f"GS1: application identifier at character {i} is not numeric"
        i += ai_len
        fixed = _FIXED_DATA.get(head)
        if fixed is not None:
            value = data[i:i + fixed]
            if len(value) < fixed or GS in value:
                return fields, f"GS1: AI ({ai}) needs {fixed} characters"
            i += fixed
        else:
            end = data.find(GS, i)
            end = len(data) if end < 0 else end
            value = data[i:end]
            longest = _MAX_DATA.get(ai, _MAX_DATA.get(head, 90))
            if not value:
                return fields, f"GS1: AI ({ai}) is empty"
            if len(value) > longest:
                return fields, f"GS1: AI ({ai}) is longer than {longest} characters"
            i = end
        if head in _NUMERIC_AIS and not (value.isascii() and value.isdigit()):
            return fields, f"GS1: AI ({ai}) must be digits"
        fields.append((ai, value))
    if not fields:
        return fields, "GS1: no application identifier"
    return fields, ""


def gs1_details(data: str) -> tuple[dict[str, str], str]:
    """GS1 data as details (gtin, cip13, expiry, lot, serial) and a problem ("" if none)."""
    fields, problem = parse_gs1(data)
    details: dict[str, str] = {}
    problems = [problem] if problem else []
    for ai, value in fields:
        if ai == "01":
            if not gtin_check_digit_ok(value) or len(value) != 14:
                problems.append("GS1: AI (01) GTIN check digit is wrong")
                continue
            details["gtin"] = value
            if value.startswith("03400"):  # French CIP13: the GTIN-14 without its leading 0
                details["cip13"] = value[1:]
        elif ai == "17":
            iso = gs1_date(value)
            if iso is None:
                problems.append("GS1: AI (17) is not a valid YYMMDD date")
            else:
                details["expiry"] = iso
        elif ai == "10":
            details["lot"] = value
        elif ai == "21":
            details["serial"] = value
    return details, "; ".join(problems)


# --- the classifier ------------------------------------------------------


def _digest_key(raw: bytes, text: str) -> str:
    """A stable short identity for a payload that is not kept (binary, oversize)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(raw)
    h.update(text.encode("utf-8", "surrogatepass"))
    return "#" + h.hexdigest()


class Classifier:
    """Turns each decoded Symbol into exactly one Classified (SPEC §1)."""

    def __init__(self, scan: ScanConfig) -> None:
        self.max_payload_bytes = scan.max_payload_bytes
        # Compiled once: classify() runs on every frame.
        self._accept = [(f"accept[{i}]", re.compile(p)) for i, p in enumerate(scan.accept)]

    def classify(self, symbol: Symbol) -> Classified:
        """Exactly one Kind for this symbol; never raises for any content."""
        fmt = symbol.format if isinstance(symbol.format, str) else str(symbol.format)
        sid = symbol.symbology_id if isinstance(symbol.symbology_id, str) else ""
        text = symbol.text if isinstance(symbol.text, str) else ""
        raw = bytes(symbol.raw) if isinstance(symbol.raw, bytes | bytearray) else b""

        # 1. INS: patient identity. Nothing of its content is kept, not even a length.
        if _starts_ins(symbol):
            return Classified(Kind.INS, fmt, sid, "", INS_KEY, reason="INS (patient identity)")

        def refuse(kind: Kind, reason: str, payload: str = "", key: str = "") -> Classified:
            return Classified(kind, fmt, sid, payload, key or _digest_key(raw, text), reason=reason)

        # 2. Size, binary data, encodings: refused before anything looks at the content.
        size = max(len(raw), len(text.encode("utf-8", "surrogatepass")))
        if size > self.max_payload_bytes:
            return refuse(Kind.UNKNOWN, f"payload too long: {size} bytes (max_payload_bytes = "
                                        f"{self.max_payload_bytes})")
        if not text and not raw:
            return refuse(Kind.UNKNOWN, "empty payload")
        # 2D-Doc (ANTS-signed document) before the control-byte check: its fields are
        # separated by GS and its signature by US. It holds personal data: keyed by digest.
        if _is_datamatrix(fmt) and _DOC_2D.match(text):
            return Classified(Kind.DOC_2D, fmt, sid, text, _digest_key(raw, text),
                              {"version": text[3]}, "2D-Doc, not an ordonnance numérique")
        gs1 = sid in GS1_SYMBOLOGY_IDS or text.startswith(GS) or raw.startswith(b"\x1d")
        if _RAW_CONTROL.search(raw) or (not gs1 and _RAW_GS.search(raw)):
            return refuse(Kind.UNKNOWN, f"binary payload: {len(raw)} bytes with control bytes")
        problem = _text_problem(text, allow_gs=gs1)
        if problem:
            return refuse(Kind.UNKNOWN, f"{problem}, {len(text)} characters")
        if not text:
            return refuse(Kind.UNKNOWN, f"binary payload: {len(raw)} bytes with no text")
        if not _LINE_BREAKS.isdisjoint(text):
            # text on several lines (a vCard): shown as text, never an identifier nor GS1 data
            lines = len(text.splitlines())
            return Classified(Kind.UNKNOWN, fmt, sid, text, text,
                              reason=f"text on {lines} line(s), not an ordonnance numérique")

        # 3. GS1: a medicine pack, even when its data is malformed.
        if gs1:
            # Raw bytes keep the GS separators whatever the decoder's text mode; but bytes
            # that latin-1 makes controls (0x80-0x9f: '›' in cp1252 is C1 CSI in latin-1)
            # would reach the fields, so then the checked text is used instead.
            source = raw.decode("latin-1") if raw else text
            if _text_problem(source, allow_gs=True):
                source = text
            details, why = gs1_details(source)
            return Classified(Kind.MEDICINE_PACK, fmt, sid, text, text, details, why)

        # 4. The configured rules: an ordonnance numérique, relayed unchanged.
        for name, rule in self._accept:
            if rule.fullmatch(text):
                return Classified(Kind.ORDONNANCE, fmt, sid, text, text, {"rule": name})

        # 5. URLs, then anything else.
        if _URL.fullmatch(text):
            return Classified(Kind.URL, fmt, sid, text, text,
                              reason="URL, not an ordonnance numérique")
        return Classified(Kind.UNKNOWN, fmt, sid, text, text,
                          reason=f"matches no accept rule ({len(text)} characters)")
