"""Benchmark: our Decoder against raw zxing-cpp, pyzbar and OpenCV, in one run, on the same frames.

Frames: the generator's mixed hard set at 1280x720 (what the kiosk's lores
stream gives), then ZXing's black-box QR images when the corpus is present,
then blank frames (no code in view: most of what the kiosk sees all day).
Each decoder gets every frame in turn; times are per frame, and ours is given
as a ratio of one default zxing-cpp read_barcodes call. Targets: on the hard
set our mean at most 3x that call while reading clearly more, and 90% of the
ordonnance QR codes; on blank frames our mean at most 1.5x that call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from ordoscan.classifier import Kind
from ordoscan.decoder import Decoder, load_image
from ordoscan.devtools.scenes import render, scene_set
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pyzbar import pyzbar

SEED, FRAMES = 7, 150
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "zxing-blackbox"
TARGET_RATIO = 3.0
ORDONNANCE_RATE = 0.9  # hard set: share of the ordonnance QR codes read
BLANK_SCENES, BLANK_VIEWS = 20, 10  # generator blank seeds (easy and hard), views of each kind
BLANK_RATIO = 1.5

# A reader takes a grey frame and gives the payloads it read, as bytes and as text.
Reader = Callable[[np.ndarray], tuple[set[bytes], set[str]]]
Grey = np.ndarray


def _zxing(img: np.ndarray) -> tuple[set[bytes], set[str]]:
    found = zxingcpp.read_barcodes(img)
    return {b.bytes for b in found}, {b.text for b in found}


def _pyzbar(img: np.ndarray) -> tuple[set[bytes], set[str]]:
    found = pyzbar.decode(img)
    texts = {r.data.decode("utf-8", "replace") for r in found} | {
        r.data.decode("latin-1") for r in found
    }
    return {r.data for r in found}, texts


_opencv_detector = cv2.QRCodeDetector()


def _opencv(img: np.ndarray) -> tuple[set[bytes], set[str]]:
    # detectAndDecode (one code) reads more than detectAndDecodeMulti on both sets
    try:
        text, _, _ = _opencv_detector.detectAndDecode(img)
    except (cv2.error, UnicodeDecodeError):  # OpenCV cannot hand back a non-UTF-8 payload
        return set(), set()
    return ({text.encode()}, {text}) if text else (set(), set())


def _ours(decoder: Decoder) -> Reader:
    def read(img: np.ndarray) -> tuple[set[bytes], set[str]]:
        found = decoder.decode(img)
        return {s.raw for s in found}, {s.text for s in found}

    return read


@dataclass
class Tally:
    """What one reader did on one set of frames."""

    name: str
    ms: list[float] = field(default_factory=list)
    codes: int = 0
    ordonnances: int = 0
    frames_read: int = 0  # frames whose main code was read
    strays: int = 0  # payloads read that are not in the picture's truth

    def row(self, base_ms: float, frames_with_code: int, n_codes: int, n_ordo: int) -> str:
        mean = statistics.fmean(self.ms)
        p95 = float(np.percentile(self.ms, 95))
        share = max(frames_with_code, 1)
        cells = [
            f"{self.name:<34}",
            f"{self.frames_read:>4}/{frames_with_code:<4} {100 * self.frames_read / share:5.1f}%",
            f"{self.codes:>4}/{n_codes:<4}",
            f"{self.ordonnances:>4}/{n_ordo:<4}" if n_ordo else f"{'-':^9}",
            f"{self.strays:>6}",
            f"{mean:8.1f}",
            f"{p95:8.1f}",
            f"{mean / base_ms:6.2f}x",
        ]
        return "  ".join(cells)


HEADER = "  ".join(
    [
        f"{'decoder':<34}",
        f"{'frames read':^16}",
        f"{'codes':^9}",
        f"{'ordo QR':^9}",
        f"{'stray':>6}",
        f"{'mean ms':>8}",
        f"{'p95 ms':>8}",
        f"{'/zxing':>7}",
    ]
)


def _time(reader: Reader, img: np.ndarray) -> tuple[float, set[bytes], set[str]]:
    t0 = time.perf_counter()
    got_bytes, got_text = reader(img)
    return (time.perf_counter() - t0) * 1000.0, got_bytes, got_text


_WORDS = ("comprime", "matin", "soir", "pendant", "jours", "gelule", "boite", "par", "jour", "mg")


def counter_views(seed: int, n: int, size: tuple[int, int] = (1280, 720)) -> list[tuple[str, Grey]]:
    """Plain counter views without any code, `n` of each kind: a lighting gradient, sensor
    noise, a hand passing under the camera, a page of text held up (print of any size)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    views: list[tuple[str, Grey]] = []

    def camera(img: np.ndarray, noise: float) -> Grey:
        return np.clip(img + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8)

    for _ in range(n):
        a = rng.uniform(0, 2 * np.pi)
        ramp = (xx * np.cos(a) + yy * np.sin(a)) / (w + h)
        views.append(("gradient", camera(rng.uniform(40, 120) + rng.uniform(40, 200) * ramp, 2)))
        flat = np.full((h, w), rng.uniform(60, 190))
        views.append(("noise", camera(flat, rng.uniform(3, 25))))
        img = Image.new("L", size, int(rng.integers(60, 170)))
        draw = ImageDraw.Draw(img)
        cx, cy, r = (
            rng.uniform(0.25 * w, 0.7 * w),
            rng.uniform(0.3 * h, 0.7 * h),
            rng.uniform(100, 250),
        )
        skin = int(rng.integers(120, 210))
        draw.ellipse([cx - r, cy - 0.8 * r, cx + r, cy + 0.8 * r], fill=skin)
        for k in range(4):
            fy = cy + (k - 1.5) * 0.4 * r
            draw.ellipse([cx + 0.6 * r, fy - 0.15 * r, cx + 1.8 * r, fy + 0.15 * r], fill=skin)
        hand = img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))
        views.append(("hand", camera(np.asarray(hand, np.float64), 2)))
        img = Image.new("L", size, int(rng.integers(70, 150)))
        draw = ImageDraw.Draw(img)
        x0, y0 = rng.uniform(0.05 * w, 0.3 * w), rng.uniform(0.02 * h, 0.2 * h)
        draw.rectangle([x0, y0, x0 + 0.6 * w, y0 + 1.2 * h], fill=int(rng.integers(200, 250)))
        px = int(rng.integers(12, 32))
        font = ImageFont.load_default(size=px)
        y = y0 + px
        while y < h:
            line = " ".join(_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=8))
            draw.text((x0 + px, y), line, fill=int(rng.integers(0, 60)), font=font)
            y += px * rng.uniform(1.3, 1.8)
        page = img.rotate(rng.uniform(-25, 25), Image.Resampling.BILINEAR, fillcolor=100)
        page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
        views.append(("text page", camera(np.asarray(page, np.float64), 2)))
    return views


