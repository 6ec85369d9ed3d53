"""Classifier: one Kind per symbol, INS dropped at once, GS1 parsed (SPEC §1)."""

from __future__ import annotations

import numpy as np
import pytest
import zxingcpp
from ordoscan.classifier import (
    INS_KEY,
    Classified,
    Classifier,
    Kind,
    gs1_date,
    gtin_check_digit_ok,
    parse_gs1,
)
from ordoscan.config import ScanConfig
from ordoscan.decoder import Symbol

EPU = "01S2TBPZ2JCNZZYGHZ"  # the ANS example identifier
GS = "\x1d"
# A real French medicine pack: Doliprane 1000 mg, CIP13 3400935955838.
DOLIPRANE_GTIN = "03400935955838"
INS_TEXT = "IS0112345678901234567890S1ABC"  # shape only; no real identity


def sym(text: str, fmt: str = "QRCode", sid: str = "]Q1", raw: bytes | None = None) -> Symbol:
    return Symbol(fmt, sid, text, text.encode("utf-8") if raw is None else raw, ())


@pytest.fixture
def clf() -> Classifier:
    return Classifier(ScanConfig())


def _no_trace(c: Classified, secret: str) -> None:
    """Nothing of `secret` (beyond a 3-char window) is in any field or the repr."""
    fields = [c.payload, c.key, c.reason, repr(c), *c.details.keys(), *c.details.values()]
    for i in range(len(secret) - 3):
        piece = secret[i:i + 4]
        for f in fields:
            assert piece not in f, f"{piece!r} leaked into {f!r}"


# --- INS: first, whatever else the symbol looks like -----------------------


@pytest.mark.parametrize(
    ("fmt", "sid", "text"),
    [
        ("DataMatrix", "]d1", INS_TEXT),
        ("QRCode", "]Q1", INS_TEXT),
        ("DataMatrix", "]d2", INS_TEXT),  # announced as GS1: still INS
        ("DataMatrix", "]d2", GS + INS_TEXT),  # leading FNC1
        ("DataMatrix", "]d1", " \ufeff" + INS_TEXT),  # padding cannot hide it
        ("DataMatrix", "]d1", "IS01" + "\x00\x01" * 10),  # binary after the prefix
        ("QRCode", "]Q1", "IS01" + "Z" * 5000),  # oversize
    ],
)
def test_ins_is_dropped_whatever_the_rest(fmt: str, sid: str, text: str) -> None:
    # An accept rule that takes anything must still not turn an INS into a prescription.
    c = Classifier(ScanConfig(accept=[".*", r"IS01.*"], max_payload_bytes=64))
    got = c.classify(sym(text, fmt, sid))
    assert got.kind is Kind.INS
    assert got.payload == "" and got.key == INS_KEY and got.details == {}
    _no_trace(got, text.strip(" \ufeff" + GS))


def test_ins_seen_in_raw_bytes_even_if_text_differs(clf: Classifier) -> None:
    raw = b"\x1d" + INS_TEXT.encode()
    got = clf.classify(Symbol("DataMatrix", "]d1", "<GS>something", raw, ()))
    assert got.kind is Kind.INS and got.payload == ""


def test_ins_lookalikes_are_not_ins(clf: Classifier) -> None:
    assert clf.classify(sym("XIS01ABC")).kind is not Kind.INS
    assert clf.classify(sym("IS02ABCDEFGH")).kind is not Kind.INS


# --- ordonnance -------------------------------------------------------------


def test_ordonnance_default_rule_relays_payload_unchanged(clf: Classifier) -> None:
    got = clf.classify(sym(EPU))
    assert got.kind is Kind.ORDONNANCE
    assert got.payload == EPU and got.key == EPU
    assert got.format == "QRCode" and got.symbology_id == "]Q1"
    assert got.reason == ""
    assert got.details == {"rule": "accept[0]"}


@pytest.mark.parametrize(
    "text", [EPU.lower(), EPU[:-1], EPU + "A", EPU + " ", " " + EPU, EPU[:9] + "-" + EPU[10:]]
)
def test_near_misses_are_not_ordonnances(clf: Classifier, text: str) -> None:
    got = clf.classify(sym(text))
    assert got.kind is Kind.UNKNOWN
    assert "accept" in got.reason
    assert text not in got.reason


