"""The USB auto-exposure study's loop (tests/bench/usb_exposure.py) on one dim dev scene:
the firmware's controller settles under the cap; the renderer's fixed exposure changes the
exposure only."""

from __future__ import annotations

from ordoscan.camera.exposure import BAND, TARGET, meter
from ordoscan.devtools import docscenes, splits

from tests.bench import usb_exposure


def test_the_controller_settles_a_dim_scene_under_the_cap() -> None:
    dim = next(s for s in splits.gen2_specs("dev", 60, "hard")
               if s.setting.light == "dim" and s.kind == "ordonnance")
    scene, state = usb_exposure.settle(dim, 8000)
    assert state["own_ms"] > 8.0  # the camera alone would have exposed longer
    assert state["ms"] <= 8.0 and state["gain"] > state["own_gain"]  # the gain took over
    assert scene.params["exposure_ms"] == state["ms"]
    assert scene.params["gain"] == state["gain"]
    # not over-exposed once settled (a dim room may leave it under the target: gain at its top)
    assert meter(scene.image) <= TARGET * (1 + BAND) * 1.3


def test_a_fixed_exposure_is_the_same_scene_at_that_exposure() -> None:
    spec = next(s for s in splits.gen2_specs("dev", 20, "hard") if s.kind == "ordonnance")
    own = docscenes.render(spec.kind, spec.seed, setting=spec.setting, difficulty="hard")
    half = (own.params["exposure_ms"] / 2, own.params["gain"])
    fixed = docscenes.render(spec.kind, spec.seed, setting=spec.setting, difficulty="hard",
                             exposure=half)
    assert (fixed.params["exposure_ms"], fixed.params["gain"]) == half
    # the same page, pose and code: every other draw the same (the box moves by the motion
    # over the shorter exposure only)
    assert [c.payload for c in fixed.codes] == [c.payload for c in own.codes]
    for a, b in zip(fixed.codes, own.codes, strict=True):
        assert max(abs(p - q) for p, q in zip(a.box, b.box, strict=True)) < 2.0
    assert fixed.image.mean() < 0.85 * own.image.mean()  # half the light (through the gamma)
