"""The decoder on a camera stream: extra passes go to the newest frame (Decoder.decode's newer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from ordoscan.classifier import Kind
from ordoscan.decoder import MAX_REUSE, Decoder
from ordoscan.devtools.scenes import render

from tests.test_decoder import EPU, blank, code, counter_views, frame_with, unreadable


def hard_scene() -> tuple[np.ndarray, str]:
    """A small blurred ordonnance only the extra passes read (see test_decoder)."""
    scene = render("ordonnance", 700151, difficulty="hard")
    return scene.image, next(p for k, p in scene.truth if k is Kind.ORDONNANCE)


def texts(decoder: Decoder, frame: np.ndarray, newer: bool | None) -> list[str]:
    waits = None if newer is None else (lambda: newer)
    return [s.text for s in decoder.decode(frame, newer=waits)]


def test_with_no_newer_frame_the_passes_run_on_the_frame_itself() -> None:
    image, epu = hard_scene()
    for newer in (None, False):
        decoder = Decoder(budget_ms=10_000)
        assert epu in texts(decoder, image, newer)
        s = decoder.stats()
        assert s.handed_on == 0 and s.extra_passes > 0


def test_a_newer_frame_waiting_gets_the_passes_after_its_own_fast_pass() -> None:
    image, epu = hard_scene()
    decoder = Decoder(budget_ms=10_000)
    assert texts(decoder, image, True) == []  # a newer frame waits: no search, no pass here
    s = decoder.stats()
    assert (s.hard_frames, s.handed_on, s.searches_handed_on, s.extra_passes) == (0, 0, 1, 0)
    # the next frame searches (never two searches in a row left to a newer frame), and
    # hands its passes on
    assert texts(decoder, image, True) == []
    s = decoder.stats()
    assert (s.hard_frames, s.handed_on, s.searches_handed_on, s.extra_passes) == (1, 1, 1, 0)
    # the next (newer) frame runs the handed passes, whatever waits by then
    assert epu in texts(decoder, image, True)
    s = decoder.stats()
    assert (s.hard_frames, s.handed_on) == (2, 1) and s.extra_passes > 0


def test_without_a_newer_frame_waiting_every_frame_searches() -> None:
    image, epu = hard_scene()
    decoder = Decoder(budget_ms=10_000)
    assert epu in texts(decoder, image, False)
    assert decoder.stats().searches_handed_on == 0


def test_handed_passes_are_dropped_once_a_frame_reads_or_they_have_run() -> None:
    image, _ = hard_scene()
    easy = frame_with((code(EPU), 40, 40))
    decoder = Decoder(budget_ms=10_000)
    texts(decoder, image, True)
    assert texts(decoder, easy, True) == [EPU]  # read by its fast pass: nothing else runs
    passes = decoder.stats().extra_passes
    assert passes == 0
    for frame in counter_views().values():  # blank views after it: no pass left over
        assert texts(decoder, frame, True) == []
    s = decoder.stats()
    assert s.extra_passes == passes and s.handed_on == 0
    # a newer frame always waiting: the first frame left its search on, then every other
    # blank view searches (the read in between searched nothing)
    assert s.searches_handed_on == 1 + (len(counter_views()) + 1) // 2


def test_a_code_detected_on_every_frame_still_gets_its_passes_when_always_behind() -> None:
    """A symbol zxing-cpp detects but cannot decode, a newer frame always waiting: every
    other frame runs the passes the one before handed on, never a search of its own."""
    decoder = Decoder(budget_ms=10_000, duty=None)
    for _ in range(6):
        texts(decoder, unreadable(), True)
    s = decoder.stats()
    assert (s.hard_frames, s.handed_on) == (6, 3) and s.extra_passes > 0


def test_a_still_view_takes_the_last_search_for_a_few_frames_then_searches_anew() -> None:
    """The same view again (a code held still): the last search's regions stand for its
    own, MAX_REUSE frames in a row at most; the code is read on each frame all the same."""
    image, epu = hard_scene()
    # 1000 fps: a core too slow to search a frame before the next (see the test below)
    decoder = Decoder(budget_ms=10_000, duty=None, fps=1000)
    for _ in range(2 + MAX_REUSE):
        assert epu in texts(decoder, image, False)
    s = decoder.stats()
    # frame 1 searched, the next MAX_REUSE took its search, the last one searched anew
    assert s.searches_reused == MAX_REUSE and s.hard_frames == 2 + MAX_REUSE
    # a view that moved (the code elsewhere): left unsearched while in motion, then searched
    # anew (the last search's regions no longer hold), and read there
    moved = np.roll(image, (60, 90), axis=(0, 1))
    assert texts(decoder, moved, False) == []
    assert epu in texts(decoder, moved, False)
    s = decoder.stats()
    assert (s.searches_reused, s.searches_moving) == (MAX_REUSE, 1)


def test_on_a_stream_a_view_in_motion_is_not_searched() -> None:
    """On a core too slow to search a frame before the next is due (1000 fps here), a frame
    of a stream that differs much from the last (a page brought in): no search, no pass;
    the next frame of the view at rest gets them. A core with the time searches it; still
    images (no `newer`) are each searched, whatever came before."""
    image, epu = hard_scene()
    blank_view = np.full(image.shape, 140, np.uint8)
    decoder = Decoder(budget_ms=10_000, duty=None, fps=1000)
    assert texts(decoder, blank_view, False) == []
    assert texts(decoder, image, False) == []  # moved in: left unsearched
    s = decoder.stats()
    assert (s.searches_moving, s.hard_frames, s.extra_passes) == (1, 0, 0)
    assert epu in texts(decoder, image, False)  # at rest: searched, read
    assert decoder.stats().searches_moving == 1
    fast_core = Decoder(budget_ms=10_000, duty=None, fps=0.01)  # 100 s to the next frame
    assert texts(fast_core, blank_view, False) == []
    assert epu in texts(fast_core, image, False)
    still_images = Decoder(budget_ms=10_000, duty=None, fps=1000)
    assert texts(still_images, blank_view, None) == []
    assert epu in texts(still_images, image, None)
    assert fast_core.stats().searches_moving == still_images.stats().searches_moving == 0


def test_the_search_cost_is_learnt_as_a_pass_cost_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a view in motion is searched before the next frame is due goes by the
    search's learnt cost, learnt as a pass's is: the first search's cost as it is, then a
    moving average (COST_WEIGHT of each new one). A core that slows down from 30 to 100 ms a
    search (15 fps: 67 ms a frame) stops searching moving views four searches later."""
    import ordoscan.decoder as dec

    now = [1000.0]  # the clock moves only while the search looks for finder patterns
    cost_ms = [30.0]
    real = dec.new_guesses

    def dear(frame: Any, known: Any, *rest: Any) -> Any:
        now[0] += cost_ms[0] / 1000.0
        return real(frame, known, *rest)

    monkeypatch.setattr(dec, "new_guesses", dear)
    decoder = Decoder(budget_ms=10_000, duty=None, fps=15, clock=lambda: now[0])
    views = [np.full((360, 640), level, np.uint8) for level in (80, 170)]  # each moved
    skipped = []
    for i in range(8):
        texts(decoder, views[i % 2], False)
        cost_ms[0] = 100.0
        skipped.append(decoder.stats().searches_moving)
    # estimates 30, 44, 55.2, 64.2, 71.3 ms: the sixth frame is left unsearched
    assert skipped[:6] == [0, 0, 0, 0, 0, 1]


