"""A Pi core's speed, in CPU time of the machine that runs a bench.

The benches charge the scan thread's CPU time times a factor (`heldout.cpu_clock`). A fixed
factor for a Pi 4 (5.9, measured once on one development machine) charged a slower
development machine as a slower Pi: the same decoder gave a p95 of 0.62 s on one machine
and 0.73-0.79 s on another. `ORDOSCAN_BENCH_CPU_SCALE=pi4` (or `pi5`) instead measures, in
the same run, how many instructions a second one core of this machine executes on a
reference workload, and divides by what a Pi core executes (`PI_RATES`):

- the workload: one default zxing-cpp read_barcodes call on each of a few fixed frames: dev
  presentations 400 000-400 007 (all four styles, paper and a phone), 1280x720, each a few
  frames after its code came into view, as the presentations bench charges. The content
  matters: on gen1's hard scenes the same machine ran 7.2 G instructions/s, on its easy ones
  10.8, so the reference is the generator and stream the benches charge;
- its instructions: counted once under valgrind's callgrind (cached under
  /var/cache/ordoscan-test/pi-speed, keyed by the frames, zxing-cpp, Python and the machine).
  callgrind finds the counted window by a symbol of the interpreter's, which a stripped
  interpreter (Debian's /usr/bin/python3, the kiosk's) does not have:
  ORDOSCAN_BENCH_CALLGRIND_PYTHON names another to count under (the development venv's,
  with the same zxing-cpp; the benches then still run, and time, under this one);
- its time: this thread's CPU time, the median of repeated passes, measured natively now, so
  the machine's load as the bench runs is in it too.

The Pi rates are an assumption (docs/EVALUATION.md: a Cortex-A72 at 1.8 GHz retiring ~1.1
instructions a cycle on this code, a Cortex-A76 at 2.4 GHz ~1.8; +/-30 %), but the same one
on every development machine. A measurement replaces it: on the board, time the same
reference (`python -m tests.bench.pi_speed [--frames reference.npy]`: the frames file
this machine cached, so both time the very same pixels) and give the figure to the benches
as ORDOSCAN_BENCH_PI4_REFERENCE_MS (or ..._PI5_...): the factor is then that time over
this machine's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import TEST_CACHE

# x86-64 instructions of this code a second on one core of each board (the callgrind
# bench's Pi columns use the same figures)
PI_RATES = {"pi4": 1.8e9 * 1.1, "pi5": 2.4e9 * 1.8}
PI_NAMES = {"pi4": "a Pi 4 core (Cortex-A72, 1.8 GHz)", "pi5": "a Pi 5 core (Cortex-A76, 2.4 GHz)"}
REFERENCE_SEEDS = range(400_000, 400_008)  # dev presentations
REFERENCE_AFTER = 8  # frames after the code came into view
PASSES = 25  # native passes over the frames; their median is the time taken
DRIFT = 0.05  # a change of the reference's time over a bench beyond this is reported as such
VALGRIND = shutil.which("valgrind")
# beside the benches' other renders: the reference's frames and instruction counts
CACHE = TEST_CACHE / "pi-speed"
ROOT = Path(__file__).resolve().parents[2]


class CalibrationError(RuntimeError):
    """This machine's speed could not be measured (no valgrind, or callgrind failed)."""


@dataclass(frozen=True)
class Speed:
    """This machine's speed on the reference workload."""

    instructions: int | None  # per pass over the reference frames (callgrind; None: not
    # counted, the board's own time on the reference is known)
    seconds: float  # per pass, this thread's CPU time (median of PASSES)

    @property
    def rate(self) -> float:
        """Instructions a second on one core of this machine."""
        if self.instructions is None:
            raise CalibrationError("the reference's instructions were not counted")
        return self.instructions / self.seconds

    def scale(self, board: str) -> float:
        """How many times this machine's CPU time one core of `board` takes: the board's
        time on the reference over this machine's where it was measured (board_ms), else
        from the board's assumed instruction rate."""
        measured = board_ms(board)
        if measured is not None:
            return measured / (self.seconds * 1000.0)
        return self.rate / PI_RATES[board]


def board_ms(board: str) -> float | None:
    """The reference's CPU ms a pass measured on `board` itself, when given
    (ORDOSCAN_BENCH_PI4_REFERENCE_MS, ORDOSCAN_BENCH_PI5_REFERENCE_MS)."""
    return env_number(f"ORDOSCAN_BENCH_{board.upper()}_REFERENCE_MS", None, 1e6,
                      "the reference's CPU milliseconds a pass on the board"
                      " (python -m tests.bench.pi_speed prints it)")


def env_number(name: str, default: str | None, upper: float, expected: str) -> float | None:
    """The environment's `name` as a number in (0, upper) (None: unset and no default);
    anything else a ValueError naming the variable and saying what was `expected`."""
    text = os.environ.get(name, default)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < upper:  # also refuses NaN
        raise ValueError(f"{name}={text!r}: expected {expected}")
    return value


