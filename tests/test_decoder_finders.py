"""QR finder patterns as candidates, the pass fitted to a small code, and the main-stream zoom.

Real zxing-cpp on real pictures: codes made by zxing-cpp's writer, drawn on a page of
text lines at 2-3 pixels a module, blurred and noisy as a camera would give them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zxingcpp
from ordoscan.decoder import Decoder
from ordoscan.decoder.finders import find_finders, guess_codes
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tests.test_decoder import TickClock

EPU = "01S2TBPZ2JCNZZYGHZ"
WORDS = [
    "comprime",
    "matin",
    "soir",
    "pendant",
    "jours",
    "gelule",
    "boite",
    "par",
    "jour",
    "mg",
    "fois",
    "repas",
    "apres",
]


def modules(text: str = EPU) -> np.ndarray:
    """The code's modules, True for dark, without a quiet zone."""
    bc = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return np.asarray(zxingcpp.write_barcode_to_image(bc, scale=1, add_quiet_zones=False)) < 128


def text_page(
    module: float, angle: float, blur: float, seed: int = 1, size: tuple[int, int] = (1280, 720)
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A page of small print filling the view, a QR Code among its lines (2 modules of quiet
    zone), turned by `angle` about the code; blur and noise in output pixels.

    Returns the grey frame and the code's centre and side in pixels.
    """
    rng = np.random.default_rng(seed)
    ss = 4  # drawn 4x larger, then box-filtered down: sub-pixel module edges
    w, h = size[0] * ss, size[1] * ss
    m = module * ss
    img = Image.new("L", (w, h), 225)
    draw = ImageDraw.Draw(img)
    px = round(3.5 * m)  # print about as tall as 3.5 modules, as on an A5 ordonnance
    font = ImageFont.load_default(size=px)
    y = px
    while y < h - px:
        draw.text(
            (px, y),
            " ".join(WORDS[int(i)] for i in rng.integers(len(WORDS), size=60)),
            fill=30,
            font=font,
        )
        y += round(1.4 * px)
    qr = modules()
    side = qr.shape[0] * m
    cx, cy = w * 0.45, h * 0.5
    x0, y0 = cx - side / 2, cy - side / 2
    quiet = 2 * m
    draw.rectangle([x0 - quiet, y0 - quiet, x0 + side + quiet, y0 + side + quiet], fill=225)
    tile = Image.fromarray(np.where(qr, 30, 225).astype(np.uint8))
    img.paste(
        tile.resize((round(side), round(side)), Image.Resampling.NEAREST), (round(x0), round(y0))
    )
    img = img.rotate(angle, Image.Resampling.BILINEAR, center=(cx, cy), fillcolor=225)
    img = img.reduce(ss).filter(ImageFilter.GaussianBlur(blur))
    grey = np.asarray(img, np.float64) + rng.normal(0, 2.0, (size[1], size[0]))
    return np.clip(grey, 0, 255).astype(np.uint8), (cx / ss, cy / ss, side / ss)


def isolated(module: float, angle: float, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """One clean code alone on a light counter, `module` pixels a module, turned by `angle`."""
    qr = np.pad(modules(), 4)
    side = round(qr.shape[0] * module)
    tile = Image.fromarray(np.where(qr, 20, 230).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BOX if module < 1 else Image.Resampling.NEAREST
    )
    img = Image.new("L", size, 230)
    img.paste(tile, ((size[0] - side) // 2, (size[1] - side) // 2))
    return np.asarray(img.rotate(angle, Image.Resampling.BILINEAR, fillcolor=230))


@pytest.mark.parametrize(
    ("module", "angle"),
    [(1.6, 0.0), (2.0, 0.0), *((m, a) for m in (2.5, 4.0, 7.0, 12.0) for a in (0.0, 33.0))],
)
def test_finder_patterns_found_at_every_scale(module: float, angle: float) -> None:
    """Three finder centres where the writer put them, with the module size, at any scale
    and rotation (the pyramid's levels), grouped into one code guess that holds the code."""
    frame = isolated(module, angle, size=(900, 900) if module > 8 else (640, 480))
    h, w = frame.shape
    n = modules().shape[0]
    # the writer's finder centres, 3.5 modules in from three corners, turned about the middle
    a = np.deg2rad(-angle)
    want = []
    for u, v in ((3.5, 3.5), (n - 3.5, 3.5), (3.5, n - 3.5)):
        dx, dy = (u - n / 2) * module, (v - n / 2) * module
        want.append(
            (w / 2 + dx * np.cos(a) - dy * np.sin(a), h / 2 + dx * np.sin(a) + dy * np.cos(a))
        )
    found = find_finders(frame, levels=3)
    for x, y in want:
        near = [
            f
            for f in found
            if abs(f.x - x) <= max(2.0, module) and abs(f.y - y) <= max(2.0, module)
        ]
        assert near, (module, angle, (x, y), found)
        assert 0.7 * module <= near[0].module <= 1.5 * module, (module, near[0])
    guesses = [g for g in guess_codes(found, frame.shape) if g.finders == 3]
    assert guesses, found
    g = guesses[0]
    assert g.x0 <= min(x for x, _ in want) and g.x1 >= max(x for x, _ in want)
    assert g.y0 <= min(y for _, y in want) and g.y1 >= max(y for _, y in want)
    assert 0.7 * module <= g.module <= 1.5 * module


@pytest.fixture(scope="module")
def small_in_text() -> tuple[np.ndarray, tuple[float, float, float]]:
    """A small blurred code among lines of text that zxing-cpp alone does not read."""
    frame, where = text_page(2.4, 20.0, 1.0)
    assert EPU not in {r.text for r in zxingcpp.read_barcodes(frame)}
    return frame, where


def test_small_code_among_text_is_proposed_and_read(
    small_in_text: tuple[np.ndarray, tuple[float, float, float]],
) -> None:
    frame, (cx, cy, side) = small_in_text
    guesses = guess_codes(find_finders(frame, 2), frame.shape)
    first = [g for g in guesses if g.x0 <= cx <= g.x1 and g.y0 <= cy <= g.y1]
    assert first and first[0].finders == 3 and guesses.index(first[0]) < 3, guesses
    assert 2.4 * 0.7 <= first[0].module <= 2.4 * 1.5
    decoder = Decoder(budget_ms=10_000, duty=None)
    symbols = [s for s in decoder.decode(frame) if s.text == EPU]
    assert len(symbols) == 1
    # found where it is
    xs = [x for x, _ in symbols[0].position]
    ys = [y for _, y in symbols[0].position]
    assert abs(np.mean(xs) - cx) < side / 4 and abs(np.mean(ys) - cy) < side / 4
    st = decoder.stats()
    assert st.hard_frames == 1 and st.extra_symbols == 1 and st.zooms == 0


class Crops:
    """A zoom: the region of a frame taken from a rendering of the same scene at twice
    its resolution (what picamera2's main stream gives beside the lores one)."""

    def __init__(self, hires: np.ndarray, factor: int) -> None:
        self.hires = hires
        self.factor = factor
        self.boxes: list[tuple[int, int, int, int]] = []

    def __call__(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
        self.boxes.append((x0, y0, x1, y1))
        f = self.factor
        return self.hires[y0 * f : y1 * f, x0 * f : x1 * f]


@pytest.fixture(scope="module")
def two_resolutions() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The page rendered at 2560x1440 with its lens blur, and the 1280x720 frame the ISP
    makes of it (2x2 means): a code too small to read at lores, even upscaled."""
    hires, (cx, cy, side) = text_page(4.8, 20.0, 2.1, seed=3, size=(2560, 1440))
    lores = hires.reshape(720, 2, 1280, 2).mean(axis=(1, 3)).round().astype(np.uint8)
    return hires, lores, (cx / 2, cy / 2, side / 2)


def test_zoom_reads_a_small_code_from_the_main_stream(
    two_resolutions: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
) -> None:
    hires, lores, (cx, cy, side) = two_resolutions
    zoom = Crops(hires, 2)
    decoder = Decoder(budget_ms=10_000, duty=None)
    symbols = [s for s in decoder.decode(lores, zoom) if s.text == EPU]
    assert len(symbols) == 1
    assert decoder.stats().zooms >= 1
    x0, y0, x1, y1 = zoom.boxes[0]  # the first region asked for is the code's
    assert x0 <= cx <= x1 and y0 <= cy <= y1 and (x1 - x0) < 4 * side
    # the position is in lores pixels, where the code is
    assert abs(np.mean([x for x, _ in symbols[0].position]) - cx) < side / 4


def test_no_zoom_without_a_main_stream_nor_on_an_easy_frame(
    two_resolutions: tuple[np.ndarray, np.ndarray, tuple[float, float, float]],
) -> None:
    hires, lores, _ = two_resolutions
    plain = Decoder(budget_ms=10_000, duty=None)
    # no zoom given: the passes read the frame's own pixels, upscaled
    plain.decode(lores)
    assert plain.stats().zooms == 0 and plain.stats().extra_passes >= 1
    zoom = Crops(hires, 2)
    easy = isolated(5.0, 10.0, size=(1280, 720))
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(easy, zoom)] == [EPU]
    assert zoom.boxes == [] and decoder.stats().zooms == 0


def test_a_zoom_that_gives_nothing_falls_back_to_upscaling(
    small_in_text: tuple[np.ndarray, tuple[float, float, float]],
) -> None:
    frame, _ = small_in_text
    asked: list[tuple[int, int, int, int]] = []

    def empty(x0: int, y0: int, x1: int, y1: int) -> np.ndarray | None:
        asked.append((x0, y0, x1, y1))
        return None if len(asked) % 2 else np.zeros((3, 3, 3), np.float32)  # nothing, garbage

    decoder = Decoder(budget_ms=10_000, duty=None)
    assert EPU in {s.text for s in decoder.decode(frame, empty)}
    assert asked and decoder.stats().zooms == 0


def test_budget_and_duty_bound_the_fitted_passes(
    small_in_text: tuple[np.ndarray, tuple[float, float, float]],
) -> None:
    """Counted in passes on a clock that moves 10 ms a read: the budget caps each frame,
    the duty cycle a run of frames; budget 0 runs none."""
    frame, _ = small_in_text
    off = Decoder(budget_ms=0)
    off.decode(frame)
    assert off.stats().extra_passes == 0 and off.stats().budget_stops == 1
    step = 10.0
    budget = 45.0
    capped = Decoder(budget_ms=budget, clock=TickClock(step), duty=None)
    for i in range(3):
        before = capped.stats().extra_passes
        capped.decode(frame)
        # each pass reads the clock twice (20 ms); one may start just before the budget ends
        assert capped.stats().extra_passes - before <= budget // (2 * step) + 1, i
    frames = 30
    rationed = Decoder(budget_ms=budget, clock=TickClock(step), duty=0.3, fps=10)
    for _ in range(frames):
        rationed.decode(frame)
    st = rationed.stats()
    # a second's credit (300 ms) plus 30 ms a frame, 20 ms a pass, one overrun a frame
    assert st.extra_passes <= (300 + frames * 30) / (2 * step) + frames
    assert st.duty_stops >= frames // 3


@pytest.mark.parametrize("shape", [(720, 1280), (61, 83), (16, 24)])
def test_block_statistics_are_numpys_reductions(shape: tuple[int, int]) -> None:
    from ordoscan.decoder.finders import _BLOCK, _block_stats

    img = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    bh, bw = shape[0] // _BLOCK, shape[1] // _BLOCK
    area = img[: bh * _BLOCK, : bw * _BLOCK]
    core = area.reshape(bh, _BLOCK, bw, _BLOCK)
    hi, lo, total = _block_stats(area)
    assert np.array_equal(hi, core.max(axis=(1, 3)))
    assert np.array_equal(lo, core.min(axis=(1, 3)))
    assert np.array_equal(total, core.sum(axis=(1, 3)))


@pytest.mark.parametrize("shape", [(720, 1280), (360, 640), (65, 63), (1, 7), (130, 1)])
def test_the_column_scan_s_transpose_is_numpys(shape: tuple[int, int]) -> None:
    """The banded transpose the column hits scan: the image's transpose, every shape (a
    last band short of 64 rows, a single row or column)."""
    from ordoscan.decoder.finders import _transposed

    dark = np.random.default_rng(shape[1]).random(shape) < 0.5
    out = _transposed(dark)
    assert out.flags.c_contiguous and out.dtype == np.bool_
    assert np.array_equal(out, dark.T)


def test_finder_runs_do_not_wrap_from_one_row_to_the_next() -> None:
    from ordoscan.decoder.finders import _line_hits

    row = np.zeros(40, np.bool_)
    row[10:14], row[18:30], row[34:38] = 1, 1, 1  # 4:4:12:4:4, a finder's row
    assert _line_hits(row[None, :])[0].size == 1
    # the same run against the row's end: its last dark run has no end in this row (the
    # next row's first, light pixel does not close it)
    end = np.zeros((2, 40), np.bool_)
    end[0, 12:16], end[0, 20:32], end[0, 36:40] = 1, 1, 1
    assert _line_hits(end)[0].size == 0
    end[0, 36:39] = 1
    end[0, 39] = 0  # closed inside the row: found
    assert _line_hits(end)[0].size == 1


def _runs_reference(dark: np.ndarray) -> list[tuple[int, float, float]]:
    """1:1:3:1:1 dark-first runs, row by row, the plain way (what _line_hits vectorises)."""
    from ordoscan.decoder.finders import _MODULE, _SLACK

    out = []
    for y, row in enumerate(dark):
        change = [x + 1 for x in range(len(row) - 1) if row[x] != row[x + 1]]
        for i in range(len(change) - 5):
            s = change[i : i + 6]
            if not row[s[0]]:
                continue
            lengths = [b - a for a, b in itertools.pairwise(s)]
            u = sum(lengths) / 7.0
            if not _MODULE[0] <= u <= _MODULE[1]:
                continue
            if any(abs(lengths[k] - u) > 0.5 * u + _SLACK for k in (0, 1, 3, 4)):
                continue
            if abs(lengths[2] - 3 * u) > 1.5 * u + _SLACK:
                continue
            out.append((y, s[0] + lengths[0] + lengths[1] + lengths[2] / 2.0, u))
    return out


def test_finder_runs_are_the_plain_row_scans_on_a_page_of_print() -> None:
    from ordoscan.decoder.finders import _binarize, _line_hits

    page, _ = text_page(2.5, 20.0, 0.6, size=(320, 180))  # print and a turned small code
    dark = _binarize(page)
    for d in (dark, np.ascontiguousarray(dark.T)):
        rows, centres, us = _line_hits(d)
        want = _runs_reference(d)
        assert len(want) > 20  # the code's finders and letters' runs: something to compare
        assert list(zip(rows.tolist(), centres.tolist(), us.tolist(), strict=True)) == want


def test_grid_sums_at_cells_are_the_whole_grids() -> None:
    from ordoscan.decoder.finders import _grid, _sum3, _sum3_at

    rng = np.random.default_rng(3)
    shape = (46, 81)
    ys, xs = rng.uniform(0, 183, 500), rng.uniform(0, 323, 500)
    weights = rng.uniform(1.2, 5.0, 500)
    key, counts = _grid(ys, xs, shape)
    whole = _sum3(np.bincount(key, weights=weights, minlength=shape[0] * shape[1])
                  .astype(np.float32).reshape(shape))
    gy, gx = np.nonzero(counts >= 1)
    assert gy.size > 100 and gy.min() == 0 and gx.max() == shape[1] - 1  # edges included
    at = _sum3_at(key, weights, shape, gy, gx)
    assert at.dtype == np.float32 and np.array_equal(at, whole[gy, gx])


@pytest.mark.parametrize("shape", [(720, 1280), (61, 83)])
def test_binarized_border_is_light(shape: tuple[int, int]) -> None:
    from ordoscan.decoder.finders import _BLOCK, _binarize

    page, _ = text_page(2.5, 0.0, 0.6, size=(shape[1], shape[0]))
    dark = _binarize(page)
    bh, bw = shape[0] // _BLOCK * _BLOCK, shape[1] // _BLOCK * _BLOCK
    assert dark.shape == shape and dark[:bh, :bw].any()
    assert not dark[bh:].any() and not dark[:, bw:].any()
    # the whole-block part is the same whatever lies past it
    assert np.array_equal(_binarize(np.ascontiguousarray(page[:bh, :bw])), dark[:bh, :bw])


def dim_counter(seed: int, size: tuple[int, int] = (1280, 720)) -> np.ndarray:
    """A dark wooden counter in a dim room at a high gain: grain streaks, vignetting, noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    streaks = np.repeat(rng.normal(0, 10.0, (h // 8 + 1, w)), 8, axis=0)[:h]
    streaks = np.asarray(Image.fromarray(np.clip(streaks + 128, 0, 255).astype(np.uint8))
                         .filter(ImageFilter.GaussianBlur(1.5)), np.float64) - 128
    yy, xx = np.mgrid[0:h, 0:w]
    light = 60 * (1 - 0.35 * (((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2))
    return np.clip(light + streaks + rng.normal(0, 6.0, (h, w)), 0, 255).astype(np.uint8)


def test_noise_and_grain_in_a_dim_room_make_no_finder_patterns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gain noise on wood grain, binarized, gives 1:1:3:1:1 runs both ways by chance, but
    no lighter ring around a darker centre: not finder patterns (each one proposed would
    cost a hard frame's passes on a slow core)."""
    from ordoscan.decoder import finders

    frames = [dim_counter(seed) for seed in range(5)]
    found = [len(find_finders(f, levels=2)) for f in frames]
    assert sum(found) <= 2, found
    # the same frames with the contrast test off: the runs are there
    monkeypatch.setattr(finders, "_MIN_CONTRAST", 0.0)
    assert sum(len(find_finders(f, levels=2)) for f in frames) >= 10


@pytest.mark.parametrize("module", [1.6, 2.4])
def test_a_faint_small_code_in_a_dim_room_is_still_found(
    module: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small code, a little blurred, its ink 60 grey levels under a dim paper, on the dim
    counter: its three finder patterns are found and guessed as one code, the same finders
    near it as without the contrast test."""
    from ordoscan.decoder import finders

    frame = dim_counter(7).astype(np.float64)
    qr = np.pad(modules(), 2)
    side = round(qr.shape[0] * module)
    tile = Image.fromarray(np.where(qr, 40, 100).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BOX)
    tile = np.asarray(tile.filter(ImageFilter.GaussianBlur(0.6)), np.float64)
    y0, x0 = 300, 560
    frame[y0 : y0 + side, x0 : x0 + side] = tile + np.random.default_rng(8).normal(
        0, 6.0, tile.shape)
    frame = np.clip(frame, 0, 255).astype(np.uint8)

    def near_code(found: list[finders.Finder]) -> list[finders.Finder]:
        return [f for f in found if x0 <= f.x <= x0 + side and y0 <= f.y <= y0 + side]

    found = find_finders(frame, levels=2)
    monkeypatch.setattr(finders, "_MIN_CONTRAST", 0.0)
    assert near_code(find_finders(frame, levels=2)) == near_code(found)
    guesses = [g for g in guess_codes(found, frame.shape) if g.finders == 3]
    assert guesses, found
    g = guesses[0]
    assert g.x0 <= x0 + 4 * module and g.x1 >= x0 + side - 4 * module
    assert g.y0 <= y0 + 4 * module and g.y1 >= y0 + side - 4 * module


def test_shadow_noise_beside_a_lit_page_is_not_binarized(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lit page with a small code on it, beside a counter in shadow whose noise the ISP's
    tone curve has lifted above the page's: the counter's noise is left light (its blocks'
    ranges are its own noise, not the page's), the code's finder patterns are found. With
    the frame's flattest blocks as the only measure of noise, the shadow is binarized."""
    from ordoscan.decoder import finders

    rng = np.random.default_rng(3)
    h, w = 720, 1280
    frame = np.full((h, w), 18.0) + rng.normal(0, 5.0, (h, w))  # the counter in shadow
    frame[:, :640] = 200.0 + rng.normal(0, 2.0, (h, 640))  # the page, lit
    module = 2.4
    qr = np.pad(modules(), 2)
    side = round(qr.shape[0] * module)
    tile = Image.fromarray(np.where(qr, 30, 200).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(0.6))
    y0, x0 = 300, 300
    frame[y0 : y0 + side, x0 : x0 + side] = np.asarray(tile, np.float64) + rng.normal(
        0, 2.0, (side, side))
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    shadow = np.s_[:, 640 + 8 * finders._BLOCK :]  # past the page's edge and its reach

    assert finders._binarize(frame)[shadow].mean() < 0.01
    guesses = [g for g in guess_codes(find_finders(frame, levels=2), frame.shape)
               if g.finders == 3]
    assert guesses
    g = guesses[0]
    assert g.x0 <= x0 + 4 * module and g.x1 >= x0 + side - 4 * module
    assert g.y0 <= y0 + 4 * module and g.y1 >= y0 + side - 4 * module
    # without the local measure of noise (the page's alone), the shadow's noise is binarized
    monkeypatch.setattr(finders, "_LOCAL_NOISE", 0.0)
    assert finders._binarize(frame)[shadow].mean() > 0.1
