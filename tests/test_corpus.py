"""ZXing's black-box images (../shared/corpora/zxing-blackbox, used in place).

Our decoder must read, with the exact expected text, at least every image
zxing-cpp's default read_barcodes call reads in the same run, and nothing at
all in the photos that hold no code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zxingcpp
from ordoscan.decoder import Decoder, load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp"}
BUDGET_MS = 10_000.0  # every pass due runs on these small images, however loaded the machine


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _expected(image: Path) -> str:
    """N.txt is UTF-8 text, N.bin raw bytes read as ISO-8859-1 (the corpus README)."""
    txt, binary = image.with_suffix(".txt"), image.with_suffix(".bin")
    if txt.exists():
        return txt.read_bytes().decode("utf-8")
    return binary.read_bytes().decode("latin-1")


def _compare(folders: list[Path]) -> tuple[int, int, int, list[str]]:
    """(images, read by us, read by zxing-cpp's default call, images only zxing-cpp read)."""
    decoder = Decoder(budget_ms=BUDGET_MS, duty=None)
    total = ours = raw = 0
    lost: list[str] = []
    for folder in folders:
        for image in _images(folder):
            want = _expected(image)
            grey = load_image(image)
            total += 1
            us = any(s.text == want for s in decoder.decode(grey))
            them = any(b.text == want for b in zxingcpp.read_barcodes(grey))
            ours += us
            raw += them
            if them and not us:
                lost.append(f"{folder.name}/{image.name}")
    return total, ours, raw, lost


def test_qr_images(corpus: Path) -> None:
    folders = sorted(corpus.glob("qrcode-*"))
    assert folders, f"no qrcode-* folders in {corpus}"
    total, ours, raw, lost = _compare(folders)
    print(f"\nZXing QR images: {total}; ordoscan Decoder {ours}, zxing-cpp read_barcodes {raw}")
    assert ours >= raw, f"read by zxing-cpp but not by us: {lost}"
    # the reading issue's target for these photos (seen before: a check, not a measure)
    assert ours >= 172, f"{ours}/{total} QR images read, fewer than 172"


def test_datamatrix_images(corpus: Path) -> None:
    total, ours, raw, lost = _compare([corpus / "datamatrix-1"])
    print(f"\nZXing DataMatrix images: {total}; ordoscan Decoder {ours}, zxing-cpp {raw}")
    assert ours >= raw, f"read by zxing-cpp but not by us: {lost}"


def test_false_positives(corpus: Path) -> None:
    """Photos without any code: not a single symbol, whatever pass runs."""
    decoder = Decoder(budget_ms=BUDGET_MS, duty=None)
    images = [p for name in ("falsepositives", "falsepositives-2") for p in _images(corpus / name)]
    assert images
    found = {}
    for image in images:
        grey = load_image(image)
        assert grey.dtype == np.uint8 and grey.ndim == 2
        symbols = decoder.decode(grey)
        if symbols:
            found[image.name] = [s.format for s in symbols]
    print(f"\nZXing false-positive images: {len(images)}; symbols found in {len(found)}")
    assert found == {}
    stats = decoder.stats()
    print(f"extra passes due on {stats.hard_frames}, none on {stats.blank_frames}")
    # nothing read: each photo either looked code-like somewhere and got every pass there,
    # or looked like no code at all
    assert stats.frames == len(images) == stats.hard_frames + stats.blank_frames
    assert stats.budget_stops == 0 and stats.duty_stops == 0
