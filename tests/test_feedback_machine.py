"""The feedback state machine alone: events and a clock in, levels out; no threads, no pins."""

from __future__ import annotations

import math

import pytest
from ordoscan.feedback import (
    BEEP_S,
    DIP_GAP_S,
    FAULT_BEEP_S,
    FAULT_BLINK_S,
    FAULT_GAP_S,
    FAULT_HZ,
    FAULT_REBEEP_S,
    FAULT_SOUND,
    GOOD_READ_DIP_S,
    GOOD_READ_HZ,
    GOOD_READ_SOUND,
    IDENTIFY_BLINK_S,
    IDENTIFY_S,
    MAX_SOUND_DELAY_S,
    READY_GAP_S,
    READY_HZ,
    READY_NOTE_S,
    READY_SOUND,
    REFUSED_GAP_S,
    REFUSED_HZ,
    REFUSED_RED_S,
    REFUSED_SOUND,
    SOUND_GAP_S,
    Outputs,
    StateMachine,
)

Timeline = list[tuple[float, object]]
T0 = 1000.0  # any clock origin: monotonic clocks do not start at 0


def changes(m: StateMachine, start: float, until: float) -> list[tuple[float, Outputs]]:
    """Every change of the outputs from start to until, stepping edge to edge like the worker."""
    t = start
    seen = [(t, m.outputs(t))]
    while (edge := m.next_change(t)) is not None and edge <= until:
        assert edge > t, "an edge must lie ahead, or the worker would spin"
        t = edge
        out = m.outputs(t)
        if out != seen[-1][1]:
            seen.append((t, out))
    return seen


def channel(seen: list[tuple[float, Outputs]], name: str, origin: float) -> Timeline:
    """One channel's changes, times relative to origin, rounded to the microsecond."""
    result: list[tuple[float, object]] = []
    for t, out in seen:
        value = out.tone if name == "tone" else getattr(out, name)
        if not result or result[-1][1] != value:
            result.append((round(t - origin, 6), value))
    return result


def ready_machine() -> StateMachine:
    m = StateMachine()
    m.start(T0 - 10)
    m.ready(T0 - 5)
    assert m.next_change(T0) is None, "a ready kiosk has nothing timed left"
    return m


def test_before_start_everything_is_off() -> None:
    m = StateMachine()
    assert m.outputs(T0) == Outputs()
    assert m.next_change(T0) is None


def test_booting_all_on_then_ready_green_and_three_rising_notes() -> None:
    m = StateMachine()
    m.start(T0)
    assert m.outputs(T0) == Outputs(green=True, amber=True, red=True)
    m.ready(T0 + 1)
    seen = changes(m, T0 + 1, T0 + 5)
    assert seen[-1][1] == Outputs(green=True)
    assert channel(seen, "amber", T0 + 1) == [(0.0, False)]
    assert channel(seen, "green", T0 + 1) == [(0.0, True)]
    n, g = READY_NOTE_S, READY_GAP_S
    assert channel(seen, "tone", T0 + 1) == [
        (0.0, READY_HZ[0]), (n, None),
        (n + g, READY_HZ[1]), (2 * n + g, None),
        (2 * (n + g), READY_HZ[2]), (3 * n + 2 * g, None),
    ]
    assert READY_HZ[0] < READY_HZ[1] < READY_HZ[2]


def test_ready_chimes_once() -> None:
    m = ready_machine()
    m.ready(T0)
    assert m.outputs(T0).tone is None and m.next_change(T0) is None


@pytest.mark.parametrize("event", ["good_read", "repeat"])
def test_good_read_and_repeat_dip_green_and_beep(event: str) -> None:
    m = ready_machine()
    getattr(m, event)(T0)
    seen = changes(m, T0, T0 + 5)
    assert channel(seen, "green", T0) == [(0.0, False), (GOOD_READ_DIP_S, True)]
    assert channel(seen, "tone", T0) == [(0.0, GOOD_READ_HZ), (BEEP_S, None)]
    assert channel(seen, "red", T0) == [(0.0, False)]


