"""The second scene generator (ordoscan.devtools.docscenes) and the evaluation splits."""

from __future__ import annotations

import numpy as np
import pytest
import zxingcpp
from ordoscan.classifier import Kind
from ordoscan.devtools import docscenes as ds
from ordoscan.devtools import splits
from ordoscan.devtools.docscenes import camera as cm
from ordoscan.devtools.docscenes import documents
from ordoscan.devtools.scenes import SET_STRIDE


def _read(img: np.ndarray) -> dict[bytes, zxingcpp.Barcode]:
    return {b.bytes: b for b in zxingcpp.read_barcodes(img)}


def test_same_seed_same_pixels_and_truth() -> None:
    # rendered straight at the lores size (sensor=) to keep the test short
    a = ds.render("url", 11, difficulty="easy", sensor=ds.LORES)
    b = ds.render("url", 11, difficulty="easy", sensor=ds.LORES)
    c = ds.render("url", 12, difficulty="easy", sensor=ds.LORES)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.full, b.full)
    assert a.codes == b.codes and a.params == b.params
    assert not np.array_equal(a.image, c.image)
    assert a.codes[0].payload != c.codes[0].payload


def test_frames_have_the_camera_shapes() -> None:
    s = ds.render("blank", 3, difficulty="hard", setting=ds.Setting("dim", "fixed_focus", "faded"))
    assert s.image.shape == (720, 1280) and s.image.dtype == np.uint8
    assert s.full.shape == (1080, 1920)  # the fixed-focus module's sensor mode
    assert s.chroma[0].shape == s.chroma[1].shape == (360, 640)
    assert s.truth == () and s.codes == ()
    assert 20 < float(s.image.mean()) < 235  # auto-exposure put the counter mid-grey


def _frontal(kind: str, seed: int, module_px: float, sensor: tuple[int, int] | None = None
             ) -> tuple[ds.Subject, ds.DocScene]:
    """A still, square-on, well lit picture of a document: its codes must read."""
    setting = ds.Setting("office", "cm3", "plain")
    rng = np.random.default_rng(seed)
    sub = ds.subject(kind, rng, setting, small=False)
    sub = ds.Subject(**{**sub.__dict__, "surface": cm.Surface(), "gloss": 0.0, "ink_fade": 0.0,
                        "shadow": (0.0, 0.5, 0.5, 0.5), "_rasters": {}})
    cam = cm.CAMERAS[setting.camera]
    z = cm.focal_px(cam, ds.LORES[0]) * documents.module_mm(sub.doc) / module_px
    pose = cm.Pose(0.0, 0.0, z, 0.0, 0.0, 0.0, anchor_mm=sub.anchor)
    lo, full, chroma, codes, params = ds.shoot(sub, pose, rng, ds.AutoExposure(), sensor=sensor)
    return sub, ds.DocScene(kind, seed, "easy", setting, lo, full, chroma, codes, params)


@pytest.mark.parametrize("kind", ["ordonnance", "phone_light", "url"])
def test_truth_is_what_a_clean_large_rendering_reads(kind: str) -> None:
    # the main stream is checked once, on the ordonnance; the others render at lores size
    _, scene = _frontal(kind, 5, 5.0, None if kind == "ordonnance" else ds.LORES)
    assert scene.truth, "a square-on document has its main code in view"
    got = _read(scene.image)
    for code in scene.codes:
        if not code.visible or code.module_px < 3:  # a small INS DataMatrix beside the QR
            continue
        assert code.payload.encode() in got, f"{code.kind} {code.payload!r} not read"
        pos = got[code.payload.encode()].position
        xs = [p.x for p in (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)]
        ys = [p.y for p in (pos.top_left, pos.top_right, pos.bottom_left, pos.bottom_right)]
        x0, y0, x1, y1 = code.box
        assert abs(min(xs) - x0) < 4 and abs(max(xs) - x1) < 4, (xs, code.box)
        assert abs(min(ys) - y0) < 4 and abs(max(ys) - y1) < 4, (ys, code.box)
        assert 4.3 < code.module_px < 5.7
    ordo = [c for c in scene.codes if c.kind is Kind.ORDONNANCE]
    if kind == "ordonnance":
        assert ordo and ordo[0].payload.encode() in _read(scene.full)  # the main stream too
        assert scene.zoom_scale == pytest.approx(1.8)
        x0, y0, x1, y1 = ordo[0].box
        m = 4 * ordo[0].module_px  # the quiet zone
        crop = scene.zoom(x0 - m, y0 - m, x1 + m, y1 + m)
        assert crop.shape[1] == pytest.approx((x1 - x0 + 2 * m) * 1.8, abs=3)
        assert ordo[0].payload.encode() in _read(crop)  # the box is where the code is


