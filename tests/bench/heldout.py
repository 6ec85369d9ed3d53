"""Held-out frames for the benchmarks, and the tally of what a reader made of them.

gen2 frames are slow to render (a physical camera model at the sensor's size), so the
lores frames and their truth are cached under /var/cache/ordoscan-test/docscenes, keyed
by a hash of the generator's source: any change to the generator renders them anew.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import zxingcpp
from ordoscan.classifier import Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Symbol, load_image
from ordoscan.devtools import docscenes, splits

from tests.bench import pi_speed
from tests.support import TEST_CACHE

Grey = npt.NDArray[np.uint8]
CACHE = TEST_CACHE
SMALL_MODULE_PX = 3.3  # a "small" code: 2-3 px per module at 1280x720 (50-60 px wide)
# gen2 frames are rendered at the camera's sensor mode by default, as on a kiosk: the main
# stream (e.g. 2304x1296) and the 1280x720 lores stream as its downscale, so the decoder
# can zoom into the main stream for a small code as it does on a Pi.
# ORDOSCAN_BENCH_SENSOR=lores simulates the lores size only (3x cheaper, no main stream).
SENSOR_MODE = os.environ.get("ORDOSCAN_BENCH_SENSOR", "mode")
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "zxing-blackbox"


def _board() -> str | None:
    """The board ORDOSCAN_BENCH_CPU_SCALE names (pi4, pi5), or None for a plain factor."""
    text = os.environ.get("ORDOSCAN_BENCH_CPU_SCALE", "1")
    return text if text in pi_speed.PI_RATES else None


def cpu_scale() -> float:
    """ORDOSCAN_BENCH_CPU_SCALE: how many times this machine's CPU time a core is charged.

    A factor (1, the default: one unloaded core of this machine), or a board, `pi4` or
    `pi5`: the factor measured for it on this machine (tests/bench/pi_speed.py: this
    machine's instruction rate on a reference workload against the board's)."""
    board = _board()
    if board is not None:
        return pi_speed.this_machine(board).scale(board)
    boards = ", ".join(pi_speed.PI_RATES)
    scale = pi_speed.env_number("ORDOSCAN_BENCH_CPU_SCALE", "1", 1000,
                                f"a factor in (0, 1000) or a board ({boards})")
    assert scale is not None  # (it has a default)
    return scale


def cpu_scale_label() -> str:
    """How cpu_scale() was found, for a bench's header."""
    board = _board()
    if board is not None:
        return pi_speed.describe(board, pi_speed.this_machine(board))
    return f"x{cpu_scale():g}"


def cpu_scale_drift() -> str:
    """For a board's factor (ORDOSCAN_BENCH_CPU_SCALE=pi4|pi5): the reference timed again
    now against its time when the factor was taken, a line for the end of a bench (this
    machine's speed drifts: the factor holds only while it does not); "" otherwise."""
    board = _board()
    if board is None:
        return ""
    then = pi_speed.this_machine(board).seconds
    return pi_speed.drift(then, pi_speed.seconds(pi_speed.reference_frames()))


def cpu_clock(scale: float | None = None) -> Callable[[], float]:
    """A Decoder clock that counts the calling thread's CPU time (time.thread_time), times
    `scale` (default: cpu_scale()), in seconds.

    The deployed Decoder's budget and duty cycle are in milliseconds of this clock: on a
    wall clock a loaded machine would cut its extra passes and read fewer codes than a
    kiosk, whose scan thread has its core. The Decoder must be called from one thread.
    """
    k = cpu_scale() if scale is None else scale
    return lambda: time.thread_time() * k


