"""Decoder: real zxing-cpp on real images; symbols, views, passes, budget, duty cycle, corrupt
input, files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from ordoscan.classifier import Kind
from ordoscan.decoder import (
    BUSY_PASS,
    DEFOCUS_PASSES,
    EXTRA_PASSES,
    FAST_PASSES,
    Decoder,
    DecodeStats,
    Symbol,
    load_image,
    warp,
)
from ordoscan.decoder.passes import DEBLUR_LATE_PASSES, FLATTEN_PASS
from ordoscan.decoder.regions import Box
from ordoscan.devtools.scenes import render
from ordoscan.errors import DecodeError
from PIL import Image, ImageDraw, ImageFilter, ImageFont

EPU = "01S2TBPZ2JCNZZYGHZ"
OTHER_EPU = "01AAAABBBBCCCCDDDD"
GS = "\x1d"
GS1 = f"01034009300000141727013110AB12{GS}21XYZ123"  # GTIN 03400930000014, expiry, lot, serial


def code(text: str, fmt: str = "qr", scale: int = 6, **opts: object) -> np.ndarray:
    """A code made with zxing-cpp's writer, with its quiet zone, black on white."""
    bf = zxingcpp.BarcodeFormat.QRCode if fmt == "qr" else zxingcpp.BarcodeFormat.DataMatrix
    bc = zxingcpp.create_barcode(text, bf, **opts)
    return np.asarray(zxingcpp.write_barcode_to_image(bc, scale=scale, add_quiet_zones=True))


