"""The main stream for a code the finder patterns did not point at (see ordoscan.decoder)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ordoscan import decoder as decoder_module
from ordoscan.decoder import Decoder
from ordoscan.decoder.regions import Box

from tests.test_decoder_finders import EPU, Crops, text_page


def test_a_region_the_statistics_point_at_is_read_from_the_main_stream_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A code too small to read in the frame, even upscaled, whose finder patterns went
    unseen (a page held far off, blur): only the region statistics point at it. Its region
    is read from the main stream before the upscaled passes, and that read is the one."""
    hires, (cx, cy, side) = text_page(3.2, 20.0, 1.2, seed=3, size=(2560, 1440))
    lores = hires.reshape(720, 2, 1280, 2).mean(axis=(1, 3)).round().astype(np.uint8)
    cx, cy, side = cx / 2, cy / 2, side / 2
    box = Box(round(cx - side), round(cy - side), round(cx + side), round(cy + side))
    monkeypatch.setattr(decoder_module, "new_guesses", lambda frame, known, *_: [])
    monkeypatch.setattr(decoder_module, "candidate_regions", lambda frame, *a, **k: ([box], None))
    plain = Decoder(budget_ms=10_000, duty=None)
    assert EPU not in {s.text for s in plain.decode(lores)}  # the frame's own pixels, upscaled
    ran: list[tuple[str, Box]] = []
    real = decoder_module.run_pass

    def spy(p: Any, frame: Any, region: Box, *args: Any) -> Any:
        ran.append((p.name, region))
        return real(p, frame, region, *args)

    monkeypatch.setattr(decoder_module, "run_pass", spy)
    zoom = Crops(hires, 2)
    decoder = Decoder(budget_ms=10_000, duty=None)
    assert EPU in {s.text for s in decoder.decode(lores, zoom)}
    extra = [(name, region) for name, region in ran if region == box]
    assert extra[0] == ("qr-zoom", box), ran
    # read there: the region's other QR passes are not run
    assert [name for name, _ in extra if name.startswith("qr")] == ["qr-zoom"], ran
    assert zoom.boxes == [(box.x0, box.y0, box.x1, box.y1)] and decoder.stats().zooms == 1
