"""LatestFrameReader: newest frame only, releases, loss and reopen with back-off, stalls."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
from ordoscan.camera import Frame, LatestFrameReader
from ordoscan.errors import CameraLost, CameraOpenError

from tests.support.wait import wait_until


class ScriptedSource:
    """A FrameSource fed by the test: frames and failures go through a queue, in order."""

    name = "scripted camera"
    stall_hint = ""

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.items: queue.Queue[Frame | BaseException] = queue.Queue()
        self.open_failures: list[BaseException] = []
        self.events: list[str] = []  # what happened, in order: open, close, release N
        self.lock = threading.Lock()
        self.next_index = 0
        self.reads = 0  # read() calls that returned, frame or not

    def push(self, count: int = 1) -> None:
        for _ in range(count):
            image = np.full((4, 6), self.next_index % 256, np.uint8)
            self.items.put(Frame(image, float(self.next_index), self.next_index))
            self.next_index += 1

    def fail(self, error: BaseException) -> None:
        self.items.put(error)

    def log(self, event: str) -> None:
        with self.lock:
            self.events.append(event)

    def open(self) -> None:
        if self.open_failures:
            self.log("open failed")
            raise self.open_failures.pop(0)
        self.log("open")

    def read(self, timeout: float) -> Frame | None:
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            item = None
        with self.lock:
            self.reads += 1
        if isinstance(item, BaseException):
            raise item
        return item

    def wait_for_reads(self, count: int = 3) -> None:
        """Let the reader read `count` more times: an absence asserted after this is real."""
        with self.lock:
            target = self.reads + count
        wait_until(lambda: self.reads >= target, 20, f"{count} more reads of the source")

    def release(self, frame: Frame) -> None:
        self.log(f"release {frame.index}")

    def close(self) -> None:
        self.log("close")

    def count(self, event: str) -> int:
        with self.lock:
            return self.events.count(event)


class FakeClock:
    """An ordoscan.clock.Clock the test moves by hand; its waits are recorded and cut short,
    so a back-off costs no real time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_764_000_000.0 + self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.waits.append(timeout)
        return event.wait(min(timeout, 0.001))


class Recorder:
    """on_state callback that keeps every report."""

    def __init__(self) -> None:
        self.states: list[tuple[bool, str]] = []

    def __call__(self, ok: bool, message: str) -> None:
        self.states.append((ok, message))

    def saw(self, ok: bool, text: str = "") -> bool:
        return any(s == ok and text in m for s, m in list(self.states))


def make_reader(source: ScriptedSource, **kwargs: object) -> LatestFrameReader:
    options: dict[str, object] = {"stall_timeout_s": 3.0, "read_timeout_s": 0.01}
    options.update(kwargs)
    return LatestFrameReader(source, **options)  # type: ignore[arg-type]


def test_only_the_newest_frame_is_kept_and_stale_ones_are_released_and_counted() -> None:
    source = ScriptedSource()
    with make_reader(source) as reader:
        source.push(5)
        wait_until(lambda: reader.frames == 5)
        frame = reader.get(1)
        assert frame is not None and frame.index == 4
        assert reader.dropped == 4
        assert [e for e in source.events if e.startswith("release")] == [
            "release 0",
            "release 1",
            "release 2",
            "release 3",
        ]
        assert reader.get(0.01) is None  # nothing newer
        assert source.count("release 4") == 1  # asking again gave frame 4 back
        stats = reader.stats()
        assert (stats.frames, stats.dropped, stats.ok) == (5, 4, True)


def test_waiting_says_whether_a_newer_frame_is_in_the_slot() -> None:
    source = ScriptedSource()
    with make_reader(source) as reader:
        assert not reader.waiting()
        source.push()
        wait_until(reader.waiting)
        assert reader.get(1) is not None and not reader.waiting()  # taken: none newer
        source.push()
        wait_until(reader.waiting)


def test_get_waits_for_a_frame_and_gives_none_after_its_timeout() -> None:
    source = ScriptedSource()
    with make_reader(source) as reader:
        wait_until(lambda: source.count("open") == 1)
        assert reader.get(0.02) is None
        threading.Timer(0.05, source.push).start()
        frame = reader.get(20)
        assert frame is not None and frame.index == 0