def extra_passes_run(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The extra passes run (by name), a list per frame: append one before each frame."""
    import ordoscan.decoder as dec
    from ordoscan.decoder import FAST_PASSES

    fast = {p.name for p in FAST_PASSES}
    ran: list[list[str]] = []
    real = dec.run_pass

    def spy(p: Any, *args: Any, **kwargs: Any) -> Any:
        if p.name not in fast:
            ran[-1].append(p.name)
        return real(p, *args, **kwargs)

    monkeypatch.setattr(dec, "run_pass", spy)
    return ran


def test_on_a_stream_the_passes_that_read_nothing_make_way_for_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A code detected but unreadable, a budget with room for a few extra passes a frame:
    frame after frame a stream gets the passes not yet tried on the region first (a slow
    core would otherwise give the same first few every frame); still images (no stream)
    get the same first passes every time. A read forgets the history."""
    from ordoscan.decoder import TRIED_FRAMES

    from tests.test_decoder import TickClock

    ran = extra_passes_run(monkeypatch)
    step = 5.0
    distinct = {}
    for newer in (None, False):
        decoder = Decoder(budget_ms=5 * step, clock=TickClock(step), duty=None)
        ran.clear()
        for _ in range(TRIED_FRAMES + 2):  # (the first frame learns the passes' costs)
            ran.append([])
            assert texts(decoder, unreadable(), newer) == []
        frames = ran[1:]
        assert all(frames) and all(len(f) < 6 for f in frames)  # a few passes a frame
        distinct[newer] = {name for f in frames for name in f}
        if newer is None:
            assert all(f == frames[0] for f in frames)
        else:
            # until every pass has run once, none runs twice
            first = frames[:TRIED_FRAMES]
            assert len({name for f in first for name in f}) == sum(map(len, first)), frames
    assert len(distinct[False]) >= 2 * len(distinct[None])
    assert len(decoder._tried) == TRIED_FRAMES and all(decoder._tried)
    decoder.decode(frame_with((code(EPU), 50, 50)), newer=lambda: False)
    assert not decoder._tried
    # nor does the history outlast a view with nothing in it
    for _ in range(2):
        texts(decoder, unreadable(), False)
    assert decoder._tried
    assert texts(decoder, blank(), False) == [] and not decoder._tried


def test_the_passes_a_frame_ran_for_the_one_before_it_are_remembered_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newer frame always waiting (a slow core): every other frame runs the passes the
    frame before it handed on. Those that read nothing there make way for the others on
    the next such frame, as on a frame that searched itself; without that, a slow core gave
    a code held still the same first few passes every other frame."""
    from ordoscan.decoder import TRIED_FRAMES

    from tests.test_decoder import TickClock

    ran = extra_passes_run(monkeypatch)
    step = 5.0
    decoder = Decoder(budget_ms=5 * step, clock=TickClock(step), duty=None)
    for _ in range(2 * (TRIED_FRAMES + 2)):
        ran.append([])
        assert texts(decoder, unreadable(), True) == []
    s = decoder.stats()
    assert s.handed_on == TRIED_FRAMES + 2  # every other frame searched and handed on
    running = [f for f in ran if f]  # the frames that ran them
    assert len(running) == TRIED_FRAMES + 2
    later = running[1:]  # (the first learns the passes' costs)
    assert all(len(f) < 6 for f in later)  # a few passes a frame
    # until every pass has run once, none runs twice
    first = later[:TRIED_FRAMES]
    assert len({name for f in first for name in f}) == sum(map(len, first)), running
    assert len(decoder._tried) == TRIED_FRAMES and all(decoder._tried)
