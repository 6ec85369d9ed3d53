"""Motion blur measured on a region and undone: real zxing-cpp on codes smeared by a known
linear motion (an OpenCV line kernel, drawn apart from the decoder's own)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import zxingcpp
from ordoscan.decoder import Decoder, deblur

EPU = "01S2TBPZ2JCNZZYGHZ"


def smeared(angle: float, length: int, seed: int = 0) -> np.ndarray:
    """A 4 px/module code on paper, blurred along `angle` (degrees, y down) over `length`
    pixels, with sensor noise."""
    bc = zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode)
    img = np.asarray(zxingcpp.write_barcode_to_image(bc, scale=4, add_quiet_zones=True))
    page = np.full((480, 640), 255, np.uint8)  # the code a small part of the view
    page[150 : 150 + img.shape[0], 200 : 200 + img.shape[1]] = img
    page = (30 + page.astype(np.float32) * 0.7).astype(np.float32)  # ink and paper grey
    n = length + 3
    k = np.zeros((n | 1, n | 1), np.float32)
    c = k.shape[0] // 2
    dx, dy = math.cos(math.radians(angle)) * length / 2, math.sin(math.radians(angle)) * length / 2
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
    out = cv2.filter2D(page, -1, k / k.sum(), borderType=cv2.BORDER_REPLICATE)
    out += np.random.default_rng(seed).normal(0, 2.0, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("angle", "length"), [(0, 12), (30, 10), (100, 14), (145, 12)])
def test_motion_is_measured_on_the_region(angle: float, length: int) -> None:
    m = deblur.estimate(smeared(angle, length)[100:300, 150:350])
    assert m is not None
    diff = abs((m.angle - angle + 90) % 180 - 90)
    assert diff <= 10, m
    assert abs(m.length - length) <= 0.2 * length + 1, m


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