def test_last_frame_at_follows_the_injected_clock() -> None:
    clock = FakeClock()
    source = ScriptedSource()
    with make_reader(source, clock=clock) as reader:
        assert reader.last_frame_at is None or reader.last_frame_at == 100.0
        clock.now = 123.5
        source.push()
        wait_until(lambda: reader.frames == 1)
        assert reader.last_frame_at == 123.5


def test_a_lost_camera_is_reported_closed_and_reopened_with_capped_backoff() -> None:
    source = ScriptedSource()
    source.open_failures = []
    clock = FakeClock()
    delays = clock.waits
    recorder = Recorder()
    reader = make_reader(
        source, on_state=recorder, backoff_first_s=0.5, backoff_cap_s=3.0, clock=clock
    )
    with reader:
        source.push()
        wait_until(lambda: reader.frames == 1)
        source.open_failures = [CameraOpenError(f"camera busy {i}") for i in range(4)]
        source.fail(CameraLost("cable pulled"))
        wait_until(lambda: source.count("open") == 2)
        assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]  # after the loss, then 4 failed opens
        assert recorder.saw(False, "cable pulled")
        assert recorder.saw(False, "camera busy 3")
        assert recorder.states[-1] == (True, "scripted camera: open")
        source.push()
        wait_until(lambda: reader.frames == 2)
        source.fail(CameraLost("again"))
        wait_until(lambda: source.count("open") == 3)
        assert delays[-1] == 0.5  # a frame came in between: the back-off starts over
    assert reader.stats().reopens == 2
    events = source.events
    assert events.index("close") < events.index("open failed")  # closed before reopening


def test_a_live_source_silent_for_stall_timeout_is_lost() -> None:
    clock = FakeClock()
    source = ScriptedSource(live=True)
    recorder = Recorder()
    with make_reader(source, clock=clock, on_state=recorder, backoff_first_s=0.01):
        wait_until(lambda: source.count("open") == 1)
        clock.now += 2.9
        source.wait_for_reads()  # a few reads without frames, still within stall_timeout_s
        assert not recorder.saw(False)
        clock.now += 0.2
        wait_until(lambda: recorder.saw(False, "no frame for 3.1 s"))
        wait_until(lambda: source.count("open") == 2)


def test_a_stall_the_reader_notices_carries_the_sources_hint() -> None:
    """A CSI camera's silence reads "check the ribbon cable" whether its source or the reader
    notices first: the two clocks start a moment apart (at the last frame, at the next
    request)."""
    clock = FakeClock()
    source = ScriptedSource(live=True)
    source.stall_hint = "check the cable"
    recorder = Recorder()
    with make_reader(source, clock=clock, on_state=recorder, backoff_first_s=0.01):
        wait_until(lambda: source.count("open") == 1)
        clock.now += 3.1
        wait_until(lambda: recorder.saw(False, "no frame for 3.1 s (check the cable)"))


def test_a_replay_that_ended_is_not_a_fault() -> None:
    clock = FakeClock()
    source = ScriptedSource(live=False)
    recorder = Recorder()
    with make_reader(source, clock=clock, on_state=recorder) as reader:
        source.push()
        wait_until(lambda: reader.frames == 1)
        clock.now += 3600
        source.wait_for_reads()
        assert recorder.states == [(True, "scripted camera: open")]
        assert source.count("close") == 0


def test_an_unexpected_error_is_treated_as_a_loss_not_a_dead_thread() -> None:
    source = ScriptedSource()
    recorder = Recorder()
    with make_reader(source, on_state=recorder, backoff_first_s=0.01) as reader:
        source.fail(ValueError("driver surprise"))
        wait_until(lambda: recorder.saw(False, "driver surprise"))
        wait_until(lambda: source.count("open") == 2)
        source.push()
        wait_until(lambda: reader.frames == 1)