def test_two_good_reads_close_together_dip_green_twice() -> None:
    """Two ordonnances read in consecutive frames (15 fps): two blinks beside the two beeps,
    the second after the first with green on between them, not one longer dip."""
    m = ready_machine()
    m.good_read(T0)
    m.good_read(T0 + 0.067)
    seen = changes(m, T0, T0 + 5)
    second = GOOD_READ_DIP_S + DIP_GAP_S
    assert channel(seen, "green", T0) == [
        (0.0, False), (GOOD_READ_DIP_S, True),
        (second, False), (round(second + GOOD_READ_DIP_S, 6), True),
    ]
    beeps = [t for t, v in channel(seen, "tone", T0) if v is not None]
    assert beeps == [0.0, round(BEEP_S + SOUND_GAP_S, 6)]


def test_a_good_read_after_a_dip_waits_for_green_to_show_again() -> None:
    m = ready_machine()
    m.good_read(T0)
    m.good_read(T0 + GOOD_READ_DIP_S + 0.01)  # 10 ms after the first dip ended: no flicker
    seen = changes(m, T0, T0 + 5)
    second = GOOD_READ_DIP_S + DIP_GAP_S
    assert channel(seen, "green", T0)[2:] == [
        (second, False), (round(second + GOOD_READ_DIP_S, 6), True)]
    m.good_read(T0 + 2)  # long after: at once
    assert channel(changes(m, T0 + 2, T0 + 5), "green", T0 + 2) == [
        (0.0, False), (GOOD_READ_DIP_S, True)]


def test_a_dip_that_would_start_too_late_is_skipped() -> None:
    m = ready_machine()
    for i in range(50):
        m.good_read(T0 + i * 0.001)
    seen = changes(m, T0, T0 + 30)
    dips = [t for t, v in channel(seen, "green", T0) if v is False]
    slot = GOOD_READ_DIP_S + DIP_GAP_S
    assert len(dips) == math.floor(MAX_SOUND_DELAY_S / slot) + 1
    assert max(dips) <= MAX_SOUND_DELAY_S + 0.05
    assert seen[-1][1] == Outputs(green=True)


def test_refused_red_one_second_and_two_low_beeps() -> None:
    m = ready_machine()
    m.refused(T0)
    seen = changes(m, T0, T0 + 5)
    assert channel(seen, "red", T0) == [(0.0, True), (REFUSED_RED_S, False)]
    assert channel(seen, "green", T0) == [(0.0, True)]
    assert channel(seen, "tone", T0) == [
        (0.0, REFUSED_HZ), (BEEP_S, None), (BEEP_S + REFUSED_GAP_S, REFUSED_HZ),
        (2 * BEEP_S + REFUSED_GAP_S, None),
    ]
    assert REFUSED_HZ < GOOD_READ_HZ


def test_queued_amber_beside_green() -> None:
    m = ready_machine()
    m.set_queued(True, T0)
    assert m.outputs(T0) == Outputs(green=True, amber=True)
    assert m.next_change(T0) is None
    m.set_queued(False, T0 + 1)
    assert m.outputs(T0 + 1) == Outputs(green=True)


