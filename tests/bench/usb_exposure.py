"""The kiosk's auto-exposure for a USB camera (ordoscan.camera.exposure) in gen2's camera
model: what the scenes look like, and read, once it has settled.

    .venv/bin/python -m tests.bench.usb_exposure --split dev --n 120 [--offset 0]

For each gen2 scene of the split that holds an ordonnance (paper or phone), hard:

1. the scene as the camera's own auto-exposure takes it (uncapped, to 33 ms: a UVC
   camera in aperture priority), which is where the kiosk takes over from;
2. the kiosk's controller (KioskExposure, the firmware's own) on a simulated UVC camera
   (exposure in 100 us steps, 3..2047; gain 0..255 for a factor of 1 + gain/32, up to the
   module's own maximum): the scene rendered again at the exposure and gain it sets, at
   the lores size (metering needs no more), and metered, until it leaves them alone or
   after MAX_STEPS; then rendered at the sensor's size as the bench's scenes are;
3. the deployed Decoder and raw zxing-cpp on the settled frames (tests/bench/heldout.run).

The scene is the same in every render (the same draws: only the exposure and the gain
differ). The settled frames are cached beside the bench's, under a key that takes in the
controller's source and this module's. Printed: the rows as the held-out bench prints
them, and the exposures and gains the controller settled on (and on the dev split the
misses). Scenes without an ordonnance are left out (the read rate is of ordonnance
codes; the held-out bench checks the others). The camera model is the Pi modules' (gen2
has no webcam): a USB camera's optics and noise differ.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import statistics
import time
from pathlib import Path
from typing import Any

from ordoscan.camera import exposure as kiosk_ae
from ordoscan.camera.exposure import PERIOD, KioskExposure
from ordoscan.camera.v4l2_controls import (
    CID_EXPOSURE_ABSOLUTE,
    CID_EXPOSURE_AUTO,
    CID_EXPOSURE_AUTO_PRIORITY,
    CID_GAIN,
    ControlInfo,
)
from ordoscan.decoder import Decoder
from ordoscan.devtools import docscenes, splits
from ordoscan.devtools.docscenes import camera as cm

from tests.bench import heldout as ho

MAX_STEPS = 10  # renders the controller gets to settle (each one metering step)
GAIN_UNIT = 32.0  # the simulated webcam's gain: a factor of 1 + gain / GAIN_UNIT
ORDONNANCE_KINDS = ("ordonnance", "phone_light", "phone_dark")


class _Webcam:
    """A UVC webcam's exposure controls over gen2's camera model (Controls)."""

    def __init__(self, exposure_ms: float, gain: float, max_gain: float) -> None:
        top = round((max_gain - 1) * GAIN_UNIT)
        self.infos = {
            CID_EXPOSURE_AUTO: ControlInfo(CID_EXPOSURE_AUTO, "Auto Exposure", 0, 3, 1, 3, 0),
            CID_EXPOSURE_ABSOLUTE: ControlInfo(CID_EXPOSURE_ABSOLUTE, "Exposure", 3, 2047, 1,
                                               250, 0),
            CID_EXPOSURE_AUTO_PRIORITY: ControlInfo(CID_EXPOSURE_AUTO_PRIORITY, "Priority", 0,
                                                    1, 1, 0, 0),
            CID_GAIN: ControlInfo(CID_GAIN, "Gain", 0, min(255, top), 1, 0, 0),
        }
        self.values = {CID_EXPOSURE_AUTO: 3, CID_EXPOSURE_AUTO_PRIORITY: 1,
                       CID_EXPOSURE_ABSOLUTE: round(exposure_ms * 10),
                       CID_GAIN: self.infos[CID_GAIN].clamp(round((gain - 1) * GAIN_UNIT))}

    def query(self, cid: int) -> ControlInfo | None:
        return self.infos.get(cid)

    def get(self, cid: int) -> int:
        return self.values[cid]

    def set(self, cid: int, value: int) -> None:
        if cid not in self.infos:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.values[cid] = self.infos[cid].clamp(value)

    def close(self) -> None:
        pass

    @property
    def exposure_ms(self) -> float:
        return self.values[CID_EXPOSURE_ABSOLUTE] / 10.0

    @property
    def gain(self) -> float:
        return 1.0 + self.values[CID_GAIN] / GAIN_UNIT


def _render_at(spec: splits.Spec, exposure_ms: float | None, gain: float,
               sensor: tuple[int, int] | None) -> docscenes.DocScene:
    """The scene with the exposure and gain given (None: the camera's own auto-exposure)."""
    return docscenes.render(spec.kind, spec.seed, setting=spec.setting, difficulty="hard",
                            sensor=sensor,
                            exposure=None if exposure_ms is None else (exposure_ms, gain))


def settle(spec: splits.Spec, cap_us: int) -> tuple[docscenes.DocScene, dict[str, Any]]:
    """The scene once the kiosk's controller has settled on it (see the module)."""
    first = _render_at(spec, None, 1.0, docscenes.LORES)
    cam = cm.CAMERAS[spec.setting.camera]
    webcam = _Webcam(first.params["exposure_ms"], first.params["gain"], cam.max_gain)
    kiosk = KioskExposure.take_over(webcam, f"{spec.kind}-{spec.seed}", cap_us)
    assert kiosk is not None
    renders = 0
    while renders < MAX_STEPS:
        lores = _render_at(spec, webcam.exposure_ms, webcam.gain, docscenes.LORES)
        renders += 1
        before = kiosk.steps
        for _ in range(PERIOD):  # one metering step
            kiosk.observe(lores.image)
        if kiosk.steps == before:
            break
    final = _render_at(spec, webcam.exposure_ms, webcam.gain, ho._sensor())
    return final, {"own_ms": first.params["exposure_ms"], "own_gain": first.params["gain"],
                   "ms": webcam.exposure_ms, "gain": webcam.gain, "steps": renders}


def frames(split: str, n: int, offset: int, cap_us: int,
           kinds: tuple[str, ...] | None = ORDONNANCE_KINDS,
           ) -> tuple[list[ho.Frame], list[dict[str, Any]]]:
    """The split's scenes of `kinds` (None: every kind) once the controller has settled on
    each, from the cache or rendered; and the settling of those rendered now."""
    cache = ho._cache_dir()
    # the controller's source and this simulation's (the webcam's units) make the key
    h = hashlib.sha256(Path(kiosk_ae.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    key = h.hexdigest()[:8]
    out: list[ho.Frame] = []
    states: list[dict[str, Any]] = []
    for spec in splits.gen2_specs(split, n, "hard", offset):
        if kinds is not None and spec.kind not in kinds:
            continue
        name = f"{ho.scene_name(spec.kind, spec.seed, 'hard', spec.setting)}-usbae{cap_us}-{key}"
        state: dict[str, Any] = {}

        def render(spec: splits.Spec = spec, state: dict[str, Any] = state) -> Any:
            scene, got = settle(spec, cap_us)
            state.update(got)
            return scene

        f = ho._frame(cache, name, spec.setting, False, render)
        assert f is not None
        out.append(f)
        if state:
            states.append(state | {"light": spec.setting.light})
    return out, states


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="dev")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--cap-us", type=int, default=int(ho.deployed_exposure_ms() * 1000))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    got, states = frames(args.split, args.n, args.offset, args.cap_us)
    made = time.perf_counter() - t0
    ours = Decoder(clock=ho.cpu_clock())
    readers: list[tuple[str, ho.Reader]] = [
        ("zxing-cpp read_barcodes", ho.zxing_reader),
        (f"ordoscan Decoder ({ours.budget_ms:g} ms)", ours.decode),
    ]
    tallies = ho.run(got, readers)
    source = f"gen2 {args.split} {args.offset}+{args.n}, USB AE"
    print(f"{len(got)} scenes with an ordonnance; settled and rendered in {made:.0f} s "
          f"({len(states)} rendered now, the rest cached)")
    print(ho.HEADER)
    base = tallies[0].mean()
    for t in tallies:
        print(ho.row(source, t, base))
    if args.split == "dev":  # a held-out split's misses stay unlisted (docs/EVALUATION.md)
        print(f"  missed: {', '.join(tallies[1].missed) or 'none'}")
    for light in sorted({s["light"] for s in states}):
        s = [x for x in states if x["light"] == light]

        def avg(key: str, s: list[dict[str, Any]] = s) -> float:
            return statistics.mean(x[key] for x in s)

        print(f"  {light}: {len(s)} scenes; the camera's own {avg('own_ms'):.1f} ms"
              f" x{avg('own_gain'):.2f}; settled at {avg('ms'):.1f} ms x{avg('gain'):.2f}"
              f" (longest {max(x['ms'] for x in s):.1f} ms) in {avg('steps'):.1f} renders"
              f" (most {max(x['steps'] for x in s)})")


if __name__ == "__main__":
    main()
