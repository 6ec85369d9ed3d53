"""Where a dev presentation's time goes, frame by frame, at a given core speed.

    ORDOSCAN_BENCH_CPU_SCALE=pi4 .venv/bin/python -m tests.bench.pres_trace \
        [--seeds 400107,400011] [--slow 0.5] [--all] [--json out.json] [--free finders]
        [--budget 60] [--duty 0.25] [--lores 960] [--at-end]

The dev presentations (ordoscan.devtools.splits.presentation_seeds("dev"), the frames the
presentations bench renders and caches with ORDOSCAN_BENCH_PRESENTATION_SPLIT=dev, and
ORDOSCAN_BENCH_PRESENTATION_OFFSET for a further dev set,
ORDOSCAN_BENCH_PRESENTATION_FAMILY=af_miss for the same ones with the lens locked behind
the page, =pale with the print's ink pale; this tool refuses any other split) go through the
Decoder (its budget and duty cycle as deployed, or --budget and --duty) and the classifier
on the bench's virtual 15 fps timeline (tests/bench/lockstep.py, without the rest of the
App): each turn advances time by the thread's CPU time times the scale, the newest frame is
taken when the loop is free, a turn's `newer` says whether the next frame is captured by
then, and the main stream's crops are rendered off the clock (MainStreams). Each
presentation follows 1 s of empty counter, as in the bench.

Printed per presentation: its time to read (from the first frame wholly in view to the
moment a pass read an ordonnance, within its turn: decode's on_read, where the kiosk commits
and signals it; with --at-end, the end of that turn), and with --all or when slower than
--slow, each turn: the frame (its offset from the first frame in view), when it was taken,
what the decoder did (fast read; search moving / handed on / reused; hard: passes), the
cost of the search's parts and of each extra pass (virtual ms), and whether it read. Last: p50,
p95, max, and the mean and the mean of the 20 slowest but one (these two move by less than
a frame: the quantiles go by whole frames and are noisier). The times differ a little from
the bench's (no outbox commit, no other thread of the App); the load of the machine shows
in CPU times too (cache sharing): compare two decoders in alternate runs.

`--lores 960`: the frames scaled down to a smaller analysed stream (camera.size), the zooms
mapped from it to the main stream as the kiosk does (what a smaller lores would cost or save).

`--free finders,qr-zoom-defocus`: the CPU time of those parts of the search (finders,
stats, blobs) or those passes (`extra`: every pass but the fast ones) is not counted, on
the timeline nor on the decoder's clock (an upper bound on what making them cheaper can
gain; the decoder's choices that depend on the costs it learns change too).

The floor, what the frames allow: every pass due run on every frame, at no cost on the
timeline (`ORDOSCAN_BENCH_CPU_SCALE=0.02 ... --budget 2000 --duty 1`): a presentation read
no sooner there waits for its code to become readable, not for a core.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ["ORDOSCAN_BENCH_PRESENTATION_SPLIT"] = "dev"

import ordoscan.decoder as dec
from ordoscan.classifier import Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Decoder

from tests.bench import heldout as ho
from tests.bench import quantiles
from tests.bench import test_bench_presentations as tbp
from tests.bench.lockstep import LockstepSide, Waits

FPS = tbp.FPS
GAP = tbp.GAP
WITHIN_S = tbp.WITHIN_S


_FREE: set[str] = set()  # parts whose CPU time is not counted (--free: what if they cost nothing)
_freed = [0.0]  # the CPU seconds they took so far
EXTRA = "extra"  # --free extra: every pass but the fast ones
_FAST = {f"pass {p.name}" for p in dec.FAST_PASSES}


def _cpu() -> float:
    """The thread's CPU time, less what the --free parts took."""
    return time.thread_time() - _freed[0]


