"""The benchmarks' CPU-time clock (tests/bench/heldout.py): what the deployed Decoder's
budget and duty cycle count on a bench, so a loaded machine does not cut its passes."""

from __future__ import annotations

import threading
import time

import pytest

from tests.bench import heldout as ho


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
    for bad in ("fast", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("ORDOSCAN_BENCH_CPU_SCALE", bad)
        with pytest.raises(ValueError, match="ORDOSCAN_BENCH_CPU_SCALE"):
            ho.cpu_scale()
