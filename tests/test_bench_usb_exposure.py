"""The USB auto-exposure study's loop (tests/bench/usb_exposure.py) on one dim dev scene:
the firmware's controller settles under the cap, and the renderer is left as it was."""

from __future__ import annotations

from ordoscan.camera.exposure import BAND, TARGET, meter
from ordoscan.devtools import docscenes, splits

from tests.bench import usb_exposure


def test_the_controller_settles_a_dim_scene_under_the_cap() -> None:
    dim = next(s for s in splits.gen2_specs("dev", 60, "hard")
               if s.setting.light == "dim" and s.kind == "ordonnance")
    own = docscenes.AutoExposure
    scene, state = usb_exposure.settle(dim, 8000)
    assert docscenes.AutoExposure is own  # the renderer's own auto-exposure is back
    assert state["own_ms"] > 8.0  # the camera alone would have exposed longer
    assert state["ms"] <= 8.0 and state["gain"] > state["own_gain"]  # the gain took over
    assert scene.params["exposure_ms"] == state["ms"]
    assert scene.params["gain"] == state["gain"]
    # not over-exposed once settled (a dim room may leave it under the target: gain at its top)
    assert meter(scene.image) <= TARGET * (1 + BAND) * 1.3
