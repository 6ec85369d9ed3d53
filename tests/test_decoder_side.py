"""The decoder's second core (ordoscan.decoder.side): the same reads, its work joined
within each frame, its failures the frame's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from ordoscan.decoder import Decoder
from ordoscan.decoder.side import THREAD_NAME, SideCore, Task
from ordoscan.devtools.scenes import render
from ordoscan.errors import DecodeError

from tests.bench.lockstep import LockstepSide
from tests.support.kiosk import GOOD_READ, start_kiosk, wait_ready, wait_until
from tests.support.mosquitto import Broker
from tests.test_decoder import counter_views

T = TypeVar("T")


class Watched(SideCore):
    """A side core that notes where each task ran and what was still out when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[tuple[str, str]] = []  # (task's function, thread name)
        self.out = 0  # tasks submitted and not yet joined

    def submit(self, fn: Callable[[], T]) -> Task[T]:
        name = getattr(getattr(fn, "func", fn), "__name__", "?")  # (a functools.partial)

        def noted() -> T:
            self.ran.append((name, threading.current_thread().name))
            return fn()

        self.out += 1
        return super().submit(noted)

    def result(self, task: Task[T]) -> T:
        self.out -= 1
        return super().result(task)


def _scenes() -> list[np.ndarray]:
    """Frames of every kind the decoder meets: codes read at once, small and blurred codes
    only the extra passes read, DataMatrix, blank and busy counters."""
    frames = [render(kind, seed).image for kind, seed in (
        ("ordonnance", 0), ("ordonnance", 2), ("medicine_pack", 0), ("blank", 0),
        ("blank", 1), ("phone_dark", 0), ("2d_doc", 0))]
    frames += [render("ordonnance", s, difficulty="hard").image for s in (700151, 700153, 3)]
    return frames + list(counter_views().values())


def _reads(decoder: Decoder, frame: np.ndarray) -> list[tuple[str, str, Any]]:
    return [(s.format, s.text, s.position) for s in decoder.decode(frame)]


def test_a_side_core_gives_the_same_symbols_and_joins_its_work_within_the_frame() -> None:
    side = Watched()
    alone, beside = Decoder(budget_ms=10_000, duty=None), Decoder(
        budget_ms=10_000, duty=None, side=side)
    try:
        for frame in _scenes():
            assert _reads(beside, frame) == _reads(alone, frame)
            assert side.out == 0  # nothing of this frame's still runs once decode() returns
    finally:
        side.close()
    a, b = alone.stats(), beside.stats()
    assert (a.hard_frames, a.blank_frames, a.extra_symbols, a.extra_passes) == (
        b.hard_frames, b.blank_frames, b.extra_symbols, b.extra_passes)
    assert a.extra_symbols > 0 and a.blank_frames > 0  # both paths were taken
    assert {thread for _, thread in side.ran} == {THREAD_NAME}
    # the DataMatrix pass, the finder search's coarse levels and its column hits
    assert {name for name, _ in side.ran} == {"_fast", "_coarse_finders", "_column_hits"}
    # the DataMatrix fast pass on every frame, the statistics where nothing was read
    assert side.tasks == len(side.ran) > len(_scenes())


def test_the_scan_thread_does_its_own_work_while_it_waits_for_the_side_core() -> None:
    import ordoscan.decoder as dec
    import ordoscan.decoder.finders as finders

    seen: list[tuple[str, str]] = []

    def noted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*a: Any, **k: Any) -> Any:
            seen.append((name, threading.current_thread().name))
            return real(*a, **k)

        return call

    real_run = dec.run_pass

    def run_pass(p: Any, *a: Any, **k: Any) -> Any:
        seen.append((p.name, threading.current_thread().name))
        return real_run(p, *a, **k)

    patched = {(dec, "run_pass"): run_pass,
               (dec, "_statistics"): noted("statistics", dec._statistics),
               (dec, "view"): noted("view", dec.view),
               (finders, "_line_hits"): noted("line hits", finders._line_hits)}
    saved = {k: getattr(*k) for k in patched}
    with SideCore() as side:
        decoder = Decoder(budget_ms=0, side=side)  # the fast passes and the search only
        try:
            for (module, name), fn in patched.items():
                setattr(module, name, fn)
            decoder.decode(render("blank", 1).image)
        finally:
            for (module, name), fn in saved.items():
                setattr(module, name, fn)
    here = threading.current_thread().name
    mine = [name for name, thread in seen if thread == here]
    theirs = [name for name, thread in seen if thread == THREAD_NAME]
    # the QR Code pass here, the coarse look while the DataMatrix pass runs there; the
    # full-size rows' hits here and its columns' there, the coarser levels' both there; the
    # statistics here while this thread waits for them
    assert mine == ["qr", "view", "line hits", "statistics"]
    assert theirs == ["datamatrix", "line hits", "line hits", "line hits"]
    assert len(seen) == len(mine) + len(theirs)


class Failing(SideCore):
    def submit(self, fn: Callable[[], T]) -> Task[T]:
        def fail() -> T:
            raise DecodeError("the side core's pass failed")

        return super().submit(fail)


def test_a_failure_on_the_side_core_is_the_frames_and_the_next_frame_reads() -> None:
    frame = render("ordonnance", 0).image
    with Failing() as side:
        decoder = Decoder(side=side)
        with pytest.raises(DecodeError, match="side core"):
            decoder.decode(frame)
    with SideCore() as side:
        assert any(s.format == "QRCode" for s in Decoder(side=side).decode(frame))


