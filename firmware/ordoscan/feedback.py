"""LEDs and buzzer (SPEC §4): one small state machine, driven by a worker thread.

Every public call of `Feedback` only enqueues an event and returns, so the
pipeline never waits on a light or a sound. The worker applies the events to
a `StateMachine` (a function of events and time, with no threads and no pins)
and writes the levels it asks for to gpiozero devices, waking at the next
edge. The timing is done here rather than with gpiozero's blink()/beep() so
that one clock schedules every channel, including the notes of a passive
buzzer, and so that the logic can be checked with a fake clock.

What each LED shows, highest priority first:

- green: identify blinking > good-read dip (off 150 ms, then on again) >
  on while booting and once ready;
- amber: identify blinking > on while booting or while scans are queued
  because the broker is unreachable;
- red: identify blinking > refused (on for 1 s) > blinking while any fault
  is active > on while booting, otherwise off.

So a good read during a fault still dips green and beeps while red keeps
blinking; a refusal shows red for 1 s and then gives red back to the fault
blinking (or off); identify overlays the three LEDs, then hands them back to
whatever the current state is. Identify is silent and never mutes a sound.

Sounds never cut each other: a sound starts after the previous one has
ended, with a short gap, and one that would start more than
MAX_SOUND_DELAY_S late is skipped (its LEDs still show the event). A fault
beeps when its name becomes active; the same fault beginning again within
FAULT_REBEEP_S stays silent (a flapping camera must not beep all day), the
red blinking still shows it.

Queue: at most QUEUE_SIZE cosmetic events (good read, repeat, refused) wait
for the worker; when it is full the oldest is dropped. State events (start,
ready, queued, faults, identify) are never dropped: a newer one replaces the
pending one with the same key, so they are bounded by the number of fault
names.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from importlib.metadata import entry_points
from typing import Any

from gpiozero import LED, Buzzer, TonalBuzzer
from gpiozero.exc import GPIOPinInUse, PinInvalidPin
from gpiozero.tones import Tone

from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import GpioConfig
from ordoscan.errors import GpioError
from ordoscan.lifecycle import Service

log = logging.getLogger(__name__)

# Timings, in seconds.
GOOD_READ_DIP_S = 0.15  # green off, then on again
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
MAX_SOUND_DELAY_S = 1.5
FAULT_REBEEP_S = 60.0

# Tones of a passive buzzer, in Hz: rising for ready, high for a good read,
# low for a refusal, lower still for a fault.
READY_HZ = (1046.5, 1318.5, 1568.0)  # C6 E6 G6
GOOD_READ_HZ = 1760.0  # A6
REFUSED_HZ = 440.0  # A4
FAULT_HZ = 220.0  # A3
TONAL_MID = "A5"
TONAL_OCTAVES = 3  # the TonalBuzzer then plays 110 Hz to 7040 Hz

QUEUE_SIZE = 32
POLL_S = 0.5  # the worker's longest wait (it wakes at once for an event or close)
LOOKAHEAD_S = 0.001  # an edge due within this is taken now: no sub-millisecond waits
MAX_CATCH_UP = 16  # missed edges shown after a late wake-up; further back they are dropped
CLOSE_TIMEOUT_S = 2.0

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
        self._dip_until = -math.inf
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
        self._dip_until = now + GOOD_READ_DIP_S
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
        if t < self._dip_until:
            green = False
        if t < self._identify_until:
            elapsed = t - self._identify_since
            green = amber = red = _blink_on(elapsed, IDENTIFY_BLINK_S, IDENTIFY_BLINK_S)
        return Outputs(green, amber, red, self._tone(t))

    def next_change(self, now: float) -> float | None:
        """When the outputs may change next without a new event; None if never."""
        t = now + LOOKAHEAD_S
        edges = [d for d in (self._dip_until, self._refused_until, self._identify_until) if d > t]
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


@dataclass(frozen=True, slots=True)
class _Event:
    """One call of the public API, to be applied to the state machine by the worker."""

    apply: Callable[[StateMachine, float], None]
    key: str | None = None  # state events: a newer event with the same key replaces this one


class _EventQueue:
    """Cosmetic events are bounded (the oldest is dropped); state events coalesce by key."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: deque[_Event] = deque()
        self._cosmetic = 0
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, event: _Event, idle: threading.Event) -> None:
        with self._cond:
            if event.key is not None:
                self._remove(lambda e: e.key == event.key)
            elif self._cosmetic >= self._size:
                self._remove(lambda e: e.key is None)  # the count stays: one out, one in
                self.dropped += 1
            else:
                self._cosmetic += 1
            self._items.append(event)
            idle.clear()
            self._cond.notify()

    def _remove(self, match: Callable[[_Event], bool]) -> None:
        for i, e in enumerate(self._items):
            if match(e):
                del self._items[i]
                return

    def get(self, timeout: float) -> list[_Event]:
        """Every pending event, waiting up to timeout for the first one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items = list(self._items)
            self._items.clear()
            self._cosmetic = 0
            return items

    def mark_idle(self, idle: threading.Event) -> None:
        with self._cond:
            if not self._items:
                idle.set()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


# -- pins ------------------------------------------------------------------------

_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}
# gpio.pin_factory = "mock" loads these by name through gpiozero's own entry-point group,
# so the kiosk never imports the desk's mock pins (ordoscan.devtools registers them).
MOCK_ENTRY_POINTS = {False: "ordoscan-mock", True: "ordoscan-mock-pwm"}


def _mock_factory(pwm: bool) -> Any:
    name = MOCK_ENTRY_POINTS[pwm]
    for ep in entry_points(group="gpiozero_pin_factories", name=name):
        return ep.load()()
    # an install without its entry points (an old editable install): gpiozero's plain mocks
    log.warning("the %s pin factory is not registered (reinstall ordoscan); "
                "using gpiozero's MockFactory, untraced", name)
    from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

    return MockFactory(pin_class=MockPWMPin if pwm else MockPin)


def make_pin_factory(name: str, *, pwm: bool = False) -> Any:
    """The gpiozero pin factory named by gpio.pin_factory; pwm asks mock pins for PWM."""
    if name == "mock":
        return _mock_factory(pwm)
    if name not in _FACTORIES:
        known = ", ".join(["mock", *_FACTORIES])
        raise GpioError(f"gpio.pin_factory = {name!r}: unknown pin factory (known: {known})")
    module, cls = _FACTORIES[name]
    try:
        factory = getattr(importlib.import_module(module), cls)()
    except ImportError as e:
        raise GpioError(
            f"gpio.pin_factory = {name!r}: cannot be loaded ({e}); on a Raspberry Pi install "
            "python3-lgpio, on a desk set gpio.pin_factory = \"mock\""
        ) from None
    except Exception as e:  # each library raises its own type (lgpio.error, RuntimeError, OSError)
        raise GpioError(
            f"gpio.pin_factory = {name!r}: cannot open the GPIO chip ({type(e).__name__}: {e}); "
            "is this a Raspberry Pi, and may this user use /dev/gpiochip*?"
        ) from None
    return factory


def _claim(name: str, pin: int, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except GPIOPinInUse as e:
        why = f"already in use ({e})"
    except PinInvalidPin as e:
        why = f"not a GPIO pin of this board ({e})"
    except Exception as e:  # the pin libraries' own types (lgpio.error, OSError, ...)
        text = str(e) or type(e).__name__
        if "in use" in text or "busy" in text.lower():  # lgpio says "GPIO busy"
            why = f"already in use ({text})"
        else:
            why = f"cannot be claimed ({type(e).__name__}: {text})"
    raise GpioError(f"gpio.{name} = BCM pin {pin}: {why}") from None


class Feedback(Service):
    """The kiosk's LEDs and buzzer: calls enqueue an event and return, a worker drives the pins.

    The pins are claimed when it is built (so a wrong pin is an error at once),
    the worker runs from start() to stop(); events posted before start() wait
    for it. Each signal is logged at debug level, so a desk run with mock pins
    shows what the kiosk would light and sound."""

    def __init__(
        self,
        cfg: GpioConfig,
        *,
        pin_factory: object | None = None,
        clock: Clock = SYSTEM_CLOCK,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._cfg = cfg
        self._clock = clock
        self._tonal = cfg.buzzer_type == "tonal"
        self._own_factory = pin_factory is None
        if pin_factory is None:
            pin_factory = make_pin_factory(cfg.pin_factory, pwm=self._tonal)
        self._factory: Any = pin_factory
        self._leds: dict[str, Any] = {}
        self._buzzer: Any = None
        out = {"active_high": cfg.active_high, "initial_value": False, "pin_factory": pin_factory}
        try:
            for name in LEDS:
                pin = getattr(cfg, name)
                self._leds[name] = _claim(name, pin, partial(LED, pin, **out))
            if self._tonal:
                # A passive buzzer sounds only from its PWM square wave: polarity does not apply.
                make = partial(
                    TonalBuzzer, cfg.buzzer,
                    mid_tone=Tone(TONAL_MID), octaves=TONAL_OCTAVES, pin_factory=pin_factory,
                )
            else:
                make = partial(Buzzer, cfg.buzzer, **out)
            self._buzzer = _claim("buzzer", cfg.buzzer, make)
        except GpioError:
            self._release()
            raise
        self._machine = StateMachine()
        self._queue = _EventQueue(queue_size)
        self._written: dict[str, object] = {}
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._life = threading.Lock()  # start() and stop() from different threads

    # -- the events (SPEC §4) -------------------------------------------------

    def booting(self) -> None:
        """Booting: all LEDs on."""
        self._post(lambda m, now: m.start(now), "booting: green, amber and red on", key="phase")

    def ready(self) -> None:
        """Three rising beeps once, then green steady."""
        self._post(lambda m, now: m.ready(now), "ready: three rising beeps, green steady",
                   key="phase")

    def good_read(self) -> None:
        """The scan is on disk: green off 150 ms then on, one short beep."""
        self._post(lambda m, now: m.good_read(now), "good read: green dips, one beep")

    def repeat(self) -> None:
        """A repeat of a recent scan: the same as a good read."""
        self._post(lambda m, now: m.repeat(now), "repeat: green dips, one beep")

    def refused(self) -> None:
        """Not an ordonnance numérique: red for 1 s, two short low beeps."""
        self._post(lambda m, now: m.refused(now), "refused: red for 1 s, two low beeps")

    def set_queued(self, queued: bool) -> None:
        """Amber steady (beside green) while scans wait for an unreachable broker."""
        self._post(lambda m, now: m.set_queued(queued, now),
                   f"queued: amber {'on' if queued else 'off'}", key="queued")

    def set_fault(self, name: str, active: bool) -> None:
        """Red blinking while any named fault is active; four low beeps when one begins."""
        what = "red blinking, four low beeps" if active else "cleared"
        self._post(lambda m, now: m.set_fault(name, active, now), f"fault {name}: {what}",
                   key=f"fault:{name}")

    def identify(self, seconds: float = IDENTIFY_S) -> None:
        """All LEDs blinking for `seconds` (0 stops it), then back to the current state."""
        if not math.isfinite(seconds):
            seconds = IDENTIFY_S
        seconds = min(max(seconds, 0.0), IDENTIFY_MAX_S)
        self._post(lambda m, now: m.identify(seconds, now),
                   f"identify: all LEDs blinking for {seconds:g} s", key="identify")

    # -- reading --------------------------------------------------------------

    def snapshot(self) -> dict[str, bool]:
        """The LED and buzzer states as the pins are now (through the polarity)."""
        if self._closed:
            return dict.fromkeys(CHANNELS, False)
        try:
            states = {name: bool(led.is_lit) for name, led in self._leds.items()}
            states["buzzer"] = bool(self._buzzer.is_active)
        except Exception:  # closed under our feet: nothing is lit any more
            return dict.fromkeys(CHANNELS, False)
        return states

    @property
    def dropped_events(self) -> int:
        """Cosmetic events dropped because the worker was behind."""
        return self._queue.dropped

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every event is shown and nothing timed is left (a blinking fault never is)."""
        return self._idle.wait(timeout)

    # -- life -----------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (idempotent); the LEDs show nothing until an event says so."""
        with self._life:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """All off, worker stopped, pins released; idempotent, and fine without a start()."""
        with self._life:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._queue.wake()
        if thread is not None:
            thread.join(max(0.0, timeout))
            if thread.is_alive():
                log.warning("feedback: the worker is stuck on a pin write; "
                            "releasing the pins anyway")
        self._write(Outputs())
        self._release()

    # -- inside ---------------------------------------------------------------

    def _post(
        self, apply: Callable[[StateMachine, float], None], what: str, key: str | None = None
    ) -> None:
        if not self._closed:
            log.debug("signal: %s", what)
            self._queue.put(_Event(apply, key), self._idle)

    def _run(self) -> None:
        timeout = 0.0
        due: float | None = None  # the edge the worker last meant to wake for
        while not self._stop.is_set():
            events = self._queue.get(timeout)
            if self._stop.is_set():
                break
            now = self._clock.monotonic()
            if due is not None:
                self._catch_up(due, now)
            for event in events:
                try:
                    event.apply(self._machine, now)
                except Exception:  # a bug here must not take the lights down for good
                    log.exception("feedback: an event could not be applied")
            self._write(self._machine.outputs(now))
            due = self._machine.next_change(now)
            if due is None:
                self._queue.mark_idle(self._idle)
                timeout = POLL_S
            else:
                timeout = min(POLL_S, max(due - self._clock.monotonic(), LOOKAHEAD_S))

    def _catch_up(self, edge: float, now: float) -> None:
        """Woken late (a loaded machine): show the missed states in their order, briefly,
        so that two beeps and the silence between them never merge into one long beep."""
        for _ in range(MAX_CATCH_UP):
            if edge >= now - LOOKAHEAD_S:
                return
            self._write(self._machine.outputs(edge))
            after = self._machine.next_change(edge)
            if after is None or after <= edge:
                return
            edge = after

    def _write(self, out: Outputs) -> None:
        wanted: dict[str, object] = {"green": out.green, "amber": out.amber, "red": out.red}
        wanted["buzzer"] = out.tone if self._tonal else out.tone is not None
        for name, value in wanted.items():
            if self._written.get(name) == value:
                continue
            device = self._leds.get(name) if name != "buzzer" else self._buzzer
            if device is None:
                continue
            try:
                if name == "buzzer" and self._tonal:
                    if value is None:
                        device.stop()
                    else:
                        device.play(Tone(frequency=value))
                else:
                    device.value = bool(value)
            except Exception as e:  # the pin library's own error types
                if name not in self._warned:
                    self._warned.add(name)
                    pin = getattr(self._cfg, name)
                    log.warning(
                        "feedback: gpio.%s (BCM pin %d) could not be driven: %s", name, pin, e
                    )
                continue
            self._written[name] = value
            self._warned.discard(name)

    def _release(self) -> None:
        for device in [*self._leds.values(), self._buzzer]:
            if device is not None:
                try:
                    device.close()
                except Exception as e:  # closing must go on with the other pins
                    log.warning("feedback: a pin could not be released: %s", e)
        if self._own_factory:
            try:
                self._factory.close()
            except Exception as e:
                log.warning("feedback: the pin factory could not be closed: %s", e)