def place(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> None:
    canvas[y : y + img.shape[0], x : x + img.shape[1]] = img


def frame_with(
    *items: tuple[np.ndarray, int, int], size: tuple[int, int] = (640, 480)
) -> np.ndarray:
    canvas = np.full((size[1], size[0]), 235, np.uint8)
    for img, x, y in items:
        place(canvas, img, x, y)
    return canvas


def gs1_bracketed(element_string: str) -> str:
    """The writer's input for GS1 (its own bracket syntax)."""
    assert element_string == GS1
    return "[01]03400930000014[17]270131[10]AB12[21]XYZ123"


# --- symbols -----------------------------------------------------------------


def test_qr_symbol_fields_and_position() -> None:
    qr = code(EPU, scale=6)  # 4-module quiet zone: the symbol starts 24 px in
    frame = frame_with((qr, 100, 50))
    symbols = Decoder().decode(frame)
    assert len(symbols) == 1
    s = symbols[0]
    assert (s.format, s.symbology_id, s.text, s.raw) == ("QRCode", "]Q1", EPU, EPU.encode())
    # corners clockwise from top-left, in frame pixels (within a pixel or two of the truth)
    side = qr.shape[0] - 2 * 24
    want = ((124, 74), (124 + side, 74), (124 + side, 74 + side), (124, 74 + side))
    assert len(s.position) == 4
    for (x, y), (wx, wy) in zip(s.position, want, strict=True):
        assert abs(x - wx) <= 2 and abs(y - wy) <= 2, s.position


def test_gs1_datamatrix_has_d2_and_gs_separators() -> None:
    dm = code(gs1_bracketed(GS1), "dm", scale=6, gs1=True, forceSquare=True)
    symbols = Decoder().decode(frame_with((dm, 200, 120)))
    assert [(s.format, s.symbology_id, s.text, s.raw) for s in symbols] == [
        ("DataMatrix", "]d2", GS1, GS1.encode())
    ]


def test_plain_datamatrix_and_qr_in_one_frame() -> None:
    ins_like = "IS01" + "X" * 30  # shape only; this test never looks at patients
    frame = frame_with((code(EPU), 20, 20), (code(ins_like, "dm", forceSquare=True), 330, 60))
    found = {(s.format, s.symbology_id, s.text) for s in Decoder().decode(frame)}
    assert found == {("QRCode", "]Q1", EPU), ("DataMatrix", "]d1", ins_like)}


def test_phone_dark_mode_inverted_code() -> None:
    frame = 255 - frame_with((code(EPU, scale=5), 150, 100))  # light modules on a dark screen
    assert [s.text for s in Decoder().decode(frame)] == [EPU]


def test_other_symbologies_are_not_read() -> None:
    """QR Code and DataMatrix only: an Aztec or a Code 128 beside them is ignored."""
    aztec = np.asarray(
        zxingcpp.write_barcode_to_image(
            zxingcpp.create_barcode("AZTEC", zxingcpp.BarcodeFormat.Aztec), scale=6
        )
    )
    c128 = np.asarray(
        zxingcpp.write_barcode_to_image(
            zxingcpp.create_barcode("CODE128", zxingcpp.BarcodeFormat.Code128), scale=3
        )
    )
    frame = frame_with((aztec, 20, 20), (c128, 20, 300), (code(EPU, scale=4), 400, 40))
    assert {b.text for b in zxingcpp.read_barcodes(frame)} == {"AZTEC", "CODE128", EPU}
    assert [s.text for s in Decoder().decode(frame)] == [EPU]


def test_symbol_found_by_several_passes_is_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged code makes the frame hard; in a small frame its region is most of the frame,
    so the extra passes search the whole of it and read the good code again: reported once."""
    good_reads = 0
    real = zxingcpp.read_barcodes

    def counting(image: np.ndarray, **options: object) -> list[zxingcpp.Barcode]:
        nonlocal good_reads
        results = real(image, **options)  # type: ignore[arg-type]
        good_reads += sum(r.valid and r.text == EPU for r in results)
        return results

    monkeypatch.setattr(zxingcpp, "read_barcodes", counting)
    decoder = Decoder(budget_ms=10_000)
    frame = frame_with((code(EPU, scale=3), 5, 5), (damaged(scale=3), 105, 5), size=(200, 100))
    symbols = decoder.decode(frame)
    assert [s.text for s in symbols] == [EPU]
    stats = decoder.stats()
    assert stats.hard_frames == 1 and stats.extra_symbols == 0
    assert good_reads >= 2


def test_strided_y_plane_of_a_yuv_buffer() -> None:
    """The camera gives the Y plane as a view with a row stride wider than the image."""
    w, h, stride = 640, 480, 704
    yuv = np.full((h * 3 // 2, stride), 128, np.uint8)  # I420 layout: Y rows, then U and V
    y_plane = yuv[:h, :w]
    place(y_plane, code(EPU, scale=5), 300, 200)
    assert not y_plane.flags.c_contiguous and y_plane.strides == (stride, 1)
    assert [s.text for s in Decoder().decode(y_plane)] == [EPU]
    # other views: every second pixel, upside down, a (h, w, 1) array
    big = np.kron(frame_with((code(EPU, scale=3), 100, 100)), np.ones((2, 2), np.uint8))
    assert [s.text for s in Decoder().decode(big[::2, ::2])] == [EPU]
    assert [s.text for s in Decoder().decode(frame_with((code(EPU), 50, 50))[::-1])] == [EPU]
    assert [s.text for s in Decoder().decode(frame_with((code(EPU), 50, 50))[:, :, None])] == [EPU]


# --- extra passes: only where a code went unread, within the budget and the duty cycle


class TickClock:
    """A monotonic clock that advances a fixed step each time it is read."""

    def __init__(self, step_ms: float) -> None:
        self.t = 1000.0
        self.step = step_ms / 1000.0

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def damaged(scale: int = 6) -> np.ndarray:
    """A QR Code zxing-cpp detects but cannot decode: a data block blacked out, finders intact."""
    bad = code(OTHER_EPU, scale=scale).copy()
    bad[13 * scale : 25 * scale, 13 * scale : 25 * scale] = 0
    return bad


def unreadable() -> np.ndarray:
    """A counter with a detected-but-unreadable code on it: the extra passes are due.
    Its paper is as light as the counter, not clipped white (that would add the erode pass)."""
    bad = damaged()
    return frame_with((np.minimum(bad, 235), 260, 10))


def blank(seed: int = 1) -> np.ndarray:
    """A noisy counter with nothing on it."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120, 20, (360, 640)), 0, 255).astype(np.uint8)


def counter_views() -> dict[str, np.ndarray]:
    """What the camera sees most of the day: no code in view."""
    h, w = 360, 640
    yy, xx = np.mgrid[0:h, 0:w]
    hand = Image.new("L", (w, h), 90)
    draw = ImageDraw.Draw(hand)
    draw.ellipse([200, 100, 380, 250], fill=170)  # a palm and four fingers
    for k in range(4):
        draw.ellipse([360, 110 + 35 * k, 520, 140 + 35 * k], fill=170)
    views = {
        "flat": np.full((h, w), 140, np.uint8),
        "dark": np.zeros((h, w), np.uint8),
        "gradient": (40 + 160 * (xx + yy) / (w + h)).astype(np.uint8),
        "noise": blank(),
        "hand": np.asarray(hand.filter(ImageFilter.GaussianBlur(3))),
    }
    for seed in (0, 1, 2):  # the scene generator's blank counters
        views[f"scene {seed}"] = render("blank", seed, difficulty="hard").image
    return views


def test_blank_frames_run_no_extra_pass() -> None:
    clock = TickClock(1.0)
    decoder = Decoder(budget_ms=10_000, clock=clock)
    views = counter_views()
    for name, frame in views.items():
        before = clock.t
        assert decoder.decode(frame) == [], name
        # the start and the end only: every extra pass reads the clock before and after
        assert clock.t - before == pytest.approx(2 * 0.001), name
    s = decoder.stats()
    assert (s.frames, s.hard_frames, s.blank_frames) == (len(views), 0, len(views))


def test_unreadable_code_gets_extra_passes_on_its_region(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, ...]] = []
    real = zxingcpp.read_barcodes

    def spy(image: np.ndarray, **options: object) -> list[zxingcpp.Barcode]:
        shapes.append(np.asarray(image).shape)
        return real(image, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(zxingcpp, "read_barcodes", spy)
    decoder = Decoder(budget_ms=10_000, clock=TickClock(1.0))
    frame = unreadable()
    assert decoder.decode(frame) == []
    s = decoder.stats()
    assert (s.hard_frames, s.blank_frames, s.budget_stops, s.duty_stops) == (1, 0, 0, 0)
    assert shapes[: len(FAST_PASSES)] == [frame.shape] * len(FAST_PASSES)
    extra = shapes[len(FAST_PASSES) :]
    # every extra pass, on one region, then the flatten pass on the detected code: the
    # region, then each symbol it detects there resampled on its own grid
    k = len(EXTRA_PASSES)
    assert len(extra) >= k + 1
    side = code(OTHER_EPU).shape[0]  # the code with its quiet zone
    for shape, p in zip(extra[: k + 1], (*EXTRA_PASSES, FLATTEN_PASS), strict=True):
        h, w = (round(n / p.scale) for n in shape)
        assert side * 0.7 <= h <= side * 1.3 and side * 0.7 <= w <= side * 1.3, (p.name, shape)
    for shape in extra[k + 1 :]:  # square, PPM pixels a module with a quiet zone
        assert shape[0] == shape[1] and shape[0] % warp.PPM == 0, shape


def test_code_only_the_region_finder_saw_is_read_where_it_is() -> None:
    """A small blurred QR Code the fast pass neither reads nor detects (a hard counter scene):
    the region finder points the extra passes at it, and its corners are given in the frame."""
    scene = render("ordonnance", 700151, difficulty="hard")
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    assert Decoder(budget_ms=0).decode(scene.image) == []
    qr = zxingcpp.BarcodeFormats([zxingcpp.BarcodeFormat.QRCode])
    assert zxingcpp.read_barcodes(scene.image, formats=qr, return_errors=True) == []
    decoder = Decoder(budget_ms=10_000)
    symbols = [s for s in decoder.decode(scene.image) if s.text == epu]
    assert len(symbols) == 1 and decoder.stats().extra_symbols >= 1
    # the same code read by zxing-cpp on the whole frame upscaled 1.5x, mapped back
    h, w = scene.image.shape
    up = np.asarray(Image.fromarray(scene.image).resize((w * 3 // 2, h * 3 // 2)))
    whole = next(r for r in zxingcpp.read_barcodes(up) if r.text == epu)
    p = whole.position
    corners = (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
    want = [(c.x / 1.5, c.y / 1.5) for c in corners]
    for (x, y), (wx, wy) in zip(symbols[0].position, want, strict=True):
        assert abs(x - wx) <= 3 and abs(y - wy) <= 3, (symbols[0].position, want)


def test_a_page_of_text_is_searched_in_parts_never_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large print can look like a code to the region finder: it then costs a few small
    regions, not the extra passes over the whole frame."""
    page = Image.new("L", (1280, 720), 100)
    draw = ImageDraw.Draw(page)
    draw.rectangle([120, 40, 1160, 700], fill=235)
    words = ("comprime", "matin", "soir", "pendant", "jours", "gelule", "boite", "par", "jour")
    for i, y in enumerate(range(60, 680, 42)):
        line = " ".join(words[(i + j) % len(words)] for j in range(12))
        draw.text((150, y), line, fill=30, font=ImageFont.load_default(size=30))
    frame = np.asarray(page.rotate(15, Image.Resampling.BILINEAR, fillcolor=100))
    areas: list[float] = []
    real = zxingcpp.read_barcodes

    def spy(image: np.ndarray, **options: object) -> list[zxingcpp.Barcode]:
        areas.append(np.asarray(image).size / frame.size)
        return real(image, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(zxingcpp, "read_barcodes", spy)
    decoder = Decoder(budget_ms=10_000)
    assert decoder.decode(frame) == []
    extra = areas[len(FAST_PASSES) :]
    assert extra, "this page looks code-like to the region finder: the test needs it to"
    # each pass over at most the regions' share of the frame, upscaled
    assert sum(extra) <= 3 * 0.5 * sum(p.scale**2 for p in EXTRA_PASSES)
    assert max(extra) < 0.5 * max(p.scale**2 for p in EXTRA_PASSES)


def test_easy_frame_gets_no_extra_pass() -> None:
    clock = TickClock(1.0)
    decoder = Decoder(budget_ms=10_000, clock=clock)
    decoder.decode(frame_with((code(EPU), 10, 10)))
    reads = clock.t
    s = decoder.stats()
    assert (s.frames, s.hard_frames, s.budget_stops, s.blank_frames) == (1, 0, 0, 0)
    assert reads == pytest.approx(1000.0 + 2 * 0.001)  # only the start and the end were read


def test_budget_zero_turns_extra_passes_off() -> None:
    decoder = Decoder(budget_ms=0)
    assert decoder.decode(unreadable()) == []
    s = decoder.stats()
    assert (s.hard_frames, s.budget_stops) == (1, 1)


def test_passes_stop_when_the_budget_runs_out() -> None:
    """Each clock read is 10 ms: with a 35 ms budget not every pass fits, and no frame
    runs past the budget by more than one pass once the costs are learnt."""
    budget = 35.0
    decoder = Decoder(budget_ms=budget, clock=TickClock(10.0), duty=None)
    for i in range(5):
        decoder.decode(frame_with((damaged(), 40 * i, 10 * i)))
        if i:  # from the second frame the decoder knows what a pass costs
            # start, fast end, then per pass a before and an after read, then the end
            assert decoder.stats().last_ms <= 10 + budget + 10 + 1e-6
    s = decoder.stats()
    assert (s.frames, s.hard_frames, s.budget_stops, s.duty_stops) == (5, 5, 5, 0)
    generous = Decoder(budget_ms=10_000, clock=TickClock(10.0))
    generous.decode(unreadable())
    assert generous.stats().budget_stops == 0
    assert generous.stats().last_ms > s.last_ms  # it ran every pass


def test_a_pass_its_estimate_puts_over_any_budget_is_skipped_and_tried_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One slow first measurement (a cold cache, a busy core) must neither stop the cheaper
    passes after it on every frame nor keep its pass off for good: it is skipped while its
    estimate is over the budget, and the estimate ages until the pass runs again."""
    import ordoscan.decoder as dec

    ran: list[list[str]] = [[]]
    mpx: list[float] = []  # the pixels each run of the first extra pass read
    first = EXTRA_PASSES[0]
    real = dec.run_pass

    def spy(p: Any, frame: Any, box: Any, *rest: Any) -> Any:
        ran[-1].append(p.name)
        if p is first:
            mpx.append(box.area * p.scale * p.scale / 1e6)
        return real(p, frame, box, *rest)

    monkeypatch.setattr(dec, "run_pass", spy)
    budget = 10_000.0
    Decoder(budget_ms=budget, clock=TickClock(1.0), duty=None).decode(unreadable())
    assert len(mpx) == 1  # one region for it on this frame
    decoder = Decoder(budget_ms=budget, clock=TickClock(1.0), duty=None)
    decoder._cost[first.name] = 3 * budget / mpx[0]  # three budgets on that region
    ran.clear()
    for _ in range(12):
        ran.append([])
        decoder.decode(unreadable())
    assert first.name not in ran[0] and len(ran[0]) > 0  # skipped, and the others still ran
    assert decoder.stats().budget_stops == 0
    back = next(i for i, names in enumerate(ran) if first.name in names)
    assert 0 < back < 12  # its estimate aged (x0.8 a skip) until it fitted again
    assert decoder._cost[first.name] * mpx[0] < budget  # once run, it was measured afresh


def test_duty_cycle_rations_a_run_of_hard_frames() -> None:
    """Each frame earns 30 ms of extra passes (0.3 of a 100 ms interval), saved up to 300 ms:
    a burst of hard frames gets every pass, a long run is rationed, blank frames earn it back."""
    step = 5.0
    # start to end, in clock reads: two per pass (the generic ones, the late deblur pass,
    # then the flatten pass, the defocus passes on the detected code and the unsmear pass)
    every_pass = (2 + 2 * (len(EXTRA_PASSES) + len(DEBLUR_LATE_PASSES) + 1
                           + len(DEFOCUS_PASSES) + 1)) * step
    budget = every_pass - 2 * step  # every pass of one frame fits
    decoder = Decoder(budget_ms=budget, clock=TickClock(step), duty=0.3, fps=10)
    frames = 40
    extra_ms = 0.0
    for i in range(frames):
        decoder.decode(unreadable())
        last = decoder.stats().last_ms
        extra_ms += last - step  # the extra passes start one read after the start
        if i < 3:  # the 300 ms saved up, with what the frames earn, pay for three
            assert last == pytest.approx(every_pass)
    s = decoder.stats()
    assert s.hard_frames == frames and s.budget_stops == 0
    assert s.duty_stops >= frames // 4
    # what was saved, plus what the frames earned, plus one pass's overrun (a pass
    # starts when its expected cost fits and takes what it takes)
    assert extra_ms <= 300 + frames * 30 + 2 * step + 1e-6
    assert extra_ms >= 300 + (frames - 1) * 30 - every_pass  # and the credit was used
    for _ in range(10):  # a second of blank counter
        decoder.decode(blank())
    decoder.decode(unreadable())
    assert decoder.stats().last_ms == pytest.approx(every_pass)
    assert decoder.stats().duty_stops == s.duty_stops

    unrationed = Decoder(budget_ms=budget, clock=TickClock(step), duty=None)
    for _ in range(frames):
        unrationed.decode(unreadable())
        assert unrationed.stats().last_ms == pytest.approx(every_pass)
    assert unrationed.stats().duty_stops == 0


def test_big_frames_skip_the_upscaled_passes() -> None:
    """A 12 MP photo whose damaged code fills most of it is searched whole, but not
    upscaled (x1.5 would be 27 MP, x2.5 75 MP): fewer passes, the good code still read."""
    photo = np.full((3000, 4000), 230, np.uint8)
    place(photo, np.minimum(damaged(scale=60), 230), 100, 100)  # not clipped: no erode pass
    place(photo, code(EPU, scale=20), 3100, 500)
    big = Decoder(10_000, clock=TickClock(1.0))
    small = Decoder(10_000, clock=TickClock(1.0))
    assert [s.text for s in big.decode(photo)] == [EPU]
    small.decode(unreadable())
    assert big.stats().hard_frames == small.stats().hard_frames == 1
    assert big.stats().last_ms < small.stats().last_ms  # fewer clock reads: fewer passes


def test_stats_mean_last_max() -> None:
    clock = TickClock(2.0)
    decoder = Decoder(budget_ms=10_000, clock=clock)
    assert decoder.stats() == DecodeStats(0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0)
    decoder.decode(frame_with((code(EPU), 10, 10)))  # easy: 2 reads -> 2 ms
    decoder.decode(unreadable())  # hard: more reads
    s = decoder.stats()
    assert s.frames == 2
    assert s.last_ms > 2.0 and s.max_ms == s.last_ms
    assert s.mean_ms == pytest.approx((2.0 + s.last_ms) / 2)


def test_bad_budget_duty_or_fps_is_refused() -> None:
    for bad in (-1.0, float("nan")):
        with pytest.raises(DecodeError, match="budget_ms"):
            Decoder(budget_ms=bad)
    for duty in (-0.1, 1.5, float("nan")):
        with pytest.raises(DecodeError, match="duty"):
            Decoder(duty=duty)
    for fps in (0.0, -15.0, float("nan")):
        with pytest.raises(DecodeError, match="fps"):
            Decoder(fps=fps)


def test_payloads_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    frame = frame_with((code(EPU), 10, 10), (code(OTHER_EPU), 300, 10))
    assert len(Decoder().decode(frame)) == 2
    assert EPU not in caplog.text and OTHER_EPU not in caplog.text
    assert EPU[-4:] not in caplog.text


# --- corrupt input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros((100, 100), np.float32), "dtype float32"),
        (np.zeros((100, 100), np.uint16), "dtype uint16"),
        (np.zeros((100, 100, 3), np.uint8), "shape (100, 100, 3)"),
        (np.zeros((10, 10, 10, 1), np.uint8), "shape"),
        (np.zeros(100, np.uint8), "shape (100,)"),
        ([[0, 255], [255, 0]], "list"),
        (None, "NoneType"),
        (b"\x00" * 64, "bytes"),
        (np.zeros((20000, 10), np.uint8), "too large"),
    ],
)
def test_corrupt_frames_raise_decode_error(bad: object, words: str) -> None:
    decoder = Decoder()
    with pytest.raises(DecodeError) as e:
        decoder.decode(bad)  # type: ignore[arg-type]
    assert words in str(e.value)
    # and the decoder keeps working afterwards
    assert [s.text for s in decoder.decode(frame_with((code(EPU), 10, 10)))] == [EPU]


@pytest.mark.parametrize("shape", [(0, 0), (0, 640), (480, 0), (1, 1), (3, 500), (7, 7)])
def test_empty_or_tiny_frames_have_no_symbols(shape: tuple[int, int]) -> None:
    assert Decoder().decode(np.zeros(shape, np.uint8)) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.float64, np.bool_]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=48),
    )
)
def test_any_array_gives_symbols_or_decode_error(arr: np.ndarray) -> None:
    try:
        out = Decoder(budget_ms=5).decode(arr)
    except DecodeError:
        return
    assert isinstance(out, list) and all(isinstance(s, Symbol) for s in out)