def blank_frames() -> list[tuple[str, Grey]]:
    """The generator's blank counter scenes (easy and hard) and plain counter views."""
    frames: list[tuple[str, Grey]] = [
        ("blank scene", render("blank", seed, difficulty=d).image)
        for seed in range(BLANK_SCENES)
        for d in ("easy", "hard")
    ]
    return frames + counter_views(SEED, BLANK_VIEWS)


def bench_blank(readers: list[tuple[Tally, Reader]], frames: list[tuple[str, Grey]]) -> None:
    """Time each reader on each blank frame, in turn; print the table, by kind of view."""
    kinds = list(dict.fromkeys(kind for kind, _ in frames))
    by_kind: dict[tuple[str, str], list[float]] = {
        (t.name, k): [] for t, _ in readers for k in kinds
    }
    for kind, img in frames:
        for tally, reader in readers:
            ms, got, _ = _time(reader, img)
            tally.ms.append(ms)
            by_kind[tally.name, kind].append(ms)
            tally.strays += len(got)
    base = statistics.fmean(readers[0][0].ms)
    base_kind = {k: statistics.fmean(by_kind[readers[0][0].name, k]) for k in kinds}
    counts = ", ".join(f"{sum(k == kind for k, _ in frames)} {kind}" for kind in kinds)
    print(f"\nDecoders on {len(frames)} blank frames, 1280x720 (no code in view): {counts}")
    columns = [f"{'decoder':<34}", f"{'stray':>6}", f"{'mean ms':>8}", f"{'p95 ms':>8}"]
    print("  ".join([*columns, f"{'/zxing':>7}", "  mean ms by view (/zxing)"]))
    for tally, _ in readers:
        mean = statistics.fmean(tally.ms)
        views = ", ".join(
            f"{k} {statistics.fmean(by_kind[tally.name, k]):.1f}"
            f" ({statistics.fmean(by_kind[tally.name, k]) / base_kind[k]:.2f}x)"
            for k in kinds
        )
        cells = [
            f"{tally.name:<34}",
            f"{tally.strays:>6}",
            f"{mean:8.1f}",
            f"{float(np.percentile(tally.ms, 95)):8.1f}",
            f"{mean / base:6.2f}x",
            f"  {views}",
        ]
        print("  ".join(cells))