def test_small_code_between_lines_is_small() -> None:
    rng = np.random.default_rng(4)
    sub = ds.subject("ordonnance", rng, ds.Setting(), small=True)
    pose = ds.pose_for(sub, rng, "easy")
    *_, codes, _ = ds.shoot(sub, pose, rng, ds.AutoExposure(), sensor=ds.LORES)
    qr = next(c for c in codes if c.kind is Kind.ORDONNANCE)
    assert 2.0 <= qr.module_px <= 3.3
    assert 40 <= qr.box[2] - qr.box[0] <= 80


def test_unknown_setting_is_named() -> None:
    with pytest.raises(ValueError, match="unknown light 'disco'"):
        ds.Setting("disco")
    with pytest.raises(ValueError, match="unknown difficulty"):
        ds.render("url", 1, difficulty="insane")


def test_splits_never_overlap() -> None:
    # gen2: seeds and settings
    assert set(splits.GEN2_DEV_SEEDS).isdisjoint(splits.GEN2_HELDOUT_SEEDS)
    assert set(splits.DEV_SETTINGS).isdisjoint(splits.HELDOUT_SETTINGS)
    held_values = set(splits.HELDOUT_LIGHTS + splits.HELDOUT_CAMERAS + splits.HELDOUT_PAPERS)
    assert all({s.light, s.camera, s.paper} & held_values for s in splits.HELDOUT_SETTINGS)
    assert not any({s.light, s.camera, s.paper} & held_values for s in splits.DEV_SETTINGS)
    dev = list(splits.gen2_specs("dev", 300, "hard"))
    seeds_h = list(splits.gen2_specs("heldout-seeds", 300, "hard"))
    settings_h = list(splits.gen2_specs("heldout-settings", 300, "hard"))
    assert {s.seed for s in dev}.isdisjoint({s.seed for s in seeds_h + settings_h})
    assert {s.seed for s in seeds_h}.isdisjoint({s.seed for s in settings_h})
    assert all(s.setting in splits.DEV_SETTINGS for s in dev + seeds_h)
    assert all(s.setting in splits.HELDOUT_SETTINGS for s in settings_h)
    assert {s.setting for s in settings_h} == set(splits.HELDOUT_SETTINGS)  # all are used
    assert {s.kind for s in dev} == set(ds.KINDS)
    # gen1: render seeds of dev sets and held-out sets (sets of up to SET_STRIDE scenes)
    stride = SET_STRIDE
    dev_hi = (splits.GEN1_DEV_SETS.stop - 1) * stride + stride - 1
    held_lo = splits.GEN1_HELDOUT_SETS.start * stride
    held_hi = (splits.GEN1_HELDOUT_SETS.stop - 1) * stride + stride - 1
    assert dev_hi < held_lo and held_hi < 2**32  # render masks seeds to 32 bits
    assert splits.gen1_set("dev") in splits.GEN1_DEV_SETS
    assert splits.gen1_set("heldout") in splits.GEN1_HELDOUT_SETS
    # every epoch's sets: after the dev sets, below 2**32 render seeds, none shared
    seen: set[int] = set()
    for epoch in range(0, 45):
        sets = splits.gen1_heldout_sets(epoch)
        assert sets.start * stride > dev_hi and (sets.stop - 1) * stride + stride - 1 < 2**32
        assert seen.isdisjoint(sets), epoch
        seen |= set(sets)
    assert splits.gen1_heldout_sets(22).start + 1 == 42_001  # (epoch 22's bench set, as measured)
    with pytest.raises(ValueError, match="no gen1 sets left"):
        splits.gen1_heldout_sets(46)
    with pytest.raises(ValueError, match="unknown split"):
        next(splits.gen2_specs("test", 1, "hard"))


