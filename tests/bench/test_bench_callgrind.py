"""Benchmark: Pi-class cost, as instructions per frame under valgrind's callgrind.

Instructions executed carry across machines far better than milliseconds on this shared
x86: docs/EVALUATION.md turns them into a budget for a Pi 4 (Cortex-A72) and a Pi 5
(Cortex-A76). A few held-out frames (gen2 heldout-seeds, hard: frames with an ordonnance
and frames without) are decoded in a child Python under callgrind by: one default
zxing-cpp read_barcodes call, ordoscan's Decoder as deployed (its 60 ms budget and duty
cycle, on the thread's CPU time; that clock is slowed by valgrind's own slowdown, measured
in the same run on the raw call, so the budget buys what it would natively), and the
Decoder with every pass due.

Only the measured decodes are counted: they run inside one functools.reduce call, and
callgrind collects from its entry to its exit (--collect-atstart=no
--toggle-collect=functools_reduce), so start-up, imports and warm-up are left out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.bench import heldout as ho
from tests.bench import pi_speed

FRAMES = 4  # frames measured per reader (the first ones of the held-out split)


def child(spec: dict[str, object]) -> None:
    """Load frames, warm up every reader, then decode the measured frames with one (inside
    functools.reduce, the window callgrind counts); prints that window's thread CPU time."""
    import functools

    import zxingcpp
    from ordoscan.decoder import Decoder

    data = np.load(str(spec["frames"]))
    frames = list(data["frames"])
    # the main stream of each frame, when rendered with one: the Decoder zooms into it
    fulls = list(data["fulls"]) if "fulls" in data.files else [None] * len(frames)
    zooms = {id(f): _zoom(f, full) for f, full in zip(frames, fulls, strict=True)}
    slow = float(spec.get("slowdown", 1.0))  # type: ignore[arg-type]
    # the thread's CPU time, as in the held-out bench (ho.cpu_clock), slowed back to native
    deployed = Decoder(clock=ho.cpu_clock(1.0 / slow))
    every = Decoder(budget_ms=10_000, duty=None)
    readers = {"raw": zxingcpp.read_barcodes,
               "deployed": lambda f: deployed.decode(f, zooms[id(f)]),
               "every": lambda f: every.decode(f, zooms[id(f)])}
    for f in frames[:2]:  # warm-up: libraries loaded, pass costs learnt
        for r in readers.values():
            r(f)
    read = readers[str(spec["reader"])]
    t = time.thread_time()
    functools.reduce(lambda acc, f: (read(f), acc)[1], frames, 0)
    print(json.dumps({"seconds": time.thread_time() - t}))


def _zoom(frame: np.ndarray, full: np.ndarray | None) -> ho.Zoom | None:
    if full is None:
        return None
    return ho.Frame("gen2", "", frame, (), full=full).zoom


def _run(spec: dict[str, object], out: Path) -> tuple[int, float]:
    """(instructions counted, CPU seconds of the counted window under valgrind)."""
    n, stdout = pi_speed.callgrind("tests.bench.test_bench_callgrind", [json.dumps(spec)], out)
    return n, float(json.loads(stdout.strip().splitlines()[-1])["seconds"])


@pytest.mark.bench
@pytest.mark.timeout(7200)
def test_bench_callgrind(tmp_path: Path) -> None:
    if pi_speed.VALGRIND is None:
        pytest.fail("valgrind is not installed: ./dev setup installs it (apt package valgrind)")
    import zxingcpp

    frames = list(ho.gen2_frames("heldout-seeds", 12))
    with_code = [f for f in frames if f.truth][: FRAMES - 1]
    blank = [f for f in frames if not f.truth][:1]
    chosen = (with_code + blank + frames)[:FRAMES]
    path = tmp_path / "frames.npz"
    fulls = [f.full for f in chosen]
    if all(full is not None for full in fulls):
        np.savez(path, frames=np.stack([f.image for f in chosen]), fulls=np.stack(fulls))
    else:
        np.savez(path, frames=np.stack([f.image for f in chosen]))
    # valgrind's slowdown on the raw call, to slow the deployed decoder's clock alike
    native = []
    for f in chosen:
        t = time.thread_time()
        zxingcpp.read_barcodes(f.image)
        native.append(time.thread_time() - t)
    base_spec = {"frames": str(path)}
    raw, raw_s = _run({**base_spec, "reader": "raw"}, tmp_path / "raw.out")
    slowdown = max(raw_s / max(sum(native), 1e-6), 1.0)
    counts = {"raw": raw}
    for name in ("deployed", "every"):
        n, _ = _run({**base_spec, "reader": name, "slowdown": slowdown},
                    tmp_path / f"{name}.out")
        counts[name] = n

    names = {"raw": "zxing-cpp read_barcodes (default)",
             "deployed": "ordoscan Decoder (60 ms budget)",
             "every": "ordoscan Decoder (every pass due)"}
    print(f"\n\nInstructions per 1280x720 frame under callgrind ({len(chosen)} held-out gen2"
          f" frames, {sum(bool(f.truth) for f in chosen)} with a code; x86-64; valgrind"
          f" slowdown on the raw call ~{slowdown:.0f}x)")
    print(f"  {'reader':<36} {'Minstr/frame':>13} {'/raw':>6} {'Pi 4 ms':>8} {'Pi 5 ms':>8}")
    for key, n in counts.items():
        per = n / len(chosen)
        # the boards' instruction rates (pi_speed.PI_RATES; docs/EVALUATION.md says why)
        pi4 = per / pi_speed.PI_RATES["pi4"] * 1000
        pi5 = per / pi_speed.PI_RATES["pi5"] * 1000
        print(f"  {names[key]:<36} {per / 1e6:13.1f} {n / counts['raw']:5.2f}x {pi4:8.1f}"
              f" {pi5:8.1f}")
    # the Decoder's fast pass is itself a zxing-cpp read: it cannot cost much less
    assert counts["raw"] > 1e6 and counts["every"] >= counts["raw"] * 0.3


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))