@pytest.mark.bench
def test_bench_decoder() -> None:
    ours = Decoder()  # the daemon's default budget (config scan.decode_budget_ms) and duty cycle
    unbounded = Decoder(budget_ms=10_000, duty=None)
    readers: list[tuple[Tally, Reader]] = [
        (Tally("zxing-cpp read_barcodes (default)"), _zxing),
        (Tally("pyzbar decode"), _pyzbar),
        (Tally("OpenCV QRCodeDetector"), _opencv),
        (Tally(f"ordoscan Decoder ({ours.budget_ms:g} ms budget)"), _ours(ours)),
        (Tally("ordoscan Decoder (every pass due)"), _ours(unbounded)),
    ]

    t0 = time.perf_counter()
    scenes = list(scene_set(SEED, FRAMES, "hard"))
    made = time.perf_counter() - t0
    for _, reader in readers:  # warm-up: libraries loaded, the decoder's pass costs learnt
        for s in scenes[:3]:
            reader(s.image)
    n_codes = sum(len(s.truth) for s in scenes)
    n_ordo = sum(k is Kind.ORDONNANCE for s in scenes for k, _ in s.truth)
    with_code = sum(bool(s.truth) for s in scenes)
    for s in scenes:
        truth = {p.encode() for _, p in s.truth}
        for tally, reader in readers:
            ms, got, _ = _time(reader, s.image)
            tally.ms.append(ms)
            tally.codes += sum(p.encode() in got for _, p in s.truth)
            tally.ordonnances += sum(p.encode() in got for k, p in s.truth if k is Kind.ORDONNANCE)
            tally.frames_read += bool(s.truth) and s.truth[0][1].encode() in got
            tally.strays += len(got - truth)

    base = statistics.fmean(readers[0][0].ms)
    print(
        f"\n\nDecoders on {FRAMES} mixed hard scenes, 1280x720 (seed {SEED}, made in {made:.0f} s):"
        f" {with_code} frames with a code, {n_codes} codes, {n_ordo} ordonnance QR codes"
    )
    print(HEADER)
    for tally, _ in readers:
        print(tally.row(base, with_code, n_codes, n_ordo))
    st = ours.stats()
    print(
        f"ordoscan Decoder (budget): {st.hard_frames} hard frames, {st.budget_stops} cut by the "
        f"budget, {st.duty_stops} by the duty cycle, {st.blank_frames} with no sign of a code; "
        f"{st.extra_symbols} symbols found by extra passes"
    )
    scene_tallies = [t for t, _ in readers]

    corpus_tallies: list[Tally] = []
    if CORPUS.is_dir():
        images = []
        for folder in sorted(CORPUS.glob("qrcode-*")):
            for p in sorted(folder.iterdir()):
                if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".gif", ".bmp"}:
                    txt, binary = p.with_suffix(".txt"), p.with_suffix(".bin")
                    want = (
                        txt.read_bytes().decode("utf-8")
                        if txt.exists()
                        else binary.read_bytes().decode("latin-1")
                    )
                    images.append((load_image(p), want))
        readers_c: list[tuple[Tally, Reader]] = [(Tally(t.name), r) for t, r in readers]
        for img, want in images:
            for tally, reader in readers_c:
                ms, _, texts = _time(reader, img)
                tally.ms.append(ms)
                hit = want in texts
                tally.codes += hit
                tally.frames_read += hit
        base_c = statistics.fmean(readers_c[0][0].ms)
        print(f"\nDecoders on ZXing's {len(images)} black-box QR images (exact text)")
        print(HEADER)
        for tally, _ in readers_c:
            print(tally.row(base_c, len(images), len(images), 0))
        corpus_tallies = [t for t, _ in readers_c]
    else:
        print(f"\n(ZXing corpus not found at {CORPUS}: corpus table skipped)")

    blank_readers: list[tuple[Tally, Reader]] = [
        (Tally(t.name), r) for t, r in (readers[0], readers[3], readers[4])
    ]
    frames = blank_frames()
    for _, reader in blank_readers:  # warm-up
        for _, img in frames[:3]:
            reader(img)
    before = ours.stats()
    bench_blank(blank_readers, frames)
    after = ours.stats()
    print(
        f"ordoscan Decoder (budget): extra passes due on {after.hard_frames - before.hard_frames}"
        f" of {len(frames)} blank frames (a region the fast pass could not read), none on"
        f" {after.blank_frames - before.blank_frames}"
    )

    raw, ours_t = scene_tallies[0], scene_tallies[3]
    ratio = statistics.fmean(ours_t.ms) / base
    blank_ratio = statistics.fmean(blank_readers[1][0].ms) / statistics.fmean(
        blank_readers[0][0].ms
    )
    print(
        f"\nours / raw zxing-cpp, mean time per 1280x720 frame: hard set {ratio:.2f}x"
        f" (target <= {TARGET_RATIO:g}x), blank frames {blank_ratio:.2f}x"
        f" (target <= {BLANK_RATIO:g}x); ordonnance QR codes read on the hard set"
        f" {ours_t.ordonnances}/{n_ordo} (target >= {ORDONNANCE_RATE:.0%})"
    )
    assert ours_t.codes > raw.codes and ours_t.ordonnances > raw.ordonnances
    assert ours_t.ordonnances >= ORDONNANCE_RATE * n_ordo
    assert ratio <= TARGET_RATIO
    assert blank_ratio <= BLANK_RATIO
    assert all(t.strays == 0 for t, _ in blank_readers)
    if corpus_tallies:
        assert corpus_tallies[3].codes >= corpus_tallies[0].codes