def test_a_presentation_comes_in_from_outside_the_frame() -> None:
    from ordoscan.devtools.docscenes import presentation

    a = presentation.present(3, ds.Setting(), "plain", seconds=1.0)
    b = presentation.present(3, ds.Setting(), "plain", seconds=1.0)
    assert len(a.frames) == 15 and a.payload == b.payload
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a.frames, b.frames, strict=True))
    assert not a.frames[0].in_view  # the hand starts outside the frame
    first = a.first_in_view
    assert first is not None and 1 <= first < 14
    held = a.frames[-1]
    assert held.in_view and 2.0 <= held.module_px <= 6.0
    assert a.payload.encode() in _read(held.image)  # a settled plain presentation reads
    with pytest.raises(ValueError, match="unknown presentation style"):
        presentation.present(3, ds.Setting(), "juggled")


def test_a_presentation_frame_has_a_main_stream_to_zoom_into() -> None:
    import cv2
    from ordoscan.camera.base import zoom_box
    from ordoscan.devtools.docscenes import presentation

    a = presentation.present(3, ds.Setting(), "plain", seconds=1.0)
    sc = presentation.scene(3, ds.Setting(), "plain", seconds=1.0)
    j = len(a.frames) - 1
    held = a.frames[j]
    assert held.shot is not None and sc.payload == a.payload
    p = _read(held.image)[a.payload.encode()].position
    xs = [c.x for c in (p.top_left, p.top_right, p.bottom_right, p.bottom_left)]
    ys = [c.y for c in (p.top_left, p.top_right, p.bottom_right, p.bottom_left)]
    box = (min(xs) - 20, min(ys) - 20, max(xs) + 20, max(ys) + 20)
    main = zoom_box(box, ds.LORES, sc.main_size)
    assert main is not None and sc.main_size == (2304, 1296)
    crop = sc.main_crop(j, held.shot, main)
    assert crop.shape == (main[3] - main[1], main[2] - main[0])  # 1.8x the lores box
    assert np.array_equal(crop, sc.main_crop(j, held.shot, main))  # reproducible
    # the same scene as the lores frame (its downscale), with more pixels per module
    lores = held.image[box[1] : box[3], box[0] : box[2]].astype(np.float64)
    down = cv2.resize(crop, (lores.shape[1], lores.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.corrcoef(lores.ravel(), down.astype(np.float64).ravel())[0, 1] > 0.9
    assert abs(float(down.mean()) - float(lores.mean())) < 3
    assert a.payload.encode() in _read(crop)
    with pytest.raises(ValueError, match="not inside"):
        sc.main_crop(j, held.shot, (2200, 1200, 2400, 1300))


def _dev_plain_paper() -> tuple[int, ds.Setting]:
    """A dev presentation seed of plain style showing paper, and its dev setting."""
    seed = splits.PRESENTATION_DEV_SEEDS.start + 8
    return seed, splits.presentation_settings("dev")[seed % len(splits.DEV_SETTINGS)]


def test_a_presentation_with_the_focus_left_behind_the_page() -> None:
    """af_miss's presentations: the dev presentation of the seed, its lens locked 8-40 cm
    behind where the page is held for every frame (an autofocus left on the counter): the
    same path and exposure, each frame blurred by a wider disc, the main stream's crops too;
    a held-out seed is refused."""
    from ordoscan.devtools import af_miss
    from ordoscan.devtools.docscenes import presentation

    seed, setting = _dev_plain_paper()
    behind = af_miss.presentation_focus(seed)
    assert af_miss.FOCUS_BEHIND_MM[0] <= behind <= af_miss.FOCUS_BEHIND_MM[1]
    sharp = presentation.present(seed, setting, "plain", seconds=1.6)
    soft = presentation.present(seed, setting, "plain", seconds=1.6, focus_behind_mm=behind)
    sc = presentation.scene(seed, setting, "plain", seconds=1.6)
    hold_z = sc.path.keys[-1][1][2]
    assert all(f.shot is not None and f.shot.focus_z == pytest.approx(hold_z + behind)
               for f in soft.frames)
    held = len(soft.frames) - 1
    a, b = sharp.frames[held], soft.frames[held]
    assert a.in_view and b.in_view and a.module_px == b.module_px  # the same pose
    assert a.shot is not None and b.shot is not None
    assert a.shot.exposure_ms == b.shot.exposure_ms
    assert sc.blur_sigma(b.shot, sc.main_size) > 2 * sc.blur_sigma(a.shot, sc.main_size)

    def detail(img: np.ndarray) -> float:  # mean gradient: what a defocus disc takes away
        return float(np.abs(np.diff(img.astype(np.float64), axis=1)).mean())

    assert detail(b.image) < 0.8 * detail(a.image)
    with pytest.raises(ValueError, match="dev presentation seeds only"):
        af_miss.presentation_focus(splits.PRESENTATION_HELDOUT_SEEDS.start)


def test_the_presentations_bench_takes_its_families_on_dev_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ordoscan.devtools import af_miss, pale

    import tests.bench.test_bench_presentations as tbp

    monkeypatch.setattr(tbp, "SPLIT", "dev")
    monkeypatch.setattr(tbp, "FAMILY", "")
    assert tbp._family() is None
    monkeypatch.setattr(tbp, "FAMILY", "af_miss")
    fam = tbp._family()
    assert fam is not None and fam.module is af_miss and fam.ink_fade is None
    assert fam.focus_behind is af_miss.presentation_focus
    monkeypatch.setattr(tbp, "FAMILY", "pale")
    fam = tbp._family()
    assert fam is not None and fam.module is pale and fam.focus_behind is None
    assert fam.ink_fade is pale.presentation_ink
    monkeypatch.setattr(tbp, "FAMILY", "af_pale")
    with pytest.raises(ValueError, match="ORDOSCAN_BENCH_PRESENTATION_FAMILY='af_pale'"):
        tbp._family()
    monkeypatch.setattr(tbp, "FAMILY", "pale")
    monkeypatch.setattr(tbp, "SPLIT", "heldout")
    with pytest.raises(ValueError, match="dev split only"):
        tbp._family()


def test_pale_presentations_fade_the_prints_ink_and_nothing_else() -> None:
    """pale's presentations: the dev presentation of the seed, its printed page's ink
    lightened 0.15-0.35 towards the paper (lores frames and the main stream's crops alike):
    the same path, exposure and focus, the code's dark modules lighter; a phone's screen
    has no ink and is unchanged; a held-out seed is refused."""
    from ordoscan.devtools import pale
    from ordoscan.devtools.docscenes import presentation

    seed, setting = _dev_plain_paper()
    ink = pale.presentation_ink(seed)
    assert pale.PALE_INK[0] <= ink <= pale.PALE_INK[1]
    dark = presentation.present(seed, setting, "plain", seconds=1.6)
    faded = presentation.present(seed, setting, "plain", seconds=1.6, ink_fade=ink)
    held = len(faded.frames) - 1
    a, b = dark.frames[held], faded.frames[held]
    assert a.in_view and b.in_view and a.module_px == b.module_px  # the same pose
    assert a.shot is not None and b.shot is not None
    assert a.shot.focus_z == b.shot.focus_z  # the same focus (the exposure meters the page)
    sc_a = presentation.scene(seed, setting, "plain", seconds=1.6)
    sc_b = presentation.scene(seed, setting, "plain", seconds=1.6, ink_fade=ink)
    assert sc_b.sub.ink_fade == ink != sc_a.sub.ink_fade
    # where the two differ much, the faded one is lighter: the print (the code's modules
    # among it), in the lores frame and in the main stream's crop, each rendered from its
    # frame's own camera state (the auto-exposure's gain differs by a percent: the paper)
    def lighter(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
        d = y.astype(np.int16) - x.astype(np.int16)
        return int((d > 20).sum()), int((d < -20).sum())

    up, down = lighter(a.image, b.image)
    assert up > 500 and down < up / 20
    main = (0, 0, *sc_a.main_size)
    up, down = lighter(sc_a.main_crop(held, a.shot, main), sc_b.main_crop(held, b.shot, main))
    assert up > 2000 and down < up / 20
    # a phone: no ink to fade
    phone = presentation.scene(seed, setting, "plain", "phone_light", seconds=1.6, ink_fade=ink)
    assert phone.sub.ink_fade == presentation.scene(seed, setting, "plain", "phone_light",
                                                    seconds=1.6).sub.ink_fade
    with pytest.raises(ValueError, match="dev presentation seeds only"):
        pale.presentation_ink(splits.PRESENTATION_HELDOUT_SEEDS.start)


@pytest.mark.parametrize("name", ["af_miss", "pale", "af_pale", "af_near", "af_dark"])
def test_the_dev_families_render_dev_scenes_only(name: str) -> None:
    """The autofocus-miss, pale-print, both-at-once, near-focus and dark-mode phone
    families are development families: dev seeds and dev settings."""
    import importlib

    from ordoscan.devtools import splits
    from ordoscan.devtools.docscenes import Setting

    family = importlib.import_module(f"ordoscan.devtools.{name}")
    specs = family.specs(40)
    assert all(seed in splits.GEN2_DEV_SEEDS and s in splits.DEV_SETTINGS for seed, s in specs)
    with pytest.raises(ValueError, match="dev seeds and settings only"):
        family.render(splits.GEN2_HELDOUT_SEEDS.start, specs[0][1])
    with pytest.raises(ValueError, match="dev seeds and settings only"):
        family.render(specs[0][0], Setting("office", "fixed_focus", "plain"))
    with pytest.raises(ValueError, match="no seed"):
        family.specs(1, offset=len(splits.GEN2_DEV_SEEDS))


def test_pale_print_is_the_dev_scene_but_for_its_ink() -> None:
    """A pale scene is its dev seed's ordonnance scene with the ink drawn from PALE_INK
    (the pose, light and exposure draws unmoved); its code's contrast is lower."""
    from ordoscan.devtools import pale

    ((seed, setting),) = pale.specs(1, offset=3)
    light = ds.render("ordonnance", seed, setting=setting, difficulty="hard", sensor=ds.LORES)
    faint = pale.render(seed, setting, sensor=ds.LORES)
    assert pale.PALE_INK[0] <= faint.params["ink_fade"] <= pale.PALE_INK[1]
    assert light.params["ink_fade"] < pale.PALE_INK[0]
    for key in ("z_mm", "roll", "tilt_x", "tilt_y", "lux", "defocus_px"):
        assert faint.params[key] == light.params[key], key
    (code,) = [c for c in faint.codes if c.kind is Kind.ORDONNANCE]
    x0, y0, x1, y1 = (round(v) for v in code.box)

    def spread(img: np.ndarray) -> float:
        lo, hi = np.percentile(img[y0:y1, x0:x1], (5, 95))
        return float(hi - lo)

    assert spread(faint.image) < 0.85 * spread(light.image)


def test_an_exposure_cap_shortens_the_smear_and_raises_the_gain() -> None:
    """The kiosk's tuning caps the shutter (camera.max_exposure_us, 8 ms by default): in a
    dim room the auto-exposure then stops at the cap and the gain takes over; the scene's
    other draws (pose, motion, codes) are the same."""
    setting = ds.Setting("dim", "cm3", "plain")
    free = ds.render("ordonnance", 5, setting=setting, difficulty="hard", sensor=ds.LORES)
    capped = ds.render("ordonnance", 5, setting=setting, difficulty="hard", sensor=ds.LORES,
                       max_exposure_ms=8.0)
    assert free.params["exposure_ms"] > 8.0
    assert capped.params["exposure_ms"] == pytest.approx(8.0)
    assert capped.params["gain"] > free.params["gain"]
    assert capped.params["blur_samples"] <= free.params["blur_samples"]
    for key in ("z_mm", "roll", "tilt_x", "tilt_y", "speed_mm_s", "lux", "defocus_px"):
        assert capped.params[key] == free.params[key], key
    assert [c.payload for c in capped.codes] == [c.payload for c in free.codes]
    # in bright light the cap changes nothing: the same pixels
    office = ds.Setting("window", "cm3", "plain")
    a = ds.render("ordonnance", 5, setting=office, difficulty="hard", sensor=ds.LORES)
    b = ds.render("ordonnance", 5, setting=office, difficulty="hard", sensor=ds.LORES,
                  max_exposure_ms=8.0)
    assert a.params["exposure_ms"] < 8.0
    assert np.array_equal(a.image, b.image) and a.params == b.params