@dataclass(frozen=True)
class Frame:
    """A frame and its truth, whatever generator made it."""

    source: str
    name: str
    image: Grey
    truth: tuple[tuple[Kind, str], ...]  # codes wholly in view
    partial: tuple[str, ...] = ()  # payloads partly in view (neither hit nor stray)
    small: frozenset[str] = frozenset()  # payloads of small codes
    setting: str = ""
    full: Grey | None = None  # the main stream's Y plane, when the frame was rendered with one

    def zoom(self, x0: int, y0: int, x1: int, y1: int) -> Grey | None:
        """The main-stream pixels of a frame box, as the camera's zoom gives them."""
        if self.full is None:
            return None
        s = self.full.shape[1] / self.image.shape[1]
        h, w = self.full.shape
        a, b = max(0, int(x0 * s)), max(0, int(y0 * s))
        c, d = min(w, math.ceil(x1 * s)), min(h, math.ceil(y1 * s))
        if c <= a or d <= b:
            return None
        return np.ascontiguousarray(self.full[b:d, a:c])


# the presentations' own model: not part of a gen2 scene (its cache key leaves it out)
PRESENTATION_MODULES = frozenset({"presentation.py"})


def _generator_hash(presentations: bool = False) -> str:
    """A hash of the generator's source: gen2 scenes' (docscenes without the presentation
    model), or with `presentations` the presentations' (all of docscenes)."""
    h = hashlib.sha256()
    for p in sorted(Path(docscenes.__file__).parent.glob("*.py")):
        if presentations or p.name not in PRESENTATION_MODULES:
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _cache_dir(family: ModuleType | None = None) -> Path | None:
    key = _generator_hash()
    if family is not None:  # a dev family's module is part of its key (it renders its own)
        key += "-" + hashlib.sha256(Path(str(family.__file__)).read_bytes()).hexdigest()[:8]
    d = CACHE / "docscenes" / (f"{family.NAME}-{key}" if family is not None else key)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return d if os.access(d, os.W_OK) else None


def _sensor() -> tuple[int, int] | None:
    if SENSOR_MODE not in ("lores", "mode"):
        raise ValueError(f"ORDOSCAN_BENCH_SENSOR={SENSOR_MODE!r}: expected 'lores' or 'mode'")
    return docscenes.LORES if SENSOR_MODE == "lores" else None


def _frame(cache: Path | None, name: str, setting: docscenes.Setting, cached_only: bool,
           render: Callable[[], docscenes.DocScene]) -> Frame | None:
    """The frame `name`, from the cache or rendered by `render` (and cached); None when
    `cached_only` and not cached."""
    path = cache / f"{name}.npz" if cache else None
    if path is not None and path.exists():
        with np.load(path) as z:
            image = np.ascontiguousarray(z["image"])
            full = np.ascontiguousarray(z["full"]) if "full" in z.files else None
            meta = json.loads(str(z["meta"]))
    elif cached_only:
        return None
    else:
        s = render()
        image = s.image
        full = s.full if SENSOR_MODE == "mode" else None
        meta = {"codes": [[c.kind.value, c.payload, c.visible, c.module_px]
                          for c in s.codes]}
        if path is not None:
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            extra = {"full": full} if full is not None else {}
            np.savez_compressed(tmp, image=image, meta=json.dumps(meta), **extra)
            tmp.replace(path)
    codes = meta["codes"]
    return Frame(
        "gen2", name, image,
        tuple((Kind(k), p) for k, p, vis, _ in codes if vis),
        tuple(p for _, p, vis, _ in codes if not vis),
        frozenset(p for _, p, vis, m in codes if vis and m <= SMALL_MODULE_PX),
        str(setting),
        full,
    )


def deployed_exposure_ms() -> float:
    """The exposure cap the kiosk's picamera2 source gives the auto-exposure by default
    (camera.max_exposure_us), in ms."""
    from ordoscan.config.sections import CameraConfig

    return float(CameraConfig.model_fields["max_exposure_us"].default) / 1000.0


def scene_name(kind: str, seed: int, difficulty: str, setting: docscenes.Setting) -> str:
    """A rendered scene's name in the cache (the caller adds what else made it)."""
    return (f"{kind}-{seed}-{difficulty}-{setting.light}-{setting.camera}-{setting.paper}-"
            f"{SENSOR_MODE}")


