"""One decoder of LED and buzzer traces into the events of SPEC §4, for every rig.

A rig records level changes of the four outputs (green, amber, red, buzzer)
with their time.monotonic() stamps (on the virtual rig the instant each
level belongs to, as the daemon's feedback worker recorded it, so that a
worker starved by a loaded machine does not stretch or squeeze a signal;
how late the writes came is kept apart in `Change.late`), plus two markers of its own: `start`
(a daemon is being launched) and `reset` (the daemon was killed: every
output is taken as off from there; a good-read dip under way counts, since
the scan was on disk before it began, a red light cut short does not). The
decoder reads those changes the way a person at the counter would:

| event        | what the lights and the buzzer did                                    | beeps |
|--------------|-----------------------------------------------------------------------|-------|
| ready(3)     | the kiosk came up: green on (after all on, if that was seen)           | 3     |
| good_read(1) | green off for about 150 ms, then on again                              | 1     |
| refused(2)   | red on for about 1 s                                                   | 2     |
| fault(4)     | red blinking (0.5 s on, 0.5 s off)                                     | 4     |
| ready        | the red blinking stopped: back to green steady                         | -     |
| amber_on/off | amber turned on / off (beside green)                                   | -     |
| odd_green    | green went off for longer than a good read and came back (a bug)       | -     |
| beep         | a buzzer pulse that belongs to none of the events above (a bug)        | -     |

Sounds never overlap and are played in the order of their events, possibly
late (feedback.MAX_SOUND_DELAY_S): each event that has a sound takes the
next buzzer pulses that start at or after it, as many as its sound has.
Events are written as tokens, `name(beeps)` for the events that have a sound,
so an expectation reads like the SPEC table: "ready(3) > good_read(1) + amber_on".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CHANNELS = ("green", "amber", "red", "buzzer")

# Beeps of each event's sound (SPEC §4; feedback.py plays them).
SOUND_BEEPS = {"ready(boot)": 3, "good_read": 1, "refused": 2, "fault": 4}

# Tolerances: the nominal times of feedback.py, widened for a loaded machine
# and, on the Pi rig, the input sampling of the loop-backs.
DIP_MIN_S, DIP_MAX_S = 0.04, 0.6  # good read: green off 150 ms
LONG_RED_S = 0.8  # red on at least this long: a refusal (1 s); shorter: a fault blink (0.5 s)
TRAIN_GAP_S = 0.8  # red off longer than this: the blinking has stopped (its off time is 0.5 s)
SOUND_LATE_S = 2.0  # a sound starts at most this long after its event (1.5 s by design)
NOTE_GAP_S = 0.3  # the beeps of one sound follow each other within this (0.06 to 0.1 s)
CLOCK_SLACK_S = 0.05  # a beep may be stamped just before its LED change
WRITE_GROUP_S = 0.02  # the outputs of one state change are written within this


@dataclass(frozen=True, slots=True)
class Change:
    """One level change of an output, or a rig marker (channel "")."""

    t: float
    channel: str
    on: bool = False
    mark: str = ""  # "start" or "reset" when channel is ""
    late: float = 0.0  # how long after `t` the pin was actually written (a starved worker)

    @staticmethod
    def marker(t: float, mark: str) -> Change:
        if mark not in ("start", "reset"):
            raise ValueError(f"unknown marker {mark!r}")
        return Change(t, "", False, mark)


@dataclass(slots=True)
class Event:
    """One decoded signal. `beeps` is None for events that have no sound."""

    t: float
    name: str
    beeps: int | None = None
    sound: int = 0  # beeps its sound should have (0: none)

    @property
    def token(self) -> str:
        return f"{self.name}({self.beeps})" if self.beeps is not None else self.name


@dataclass(slots=True)
class _Pulse:
    start: float
    end: float | None  # None: still on at the end of the trace
    cut: bool = False  # ended by a reset: its length says nothing


@dataclass(slots=True)
class _Life:
    """The changes between a start marker and the next reset (or the end)."""

    changes: list[Change] = field(default_factory=list)
    end: float | None = None  # time of the reset; None: still running
    reset: bool = False


def _lives(changes: Sequence[Change]) -> list[_Life]:
    lives: list[_Life] = [_Life()]
    for c in sorted(changes, key=lambda c: c.t):
        if c.mark == "start":
            if lives[-1].changes and lives[-1].end is None:
                lives[-1].end = c.t  # a start without a reset: the previous life ends here
            lives.append(_Life())
        elif c.mark == "reset":
            if lives[-1].end is None:
                lives[-1].end, lives[-1].reset = c.t, True
        else:
            lives[-1].changes.append(c)
    return [life for life in lives if life.changes]


def _pulses(changes: Iterable[Change], channel: str, life: _Life) -> list[_Pulse]:
    pulses: list[_Pulse] = []
    on = False
    for c in changes:
        if c.channel != channel or c.on == on:
            continue
        on = c.on
        if on:
            pulses.append(_Pulse(c.t, None))
        else:
            pulses[-1].end = c.t
    if pulses and pulses[-1].end is None and life.end is not None:
        pulses[-1].end, pulses[-1].cut = life.end, True
    return pulses


def _ready_at(life: _Life) -> tuple[float, float | None] | None:
    """When the kiosk came up, and when a good-read dip began if it began right then.

    Up: green on without all three LEDs (booting), or, once booting was seen, the
    end of it even with green off: a good read taken in the same turn as ready."""
    state = dict.fromkeys(CHANNELS, False)
    booting = False
    left_boot: float | None = None  # when the LEDs stopped being all on
    green_off: float | None = None
    ch = life.changes
    for i, c in enumerate(ch):
        was_booting = state["green"] and state["amber"] and state["red"]
        state[c.channel] = c.on
        all_on = state["green"] and state["amber"] and state["red"]
        booting = booting or all_on
        if was_booting and not all_on and left_boot is None:
            left_boot = c.t
        if c.channel == "green":
            green_off = None if c.on else c.t
        if i + 1 < len(ch) and ch[i + 1].t - c.t <= WRITE_GROUP_S:
            continue  # the outputs of one state change are written one after the other
        if all_on:
            left_boot = None
        elif state["green"] or booting:
            up = left_boot if left_boot is not None else c.t
            return up, None if state["green"] else max(up, green_off or up)
    return None


def _decode_life(life: _Life, until: float, late_s: float) -> list[Event]:
    events: list[Event] = []
    dip_max, sound_late, note_gap = DIP_MAX_S + late_s, SOUND_LATE_S + late_s, NOTE_GAP_S + late_s
    up = _ready_at(life)
    if up is None:
        return events
    ready_at, dip_from = up
    events.append(Event(ready_at, "ready", sound=SOUND_BEEPS["ready(boot)"]))
    state = dict.fromkeys(CHANNELS, False)
    for c in life.changes:
        if c.t <= ready_at:
            state[c.channel] = c.on
    amber_on = state["amber"]
    if amber_on:  # scans already queued for an unreachable broker when the kiosk came up
        events.append(Event(ready_at, "amber_on"))
    green_off_at = dip_from
    for c in life.changes:
        if c.t <= ready_at or (dip_from is not None and c.t <= dip_from):
            continue
        if c.channel == "amber" and c.on != amber_on:
            amber_on = c.on
            events.append(Event(c.t, "amber_on" if c.on else "amber_off"))
        elif c.channel == "green":
            if not c.on:
                green_off_at = c.t
            elif green_off_at is not None:
                off = c.t - green_off_at
                if DIP_MIN_S <= off <= dip_max:
                    events.append(Event(green_off_at, "good_read", sound=SOUND_BEEPS["good_read"]))
                elif off > dip_max:
                    events.append(Event(green_off_at, "odd_green"))
                green_off_at = None
    # killed during the dip: the scan was on disk before the dip began, the promise was made
    if (green_off_at is not None and life.reset and life.end is not None
            and life.end - green_off_at <= dip_max):
        events.append(Event(green_off_at, "good_read", sound=SOUND_BEEPS["good_read"]))

    # red: refusals (one long pulse) and faults (a train of blinks); the booting red is not one
    end = life.end if life.end is not None else until
    reds = [p for p in _pulses(life.changes, "red", life) if p.start >= ready_at]
    train: list[_Pulse] = []

    def close_train(ended: bool) -> None:
        fault = False
        for p in train:
            length = (p.end if p.end is not None else end) - p.start
            if length >= LONG_RED_S and not p.cut:
                events.append(Event(p.start, "refused", sound=SOUND_BEEPS["refused"]))
            elif p.end is not None and not p.cut and not fault:
                fault = True
                events.append(Event(p.start, "fault", sound=SOUND_BEEPS["fault"]))
        last = train[-1].end
        if fault and ended and last is not None and not train[-1].cut:
            events.append(Event(last, "ready"))  # the fault is over: green steady again

    for p in reds:
        if train and (train[-1].end is None or p.start - train[-1].end > TRAIN_GAP_S):
            close_train(ended=True)
            train = []
        train.append(p)
    if train:
        last = train[-1].end
        close_train(ended=last is not None and end - last > TRAIN_GAP_S and not life.reset)

    # sounds, in the order of their events
    events.sort(key=lambda e: e.t)
    beeps = [p for p in _pulses(life.changes, "buzzer", life) if p.start >= ready_at - 0.5]
    used = [False] * len(beeps)
    for e in events:
        if not e.sound:
            continue
        e.beeps = 0
        prev_end: float | None = None
        for i, b in enumerate(beeps):
            if used[i] or b.start < e.t - CLOCK_SLACK_S:
                continue
            if prev_end is None and b.start > e.t + sound_late:
                break
            if prev_end is not None and b.start - prev_end > note_gap:
                break
            used[i] = True
            e.beeps += 1
            prev_end = b.end if b.end is not None else end
            if e.beeps == e.sound:
                break
    for i, b in enumerate(beeps):
        if not used[i] and b.start >= ready_at - CLOCK_SLACK_S:
            events.append(Event(b.start, "beep"))
    events.sort(key=lambda e: e.t)
    return events


def decode(changes: Sequence[Change], until: float, late_s: float = 0.0) -> list[Event]:
    """The events of SPEC §4 in these changes, observed up to `until` (time.monotonic()).

    late_s widens the tolerances a late write stretches (a good read's dip, a sound's
    start and the gaps between its notes) by that much: how late the machine that wrote
    the changes was measured to wake a sleeping process (an emulated guest on a loaded
    host, tests/appliance). The lower bounds stay: a late wake-up never shortens a step."""
    if late_s < 0:
        raise ValueError(f"late_s must be >= 0, not {late_s}")
    out: list[Event] = []
    for life in _lives(changes):
        out.extend(_decode_life(life, until, late_s))
    return out


# -- expectations ------------------------------------------------------------------------

_TOKEN = re.compile(r"^[a-z_]+(\(\d+\))?$")


def parse_expectation(text: str) -> list[list[str]]:
    """ "a > b + c > d*3" -> [[a], [b, c], [d], [d], [d]]: groups in order, any order inside."""
    groups: list[list[str]] = []
    for part in text.split(">"):
        part = part.strip()
        if not part:
            continue
        count = 1
        m = re.fullmatch(r"(.+?)\s*\*\s*(\d+)", part)
        if m:
            part, count = m.group(1), int(m.group(2))
        tokens = [t.strip() for t in part.split("+")]
        for t in tokens:
            if not _TOKEN.match(t):
                raise ValueError(f"bad token {t!r} in expectation {text!r}")
        groups.extend([sorted(tokens)] * count)
    return groups


def matches(expected: str, seen: Sequence[str]) -> bool:
    """True if the seen tokens are the expected groups, in order (any order within a group)."""
    pos = 0
    for group in parse_expectation(expected):
        chunk = list(seen[pos:pos + len(group)])
        if sorted(chunk) != group:
            return False
        pos += len(group)
    return pos == len(seen)


def summary(tokens: Sequence[str]) -> str:
    """Tokens joined by " > ", runs written once with a count: "ready(3) > good_read(1)*50"."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j] == tokens[i]:
            j += 1
        out.append(tokens[i] if j - i == 1 else f"{tokens[i]}*{j - i}")
        i = j
    return " > ".join(out)
