"""Benchmark: reading on held-out data only, per source (docs/EVALUATION.md).

Sources: gen1's held-out set (ordoscan.devtools.scenes, held-out seeds), gen2's two
held-out splits (ordoscan.devtools.docscenes: held-out seeds under dev settings, and
held-out settings), all hard, each twice: with the camera modules' own auto-exposure (up
to 33 ms: a camera the kiosk does not cap, such as a USB camera without manual exposure)
and with its shutter capped as the kiosk caps it (camera.max_exposure_us, 8 ms by
default: picamera2's tuning, a USB camera's manual controls); then ZXing's real
photographs (QR sets, and the false-positive sets, where nothing may be read). For each:
the per-frame read rate of the ordonnance codes in view (and of the small ones, 2-3 px
per module), the other codes read, reads classified as an ordonnance that are none
(false ordo), reads of nothing in the picture (stray), mean and p95 ms, and the ratio of
the mean to one default zxing-cpp read_barcodes call in the same run on the same frames.
Milliseconds, and the deployed Decoder's budget and duty cycle, count the bench thread's
CPU time (time.thread_time) times ORDOSCAN_BENCH_CPU_SCALE (default 1: one unloaded core
of this machine), so the figures do not depend on the machine's load.

Targets (issue: reading on scenes the decoder was never tuned on): on the held-out hard
scenes of both generators at least 95 % of ordonnance codes per frame at most 3x raw
time; ZXing's QR photos at least 172/179; no INS, pack, 2D-Doc or URL ever classified
as an ordonnance; 0 reads on the false-positive images. Every table is printed before
any target is checked. A few misses are written to ORDOSCAN_BENCH_MISSES (a folder) when
that is set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from ordoscan.decoder import Decoder
from PIL import Image

from tests.bench import heldout as ho
from tests.bench import usb_exposure

GEN1_FRAMES = 150
# per held-out split: about 140 ordonnance codes in view at 240 frames. At 80 (until
# held-out epoch 7) a split held 43-46: one code was 2.2 points of the read rate, and
# the figure moved by more than any change measured on it.
GEN2_FRAMES = int(os.environ.get("ORDOSCAN_BENCH_GEN2", "240"))
READ_TARGET, RATIO_TARGET, CORPUS_TARGET = 0.95, 3.0, 172


@pytest.mark.bench
@pytest.mark.timeout(7200)  # gen2 frames are rendered on the first run, then cached
def test_bench_heldout() -> None:
    # the daemon's default budget and duty cycle, counted in this thread's CPU time (times
    # ORDOSCAN_BENCH_CPU_SCALE): what a kiosk's scan thread gets, whatever this machine's load
    ours = Decoder(clock=ho.cpu_clock())
    ours.warm()  # (as the kiosk's scan loop, before its first frame)
    readers: list[tuple[str, ho.Reader]] = [
        ("zxing-cpp read_barcodes", ho.zxing_reader),
        (f"ordoscan Decoder ({ours.budget_ms:g} ms)", ours.decode),
    ]
    sources: list[tuple[str, list[ho.Frame]]] = []
    t0 = time.perf_counter()
    sources.append(("gen1 held-out seeds, hard", list(ho.gen1_frames(GEN1_FRAMES))))
    for split in ("heldout-seeds", "heldout-settings"):
        sources.append((f"gen2 {split}, hard", list(ho.gen2_frames(split, GEN2_FRAMES))))
    # the same scenes as the kiosk's cameras take them: the exposure capped (picamera2's
    # tuning, a USB camera's manual controls), so the gain takes over sooner (a shorter
    # smear, more noise); the rows above are a camera whose exposure runs to 33 ms (a USB
    # camera without manual exposure, or the cap lifted)
    cap = ho.deployed_exposure_ms()
    for split in ("heldout-seeds", "heldout-settings"):
        sources.append((f"gen2 {split}, hard, {cap:g} ms cap",
                        list(ho.gen2_frames(split, GEN2_FRAMES, max_exposure_ms=cap))))
    # and as a USB camera takes them under the kiosk's own auto-exposure (camera/exposure.py:
    # its controller settled on each scene, tests/bench/usb_exposure.py), capped the same
    for split in ("heldout-seeds", "heldout-settings"):
        sources.append((f"gen2 {split}, hard, USB AE",
                        usb_exposure.frames(split, GEN2_FRAMES, 0, round(cap * 1000), None)[0]))
    made = time.perf_counter() - t0
    corpus_fp: list[ho.Frame] = []
    if ho.CORPUS.is_dir():
        qr, corpus_fp = ho.corpus_frames()
        sources.append(("zxing QR photos (a check)", qr))
    else:
        print(f"\n(ZXing corpus not found at {ho.CORPUS}: its rows are skipped)")

    results: list[tuple[str, list[ho.Tally]]] = []
    for name, frames in sources:
        results.append((name, ho.run(frames, readers)))
    fp_tallies = ho.run(corpus_fp, readers) if corpus_fp else []

    stream = (" (gen2: rendered at the sensor mode, the Decoder zooms into its main stream)"
              if ho.SENSOR_MODE == "mode" else "")
    print(f"\n\nHeld-out reading, 1280x720 lores frames{stream} (made or loaded in {made:.0f} s;"
          f" gen2 frames cached under {ho.CACHE}/docscenes); ms and the Decoder's budget:"
          f" the thread's CPU time {ho.cpu_scale_label()}")
    for name, frames in sources:
        n_ordo = sum(k is ho.Kind.ORDONNANCE for f in frames for k, _ in f.truth)
        print(f"  {name}: {len(frames)} frames, {n_ordo} ordonnance codes in view")
    print(ho.HEADER)
    for name, tallies in results:
        base = tallies[0].mean()
        for t in tallies:
            print(ho.row(name, t, base))
    if fp_tallies:
        base = fp_tallies[0].mean()
        for t in fp_tallies:
            print(ho.row(f"zxing false-positive images ({len(corpus_fp)})", t, base))

    # a few misses of the held-out gen2 frames, for the notes (never for tuning)
    out = os.environ.get("ORDOSCAN_BENCH_MISSES")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        for (name, frames), (_, tallies) in zip(sources, results, strict=True):
            if name.startswith("zxing"):  # those photos are in the corpus already
                continue
            missed = set(tallies[1].missed[:4])
            for f in frames:
                if f.name in missed:
                    Image.fromarray(f.image).save(Path(out) / f"{f.source}-{f.name}.png")
        print(f"misses written to {out}")

    unmet: list[str] = []
    for name, tallies in results:
        raw, mine = tallies
        ratio = mine.mean() / max(raw.mean(), 1e-9)
        if name.startswith("zxing"):
            if mine.ordo_read < CORPUS_TARGET:
                unmet.append(f"{name}: {mine.ordo_read}/{mine.ordo} < {CORPUS_TARGET}")
            continue
        if mine.ordo_read < READ_TARGET * mine.ordo:
            unmet.append(f"{name}: {mine.ordo_read}/{mine.ordo} ordonnance codes read"
                         f" < {READ_TARGET:.0%}")
        if ratio > RATIO_TARGET:
            unmet.append(f"{name}: {ratio:.2f}x raw > {RATIO_TARGET:g}x")
        if mine.false_ordo:
            unmet.append(f"{name}: {mine.false_ordo} reads classified as an ordonnance"
                         " that are none")
    for t in fp_tallies[1:]:
        if t.strays:
            unmet.append(f"zxing false-positive images: {t.strays} reads")
    if drift := ho.cpu_scale_drift():
        print(drift)
    print("targets: " + ("all met" if not unmet else "NOT MET: " + "; ".join(unmet)))
    assert not unmet, "; ".join(unmet)
