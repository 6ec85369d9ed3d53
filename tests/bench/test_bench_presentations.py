"""Benchmark: time to read a presentation, through the daemon's real scan loop.

Held-out presentations (ordoscan.devtools.docscenes.presentation, seeds of
splits.presentation_seeds("heldout"), half under held-out settings): a hand brings an
ordonnance (paper, or a phone in light or dark mode) in from outside the frame, holds
it with tremor; some are first held too far away, some tilted, some moved aside and back.
Their 1280x720 frames are replayed at 15 fps, in real time, to a child process running
the App as on a kiosk (the deployed decoder budget and duty cycle, mock pins, a real
mosquitto, the SQLite outbox), with 1 s of empty counter between two presentations.

Measured per presentation: from the delivery of the first frame in which the code is
wholly in view to the good-read signal (the green LED dip, given once the scan is on
disk). Printed: p50, p95, the share never read within 3 s, by style.
Targets: p95 at most 0.5 s, at most 1 % never read within 3 s.

The frames are made once and kept in a memory-mapped file under the test cache (a camera
hands over raw buffers: no image decoding in the loop).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.bench.heldout import CACHE, _generator_hash
from tests.bench.test_bench_pipeline import FPS, _paced_source, percentile

N = int(os.environ.get("ORDOSCAN_BENCH_PRESENTATIONS", "32"))
SECONDS = 4.0  # frames per presentation: 4 s at 15 fps
GAP = 15  # empty counter frames between two presentations (1 s)
WITHIN_S = 3.0
P95_TARGET_S, NEVER_TARGET = 0.5, 0.01
ROOT = Path(__file__).resolve().parents[2]


def _frames_file() -> tuple[Path, Path]:
    """Render (once) the presentations: a (frames, 720, 1280) uint8 file and its index."""
    from ordoscan.devtools import splits
    from ordoscan.devtools.docscenes import LORES, camera, presentation

    plan = f"{_generator_hash()}-{N}-{SECONDS}-{splits.PRESENTATION_SETTINGS}"
    key = hashlib.sha256(plan.encode()).hexdigest()[:12]
    folder = CACHE / "presentations" / key
    data, index = folder / "frames.npy", folder / "index.json"
    if data.exists() and index.exists():
        return data, index
    folder.mkdir(parents=True, exist_ok=True)
    n_frames = int(SECONDS * FPS)
    out = np.lib.format.open_memmap(folder / "frames.tmp.npy", mode="w+", dtype=np.uint8,
                                    shape=(1 + N * n_frames, LORES[1], LORES[0]))
    # frame 0: the empty counter
    counter = camera.counter_texture(np.random.default_rng(1), LORES).mean(axis=2)
    out[0] = np.clip(np.rint(255 * (0.9 * counter) ** (1 / 2.2)), 0, 255).astype(np.uint8)
    meta: list[dict[str, Any]] = []
    for k, p in enumerate(presentation.presentations(splits.presentation_seeds("heldout", N),
                                                     splits.PRESENTATION_SETTINGS)):
        first = 1 + k * n_frames
        for j, f in enumerate(p.frames[:n_frames]):
            out[first + j] = f.image
        meta.append({"seed": p.seed, "style": p.style, "kind": p.kind, "setting": str(p.setting),
                     "first": first, "n": n_frames, "in_view": p.first_in_view})
    out.flush()
    del out
    (folder / "frames.tmp.npy").replace(data)
    index.write_text(json.dumps(meta))
    return data, index


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """The kiosk on the presentations' schedule; gives delivery times and green-LED dips."""
    from gpiozero.pins.mock import MockFactory
    from ordoscan.app import App
    from ordoscan.config import parse_config

    frames = np.load(spec["frames"], mmap_mode="r")
    schedule: list[int] = []
    for p in spec["presentations"]:
        schedule += list(range(p["first"], p["first"] + p["n"])) + [0] * GAP
    start = threading.Event()
    source = _paced_source(frames, schedule, start)  # type: ignore[arg-type]
    cfg = parse_config(spec["config"], "<bench>", env={})
    factory = MockFactory()
    app = App(cfg, pin_factory=factory, source=source)
    app.start()
    try:
        assert app.feedback is not None
        deadline = time.monotonic() + 30
        while app.status()["camera"] != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError("the kiosk did not come up")
            time.sleep(0.05)
        while len(source.delivered) < 30:  # warm-up on the empty counter
            time.sleep(0.05)
        app.feedback.wait_idle(10)
        green = factory.pin(cfg.gpio.green)
        green.clear_states()
        cleared = time.monotonic()
        first = len(source.delivered)
        processed0 = app.stats.snapshot()["frames"]
        start.set()
        while not source.finished:
            time.sleep(0.05)
        time.sleep(0.5)
        app.feedback.wait_idle(10)
        dips, t = [], cleared
        for s in green.states[1:]:
            t += s.timestamp
            if not bool(s.state):
                dips.append(t)
        delivered = [(fid, m) for fid, m, _ in source.delivered[first:]]
        snap = app.stats.snapshot()
        processed = snap["frames"] - processed0
    finally:
        app.stop()
    return {"dips": dips, "delivered": delivered, "queued": snap["queued"],
            "processed": processed}