def gen2_frames(split: str, n: int, difficulty: str = "hard", offset: int = 0,
                cached_only: bool = False, max_exposure_ms: float | None = None
                ) -> Iterator[Frame]:
    """`n` gen2 frames of `split` from its `offset`-th seed, rendered or taken from the cache
    (`cached_only`: the cached ones only, none rendered); `max_exposure_ms`: the scenes'
    auto-exposure capped there (docscenes.render), the same scenes otherwise."""
    sensor = _sensor()
    cache = _cache_dir()
    cap = "" if max_exposure_ms is None else f"-cap{max_exposure_ms:g}ms"
    for spec in splits.gen2_specs(split, n, difficulty, offset):
        name = scene_name(spec.kind, spec.seed, difficulty, spec.setting) + cap
        f = _frame(cache, name, spec.setting, cached_only,
                   partial(docscenes.render, spec.kind, spec.seed, setting=spec.setting,
                           difficulty=difficulty, sensor=sensor,
                           max_exposure_ms=max_exposure_ms))
        if f is not None:
            yield f


def family_frames(name: str, n: int, offset: int = 0, cached_only: bool = False
                  ) -> Iterator[Frame]:
    """`n` frames of the dev family `name` (a module of ordoscan.devtools with NAME, specs()
    and render(): af_miss, pale) from its `offset`-th, hard, cached under their own key."""
    family = importlib.import_module(f"ordoscan.devtools.{name}")
    sensor = _sensor()
    cache = _cache_dir(family)
    for seed, setting in family.specs(n, offset):
        name = scene_name(family.NAME, seed, "hard", setting)
        f = _frame(cache, name, setting, cached_only,
                   partial(family.render, seed, setting, sensor=sensor))
        if f is not None:
            yield f


def gen1_frames(n: int, difficulty: str = "hard") -> Iterator[Frame]:
    """`n` frames of gen1's held-out set."""
    from ordoscan.devtools.scenes import scene_set

    for s in scene_set(splits.gen1_set("heldout"), n, difficulty):  # type: ignore[arg-type]
        yield Frame("gen1", f"{s.kind}-{s.seed}", s.image, s.truth)


def corpus_frames() -> tuple[list[Frame], list[Frame]]:
    """ZXing's QR photos (their payloads scored as ordonnances) and false-positive images."""
    qr: list[Frame] = []
    for folder in sorted(CORPUS.glob("qrcode-*")):
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in {".png", ".jpg", ".jpeg", ".gif", ".bmp"}:
                continue
            txt, binary = p.with_suffix(".txt"), p.with_suffix(".bin")
            want = (txt.read_bytes().decode("utf-8") if txt.exists()
                    else binary.read_bytes().decode("latin-1"))
            # the photos' payloads are whatever ZXing's authors encoded: scored as codes
            qr.append(Frame("zxing", f"{folder.name}/{p.name}", load_image(p),
                            ((Kind.ORDONNANCE, want),)))
    fp = [Frame("zxing-fp", f"{name}/{p.name}", load_image(p), ())
          for name in ("falsepositives", "falsepositives-2")
          for p in sorted((CORPUS / name).iterdir()) if p.suffix.lower() in {".png", ".jpg"}]
    return qr, fp


# -- tallies ----------------------------------------------------------------------------

Zoom = Callable[[int, int, int, int], Grey | None]
# a reader gets the lores frame and, when the frame has a main stream, its zoom
Reader = Callable[[Grey, Zoom | None], list[Symbol]]


def zxing_reader(img: Grey, zoom: Zoom | None = None) -> list[Symbol]:
    """One default zxing-cpp read_barcodes call on the lores frame, as Symbols."""
    return [
        Symbol(str(b.format), b.symbology_identifier, b.text, b.bytes, ())
        for b in zxingcpp.read_barcodes(img)
    ]


_classifier = Classifier(ScanConfig())