def test_noise_and_flat_frames() -> None:
    decoder = Decoder(budget_ms=10_000)
    rng = np.random.default_rng(7)
    for frame in (
        rng.integers(0, 256, (720, 1280), dtype=np.uint8),
        np.zeros((720, 1280), np.uint8),
        np.full((720, 1280), 255, np.uint8),
    ):
        assert decoder.decode(frame) == []


# --- image files ------------------------------------------------------------------


@pytest.fixture
def qr_page() -> Iterator[np.ndarray]:
    yield frame_with((code(EPU, scale=5), 60, 40), size=(320, 240))


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [
        (".png", "L"),
        (".png", "RGB"),
        (".jpg", "RGB"),
        (".gif", "P"),
        (".bmp", "1"),
        (".png", "I;16"),
        (".tiff", "I"),
        (".tiff", "F"),
        (".webp", "RGB"),
        (".png", "CMYK"),
    ],
)
def test_load_image_modes(tmp_path: Path, qr_page: np.ndarray, suffix: str, mode: str) -> None:
    img = Image.fromarray(qr_page)
    if mode == "I;16":
        img = Image.fromarray(qr_page.astype(np.uint16) * 257)  # full 16-bit range
    elif mode == "I":
        img = Image.fromarray(qr_page.astype(np.int32) * 257)
    elif mode == "F":
        img = Image.fromarray(qr_page.astype(np.float32) / 255.0)
    elif mode == "CMYK":
        img = img.convert("RGB").convert("CMYK")
        suffix = ".jpg"
    else:
        img = img.convert(mode)
    path = tmp_path / f"scan{suffix}"
    img.save(path)
    grey = load_image(path)
    assert grey.dtype == np.uint8 and grey.shape == qr_page.shape
    assert [s.text for s in Decoder().decode(grey)] == [EPU]


