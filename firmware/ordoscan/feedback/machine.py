"""The pure part of the feedback: what the LEDs and the buzzer do, as a function of events and
time (no threads, no pins). The signals, their priorities and the sound rules are described
in the package's docstring (ordoscan.feedback).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger("ordoscan.feedback")

# Timings, in seconds.
GOOD_READ_DIP_S = 0.15  # green off, then on again
# green on between two dips, so that two good reads close together show as two blinks
DIP_GAP_S = 0.1
BEEP_S = 0.08  # one short beep
READY_NOTE_S = 0.12
READY_GAP_S = 0.06
REFUSED_RED_S = 1.0
REFUSED_GAP_S = 0.1
FAULT_BEEP_S = 0.15
FAULT_GAP_S = 0.1
FAULT_BLINK_S = 0.5  # red on, then off for as long, while a fault is active
IDENTIFY_S = 10.0
IDENTIFY_BLINK_S = 0.25
IDENTIFY_MAX_S = 120.0  # the cap of a remote identify (SPEC: 10 s by default)
SOUND_GAP_S = 0.1  # silence between two sounds, so that they stay distinct
MAX_SOUND_DELAY_S = 1.5  # a sound, or a good-read dip, that would start later is skipped
FAULT_REBEEP_S = 60.0

# Tones of a passive buzzer, in Hz: rising for ready, high for a good read,
# low for a refusal, lower still for a fault.
READY_HZ = (1046.5, 1318.5, 1568.0)  # C6 E6 G6
GOOD_READ_HZ = 1760.0  # A6
REFUSED_HZ = 440.0  # A4
FAULT_HZ = 220.0  # A3
TONAL_MID = "A5"
TONAL_OCTAVES = 3  # the TonalBuzzer then plays 110 Hz to 7040 Hz

LOOKAHEAD_S = 0.001  # an edge due within this is taken now: no sub-millisecond waits

LEDS = ("green", "amber", "red")
CHANNELS = (*LEDS, "buzzer")


@dataclass(frozen=True, slots=True)
class Note:
    """One tone of a sound: `hz` for `on_s` seconds, then silence for `off_s`."""

    hz: float
    on_s: float
    off_s: float = 0.0


Sound = tuple[Note, ...]


def _beeps(hz: float, count: int, on_s: float, gap_s: float) -> Sound:
    return tuple(Note(hz, on_s, gap_s if i < count - 1 else 0.0) for i in range(count))


READY_SOUND: Sound = tuple(
    Note(hz, READY_NOTE_S, READY_GAP_S if i < len(READY_HZ) - 1 else 0.0)
    for i, hz in enumerate(READY_HZ)
)
GOOD_READ_SOUND: Sound = (Note(GOOD_READ_HZ, BEEP_S),)
REFUSED_SOUND: Sound = _beeps(REFUSED_HZ, 2, BEEP_S, REFUSED_GAP_S)
FAULT_SOUND: Sound = _beeps(FAULT_HZ, 4, FAULT_BEEP_S, FAULT_GAP_S)


def _length(sound: Sound) -> float:
    return sum(n.on_s + n.off_s for n in sound)


@dataclass(frozen=True, slots=True)
class Outputs:
    """What the LEDs and the buzzer should do at one instant."""

    green: bool = False
    amber: bool = False
    red: bool = False
    tone: float | None = None  # Hz while the buzzer sounds

    def as_dict(self) -> dict[str, bool]:
        buzzer = self.tone is not None
        return {"green": self.green, "amber": self.amber, "red": self.red, "buzzer": buzzer}


class Phase(Enum):
    """Where the kiosk is in its life: before start, booting, ready."""

    OFF = "off"
    BOOTING = "booting"
    READY = "ready"


def _blink_on(elapsed: float, on_s: float, off_s: float) -> bool:
    return elapsed % (on_s + off_s) < on_s


def _next_blink_edge(t: float, since: float, on_s: float, off_s: float) -> float:
    period = on_s + off_s
    into = (t - since) % period
    cycle_start = t - into
    return cycle_start + (on_s if into < on_s else period)


class StateMachine:
    """The lights and sounds as a function of events and time: no threads, no pins."""

    def __init__(self) -> None:
        self.phase = Phase.OFF
        self.queued = False
        self.faults: set[str] = set()
        self._blink_since = 0.0  # the red blinking keeps its phase while faults come and go
        self._fault_beeped: dict[str, float] = {}
        self._dips: list[tuple[float, float]] = []  # (start, end) of the green dips, in order
        self._refused_until = -math.inf
        self._identify_since = 0.0
        self._identify_until = -math.inf
        self._sounds: list[tuple[float, Sound]] = []  # (start, sound), in start order

    # -- events ---------------------------------------------------------------

    def start(self, now: float) -> None:
        self.phase = Phase.BOOTING

    def ready(self, now: float) -> None:
        if self.phase is not Phase.READY:
            self.phase = Phase.READY
            self._play(READY_SOUND, now)

    def good_read(self, now: float) -> None:
        self._dip(now)
        self._play(GOOD_READ_SOUND, now)

    def repeat(self, now: float) -> None:
        self.good_read(now)

    def refused(self, now: float) -> None:
        self._refused_until = now + REFUSED_RED_S
        self._play(REFUSED_SOUND, now)

    def set_queued(self, queued: bool, now: float) -> None:
        self.queued = queued

    def set_fault(self, name: str, active: bool, now: float) -> None:
        if not active:
            self.faults.discard(name)
            return
        if name in self.faults:
            return
        if not self.faults:
            self._blink_since = now
        self.faults.add(name)
        last = self._fault_beeped.get(name)
        if last is None or now - last >= FAULT_REBEEP_S:
            self._fault_beeped[name] = now
            self._play(FAULT_SOUND, now)

    def identify(self, seconds: float, now: float) -> None:
        self._identify_since = now
        self._identify_until = now + seconds

    # -- queries --------------------------------------------------------------

    def outputs(self, now: float) -> Outputs:
        t = now + LOOKAHEAD_S
        booting = self.phase is Phase.BOOTING
        green = self.phase is not Phase.OFF
        amber = booting or self.queued
        red = booting
        if self.faults:
            red = _blink_on(t - self._blink_since, FAULT_BLINK_S, FAULT_BLINK_S)
        if t < self._refused_until:
            red = True
        if any(start <= t < end for start, end in self._dips):
            green = False
        if t < self._identify_until:
            elapsed = t - self._identify_since
            green = amber = red = _blink_on(elapsed, IDENTIFY_BLINK_S, IDENTIFY_BLINK_S)
        return Outputs(green, amber, red, self._tone(t))

    def next_change(self, now: float) -> float | None:
        """When the outputs may change next without a new event; None if never."""
        t = now + LOOKAHEAD_S
        edges = [d for d in (self._refused_until, self._identify_until) if d > t]
        edges += [d for dip in self._dips for d in dip if d > t]
        if self.faults:
            edges.append(_next_blink_edge(t, self._blink_since, FAULT_BLINK_S, FAULT_BLINK_S))
        if t < self._identify_until:
            since = self._identify_since
            edges.append(_next_blink_edge(t, since, IDENTIFY_BLINK_S, IDENTIFY_BLINK_S))
        for start, sound in self._sounds:
            # the gap after a sound counts: a sound asked for within it would start late
            steps = [step for note in sound for step in (note.on_s, note.off_s)] + [SOUND_GAP_S]
            edge = start
            for step in steps:
                if edge > t:
                    break
                edge += step
            if edge > t:
                edges.append(edge)
        return min(edges) if edges else None

    def _tone(self, t: float) -> float | None:
        for start, sound in self._sounds:
            offset = t - start
            if offset < 0:
                continue
            for note in sound:
                if offset < note.on_s:
                    return note.hz
                offset -= note.on_s + note.off_s
                if offset < 0:
                    return None  # in the silence after this note
        return None

    def _dip(self, now: float) -> None:
        # A good read during another's dip gets a dip of its own after it (with green on
        # between them), as its beep waits its turn: extending the first dip would show two
        # reads as one blink beside two beeps.
        self._dips = [d for d in self._dips if d[1] > now - DIP_GAP_S]
        start = now if not self._dips else max(now, self._dips[-1][1] + DIP_GAP_S)
        if start - now > MAX_SOUND_DELAY_S:
            log.debug("a good-read dip was skipped: green is busy for %.1f s", start - now)
            return
        self._dips.append((start, start + GOOD_READ_DIP_S))

    def _play(self, sound: Sound, now: float) -> None:
        # Sounds that ended within the gap still count, so a new one never runs into them.
        self._sounds = [s for s in self._sounds if s[0] + _length(s[1]) > now - SOUND_GAP_S]
        start = now
        if self._sounds:
            start = max(now, max(s + _length(snd) for s, snd in self._sounds) + SOUND_GAP_S)
        if start - now > MAX_SOUND_DELAY_S:
            log.debug("a sound was skipped: the buzzer is busy for %.1f s", start - now)
            return
        self._sounds.append((start, sound))


# -- the worker's queue --------------------------------------------------------