@pytest.mark.bench
@pytest.mark.timeout(7200)  # gen2 frames are rendered on the first run, then cached
def test_bench_presentations(tmp_path: Path, broker: Any) -> None:
    from tests.support.kiosk import kiosk_data

    t0 = time.perf_counter()
    data_path, index_path = _frames_file()
    made = time.perf_counter() - t0
    pres = json.loads(index_path.read_text())
    data = kiosk_data(tmp_path, broker.port)
    data["scan"] = {}  # the deployed de-duplication window and decode budget
    data["log"] = {"level": "warning"}
    spec = {"frames": str(data_path), "presentations": pres, "config": data}
    r = subprocess.run(
        [sys.executable, "-m", "tests.bench.test_bench_presentations", json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])

    # when each presentation's first in-view frame was delivered, and the next dip after it
    delivered_at: dict[int, float] = {}
    for fid, mono in m["delivered"]:
        delivered_at.setdefault(fid, mono)
    dips = sorted(m["dips"])
    times: list[float | None] = []
    for p in pres:
        if p["in_view"] is None:
            times.append(None)
            continue
        t_in = delivered_at.get(p["first"] + p["in_view"])
        end = delivered_at.get(p["first"] + p["n"] - 1, float("inf")) + GAP / FPS
        hit = next((d for d in dips if t_in is not None and t_in <= d <= end), None)
        times.append(None if hit is None or t_in is None else hit - t_in)

    read = [t for t in times if t is not None and t <= WITHIN_S]
    never = len(times) - len(read)
    p50 = percentile(read, 0.5) if read else float("nan")
    # never-read presentations count as beyond every percentile
    ranked = sorted(read) + [float("inf")] * never
    p95 = ranked[max(0, min(len(ranked) - 1, round(0.95 * (len(ranked) - 1))))]
    print(f"\n\nPresentations (held-out seeds, half under held-out settings): {len(pres)}, "
          f"each {SECONDS:g} s at {FPS:g} fps then {GAP / FPS:g} s of empty counter, replayed"
          f" in real time to the App (frames made or loaded in {made:.0f} s; load average"
          f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  {'style':<10} {'n':>3} {'read <= 3 s':>12} {'p50 s':>7} {'p95 s':>7}")
    for style in ("all", "plain", "too_far", "tilted", "moved"):
        sel = [t for t, p in zip(times, pres, strict=True) if style in ("all", p["style"])]
        ok = sorted(t for t in sel if t is not None and t <= WITHIN_S)
        rk = ok + [float("inf")] * (len(sel) - len(ok))
        q50 = rk[round(0.5 * (len(rk) - 1))] if rk else float("nan")
        q95 = rk[round(0.95 * (len(rk) - 1))] if rk else float("nan")
        print(f"  {style:<10} {len(sel):>3} {len(ok):>5}/{len(sel):<6} {q50:7.2f} {q95:7.2f}")
    slow = [(p["style"], p["kind"], p["setting"], t) for t, p in zip(times, pres, strict=True)
            if t is None or t > 1.0]
    for s in slow:
        print(f"  slow or unread: {s[0]} {s[1]} {s[2]}: "
              + ("never read within 3 s" if s[3] is None or s[3] > WITHIN_S else f"{s[3]:.2f} s"))
    print(f"  p50 {p50:.2f} s, p95 {p95:.2f} s (target <= {P95_TARGET_S:g} s); never read"
          f" within {WITHIN_S:g} s: {never}/{len(times)} (target <= {NEVER_TARGET:.0%}); scans"
          f" queued by the kiosk: {m['queued']}; frames analysed {m['processed']} of"
          f" {len(m['delivered'])} delivered (the scan loop keeps only the newest frame)")
    assert p95 <= P95_TARGET_S and never <= NEVER_TARGET * len(times), (p95, never)


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
