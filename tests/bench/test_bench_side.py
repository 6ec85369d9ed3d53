"""Benchmark: the decoder's second core (scan.decode_threads = 2) against one, in real time.

The presentations bench counts CPU time on a virtual timeline, where the side core's
tasks cost their own CPU time and the scan thread waits only for what is still running
there (tests/bench/lockstep.py, LockstepSide). That model leaves out what two threads of
one process pay for sharing it: the GIL (zxing-cpp and numpy's loops release it, the
Python between them does not), the handing over of each task, the shared caches. This
bench measures them: each frame is decoded by a one-core decoder, then by a two-core one,
in turn, timed on the wall clock on this machine's two cores, and also as the timeline
models the second (the scan thread's CPU time plus the waits LockstepSide charges).

Frames: the generator's hard mix (seed 7, the decoder bench's) and blank counters; the
budget 0 rows time the fast passes and the search (the work the side core shares), the
other rows every extra pass due too (which stay on the scan thread). Printed per
row: mean ms (wall, one core; wall, two cores; modelled, two cores), the ratio of each to
one raw zxing-cpp call timed in the same run, and the two-core figures over the one-core.
The reads must be the same. The machine must have two free cores for the wall-clock
figures to mean anything: the load average is printed.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import pytest
import zxingcpp
from ordoscan.decoder import Decoder
from ordoscan.decoder.side import SideCore
from ordoscan.devtools.scenes import render, scene_set

from tests.bench.lockstep import LockstepSide, Waits

SEED, FRAMES, BLANKS, ROUNDS = 7, 150, 30, 3
# a budget no frame reaches: every pass due runs, so that the three decoders read alike (under
# the deployed budget, which passes fit would depend on each one's clock)
EVERY_PASS_MS = 10_000.0


def _run(frames: list[np.ndarray], budget: float) -> dict[str, Any]:
    one = Decoder(budget, duty=None)
    waits = Waits()

    def now() -> float:  # the scan thread's clock as LockstepSide sees it, at scale 1
        return time.thread_time() + waits.total

    modelled = LockstepSide(now, waits.charge, 1.0)
    real = SideCore()
    two = Decoder(budget, duty=None, side=real)
    model = Decoder(budget, duty=None, side=modelled, clock=now)
    wall1: list[float] = []
    wall2: list[float] = []
    model2: list[float] = []
    raw: list[float] = []
    for _ in range(ROUNDS):
        for f in frames:
            t0 = time.perf_counter()
            zxingcpp.read_barcodes(f)
            t1 = time.perf_counter()
            a = sorted((s.format, s.text) for s in one.decode(f))
            t2 = time.perf_counter()
            b = sorted((s.format, s.text) for s in two.decode(f))
            t3 = time.perf_counter()
            v0 = now()
            c = sorted((s.format, s.text) for s in model.decode(f))
            model2.append(now() - v0)
            assert a == b == c, (a, b, c)
            raw.append(t1 - t0)
            wall1.append(t2 - t1)
            wall2.append(t3 - t2)
    for side in (real, modelled):
        side.close()
    return {"raw": statistics.mean(raw), "one": statistics.mean(wall1),
            "two": statistics.mean(wall2), "model": statistics.mean(model2)}


@pytest.mark.bench
@pytest.mark.timeout(3600)
def test_bench_side_core() -> None:
    hard = [s.image for s in scene_set(SEED, FRAMES, difficulty="hard")]
    blank = [render("blank", s, difficulty=d).image for s in range(BLANKS // 2)
             for d in ("easy", "hard")]
    load0 = os.getloadavg()[0]
    rows = []
    for name, frames in (("hard mix", hard), ("blank counter", blank)):
        for budget in (0.0, EVERY_PASS_MS):
            rows.append((name, budget, _run(frames, budget)))
    print(f"\n\nThe decoder's second core, {ROUNDS} rounds, mean ms per frame (wall clock on"
          f" {os.cpu_count()} CPUs, load average {load0:.1f} -> {os.getloadavg()[0]:.1f});"
          " 'modelled': the presentations bench's timeline (scan thread CPU + charged waits)")
    print(f"  {'frames':<14} {'budget':>6} {'raw':>6} {'1 core':>7} {'2 cores':>8}"
          f" {'modelled':>9} {'1c/raw':>7} {'2c/raw':>7} {'2c/1c':>6} {'model/1c':>9}")
    for name, budget, r in rows:
        print(f"  {name:<14} {budget:>6.0f} {1000 * r['raw']:6.2f} {1000 * r['one']:7.2f}"
              f" {1000 * r['two']:8.2f} {1000 * r['model']:9.2f} {r['one'] / r['raw']:7.2f}"
              f" {r['two'] / r['raw']:7.2f} {r['two'] / r['one']:6.2f}"
              f" {r['model'] / r['one']:9.2f}")
    # the second core must not make the scan loop slower where it shares the work
    assert all(r["two"] < 1.1 * r["one"] for _, budget, r in rows if budget == 0), rows
