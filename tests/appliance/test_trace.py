"""The host side of the pin trace (trace.py) on lines as the guest's watcher writes
them: clock placement, torn lines, a cut during a good read. No VM: runs in every
test run."""

from __future__ import annotations

import random

from tests.appliance.trace import Trace
from tests.appliance.vm import Boot, Event

GREEN, AMBER, RED, BUZZER = 17, 27, 22, 18


class Lines:
    """A boot's watcher output, stamped as the host would read it: the guest clock plus an
    offset, plus a read lag of 5 to 40 ms (one line has the smallest, 5 ms)."""

    def __init__(self, n: int, offset: float, seed: int) -> None:
        self.boot = Boot(n, started_at=offset - 20)
        self.offset = offset
        self.rng = random.Random(seed)
        self.t = 100.0  # guest monotonic

    def at(self, dt: float, **levels: int) -> None:
        self.t += dt
        pins = {"green": GREEN, "amber": AMBER, "red": RED, "buzzer": BUZZER}
        pairs = " ".join(f"{pins[k]}={v}" for k, v in levels.items())
        lag = 0.005 if not self.boot.trace else self.rng.uniform(0.005, 0.04)
        self.boot.trace.append(Event(self.t + self.offset + lag, f"pins {self.t:.6f} {pairs}"))

    def kiosk_up(self) -> None:
        self.at(0, green=0, amber=0, red=0, buzzer=0)
        self.at(2.0, green=1, amber=1, red=1)  # booting
        self.at(3.0, amber=0, red=0, buzzer=1)  # ready: three rising notes
        for _ in range(2):
            self.at(0.12, buzzer=0)
            self.at(0.06, buzzer=1)
        self.at(0.12, buzzer=0)

    def good_read(self) -> None:
        self.at(2.0, green=0, buzzer=1)
        self.at(0.08, buzzer=0)
        self.at(0.07, green=1)


class FakeVM:
    def __init__(self, boots: list[Boot]) -> None:
        self.boots = boots

    def boots_seen(self) -> list[Boot]:
        return self.boots


def test_good_reads_across_a_cut_and_a_reboot() -> None:
    first = Lines(1, offset=5000.0, seed=1)
    first.kiosk_up()
    first.good_read()
    first.at(2.0, green=0, buzzer=1)  # a good read under way when the power goes
    first.boot.trace.append(Event(first.t + 5000.03, "pins 1"))  # torn by the cut
    first.boot.ended_at, first.boot.cut = first.t + 5000.05, True
    second = Lines(2, offset=first.t + 5000.0 + 30, seed=2)
    second.kiosk_up()
    second.good_read()
    trace = Trace(FakeVM([first.boot, second.boot]))

    assert trace.tokens(1) == ["ready(3)", "good_read(1)", "good_read(1)"]
    assert trace.tokens(2) == ["ready(3)", "good_read(1)"]
    assert len(trace.good_reads()) == 3
    # the guest's own intervals, whatever the host's read lag
    dips = [round(length, 3) for _, length in trace.runs("green", False)]
    assert dips == [0.15, 0.15]  # the cut one never ended
    beeps = [round(length, 3) for _, length in trace.runs("buzzer", True, 2)]
    assert beeps == [0.12, 0.12, 0.12, 0.08]
    # placed on the host's clock by the smallest lag, and in boot order
    levels = trace.levels()
    assert abs(levels[0].t - (100.0 + 5000.005)) < 1e-6
    assert [lv.t for lv in levels] == sorted(lv.t for lv in levels)


def test_a_boot_without_a_watcher_line_gives_nothing() -> None:
    silent = Boot(1, started_at=0.0, ended_at=10.0, cut=True)
    silent.trace.append(Event(1.0, "pinwatch gpiochip0 17,27,22,18"))
    assert Trace(FakeVM([silent])).changes() == []


def test_the_outputs_of_one_state_written_slowly_are_one_state() -> None:
    """A starved guest took 25 ms to write "booting" (green, amber, then red): still the
    kiosk booting, then ready, not green coming up alone."""
    boot = Lines(1, offset=100.0, seed=3)
    boot.at(0, green=0, amber=0, red=0, buzzer=0)
    boot.at(2.0, green=1, amber=1)
    boot.at(0.025, red=1)
    boot.at(7.0, amber=0, red=0, buzzer=1)
    for _ in range(2):
        boot.at(0.12, buzzer=0)
        boot.at(0.06, buzzer=1)
    boot.at(0.12, buzzer=0)
    boot.good_read()
    trace = Trace(FakeVM([boot.boot]))
    assert trace.tokens() == ["ready(3)", "good_read(1)"]
    # the raw levels keep their own times
    assert [round(length, 3) for _, length in trace.runs("green", False)] == [0.15]
