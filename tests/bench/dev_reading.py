"""Reading on the development splits only: the tool to study misses and tune the decoder.

    .venv/bin/python -m tests.bench.dev_reading [--gen2 0:160 ...] [--gen1 3,11] [--corpus]
                                                [--af-miss 0:120] [--pale 0:120]
                                                [--af-pale 0:120] [--af-near 0:120]
                                                [--af-dark 0:120]
                                                [--misses DIR] [--cached] [--cap MS]

Readers: one default zxing-cpp call, the Decoder as deployed (its budget and duty cycle on
the thread's CPU time times ORDOSCAN_BENCH_CPU_SCALE: heldout.cpu_clock, as the held-out
bench) and the Decoder with every pass due (no budget, no duty cycle: independent of the
machine). gen2: dev seeds START:END, hard, under the dev settings, at the sensor mode
(ORDOSCAN_BENCH_SENSOR as the held-out bench), cached alike, with `--cap MS` their exposure
capped as the kiosk's tuning caps it (8 ms as deployed); gen1: dev sets, 50 hard
frames each; af-miss: the dev family ordoscan.devtools.af_miss (ordonnances with the
autofocus locked behind the page), its scenes START:END; pale: the dev family
ordoscan.devtools.pale (ordonnances in pale print), alike; af-pale: the two at once
(ordoscan.devtools.af_pale), alike; af-near: the focus 2-8 cm behind the page
(ordoscan.devtools.af_near), alike; af-dark: phones in dark mode with af_miss's focus
(ordoscan.devtools.af_dark), alike; ZXing's photos and false-positive
images (seen before: a check). Prints the held-out bench's table and each gen2 miss with
its setting, and which reader missed it.
Never give it held-out seeds or settings: splits.gen2_specs("dev", ...) refuses them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ordoscan.decoder import Decoder
from PIL import Image

from tests.bench import heldout as ho

GEN1_PER_SET = 50


def _span(text: str) -> tuple[int, int]:
    a, _, b = text.partition(":")
    start, end = int(a), int(b)
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START:END with 0 <= START < END")
    return start, end


def _gen1(sets: list[int]) -> list[ho.Frame]:
    from ordoscan.devtools import splits
    from ordoscan.devtools.scenes import scene_set

    frames = []
    for s in sets:
        if s not in splits.GEN1_DEV_SETS:
            raise SystemExit(f"gen1 set {s} is not a dev set ({splits.GEN1_DEV_SETS})")
        frames += [ho.Frame("gen1", f"{sc.kind}-{sc.seed}", sc.image, sc.truth)
                   for sc in scene_set(s, GEN1_PER_SET, "hard")]
    return frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen2", type=_span, action="append", default=[],
                    help="dev seeds START:END (may be given more than once)")
    ap.add_argument("--af-miss", type=_span, action="append", default=[],
                    help="the dev family af_miss, its scenes START:END")
    ap.add_argument("--pale", type=_span, action="append", default=[],
                    help="the dev family pale, its scenes START:END")
    ap.add_argument("--af-pale", type=_span, action="append", default=[],
                    help="the dev family af_pale (af_miss and pale at once), START:END")
    ap.add_argument("--af-near", type=_span, action="append", default=[],
                    help="the dev family af_near (the focus a little off), START:END")
    ap.add_argument("--af-dark", type=_span, action="append", default=[],
                    help="the dev family af_dark (phones in dark mode, af_miss's focus), "
                         "START:END")
    ap.add_argument("--gen1", default="", help="dev sets, comma-separated (e.g. 3,11)")
    ap.add_argument("--corpus", action="store_true", help="ZXing's photos, false positives")
    ap.add_argument("--misses", type=Path, default=None, help="write gen2 misses here")
    ap.add_argument("--cached", action="store_true", help="gen2: cached frames only")
    ap.add_argument("--cap", type=float, default=None, metavar="MS",
                    help="gen2 dev seeds: the exposure capped at MS ms (the kiosk's tuning: "
                         "8 as deployed)")
    args = ap.parse_args(argv)

    def readers() -> list[tuple[str, ho.Reader]]:
        deployed = Decoder(clock=ho.cpu_clock())
        deployed.warm()  # (as the kiosk's scan loop, before its first frame)
        every = Decoder(budget_ms=10_000, duty=None)
        return [("zxing-cpp read_barcodes", ho.zxing_reader),
                (f"Decoder deployed x{ho.cpu_scale():.2f}", deployed.decode),
                ("Decoder every pass due", every.decode)]

    sources: list[tuple[str, list[ho.Frame]]] = []
    for a, b in args.gen2:
        frames = list(ho.gen2_frames("dev", b - a, offset=a, cached_only=args.cached,
                                     max_exposure_ms=args.cap))
        cap = "" if args.cap is None else f", {args.cap:g} ms cap"
        sources.append((f"gen2 dev {a}-{b - 1}, hard{cap}", frames))
    for family, spans in (("af_miss", args.af_miss), ("pale", args.pale),
                          ("af_pale", args.af_pale), ("af_near", args.af_near),
                          ("af_dark", args.af_dark)):
        for a, b in spans:
            frames = list(ho.family_frames(family, b - a, offset=a, cached_only=args.cached))
            sources.append((f"gen2 {family} {a}-{b - 1}", frames))
    if args.gen1:
        sets = [int(x) for x in args.gen1.split(",")]
        sources.append((f"gen1 dev sets {args.gen1}", _gen1(sets)))
    fp: list[ho.Frame] = []
    if args.corpus:
        qr, fp = ho.corpus_frames()
        sources.append(("zxing QR photos", qr))
    for name, frames in sources:
        if not frames:  # (the table's ratios are to its first reader's time)
            raise SystemExit(f"{name}: no frames" + (
                " cached: run once without --cached to render them" if args.cached else ""))
    print(ho.HEADER)
    for name, frames in sources:
        rs = readers()
        tallies = ho.run(frames, rs)
        for t in tallies:
            print(ho.row(name, t, tallies[0].mean()), flush=True)
        stats = [r.__self__.stats() for _, r in rs[1:]]  # type: ignore[attr-defined]
        print(f"  deployed: {stats[0].duty_stops} duty stops, {stats[0].budget_stops} budget"
              f" stops, {stats[0].hard_frames} hard frames; every: {stats[1].extra_passes}"
              " extra passes")
        if name.startswith("gen2"):
            by_name = {f.name: f for f in frames}
            for miss in sorted(set(tallies[1].missed) | set(tallies[2].missed)):
                who = ",".join(t.name.split()[-1] if "Decoder" in t.name else t.name
                               for t in tallies[1:] if miss in t.missed)
                print(f"  missed ({who}): {miss}")
                if args.misses:
                    args.misses.mkdir(parents=True, exist_ok=True)
                    f = by_name[miss]
                    Image.fromarray(f.image).save(args.misses / f"{miss}.png")
                    if f.full is not None:
                        Image.fromarray(f.full).save(args.misses / f"{miss}-full.png")
    if fp:
        rs = readers()
        tallies = ho.run(fp, rs)
        for t in tallies:
            print(ho.row(f"zxing false-positive ({len(fp)})", t, tallies[0].mean()))


if __name__ == "__main__":
    main()
