"""Motion blur measured on a region and undone: real zxing-cpp on codes smeared by a known
linear motion (an OpenCV line kernel, drawn apart from the decoder's own)."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import ordoscan.decoder as decoder_module
import ordoscan.decoder.passes as passes_module
import pytest
import zxingcpp
from ordoscan.classifier import Kind
from ordoscan.decoder import Decoder, deblur
from ordoscan.decoder.passes import DEBLUR_LATE_PASSES, run_pass
from ordoscan.decoder.regions import Box
from ordoscan.devtools.docscenes import DocScene

EPU = "01S2TBPZ2JCNZZYGHZ"


def smeared(angle: float, length: int, seed: int = 0) -> np.ndarray:
    """A 4 px/module code on paper, blurred along `angle` (degrees, y down) over `length`
    pixels, with sensor noise."""
    bc = zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode)
    img = np.asarray(zxingcpp.write_barcode_to_image(bc, scale=4, add_quiet_zones=True))
    page = np.full((480, 640), 255, np.uint8)  # the code a small part of the view
    page[150 : 150 + img.shape[0], 200 : 200 + img.shape[1]] = img
    page = (30 + page.astype(np.float32) * 0.7).astype(np.float32)  # ink and paper grey
    return line_blurred(page, angle, length, seed)


def line_blurred(image: np.ndarray, angle: float, length: int, seed: int = 0) -> np.ndarray:
    """Grey levels (float32) blurred along `angle` (degrees, y down) over `length` pixels
    (an OpenCV line), with sensor noise, as uint8."""
    n = length + 3
    k = np.zeros((n | 1, n | 1), np.float32)
    c = k.shape[0] // 2
    dx, dy = math.cos(math.radians(angle)) * length / 2, math.sin(math.radians(angle)) * length / 2
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
    out = cv2.filter2D(image, -1, k / k.sum(), borderType=cv2.BORDER_REPLICATE)
    out += np.random.default_rng(seed).normal(0, 2.0, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("angle", "length"), [(0, 12), (30, 10), (100, 14), (145, 12)])
def test_motion_is_measured_on_the_region(angle: float, length: int) -> None:
    m = deblur.estimate(smeared(angle, length)[100:300, 150:350])
    assert m is not None
    diff = abs((m.angle - angle + 90) % 180 - 90)
    assert diff <= 10, m
    assert abs(m.length - length) <= 0.2 * length + 1, m


@pytest.mark.parametrize("shape", [(64, 64), (97, 130), (250, 180), (512, 500)])
def test_the_blurs_transfer_functions_are_the_dense_kernels_transforms(
    shape: tuple[int, int],
) -> None:
    """deblur.transfer transforms only the rows a kernel spans: its line segments and discs
    equal numpy's rfft2 of the kernel drawn on the whole image, whose imaginary part is
    nothing but rounding (the kernels are symmetric about pixel (0, 0))."""
    rng = np.random.default_rng(11)
    h, w = shape
    for _ in range(12):
        m = deblur.Motion(float(rng.uniform(0, 180)), float(rng.uniform(3, min(h, w) / 3)))
        a = math.radians(m.angle)
        t = np.linspace(-m.length / 2, m.length / 2, round(4 * m.length) + 1)
        x, y = t * math.cos(a), t * math.sin(a)
        dense = np.zeros(shape)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):  # each sample spread bilinearly
            wx = x - np.floor(x) if dx else 1 - (x - np.floor(x))
            wy = y - np.floor(y) if dy else 1 - (y - np.floor(y))
            np.add.at(dense, ((np.floor(y).astype(int) + dy) % h,
                              (np.floor(x).astype(int) + dx) % w), wx * wy)
        want = np.fft.rfft2(dense / dense.sum())
        assert np.abs(want.imag).max() < 1e-12
        assert np.allclose(deblur.kernel(m, shape), want.real, rtol=0, atol=1e-12)
        radius = float(rng.uniform(1.5, min(h, w) / 5))
        r = math.ceil(radius) + 1
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        sub = (np.arange(4) + 0.5) / 4 - 0.5  # each pixel's share of the disc, 4x4 samples
        cover = ((xx[..., None, None] + sub[None, :]) ** 2
                 + (yy[..., None, None] + sub[:, None]) ** 2 <= radius**2).mean(axis=(2, 3))
        disc = np.zeros(shape)
        np.add.at(disc, (yy % h, xx % w), cover)
        want = np.fft.rfft2(disc / disc.sum())
        got = deblur._disc(radius, shape)
        assert got.shape == want.shape and np.abs(want.imag).max() < 1e-12
        assert np.allclose(got, want.real, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(61, 64), (97, 130), (250, 181), (403, 500)])
def test_the_padded_transforms_are_numpys_to_the_bit(shape: tuple[int, int]) -> None:
    """The Wiener filter's and the blob search's transforms skip rows (those the reflected
    padding repeats, those cut off after the inverse) and give numpy's rfft2 and irfft2
    bytes for bytes, so the deconvolutions read what they read before; and to_grey is
    np.clip's bytes."""
    rng = np.random.default_rng(12)
    f = rng.integers(0, 256, shape).astype(np.float64)
    h, w = shape
    for rows, cols in (((0, deblur.fast_len(h + h // 4) - h), (0, deblur.fast_len(w + w // 4) - w)),
                       ((8, 13), (8, 9)), ((0, 0), (0, 0))):
        spectrum = deblur.reflected_rfft2(f, rows, cols)
        padded = np.pad(f, (rows, cols), mode="reflect")
        assert np.array_equal(spectrum, np.fft.rfft2(padded))
        size = (padded.shape[0], padded.shape[1])
        filtered = spectrum * rng.uniform(0, 1.5, spectrum.shape)
        whole = np.fft.irfft2(filtered, s=size)
        for cut in (slice(h), slice(rows[0], rows[0] + h), slice(None, None, 4)):
            assert np.array_equal(deblur.irfft2_rows(filtered, size, cut), whole[cut])
        assert np.array_equal(deblur.to_grey(whole[:h, :w].copy()),
                              np.clip(whole[:h, :w], 0, 255).astype(np.uint8))


def test_a_sharp_code_measures_no_motion() -> None:
    assert deblur.estimate(smeared(0, 0)[100:300, 150:350]) is None


@pytest.mark.parametrize("angle", [0, 30])
def test_a_smeared_code_is_read_once_the_motion_is_undone(angle: float) -> None:
    frame = smeared(angle, 12)
    assert EPU not in {r.text for r in zxingcpp.read_barcodes(frame)}
    region = frame[100:300, 150:350]
    m = deblur.estimate(region)
    assert m is not None
    fixed = deblur.deconvolve(region, m)
    assert EPU in {r.text for r in zxingcpp.read_barcodes(fixed)}
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(frame)] == [EPU]
    assert decoder.stats().extra_symbols == 1


@pytest.mark.parametrize(("angle", "length"), [(100, 10), (100, 12), (80, 12)])
def test_the_motion_is_measured_off_the_codes_axes(angle: float, length: int) -> None:
    """A smear a little off the code's axes: the structure tensor's direction leans towards
    the axes by several degrees; the blur's vector, where the derivative's autocorrelation
    dips, does not (a search along rays found it 6-7 degrees off)."""
    m = deblur.estimate(smeared(angle, length)[100:300, 150:350])
    assert m is not None
    assert abs((m.angle - angle + 90) % 180 - 90) <= 2.5, m


@pytest.mark.parametrize(("angle", "length"), [(80, 12), (100, 12)])
def test_a_smear_measured_to_the_degree_is_read(angle: float, length: int) -> None:
    """Three modules of smear: the deconvolution reads only with the direction measured
    within a few degrees (a search along rays, 6 degrees off, read neither)."""
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(smeared(angle, length))] == [EPU]


def test_a_code_smeared_in_a_dim_room_is_read() -> None:
    """Development scene 100 325 of the second generator: a dim room, the longest shutter
    (33 ms), the page moving two modules during it (eight copies of the page summed along
    the path). Undone with the vector as measured, it reads."""
    from ordoscan.devtools import docscenes, splits

    seed = 100_325
    setting = splits.DEV_SETTINGS[(seed * 7919) % len(splits.DEV_SETTINGS)]
    scene = docscenes.render("ordonnance", seed, setting=setting, difficulty="hard")
    assert setting.light == "dim" and scene.params["blur_samples"] == 8
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}