def collected(stderr: str, python: str = sys.executable) -> int:
    """The instruction count callgrind printed ("Collected : n"); none counted is an error
    (the window's symbol not found: a stripped `python`), not a count."""
    m = re.search(r"Collected\s*:\s*(\d+)", stderr)
    if not m:
        raise CalibrationError(f"no instruction count from callgrind:\n{stderr[-2000:]}")
    n = int(m.group(1))
    if n == 0:
        raise CalibrationError(
            f"callgrind counted no instruction under {python}: it has no symbol"
            " functools_reduce (a stripped interpreter, as Debian's /usr/bin/python3);"
            " ORDOSCAN_BENCH_CALLGRIND_PYTHON=<an unstripped python with the same zxing-cpp>"
            " counts under that one")
    return n


def counting_python() -> str:
    """The interpreter the reference is counted under: ORDOSCAN_BENCH_CALLGRIND_PYTHON, else
    this one (zxing-cpp's instructions do not depend on the Python around it; a decoder's,
    counted by the callgrind bench, depend on its numpy: that bench counts under this one)."""
    return os.environ.get("ORDOSCAN_BENCH_CALLGRIND_PYTHON") or sys.executable


def callgrind(module: str, args: list[str], out: Path,
              python: str = sys.executable) -> tuple[int, str]:
    """Run `python -m module *args` under callgrind, counting only what runs inside
    functools.reduce (the child puts its measured work there): (instructions, its stdout)."""
    if VALGRIND is None:
        raise CalibrationError("valgrind is not installed: ./dev setup installs it"
                               " (apt package valgrind)")
    from tests.support import child_env

    r = subprocess.run(
        [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no",
         "--collect-atstart=no", "--toggle-collect=functools_reduce",
         python, "-m", module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=3600,
        env=child_env(PYTHONMALLOC="malloc", PYTHONHASHSEED="0"))
    if r.returncode != 0:
        raise CalibrationError(f"callgrind on {module} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return collected(r.stderr, python), r.stdout


def reference_frames(cache: Path = CACHE) -> np.ndarray:
    """The reference frames, (len(REFERENCE_SEEDS), 720, 1280) uint8 (rendered once)."""
    from ordoscan.devtools import splits
    from ordoscan.devtools.docscenes import presentation

    from tests.bench.heldout import _generator_hash

    if not set(REFERENCE_SEEDS) <= set(splits.PRESENTATION_DEV_SEEDS):
        raise ValueError(f"the reference must be dev presentations, not {REFERENCE_SEEDS}")
    # the generator's code is in the key: a change renders anew
    h = hashlib.sha256(f"{REFERENCE_SEEDS} {REFERENCE_AFTER}"
                       f" {_generator_hash(presentations=True)}".encode())
    stored = cache / f"frames-{h.hexdigest()[:16]}.npy"
    if stored.exists():
        return np.load(stored)
    frames = []
    for p in presentation.presentations(REFERENCE_SEEDS, splits.presentation_settings("dev")):
        first = p.first_in_view or 0
        frames.append(p.frames[min(first + REFERENCE_AFTER, len(p.frames) - 1)].image)
    out = np.stack(frames)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(stored, out)
    return out


def _one_pass(frames: np.ndarray) -> int:
    import zxingcpp

    return functools.reduce(lambda n, f: n + len(zxingcpp.read_barcodes(f)), frames, 0)


def _zxing_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zxing-cpp")
    except PackageNotFoundError:
        return "?"


def _counted_with() -> str:
    """The zxing-cpp and Python versions the count is taken with (counting_python()'s):
    a count is kept under them, and an interpreter with another zxing-cpp than this one's
    would count another library than the benches time."""
    python = counting_python()
    if python == sys.executable:
        return f"{_zxing_version()} {sys.version}"
    probe = ("import sys; from importlib.metadata import version;"
             " print(version('zxing-cpp'), sys.version)")
    try:
        r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise CalibrationError(f"ORDOSCAN_BENCH_CALLGRIND_PYTHON={python}: {e}") from None
    if r.returncode != 0:
        raise CalibrationError(f"ORDOSCAN_BENCH_CALLGRIND_PYTHON={python}: no zxing-cpp"
                               f" there:\n{r.stderr[-1000:]}")
    theirs = r.stdout.strip()
    if theirs.split(" ", 1)[0] != _zxing_version():
        raise CalibrationError(f"ORDOSCAN_BENCH_CALLGRIND_PYTHON={python} has zxing-cpp"
                               f" {theirs.split(' ', 1)[0]}, this one {_zxing_version()}:"
                               " the count would be another library's")
    return theirs


def _key(frames: np.ndarray) -> str:
    h = hashlib.sha256(frames.tobytes())
    h.update(f"{_counted_with()} {platform.machine()}".encode())
    return h.hexdigest()[:16]


def instructions(frames: np.ndarray, cache: Path = CACHE) -> int:
    """Instructions of one pass over `frames` (callgrind, cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    key = _key(frames)  # (a hash of every frame's pixels: taken once)
    stored = cache / f"{key}.json"
    if stored.exists():
        return int(json.loads(stored.read_text())["instructions"])
    path, dump = cache / f"{key}.npy", cache / f"{key}.callgrind"
    np.save(path, frames)
    try:
        n, _ = callgrind("tests.bench.pi_speed", ["--child", json.dumps({"frames": str(path)})],
                         dump, counting_python())
    finally:
        path.unlink(missing_ok=True)
        dump.unlink(missing_ok=True)
    stored.write_text(json.dumps({"instructions": n}))
    return n


def seconds(frames: np.ndarray, passes: int = PASSES) -> float:
    """This thread's CPU time for one pass over `frames`: the median of `passes`."""
    _one_pass(frames)  # warm-up: the library loaded, its first allocations made
    took = []
    for _ in range(passes):
        t = time.thread_time()
        _one_pass(frames)
        took.append(time.thread_time() - t)
    return statistics.median(took)


@functools.cache
def this_machine(board: str) -> Speed:
    """This machine's speed on the reference workload, for `board`'s factor (measured once
    per process; the instructions are counted only where the board's own time on the
    reference is not given)."""
    frames = reference_frames()
    return Speed(instructions(frames) if board_ms(board) is None else None, seconds(frames))


def drift(then: float, now: float) -> str:
    """A line on the reference's time `then` (when a factor was taken) and `now`, in s."""
    change = now / then - 1.0
    verdict = ("steady" if abs(change) <= DRIFT else
               "this machine's speed moved: the factor taken at the start is off by as much")
    return (f"the reference took {now * 1000:.1f} ms of CPU at the end against"
            f" {then * 1000:.1f} ms when the factor was taken ({change:+.0%}): {verdict}")


def describe(board: str, speed: Speed) -> str:
    """One line on how the factor for `board` was found."""
    measured = board_ms(board)
    if measured is not None:
        return (f"x{speed.scale(board):.2f} for {PI_NAMES[board]}: the reference (zxing-cpp on"
                f" {len(REFERENCE_SEEDS)} dev presentation frames) took {measured:.1f} ms of CPU"
                f" on the board, {speed.seconds * 1000:.1f} ms on this machine"
                " (tests/bench/pi_speed.py)")
    return (f"x{speed.scale(board):.2f} for {PI_NAMES[board]}: this machine ran the reference"
            f" (zxing-cpp on {len(REFERENCE_SEEDS)} dev presentation frames,"
            f" {(speed.instructions or 0) / 1e6:.0f} M instructions) in"
            f" {speed.seconds * 1000:.1f} ms of CPU, {speed.rate / 1e9:.2f} G instructions/s;"
            f" the board ~{PI_RATES[board] / 1e9:.2f} G/s (tests/bench/pi_speed.py)")


def _child(spec: dict[str, Any]) -> None:
    """Under callgrind: warm up, then one pass inside functools.reduce (the counted window)."""
    frames = np.load(str(spec["frames"]))
    import zxingcpp

    for f in frames:
        zxingcpp.read_barcodes(f)
    _one_pass(frames)


def main(argv: list[str] | None = None) -> None:
    """Time the reference on this machine (on a Pi: the figure for the benches' board factor)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.bench.pi_speed", description=main.__doc__)
    ap.add_argument("--frames", type=Path, help="the reference frames (.npy) another machine "
                    "cached, to time the very same pixels (default: rendered here)")
    ap.add_argument("--count", action="store_true",
                    help="also count its instructions under callgrind (valgrind needed)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # the run callgrind counts
    args = ap.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return
    if args.frames is not None:
        try:
            frames = np.load(args.frames)
        except (OSError, ValueError) as e:
            raise SystemExit(f"{args.frames}: not a frames file ({e})") from None
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise SystemExit(f"{args.frames}: expected (frames, height, width) uint8, got"
                             f" {frames.shape} {frames.dtype}")
    else:
        frames = reference_frames()
    digest = hashlib.sha256(frames.tobytes()).hexdigest()[:16]
    ms = seconds(frames) * 1000.0
    print(f"reference: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]} (sha256 {digest}),"
          f" zxing-cpp {_zxing_version()}, {platform.machine()}:"
          f" {ms:.1f} ms of CPU a pass (median of {PASSES})")
    if args.count:
        n = instructions(frames)
        print(f"  {n / 1e6:.0f} M instructions (callgrind): {n / (ms / 1000.0) / 1e9:.2f} G/s")


if __name__ == "__main__":
    main()
