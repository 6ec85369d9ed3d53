"""Scene generator: reproducible pixels, truthful truth, payloads of the right shape."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ordoscan.classifier import Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Decoder, Symbol, load_image
from ordoscan.devtools import scenes
from ordoscan.devtools.scenes import SCENE_KINDS, render, scene_kind, scene_set

SMALL = (640, 360)  # quicker to draw; the geometry scales with the frame
EXPECTED = {
    "ordonnance": {Kind.ORDONNANCE, Kind.INS},
    "phone_light": {Kind.ORDONNANCE},
    "phone_dark": {Kind.ORDONNANCE},
    "medicine_pack": {Kind.MEDICINE_PACK},
    "2d_doc": {Kind.DOC_2D},
    "url": {Kind.URL},
    "blank": set(),
}


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_same_seed_same_pixels(kind: str) -> None:
    a = render(kind, 11, size=SMALL, difficulty="hard")
    b = render(kind, 11, size=SMALL, difficulty="hard")
    assert np.array_equal(a.image, b.image) and a.truth == b.truth and a.params == b.params
    c = render(kind, 12, size=SMALL, difficulty="hard")
    assert not np.array_equal(a.image, c.image)
    easy = render(kind, 11, size=SMALL, difficulty="easy")
    assert not np.array_equal(a.image, easy.image)


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_scene_shape_and_truth_kinds(kind: str) -> None:
    s = render(kind, 3, size=SMALL)
    assert s.image.dtype == np.uint8 and s.image.shape == (SMALL[1], SMALL[0])
    assert s.image.flags.c_contiguous
    assert (s.kind, s.seed, s.difficulty) == (kind, 3, "easy")
    kinds = {k for k, _ in s.truth}
    assert kinds <= EXPECTED[kind]
    if kind != "blank":
        assert EXPECTED[kind] - {Kind.INS} <= kinds  # the main code is always in the picture
    assert int(s.image.max()) - int(s.image.min()) > 60  # a picture, not a flat frame
    for value in s.params.values():  # conditions only, no payload in there
        assert isinstance(value, float)


def test_scene_set_is_reproducible_and_mixed() -> None:
    first = [(s.kind, s.truth) for s in scene_set(5, 6, "hard", size=SMALL)]
    again = [(s.kind, s.truth) for s in scene_set(5, 6, "hard", size=SMALL)]
    assert first == again
    mix = Counter(scene_kind(5, i) for i in range(400))
    assert set(mix) == set(SCENE_KINDS)
    assert mix["ordonnance"] > mix["url"]  # prescriptions are what a kiosk sees most


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="'poster'"):
        render("poster", 1)
    with pytest.raises(ValueError, match="'medium'"):
        render("url", 1, difficulty="medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(10, 10\)"):
        render("url", 1, size=(10, 10))


def test_payload_generators() -> None:
    rng = np.random.default_rng(1)
    classifier = Classifier(ScanConfig())
    for _ in range(50):
        epu = scenes.make_epu(rng)
        assert re.fullmatch(r"01[A-Z0-9]{16}", epu)
        ordonnance = classifier.classify(Symbol("QRCode", "]Q1", epu, epu.encode(), ()))
        assert ordonnance.kind is Kind.ORDONNANCE

        gs1 = scenes.make_gs1(rng)
        pack = classifier.classify(Symbol("DataMatrix", "]d2", gs1, gs1.encode(), ()))
        assert pack.kind is Kind.MEDICINE_PACK and pack.reason == "", pack.reason
        assert pack.details["cip13"].startswith("3400") and pack.details["gtin"] == gs1[2:16]
        assert {"expiry", "lot", "serial"} <= set(pack.details)

        ins = scenes.make_ins(rng)
        assert ins.startswith("IS01")
        patient = classifier.classify(Symbol("DataMatrix", "]d1", ins, ins.encode(), ()))
        assert patient.kind is Kind.INS

        doc = scenes.make_2ddoc(rng)
        assert re.match(r"DC04[A-Z0-9]{4}", doc) and "\x1f" in doc  # signature after <US>
        url = scenes.make_url(rng)
        assert url.startswith("https://") and " " not in url
        assert classifier.classify(Symbol("QRCode", "]Q1", url, url.encode(), ())).kind is Kind.URL
    # the same generator state gives the same payloads
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert [scenes.make_epu(a) for _ in range(3)] == [scenes.make_epu(b) for _ in range(3)]


def test_gs1_check_digit() -> None:
    # GTIN-13 of a known French CIP13 example shape and the GS1 worked example
    assert scenes.gs1_check_digit("629104150021") == "3"
    assert scenes.gs1_check_digit("0340093000001") == "4"
    rng = np.random.default_rng(2)
    for _ in range(20):
        gtin = scenes.make_gtin(rng)
        assert len(gtin) == 14 and gtin.startswith("03400")
        assert scenes.gs1_check_digit(gtin[:-1]) == gtin[-1]


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_easy_scenes_are_read_and_classified(kind: str) -> None:
    """On easy scenes every code but the small INS one is read, and each is what the truth says."""
    decoder = Decoder(budget_ms=10_000)
    classifier = Classifier(ScanConfig())
    for seed in (0, 1):
        s = render(kind, seed)
        read = {sym.text: classifier.classify(sym).kind for sym in decoder.decode(s.image)}
        for k, payload in s.truth:
            if k is Kind.INS:
                continue
            assert payload in read, (kind, seed, k)
            if k is not Kind.DOC_2D:  # see test_decoder_scenes for the 2D-Doc note
                assert read[payload] is k, (kind, seed, k, read[payload])
        assert set(read) <= {p for _, p in s.truth}, "a code was read that is not in the picture"


def test_saved_scene_reads_back(tmp_path: Path) -> None:
    s = render("phone_dark", 4)
    s.save(tmp_path / "scene.png")
    assert np.array_equal(load_image(tmp_path / "scene.png"), s.image)
    s.save(tmp_path / "scene.jpg")
    symbols = Decoder(budget_ms=10_000).decode(load_image(tmp_path / "scene.jpg"))
    assert [sym.text for sym in symbols] == [s.truth[0][1]]
