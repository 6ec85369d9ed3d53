"""Property tests: any bytes or text, any format or symbology id, gives exactly one Kind."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ordoscan.classifier import INS_KEY, Classified, Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Symbol
from ordoscan.privacy import printable

# Bounded and reproducible: the same examples on every run and every machine.
PROPS = settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

FORMATS = st.sampled_from(["QRCode", "DataMatrix", "Data Matrix", "QR Code", "Aztec", "", "x" * 50])
SYMBOLOGY_IDS = st.one_of(
    st.sampled_from(["]Q1", "]Q3", "]d1", "]d2", "]C1", "]e0", "]z0", ""]),
    st.text(max_size=6),
)
GS1_ALPHABET = string.digits + string.ascii_uppercase + "\x1d()-/"
TEXTS = st.one_of(
    st.text(max_size=80),  # any Unicode, surrogates included
    st.text(alphabet=string.ascii_uppercase + string.digits, min_size=16, max_size=20),
    st.text(alphabet=GS1_ALPHABET, max_size=60),
    st.builds(lambda s: "IS01" + s, st.text(max_size=40)),
    st.builds(lambda s: "DC0" + s, st.text(max_size=40)),
    st.builds(lambda s: "https://" + s, st.text(max_size=40)),
    st.builds(lambda s: "\x1d01" + s, st.text(alphabet=GS1_ALPHABET, max_size=50)),
)
CLASSIFIERS = [
    Classifier(ScanConfig()),
    Classifier(ScanConfig(accept=[r"(?s).*"], max_payload_bytes=16)),
    Classifier(ScanConfig(accept=[r"IS01.*", r"DC0.*", r"\x1d?01.*", r"https?://.*"])),
]


def _check(c: Classified, sym: Symbol) -> None:
    assert isinstance(c, Classified)
    assert isinstance(c.kind, Kind)
    assert isinstance(c.payload, str) and isinstance(c.key, str) and isinstance(c.reason, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in c.details.items())
    assert c.key != ""  # every symbol can be de-duplicated
    if c.kind is Kind.INS:
        assert c.payload == "" and c.key == INS_KEY and c.details == {}
    if c.kind is Kind.ORDONNANCE:
        assert c.payload == sym.text  # relayed unchanged
        assert c.reason == ""
    if c.payload:
        # Whatever is kept is printable text, GS1's GS, or a line break of multi-line
        # text; privacy.printable() shows the last two escaped.
        assert all(ch.isprintable() or ch in " \x1d\t\n\r" for ch in c.payload)
        assert printable(c.payload, None).replace(" ", "").isprintable()
    # A prescription payload never ends up in the reason or the details.
    if c.kind is Kind.ORDONNANCE and len(sym.text) >= 4:
        assert sym.text not in c.reason
        assert all(sym.text not in v for v in c.details.values())


def _contains_ins(text: str, raw: bytes) -> bool:
    pad = "\x1d\ufeff \t\r\n"
    return text.lstrip(pad).startswith("IS01") or raw.lstrip(pad.encode()).startswith(b"IS01")


@PROPS
@given(FORMATS, SYMBOLOGY_IDS, TEXTS)
@example("QRCode", "]Q1", "IS01")
@example("DataMatrix", "]d2", "\x1d")
@example("DataMatrix", "]d2", "(01)")
@example("DataMatrix", "]d2", "0117991300")
def test_any_text_gives_one_kind(fmt: str, sid: str, text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    sym = Symbol(fmt, sid, text, raw, ())
    for clf in CLASSIFIERS:
        c = clf.classify(sym)
        _check(c, sym)
        # INS is recognised first, whatever the rules, and nothing else is INS.
        assert (c.kind is Kind.INS) == _contains_ins(text, raw)


@PROPS
@given(FORMATS, SYMBOLOGY_IDS, st.binary(max_size=120), st.text(max_size=40))
def test_any_bytes_give_one_kind(fmt: str, sid: str, raw: bytes, text: str) -> None:
    # The raw bytes and the text may disagree (a decoder's text mode, a charset guess).
    for shown in (text, raw.decode("latin-1"), raw.decode("utf-8", "replace")):
        sym = Symbol(fmt, sid, shown, raw, ())
        for clf in CLASSIFIERS:
            _check(clf.classify(sym), sym)


@PROPS
@given(st.binary(min_size=1, max_size=120))
def test_control_bytes_are_never_an_ordonnance(raw: bytes) -> None:
    clf = CLASSIFIERS[1]  # accepts anything short enough
    sym = Symbol("QRCode", "]Q1", raw.decode("latin-1"), raw, ())
    c = clf.classify(sym)
    has_control = any(b < 0x20 or b == 0x7F or 0x80 <= b < 0xA0 for b in raw)
    if has_control and not _contains_ins(sym.text, raw):
        assert c.kind is not Kind.ORDONNANCE
        # Only GS1 data (a leading FNC1) keeps its GS separators, and only text keeps its
        # line breaks (tab, LF, CR); nothing else survives.
        if c.payload:
            controls = {b for b in raw if b < 0x20 or b == 0x7F or 0x80 <= b < 0xA0}
            if controls <= {0x09, 0x0A, 0x0D}:
                assert c.kind is Kind.UNKNOWN and "line(s)" in c.reason
            else:
                assert c.kind is Kind.MEDICINE_PACK and raw.startswith(b"\x1d")
            assert all(ch.isprintable() or ch in "\x1d\t\n\r" for ch in c.payload)


@PROPS
@given(st.text(alphabet=string.ascii_uppercase + string.digits, min_size=18, max_size=18))
def test_default_rule_accepts_every_18_character_identifier(epu: str) -> None:
    c = CLASSIFIERS[0].classify(Symbol("QRCode", "]Q1", epu, epu.encode(), ()))
    if epu.startswith("IS01"):
        assert c.kind is Kind.INS
    else:  # a QR code starting DC0n is not a 2D-Doc (those are DataMatrix)
        assert c.kind is Kind.ORDONNANCE and c.payload == epu