def test_accept_rules_are_a_full_match_of_any(clf: Classifier) -> None:
    c = Classifier(ScanConfig(accept=[r"EP-\d{6}", r"01[A-Z0-9]{16}"]))
    assert c.classify(sym("EP-123456")).details == {"rule": "accept[0]"}
    assert c.classify(sym(EPU)).details == {"rule": "accept[1]"}
    assert c.classify(sym("xEP-123456")).kind is Kind.UNKNOWN  # search would match, fullmatch not
    assert c.classify(sym("EP-1234567")).kind is Kind.UNKNOWN


def test_a_datamatrix_ordonnance_is_accepted_too(clf: Classifier) -> None:
    assert clf.classify(sym(EPU, "DataMatrix", "]d1")).kind is Kind.ORDONNANCE


# --- oversize, binary, odd encodings ---------------------------------------


def test_oversize_is_refused_before_the_rules() -> None:
    c = Classifier(ScanConfig(accept=[".*"], max_payload_bytes=32))
    ok = c.classify(sym("A" * 32))
    assert ok.kind is Kind.ORDONNANCE
    got = c.classify(sym("A" * 33))
    assert got.kind is Kind.UNKNOWN
    assert "33 bytes" in got.reason and "max_payload_bytes = 32" in got.reason
    assert got.payload == "" and "A" * 4 not in got.key


def test_oversize_counts_bytes_not_characters() -> None:
    c = Classifier(ScanConfig(accept=[".*"], max_payload_bytes=20))
    assert c.classify(sym("é" * 10)).kind is Kind.ORDONNANCE  # 20 bytes
    got = c.classify(sym("é" * 11))  # 22 bytes
    assert got.kind is Kind.UNKNOWN and "22 bytes" in got.reason


@pytest.mark.parametrize(
    ("text", "raw", "word"),
    [
        ("<NUL><SOH>ÿþ", b"\x00\x01\xff\xfe", "binary"),  # zxing's HRI text of binary bytes
        ("abc\x1b[31m", None, "binary"),  # a terminal escape
        ("abc\x0bdef", None, "binary"),  # a vertical tab is no ordinary line break
        ("abc\x7f", None, "binary"),
        ("abc\x85", None, "binary"),  # a C1 control
        ("a" + GS + "b", None, "binary"),  # GS outside GS1
        ("abc\ufffd", None, "odd encoding"),
        ("01S2TBPZ2JCNZZ\u202eHZ", None, "odd encoding"),  # bidi override
        ("01S2TBPZ\u200b2JCNZZYGHZ", None, "odd encoding"),  # zero-width space
        ("\ue000abc", None, "odd encoding"),  # private use
        ("abc\udcff", b"abc\xff", "odd encoding"),  # a lone surrogate
    ],
)
def test_binary_and_odd_encodings_are_unknown_with_a_reason(
    text: str, raw: bytes | None, word: str
) -> None:
    c = Classifier(ScanConfig(accept=[r"(?s).*"]))
    if raw is None:
        raw = text.encode("utf-8", "surrogatepass")
    got = c.classify(sym(text, raw=raw))
    assert got.kind is Kind.UNKNOWN
    assert word in got.reason
    assert got.payload == ""  # never shown nor relayed


VCARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Pharmacie du Port\r\nTEL:+33298000000\r\nEND:VCARD"


@pytest.mark.parametrize("text", [VCARD, "WIFI:S:counter;;\n", "a\tb"], ids=["vcard", "lf", "tab"])
def test_text_with_ordinary_line_breaks_is_text_not_binary(text: str) -> None:
    c = Classifier(ScanConfig(accept=[r"(?s).*"]))  # even a rule that takes anything
    got = c.classify(sym(text))
    assert got.kind is Kind.UNKNOWN  # never an identifier: one is a single line
    assert "binary" not in got.reason and "not an ordonnance" in got.reason
    assert got.payload == text  # shown as text (escaped by privacy.printable)


def test_empty_payload(clf: Classifier) -> None:
    got = clf.classify(sym("", raw=b""))
    assert got.kind is Kind.UNKNOWN and got.reason == "empty payload"


def test_binary_keys_tell_codes_apart_without_keeping_them(clf: Classifier) -> None:
    a = clf.classify(sym("\x00abcdefgh"))
    b = clf.classify(sym("\x00abcdefgi"))
    assert a.key != b.key
    assert a.key == clf.classify(sym("\x00abcdefgh")).key
    assert "abcdef" not in a.key


# --- GS1 medicine packs ----------------------------------------------------


