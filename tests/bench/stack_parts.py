"""What the decoder's numpy-heavy parts cost on this Python stack, against one raw zxing-cpp
call in the same run (dev presentations only).

    .venv/bin/python -m tests.bench.stack_parts [--presentations 120] [--passes 5]
    ./dev kiosk-stack python -m tests.bench.stack_parts    # Debian's python3, apt's numpy

A kiosk runs Debian's python3 with apt's numpy (1.24 on bookworm: packaging/build-deb.sh);
`.venv`, where every bench runs unless told otherwise, has PyPI's (2.x). zxing-cpp is the
same wheel in both, and the benches' board factor (tests/bench/pi_speed.py) is measured
on zxing-cpp alone: a numpy that is slower on a kiosk is not in the factor. This prints
each part's CPU ms and its ratio to one default zxing-cpp call on the same frames, timed
in the same run: run it in both stacks and compare the ratios.

Inputs: frames of the dev presentations the presentations bench caches (rendered on the
first run; this tool takes the dev split and refuses another; with
ORDOSCAN_BENCH_PRESENTATION_FAMILY=af_miss, the lens behind the page, whose frames run the
defocus passes), two frames after each
code came into view; and the regions the defocus and unmix passes prepared on those frames
(the Decoder with every pass due, given the main stream as a kiosk is: regions zoomed into
it, rendered on demand as the presentations bench does; kept as they run). Each
part is timed as the best of --passes passes over all its inputs (this thread's CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("ORDOSCAN_BENCH_PRESENTATION_SPLIT", "dev")

import numpy as np
import zxingcpp
from ordoscan.decoder import Decoder, blurred_codes, deblur, finders, modules, passes
from ordoscan.decoder.regions import Box, candidate_regions, view

from tests.bench import test_bench_presentations as tbp

AFTER = 2  # frames after the code came into view


def _frames(count: int) -> tuple[list[np.ndarray], list[Any], tbp.MainStreams]:
    """The frames, each one's zoom into its main stream, and the streams (to close)."""
    data, index = tbp._frames_file()
    frames = np.load(data, mmap_mode="r")
    pres: list[dict[str, Any]] = json.loads(index.read_text())[:count]
    fids = [p["first"] + min((p["in_view"] or 0) + AFTER, p["n"] - 1) for p in pres]
    streams = tbp.MainStreams(pres)
    return [np.ascontiguousarray(frames[f]) for f in fids], [streams.zoom(f) for f in fids], streams


_Spied = list[tuple[passes.Pass, passes.Defocused]]


def _prepared(frames: list[np.ndarray], zooms: list[Any]
              ) -> tuple[_Spied, _Spied, list[np.ndarray]]:
    """The regions the defocus passes and the unmix pass (with their measured discs) and the
    unmix pass's blob search were given, every pass due on each frame (its main stream's
    zooms too)."""
    defocus: _Spied = []
    unmix: _Spied = []
    blobs: list[np.ndarray] = []
    run_defocus, find_blobs = passes._run_defocus, modules._blobs

    def spy_defocus(p: passes.Pass, d: passes.Defocused, *a: Any, **k: Any) -> Any:
        (unmix if p.unmix else defocus).append(
            (p, passes.Defocused(np.array(d.prepared), d.disc, d.main)))
        return run_defocus(p, d, *a, **k)

    def spy_blobs(region: np.ndarray) -> Any:
        blobs.append(np.array(region))
        return find_blobs(region)

    passes._run_defocus, modules._blobs = spy_defocus, spy_blobs
    try:
        decoder = Decoder(budget_ms=10_000, duty=None)
        for f, zoom in zip(frames, zooms, strict=True):
            decoder.decode(f, zoom)
    finally:
        passes._run_defocus, modules._blobs = run_defocus, find_blobs
    return defocus, unmix, blobs


def _pass_on_prepared(item: tuple[passes.Pass, passes.Defocused]) -> None:
    """A defocus or unmix pass on its prepared region, as it runs (passes._run_defocus): the
    defocus pass's reads; the unmix pass's module solve until it reads or ends (no budget
    stops it here)."""
    p, d = item
    h, w = d.prepared.shape
    passes._run_defocus(p, d, d.prepared, Box(0, 0, w, h), {})


def _best(fn: Callable[[Any], Any], items: Sequence[Any], rounds: int) -> float:
    """CPU ms a call, the best of `rounds` passes over `items`."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        for x in items:
            fn(x)
        best = min(best, time.thread_time() - t0)
    return 1000.0 * best / max(len(items), 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.stack_parts", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presentations", type=int, default=120, help="dev presentations (frames)")
    ap.add_argument("--passes", type=int, default=5, help="timed passes; the best counts")
    args = ap.parse_args(argv)
    if tbp.SPLIT != "dev":
        raise SystemExit("dev presentations only (ORDOSCAN_BENCH_PRESENTATION_SPLIT=dev)")
    frames, zooms, streams = _frames(args.presentations)
    try:
        defocus, unmix, blobs = _prepared(frames, zooms)
    finally:
        streams.close()
    deblur.warm()
    rows: list[tuple[str, Callable[[Any], Any], Sequence[Any]]] = [
        ("zxing-cpp, one default call (frame)", zxingcpp.read_barcodes, frames),
        ("finder search, one thread (frame)", finders.find_finders, frames),
        ("statistics: candidate_regions (frame)", candidate_regions, frames),
        ("blurred_codes (frame)", blurred_codes, frames),
        ("the view's look (frame)", view, frames),
        ("measure_defocus (defocus region)", lambda item: deblur.measure_defocus(item[1].prepared),
         defocus),
        ("defocus pass's reads (defocus region)", _pass_on_prepared, defocus),
        ("module solve's blob search (unmix region)", modules._blobs, blobs),
        ("module solve, every step (unmix region)", _pass_on_prepared, unmix),
    ]
    print(f"Python {sys.version.split()[0]} ({sys.executable}), numpy {np.__version__}"
          f" ({os.path.dirname(np.__file__)}), {len(frames)} frames,"
          f" {len(defocus)} defocus regions, {len(unmix)} unmix regions ({len(blobs)} blob"
          " searches);"
          f" family {tbp.FAMILY or 'none'}")
    raw = None
    print(f"{'part':44s} {'ms':>8s} {'x raw':>7s}")
    for name, fn, items in rows:
        if not items:
            print(f"{name:44s} {'-':>8s} {'-':>7s}")
            continue
        ms = _best(fn, items, args.passes)
        raw = ms if raw is None else raw
        print(f"{name:44s} {ms:8.3f} {ms / raw:7.2f}")


if __name__ == "__main__":
    main()
