"""The presentations bench's virtual camera (tests/bench/lockstep.py): its timeline, and the
real-time wait for the kiosk's signals before each presentation."""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.bench.lockstep import LockstepCamera


def test_settle_is_waited_for_before_each_presentation_off_the_timeline() -> None:
    commits = [0]
    handed: list[int] = []  # frame ids, in the order the scan loop had them
    settled: list[int] = []  # how many frames had been handed over at each settle()

    def settle() -> None:
        settled.append(len(handed))
        time.sleep(0.05)  # real time: the timeline must not move on for it

    start = threading.Event()
    start.set()
    frames = np.arange(8, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    cam = LockstepCamera(frames, [range(1, 4), range(4, 7)], gap=2, fps=15, start=start,
                         committed=lambda: commits[0], settle=settle)
    cam.open()
    while (frame := cam.read(1.0)) is not None:
        handed.append(int(frame.image[0, 0]))
        if handed[-1] == 2:
            commits[0] += 1  # read on the presentation's second frame: the hand goes away
        cam.on_frame()
    # presentation 0 read on its second frame, then the gap; presentation 1 never read
    assert handed == [1, 2, 0, 0, 4, 5, 6, 0, 0]
    assert settled == [0, 4]  # once before each presentation's first frame
    assert [n for n, *_ in cam.trace] == list(range(9))  # no frame skipped for the waits


def _burn(seconds: float) -> None:
    """This thread's CPU time, spent."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_scan_stored_within_a_turn_is_read_then_and_the_hand_leaves_after_the_turn() -> None:
    """The App commits an ordonnance as soon as the decoder reads it (its on_stored observer,
    stored()): the presentation's time is that moment of the turn, not the turn's end; the
    hand still goes away after the turn (the gap starts at the next frame)."""
    commits = [0]
    start = threading.Event()
    start.set()
    frames = np.arange(8, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    cam = LockstepCamera(frames, [range(1, 4)], gap=2, fps=15, start=start,
                         committed=lambda: commits[0])
    cam.open()
    handed: list[int] = []
    while (frame := cam.read(1.0)) is not None:
        handed.append(int(frame.image[0, 0]))
        _burn(0.01)
        if handed[-1] == 2:
            commits[0] += 1
            cam.stored()  # committed a third of the way into the turn
        _burn(0.02)
        cam.on_frame()
    assert handed == [1, 2, 0, 0]
    p = cam.shown[0]
    n, _, taken, turn = cam.trace[1]
    assert p.read_frame == n
    assert p.read_at is not None and taken + 0.01 <= p.read_at <= taken + turn - 0.015
