"""Benchmark: classification and de-duplication per frame, against zxing-cpp's own decode.

Both stages run on every analysed frame; they must cost a small fraction of
the decode itself. Measured in the same run as the raw library, as a ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest
import zxingcpp
from ordoscan.classifier import Classifier
from ordoscan.config import ScanConfig
from ordoscan.decoder import Symbol
from ordoscan.dedupe import Deduper

EPU = "01S2TBPZ2JCNZZYGHZ"
INS = "IS0112345678901234567890S1ABCDEF"
GS1 = "(01)03400935955838(17)270300(10)LOT7(21)SER123"
FORMATS = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.DataMatrix)


def _frame() -> np.ndarray:
    """A 1280x720 grey frame: an ordonnance QR, its INS DataMatrix and a medicine pack."""
    frame = np.full((720, 1280), 200, np.uint8)
    codes = [
        zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode),
        zxingcpp.create_barcode(INS, zxingcpp.BarcodeFormat.DataMatrix),
        zxingcpp.create_barcode(GS1, zxingcpp.BarcodeFormat.DataMatrix, gs1=True),
    ]
    x = 60
    for code in codes:
        img = np.array(code.to_image(scale=5))
        frame[150:150 + img.shape[0], x:x + img.shape[1]] = img
        x += img.shape[1] + 120
    return frame


def _per_call_us(fn: Callable[[], object], seconds: float = 1.0) -> float:
    """Median time of one call (microseconds) over batches filling `seconds`."""
    fn()
    batch, start = 1, time.perf_counter()
    while time.perf_counter() - start < 0.05:  # size a batch to about 50 ms
        fn()
        batch += 1
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - t0) / batch * 1e6)
    return statistics.median(samples)


@pytest.mark.bench
def test_classify_and_dedupe_cost_per_frame() -> None:
    frame = _frame()
    results = zxingcpp.read_barcodes(frame, formats=FORMATS)
    symbols = [
        Symbol(str(r.format), r.symbology_identifier, r.text, bytes(r.bytes), ()) for r in results
    ]
    assert len(symbols) == 3, symbols
    clf = Classifier(ScanConfig())
    ded = Deduper(1.5, 60)
    clock = iter(range(10**9))

    def decode() -> object:
        return zxingcpp.read_barcodes(frame, formats=FORMATS)

    def classify() -> object:
        return [clf.classify(s) for s in symbols]

    items = [clf.classify(s) for s in symbols]

    def dedupe() -> object:
        return ded.update(next(clock) / 15, items)

    big = Symbol("QRCode", "]Q1", "A" * 500, b"A" * 500, ())

    def classify_long() -> object:
        return clf.classify(big)

    rows = [
        ("zxing-cpp read_barcodes (1280x720, 3 codes)", _per_call_us(decode)),
        ("Classifier.classify x3", _per_call_us(classify)),
        ("Classifier.classify, 500-byte payload", _per_call_us(classify_long)),
        ("Deduper.update (3 codes in view)", _per_call_us(dedupe)),
    ]
    base = rows[0][1]
    print()
    print(f"{'stage':46} {'us/frame':>10} {'vs decode':>10}")
    for name, us in rows:
        print(f"{name:46} {us:10.1f} {us / base:10.2%}")
    # Design budget: both stages together stay under 5% of the decode.
    assert (rows[1][1] + rows[3][1]) / base < 0.05
