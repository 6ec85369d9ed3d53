"""A QR Code blurred past its modules, read by solving for its modules on its own grid
(ordoscan.decoder.modules): real zxing-cpp on codes blurred by a known disc (an OpenCV
anti-aliased circle, drawn apart from the decoder's own: test_decoder_deblur.defocused)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import cv2
import numpy as np
import ordoscan.decoder as decoder_module
import ordoscan.decoder.passes as passes_module
import pytest
import zxingcpp
from ordoscan.classifier import Kind
from ordoscan.decoder import Decoder, deblur, modules
from ordoscan.decoder.passes import DEBLUR_PASSES, DEFOCUS_PASSES, QR, UNMIX_PASS, UNSMEAR_PASS
from ordoscan.decoder.regions import Box
from PIL import Image

from tests.test_decoder_deblur import EPU, code_page, defocused, disc_blurred, line_blurred

REGION = (slice(60, 420), slice(140, 540))  # the code and its paper around it


def _reads(images: Iterator[tuple[np.ndarray, np.ndarray] | None]) -> list[str]:
    """What the first of the solve's clean symbols that reads gives (its steps skipped)."""
    out = []
    for step in images:
        if step is None:
            continue
        clean, _ = step
        out += [r.text for r in zxingcpp.read_barcodes(clean, formats=QR)]
        if out:
            break
    return out


