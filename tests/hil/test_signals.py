"""The trace decoder against the real feedback state machine, on a simulated clock.

feedback.StateMachine is what the daemon's feedback worker applies; here it
is driven by a script of events and sampled at every edge it announces, as
the worker does, so the decoder is checked against the real timings.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ordoscan.feedback import StateMachine

from tests.hil.signals import Change, decode, matches, parse_expectation, summary

Step = tuple[float, Callable[[StateMachine, float], None]]


def simulate(script: list[Step], until: float, jitter: float = 0.0) -> list[Change]:
    """The pin changes the feedback worker would make for this script (plus a start marker).

    jitter delays every write by that much, as a busy machine would."""
    m = StateMachine()
    changes = [Change.marker(0.0, "start")]
    levels = {"green": False, "amber": False, "red": False, "buzzer": False}
    pending = sorted(script, key=lambda s: s[0])
    now = 0.0
    while now <= until:
        while pending and pending[0][0] <= now + 1e-9:
            pending.pop(0)[1](m, now)
        for name, on in m.outputs(now).as_dict().items():
            if levels[name] != on:
                levels[name] = on
                changes.append(Change(now + jitter, name, on))
        edges = [e for e in (m.next_change(now), pending[0][0] if pending else None) if e]
        if not edges:
            break
        now = max(min(edges), now + 0.001)
    return changes


def tokens(changes: list[Change], until: float) -> list[str]:
    return [e.token for e in decode(changes, until)]


BOOT: list[Step] = [(0.0, lambda m, t: m.start(t)), (0.05, lambda m, t: m.ready(t))]


def test_boot_and_good_reads() -> None:
    script = [*BOOT, (1.0, lambda m, t: m.good_read(t)), (3.0, lambda m, t: m.repeat(t))]
    assert tokens(simulate(script, 6.0), 6.0) == ["ready(3)", "good_read(1)", "good_read(1)"]


def test_good_read_during_the_ready_tune_gets_its_beep_late() -> None:
    script = [*BOOT, (0.1, lambda m, t: m.good_read(t))]
    events = decode(simulate(script, 3.0), 3.0)
    assert [e.token for e in events] == ["ready(3)", "good_read(1)"]


def test_a_good_read_in_the_same_instant_as_ready() -> None:
    # the worker took both events in one turn: green never shows steady before the dip
    script = [*BOOT, (0.05, lambda m, t: m.good_read(t))]
    assert tokens(simulate(script, 3.0), 3.0) == ["ready(3)", "good_read(1)"]


def test_a_good_read_just_after_ready_in_the_same_burst_of_writes() -> None:
    # as seen from a daemon restarted with a code in view: all on, ready 4 ms later, the
    # good-read dip 18 ms after that (closer than one burst of writes)
    changes = [Change.marker(0.0, "start")]
    changes += [Change(0.794, ch, True) for ch in ("green", "amber", "red")]
    changes += [Change(0.798, "amber", False), Change(0.798, "red", False)]
    changes += [Change(0.798, "buzzer", True), Change(0.816, "green", False)]
    changes += [Change(0.918, "buzzer", False), Change(0.966, "green", True)]
    for start in (0.978, 1.158, 1.378):
        changes += [Change(start, "buzzer", True), Change(start + 0.1, "buzzer", False)]
    events = decode(changes, 3.0)
    assert [(e.token, e.t) for e in events] == [("ready(3)", 0.798), ("good_read(1)", 0.816)]


def test_refused_and_fault_with_recovery() -> None:
    script = [
        *BOOT,
        (1.0, lambda m, t: m.refused(t)),
        (4.0, lambda m, t: m.set_fault("camera", True, t)),
        (7.2, lambda m, t: m.set_fault("camera", False, t)),
        (9.0, lambda m, t: m.good_read(t)),
    ]
    got = tokens(simulate(script, 11.0), 11.0)
    assert got == ["ready(3)", "refused(2)", "fault(4)", "ready", "good_read(1)"]


def test_fault_still_active_has_no_ready_yet() -> None:
    script = [*BOOT, (1.0, lambda m, t: m.set_fault("disk", True, t))]
    assert tokens(simulate(script, 5.0), 5.0) == ["ready(3)", "fault(4)"]


def test_refusal_during_a_fault_and_good_read_during_a_fault() -> None:
    script = [
        *BOOT,
        (1.0, lambda m, t: m.set_fault("camera", True, t)),
        (3.3, lambda m, t: m.refused(t)),
        (6.0, lambda m, t: m.good_read(t)),
        (8.0, lambda m, t: m.set_fault("camera", False, t)),
    ]
    got = tokens(simulate(script, 10.0), 10.0)
    assert got == ["ready(3)", "fault(4)", "refused(2)", "good_read(1)", "ready"]


def test_amber_while_queued_and_at_boot() -> None:
    script = [
        (0.0, lambda m, t: m.start(t)),
        (0.05, lambda m, t: m.ready(t)),
        (0.05, lambda m, t: m.set_queued(True, t)),
        (2.0, lambda m, t: m.good_read(t)),
        (4.0, lambda m, t: m.set_queued(False, t)),
    ]
    got = tokens(simulate(script, 5.0), 5.0)
    assert matches("ready(3) + amber_on > good_read(1) > amber_off", got), got


def test_a_sigkill_cuts_what_was_under_way() -> None:
    # killed 50 ms into a good-read dip: it counts (the scan was on disk before the dip)
    changes = simulate([*BOOT, (1.0, lambda m, t: m.good_read(t))], 1.05)
    changes.append(Change.marker(1.05, "reset"))
    # killed 0.3 s into a refusal: a red light cut short is neither a refusal nor a fault
    later = simulate([*BOOT, (1.0, lambda m, t: m.refused(t))], 1.3)
    changes += [Change(c.t + 2.0, c.channel, c.on, c.mark) for c in later]
    changes.append(Change.marker(3.3, "reset"))
    assert tokens(changes, 5.0) == ["ready(3)", "good_read(1)", "ready(3)", "beep", "beep"]


def test_a_clean_stop_is_no_good_read() -> None:
    changes = simulate(BOOT, 2.0)
    changes += [Change(2.0, "green", False), Change.marker(2.3, "start")]
    changes += [Change(c.t + 2.5, c.channel, c.on) for c in simulate(BOOT, 1.0)[1:]]
    assert tokens(changes, 5.0) == ["ready(3)", "ready(3)"]


def test_late_writes_still_decode() -> None:
    script = [*BOOT, (1.0, lambda m, t: m.good_read(t)), (2.0, lambda m, t: m.refused(t))]
    assert tokens(simulate(script, 5.0, jitter=0.03), 5.0) == [
        "ready(3)", "good_read(1)", "refused(2)"
    ]


def test_wrong_signals_are_not_taken_for_right_ones() -> None:
    # a green blink too long for a good read, and a beep nobody asked for
    changes = simulate(BOOT, 1.0)
    changes += [Change(2.0, "green", False), Change(3.0, "green", True)]
    changes += [Change(4.0, "buzzer", True), Change(4.08, "buzzer", False)]
    assert tokens(changes, 5.0) == ["ready(3)", "odd_green", "beep"]
    # a good read with no beep shows as such
    silent = [*simulate(BOOT, 1.0), Change(2.0, "green", False), Change(2.15, "green", True)]
    assert tokens(silent, 4.0) == ["ready(3)", "good_read(0)"]


def test_a_late_machine_widens_the_late_bounds_only() -> None:
    # a starved emulated guest woke the feedback worker 470 ms late: a 619 ms dip
    late_dip = [*simulate(BOOT, 1.0), Change(2.0, "green", False), Change(2.0, "buzzer", True),
                Change(2.08, "buzzer", False), Change(2.619, "green", True)]
    assert tokens(late_dip, 4.0) == ["ready(3)", "odd_green", "beep"]
    assert [e.token for e in decode(late_dip, 4.0, late_s=0.1)] == ["ready(3)", "good_read(1)"]
    # what no lateness explains still shows: a dip too short, green off for seconds, two beeps
    short = [*simulate(BOOT, 1.0), Change(2.0, "green", False), Change(2.02, "green", True)]
    assert [e.token for e in decode(short, 4.0, late_s=1.0)] == ["ready(3)"]
    long = [*simulate(BOOT, 1.0), Change(2.0, "green", False), Change(4.0, "green", True)]
    assert [e.token for e in decode(long, 5.0, late_s=1.0)] == ["ready(3)", "odd_green"]
    two = [*simulate(BOOT, 1.0), Change(2.0, "green", False), Change(2.0, "buzzer", True),
           Change(2.08, "buzzer", False), Change(2.15, "green", True),
           Change(2.2, "buzzer", True), Change(2.28, "buzzer", False)]
    assert [e.token for e in decode(two, 4.0, late_s=0.5)] == ["ready(3)", "good_read(1)", "beep"]
    with pytest.raises(ValueError):
        decode(late_dip, 4.0, late_s=-0.1)


@pytest.mark.parametrize(
    ("expected", "seen", "ok"),
    [
        ("ready(3) > good_read(1)", ["ready(3)", "good_read(1)"], True),
        ("ready(3) > good_read(1) + amber_on", ["ready(3)", "amber_on", "good_read(1)"], True),
        ("ready(3) > good_read(1)*2", ["ready(3)", "good_read(1)", "good_read(1)"], True),
        ("ready(3) > good_read(1)", ["ready(3)", "good_read(1)", "good_read(1)"], False),
        ("ready(3) > good_read(1)", ["good_read(1)", "ready(3)"], False),
        ("ready(3) > fault(4)", ["ready(3)", "fault(0)"], False),
    ],
)
def test_expectations(expected: str, seen: list[str], ok: bool) -> None:
    assert matches(expected, seen) is ok


def test_expectation_syntax() -> None:
    assert parse_expectation("a > b + c > d*2") == [["a"], ["b", "c"], ["d"], ["d"]]
    assert summary(["a", "b", "b", "b", "a"]) == "a > b*3 > a"
    with pytest.raises(ValueError, match="bad token"):
        parse_expectation("ready(3) > good read")