def test_load_image_transparent_background_is_white(tmp_path: Path) -> None:
    """A code drawn on a transparent canvas (as exported by apps) is black on white."""
    qr = code(EPU, scale=5)
    rgba = np.zeros((*qr.shape, 4), np.uint8)  # fully transparent black
    rgba[..., 3] = np.where(qr < 128, 255, 0)  # only the dark modules are opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "code.png")
    grey = load_image(tmp_path / "code.png")
    assert grey.max() == 255 and grey.min() == 0
    assert [s.text for s in Decoder().decode(grey)] == [EPU]


def test_load_image_exif_orientation(tmp_path: Path, qr_page: np.ndarray) -> None:
    img = Image.fromarray(qr_page).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert load_image(tmp_path / "phone.jpg").shape == qr_page.shape


def test_load_image_errors_name_the_file(tmp_path: Path, qr_page: np.ndarray) -> None:
    (tmp_path / "notes.png").write_text("not an image at all\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.fromarray(qr_page).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "folder.png").mkdir()
    cases = {
        "missing.png": "no such file",
        "notes.png": "not an image",
        "empty.jpg": "not an image",
        "cut.png": "unreadable image",
        "folder.png": "directory",
    }
    for name, words in cases.items():
        path = tmp_path / name
        with pytest.raises(DecodeError) as e:
            load_image(path)
        assert str(path) in str(e.value) and words in str(e.value), str(e.value)


def test_load_image_refuses_decompression_bombs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("L", (400, 400), 255).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # PIL's own guard, lowered
    with pytest.raises(DecodeError, match="too large"):
        load_image(tmp_path / "big.png")


# --- the busy pass: nothing read on a view that is not blank, its busy part upscaled


def busy_counter() -> np.ndarray:
    """A counter with a patch of random blocks: code-like texture, but no code to read."""
    frame = np.full((360, 640), 170, np.uint8)
    rng = np.random.default_rng(3)
    patch = np.where(rng.random((30, 30)) < 0.5, 30, 220).astype(np.uint8)
    place(frame, np.kron(patch, np.ones((3, 3), np.uint8)), 300, 120)
    return frame


def busy_boxes(decoder: Decoder, frame: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> list[Box]:
    """The boxes BUSY_PASS ran on in one decode()."""
    import ordoscan.decoder as decoder_module

    boxes: list[Box] = []
    real = decoder_module.run_pass

    def spy(p: Any, frame: Any, box: Box, *rest: Any) -> Any:
        if p is BUSY_PASS:
            boxes.append(box)
        return real(p, frame, box, *rest)

    monkeypatch.setattr(decoder_module, "run_pass", spy)
    decoder.decode(frame)
    monkeypatch.setattr(decoder_module, "run_pass", real)
    return boxes


def test_busy_pass_runs_on_the_busy_part_when_nothing_was_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the part of the frame with strong steps both ways, not the whole frame (on the
    dev scenes where it runs that part is 4-23 % of the frame on average)."""
    decoder = Decoder(budget_ms=10_000, clock=TickClock(1.0), duty=None)
    frame = busy_counter()
    (box,) = busy_boxes(decoder, frame, monkeypatch)
    # the 90 px patch at (300, 120), with a margin, and far less than the frame
    assert box.x0 <= 300 and box.y0 <= 120 and box.x1 >= 390 and box.y1 >= 210
    assert box.area < frame.size / 4
    # a code read, a code detected but not read, or a blank view: no busy pass
    assert busy_boxes(decoder, frame_with((code(EPU), 10, 10)), monkeypatch) == []
    assert busy_boxes(decoder, unreadable(), monkeypatch) == []
    for name, view in counter_views().items():
        assert busy_boxes(decoder, view, monkeypatch) == [], name


def test_busy_pass_only_within_budget_and_duty(monkeypatch: pytest.MonkeyPatch) -> None:
    """It is the last pass: a budget spent on the regions' passes, or a spent duty
    cycle, leaves it out (counted runs, not timings)."""
    assert busy_boxes(Decoder(budget_ms=0), busy_counter(), monkeypatch) == []
    tight = Decoder(budget_ms=35, clock=TickClock(10.0), duty=None)
    runs = [len(busy_boxes(tight, busy_counter(), monkeypatch)) for _ in range(4)]
    assert runs[1:] == [0, 0, 0]  # once the costs are learnt, the budget stops it
    generous = Decoder(budget_ms=200, clock=TickClock(5.0), duty=None)
    runs = [len(busy_boxes(generous, busy_counter(), monkeypatch)) for _ in range(10)]
    assert runs == [1] * 10  # this budget has room for it on every frame
    rationed = Decoder(budget_ms=200, clock=TickClock(5.0), duty=0.05, fps=10)
    runs = [len(busy_boxes(rationed, busy_counter(), monkeypatch)) for _ in range(30)]
    assert 0 < sum(runs) < 30 and rationed.stats().duty_stops > 0


def test_a_pass_is_told_when_the_frame_s_limit_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each extra pass gets a `stop` that turns true once the frame's budget, counted from
    the end of the fast pass, is spent: a pass of several steps ends with its current step
    rather than run on for as many budgets as its region happens to cost."""
    t = [1000.0]
    decoder = Decoder(budget_ms=60.0, clock=lambda: t[0], duty=None)
    import ordoscan.decoder as decoder_module

    seen: list[tuple[bool, bool]] = []
    real = decoder_module.run_pass

    def slow_pass(*args: Any) -> list[Any]:
        stop = args[7] if len(args) > 7 else None
        if len(args) < 7:  # the fast pass, on the whole frame
            return real(*args)
        before = stop is not None and stop()
        t[0] += 0.1  # this pass's first step alone takes 100 ms
        seen.append((before, stop is not None and stop()))
        return []

    monkeypatch.setattr(decoder_module, "run_pass", slow_pass)
    decoder.decode(unreadable())
    assert seen and seen[0] == (False, True)
    assert len(seen) == 1  # and no pass starts after it
    assert decoder.stats().budget_stops == 1