def _finders(module: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The true finder centres of defocused()'s code in REGION's pixels, and its size."""
    bc = zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode)
    img = np.asarray(zxingcpp.write_barcode_to_image(bc, scale=module, add_quiet_zones=True))
    ys, xs = np.nonzero(img < 128)
    dim = (int(xs.max()) - int(xs.min()) + 1) // module
    # the symbol's outer edge, in pixel-centre coordinates of REGION
    x0 = 200 + int(xs.min()) - 0.5 - REGION[1].start
    y0 = 120 + int(ys.min()) - 0.5 - REGION[0].start
    at = 3.5 * module
    far = (dim - 3.5) * module
    return (np.array([x0 + at, y0 + at]), np.array([x0 + far, y0 + at]),
            np.array([x0 + at, y0 + far]), dim)


@pytest.mark.parametrize(("module", "radius"), [(5, 8), (6, 10)])
def test_a_code_blurred_past_its_modules_is_read_on_its_module_lattice(
    module: int, radius: float
) -> None:
    """A disc of 1.6-1.7 modules: deconvolved per pixel at its true radius nothing reads
    (its transfer function is about zero at the modules' frequency); solved one unknown a
    module on the grid its finder patterns give, the code reads."""
    region = defocused(radius, module)[REGION]
    assert not [r.text for v in deblur.undone_defocus(region, [radius])
                for r in zxingcpp.read_barcodes(v)]
    assert _reads(modules.unmixed(region, radius)) == [EPU]


def gauss_blurred(module: int, sigma: float, seed: int = 0) -> np.ndarray:
    """A `module` px/module code on paper blurred by a Gaussian of `sigma` px in linear
    light (a lens's rounded-off defocus; the ISP's tone curve after), with noise, uint8."""
    light = cv2.GaussianBlur((code_page(module) / 255.0) ** 2.2, (0, 0), sigma)
    out = 255.0 * light ** (1 / 2.2) + np.random.default_rng(seed).normal(0, 2.0, light.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("module", [5, 6])
def test_a_gaussian_blur_is_told_from_a_disc_and_solved_as_one(module: int) -> None:
    """A blur of 0.7-0.8 module with no rings in its spectrum: the spectrum's Gaussian fits
    far better than any disc and measures its sigma; solved with a disc (at the rings'
    radius, the slope's, or its larger multiple) the modules stay mixed, with the Gaussian
    the code reads. Discs are not taken for Gaussians."""
    region = gauss_blurred(module, 4.0)[REGION]
    disc = deblur.measure_defocus(region)
    assert disc is not None and disc.sigma is not None
    assert abs(disc.sigma - 4.0) <= 0.4, disc
    radii = [r for r in (disc.ring, disc.slope, disc.slope * passes_module.UNMIX_LARGER) if r]
    assert not any(_reads(modules.unmixed(region, r)) for r in radii)
    assert _reads(modules.unmixed(region, disc.sigma, True)) == [EPU]
    blurs = passes_module.unmix_blurs(disc, radii[0])
    assert blurs[0] == (disc.sigma, True) and (radii[0], False) in blurs
    for module, radius in ((4, 5), (5, 7), (5, 8), (6, 10)):
        assert deblur.spectrum_blur(defocused(radius, module)[REGION]).sigma is None


def test_the_decoder_reads_a_gaussian_blurred_code_by_its_gaussian(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = gauss_blurred(6, 4.0)
    assert EPU not in {r.text for r in zxingcpp.read_barcodes(frame)}
    assert [s.text for s in Decoder(budget_ms=10_000, duty=None).decode(frame)] == [EPU]
    # the same decoder with the discs only: nothing read
    only_discs = passes_module.unmix_blurs
    monkeypatch.setattr(passes_module, "unmix_blurs",
                        lambda disc, first: [b for b in only_discs(disc, first) if not b[1]])
    assert Decoder(budget_ms=10_000, duty=None).decode(frame) == []


def test_the_defocus_pass_reads_what_the_per_pixel_deconvolution_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = defocused(8, 5)
    assert EPU not in {r.text for r in zxingcpp.read_barcodes(frame)}
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(frame)] == [EPU]
    # the same decoder without the lattice solve: nothing read
    monkeypatch.setattr(passes_module.modules, "unmixed", lambda *a: iter(()))
    assert Decoder(budget_ms=10_000, duty=None).decode(frame) == []


def test_the_symbol_read_on_the_lattice_is_placed_on_the_frame() -> None:
    frame = defocused(8, 5)
    (symbol,) = Decoder(budget_ms=10_000, duty=None).decode(frame)
    xs, ys = zip(*symbol.position, strict=True)
    # the code spans x 200+20..200+125, y 120+20..120+125 (5 px modules, 4 of quiet zone)
    assert abs(min(xs) - 220) <= 6 and abs(max(xs) - 325) <= 6, symbol.position
    assert abs(min(ys) - 140) <= 6 and abs(max(ys) - 245) <= 6, symbol.position


def test_a_blank_region_gives_nothing() -> None:
    rng = np.random.default_rng(1)
    paper = np.clip(200 + rng.normal(0, 2, (360, 400)), 0, 255).astype(np.uint8)
    assert [s for s in modules.unmixed(paper, 6.0) if s is not None] == []  # (steps only)


def test_an_in_focus_code_is_not_solved_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defocus pass measures no disc on a sharp code: no lattice solve, nothing read."""
    calls: list[float] = []
    monkeypatch.setattr(passes_module.modules, "unmixed",
                        lambda region, radius: calls.append(radius) or iter(()))
    frame = defocused(0, 5)
    found: dict[tuple[str, bytes], passes_module.Symbol] = {}
    passes_module.run_pass(UNMIX_PASS, frame, Box(140, 60, 540, 420), found, None)
    assert found == {} and calls == []


def test_the_unmix_pass_takes_the_region_the_defocus_pass_read_and_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the same region of the same frame, the unmix pass after the per-pixel defocus pass
    neither reads the main stream nor measures the disc again, and reads as it did alone."""
    frame = defocused(8, 5)
    box = Box(140, 60, 540, 420)
    asked: list[tuple[int, int, int, int]] = []

    def zoom(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        asked.append((x0, y0, x1, y1))
        return np.asarray(Image.fromarray(frame[y0:y1, x0:x1]).resize((500, 450)))

    measures: list[tuple[int, ...]] = []
    measure = deblur.measure_defocus
    monkeypatch.setattr(deblur, "measure_defocus",
                        lambda r: measures.append(r.shape) or measure(r))

    def run(z: passes_module.Zoom | None, measured: passes_module.Measured | None) -> list[str]:
        found: dict[tuple[str, bytes], passes_module.Symbol] = {}
        zoomed: list[int] = []
        asked.clear()
        measures.clear()
        for p in DEFOCUS_PASSES:
            passes_module.run_pass(p, frame, box, found, z, zoomed, measured)
        # the unmix pass's cost is still learnt per main-stream pixel
        assert zoomed == ([500 * 450] * 2 if z else [])
        return [s.text for s in found.values()]

    run(zoom, passes_module.Measured())
    assert asked == [(140, 60, 540, 420)] and measures == [(450, 500)]
    # (the unmix pass reads it)
    assert run(None, passes_module.Measured()) == run(None, None) == [EPU]


@pytest.mark.parametrize(("shift", "dim"), [((0.0, 0.0), 25), ((3.0, 0.0), 21),
                                            ((0.0, -2.0), 21), ((0.5, 0.5), 29)])
def test_a_wrong_grid_gives_nothing(shift: tuple[float, float], dim: int) -> None:
    """The right grid's solve gets the finder, timing and separator modules right; a grid
    a few modules off, or of the wrong size, is refused (no symbol drawn, no false read)."""
    module, radius = 5, 8.0
    region = defocused(radius, module)[REGION]
    light = 255.0 * (region / 255.0) ** modules.GAMMA
    tl, tr, bl, true_dim = _finders(module)
    h = modules.grid(tl, tr, bl, true_dim)
    bits, share = modules.classify(
        modules.solve(modules.resample(light, h, true_dim), modules.normal(h, true_dim, radius),
                      true_dim), true_dim)
    assert bits is not None and share >= 0.98
    off = np.array(shift) * module
    h = modules.grid(tl + off, tr + off, bl + off, dim)
    bits, share = modules.classify(
        modules.solve(modules.resample(light, h, dim), modules.normal(h, dim, radius), dim), dim)
    assert bits is None, share


def test_a_pass_of_several_steps_takes_none_after_its_time_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The defocus pass undoes three radii, the lattice solve tries grid after grid: told
    its time is up, each ends with the step it is on (the first always runs). Codes blurred
    past what each reads, so that every step is due."""
    drawn: list[float] = []
    undo = deblur.undone_defocus

    def counted(region: np.ndarray, radii: list[float]) -> Iterator[np.ndarray]:
        for r, version in zip(radii, undo(region, radii), strict=True):
            drawn.append(r)
            yield version

    monkeypatch.setattr(deblur, "undone_defocus", counted)
    frame = defocused(8, 5)  # the per-pixel deconvolution reads it at no radius

    def versions(stop: passes_module.Stop | None) -> int:
        drawn.clear()
        found: dict[tuple[str, bytes], passes_module.Symbol] = {}
        passes_module.run_pass(DEFOCUS_PASSES[0], frame, Box(140, 60, 540, 420), found,
                               None, None, None, stop)
        assert found == {}
        return len(drawn)

    assert (versions(None), versions(lambda: True)) == (3, 1)

    solves: list[int] = []
    solve = modules.solve
    monkeypatch.setattr(modules, "solve", lambda *a: solves.append(1) or solve(*a))
    region = defocused(12, 6)[REGION]  # its grid found, no try on it reads

    def paused(stop: passes_module.Stop | None) -> passes_module.Paused:
        solves.clear()
        steps = passes_module._read_solved(UNMIX_PASS, modules.unmixed(region, 12.0))
        p = passes_module.Paused(UNMIX_PASS, Box(0, 0, *region.shape[::-1]), region, steps)
        assert passes_module.go_on(p, region, {}, stop) is (False if stop is None else None)
        return p

    paused(None)
    to_the_end = len(solves)
    p = paused(lambda: True)
    assert to_the_end > 1 and len(solves) == 1
    # kept, it goes on where it stopped: the same solves in all, none twice
    assert passes_module.go_on(p, region, {}, None) is False
    assert len(solves) == to_the_end


@pytest.mark.parametrize("focused", [False, True])
def test_a_region_out_of_focus_gets_its_defocus_passes_before_the_generic_ones(
    monkeypatch: pytest.MonkeyPatch, focused: bool
) -> None:
    """Where a code was seen on a region that measures a defocus disc in the frame itself,
    the defocus passes come before the generic passes (which read no such code) rather than
    after them, where a budget may not reach; a region in focus keeps the generic ones first."""
    import ordoscan.decoder as decoder_module
    from ordoscan.decoder.passes import EXTRA_PASSES

    from tests.test_decoder import unreadable

    order: list[str] = []
    real = decoder_module.run_pass

    def traced(p: passes_module.Pass, *args: object) -> list[tuple[str, Box]]:
        order.append(p.name)
        return real(p, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(decoder_module, "run_pass", traced)
    # in focus: a code zxing-cpp detects and cannot decode (a data block blacked out)
    frame = unreadable() if focused else defocused(8, 5)
    Decoder(budget_ms=10_000, duty=None).decode(frame)
    generic = min(order.index(p.name) for p in EXTRA_PASSES if p.name in order)
    if focused:
        assert "qr-zoom-defocus" not in order[:generic], order
    else:
        assert order.index("qr-zoom-defocus") < generic, order


def slanted(squeeze: float, module: int = 6) -> np.ndarray:
    """defocused()'s code on a page turned about a vertical axis, seen in perspective (its
    right side `squeeze` times the left's height and width), as grey levels (float32)."""
    bc = zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode)
    img = np.asarray(zxingcpp.write_barcode_to_image(bc, scale=module, add_quiet_zones=True))
    page = np.full((480, 640), 255, np.uint8)
    page[120 : 120 + img.shape[0], 200 : 200 + img.shape[1]] = img
    flat = (30 + page.astype(np.float32) * 0.7).astype(np.float32)
    n, x0, y0 = img.shape[0], 200, 120
    drop = (1 - squeeze) * n / 4
    src = np.float32([[x0, y0], [x0 + n, y0], [x0, y0 + n], [x0 + n, y0 + n]])
    dst = np.float32([[x0, y0], [x0 + squeeze * n, y0 + drop], [x0, y0 + n],
                      [x0 + squeeze * n, y0 + n - drop]])
    return cv2.warpPerspective(flat, cv2.getPerspectiveTransform(src, dst), (640, 480),
                               flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def tilted(radius: float, squeeze: float, module: int = 6, seed: int = 0) -> np.ndarray:
    """slanted(), blurred by a disc of `radius` px, with noise."""
    return disc_blurred(slanted(squeeze, module), radius, seed)


@pytest.mark.parametrize(("squeeze", "radius"), [(0.85, 8), (0.85, 10), (0.75, 8)])
def test_a_code_seen_in_perspective_is_read_on_its_refined_grid(
    squeeze: float, radius: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page turned to the lens: its far side 0.75-0.85 of the near one, a disc of 1.3-1.7
    modules. The finders' three centres give an affine grid whose far corner is off by
    about a module, too many modules wrong to read; the grid's four points refined, it
    reads. (Its legs differ by up to a third: a looser bound than a square's finds them.)"""
    region = tilted(radius, squeeze)[REGION]
    assert not zxingcpp.read_barcodes(region)
    assert _reads(modules.unmixed(region, radius)) == [EPU]
    monkeypatch.setattr(modules, "REFINE_FLOOR", 1.01)  # no grid refined
    assert _reads(modules.unmixed(region, radius)) == []


@pytest.mark.parametrize(("module", "radius"), [(5, 8), (6, 10)])
def test_a_code_shown_light_on_dark_is_solved_as_its_negative(
    module: int, radius: float, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A phone in dark mode may show its code light on the dark screen. Blurred past its
    modules, its finder patterns are light blobs in dark rings: found as such and solved
    as the negative (in light), the symbol zxing-cpp reads; the dark blobs alone find no
    grid that reads. The same code dark on light keeps its corners, first, as before."""
    negative = disc_blurred(255.0 - code_page(module), radius)[REGION]
    assert _reads(modules.unmixed(negative, radius)) == [EPU]
    kinds = [inverted for _, inverted in modules.polar_corners(negative)]
    assert True in kinds and kinds == sorted(kinds)  # the dark-on-light corners first
    positive = defocused(radius, module)[REGION]
    dark = modules.corners(positive)
    ranked = modules.polar_corners(positive)[: len(dark)]
    assert dark and not any(inverted for _, inverted in ranked)
    assert all(np.array_equal(a, b) for (c, _), d in zip(ranked, dark, strict=True)
               for a, b in zip(c, d, strict=True))
    assert _reads(modules.unmixed(positive, radius)) == [EPU]
    # the dark blobs only (as before): the light-on-dark code does not read
    monkeypatch.setattr(modules, "polar_corners",
                        lambda r: [(c, False) for c in modules.corners(r)])
    assert _reads(modules.unmixed(negative, radius)) == []


def test_the_decoder_reads_a_blurred_code_shown_light_on_dark() -> None:
    """Through the decoder's passes: a dark screen showing its code light, out of focus by
    a disc wider than a module (the fast pass's inverted try reads it sharp, not so)."""
    frame = disc_blurred(255.0 - code_page(6), 7)
    assert not [r for r in zxingcpp.read_barcodes(frame) if r.text == EPU]
    assert [s.text for s in Decoder(budget_ms=10_000, duty=None).decode(frame)] == [EPU]


def test_the_refinement_hands_out_each_better_grid_and_reading_stops_at_the_first_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refinement yields its starting grid, then each better one as found (spreads
    falling); read as they come, the solves stop at the first grid that reads, short of
    the descent's end."""
    radius = 8.0
    region = tilted(radius, 0.75)[REGION]
    light = 255.0 * (region / 255.0) ** modules.GAMMA
    tl, tr, bl = modules.corners(region)[0]
    dim = 21
    nm = modules.normal(modules.grid(tl, tr, bl, dim), dim, radius)
    points = np.array([tl, tr, bl, tr + bl - tl])
    steps = list(modules.refined(light, points, dim, nm))
    grids = [g for g in steps if g is not None]
    assert len(grids) > 2 and len(steps) > len(grids)  # (a step before each solve after the first)
    np.testing.assert_allclose(grids[0].h, modules.grid(tl, tr, bl, dim))
    spreads = [modules.spread(g.x, dim) for g in grids]
    assert all(b < a for a, b in itertools.pairwise(spreads))

    solves = [0]
    solve = modules.solve

    def counted(*args: object) -> np.ndarray:
        solves[0] += 1
        return solve(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(modules, "solve", counted)
    list(modules.refined(light, points, dim, nm))  # the descent to its end
    to_the_end, solves[0] = solves[0], 0
    assert _reads(modules._drawn(modules.refined(light, points, dim, nm), nm, dim)) == [EPU]
    assert solves[0] < to_the_end


def test_the_decoder_reads_a_tilted_code_blurred_past_its_modules() -> None:
    frame = tilted(8, 0.75)
    assert [s.text for s in Decoder(budget_ms=10_000, duty=None).decode(frame)] == [EPU]


def test_the_refined_grid_spreads_the_modules_least_about_their_two_levels() -> None:
    """The spread the refinement descends is lower on the true grid than on one whose far
    corner is a module off (both get every known module right on this sharp code)."""
    module, radius = 5, 8.0
    region = defocused(radius, module)[REGION]
    light = 255.0 * (region / 255.0) ** modules.GAMMA
    tl, tr, bl, dim = _finders(module)
    nm = modules.normal(modules.grid(tl, tr, bl, dim), dim, radius)

    def spread(br: np.ndarray) -> float:
        h = modules.grid(tl, tr, bl, dim, br)
        return modules.spread(modules.solve(modules.resample(light, h, dim), nm, dim), dim)

    true = spread(tr + bl - tl)
    assert true < 0.5 * spread(tr + bl - tl + np.array([module, 0.0]))
    assert true < 0.5 * spread(tr + bl - tl + np.array([0.0, -module]))


@pytest.mark.parametrize(("squeeze", "length", "angle"),
                         [(1.0, 16, 30), (0.85, 16, 100), (0.75, 14, 100)])
def test_a_smeared_code_the_deconvolution_leaves_unread_is_read_on_its_lattice(
    squeeze: float, length: int, angle: float
) -> None:
    """A code smeared over 2.3-2.7 modules, on a page square to the lens or turned to it:
    the deblur pass's deconvolutions read nothing; its modules solved with the smear as
    the blur, on the grid of the finder patterns the deconvolution shows, it reads."""
    frame = line_blurred(slanted(squeeze), angle, length)
    found: dict[tuple[str, bytes], passes_module.Symbol] = {}
    passes_module.run_pass(DEBLUR_PASSES[0], frame, Box(140, 60, 540, 420), found, None)
    assert found == {}
    region = frame[REGION]
    motion = deblur.estimate(region)
    assert motion is not None
    assert _reads(modules.unsmeared(region, motion)) == [EPU]


@pytest.mark.parametrize("length", [12, 13])
def test_the_decoder_reads_a_smeared_slanted_code_by_its_unsmear_pass(
    length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = line_blurred(slanted(0.85), 20, length)
    assert [s.text for s in Decoder(budget_ms=10_000, duty=None).decode(frame)] == [EPU]
    monkeypatch.setattr(passes_module.modules, "unsmeared", lambda *a: iter(()))
    assert Decoder(budget_ms=10_000, duty=None).decode(frame) == []


def test_a_sharp_code_s_region_gets_no_unsmear_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unsmear pass measures no smear on a sharp code: nothing solved, nothing read."""
    calls: list[object] = []
    monkeypatch.setattr(passes_module.modules, "unsmeared",
                        lambda region, motion, undone=None: calls.append(motion) or iter(()))
    found: dict[tuple[str, bytes], passes_module.Symbol] = {}
    passes_module.run_pass(UNSMEAR_PASS, defocused(0, 5), Box(140, 60, 540, 420), found, None)
    assert found == {} and calls == []


def test_the_unsmear_pass_takes_the_deblur_pass_s_region_measure_and_deconvolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a deblur pass on the same region of the same frame, the unsmear pass neither
    reads the main stream nor measures the smear nor undoes it again: it starts from what
    the deblur pass left (Measured), and reads the same."""
    frame = line_blurred(slanted(0.85), 30, 12)
    box = Box(140, 60, 540, 420)
    asked: list[tuple[int, int, int, int]] = []

    def zoom(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        asked.append((x0, y0, x1, y1))
        size = ((x1 - x0) * 3 // 2, (y1 - y0) * 3 // 2)
        return np.asarray(Image.fromarray(frame[y0:y1, x0:x1]).resize(size, Image.BICUBIC))

    work: list[str] = []
    estimate, deconvolved = deblur.estimate, deblur.deconvolved
    monkeypatch.setattr(deblur, "estimate", lambda r: work.append("estimate") or estimate(r))
    monkeypatch.setattr(deblur, "deconvolved",
                        lambda *a: work.append("deconvolved") or deconvolved(*a))

    def unsmear(measured: passes_module.Measured | None) -> list[str]:
        found: dict[tuple[str, bytes], passes_module.Symbol] = {}
        passes_module.run_pass(DEBLUR_PASSES[0], frame, box, found, zoom, [], measured)
        assert found == {}  # the deconvolutions read nothing: the unsmear pass's case
        asked.clear()
        work.clear()
        zoomed: list[int] = []
        passes_module.run_pass(UNSMEAR_PASS, frame, box, found, zoom, zoomed, measured)
        assert zoomed == [600 * 540]  # its cost still learnt per main-stream pixel
        return [s.text for s in found.values()]

    assert unsmear(passes_module.Measured()) == [EPU]
    assert asked == [] and work == []
    assert unsmear(None) == [EPU]
    assert asked == [(140, 60, 540, 420)] and work == ["estimate", "deconvolved"]


@pytest.mark.parametrize(("squeeze", "angle", "length"), [(0.75, 30, 16), (0.85, 0, 24)])
def test_a_smeared_code_reads_once_its_known_modules_are_held(
    squeeze: float, angle: float, length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Smeared over 2.2-3 modules: the lattice solve's symbol reads on no grid; solved again
    with the finder, separator and timing modules held at their levels, it reads."""
    region = line_blurred(slanted(squeeze), angle, length)[REGION]
    motion = deblur.estimate(region)
    assert motion is not None
    assert _reads(modules.unsmeared(region, motion)) == [EPU]
    monkeypatch.setattr(modules, "held", lambda resampled, nm, dim, x: x)  # as solved
    assert _reads(modules.unsmeared(region, motion)) == []


def test_the_held_solve_keeps_the_known_modules_at_their_two_levels() -> None:
    module, radius = 5, 8.0
    region = defocused(radius, module)[REGION]
    light = 255.0 * (region / 255.0) ** modules.GAMMA
    tl, tr, bl, dim = _finders(module)
    h = modules.grid(tl, tr, bl, dim)
    nm = modules.normal(h, dim, radius)
    resampled = modules.resample(light, h, dim)
    x = modules.solve(resampled, nm, dim)
    again = modules.held(resampled, nm, dim, x)
    m = modules.MARGIN
    core, core_again = x[m : m + dim, m : m + dim], again[m : m + dim, m : m + dim]
    known, dark = modules.known_modules(dim)
    assert np.allclose(core_again[known & dark], core[known & dark].mean())
    assert np.allclose(core_again[known & ~dark], core[known & ~dark].mean())
    # the others still split the same way on this code, which the first solve reads
    assert (modules.classify(again, dim)[0] == modules.classify(x, dim)[0]).all()


def test_the_solve_is_tried_at_a_larger_disc_where_the_rings_measured_the_slopes_own() -> None:
    larger = passes_module.UNMIX_LARGER
    # the rings' radius within UNMIX_SAME of the slope's, or no rings: a larger disc next
    assert passes_module.unmix_radii(deblur.Disc(3.0, 3.1), 3.1) == [3.1, 3.0 * larger]
    assert passes_module.unmix_radii(deblur.Disc(3.0, None), 3.45) == [3.45, 3.0 * larger]
    # the rings measured a disc of their own (wider than the slope's): that one only
    assert passes_module.unmix_radii(deblur.Disc(3.6, 4.8), 4.8) == [4.8]
    assert passes_module.unmix_radii(None, 4.0) == [4.0]
    # a wide disc is the rings' own measure (the slope saw no edge): that one only
    assert passes_module.unmix_radii(deblur.Disc(14.0, 14.0, wide=True), 14.0) == [14.0]


def test_a_disc_under_a_module_the_rings_misread_is_solved_at_the_larger_disc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """af_miss 93 (development): a 5.7 px disc on 5.4 px modules in the main stream; the
    rings measure 3 px (the modules' own dip), the slope 3.6; solved at 1.6 times the
    slope it reads, and not without that second solve."""
    from ordoscan.devtools import af_miss

    (spec,) = af_miss.specs(1, offset=93)
    scene = af_miss.render(*spec)
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    monkeypatch.setattr(passes_module, "UNMIX_LARGER", 0.0)
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


@pytest.mark.parametrize("shape", [(64, 64), (131, 97), (606, 491)])
def test_the_blob_search_s_shortcuts_give_what_the_direct_forms_give(
    shape: tuple[int, int],
) -> None:
    """The blob search's shortcuts (each Gaussian as the product of a column's and a row's,
    the 2x2 means summed in integers) and the light levels looked up, against the forms
    they stand for: the same numbers, to rounding, on regions of any size (odd ones too)."""
    h, w = (deblur.fast_len(n // 2 + 16) for n in shape)
    for band, direct in zip(modules._dog_bands(h, w), _direct_bands(h, w), strict=True):
        np.testing.assert_allclose(band, direct, rtol=0, atol=1e-12)
    region = np.random.default_rng(shape[0]).integers(0, 256, shape).astype(np.uint8)
    np.testing.assert_array_equal(
        modules._LIGHT[region],
        255.0 * (region.astype(np.float64) / 255.0) ** modules.GAMMA)
    # a blurred code's blobs, and a noisy region's: where the direct forms put them
    page = defocused(8, 5)[REGION]
    assert len(modules._blobs(page)[0]) >= 3  # (its three finder patterns at least)
    for part in (page, region):
        got = modules._blobs(part)
        want = _direct_blobs(part)
        assert [len(g) for g in got] == [len(x) for x in want]
        np.testing.assert_allclose(np.array(got[0] + got[1]), np.array(want[0] + want[1]),
                                   rtol=1e-9, atol=1e-9)


def _direct_blobs(region: np.ndarray) -> tuple[list, list]:
    """modules._blobs as first written: the float mean of each 2x2 block, each difference
    of Gaussians made whole on the padded region's frequencies."""
    h2, w2 = region.shape[0] // 2, region.shape[1] // 2
    half = region[: 2 * h2, : 2 * w2].astype(np.float64).reshape(h2, 2, w2, 2).mean(axis=(1, 3))
    pad = 8
    h, w = (deblur.fast_len(n + 2 * pad) for n in half.shape)
    f = np.pad(half, ((pad, h - h2 - pad), (pad, w - w2 - pad)), mode="reflect")
    spectrum = np.fft.rfft2(f)
    dark = np.full((h2, w2), -np.inf)
    light = np.full((h2, w2), -np.inf)
    for band in _direct_bands(h, w):
        dog = np.fft.irfft2(spectrum * band, s=(h, w))[pad : pad + h2, pad : pad + w2]
        dog /= dog.std() + 1e-9
        np.maximum(dark, dog, out=dark)
        np.maximum(light, -dog, out=light)
    return modules._peaks(dark), modules._peaks(light)


def _direct_bands(h: int, w: int) -> list[np.ndarray]:
    """modules._dog_bands as first written: each Gaussian made whole on the h x w grid's
    frequencies, the outer one as a power of the inner."""
    f2 = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2
    bands = []
    for s in modules._SCALES:
        g = np.exp(-2 * np.pi**2 * (s / 2) ** 2 * f2)
        bands.append(g ** (modules._OUTER**2) - g)
    return bands


def _stream(decoder: Decoder, frames: Iterator[np.ndarray], most: int,
            newer: bool = False) -> int | None:
    """The frame of a stream (counted from 0) the decoder first reads EPU on, if any;
    `newer`: a newer frame always waits (a core too slow for the stream)."""
    for n, frame in zip(range(most), frames, strict=False):
        if [s.text for s in decoder.decode(frame, newer=lambda: newer)] == [EPU]:
            return n
    return None


def test_a_solve_the_budget_stops_goes_on_over_the_next_frames_of_a_still_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a slow core the solve of a tilted page out of focus, with its grid's refinement,
    takes several frames' budget. Stopped by one frame's, the unmix pass goes on where it
    stopped on the next frames while the view keeps still, and reads with the solves one
    frame with all the time it wants takes, none done twice; started afresh on each frame
    it never gets there. A view that moves, or a still image, keeps nothing. The clock moves
    only with the solves (30 ms each: two in a 60 ms budget, and the one running at its end):
    frames and budgets, not timings."""
    t = [1000.0]
    solves: list[float] = []
    solve = modules.solve

    def slow(*args: object) -> np.ndarray:
        t[0] += 0.030
        solves.append(t[0])
        return solve(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(modules, "solve", slow)
    frame = tilted(8, 0.75)

    def decoder(budget_ms: float = 60.0) -> Decoder:
        return Decoder(budget_ms=budget_ms, clock=lambda: t[0], duty=None)

    assert [s.text for s in decoder(10_000).decode(frame)] == [EPU]
    at_once, solves[:] = len(solves), []
    still = decoder()
    read_at = _stream(still, itertools.repeat(frame), 40)
    assert read_at is not None and read_at >= 2 and still.stats().passes_resumed >= 2
    assert len(solves) == at_once  # where it stopped, not from the start

    # a newer frame always waiting: every frame hands its search or its passes on, and the
    # passes run on the frames they are handed to; a pass paused there is kept all the same
    handing = decoder()
    assert _stream(handing, itertools.repeat(frame), 40, newer=True) is not None
    assert handing.stats().passes_resumed >= 2 and handing.stats().handed_on >= 2

    monkeypatch.setattr(decoder_module, "PAUSED_FRAMES", -1)  # nothing goes on
    assert _stream(decoder(), itertools.repeat(frame), 40) is None
    assert _stream(decoder(), itertools.repeat(frame), 40, newer=True) is None
    monkeypatch.setattr(decoder_module, "PAUSED_FRAMES", 15)

    # the page moved by a few modules and back, frame after frame: what one frame stopped
    # is not the code of the next (with the view's test off, the same stream reads)
    moved = np.roll(frame, 40, axis=1)
    assert _stream(decoder(), itertools.cycle([frame, moved]), 40) is None
    monkeypatch.setattr(decoder_module, "still", lambda a, b: True)
    assert _stream(decoder(), itertools.cycle([frame, moved]), 40) is not None

    # a still image gets its budget and no more: nothing kept for the next one
    alone = decoder()
    assert alone.decode(frame) == [] and alone._paused is None


def test_the_unmix_pass_searches_its_region_for_blobs_once_for_every_blur(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The blob search depends on the region alone: the Gaussian and the discs the pass
    solves with in turn take the corners it found once (the dearest step on a large region,
    and one a slow core cannot cut)."""
    searches: list[int] = []
    blurs: list[float] = []
    search, unmixed = modules.polar_corners, modules.unmixed
    monkeypatch.setattr(modules, "polar_corners",
                        lambda region: searches.append(1) or search(region))

    def counted(region: np.ndarray, radius: float, gaussian: bool = False,
                corners: object = None) -> Iterator[object]:
        blurs.append(radius)
        return unmixed(region, radius, gaussian, corners)  # type: ignore[arg-type]

    monkeypatch.setattr(modules, "unmixed", counted)
    monkeypatch.setattr(passes_module, "unmix_blurs",
                        lambda disc, first: [(first, False), (first * 1.3, False), (4.0, True)])
    frame = defocused(12, 6)  # its grid found, no try on it reads
    found: dict[tuple[str, bytes], passes_module.Symbol] = {}
    passes_module.run_pass(UNMIX_PASS, frame, Box(140, 60, 540, 420), found, None)
    assert found == {} and len(blurs) == 3 and searches == [1]


@pytest.mark.parametrize("dim", modules.DIMS)
@pytest.mark.parametrize("gaussian", [False, True])
def test_the_lattice_s_adjoint_is_the_blur_summed_over_each_module(dim: int,
                                                                    gaussian: bool) -> None:
    """A^T r, taken on the spectrum and summed over its aliases onto the lattice, is the
    image correlated with the blur on the resampled grid and summed over each module's
    SAMPLES x SAMPLES pixels (its definition, computed here in pixels); the solve on it is
    that A^T r's Tikhonov solve."""
    rng = np.random.default_rng(dim)
    s, big = modules.SAMPLES, dim + 2 * modules.MARGIN
    n = big * s
    for _ in range(3):
        tl = rng.uniform(5, 15, 2)
        tr = tl + rng.uniform(2, 6) * (dim - 7) * np.array([1.0, rng.uniform(-0.3, 0.3)])
        bl = tl + rng.uniform(2, 6) * (dim - 7) * np.array([rng.uniform(-0.3, 0.3), 1.0])
        h = modules.grid(tl, tr, bl, dim)
        nm = modules.normal(h, dim, rng.uniform(1, 8), gaussian=gaussian)
        image = rng.uniform(0, 255, (n, n))
        pixels = np.fft.irfft2(np.fft.rfft2(image - image.mean()) * nm.blur, s=(n, n))
        want = pixels.reshape(big, s, big, s).sum(axis=(1, 3))
        assert np.allclose(modules._atr(image, nm, dim), want, rtol=0, atol=1e-9 * abs(want).max())
        solved = np.fft.irfft2(np.fft.rfft2(want) / nm.lattice, s=(big, big))
        assert np.allclose(modules.solve(image, nm, dim), solved, rtol=0,
                           atol=1e-9 * abs(solved).max())
