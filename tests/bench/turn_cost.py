"""Where a scan-loop turn's CPU goes, on development frames only (cProfile).

    .venv/bin/python -m tests.bench.turn_cost [--gen2 0:40] [--gen1 3] [--cached]
                                              [--presentations N]

Each frame goes through the deployed Decoder (its budget and duty cycle on the thread's
CPU time times ORDOSCAN_BENCH_CPU_SCALE, as dev_reading) and the classifier, once under
cProfile. Frames are grouped by what the Decoder did with them: "read" (the fast pass
read a QR Code and nothing else was due), "blank" (nothing read, nothing looked like a
code), "searched" (its search for signs of a code found nothing to try) and "hard"
(extra passes ran). Printed per group: mean CPU ms a frame (without the profiler, in a
second run) and the share of the profiled time in each part of the turn. cProfile adds
a little to each Python call, so the Python parts' shares read a little high.
`--presentations N`: every 3rd frame of the first N dev presentations (lores only).
Never give it held-out seeds: splits.gen2_specs("dev", ...) refuses them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict

import numpy as np
from ordoscan.classifier import Classifier
from ordoscan.config import ScanConfig
from ordoscan.decoder import Decoder

from tests.bench import heldout as ho
from tests.bench.dev_reading import _gen1, _span

# (bucket, module path fragment, function name): each profiled function's own time goes
# to the first bucket whose fragment and name match (name "" matches any function)
BUCKETS: tuple[tuple[str, str, str], ...] = (
    # zxing-cpp's binding is not seen by cProfile: its calls count as their caller's own time
    ("zxing-cpp (passes._read)", "decoder/passes.py", "_read"),
    ("zxing-cpp (passes._flattened)", "decoder/passes.py", "_flattened"),
    ("finders (QR finder search)", "decoder/finders.py", ""),
    ("regions (statistics, merge)", "decoder/regions.py", ""),
    ("deblur / defocus", "decoder/deblur.py", ""),
    ("warp (flatten)", "decoder/warp.py", ""),
    ("resize / filters (PIL)", "PIL/", ""),
    ("passes.py (prepare, results)", "decoder/passes.py", ""),
    ("Decoder scheduling", "decoder/__init__.py", ""),
    ("classifier", "ordoscan/classifier.py", ""),
    ("numpy", "numpy/", ""),
)


def _bucket(func: tuple[str, int, str]) -> str:
    path, _, name = func
    for bucket, frag, fname in BUCKETS:
        if frag in path and (not fname or fname in name):
            return bucket
    return f"other: {path.rsplit('/', 2)[-1]}:{name}" if VERBOSE else "other"


VERBOSE = False


def _split(stats: pstats.Stats) -> dict[str, float]:
    """Own time per bucket."""
    out: dict[str, float] = defaultdict(float)
    for func, (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        out[_bucket(func)] += tt
    return out


# functions whose time with their callees is printed too (share of the turn)
CUMULATIVE = ("_extra_passes", "new_guesses", "candidate_regions", "blurred_codes",
              "merge_regions", "motion_blurred", "clipped")


def _cumulative(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (path, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if name in CUMULATIVE and "ordoscan/decoder" in path:
            out[name] += ct
    return out


def _group(before: object, after: object, read_qr: bool) -> str:
    if after.hard_frames > before.hard_frames:  # type: ignore[attr-defined]
        return "hard"
    if after.blank_frames > before.blank_frames:  # type: ignore[attr-defined]
        return "blank"
    return "read" if read_qr else "searched"


def _presentation_frames(n: int) -> list[ho.Frame]:
    from tests.bench import test_bench_presentations as tp

    if tp.SPLIT != "dev":
        raise SystemExit("set ORDOSCAN_BENCH_PRESENTATION_SPLIT=dev: dev presentations only")
    data, _ = tp._frames_file()
    frames = np.load(data, mmap_mode="r")
    per = int(tp.SECONDS * tp.FPS)
    return [ho.Frame("pres", f"pres-{i}", np.ascontiguousarray(frames[i]), ())
            for i in range(1, min(len(frames), 1 + n * per), 3)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen2", type=_span, action="append", default=[])
    ap.add_argument("--gen1", default="")
    ap.add_argument("--cached", action="store_true", help="gen2: cached frames only")
    ap.add_argument("--presentations", type=int, default=0)
    args = ap.parse_args(argv)
    frames: list[ho.Frame] = []
    for a, b in args.gen2:
        frames += ho.gen2_frames("dev", b - a, offset=a, cached_only=args.cached)
    if args.gen1:
        frames += _gen1([int(x) for x in args.gen1.split(",")])
    if args.presentations:
        frames += _presentation_frames(args.presentations)
    classifier = Classifier(ScanConfig())
    clock = ho.cpu_clock()
    profiles: dict[str, pstats.Stats | None] = defaultdict(lambda: None)
    ms: dict[str, list[float]] = defaultdict(list)
    for pass_no in (0, 1):  # 0: timed without the profiler; 1: profiled
        decoder = Decoder(clock=clock)
        for f in frames[:3]:  # warm-up: pass costs learnt
            decoder.decode(f.image, ho._zoom_of(f))
        for f in frames:
            before = decoder.stats()
            prof = cProfile.Profile() if pass_no else None
            t0 = time.thread_time()
            if prof is not None:
                prof.enable()
            symbols = decoder.decode(f.image, ho._zoom_of(f))
            for s in symbols:
                classifier.classify(s)
            if prof is not None:
                prof.disable()
            took = time.thread_time() - t0
            group = _group(before, decoder.stats(),
                           any(s.format == "QRCode" for s in symbols))
            if prof is None:
                ms[group].append(took * 1000.0 * ho.cpu_scale())
                continue
            st = pstats.Stats(prof)
            prev = profiles[group]
            if prev is None:
                profiles[group] = st
            else:
                prev.add(st)
    print(f"{len(frames)} frames; ms: thread CPU {ho.cpu_scale_label()}, without the profiler")
    for group in ("read", "blank", "searched", "hard"):
        if not ms[group]:
            continue
        st = profiles[group]
        assert st is not None
        split = _split(st)
        total = sum(split.values()) or 1.0
        print(f"{group:<9} {len(ms[group]):>4} frames, mean {np.mean(ms[group]):6.1f} ms,"
              f" p95 {np.percentile(ms[group], 95):6.1f} ms")
        for b, t in sorted(split.items(), key=lambda kv: -kv[1]):
            if t / total >= 0.005:
                print(f"    {b:<32} {100 * t / total:5.1f} %")
        cum = _cumulative(st)
        print("    with callees: " + ", ".join(f"{k} {100 * v / total:.1f} %"
                                             for k, v in cum.items() if v / total >= 0.005))


if __name__ == "__main__":
    main()
