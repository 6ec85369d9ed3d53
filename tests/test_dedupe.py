"""De-duplication driven by frame timestamps: one read per appearance, repeats flagged."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ordoscan.classifier import Classified, Classifier, Kind
from ordoscan.config import ScanConfig
from ordoscan.decoder import Symbol
from ordoscan.dedupe import Deduper, Read
from ordoscan.errors import ConfigError

TIMEOUT, WINDOW = 1.5, 60.0
FPS = 15
EPU_A = "01S2TBPZ2JCNZZYGHZ"
EPU_B = "01ABCDEFGHJKLMNPQR"
CLF = Classifier(ScanConfig())


def item(text: str, fmt: str = "QRCode", sid: str = "]Q1") -> Classified:
    return CLF.classify(Symbol(fmt, sid, text, text.encode(), ()))


A, B = item(EPU_A), item(EPU_B)
INS = item("IS0112345678901234567890", "DataMatrix", "]d1")
URL = item("https://example.fr/")


def frames(
    d: Deduper, start: float, end: float, items: list[Classified], fps: float = FPS
) -> list[Read]:
    """Feed frames from start to end (exclusive) at fps, the same items in each."""
    reads: list[Read] = []
    n = round((end - start) * fps)
    for i in range(n):
        reads += d.update(start + i / fps, items)
    return reads


def test_kinds_of_fixtures() -> None:
    kinds = (A.kind, B.kind, INS.kind, URL.kind)
    assert kinds == (Kind.ORDONNANCE, Kind.ORDONNANCE, Kind.INS, Kind.URL)


def test_held_still_for_ten_seconds_is_one_read() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    reads = frames(d, 100.0, 110.0, [A])
    assert reads == [Read(A, repeat=False, timestamp=100.0)]


def test_gaps_shorter_than_the_timeout_keep_it_in_view() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(0.0, [A]) == [Read(A, False, 0.0)]
    # Seen every 1.4 s (missed frames, a hand moving): still the same appearance.
    for t in (1.4, 2.8, 4.2, 5.6):
        assert d.update(t - 0.7, []) == []
        assert d.update(t, [A]) == []


def test_leaving_view_then_back_within_window_is_a_repeat() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(0.0, [A]) == [Read(A, False, 0.0)]
    assert d.update(1.0, [A]) == []
    # Last seen at 1.0: back at 2.5 is exactly the timeout: it had left the view.
    reads = d.update(2.5, [A])
    assert reads == [Read(A, True, 2.5)]


def test_just_under_the_timeout_is_still_in_view() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    d.update(0.0, [A])
    assert d.update(1.49, [A]) == []


def test_repeat_window_counts_from_the_last_new_read() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(0.0, [A])[0].repeat is False
    # Shown again every 10 s: repeats while within 60 s of the read at 0 ...
    for t in (10.0, 20.0, 30.0, 40.0, 50.0, 58.0):
        (r,) = d.update(t, [A])
        assert r.repeat is True, t
    # ... new again once the window since the last *new* read has passed.
    (r,) = d.update(60.0, [A])
    assert r.repeat is False
    (r,) = d.update(70.0, [A])
    assert r.repeat is True


def test_held_past_the_window_is_still_one_read() -> None:
    d = Deduper(TIMEOUT, 5.0)
    reads = frames(d, 0.0, 20.0, [A])
    assert reads == [Read(A, False, 0.0)]


def test_zero_window_means_every_appearance_is_new() -> None:
    d = Deduper(TIMEOUT, 0.0)
    assert d.update(0.0, [A])[0].repeat is False
    assert d.update(2.0, [A])[0].repeat is False


def test_two_codes_are_independent() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(0.0, [A]) == [Read(A, False, 0.0)]
    assert d.update(0.5, [A, B]) == [Read(B, False, 0.5)]
    assert d.update(1.0, [B]) == []
    assert d.update(2.0, [B]) == []
    assert d.update(2.6, [A, B]) == [Read(A, True, 2.6)]  # A left the view, B did not


@pytest.mark.parametrize("refused", [INS, URL, item("0109506000134352", "DataMatrix", "]d2"),
                                     item("DC04FR000001", "DataMatrix", "]d1"), item("hello")])
def test_refused_kinds_one_read_per_appearance_never_repeat(refused: Classified) -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(0.0, [refused]) == [Read(refused, False, 0.0)]
    assert frames(d, 0.1, 3.0, [refused]) == []
    # Gone for longer than the timeout, shown again: a new refusal signal, not a repeat.
    (r,) = d.update(5.0, [refused])
    assert r.repeat is False and r.item == refused


def test_ins_beside_an_ordonnance_in_the_same_frame() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    reads = d.update(0.0, [INS, A])
    assert reads == [Read(INS, False, 0.0), Read(A, False, 0.0)]
    assert frames(d, 0.1, 5.0, [INS, A]) == []


def test_the_same_code_twice_in_a_frame_is_one_read() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(0.0, [A, A, INS, INS]) == [Read(A, False, 0.0), Read(INS, False, 0.0)]


def test_empty_frames_let_codes_leave_view() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    d.update(0.0, [A])
    frames(d, 0.1, 2.0, [])
    assert d.update(2.0, [A]) == [Read(A, True, 2.0)]


def test_time_going_backwards_is_no_time_passed() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(10.0, [A]) == [Read(A, False, 10.0)]
    # A clock step back: treated as 10.0, so A is still in view.
    assert d.update(3.0, [A]) == []
    assert d.update(3.0, [B]) == [Read(B, False, 10.0)]
    # Time moves on from 10.0, not from 3.0.
    assert d.update(11.0, [A]) == []
    assert d.update(12.6, [A]) == [Read(A, True, 12.6)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_timestamps_do_not_crash(bad: float) -> None:
    d = Deduper(TIMEOUT, WINDOW)
    assert d.update(bad, [A]) == [Read(A, False, 0.0)]
    assert d.update(5.0, [A]) == [Read(A, True, 5.0)]
    assert d.update(bad, [A]) == []


def test_forgets_codes_once_out_of_view_and_past_the_window() -> None:
    d = Deduper(TIMEOUT, WINDOW)
    d.update(0.0, [A, INS, URL])
    assert len(d) == 3
    d.update(1.6, [])
    # Refused kinds are forgotten as soon as they left the view; the ordonnance
    # is kept for its repeat window only.
    assert len(d) == 1
    d.update(59.9, [])
    assert len(d) == 1
    d.update(60.0, [])
    assert len(d) == 0
    # And nothing of the payload is anywhere in the object any more.
    assert EPU_A not in repr(vars(d))


def test_a_held_code_is_not_forgotten_however_long() -> None:
    d = Deduper(TIMEOUT, 2.0)
    assert frames(d, 0.0, 30.0, [A], fps=5) == [Read(A, False, 0.0)]
    assert len(d) == 1


def test_memory_is_bounded_under_a_flood_of_distinct_codes() -> None:
    d = Deduper(TIMEOUT, WINDOW, max_entries=100)
    t = 0.0
    for i in range(5000):
        code = dataclasses.replace(A, payload=f"01{i:016d}", key=f"01{i:016d}")
        t += 0.01
        assert len(d.update(t, [code, A])) in (1, 2)
        assert len(d) <= 100
    # The code kept in view through the flood was never re-read.
    assert d.update(t + 0.01, [A]) == []


def test_parameters_are_checked() -> None:
    with pytest.raises(ConfigError, match="same_code_timeout_s"):
        Deduper(0, WINDOW)
    with pytest.raises(ConfigError, match="same_code_timeout_s"):
        Deduper(float("nan"), WINDOW)
    with pytest.raises(ConfigError, match="repeat_window_s"):
        Deduper(TIMEOUT, -1)
    with pytest.raises(ConfigError, match="max_entries"):
        Deduper(TIMEOUT, WINDOW, max_entries=0)


# --- a model of the rules, checked against the implementation --------------


@st.composite
def scenarios(draw: st.DrawFn) -> list[tuple[float, list[int]]]:
    steps = draw(st.lists(st.tuples(st.floats(-1.0, 5.0), st.lists(st.integers(0, 3), max_size=4)),
                          max_size=60))
    t, out = 0.0, []
    for dt, codes in steps:
        t += dt  # dt < 0 now and then: a clock going backwards
        out.append((t, codes))
    return out


POOL = [A, B, INS, URL]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(scenarios(), st.floats(0.1, 3.0), st.floats(0.0, 20.0))
def test_matches_a_plain_model(
    scn: list[tuple[float, list[int]]], timeout: float, window: float
) -> None:
    d = Deduper(timeout, window)
    last_seen: dict[str, float] = {}
    last_new: dict[str, float] = {}
    now = None
    for ts, idx in scn:
        now = ts if now is None else max(now, ts)
        expected: list[Read] = []
        seen_now: set[str] = set()
        for i in idx:
            it = POOL[i]
            if it.key in seen_now:
                continue
            seen_now.add(it.key)
            prev = last_seen.get(it.key)
            last_seen[it.key] = now
            if prev is not None and now - prev < timeout:
                continue
            ordo = it.kind is Kind.ORDONNANCE
            repeat = ordo and it.key in last_new and now - last_new[it.key] < window
            if it.kind is Kind.ORDONNANCE and not repeat:
                last_new[it.key] = now
            expected.append(Read(it, repeat, now))
        assert d.update(ts, [POOL[i] for i in idx]) == expected
        assert len(d) <= len(POOL)
