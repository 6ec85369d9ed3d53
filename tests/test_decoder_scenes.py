"""Decoder on the generator's counter scenes: hard frames read, nothing mistaken for a prescription.

The decoder runs here with a generous budget and no duty cycle so that the
result does not depend on how loaded the machine is: what is tested is what
its passes can read. How fast it does it, within the default budget, is the benchmark's job
(tests/bench/test_bench_decoder.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import zxingcpp
from ordoscan.classifier import Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Decoder, Symbol
from ordoscan.devtools.scenes import SCENE_KINDS, Scene, render, scene_set

HARD_SEED, HARD_COUNT = 2026, 48
ALL_PASSES = 10_000.0  # ms: every pass due runs, whatever the machine's load
FAST_ONLY = 0.0


@dataclass
class Decoded:
    scene: Scene
    full: list[Symbol]  # every pass due
    fast: list[Symbol]  # the fast pass alone
    raw: set[bytes]  # zxing-cpp's default read_barcodes call


def _decode(scenes: list[Scene]) -> list[Decoded]:
    full, fast = Decoder(budget_ms=ALL_PASSES, duty=None), Decoder(budget_ms=FAST_ONLY)
    return [
        Decoded(
            s,
            full.decode(s.image),
            fast.decode(s.image),
            {b.bytes for b in zxingcpp.read_barcodes(s.image)},
        )
        for s in scenes
    ]


@pytest.fixture(scope="module")
def hard() -> list[Decoded]:
    return _decode(list(scene_set(HARD_SEED, HARD_COUNT, "hard")))


@pytest.fixture(scope="module")
def easy() -> list[Decoded]:
    return _decode([render(kind, seed) for kind in SCENE_KINDS for seed in (40, 41)])


def _reads(decoded: list[Decoded], kind: Kind, which: str) -> tuple[int, int]:
    """(codes of `kind` read, codes of `kind` in the pictures)."""
    read = total = 0
    for d in decoded:
        got = d.raw if which == "raw" else {s.raw for s in getattr(d, which)}
        for k, payload in d.scene.truth:
            if k is kind:
                total += 1
                read += payload.encode() in got
    return read, total


def test_hard_scenes_ordonnance_read_rate(hard: list[Decoded]) -> None:
    read, total = _reads(hard, Kind.ORDONNANCE, "full")
    fast, _ = _reads(hard, Kind.ORDONNANCE, "fast")
    raw, _ = _reads(hard, Kind.ORDONNANCE, "raw")
    print(
        f"\nhard scenes: ordonnance codes read {read}/{total} (fast pass alone {fast}, "
        f"zxing-cpp default {raw})"
    )
    assert total >= 20, "the hard set should hold a fair number of prescriptions"
    assert read >= 0.9 * total


def test_extra_passes_earn_their_time(hard: list[Decoded]) -> None:
    """The extra passes read codes the fast pass misses, and the whole reads more than zxing-cpp."""
    full, _ = _reads(hard, Kind.ORDONNANCE, "full")
    fast, _ = _reads(hard, Kind.ORDONNANCE, "fast")
    assert full > fast
    totals = Counter[str]()
    for which in ("full", "fast", "raw"):
        for kind in Kind:
            totals[which] += _reads(hard, kind, which)[0]
    print(f"\nhard scenes, every kind: {dict(totals)}")
    assert totals["full"] > totals["raw"]
    assert totals["full"] >= totals["fast"]


def test_blank_scenes_give_nothing(hard: list[Decoded], easy: list[Decoded]) -> None:
    blanks = [d for d in hard + easy if d.scene.kind == "blank"]
    assert blanks
    for d in blanks:
        assert d.full == [], d.scene.seed


def test_nothing_is_mistaken_for_an_ordonnance(hard: list[Decoded], easy: list[Decoded]) -> None:
    classifier = Classifier(ScanConfig())
    seen = Counter[Kind]()
    for d in hard + easy:
        truth = {payload: kind for kind, payload in d.scene.truth}
        for symbol in d.full:
            got = classifier.classify(symbol).kind
            want = truth.get(symbol.text)
            if want is not None:
                seen[want] += 1
            if got is Kind.ORDONNANCE:
                assert want is Kind.ORDONNANCE, (d.scene.kind, d.scene.seed, want)
            if want is Kind.ORDONNANCE:
                assert got is Kind.ORDONNANCE, (d.scene.kind, d.scene.seed, got)
    print(f"\nsymbols read, by true kind: {dict(seen)}")
    # the check above means something only if every other kind was actually read
    for kind in (Kind.INS, Kind.MEDICINE_PACK, Kind.DOC_2D, Kind.URL, Kind.ORDONNANCE):
        assert seen[kind] > 0, kind


def test_an_over_exposed_phone_screen_is_read_from_the_main_stream_eroded() -> None:
    """The second generator's phone in a dim room (a development scene): auto-exposure
    metered on the dark counter blows the screen out and its modules thin out; raw zxing-cpp,
    and the main stream as it is, read nothing; the erode pass on the main stream reads it."""
    from ordoscan.devtools import docscenes

    scene = docscenes.render("phone_dark", 12, setting=docscenes.Setting("dim", "cm3", "plain"),
                             difficulty="hard")
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    assert epu not in {r.text for r in zxingcpp.read_barcodes(scene.image)}
    assert epu not in {r.text for r in zxingcpp.read_barcodes(scene.full)}
    asked: list[tuple[int, int, int, int]] = []

    def zoom(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        asked.append((x0, y0, x1, y1))
        return scene.zoom(x0, y0, x1, y1)

    decoder = Decoder(budget_ms=ALL_PASSES, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, zoom)}
    assert decoder.stats().zooms >= 2  # the fitted zoom, then the eroded one
    (box,) = [c.box for c in scene.codes if c.payload == epu]
    x0, y0, x1, y1 = asked[-1]
    assert x0 <= box[0] and y0 <= box[1] and x1 >= box[2] and y1 >= box[3]


@pytest.mark.parametrize(
    ("kind", "seed", "setting"),
    [("phone_light", 11, ("dim", "cm3", "glossy")),
     ("phone_dark", 99, ("dim", "cm3_wide", "plain"))],
)
def test_a_blown_out_phone_is_read_from_the_main_stream_split_at_the_clip_level(
    kind: str, seed: int, setting: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phones of the second generator's development split (hard, dim room) so blown out
    that the erode pass alone reads nothing: blooming lifts the dark modules towards white,
    short of the clipped white around them. The main stream split at CLIP_LEVEL, then
    eroded, reads them; without that pass the decoder (every pass due) reads nothing."""
    import ordoscan.decoder as decoder_module
    from ordoscan.decoder.passes import ERODE_PASS
    from ordoscan.devtools import docscenes

    scene = docscenes.render(kind, seed, setting=docscenes.Setting(*setting), difficulty="hard")
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    assert epu not in {r.text for r in zxingcpp.read_barcodes(scene.image)}
    decoder = Decoder(budget_ms=ALL_PASSES, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    monkeypatch.setattr(decoder_module, "ERODE_PASSES", (ERODE_PASS,))
    without = Decoder(budget_ms=ALL_PASSES, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


def test_a_mildly_blown_out_phone_is_split_lower_when_the_clip_level_does_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dark-mode phone of the second generator's development split (hard, dim room) whose
    bloom is milder: split at CLIP_LEVEL, the 3x3 minimum merges its dark modules and
    nothing reads; the same read of the main stream split lower reads it."""
    from dataclasses import replace

    import ordoscan.decoder as decoder_module
    from ordoscan.decoder.passes import CLIP_LEVEL, ERODE_PASSES
    from ordoscan.devtools import docscenes

    scene = docscenes.render("phone_dark", 550, setting=docscenes.Setting("dim", "cm3", "folded"),
                             difficulty="hard")
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    assert epu not in {r.text for r in zxingcpp.read_barcodes(scene.image)}
    decoder = Decoder(budget_ms=ALL_PASSES, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    erode, clip = ERODE_PASSES
    monkeypatch.setattr(decoder_module, "ERODE_PASSES",
                        (erode, replace(clip, clip_levels=(CLIP_LEVEL,))))
    without = Decoder(budget_ms=ALL_PASSES, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}