@dataclass
class Tally:
    """What one reader did on one source."""

    name: str
    ms: list[float] = field(default_factory=list)
    ordo: int = 0  # ordonnance codes in view
    ordo_read: int = 0
    small: int = 0
    small_read: int = 0
    others: int = 0  # other codes in view
    others_read: int = 0
    false_ordo: int = 0  # a read classified as an ordonnance that is no ordonnance in view
    strays: int = 0  # reads of nothing in the truth
    missed: list[str] = field(default_factory=list)  # frame names with an unread ordonnance

    def add(self, frame: Frame, symbols: list[Symbol], ms: float) -> None:
        self.ms.append(ms)
        got_text = {s.text for s in symbols}
        got_raw = {s.raw for s in symbols}
        ordo_truth = {p for k, p in frame.truth if k is Kind.ORDONNANCE}
        for kind, payload in frame.truth:
            hit = payload in got_text or payload.encode() in got_raw
            if kind is Kind.ORDONNANCE:
                self.ordo += 1
                self.ordo_read += hit
                if payload in frame.small:
                    self.small += 1
                    self.small_read += hit
                if not hit:
                    self.missed.append(frame.name)
            else:
                self.others += 1
                self.others_read += hit
        known = {p for _, p in frame.truth} | set(frame.partial)
        for s in symbols:
            c = _classifier.classify(s)
            if c.kind is Kind.ORDONNANCE and s.text not in ordo_truth:
                self.false_ordo += 1
            if not (s.text in known or any(p.encode() == s.raw for p in known)
                    or _gs1_same(s.text, known)):
                self.strays += 1

    def mean(self) -> float:
        return statistics.fmean(self.ms) if self.ms else 0.0

    def p95(self) -> float:
        return float(np.percentile(self.ms, 95)) if self.ms else 0.0


def _gs1_same(text: str, known: set[str]) -> bool:
    """zxing-cpp may give a GS1 element string in its bracketed form."""
    if not text.startswith("("):
        return False
    flat = text.replace("(", "").replace(")", "")
    return any(flat == p.replace("\x1d", "") for p in known)


HEADER = (f"{'source':<30} {'reader':<28} {'ordo read':>15} {'small':>13} {'other':>9}"
          f" {'false ordo':>10} {'stray':>5} {'mean ms':>8} {'p95 ms':>7} {'/raw':>6}")


def row(source: str, t: Tally, base_ms: float) -> str:
    rate = 100 * t.ordo_read / max(t.ordo, 1)
    small = f"{t.small_read}/{t.small}" + (f" {100 * t.small_read / t.small:3.0f}%"
                                           if t.small else "")
    return (f"{source:<30} {t.name:<28} {t.ordo_read:>4}/{t.ordo:<4} {rate:5.1f}%"
            f" {small:>13} {t.others_read:>4}/{t.others:<4} {t.false_ordo:>10} {t.strays:>5}"
            f" {t.mean():8.1f} {t.p95():7.1f} {t.mean() / base_ms:5.2f}x")


def _zoom_of(f: Frame) -> Zoom | None:
    return f.zoom if f.full is not None else None


def run(frames: list[Frame], readers: list[tuple[str, Reader]]) -> list[Tally]:
    """Every reader on every frame, in turn; the milliseconds are the calling thread's CPU
    time times cpu_scale(), the clock the deployed Decoder is given (cpu_clock), so neither
    the figures nor the reads depend on the machine's load."""
    clock = cpu_clock()
    tallies = [Tally(name) for name, _ in readers]
    for f in frames[:3]:  # warm-up: libraries loaded, pass costs learnt
        for _, r in readers:
            r(f.image, _zoom_of(f))
    for f in frames:
        for t, (_, r) in zip(tallies, readers, strict=True):
            zoom = _zoom_of(f)
            t0 = clock()
            got = r(f.image, zoom)
            t.add(f, got, (clock() - t0) * 1000.0)
    return tallies