def test_fault_blinks_red_and_beeps_four_low_beeps_once() -> None:
    m = ready_machine()
    m.set_fault("camera", True, T0)
    seen = changes(m, T0, T0 + 3.2)
    b = FAULT_BLINK_S
    assert channel(seen, "red", T0) == [
        (0.0, True), (b, False), (2 * b, True), (3 * b, False),
        (4 * b, True), (5 * b, False), (6 * b, True),
    ]
    expected_tone: list[tuple[float, object]] = []
    for i in range(4):
        start = i * (FAULT_BEEP_S + FAULT_GAP_S)
        expected_tone += [(round(start, 6), FAULT_HZ), (round(start + FAULT_BEEP_S, 6), None)]
    assert channel(seen, "tone", T0) == expected_tone
    assert FAULT_HZ < REFUSED_HZ
    # the same fault reported again: no new beeps, the blinking goes on
    m.set_fault("camera", True, T0 + 3.3)
    assert all(out.tone is None for _, out in changes(m, T0 + 3.3, T0 + 6))
    assert m.next_change(T0 + 6) is not None, "a blinking fault keeps the worker waking"
    m.set_fault("camera", False, T0 + 6.1)
    assert m.outputs(T0 + 6.1) == Outputs(green=True)
    assert m.next_change(T0 + 6.1) is None


def test_red_blinks_while_any_fault_is_active() -> None:
    m = ready_machine()
    m.set_fault("camera", True, T0)
    m.set_fault("disk", True, T0 + 2)
    m.set_fault("camera", False, T0 + 4)
    assert m.faults == {"disk"}
    assert m.outputs(T0 + 4.1).red and not m.outputs(T0 + 4.6).red
    m.set_fault("disk", False, T0 + 5)
    assert not m.outputs(T0 + 5.1).red and m.next_change(T0 + 5.1) is None


def test_a_new_fault_beeps_a_flapping_one_does_not() -> None:
    m = ready_machine()
    m.set_fault("camera", True, T0)
    m.set_fault("outbox_full", True, T0 + 5)  # another fault begins: it beeps
    assert m.outputs(T0 + 5).tone == FAULT_HZ
    m.set_fault("camera", False, T0 + 10)
    m.set_fault("camera", True, T0 + 11)  # the camera again, soon after: red shows it, silence
    assert m.outputs(T0 + 11).tone is None
    m.set_fault("camera", False, T0 + 12)
    m.set_fault("camera", True, T0 + FAULT_REBEEP_S + 1)
    assert m.outputs(T0 + FAULT_REBEEP_S + 1).tone == FAULT_HZ


def test_refusal_during_a_fault_then_back_to_blinking_in_phase() -> None:
    m = ready_machine()
    m.set_fault("camera", True, T0)
    m.refused(T0 + 10.2)  # red is off in the blink at +10.5 .. +11.0; the refusal holds it on
    for dt in (0.0, 0.4, 0.6, 0.99):
        assert m.outputs(T0 + 10.2 + dt).red, dt
    after = T0 + 10.2 + REFUSED_RED_S  # = +11.2: the blinking resumes where its phase is (on)
    assert m.outputs(after + 0.01).red
    assert not m.outputs(after + 0.35).red  # +11.55: the off half of the cycle
    assert m.outputs(after + 0.85).red


def test_good_read_during_a_fault_still_dips_green_and_beeps() -> None:
    m = ready_machine()
    m.set_fault("disk", True, T0)
    start = T0 + 5.1
    m.good_read(start)
    seen = changes(m, start, start + 1.0)
    assert channel(seen, "green", start) == [(0.0, False), (GOOD_READ_DIP_S, True)]
    assert channel(seen, "tone", start) == [(0.0, GOOD_READ_HZ), (BEEP_S, None)]
    assert channel(seen, "red", start) == [(0.0, True), (0.4, False), (0.9, True)]


def test_refusal_when_no_fault_returns_to_off() -> None:
    m = ready_machine()
    m.refused(T0)
    assert not m.outputs(T0 + REFUSED_RED_S + 0.01).red