def _dev_scene(seed: int) -> tuple[DocScene, str]:
    """A development scene of the second generator (an ordonnance, hard) and its code."""
    from ordoscan.devtools import docscenes, splits

    setting = splits.DEV_SETTINGS[(seed * 7919) % len(splits.DEV_SETTINGS)]
    scene = docscenes.render("ordonnance", seed, setting=setting, difficulty="hard")
    return scene, next(p for k, p in scene.truth if k is Kind.ORDONNANCE)


def test_a_smear_off_the_regions_middle_is_measured_where_the_code_is() -> None:
    """Development scene 200 334: a dim room, the page moving two modules during the
    exposure; the statistics' region holds the code well off its middle, where the page's
    margin makes the smear measure too weak. The region's busiest square measures it."""
    scene, epu = _dev_scene(200_334)
    m = deblur.estimate(scene.image[224:368, 640:832])
    assert m is not None
    assert abs((m.angle - 87 + 90) % 180 - 90) <= 5 and 4 <= m.length <= 6, m
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}


def test_the_late_deblur_pass_reads_no_main_stream_where_the_frame_shows_no_smear() -> None:
    """A late deblur pass (DEBLUR_LATE_PASSES) looks at the frame's own region first: a
    sharp code's busiest square is too little anisotropic to hide a smear, and the main
    stream is neither read nor measured; the smear of scene 200 334 (above) gets through."""
    frame = smeared(0, 0)
    asked: list[tuple[int, int, int, int]] = []

    def zoom(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        asked.append((x0, y0, x1, y1))
        return np.asarray(cv2.resize(frame[y0:y1, x0:x1], None, fx=2, fy=2))

    late = DEBLUR_LATE_PASSES[0]
    assert run_pass(late, frame, Box(150, 100, 350, 300), {}, zoom) == []
    assert asked == []
    scene, _ = _dev_scene(200_334)
    assert deblur.may_smear(scene.image[224:368, 640:832], late.smear_floor)


def test_a_noisy_smear_is_undone_less_hard_too() -> None:
    """Development scene 300 464: a dim room, the gain up, the page moving two modules.
    Undone at the usual noise ratio the sensor noise swamps the modules; at three times it
    reads."""
    scene, epu = _dev_scene(300_464)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    assert decoder.stats().extra_symbols >= 1


def test_a_version_turned_off_the_measured_angle_is_that_deconvolution() -> None:
    region = smeared(100, 12)[100:300, 150:350]
    m = deblur.estimate(region)
    assert m is not None
    (turned,) = deblur.deconvolved(region, m, (deblur.Version(1.0, deblur.MOTION_NSR, 3.0),))
    assert np.array_equal(turned, deblur.deconvolve(region, replace(m, angle=m.angle + 3.0)))


def test_the_turned_versions_wait_for_a_code_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A smear with no code in it (modules at random, no finder pattern): the versions
    turned off the measured angle are not undone; they wait for a QR Code detected."""
    from ordoscan.decoder.passes import DEBLUR_PASSES, Symbol, run_pass
    from ordoscan.decoder.regions import Box

    rng = np.random.default_rng(3)
    blocks = np.kron(rng.integers(0, 2, (40, 40)), np.ones((4, 4))).astype(np.float32)
    page = np.full((240, 240), 200, np.float32)
    page[40:200, 40:200] = 30 + 170 * blocks
    k = np.zeros((13, 13), np.float32)
    cv2.line(k, (1, 3), (11, 9), 1.0, 1)
    frame = np.clip(cv2.filter2D(page, -1, k / k.sum(), borderType=cv2.BORDER_REPLICATE)
                    + rng.normal(0, 2.0, page.shape), 0, 255).astype(np.uint8)
    angles: list[float] = []
    kernel = deblur.kernel

    def counted(m: deblur.Motion, shape: tuple[int, int]) -> np.ndarray:
        angles.append(m.angle)
        return kernel(m, shape)

    monkeypatch.setattr(deblur, "kernel", counted)
    found: dict[tuple[str, bytes], Symbol] = {}
    assert run_pass(DEBLUR_PASSES[0], frame, Box(0, 0, 240, 240), found, None) == []
    assert not found
    # the straight versions' blurs only (each drawn once), all at the angle as measured
    straight = [v for v in DEBLUR_PASSES[0].deblur if not v.turn]
    assert 0 < len(angles) <= len(straight) < len(DEBLUR_PASSES[0].deblur)
    assert len(set(angles)) == 1


def test_a_smear_measured_a_few_degrees_off_is_undone_turned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Development scene 300 465: a dim room, the page smeared over 19 px of the main stream.
    Undone along the angle as measured no version reads; turned 4 degrees off it, it reads
    (the measure's direction can be a few degrees off)."""
    from ordoscan.decoder.passes import DEBLUR_PASSES

    scene, epu = _dev_scene(300_465)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    straight = tuple(replace(p, deblur=tuple(v for v in p.deblur if v.turn == 0))
                     for p in DEBLUR_PASSES)
    assert all(p.deblur for p in straight)
    monkeypatch.setattr(decoder_module, "DEBLUR_PASSES", straight)
    monkeypatch.setattr(decoder_module, "DEBLUR_LATE_PASSES",
                        tuple(replace(p, name=f"{p.name}-late") for p in straight))
    # (the unsmear pass, a lattice solve after them, reads it too: not this test's subject)
    monkeypatch.setattr(passes_module.modules, "unsmeared", lambda *a: iter(()))
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}