def test_gs1_medicine_pack_details(clf: Classifier) -> None:
    data = f"01{DOLIPRANE_GTIN}17270331" + f"10LOT42A{GS}21SN0001XYZ"
    got = clf.classify(sym(data, "DataMatrix", "]d2"))
    assert got.kind is Kind.MEDICINE_PACK
    assert got.details == {
        "gtin": DOLIPRANE_GTIN,
        "cip13": "3400935955838",
        "expiry": "2027-03-31",
        "lot": "LOT42A",
        "serial": "SN0001XYZ",
    }
    assert got.reason == ""


def test_gs1_fields_in_any_order_and_leading_fnc1(clf: Classifier) -> None:
    data = f"{GS}21ABC{GS}10L1{GS}17280200" + f"01{DOLIPRANE_GTIN}"
    got = clf.classify(sym(data, "DataMatrix", "]d1"))  # GS1 by its leading FNC1
    assert got.kind is Kind.MEDICINE_PACK
    assert got.details["serial"] == "ABC" and got.details["lot"] == "L1"
    assert got.details["expiry"] == "2028-02-29"  # DD=00: end of month, leap year
    assert got.details["gtin"] == DOLIPRANE_GTIN


def test_gs1_non_french_gtin_has_no_cip13(clf: Classifier) -> None:
    got = clf.classify(sym("0109506000134352", "DataMatrix", "]d2"))
    assert got.details == {"gtin": "09506000134352"}


def test_gs1_human_readable_text_form(clf: Classifier) -> None:
    text = f"(01){DOLIPRANE_GTIN}(17)261200(10)AB12"
    got = clf.classify(Symbol("DataMatrix", "]d2", text, b"", ()))
    assert got.details == {
        "gtin": DOLIPRANE_GTIN, "cip13": "3400935955838", "expiry": "2026-12-31", "lot": "AB12"
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("0103400935955839", "check digit"),
        ("01034009359558", "needs 14"),
        ("17251332", "not a valid YYMMDD"),
        ("17250230", "not a valid YYMMDD"),
        ("99", "empty"),
        ("10" + "X" * 21, "longer than 20"),
        ("ZZ123", "unknown application identifier"),
        ("0103400935955838" + "17ABCDEF", "must be digits"),
        (GS, "no application identifier"),
    ],
)
def test_malformed_gs1_is_still_a_medicine_pack(clf: Classifier, data: str, reason: str) -> None:
    got = clf.classify(sym(data, "DataMatrix", "]d2"))
    assert got.kind is Kind.MEDICINE_PACK
    assert reason in got.reason


def test_gs1_wins_over_accept_rules() -> None:
    c = Classifier(ScanConfig(accept=[r"(?s).*"]))
    assert c.classify(sym("0109506000134352", "QRCode", "]Q3")).kind is Kind.MEDICINE_PACK


def test_gtin_check_digit_against_a_second_formula() -> None:
    # Independent statement of the rule: odd positions from the left x1, even x3 for GTIN-13.
    def ean13_ok(code: str) -> bool:
        s = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(code[:12]))
        return (10 - s % 10) % 10 == int(code[12])

    rng = np.random.default_rng(7)
    for _ in range(300):
        code = "".join(str(d) for d in rng.integers(0, 10, 13))
        assert gtin_check_digit_ok(code) == ean13_ok(code), code
        assert gtin_check_digit_ok("0" + code) == ean13_ok(code), code


def test_gs1_dates() -> None:
    assert gs1_date("250101") == "2025-01-01"
    assert gs1_date("230200") == "2023-02-28"
    assert gs1_date("241100") == "2024-11-30"
    assert gs1_date("251300") is None
    assert gs1_date("250431") is None
    assert gs1_date("2501") is None
    assert gs1_date("２５０１０１") is None  # full-width digits are not GS1 digits


def test_parse_gs1_variable_field_ends_at_gs_or_end() -> None:
    fields, problem = parse_gs1(f"10ABC{GS}21DEF")
    assert fields == [("10", "ABC"), ("21", "DEF")] and problem == ""
    fields, problem = parse_gs1("10ABC21DEF")  # no GS: all of it is the lot
    assert fields == [("10", "ABC21DEF")] and problem == ""


# --- 2D-Doc, URL, rest -----------------------------------------------------


def test_2d_doc(clf: Classifier) -> None:
    got = clf.classify(sym("DC04FR0000011E6A1E6AB101FR", "DataMatrix", "]d1"))
    assert got.kind is Kind.DOC_2D and got.details == {"version": "4"}
    # The same text in a QR code is not a 2D-Doc.
    assert clf.classify(sym("DC04FR0000011E6A1E6AB101FR")).kind is Kind.UNKNOWN
    assert clf.classify(sym("DC0XFR", "DataMatrix", "]d1")).kind is Kind.UNKNOWN


