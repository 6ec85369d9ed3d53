"""The parts of the Raspberry Pi rig that run anywhere: its display writer and its settings.

The rig itself needs the Pi (camera, GPIO loop-backs, display): with --rig pi
elsewhere every scenario is skipped with the reason given by pi_unavailable().
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.hil.pi import (
    LOOPBACK_PINS,
    FramebufferDisplay,
    FramebufferGeometry,
    PiRigConfig,
    framebuffer_bytes,
    pi_unavailable,
)
from tests.hil.rig import OUTPUT_PINS


def test_grey_pictures_fill_the_screen_centred_in_rgb565() -> None:
    geo = FramebufferGeometry(width=8, height=4, bits_per_pixel=16, stride=20)  # 4 bytes padding
    image = np.full((2, 2), 255, dtype=np.uint8)  # a square on a wide screen: bars left, right
    raw = np.frombuffer(framebuffer_bytes(image, geo), dtype=np.uint8).reshape(4, 20)
    pixels = raw[:, :16].copy().view("<u2")
    assert pixels.shape == (4, 8)
    assert (pixels[:, 2:6] == 0xFFFF).all()  # white in 5-6-5
    assert (pixels[:, :2] == 0).all() and (pixels[:, 6:] == 0).all()  # black bars
    assert (raw[:, 16:] == 0).all()  # the stride padding is left alone


def test_mid_grey_in_xrgb8888() -> None:
    geo = FramebufferGeometry(width=4, height=2, bits_per_pixel=32, stride=16)
    image = np.full((2, 4), 128, dtype=np.uint8)
    pixels = np.frombuffer(framebuffer_bytes(image, geo), dtype="<u4").reshape(2, 4)
    assert (pixels == 0x808080).all()


def test_unsupported_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="24 bits"):
        framebuffer_bytes(np.zeros((2, 2), np.uint8), FramebufferGeometry(2, 2, 24, 6))


def test_display_writes_the_frame_at_the_start(tmp_path: Path) -> None:
    fb = tmp_path / "fb0"
    fb.write_bytes(b"\xaa" * 64)
    geo = FramebufferGeometry(width=4, height=2, bits_per_pixel=32, stride=16)
    display = FramebufferDisplay(str(fb), geo)
    try:
        display.show(np.full((2, 4), 255, dtype=np.uint8))
    finally:
        display.close()
    assert fb.read_bytes()[:32] == b"\xff\xff\xff\x00" * 8


def test_rig_settings_default_to_the_wiring_document(tmp_path: Path) -> None:
    cfg = PiRigConfig.load(None)
    assert cfg.loopback == LOOPBACK_PINS
    assert not set(cfg.loopback.values()) & set(OUTPUT_PINS.values())
    doc = (Path(__file__).resolve().parents[2] / "docs" / "HIL.md").read_text()
    for channel, pin in OUTPUT_PINS.items():
        assert f"| {channel} | BCM {pin} |" in doc.replace("  ", " ")
    for channel, pin in LOOPBACK_PINS.items():
        assert f"BCM {pin}" in doc, f"the {channel} loop-back pin is not in docs/HIL.md"
    f = tmp_path / "rig.toml"
    f.write_text('[camera]\nsource = "v4l2"\nsize = [640, 480]\nusb_port = "1-1.3"\n'
                 '[loopback]\nred = 26\n')
    cfg = PiRigConfig.load(str(f))
    assert (cfg.camera_source, cfg.camera_size, cfg.usb_port) == ("v4l2", (640, 480), "1-1.3")
    assert cfg.loopback == LOOPBACK_PINS | {"red": 26}
    f.write_text("[loopback]\nbuzer = 26\n")
    with pytest.raises(ValueError, match="knows only"):
        PiRigConfig.load(str(f))


def test_off_a_pi_the_rig_says_why() -> None:
    why = pi_unavailable()
    model = Path("/proc/device-tree/model")
    if model.exists() and "Raspberry Pi" in model.read_text(errors="replace"):
        pytest.skip("this is a Raspberry Pi: the rig may run here")
    assert why is not None and "not a Raspberry Pi" in why