# -- defocus --------------------------------------------------------------------------


def code_page(module: int, ink: float = 30.0, gain: float = 0.7) -> np.ndarray:
    """A 640x480 page (float32 grey levels: `ink` + `gain` x 255 on paper) with a `module`
    px/module code at (200, 120)."""
    bc = zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode)
    img = np.asarray(zxingcpp.write_barcode_to_image(bc, scale=module, add_quiet_zones=True))
    page = np.full((480, 640), 255, np.uint8)
    page[120 : 120 + img.shape[0], 200 : 200 + img.shape[1]] = img
    return (ink + page.astype(np.float32) * gain).astype(np.float32)


def defocused(radius: float, module: int = 5, seed: int = 0) -> np.ndarray:
    """A `module` px/module code on paper, blurred by a defocus disc of `radius` pixels (an
    OpenCV anti-aliased filled circle, drawn apart from the decoder's own), with noise."""
    return disc_blurred(code_page(module), radius, seed)


def disc_blurred(image: np.ndarray, radius: float, seed: int = 0) -> np.ndarray:
    """Grey levels (float32) blurred by a defocus disc of `radius` px (an OpenCV anti-aliased
    filled circle; none under 0), with noise, as uint8."""
    out = image
    if radius > 0:
        s, n = 8, (math.ceil(radius) + 1) * 2 + 1
        big = np.zeros((n * s, n * s), np.float32)
        cv2.circle(big, (n * s // 2, n * s // 2), round(radius * s), 1.0, -1, cv2.LINE_AA)
        k = cv2.resize(big, (n, n), interpolation=cv2.INTER_AREA)
        out = cv2.filter2D(out, -1, k / k.sum(), borderType=cv2.BORDER_REPLICATE)
    out = out + np.random.default_rng(seed).normal(0, 2.0, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("module", "radius"), [(4, 4), (5, 4), (5, 5), (6, 6)])
def test_defocus_is_measured_on_the_region(module: int, radius: float) -> None:
    r = deblur.defocus(defocused(radius, module)[100:360, 180:440])
    assert r is not None
    # the measure reads 0.7-0.9 of the disc (DEFOCUS_PASSES undo it at 1.15 and 1.3 that)
    assert 0.65 * radius <= r <= 0.95 * radius, r


def _steep_edges_in_floats(region: np.ndarray, normal: float | None
                           ) -> tuple[float, np.ndarray] | None:
    """deblur._steep_edges as first written, in floats: the reference for its integer form."""
    if min(region.shape) < 16:
        return None
    h, w = (min(n, deblur._MAX_SIDE) for n in region.shape)
    y0, x0 = (region.shape[0] - h) // 2, (region.shape[1] - w) // 2
    f = region[y0 : y0 + h, x0 : x0 + w].astype(np.float64)
    f = (f[:-1, :-1] + f[1:, :-1] + f[:-1, 1:] + f[1:, 1:]) / 4
    gx, gy = f[:-1, 1:] - f[:-1, :-1], f[1:, :-1] - f[:-1, :-1]
    if normal is None:
        jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
        if jxx + jyy <= 0 or deblur._anisotropy(jxx, jyy, jxy) >= deblur.MIN_ANISOTROPY:
            return None
    lo, hi = np.percentile(f, (2, 98))
    contrast = float(hi - lo)
    if contrast < 16:
        return None
    g = np.hypot(gx, gy) if normal is None else np.abs(
        math.cos(normal) * gx + math.sin(normal) * gy)
    return contrast, g[g > 0.1 * contrast]


@pytest.mark.parametrize("normal", [None, 0.0, 1.1])
def test_the_edges_measured_in_integers_are_the_float_measures(normal: float | None) -> None:
    """The slope's measure works on integer sums: the same contrast and the same steep
    gradients, bit for bit, as in floats (a defocused code, one smeared, a sharp one, noise,
    a flat patch, a region past _MAX_SIDE, a thin one)."""
    rng = np.random.default_rng(3)
    regions = [defocused(5, 5)[100:360, 180:440], defocused(0, 4)[100:360, 180:440],
               smeared(30, 12)[100:380, 150:480], defocused(3, 5)[:, 40:600],
               rng.integers(0, 256, (90, 130), dtype=np.uint8),
               np.full((60, 80), 140, np.uint8), defocused(4, 5)[200:217, 100:400]]
    measured = 0
    for region in regions:
        want, got = _steep_edges_in_floats(region, normal), deblur._steep_edges(region, normal)
        assert (want is None) == (got is None)
        if want is not None and got is not None:
            measured += 1
            assert got[0] == want[0]
            assert got[1].dtype == np.float64 and np.array_equal(got[1], want[1])
    assert measured >= 3


@pytest.mark.parametrize("module", [4, 6])
def test_an_in_focus_code_measures_no_defocus(module: int) -> None:
    assert deblur.defocus(defocused(0, module)[100:360, 180:440]) is None
    assert deblur.defocus(defocused(1, module)[100:360, 180:440]) is None


@pytest.mark.parametrize(("module", "radius"), [(4, 5), (5, 7), (4, 8), (3, 6)])
def test_a_disc_wider_than_a_module_is_measured_by_the_rings_of_its_spectrum(
    module: int, radius: float
) -> None:
    region = defocused(radius, module)[100:360, 180:440]
    slope = deblur.defocus(region)
    assert slope is not None and slope < 0.8 * radius  # the slope's measure reads short
    ring = deblur.spectrum_blur(region).ring
    assert ring is not None and abs(ring - radius) <= 0.1 * radius, ring
    # the spectrum's radius is undone first, then the slope's multiples
    radii = deblur.defocus_radii(deblur.measure_defocus(region), (1.15, 1.3))
    assert radii[0] == ring and len(radii) >= 2


@pytest.mark.parametrize(("module", "radius"), [(7, 14), (8, 17), (6, 20)])
def test_a_disc_too_wide_for_the_slope_is_measured_by_its_spectrum_alone(
    module: int, radius: float
) -> None:
    """A disc of three modules and more: no gradient reaches a tenth of the contrast a
    pixel, so the slope's measure has no edge to go on; the rings still give the disc."""
    region = defocused(radius, module)[60:460, 130:530]
    assert deblur.defocus(region) is None
    disc = deblur.measure_defocus(region)
    assert disc is not None and disc.ring is not None, disc
    assert abs(disc.ring - radius) <= 0.1 * radius, disc
    assert deblur.defocus_radii(disc, (1.15,))[0] == disc.ring


def test_a_wide_disc_gets_the_module_solve_and_no_per_pixel_deconvolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A disc of several modules leaves a per-pixel deconvolution nothing to work with
    (on af_miss only the module solve read such codes): the Wiener pass does nothing
    there, at no cost, and the unmix pass solves at the rings' radius."""
    region = defocused(14, 7)[60:460, 130:530]
    disc = deblur.measure_defocus(region)
    assert disc is not None and disc.wide
    d = passes_module.Defocused(region, disc, main=True)
    undone: list[list[float]] = []
    monkeypatch.setattr(deblur, "undone_defocus",
                        lambda r, radii: undone.append(radii) or iter(()))
    box = Box(0, 0, region.shape[1] // 2, region.shape[0] // 2)
    wiener, unmix = passes_module.DEFOCUS_PASSES
    assert not wiener.unmix and unmix.unmix
    assert passes_module._run_defocus(wiener, d, region, box, {}) == []
    assert undone == []
    solved: list[float] = []
    monkeypatch.setattr(passes_module.modules, "unmixed",
                        lambda r, size, gaussian, corners=None: solved.append(size) or iter(()))
    passes_module._run_defocus(unmix, d, region, box, {})
    assert solved == [disc.ring]
    # a disc the slope measured gets both, as before
    narrow = passes_module.Defocused(region, deblur.Disc(4.0, 5.0), main=True)
    passes_module._run_defocus(wiener, narrow, region, box, {})
    assert undone and undone[0][0] == 5.0


def test_paper_in_a_soft_shadow_measures_no_wide_disc() -> None:
    """Contrast without a steep edge is also a page's shading: without the rings of a disc
    in its spectrum it measures none."""
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    shade = 200 - 60 * np.exp(-((xx - 150) ** 2 + (yy - 250) ** 2) / (2 * 90.0**2))
    region = np.clip(shade + np.random.default_rng(1).normal(0, 2.0, shade.shape), 0, 255)
    assert deblur.measure_defocus(region.astype(np.uint8)) is None


@pytest.mark.parametrize("n", [64, 128, 256])
def test_the_spectrum_fit_solved_ahead_is_the_least_squares_fit_of_each_size(n: int) -> None:
    # the normal equations are inverted once per patch side (deblur._fits); a region's
    # fit then takes one product: the same best size and residual as a least squares solve
    # of each size on its own (numpy's lstsq), on the log power of real blurred codes
    _, logf, model = deblur._jinc_table(n)
    disc_fit, gauss_fit = deblur._fits(n)
    for radius, module in ((0, 4), (3, 4), (6, 5), (9, 6)):
        region = defocused(radius, module)[100 : 100 + n, 180 : 180 + n].astype(np.float64)
        power = np.abs(np.fft.rfft2((region - region.mean()) * np.outer(*[np.hanning(n)] * 2)))
        lp = np.log(deblur._ring_means(power**2, n) + 1e-9)
        for fit, table in ((disc_fit, model), (gauss_fit, deblur._gauss_table(n))):
            errs = []
            for row in table:
                a = np.stack([np.ones_like(logf), logf, row], axis=1)
                coef, *_ = np.linalg.lstsq(a, lp, rcond=None)
                errs.append(float(((a @ coef - lp) ** 2).sum())
                            if coef[2] >= deblur._MIN_JINC_SHARE else math.inf)
            best = deblur._best_fit(lp, fit)
            if not any(math.isfinite(e) for e in errs):
                assert best is None
                continue
            assert best is not None and best[0] == int(np.argmin(errs))
            assert best[1] == pytest.approx(min(errs), rel=1e-6, abs=1e-6)


def test_warm_builds_the_spectrum_tables_before_the_first_region() -> None:
    deblur._fits.cache_clear()
    deblur._rings.cache_clear()
    Decoder().warm()
    assert deblur._fits.cache_info().currsize == len(deblur._SPECTRUM_SIDES)
    assert deblur._rings.cache_info().currsize == len(deblur._SPECTRUM_SIDES)
    hits = deblur._fits.cache_info().hits
    deblur.spectrum_blur(defocused(5, 5)[100:360, 180:440])
    assert deblur._fits.cache_info().hits == hits + 1  # built already: taken, not built


@pytest.mark.parametrize("module", [4, 6])
def test_an_in_focus_code_gets_no_disc_to_undo(module: int) -> None:
    # its square modules leave dips in the spectrum as a small disc would: the slope's
    # measure, which sees the sharp edges, decides
    disc = deblur.measure_defocus(defocused(0, module)[100:360, 180:440])
    assert disc is None and deblur.defocus_radii(disc, (1.15, 1.3)) == []


def test_a_smeared_code_measures_a_motion_not_a_defocus() -> None:
    assert deblur.defocus(smeared(0, 12)[100:300, 150:350]) is None


@pytest.mark.parametrize(("module", "radius"), [(4, 4), (5, 5), (6, 6)])
def test_a_code_blurred_by_a_disc_as_wide_as_its_modules_is_read(
    module: int, radius: float
) -> None:
    frame = defocused(radius, module)
    assert EPU not in {r.text for r in zxingcpp.read_barcodes(frame)}
    # every other pass fails on it too: the decoder's read is the defocus pass's
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(frame)] == [EPU]
    assert decoder.stats().extra_symbols == 1


def test_the_defocus_pass_reads_from_the_main_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a kiosk the region comes from the main stream (a real zoom, 1.8x the frame): the
    disc is measured and undone there."""
    full = defocused(8, 8)  # 8 px modules, an 8 px disc: the main stream of a 4.4 px frame
    frame = np.asarray(cv2.resize(full, (356, 267), interpolation=cv2.INTER_AREA))
    s = full.shape[1] / frame.shape[1]

    def zoom(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return np.ascontiguousarray(full[round(y0 * s) : round(y1 * s),
                                         round(x0 * s) : round(x1 * s)])

    assert EPU not in {r.text for r in zxingcpp.read_barcodes(frame)}
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(frame, zoom)] == [EPU]
    assert decoder.stats().zooms >= 1
    # the same decoder without the defocus passes: nothing read
    monkeypatch.setattr(decoder_module, "DEFOCUS_PASSES", ())
    assert Decoder(budget_ms=10_000, duty=None).decode(frame, zoom) == []


def test_the_lengths_are_tried_in_turn_on_one_measure() -> None:
    """The measure overshoots this one (11.8 px for 10): the deconvolution at the length as
    measured does not read, the one a little shorter does, from the same measure."""
    region = smeared(100, 10)[100:300, 150:350]
    m = deblur.estimate(region)
    assert m is not None and m.length > 11
    nsr = deblur.MOTION_NSR
    first, shorter = deblur.deconvolved(
        region, m, (deblur.Version(1.0, nsr), deblur.Version(0.9, nsr)))
    assert EPU not in {r.text for r in zxingcpp.read_barcodes(first)}
    assert EPU in {r.text for r in zxingcpp.read_barcodes(shorter)}
    assert np.array_equal(first, deblur.deconvolve(region, m))


def test_the_deblur_pass_measures_the_motion_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both lengths come from one read of the region and one measure of its motion (the
    frame's own measure, which says the pass is due, is on the frame's pixels)."""
    frame = smeared(145, 9)  # read at 0.9 of the length as measured, not at 1.0
    sizes: list[tuple[int, ...]] = []
    estimate = deblur.estimate

    def counted(region: np.ndarray, busiest: bool = True) -> deblur.Motion | None:
        sizes.append(region.shape)
        return estimate(region, busiest)

    monkeypatch.setattr(deblur, "estimate", counted)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert [s.text for s in decoder.decode(frame)] == [EPU]
    # the pass reads the region upscaled (no main stream here): larger than the frame's
    prepared = [s for s in sizes if s[0] > 200]
    assert len(prepared) == 1, sizes


# -- the autofocus missed the page (ordoscan.devtools.af_miss, development scenes) --------


def _af_miss(seed: int) -> tuple[DocScene, str]:
    from ordoscan.devtools import af_miss

    (spec,) = af_miss.specs(1, offset=seed)
    scene = af_miss.render(*spec)
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    assert epu not in {r.text for r in zxingcpp.read_barcodes(scene.image)}
    return scene, epu


def test_a_defocused_code_with_no_finder_pattern_left_is_undone_where_the_statistics_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The focus locked behind the page (dev scene 2 of af_miss, a wide-angle module):
    the disc leaves neither a detected symbol nor a finder pattern, only the region
    statistics' patch; the defocus pass there reads it, and nothing else does."""
    scene, epu = _af_miss(2)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    monkeypatch.setattr(decoder_module, "DEFOCUS_PASSES", ())
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


def test_a_disc_wider_than_a_module_is_undone_well_past_its_measure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dev scene 23 of af_miss: the disc's measure falls well short of it (the modules never
    reach the full contrast); undone at 1.15 and 1.3 times the measure nothing reads, at 1.6
    times it the code reads (the unmix pass's solve at that larger disc reads it too: off
    here)."""
    from ordoscan.decoder.passes import DEFOCUS_PASSES

    monkeypatch.setattr(passes_module, "UNMIX_LARGER", 0.0)

    scene, epu = _af_miss(23)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    short = tuple(replace(p, defocus=tuple(k for k in p.defocus if k < 1.5))
                  for p in DEFOCUS_PASSES)
    monkeypatch.setattr(decoder_module, "DEFOCUS_PASSES", short)
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


def test_a_code_under_a_disc_of_three_modules_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dev scene 119 of af_miss: the focus locked behind the page, a disc of 13 px on
    modules of 8 (main stream). The slope's measure sees no edge there; the spectrum alone
    measures the disc, and the solve on the modules reads the code. Without that measure
    (WIDE_DEFOCUS at 0) nothing does."""
    scene, epu = _af_miss(119)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    monkeypatch.setattr(deblur, "WIDE_DEFOCUS", 0.0)
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


def test_a_code_blurred_past_its_finder_patterns_is_found_by_their_blobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dev scene 17 of af_miss: no finder pattern's runs survive the disc and the region
    statistics see no code, so nothing pointed at it; its finders' dark blobs at the
    corners of a square do, and the defocus passes there read it. Without that guess the
    decoder reads nothing (the statistics at their faint floor, kept to their own floor
    here, point at it too: test_pale_print_out_of_focus_is_read_where_only_the_faint_...)."""
    from ordoscan.decoder.finders import blurred_codes
    from ordoscan.decoder.regions import _EDGE_MIN, candidate_regions, new_guesses

    monkeypatch.setattr(decoder_module, "FAINT_EDGE_MIN", _EDGE_MIN)

    scene, epu = _af_miss(17)
    assert new_guesses(scene.image, []) == [] and candidate_regions(scene.image)[0] == []
    (guess,) = blurred_codes(scene.image)
    code = next(c for c in scene.codes if c.kind is Kind.ORDONNANCE)
    x0, y0, x1, y1 = code.box
    assert guess.x0 <= (x0 + x1) / 2 <= guess.x1 and guess.y0 <= (y0 + y1) / 2 <= guess.y1
    assert (guess.x1 - guess.x0) * (guess.y1 - guess.y0) <= 4 * (x1 - x0) * (y1 - y0)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    monkeypatch.setattr(decoder_module, "blurred_codes", lambda frame: [])
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


def test_blank_views_and_print_give_no_blurred_code() -> None:
    """The counter views (a hand's dark gaps, the scene generator's counters) give no blob
    guess; on pages of print, in focus or blurred, a guess is only ever the code's."""
    from ordoscan.decoder.finders import blurred_codes

    from tests.test_decoder import counter_views
    from tests.test_decoder_finders import text_page

    for name, view in counter_views().items():
        assert blurred_codes(view) == [], name
    # pages whose print has dark blobs at the corners of a square (no quiet zone outside)
    for module, angle, blur, seed in ((2.5, 0.0, 1.0, 1), (3.0, 20.0, 2.0, 1), (4.0, 10.0, 3.0, 2)):
        page, (cx, cy, _) = text_page(module, angle, blur, seed=seed)
        for g in blurred_codes(page):
            assert g.x0 <= cx <= g.x1 and g.y0 <= cy <= g.y1, (module, angle, blur, seed)


@pytest.mark.parametrize(("region", "inner"), [
    (Box(500, 300, 800, 560), True),  # the code's finders inside a region merged with print
    (Box(560, 340, 680, 460), False),  # a region about the code's own size
])
def test_a_code_s_finders_inside_a_larger_region_get_its_own_late_deblur(
    region: Box, inner: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smear measured on a region merged with the print around a code may be the
    print's: the late deblur pass also measures and undoes the smear on the code's own
    (padded) box, where the region is more than twice its size."""
    from ordoscan.decoder.finders import CodeGuess
    from ordoscan.decoder.regions import pad

    rng = np.random.default_rng(0)
    frame = np.where(rng.random((720, 1280)) < 0.5, 40, 200).astype(np.uint8)
    guess = CodeGuess(x0=580, y0=370, x1=640, y1=430, module=2.2, finders=2)
    monkeypatch.setattr(decoder_module, "new_guesses", lambda f, known, *_: [guess])
    monkeypatch.setattr(decoder_module, "candidate_regions", lambda f, *a, **k: ([region], None))
    ran: list[tuple[str, Box]] = []
    real = decoder_module.run_pass

    def spy(p: passes_module.Pass, f: np.ndarray, box: Box, *args: object) -> object:
        ran.append((p.name, box))
        return real(p, f, box, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(decoder_module, "run_pass", spy)
    Decoder(budget_ms=10_000, duty=None).decode(frame)
    own = pad(Box(580, 370, 640, 430), frame)
    late = [box for name, box in ran if name == DEBLUR_LATE_PASSES[0].name]
    assert (own in late) == inner and len(late) == 1 + inner, ran
    # the code's own box first: its smear is the code's, and it costs a fraction of the
    # region's (a slow core's budget may end before the second)
    assert late[0] == (own if inner else region), ran


@pytest.mark.parametrize("main_stream", [False, True])
def test_a_smeared_region_gets_its_unsmear_pass_right_after_the_generic_passes(
    main_stream: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the frame's region measures smeared and shows a QR Code's finder patterns, the
    smear is what failed the generic passes: its modules solved with that smear as the
    blur come next, before the passes for other causes (the squared finders here). With a
    main stream, its plain read of the region comes first of all: a fraction of a deblur
    pass's cost, and a code smeared in this frame may read there as it is."""
    from ordoscan.decoder.finders import CodeGuess
    from ordoscan.decoder.passes import (
        DEBLUR_PASSES,
        EXTRA_PASSES,
        SQUARE_PASS,
        UNSMEAR_PASS,
        ZOOM_PASS,
    )

    frame = np.full((720, 1280), 200, np.uint8)
    region = Box(540, 330, 700, 470)
    guess = CodeGuess(x0=560, y0=350, x1=680, y1=450, module=3.0, finders=3)
    monkeypatch.setattr(decoder_module, "new_guesses", lambda f, known, *_: [guess])
    monkeypatch.setattr(decoder_module, "candidate_regions", lambda f, *a, **k: ([region], None))
    monkeypatch.setattr(decoder_module, "merge_regions", lambda boxes, f: [region])
    monkeypatch.setattr(decoder_module, "motion_blurred", lambda f, box: box == region)
    ran: list[tuple[str, Box]] = []

    def spy(p: passes_module.Pass, f: np.ndarray, box: Box, *args: object) -> list[object]:
        ran.append((p.name, box))  # nothing read: every job queued runs, in its order
        return []

    monkeypatch.setattr(decoder_module, "run_pass", spy)
    zoom = (lambda x0, y0, x1, y1: None) if main_stream else None
    Decoder(budget_ms=10_000, duty=None).decode(frame, zoom)
    names = [name for name, box in ran if box == region]
    generic = [p.name for p in EXTRA_PASSES]
    first = [ZOOM_PASS.name] if main_stream else []
    assert names[: len(first) + 1 + len(generic) + 1] == [
        *first, DEBLUR_PASSES[0].name, *generic, UNSMEAR_PASS.name], names
    assert names.count(UNSMEAR_PASS.name) == 1 and SQUARE_PASS.name in names, names
    assert names.count(ZOOM_PASS.name) == main_stream, names


# -- a smear and a defocus disc together (a page moving in dim light, out of focus) -----


def smeared_and_defocused(angle: float, length: int, radius: float, module: int = 5,
                          seed: int = 0) -> np.ndarray:
    """A `module` px/module code blurred by a defocus disc of `radius` px, then smeared
    along `angle` over `length` px (both drawn by OpenCV, apart from the decoder), with
    noise."""
    return line_blurred(disc_blurred(code_page(module), radius, seed).astype(np.float32),
                        angle, length, seed + 1)


@pytest.mark.parametrize(("angle", "length", "radius"), [(0, 12, 3.5), (100, 12, 3.5),
                                                          (145, 12, 3.5), (30, 12, 3.0)])
def test_the_disc_under_a_smear_is_measured_across_it(angle: float, length: int,
                                                      radius: float) -> None:
    region = smeared_and_defocused(angle, length, radius)[100:360, 180:440]
    m = deblur.estimate(region)
    assert m is not None
    r = deblur.across(region, m)
    # the slope's measure, as defocus(), on the edges along the smear only: about the disc
    # (short of it where the modules never reach the full contrast; the smear's angle as
    # measured can be a few degrees off, and its edges add a little)
    assert r is not None and 0.65 * radius <= r <= 1.15 * radius, r


@pytest.mark.parametrize(("angle", "length"), [(0, 12), (30, 10), (100, 14), (145, 12)])
def test_a_smear_alone_measures_no_disc_across_it_or_one_at_the_floor(
    angle: float, length: int
) -> None:
    region = smeared(angle, length)[100:300, 150:350]
    m = deblur.estimate(region)
    assert m is not None
    r = deblur.across(region, m)
    # a smear's angle measured a few degrees off (30 degrees here: 25) leaves a little of
    # it across: a disc at the floor, whose versions cost time, not reads
    assert r is None or r <= 1.1 * deblur.MIN_DEFOCUS, r


@pytest.mark.parametrize(("angle", "length"), [(30, 12), (100, 8), (145, 12)])
def test_a_smeared_code_out_of_focus_reads_with_both_blurs_undone_not_one(
    angle: float, length: int
) -> None:
    region = smeared_and_defocused(angle, length, 3.5)[100:360, 180:440]
    m = deblur.estimate(region)
    assert m is not None
    d = deblur.across(region, m)
    assert d is not None
    smear_only = tuple(v for v in passes_module.DEBLUR_VERSIONS if not v.disc and not v.turn)
    both = tuple(v for v in passes_module.DEBLUR_VERSIONS if v.disc)
    assert both  # the deblur passes have versions with the disc
    for image in deblur.deconvolved(region, m, smear_only):
        assert EPU not in {r.text for r in zxingcpp.read_barcodes(image)}
    assert any(EPU in {r.text for r in zxingcpp.read_barcodes(image)}
               for image in deblur.deconvolved(region, m, both, d))


def test_a_page_moving_out_of_focus_is_read_by_the_disc_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """af_miss 45 (development): a page moving in a dim room (33 ms) with the autofocus
    locked 10 cm behind it; it reads once its smear and its disc are undone together."""
    scene, epu = _af_miss(45)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    for name in ("DEBLUR_PASSES", "DEBLUR_LATE_PASSES"):
        monkeypatch.setattr(decoder_module, name, tuple(
            replace(p, deblur=tuple(v for v in p.deblur if not v.disc))
            for p in getattr(passes_module, name)))
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}


def test_a_version_with_a_disc_is_left_out_where_none_was_measured() -> None:
    region = smeared(30, 10)[100:300, 150:350]
    m = deblur.estimate(region)
    assert m is not None
    versions = (deblur.UNDONE, deblur.Version(1.0, deblur.MOTION_NSR, disc=1.0))
    assert len(list(deblur.deconvolved(region, m, versions))) == 1
    plain, with_disc = deblur.deconvolved(region, m, versions, 3.0)
    assert np.array_equal(plain, deblur.deconvolve(region, m))
    assert not np.array_equal(plain, with_disc)


def test_versions_that_differ_in_noise_ratio_only_draw_their_blur_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    region = smeared_and_defocused(30, 12, 3.5)[100:360, 180:440]
    m = deblur.estimate(region)
    assert m is not None
    versions = passes_module.DEBLUR_VERSIONS
    alone = [next(deblur.deconvolved(region, m, (v,), 3.0)) for v in versions]
    drawn: list[deblur.Motion] = []
    kernel = deblur.kernel
    monkeypatch.setattr(deblur, "kernel", lambda mm, shape: drawn.append(mm) or kernel(mm, shape))
    together = list(deblur.deconvolved(region, m, versions, 3.0))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
    distinct = {(v.length, v.turn, v.disc) for v in versions}
    assert len(drawn) == len(distinct) < len(versions)


# -- pale print out of focus (ordoscan.devtools.af_pale, development scenes) -------------


def faint_defocused(seed: int = 0) -> np.ndarray:
    """A 5 px/module code in pale ink (grey 150 on paper 200) blurred by a 5 px disc, with
    noise: its steps fall under the statistics' floor, not under their noise test."""
    return disc_blurred(code_page(5, 150.0, 50 / 255), 5.0, seed)


def test_a_faint_blurred_code_is_a_candidate_at_the_faint_floor_only() -> None:
    from ordoscan.decoder import regions

    frame = faint_defocused()
    assert regions.candidate_regions(frame)[0] == []
    emap = regions.edge_map(frame)
    assert emap is not None and emap.edges.max() < regions._EDGE_MIN
    boxes = regions.candidate_regions(frame, regions.FAINT_EDGE_MIN, emap)[0]
    code = Box(200, 120, 200 + 37 * 5, 120 + 37 * 5)  # 21 modules and the quiet zones
    assert boxes and any(b.overlaps(code) for b in boxes), boxes
    # the same map searched twice gives what two searches give
    assert regions.candidate_regions(frame, regions.FAINT_EDGE_MIN) == (
        regions.candidate_regions(frame, regions.FAINT_EDGE_MIN, emap))
    # paper and sensor noise alone are no candidate at that floor
    blank = disc_blurred(np.full((480, 640), 200, np.float32), 0, 1)
    assert regions.candidate_regions(blank, regions.FAINT_EDGE_MIN)[0] == []


@pytest.mark.parametrize("seed", [3, 13])
def test_pale_print_out_of_focus_is_read_where_only_the_faint_floor_points(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """af_pale 3 and 13 (development): pale print, the autofocus locked behind the page.
    No finder pattern, no statistics at their floor, no dark blobs point at the code; the
    statistics at the faint floor do, where nothing else does, and its defocus passes read
    it."""
    from ordoscan.decoder import regions
    from ordoscan.devtools import af_pale

    (spec,) = af_pale.specs(1, offset=seed)
    scene = af_pale.render(*spec)
    epu = next(p for k, p in scene.truth if k is Kind.ORDONNANCE)
    assert regions.candidate_regions(scene.image)[0] == []
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert epu in {s.text for s in decoder.decode(scene.image, scene.zoom)}
    monkeypatch.setattr(decoder_module, "FAINT_EDGE_MIN", regions._EDGE_MIN)
    without = Decoder(budget_ms=10_000, duty=None)
    assert epu not in {s.text for s in without.decode(scene.image, scene.zoom)}
