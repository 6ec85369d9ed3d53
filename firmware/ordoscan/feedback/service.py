"""The feedback service: public calls enqueue an event, a worker thread ("feedback") applies
them to the StateMachine and writes the levels it asks for to the gpiozero devices."""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gpiozero import LED, Buzzer, TonalBuzzer
from gpiozero.tones import Tone

from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import GpioConfig
from ordoscan.errors import GpioError
from ordoscan.feedback.machine import (
    CHANNELS,
    IDENTIFY_MAX_S,
    IDENTIFY_S,
    LEDS,
    LOOKAHEAD_S,
    TONAL_MID,
    TONAL_OCTAVES,
    Outputs,
    StateMachine,
)
from ordoscan.feedback.pins import claim, make_pin_factory
from ordoscan.lifecycle import Service

log = logging.getLogger("ordoscan.feedback")

QUEUE_SIZE = 32
POLL_S = 0.5  # the worker's longest wait (it wakes at once for an event or close)
MAX_CATCH_UP = 16  # missed edges shown after a late wake-up; further back they are dropped
CLOSE_TIMEOUT_S = 2.0

_writing = threading.local()  # the instant the worker's pin writes belong to (see write_time)


def write_time() -> float | None:
    """While the feedback worker writes the pins: the instant, on the feedback's clock, that
    these levels belong to (the edge it woke for; on a loaded machine the write itself comes
    later, and missed edges are written one after the other). None outside such a write.
    A pin trace records it beside the time of the write (ordoscan.devtools.pintrace)."""
    at: float | None = getattr(_writing, "at", None)
    return at


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
                self._leds[name] = claim(name, pin, partial(LED, pin, **out))
            if self._tonal:
                # A passive buzzer sounds only from its PWM square wave: polarity does not apply.
                make = partial(
                    TonalBuzzer, cfg.buzzer,
                    mid_tone=Tone(TONAL_MID), octaves=TONAL_OCTAVES, pin_factory=pin_factory,
                )
            else:
                make = partial(Buzzer, cfg.buzzer, **out)
            self._buzzer = claim("buzzer", cfg.buzzer, make)
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
        self._write(Outputs(), None)
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
            self._write(self._machine.outputs(now), now)
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
            self._write(self._machine.outputs(edge), edge)
            after = self._machine.next_change(edge)
            if after is None or after <= edge:
                return
            edge = after

    def _write(self, out: Outputs, at: float | None) -> None:
        """Drive the pins to `out`, the levels of the instant `at` (None: no instant, e.g.
        all off at stop)."""
        _writing.at = at
        try:
            self._write_pins(out)
        finally:
            _writing.at = None

    def _write_pins(self, out: Outputs) -> None:
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