def test_2d_doc_with_field_and_signature_separators(clf: Classifier) -> None:
    # Real 2D-Docs end variable fields with GS and start the signature with US.
    text = "DC04FR0000011E6A1E6AB101FR10DUPONT\x1d20JEAN\x1fSIGNATUREBASE32"
    got = clf.classify(sym(text, "DataMatrix", "]d1"))
    assert got.kind is Kind.DOC_2D
    assert got.key != text  # personal data: keyed by digest, not by content


def test_2d_doc_wins_over_accept_rules() -> None:
    c = Classifier(ScanConfig(accept=["DC.*"]))
    assert c.classify(sym("DC03ABCDEF", "DataMatrix", "]d1")).kind is Kind.DOC_2D


@pytest.mark.parametrize("url", ["https://ordonnance.example.fr/v?id=1", "http://x.fr", "HTTPS://EXAMPLE.COM/A"])
def test_urls(clf: Classifier, url: str) -> None:
    got = clf.classify(sym(url))
    assert got.kind is Kind.URL and got.payload == url


@pytest.mark.parametrize(
    "text", ["ftp://x.fr", "https://", "https:// x.fr", "see https://x.fr", "WIFI:S:shop;;"]
)
def test_not_urls(clf: Classifier, text: str) -> None:
    assert clf.classify(sym(text)).kind is Kind.UNKNOWN


def test_reasons_and_details_never_hold_a_prescription_payload(clf: Classifier) -> None:
    for text in [EPU, EPU + "X", EPU.lower()]:
        got = clf.classify(sym(text))
        assert text not in got.reason
        assert all(text not in v for v in got.details.values())


def test_classifier_takes_the_config_rules_once() -> None:
    scan = ScanConfig(accept=["A+"])
    c = Classifier(scan)
    assert c.classify(sym("AAAA")).kind is Kind.ORDONNANCE


# --- real symbols from zxing-cpp, in both of its text modes ---------------


def _read(
    content: str | bytes, fmt: zxingcpp.BarcodeFormat, mode: zxingcpp.TextMode, **opts: object
) -> Symbol:
    img = np.array(zxingcpp.create_barcode(content, fmt, **opts).to_image(scale=4))
    (r,) = zxingcpp.read_barcodes(img, text_mode=mode)
    return Symbol(str(r.format), r.symbology_identifier, r.text, bytes(r.bytes), ())


MODES = [zxingcpp.TextMode.HRI, zxingcpp.TextMode.Plain]


@pytest.mark.parametrize("mode", MODES)
def test_real_symbols(clf: Classifier, mode: zxingcpp.TextMode) -> None:
    QR, DM = zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.DataMatrix
    assert clf.classify(_read(EPU, QR, mode)).kind is Kind.ORDONNANCE
    assert clf.classify(_read(EPU, QR, mode)).payload == EPU
    ins = clf.classify(_read(INS_TEXT, DM, mode))
    assert ins.kind is Kind.INS and ins.payload == ""
    gs1 = f"(01){DOLIPRANE_GTIN}(17)270300(10)A1B2(21)XYZ789"
    pack = clf.classify(_read(gs1, DM, mode, gs1=True))
    assert pack.kind is Kind.MEDICINE_PACK, pack
    assert pack.details == {
        "gtin": DOLIPRANE_GTIN, "cip13": "3400935955838", "expiry": "2027-03-31",
        "lot": "A1B2", "serial": "XYZ789",
    }
    assert clf.classify(_read("DC04FR03AXT41E6A1E6A0101", DM, mode)).kind is Kind.DOC_2D
    assert clf.classify(_read("https://example.fr/x", QR, mode)).kind is Kind.URL
    binary = clf.classify(_read(b"\x00\x01\xff\xfe bin", QR, mode))
    assert binary.kind is Kind.UNKNOWN and "binary" in binary.reason


def test_gs1_fields_never_carry_a_control_from_the_raw_bytes(clf: Classifier) -> None:
    # cp1252 text '›' is byte 0x9b, which latin-1 reads as the C1 control CSI
    raw = b"\x1d0103400935955838" + b"10LOT\x9b7"
    got = clf.classify(sym("\x1d0103400935955838" + "10LOT\u203a7", "DataMatrix", "]d2", raw))
    assert got.kind is Kind.MEDICINE_PACK
    assert got.details["lot"] == "LOT\u203a7"
    assert all(v.isprintable() for v in got.details.values())