def test_side_core_tasks_run_in_order_and_close_ends_its_thread() -> None:
    side = SideCore()
    order: list[int] = []
    tasks = [side.submit(lambda i=i: order.append(i) or i * i) for i in range(5)]
    assert [side.result(t) for t in tasks] == [0, 1, 4, 9, 16]
    assert order == [0, 1, 2, 3, 4] and side.tasks == 5
    worker = next(t for t in threading.enumerate() if t.name == THREAD_NAME)
    side.close()
    assert not worker.is_alive()
    assert side.result(side.submit(lambda: "again")) == "again"  # a new thread after close
    side.close()
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())


def test_the_lockstep_side_charges_the_wait_for_a_task_still_running_on_its_timeline() -> None:
    clock = {"now": 10.0}
    charged: list[float] = []
    side = LockstepSide(lambda: clock["now"], charged.append, scale=2.0)

    def done(spent: float, submitted: float) -> Task[str]:
        clock["now"] = submitted
        task = side.submit(lambda: "ok")
        task.wait()
        task.spent = spent  # (CPU time of the worker: set for a deterministic test)
        return task

    # submitted at 10.0, 3 ms of CPU at x2 ends at 10.006; asked at 10.002: 4 ms waited
    t = done(0.003, 10.0)
    clock["now"] = 10.002
    assert side.result(t) == "ok" and charged == [pytest.approx(0.004)]
    # asked after it ended: no wait
    t = done(0.001, 10.010)
    clock["now"] = 10.020
    side.result(t)
    assert len(charged) == 1
    # a task submitted while the one before still ran (on the timeline) starts after it
    t1 = done(0.010, 10.030)  # ends at 10.050
    t2 = done(0.005, 10.031)  # starts at 10.050, ends at 10.060
    clock["now"] = 10.031
    side.result(t1)
    clock["now"] = 10.055
    side.result(t2)
    assert charged[1:] == [pytest.approx(0.019), pytest.approx(0.005)]
    assert side.waited == pytest.approx(0.028)
    side.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_the_kiosk_uses_the_cores_configured_and_stops_the_side_core(
    tmp_path: Path, broker: Broker, threads: int
) -> None:
    made: list[SideCore] = []

    def side() -> SideCore:
        made.append(SideCore())
        return made[-1]

    k = start_kiosk(tmp_path, broker.port, app_options={"decode_side": side},
                    scan={"decode_threads": threads})
    try:
        wait_ready(k)
        k.show("ordonnance", 0)
        k.assert_signals(GOOD_READ)
        assert k.app.stats.snapshot()["queued"] == 1
    finally:
        k.app.stop()
    assert len(made) == threads - 1
    if made:
        assert made[0].tasks >= 1  # the frame's DataMatrix pass at least
    assert wait_until(lambda: not any(t.name == THREAD_NAME for t in threading.enumerate()), 10)


class Gated(SideCore):
    """A side core whose tasks wait (up to 10 s) for `open` first, noting whether it was."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.was_open: list[bool] = []

    def submit(self, fn: Callable[[], T]) -> Task[T]:
        def gated() -> T:
            self.was_open.append(self.open.wait(10))
            return fn()

        return super().submit(gated)


def test_the_qr_fast_pass_read_is_given_before_the_side_cores_pass_is_waited_for() -> None:
    """decode's on_read has the QR Code the moment its pass read it: the DataMatrix pass
    beside it (held back here until then) has not ended; every symbol once, all returned."""
    reported: list[tuple[str, str]] = []
    with Gated() as side:
        decoder = Decoder(side=side)

        def on_read(symbol: Any) -> None:
            reported.append((symbol.format, symbol.text))
            if symbol.format == "QRCode":
                side.open.set()

        got = decoder.decode(render("ordonnance", 2).image, on_read=on_read)
    assert side.was_open[0]  # the DataMatrix pass ran only once the QR Code was given
    assert reported[0][0] == "QRCode" and "DataMatrix" in {f for f, _ in reported}
    assert sorted(reported) == sorted((s.format, s.text) for s in got)
    assert len(set(reported)) == len(reported)


def test_an_extra_passs_read_is_given_before_the_next_pass_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ordoscan.decoder as dec

    log: list[tuple[str, str, bool]] = []
    real = dec.run_pass

    def run_pass(p: Any, frame: Any, box: Any, found: Any, *a: Any, **k: Any) -> Any:
        n = len(found)
        out = real(p, frame, box, found, *a, **k)
        log.append(("pass", p.name, len(found) > n))
        return out

    monkeypatch.setattr(dec, "run_pass", run_pass)
    got = Decoder(budget_ms=10_000, duty=None).decode(
        render("ordonnance", 700151, difficulty="hard").image,
        on_read=lambda s: log.append(("read", s.format, True)))
    reads = [i for i, (what, *_) in enumerate(log) if what == "read"]
    assert len(reads) == len(got) == 1
    # right after the pass that read it, a pass after the fast ones, and before the next
    i = reads[0]
    assert log[i - 1][0] == "pass" and log[i - 1][2] and log[i - 1][1] not in ("qr", "datamatrix")
    assert log[i + 1:] and all(what == "pass" for what, *_ in log[i + 1:])


def test_a_failing_on_read_ends_the_frame_and_the_next_frame_reads() -> None:
    def on_read(symbol: Any) -> None:
        raise RuntimeError("the caller's handler failed")

    frame = render("ordonnance", 2).image
    side = Watched()
    try:
        decoder = Decoder(side=side)
        with pytest.raises(RuntimeError, match="handler failed"):
            decoder.decode(frame, on_read=on_read)
        assert side.out == 0  # the side core's pass was joined all the same
        assert {s.format for s in decoder.decode(frame)} == {"QRCode", "DataMatrix"}
    finally:
        side.close()
