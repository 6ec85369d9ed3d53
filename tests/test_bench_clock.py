"""The benchmarks' CPU-time clock (tests/bench/heldout.py): what the deployed Decoder's
budget and duty cycle count on a bench, so a loaded machine does not cut its passes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.bench import heldout as ho
from tests.bench import pi_speed


def test_cpu_clock_does_not_count_waiting() -> None:
    clock = ho.cpu_clock(1.0)
    t0 = clock()
    time.sleep(0.2)  # a loaded machine: the thread waits, its CPU time does not grow
    assert clock() - t0 < 0.05


def test_cpu_clock_counts_only_the_calling_thread() -> None:
    clock = ho.cpu_clock(1.0)
    t0 = clock()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    other = threading.Thread(target=spin)
    other.start()
    time.sleep(0.2)
    stop.set()
    other.join()
    assert clock() - t0 < 0.05


def test_cpu_clock_is_scaled() -> None:
    clock = ho.cpu_clock(5.9)
    a = time.thread_time()
    c = clock()
    b = time.thread_time()
    assert 5.9 * a <= c <= 5.9 * b


def test_cpu_scale_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDOSCAN_BENCH_CPU_SCALE", raising=False)
    assert ho.cpu_scale() == 1.0
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "2.7")
    assert ho.cpu_scale() == 2.7
    for bad in ("fast", "0", "-1", "nan", "inf", "pi3"):
        monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", bad)
        with pytest.raises(ValueError, match=r"ORDOSCAN_BENCH_CPU_SCALE.*pi4, pi5"):
            ho.cpu_scale()


def test_a_board_name_charges_this_machines_measured_speed(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    # 10 G instructions/s here: a Pi 4 core (1.98 G/s) is 5.05x slower, a Pi 5 (4.32) 2.31x
    speed = pi_speed.Speed(instructions=1_000_000_000, seconds=0.1)
    monkeypatch.setattr(pi_speed, "this_machine", lambda board: speed)
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "pi4")
    assert ho.cpu_scale() == pytest.approx(1e10 / (1.8e9 * 1.1))
    assert "x5.05 for a Pi 4 core" in ho.cpu_scale_label()
    assert "10.00 G instructions/s" in ho.cpu_scale_label()
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "pi5")
    assert ho.cpu_scale() == pytest.approx(1e10 / (2.4e9 * 1.8))
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "5.9")
    assert ho.cpu_scale_label() == "x5.9"


def _small_frames() -> np.ndarray:
    from ordoscan.devtools.scenes import scene_set

    # two crops of gen1 dev scenes: a few M instructions, seconds under callgrind
    return np.stack([s.image[200:520, 400:720] for s in scene_set(3, 2, "easy")])


@pytest.mark.skipif(pi_speed.VALGRIND is None, reason="valgrind is not installed (./dev setup)")
def test_the_instruction_count_is_callgrinds_and_is_kept(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    frames = _small_frames()
    n = pi_speed.instructions(frames, tmp_path)
    # one zxing-cpp call on a 320x320 grey image executes well over a million instructions
    assert n > 1_000_000
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]  # the frames and dump removed
    # kept: the second call counts nothing again (no valgrind needed)
    monkeypatch.setattr(pi_speed, "VALGRIND", None)
    assert pi_speed.instructions(frames, tmp_path) == n
    # other frames are another key: without valgrind, a clear error, not a guess
    with pytest.raises(pi_speed.CalibrationError, match="valgrind is not installed"):
        pi_speed.instructions(frames[:1], tmp_path)


def test_a_count_of_nothing_is_an_error_naming_the_missing_symbol() -> None:
    # a stripped interpreter (Debian's /usr/bin/python3): callgrind never enters the window
    assert pi_speed.collected("==1== Collected : 1005000000\n") == 1_005_000_000
    with pytest.raises(pi_speed.CalibrationError,
                       match=r"no symbol functools_reduce.*ORDOSCAN_BENCH_CALLGRIND_PYTHON"):
        pi_speed.collected("==1== Events    : Ir\n==1== Collected : 0\n", "/usr/bin/python3")


def _fake_python(tmp_path: Path, zxing: str) -> str:
    """An 'interpreter' that answers the version probe with this zxing-cpp version."""
    exe = tmp_path / f"python-{zxing}"
    exe.write_text(f"#!/bin/sh\necho '{zxing} 3.11.2 (main) [GCC 12.2.0]'\n")
    exe.chmod(0o755)
    return str(exe)


def test_the_count_may_be_taken_under_another_python_with_the_same_zxing_cpp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = np.zeros((1, 8, 8), np.uint8)
    here = pi_speed._key(frames)
    monkeypatch.setenv("ORDOSCAN_BENCH_CALLGRIND_PYTHON",
                       _fake_python(tmp_path, pi_speed._zxing_version()))
    # kept under the counting interpreter's versions, not this one's
    assert pi_speed._key(frames) != here
    monkeypatch.setenv("ORDOSCAN_BENCH_CALLGRIND_PYTHON", _fake_python(tmp_path, "0.0.1"))
    with pytest.raises(pi_speed.CalibrationError, match=r"has zxing-cpp 0\.0\.1"):
        pi_speed._key(frames)
    monkeypatch.setenv("ORDOSCAN_BENCH_CALLGRIND_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(pi_speed.CalibrationError, match="no-such-python"):
        pi_speed._key(frames)


def test_the_time_is_the_median_of_native_passes() -> None:
    frames = _small_frames()
    t = pi_speed.seconds(frames, passes=5)
    assert 0 < t < 5.0


def test_a_time_measured_on_the_board_replaces_the_assumed_rate(monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    speed = pi_speed.Speed(instructions=1_000_000_000, seconds=0.1)
    monkeypatch.setattr(pi_speed, "this_machine", lambda board: speed)
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "pi4")
    monkeypatch.setenv("ORDOSCAN_BENCH_PI4_REFERENCE_MS", "640")
    assert ho.cpu_scale() == pytest.approx(6.4)  # 640 ms on the board, 100 ms here
    assert "took 640.0 ms of CPU on the board, 100.0 ms on this machine" in ho.cpu_scale_label()
    # a Pi 5 without its own figure keeps the assumed rate
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "pi5")
    assert ho.cpu_scale() == pytest.approx(1e10 / (2.4e9 * 1.8))
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "pi4")
    for bad in ("fast", "0", "-3", "nan"):
        monkeypatch.setenv("ORDOSCAN_BENCH_PI4_REFERENCE_MS", bad)
        with pytest.raises(ValueError, match="ORDOSCAN_BENCH_PI4_REFERENCE_MS"):
            ho.cpu_scale()


def test_the_board_side_command_times_a_frames_file_and_refuses_a_bad_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = _small_frames()
    np.save(tmp_path / "ref.npy", frames)
    pi_speed.main(["--frames", str(tmp_path / "ref.npy")])
    out = capsys.readouterr().out
    assert "reference: 2 frames 320x320" in out and "ms of CPU a pass" in out
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(SystemExit, match=r"bad\.npy: not a frames file"):
        pi_speed.main(["--frames", str(tmp_path / "bad.npy")])
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(SystemExit, match=r"flat\.npy: expected \(frames, height, width\) uint8"):
        pi_speed.main(["--frames", str(tmp_path / "flat.npy")])


def test_with_the_boards_own_time_no_instruction_count_is_needed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a machine without valgrind can still charge a board measured on the board itself
    monkeypatch.setattr(pi_speed, "VALGRIND", None)
    monkeypatch.setattr(pi_speed, "reference_frames", _small_frames)
    monkeypatch.setenv("ORDOSCAN_BENCH_PI4_REFERENCE_MS", "500")
    speed = pi_speed.this_machine.__wrapped__("pi4")
    assert speed.instructions is None and speed.seconds > 0
    assert speed.scale("pi4") == pytest.approx(0.5 / speed.seconds)
    with pytest.raises(pi_speed.CalibrationError, match="not counted"):
        speed.scale("pi5")


def test_a_bench_ends_by_saying_whether_the_machines_speed_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "2.7")
    assert ho.cpu_scale_drift() == ""  # a plain factor: nothing measured to compare
    monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", "pi4")
    monkeypatch.setattr(pi_speed, "this_machine",
                        lambda board: pi_speed.Speed(instructions=10**9, seconds=0.100))
    monkeypatch.setattr(pi_speed, "reference_frames", _small_frames)
    monkeypatch.setattr(pi_speed, "seconds", lambda frames: 0.103)
    line = ho.cpu_scale_drift()
    assert "103.0 ms of CPU at the end against 100.0 ms" in line and "(+3%): steady" in line
    monkeypatch.setattr(pi_speed, "seconds", lambda frames: 0.085)
    line = ho.cpu_scale_drift()
    assert "(-15%): this machine's speed moved" in line
