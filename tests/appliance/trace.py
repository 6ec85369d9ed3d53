"""The kiosk's LEDs and buzzer as the kernel's GPIO lines showed them, seen from the host.

In the VM the daemon drives a gpio-sim chip through lgpio; the pin watcher
(drivers/pinwatch.py) follows gpiolib's tracepoint for the four output lines
and writes each change to a virtio serial port,
`pins <guest monotonic> <bcm>=<level> ...`. qemu writes that port to a file on
this machine, one per boot (vm.py), so what was shown before a power cut is
kept whatever the guest loses.

The host stamps each line as it reads it; the guest's own stamp is exact but on
the guest's clock. Each boot's guest times are placed on the host's clock by the
smallest lag seen in that boot (a line is never read before it was written), so
the timings between changes are the guest's and the boots line up with the
host's actions. Each boot opens with a `start` marker, a cut closes it with a
`reset` marker at the moment qemu was killed, and the whole is decoded by the
one SPEC §4 decoder of the rigs (tests/hil/signals.py): a good read is green
off about 150 ms with one beep on the buzzer line.

    trace = Trace(vm)
    beeps = trace.good_reads()        # the good-read signals, every boot so far
    trace.tokens(boot=3)              # "ready(3)", "good_read(1)", ... of boot 3
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from tests.appliance.image import KIOSK_PINS
from tests.appliance.vm import Boot
from tests.hil import signals
from tests.hil.signals import Change

# BCM pin -> the decoder's channel, in the order of KIOSK_PINS
CHANNEL = dict(zip((int(p) for p in KIOSK_PINS.split(",")), signals.CHANNELS, strict=True))
# Changes on different channels this close are one state written (feedback's shortest
# step between two states is 60 ms, a ready note's gap)
GROUP_S = 0.05


@dataclass(frozen=True)
class Level:
    """One change of a line, on the host's clock."""

    t: float
    boot: int
    channel: str
    on: bool


def boot_levels(boot: Boot) -> list[Level]:
    """The changes of one boot on the host's clock (empty if the watcher never spoke)."""
    parsed = []
    for e in boot.trace:
        words = e.text.split()
        if len(words) < 3 or words[0] != "pins":
            continue
        try:
            guest = float(words[1])
            pairs = [(int(b), v == "1") for b, v in (w.split("=", 1) for w in words[2:])]
        except ValueError:
            continue  # a line torn by the cut
        parsed.append((e.at, guest, pairs))
    if not parsed:
        return []
    offset = min(at - guest for at, guest, _ in parsed)
    return [Level(guest + offset, boot.n, CHANNEL[bcm], on)
            for _, guest, pairs in parsed for bcm, on in pairs if bcm in CHANNEL]


def written_together(levels: list[Level]) -> list[tuple[float, Level]]:
    """Each change with the time of the state it belongs to. The feedback worker writes
    one state's outputs one after the other; a starved emulated guest may take tens of
    ms over it, where the decoder expects them within signals.WRITE_GROUP_S (the three
    LEDs of "booting" would read as green coming up alone). A change on a channel not
    yet changed in the current group, within GROUP_S of its start, takes its time."""
    out: list[tuple[float, Level]] = []
    start, channels = -1.0, set[str]()
    for lv in levels:
        if lv.t - start <= GROUP_S and lv.channel not in channels:
            channels.add(lv.channel)
        else:
            start, channels = lv.t, {lv.channel}
        out.append((start, lv))
    return out


class Machine(Protocol):
    def boots_seen(self) -> list[Boot]: ...


class Trace:
    """Every boot's changes of the kiosk's output lines, and their SPEC §4 signals."""

    def __init__(self, vm: Machine, late_s: float = 0.0) -> None:
        """late_s: how late the guest was measured to wake a sleeping process, which the
        decoder allows on the bounds a late write stretches (signals.decode)."""
        self.vm = vm
        self.late_s = late_s

    def changes(self, boot: int | None = None) -> list[Change]:
        """The decoder's input: start/reset markers around each boot's level changes."""
        out: list[Change] = []
        for b in self.vm.boots_seen():
            if boot is not None and b.n != boot:
                continue
            levels = boot_levels(b)
            if not levels:
                continue
            out.append(Change.marker(min(lv.t for lv in levels) - 1e-3, "start"))
            out.extend(Change(t, lv.channel, lv.on) for t, lv in written_together(levels))
            if b.cut and b.ended_at is not None:
                # the guest's stamps may land a few ms past the kill (the lag estimate)
                out.append(Change.marker(max(b.ended_at, levels[-1].t + 1e-3), "reset"))
        return out

    def events(self, boot: int | None = None) -> list[signals.Event]:
        return signals.decode(self.changes(boot), time.monotonic(), self.late_s)

    def tokens(self, boot: int | None = None) -> list[str]:
        return [e.token for e in self.events(boot)]

    def good_reads(self, boot: int | None = None) -> list[signals.Event]:
        """The good-read signals: a green dip with its one beep on the buzzer line."""
        return [e for e in self.events(boot) if e.name == "good_read" and e.beeps == 1]

    def levels(self, boot: int | None = None) -> list[Level]:
        return [lv for b in self.vm.boots_seen() if boot is None or b.n == boot
                for lv in boot_levels(b)]

    def runs(self, channel: str, on: bool, boot: int | None = None) -> list[tuple[float, float]]:
        """(start, length in s) of each completed stretch of a channel at one level (a
        green dip is a run of off, a beep a run of on); a boot's first level opens none."""
        out: list[tuple[float, float]] = []
        since: float | None = None
        level: bool | None = None
        last_boot = None
        for lv in self.levels(boot):
            if lv.channel != channel:
                continue
            if lv.boot != last_boot:
                since, level, last_boot = None, None, lv.boot
            if lv.on == level:
                continue
            if level == on and since is not None:
                out.append((since, lv.t - since))
            since = lv.t if level is not None else None
            level = lv.on
        return out