def test_a_failing_state_callback_does_not_stop_the_reader() -> None:
    source = ScriptedSource()

    def broken(ok: bool, message: str) -> None:
        raise RuntimeError("callback bug")

    with make_reader(source, on_state=broken) as reader:
        source.push()
        wait_until(lambda: reader.frames == 1)
        assert reader.get(1) is not None


def test_on_a_loss_the_source_is_closed_only_once_the_analysis_let_go_of_its_frame() -> None:
    source = ScriptedSource()
    recorder = Recorder()
    reader = make_reader(source, on_state=recorder, release_grace_s=60, backoff_first_s=0.01)
    with reader:
        source.push()
        held = reader.get(20)
        assert held is not None
        source.fail(CameraLost("gone"))
        wait_until(lambda: reader.awaiting_release, 20, "the reader to wait for frame 0")
        assert source.count("close") == 0  # the analysis still holds frame 0
        started = time.monotonic()
        held = reader.get(30)  # it comes back: its frame is released and it gets None at once
        assert held is None
        assert time.monotonic() - started < 20
        wait_until(lambda: source.count("close") == 1)
        events = source.events
        assert events.index("release 0") < events.index("close")
        # while the camera is away, a consumer holding nothing waits out its timeout
        wait_until(lambda: source.count("open") == 2)


def test_a_consumer_that_never_comes_back_delays_the_close_only_by_the_grace() -> None:
    source = ScriptedSource()
    recorder = Recorder()
    with make_reader(source, on_state=recorder, release_grace_s=0.05) as reader:
        source.push()
        assert reader.get(20) is not None
        source.fail(CameraLost("gone"))
        wait_until(lambda: source.count("close") == 1)


def test_stop_releases_everything_closes_the_source_and_ends_the_thread() -> None:
    source = ScriptedSource()
    reader = make_reader(source, backoff_first_s=30, backoff_cap_s=30)
    reader.start()
    source.push()
    wait_until(lambda: reader.frames == 1)
    held = reader.get(1)
    assert held is not None
    source.push()
    wait_until(lambda: reader.frames == 2)
    reader.stop()
    assert reader.get(0) is None
    assert source.count("release 0") == 1 and source.count("release 1") == 1
    assert source.events[-1] == "close"
    assert not any(t.name == "camera-reader" and t.is_alive() for t in threading.enumerate())


def test_stop_is_prompt_during_a_long_backoff() -> None:
    source = ScriptedSource()
    source.open_failures = [CameraOpenError("no camera")]
    reader = make_reader(source, backoff_first_s=60, backoff_cap_s=60)
    reader.start()
    wait_until(lambda: source.count("open failed") == 1)
    reader.stop(timeout=10)
    assert not any(t.name == "camera-reader" and t.is_alive() for t in threading.enumerate())
    assert source.events[-1] == "close"


def test_stats_before_anything_opened() -> None:
    reader = make_reader(ScriptedSource())
    stats = reader.stats()
    assert (stats.frames, stats.dropped, stats.ok, stats.last_frame_at) == (0, 0, False, None)
    assert reader.get(0) is None


@pytest.mark.parametrize("count", [1, 30])
def test_frames_are_never_queued(count: int) -> None:
    source = ScriptedSource()
    with make_reader(source) as reader:
        source.push(count)
        wait_until(lambda: reader.frames == count)
        got = [f.index for f in iter(lambda: reader.get(0.01), None)]
        assert got == [count - 1]


def test_start_and_stop_are_idempotent_and_a_stopped_reader_starts_again() -> None:
    source = ScriptedSource()
    reader = make_reader(source)
    reader.start()
    reader.start()  # no second thread
    wait_until(lambda: source.count("open") == 1, 20, "the open")
    assert sum(t.name == "camera-reader" and t.is_alive() for t in threading.enumerate()) == 1
    reader.stop(5)
    reader.stop(5)  # nothing left to stop
    assert source.count("close") == 1
    reader.start()  # again, as after a restart of the pipeline
    source.push()
    wait_until(lambda: reader.frames == 1, 20, "a frame after the restart")
    reader.stop(5)
    assert source.count("open") == 2 and source.count("close") == 2