class _Recorder:
    """The costs of the decoder's parts in one turn, in virtual ms (CPU time x scale)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.parts: list[tuple[str, float, Any]] = []

    def timed(self, name: str, fn: Callable[[], Any], note: Callable[[Any], Any]) -> Any:
        t0 = time.thread_time()
        out = fn()
        spent = time.thread_time() - t0
        if name in _FREE or name.removeprefix("pass ") in _FREE or (
                EXTRA in _FREE and name.startswith("pass ") and name not in _FAST):
            _freed[0] += spent
        self.parts.append((name, 1000 * spent * self.scale, note(out)))
        return out


def _instrument(rec: _Recorder) -> None:
    def part(fn: Callable[..., Any], name: str, note: Callable[[Any], Any]) -> Callable[..., Any]:
        return lambda *a, **k: rec.timed(name, lambda: fn(*a, **k), note)

    dec.new_guesses = part(dec.new_guesses, "finders", len)
    dec.candidate_regions = part(dec.candidate_regions, "stats", lambda r: len(r[0]))
    dec.blurred_codes = part(dec.blurred_codes, "blobs", len)
    run = dec.run_pass

    def run_pass(p: Any, frame: Any, box: Any, found: Any, zoom: Any, *rest: Any) -> Any:
        n = len(found)
        return rec.timed(f"pass {p.name}", lambda: run(p, frame, box, found, zoom, *rest),
                         lambda _: f"{box.x1 - box.x0}x{box.y1 - box.y0}"
                         + (" READ" if len(found) > n else ""))

    dec.run_pass = run_pass


class _Scaled:
    """The rendered frames scaled down to a smaller analysed stream, off the clock."""

    def __init__(self, frames: Any, size: tuple[int, int]) -> None:
        self.frames, self.size = frames, size

    def __getitem__(self, fid: int) -> Any:
        import cv2

        t0 = time.thread_time()
        out = cv2.resize(np.asarray(self.frames[fid]), self.size, interpolation=cv2.INTER_AREA)
        _freed[0] += time.thread_time() - t0
        return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="", help="comma-separated dev seeds (default: all)")
    ap.add_argument("--slow", type=float, default=0.5, help="trace presentations slower than this")
    ap.add_argument("--all", action="store_true", help="trace every presentation")
    ap.add_argument("--json", default="", help="write each presentation's time here")
    ap.add_argument("--budget", type=float, default=ScanConfig().decode_budget_ms,
                    help="the decoder's per-frame budget in ms (default: as deployed)")
    ap.add_argument("--duty", type=float,
                    default=inspect.signature(Decoder).parameters["duty"].default,
                    help="the decoder's duty cycle (default: as deployed)")
    ap.add_argument("--free", default="", help="comma-separated parts (finders, stats, blobs, "
                    "a pass's name, or 'extra': every pass but the fast ones) whose CPU time "
                    "is not counted: what if they cost nothing")
    ap.add_argument("--lores", type=int, default=0,
                    help="the analysed stream's width (camera.size), the rendered frames scaled "
                    "down to it (area filter, as a camera's scaler); default: as rendered")
    ap.add_argument("--at-end", action="store_true",
                    help="a read counts at the end of its turn (a scan loop that acts on the "
                    "frame's symbols once decode() returns), not when the pass read it")
    ap.add_argument("--threads", type=int, default=0, choices=(0, 1, 2),
                    help="the decoder's cores (scan.decode_threads; default: as deployed); "
                    "the side core's time is on the timeline as tests/bench/lockstep.py "
                    "models it (LockstepSide)")
    args = ap.parse_args(argv)
    if tbp.SPLIT != "dev":
        raise SystemExit("dev presentations only")
    scale = ho.cpu_scale()
    print(f"clock: the scan thread's CPU time {ho.cpu_scale_label()}")
    data_path, index_path = tbp._frames_file()
    frames = np.load(data_path, mmap_mode="r")
    pres: list[dict[str, Any]] = json.loads(index_path.read_text())
    want = {int(s) for s in args.seeds.split(",") if s}
    lores = None
    if args.lores:
        lores = (args.lores, round(args.lores * frames.shape[1] / frames.shape[2]))
        frames = _Scaled(frames, lores)
    streams = tbp.MainStreams(pres, lores=lores) if tbp.MAIN_STREAM else None

    _FREE.update(x for x in args.free.split(",") if x)
    waits = Waits()

    def clock() -> float:
        return _cpu() * scale + waits.total

    taken = c0 = 0.0

    def now() -> float:
        return taken + (_cpu() - c0) * scale + waits.turn

    rec = _Recorder(scale)
    _instrument(rec)
    scan = ScanConfig()
    threads = args.threads if args.threads else scan.decode_threads
    side = LockstepSide(now, waits.charge, scale) if threads > 1 else None
    decoder = Decoder(args.budget, duty=args.duty, fps=FPS, clock=clock, side=side)
    decoder.warm()  # (as the kiosk's scan loop, before the first frame)
    classifier = Classifier(scan)
    v = 0.0  # virtual time the loop is free
    n_last = -1  # global frame number last taken
    out: list[dict[str, Any]] = []

    def turn(fid: int, n: int, zoom: Any
             ) -> tuple[float, float, bool, float, dict[str, Any], list[Any]]:
        nonlocal v, n_last, taken, c0
        taken = max(v, n / FPS)
        before = decoder.stats()
        rec.parts = []
        c0 = _cpu()
        waits.turn = 0.0

        def newer() -> bool:
            return now() >= (n + 1) / FPS

        read_at: list[float] = []  # when decode's on_read saw an ordonnance

        def on_read(symbol: Any) -> None:
            if not read_at and classifier.classify(symbol).kind is Kind.ORDONNANCE:
                read_at.append(now())

        symbols = decoder.decode(frames[fid], zoom, newer, None if args.at_end else on_read)
        read = any(classifier.classify(s).kind is Kind.ORDONNANCE for s in symbols)
        spent = now() - taken
        at = read_at[0] if read_at else taken + spent
        v, n_last = taken + spent, n
        after = decoder.stats()
        what = {k: getattr(after, k) - getattr(before, k) for k in (
            "hard_frames", "blank_frames", "budget_stops", "duty_stops", "handed_on",
            "searches_handed_on", "searches_reused", "searches_moving", "extra_passes",
            "zooms", "passes_resumed") if getattr(after, k) != getattr(before, k)}
        return taken, spent, read, at, what, list(rec.parts)

    for p in pres:
        if want and p["seed"] not in want:
            continue
        # 1 s of empty counter first (as between two presentations in the bench)
        n = max(n_last + 1, math.floor(v * FPS + 1e-9))
        end = n + GAP
        while n < end:
            turn(0, n, None)
            n = max(n_last + 1, math.floor(v * FPS + 1e-9))
        start = n
        t_in = (start + p["in_view"]) / FPS if p["in_view"] is not None else None
        rows, took = [], None
        while True:
            n = max(n_last + 1, math.floor(v * FPS + 1e-9))
            j = n - start
            if j >= p["n"]:
                break
            fid = p["first"] + j
            zoom = streams.zoom(fid) if streams is not None else None
            taken, spent, read, at, what, parts = turn(fid, n, zoom)
            rows.append((j - (p["in_view"] or 0), taken - start / FPS, spent, read, what, parts))
            if read:
                took = None if t_in is None else at - t_in
                break
        by = next((name for name, _, note in (rows[-1][5] if rows and took is not None else [])
                   if isinstance(note, str) and note.endswith("READ")), None)
        out.append({"seed": p["seed"], "style": p["style"], "kind": p["kind"],
                    "setting": p["setting"], "took": took, "by": by,
                    "frame": rows[-1][0] if rows and took is not None else None})
        flag = took is None or took > args.slow
        print(f"seed {p['seed']} {p['style']} {p['kind']}: "
              + ("never read" if took is None else f"{took:.2f} s") + f" [{p['setting']}]"
              + ("" if took is None else f" by {out[-1]['by']} at f{out[-1]['frame']:+d}"))
        if flag or args.all:
            for j, taken, spent, read, what, parts in rows:
                bits = " ".join(f"{name} {ms:.0f}" + (f"({note})" if note is not None else "")
                                for name, ms, note in parts)
                print(f"   f{j:+3d} at {taken:5.2f} turn {1000 * spent:5.0f} ms"
                      f" {'READ ' if read else ''}{what} | {bits}")
    if streams is not None:
        streams.close()
    if side is not None:
        side.close()
        print(f"side core: {side.tasks} tasks, {1000 * side.cpu_s * scale / max(side.tasks, 1):.1f}"
              f" virtual ms a task; the scan thread waited {side.waited:.2f} virtual s for them")
    took = [o["took"] for o in out]
    ranked = quantiles.ranked(took, WITHIN_S)
    if ranked:
        capped = sorted(min(t, WITHIN_S) for t in ranked)
        lo, hi = quantiles.interval(took, len(out), 0.95, WITHIN_S)
        print(f"{len(out)} presentations: p50 {quantiles.quantile(ranked, 0.5):.2f} s, p95"
              f" {quantiles.quantile(ranked, 0.95):.2f} s ({lo:.2f}-{hi:.2f} s over other draws,"
              f" 90 %), max {ranked[-1]:.2f} s, never read {ranked.count(math.inf)}; mean"
              f" {statistics.mean(capped):.3f} s, slowest 20 but one"
              f" {statistics.mean(capped[-21:-1] or capped):.3f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