def test_identify_overlays_everything_then_gives_the_state_back() -> None:
    m = ready_machine()
    m.set_queued(True, T0 - 1)
    m.set_fault("camera", True, T0 - 1)
    m.identify(10.0, T0)
    for k in range(40):  # 10 s of 0.25 s halves, all three LEDs together
        t = T0 + k * IDENTIFY_BLINK_S + 0.1
        lit = k % 2 == 0
        out = m.outputs(t)
        assert (out.green, out.amber, out.red) == (lit, lit, lit), k
    m.refused(T0 + 3.3)  # refused during identify: still identify on the LEDs, the beeps sound
    assert m.outputs(T0 + 3.3).tone == REFUSED_HZ
    assert not m.outputs(T0 + 3.3).red  # 3.3 s is in an off half of the identify blink
    after = T0 + 10.0
    out = m.outputs(after + 0.1)  # back to queued (amber) beside green, red blinking for the fault
    assert out.green and out.amber and out.red
    assert not m.outputs(after + 0.6).red


def test_identify_zero_stops_it() -> None:
    m = ready_machine()
    m.identify(10.0, T0)
    m.identify(0.0, T0 + 1.1)
    assert m.outputs(T0 + 1.1) == Outputs(green=True)
    assert m.next_change(T0 + 1.1) is None


def test_identify_ends_when_asked() -> None:
    m = ready_machine()
    m.identify(2.0, T0)
    seen = changes(m, T0, T0 + 20)
    assert seen[-1] == (pytest.approx(T0 + 2.0), Outputs(green=True))


def test_sounds_play_one_after_the_other() -> None:
    m = ready_machine()
    m.refused(T0)
    m.good_read(T0 + 0.01)  # asked while the refusal beeps: it waits its turn
    seen = changes(m, T0 + 0.01, T0 + 5)
    refused_end = 2 * BEEP_S + REFUSED_GAP_S
    assert channel(seen, "tone", T0) == [
        (0.01, REFUSED_HZ), (BEEP_S, None),
        (BEEP_S + REFUSED_GAP_S, REFUSED_HZ), (refused_end, None),
        (round(refused_end + SOUND_GAP_S, 6), GOOD_READ_HZ),
        (round(refused_end + SOUND_GAP_S + BEEP_S, 6), None),
    ]
    # the green dip does not wait for the buzzer
    assert channel(seen, "green", T0) == [(0.01, False), (0.01 + GOOD_READ_DIP_S, True)]


def test_a_sound_that_would_start_too_late_is_skipped() -> None:
    m = ready_machine()
    for i in range(50):
        m.good_read(T0 + i * 0.001)
    seen = changes(m, T0, T0 + 30)
    beeps = [t for t, v in channel(seen, "tone", T0) if v is not None]
    slot = BEEP_S + SOUND_GAP_S
    assert len(beeps) == math.floor(MAX_SOUND_DELAY_S / slot) + 1
    assert max(beeps) <= MAX_SOUND_DELAY_S + 0.05


def test_a_fault_during_booting_blinks_red() -> None:
    m = StateMachine()
    m.start(T0)
    m.set_fault("camera", True, T0 + 1)
    assert m.outputs(T0 + 1.1) == Outputs(green=True, amber=True, red=True, tone=FAULT_HZ)
    assert not m.outputs(T0 + 1.6).red


def test_next_change_is_always_ahead_even_on_an_edge() -> None:
    m = ready_machine()
    m.set_fault("camera", True, T0)
    t = T0
    for _ in range(200):  # landing exactly on edges, as a frozen test clock would
        edge = m.next_change(t)
        assert edge is not None and edge > t
        t = edge


def test_timings_are_those_of_the_spec() -> None:
    """SPEC §4 in numbers: the other tests use the constants, this pins the constants down."""
    assert GOOD_READ_DIP_S == 0.15
    assert pytest.approx(0.08, abs=0.02) == BEEP_S
    assert REFUSED_RED_S == 1.0
    assert IDENTIFY_S == 10.0
    assert len(READY_SOUND) == 3 and len(GOOD_READ_SOUND) == 1
    assert len(REFUSED_SOUND) == 2 and len(FAULT_SOUND) == 4
    notes = (*READY_SOUND, *GOOD_READ_SOUND, *REFUSED_SOUND, *FAULT_SOUND)
    assert all(n.on_s <= 0.2 for n in notes)  # short beeps, all of them
