"""Feedback on gpiozero's MockFactory: every row of SPEC §4 on the pins, with its timings.

Pin timelines are checked by tests/support/pins.py on InstantPins (each change
stamped with the instant the worker wrote it for, so a worker starved by a loaded
machine keeps its durations): the states in order, each change never early (50 ms,
as gpiozero's own check) and at most 10 ms late; the exact durations are the state
machine's, checked on
a hand-moved clock in test_feedback_machine.py. The test waits for a sequence to finish
through the worker (`wait_idle`) or for a number of pin changes, never by
sleeping a set time, so a loaded machine only makes it slower.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ordoscan.feedback as fb_module
import pytest
from gpiozero import LED
from gpiozero.exc import GPIOPinInUse
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin
from ordoscan.config import GpioConfig
from ordoscan.devtools.clock import ManualClock
from ordoscan.devtools.terminal import TerminalView
from ordoscan.errors import GpioError
from ordoscan.feedback import (
    BEEP_S,
    CHANNELS,
    DIP_GAP_S,
    FAULT_BEEP_S,
    FAULT_BLINK_S,
    FAULT_GAP_S,
    GOOD_READ_DIP_S,
    IDENTIFY_BLINK_S,
    QUEUE_SIZE,
    READY_GAP_S,
    READY_NOTE_S,
    REFUSED_GAP_S,
    REFUSED_RED_S,
    Feedback,
    make_pin_factory,
)
from ordoscan.feedback.pins import claim

from tests.support.pins import InstantPin, InstantPWMPin
from tests.support.pins import assert_timeline as timeline
from tests.support.wait import wait_until

CFG = GpioConfig(pin_factory="mock")
WAIT = 30.0  # generous: only a broken implementation ever waits this long

Timeline = list[tuple[float, Any]]


def pins_of(factory: MockFactory, cfg: GpioConfig = CFG) -> dict[str, Any]:
    return {name: factory.pin(f"GPIO{getattr(cfg, name)}") for name in CHANNELS}


def clear(pins: dict[str, Any]) -> None:
    for pin in pins.values():
        pin.clear_states()


def assert_timeline(pin: Any, expected: Timeline) -> None:
    """The pin went through exactly these (delay, state) steps since clear_states().

    The delay of the first change is the worker's reaction to the call, which
    the design does not fix (a call only enqueues) and a loaded machine may
    stretch at will: it must not come before the call, and is then taken as
    measured. Every later delay is a designed duration, on the instants the
    worker wrote the pins for: never early, never late beyond its look-ahead
    (tests/support/pins.py).
    """
    steps: list[tuple[float | None, Any]] = list(expected)
    if len(steps) > 1 and len(pin.states) > 1:
        first = pin.states[1].timestamp
        assert steps[1][0] - 0.05 <= first, list(pin.states)
        steps[1] = (None, steps[1][1])
    timeline(pin, steps)


def wait_for(predicate: Callable[[], object], what: str = "the pins") -> None:
    wait_until(predicate, WAIT, what, every=0.01)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=InstantPin)
    yield f
    f.close()


@pytest.fixture
def fb(factory: MockFactory) -> Iterator[Feedback]:
    with Feedback(CFG, pin_factory=factory) as feedback:
        yield feedback


def boot(fb: Feedback, pins: dict[str, Any]) -> None:
    fb.start()  # idempotent: a no-op under `with`
    fb.booting()
    fb.ready()
    assert fb.wait_idle(WAIT)
    clear(pins)


def test_booting_all_leds_on(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    assert fb.wait_idle(WAIT)
    clear(pins)
    fb.booting()
    assert fb.wait_idle(WAIT)
    for name in ("green", "amber", "red"):
        assert_timeline(pins[name], [(0.0, False), (0.0, True)])
    assert_timeline(pins["buzzer"], [(0.0, False)])
    assert fb.snapshot() == {"green": True, "amber": True, "red": True, "buzzer": False}


def test_ready_three_beeps_then_green_steady(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    fb.booting()
    assert fb.wait_idle(WAIT)
    clear(pins)
    fb.ready()
    assert fb.wait_idle(WAIT)
    n, g = READY_NOTE_S, READY_GAP_S
    assert_timeline(
        pins["buzzer"],
        [(0.0, False), (0.0, True), (n, False), (g, True), (n, False), (g, True), (n, False)],
    )
    assert_timeline(pins["green"], [(0.0, True)])
    assert_timeline(pins["amber"], [(0.0, True), (0.0, False)])
    assert_timeline(pins["red"], [(0.0, True), (0.0, False)])
    assert fb.snapshot() == {"green": True, "amber": False, "red": False, "buzzer": False}


@pytest.mark.parametrize("event", ["good_read", "repeat"])
def test_good_read_and_repeat(factory: MockFactory, fb: Feedback, event: str) -> None:
    pins = pins_of(factory)
    boot(fb, pins)
    getattr(fb, event)()
    assert fb.wait_idle(WAIT)
    assert_timeline(pins["green"], [(0.0, True), (0.0, False), (GOOD_READ_DIP_S, True)])
    assert_timeline(pins["buzzer"], [(0.0, False), (0.0, True), (BEEP_S, False)])
    assert_timeline(pins["amber"], [(0.0, False)])
    assert_timeline(pins["red"], [(0.0, False)])


def test_two_good_reads_close_together_dip_green_twice(factory: MockFactory) -> None:
    """Two scans committed one frame apart: two dips on the green pin, each of its own length
    with green on between them, beside two beeps (not one long dip). Both events are posted
    before the worker starts, on a clock the test moves, so they are applied at one instant
    however loaded the machine is."""
    pins = pins_of(factory)
    # the pins' first change is stamped from when they were made (this machine's monotonic
    # clock): the test's clock starts there, not at a fixed reading an old machine is past
    clock = ManualClock(monotonic=time.monotonic())
    fb = Feedback(CFG, pin_factory=factory, clock=clock)
    try:
        fb.booting()  # green on (no ready chime: fewer edges for the worker to catch up on)
        fb.good_read()
        fb.good_read()
        fb.start()
        clock.advance(10.0)  # past both dips and beeps: the worker catches up on them, in order
        assert fb.wait_idle(WAIT)
        d, g = GOOD_READ_DIP_S, DIP_GAP_S
        assert_timeline(pins["green"], [(0.0, False), (d, True), (g, False), (d, True)])
        assert [s.state for s in pins["buzzer"].states] == [False, True, False, True, False]
    finally:
        fb.stop()


def test_refused_red_one_second_two_beeps(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    boot(fb, pins)
    fb.refused()
    assert fb.wait_idle(WAIT)
    assert_timeline(pins["red"], [(0.0, False), (0.0, True), (REFUSED_RED_S, False)])
    assert_timeline(
        pins["buzzer"],
        [(0.0, False), (0.0, True), (BEEP_S, False), (REFUSED_GAP_S, True), (BEEP_S, False)],
    )
    assert_timeline(pins["green"], [(0.0, True)])


def test_queued_amber_beside_green(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    boot(fb, pins)
    fb.set_queued(True)
    assert fb.wait_idle(WAIT)
    assert_timeline(pins["amber"], [(0.0, False), (0.0, True)])
    assert fb.snapshot() == {"green": True, "amber": True, "red": False, "buzzer": False}
    pins["amber"].clear_states()
    fb.set_queued(False)
    assert fb.wait_idle(WAIT)
    assert_timeline(pins["amber"], [(0.0, True), (0.0, False)])
    assert_timeline(pins["green"], [(0.0, True)])
    assert_timeline(pins["buzzer"], [(0.0, False)])


def test_fault_red_blinking_and_four_low_beeps_once(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    boot(fb, pins)
    fb.set_fault("camera", True)
    wait_for(lambda: len(pins["red"].states) >= 7 and len(pins["buzzer"].states) >= 9)
    b = FAULT_BLINK_S
    assert_timeline(
        pins["red"],
        [(0.0, False), (0.0, True), (b, False), (b, True), (b, False), (b, True), (b, False)],
    )
    on, gap = FAULT_BEEP_S, FAULT_GAP_S
    assert_timeline(
        pins["buzzer"],
        [(0.0, False)] + [(0.0, True), (on, False)] + [(gap, True), (on, False)] * 3,
    )
    assert not fb.wait_idle(0.0), "a blinking fault is never idle"
    fb.set_fault("camera", True)  # reported again while active: no new beeps
    fb.set_fault("camera", False)
    assert fb.wait_idle(WAIT)
    assert len(pins["buzzer"].states) == 9
    assert fb.snapshot() == {"green": True, "amber": False, "red": False, "buzzer": False}


def test_good_read_during_a_fault_keeps_red_blinking(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    boot(fb, pins)
    fb.set_fault("disk", True)
    wait_for(lambda: len(pins["buzzer"].states) >= 9)  # the fault's beeps are over
    clear(pins)
    fb.good_read()
    wait_for(lambda: len(pins["green"].states) >= 3 and len(pins["buzzer"].states) >= 3)
    assert_timeline(pins["green"], [(0.0, True), (0.0, False), (GOOD_READ_DIP_S, True)])
    assert_timeline(pins["buzzer"], [(0.0, False), (0.0, True), (BEEP_S, False)])
    red = pins["red"]
    wait_for(lambda: len(red.states) >= 4)
    durations = [s.timestamp for s in list(red.states)[2:4]]
    assert durations == pytest.approx([FAULT_BLINK_S, FAULT_BLINK_S], abs=0.05)


def test_identify_blinks_all_then_back(factory: MockFactory, fb: Feedback) -> None:
    pins = pins_of(factory)
    boot(fb, pins)
    fb.identify(1.0)
    assert fb.wait_idle(WAIT)
    h = IDENTIFY_BLINK_S
    # all three in step: on 0.25 s, off 0.25 s, twice; green was on already
    assert_timeline(pins["green"], [(0.0, True), (h, False), (h, True), (h, False), (h, True)])
    for name in ("amber", "red"):
        assert_timeline(pins[name], [(0.0, False), (0.0, True), (h, False), (h, True), (h, False)])
    assert_timeline(pins["buzzer"], [(0.0, False)])
    assert fb.snapshot() == {"green": True, "amber": False, "red": False, "buzzer": False}


def test_identify_lasts_ten_seconds_by_default(factory: MockFactory) -> None:
    clock = ManualClock(monotonic=5000.0)
    with Feedback(CFG, pin_factory=factory, clock=clock) as fb:
        fb.booting()
        fb.ready()
        wait_for(lambda: fb.snapshot()["buzzer"])  # the chime began, at the frozen time
        clock.advance(1.0)  # past the chime
        assert fb.wait_idle(WAIT)
        fb.identify()
        wait_for(lambda: fb.snapshot()["amber"])  # identify began: amber lit without a queue
        clock.advance(9.8)  # an off half of the blinking, still within the 10 s
        wait_for(lambda: not any(fb.snapshot().values()))
        clock.advance(0.3)  # 10.1 s: over, back to ready
        assert fb.wait_idle(WAIT)
        assert fb.snapshot() == {"green": True, "amber": False, "red": False, "buzzer": False}


def test_active_low_inverts_every_pin(factory: MockFactory) -> None:
    cfg = GpioConfig(pin_factory="mock", active_high=False)
    pins = pins_of(factory, cfg)
    with Feedback(cfg, pin_factory=factory) as fb:
        assert fb.wait_idle(WAIT)
        assert [pins[n].state for n in CHANNELS] == [True, True, True, True]  # off is high
        assert fb.snapshot() == dict.fromkeys(CHANNELS, False)
        boot(fb, pins)
        fb.good_read()
        assert fb.wait_idle(WAIT)
        assert_timeline(pins["green"], [(0.0, False), (0.0, True), (GOOD_READ_DIP_S, False)])
        assert_timeline(pins["buzzer"], [(0.0, True), (0.0, False), (BEEP_S, True)])
        assert_timeline(pins["red"], [(0.0, True)])
        assert fb.snapshot() == {"green": True, "amber": False, "red": False, "buzzer": False}
    assert [pins[n].state for n in CHANNELS] == [True, True, True, True]  # closed: all off


class FrequencyPin(InstantPWMPin):
    """gpiozero's PWM mock pin (stamped with the worker's instants), also keeping every
    frequency it was set to."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.frequencies: list[float | None] = []

    def _set_frequency(self, value: float | None) -> None:
        super()._set_frequency(value)
        self.frequencies.append(value)


def test_tonal_buzzer_notes(factory: MockFactory) -> None:
    factory = MockFactory(pin_class=FrequencyPin)
    cfg = GpioConfig(pin_factory="mock", buzzer_type="tonal")
    buzzer = factory.pin(f"GPIO{cfg.buzzer}")
    with Feedback(cfg, pin_factory=factory) as fb:
        fb.booting()
        assert fb.wait_idle(WAIT)
        buzzer.clear_states()
        buzzer.frequencies.clear()
        fb.ready()
        assert fb.wait_idle(WAIT)
        n, g = READY_NOTE_S, READY_GAP_S
        assert_timeline(buzzer, [(0.0, 0), (0.0, 0.5), (n, 0), (g, 0.5), (n, 0), (g, 0.5), (n, 0)])
        ready = [f for f in buzzer.frequencies if f is not None]
        assert len(ready) == 3 and ready[0] < ready[1] < ready[2], ready

        def notes_of(event: Callable[[], None]) -> list[float]:
            buzzer.frequencies.clear()
            event()
            assert fb.wait_idle(WAIT)
            return [f for f in buzzer.frequencies if f is not None]

        good = notes_of(fb.good_read)
        refused = notes_of(fb.refused)
        buzzer.frequencies.clear()
        fb.set_fault("camera", True)
        wait_for(lambda: sum(f is not None for f in buzzer.frequencies) >= 4)
        fault = [f for f in buzzer.frequencies if f is not None]
        assert len(good) == 1 and len(refused) == 2 and len(fault) == 4
        assert max(fault) < min(refused) < good[0]  # refusals low, faults lower still
        assert good[0] > ready[0]


def test_tonal_buzzer_needs_a_pwm_pin() -> None:
    factory = MockFactory(pin_class=MockPin)
    cfg = GpioConfig(pin_factory="mock", buzzer_type="tonal")
    with pytest.raises(GpioError, match=r"gpio\.buzzer = BCM pin 18"):
        Feedback(cfg, pin_factory=factory)
    LED(cfg.green, pin_factory=factory).close()  # what was claimed before the failure is released


def test_calls_never_block_while_a_sequence_plays(factory: MockFactory) -> None:
    """On the feedback's clock, held still: the refusal cannot end, so a call that waited for
    it (or for any sequence it queues) would never return; enqueueing returns at once."""
    clock = ManualClock(monotonic=3000.0)
    red = pins_of(factory)["red"]
    with Feedback(CFG, pin_factory=factory, clock=clock) as fb:
        fb.ready()
        wait_for(lambda: fb.snapshot()["buzzer"], "the chime")
        clock.advance(1.0)  # past the chime
        assert fb.wait_idle(WAIT)
        fb.refused()  # a 1 s sequence starts, and lasts while the clock stands still
        wait_for(lambda: red.state, "the refusal")
        finished = threading.Event()

        def burst() -> None:
            for _ in range(20):
                fb.good_read()
                fb.repeat()
                fb.set_queued(True)
                fb.identify(0)
                fb.snapshot()
            finished.set()

        threading.Thread(target=burst, daemon=True).start()
        assert finished.wait(WAIT), "a caller waited for the sequence to end"
        assert red.state and not fb.wait_idle(0.0), "the refusal is still playing"
        clock.advance(fb_module.REFUSED_RED_S)  # then it ends and the calls are shown
        wait_for(lambda: not red.state, "the refusal to end")


class GatedPin(MockPin):
    """A mock pin whose writes hang until the gate opens: a stuck GPIO driver."""

    gate: threading.Event
    entered: threading.Event

    def _set_state(self, value: bool) -> None:
        if not self.gate.is_set():
            self.entered.set()
            self.gate.wait(WAIT)
        super()._set_state(value)


def test_calls_never_block_when_the_worker_is_stuck(factory: MockFactory) -> None:
    green = factory.pin("GPIO17", pin_class=GatedPin)
    green.gate, green.entered = threading.Event(), threading.Event()
    green.gate.set()
    pins = pins_of(factory)
    fb = Feedback(CFG, pin_factory=factory)
    try:
        boot(fb, pins)
        green.gate.clear()
        fb.good_read()  # the worker hangs writing green
        assert green.entered.wait(WAIT)
        finished = threading.Event()

        def burst() -> None:
            for _ in range(1000):
                fb.good_read()
                fb.refused()
            fb.set_fault("disk", True)
            fb.set_queued(True)
            fb.snapshot()
            finished.set()

        threading.Thread(target=burst, daemon=True).start()
        assert finished.wait(WAIT), "a caller blocked on a stuck worker"
        assert fb.dropped_events >= 2000 - QUEUE_SIZE  # bounded: the oldest cosmetic ones went
        green.gate.set()
        # the fault and the queue state were never dropped
        wait_for(lambda: pins["amber"].state and len(pins["red"].states) >= 4)
    finally:
        green.gate.set()
        fb.stop()


def test_close_does_not_hang_on_a_stuck_pin(factory: MockFactory) -> None:
    red = factory.pin("GPIO22", pin_class=GatedPin)
    red.gate, red.entered = threading.Event(), threading.Event()
    red.gate.set()
    fb = Feedback(CFG, pin_factory=factory)
    fb.start()
    try:
        assert fb.wait_idle(WAIT)
        red.gate.clear()
        fb.refused()
        assert red.entered.wait(WAIT)
        closer = threading.Thread(target=fb.stop, args=(0.5,), daemon=True)
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive()
    finally:
        red.gate.set()


def test_close_turns_all_off_and_releases_the_pins(factory: MockFactory) -> None:
    pins = pins_of(factory)
    fb = Feedback(CFG, pin_factory=factory)
    fb.start()
    fb.booting()
    fb.set_fault("camera", True)
    wait_for(lambda: pins["buzzer"].state)
    fb.stop()
    assert [pins[n].state for n in CHANNELS] == [False, False, False, False]
    assert fb.snapshot() == dict.fromkeys(CHANNELS, False)
    fb.good_read()  # after close: ignored, no error
    fb.stop()  # twice: harmless
    fb.start()  # after stop: stays stopped
    for name in CHANNELS:
        LED(getattr(CFG, name), pin_factory=factory).close()  # free again


def test_pin_in_use_is_a_clear_error(factory: MockFactory) -> None:
    holder = LED(CFG.red, pin_factory=factory)
    try:
        with pytest.raises(GpioError, match=r"gpio\.red = BCM pin 22: already in use"):
            Feedback(CFG, pin_factory=factory)
        LED(CFG.green, pin_factory=factory).close()  # claimed before the failure, then released
    finally:
        holder.close()


def test_pin_not_on_the_board_is_a_clear_error(factory: MockFactory) -> None:
    cfg = GpioConfig(pin_factory="mock", amber=40)
    with pytest.raises(GpioError, match=r"gpio\.amber = BCM pin 40: not a GPIO pin"):
        Feedback(cfg, pin_factory=factory)


@pytest.mark.parametrize("buzzer_type", ["active", "tonal"])
def test_mock_factory_from_the_config(buzzer_type: str) -> None:
    with Feedback(GpioConfig(pin_factory="mock", buzzer_type=buzzer_type)) as fb:
        fb.booting()
        fb.good_read()
        wait_for(lambda: fb.snapshot()["buzzer"])
        assert fb.wait_idle(WAIT)
        assert fb.snapshot() == {"green": True, "amber": True, "red": True, "buzzer": False}


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio is installed here")
def test_lgpio_missing_is_a_clear_error() -> None:
    with pytest.raises(GpioError, match=r"gpio\.pin_factory = 'lgpio': cannot be loaded.*mock"):
        Feedback(GpioConfig(pin_factory="lgpio"))


def test_unknown_factory_is_a_clear_error() -> None:
    with pytest.raises(GpioError, match=r"gpio\.pin_factory = 'nope': unknown pin factory"):
        make_pin_factory("nope")


class FailingPin(MockPin):
    """A mock pin that fails when driven high: a broken GPIO line."""

    def _set_state(self, value: bool) -> None:
        if value:
            raise OSError(5, "Input/output error")
        super()._set_state(value)


def test_a_pin_that_cannot_be_driven_is_reported_once(
    factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    factory.pin("GPIO17", pin_class=FailingPin)
    pins = pins_of(factory)
    caplog.set_level(logging.WARNING, logger="ordoscan.feedback")
    with Feedback(CFG, pin_factory=factory) as fb:
        fb.booting()
        assert fb.wait_idle(WAIT)
        fb.ready()
        assert fb.wait_idle(WAIT)
        fb.good_read()
        fb.refused()
        assert fb.wait_idle(WAIT)
        # the other pins still work: red went on for the booting and the refusal, and off after
        assert [s.state for s in pins["red"].states] == [False, True, False, True, False]
    warnings = [r.getMessage() for r in caplog.records if "could not be driven" in r.getMessage()]
    assert len(warnings) == 1
    assert "gpio.green (BCM pin 17)" in warnings[0]


def test_terminal_view_line() -> None:
    view = TerminalView(lambda: {}, io.StringIO(), color=False)
    line = view.line({"green": True, "amber": False, "red": False, "buzzer": True})
    assert line == "● green  ○ amber  ○ red  ♪"
    assert view.line(dict.fromkeys(CHANNELS, False)).rstrip() == "○ green  ○ amber  ○ red"
    colored = TerminalView(lambda: {}, io.StringIO(), color=True).line({"red": True})
    assert "\x1b[31m●\x1b[0m red" in colored


def test_terminal_view_ascii_when_the_terminal_cannot_show_symbols() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    view = TerminalView(lambda: {}, stream, color=False)
    assert view.line({"green": True, "buzzer": True}) == "(*) green  ( ) amber  ( ) red  beep"


def test_terminal_view_follows_the_pins(factory: MockFactory, fb: Feedback) -> None:
    stream = io.StringIO()
    with TerminalView(fb.snapshot, stream, interval=0.01, color=False) as view:
        fb.booting()
        wait_for(lambda: "● green  ● amber  ● red" in stream.getvalue())
        fb.ready()
        wait_for(lambda: "● green  ○ amber  ○ red  ♪" in stream.getvalue())
        assert fb.wait_idle(WAIT)
        wait_for(lambda: stream.getvalue().endswith("● green  ○ amber  ○ red\n"))
        view.write_line("pharmacy received …YGHZ")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "○ green  ○ amber  ○ red"
    assert lines[-1] == "pharmacy received …YGHZ"
    assert all(a != b for a, b in itertools.pairwise(lines)), "one line per change"


def _feedback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "feedback" and t.is_alive()]


def test_the_worker_runs_from_start_to_stop(factory: MockFactory) -> None:
    pins = pins_of(factory)
    before = len(_feedback_threads())
    fb = Feedback(CFG, pin_factory=factory)  # pins claimed, no thread yet
    try:
        assert len(_feedback_threads()) == before
        fb.booting()  # posted before start(): shown once the worker runs
        assert not fb.wait_idle(0.2)
        assert [p.state for p in pins.values()] == [False, False, False, False]
        fb.start()
        fb.start()  # idempotent: one worker
        assert len(_feedback_threads()) == before + 1
        assert fb.wait_idle(WAIT)
        assert fb.snapshot() == {"green": True, "amber": True, "red": True, "buzzer": False}
    finally:
        fb.stop(1.0)
    fb.stop(1.0)
    wait_for(lambda: len(_feedback_threads()) == before, "the worker to end")
    assert [p.state for p in pins.values()] == [False, False, False, False]


def test_stop_without_start_releases_the_pins(factory: MockFactory) -> None:
    Feedback(CFG, pin_factory=factory).stop()
    for name in CHANNELS:
        LED(getattr(CFG, name), pin_factory=factory).close()  # free again


class _LibraryPinBusy(GPIOPinInUse):
    """A pin library's own subclass of gpiozero's in-use error, with its own wording."""


def test_claim_goes_by_gpiozero_exception_types(factory: MockFactory) -> None:
    def taken() -> None:
        raise _LibraryPinBusy("GPIO22 is held by another process")

    with pytest.raises(GpioError, match=r"gpio\.red = BCM pin 22: already in use \(GPIO22 is held"):
        claim("red", 22, taken)


def test_each_signal_is_logged_at_debug(
    factory: MockFactory, fb: Feedback, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ordoscan.feedback")
    fb.booting()
    fb.ready()
    fb.good_read()
    fb.refused()
    fb.set_queued(True)
    fb.set_fault("camera", True)
    fb.identify(2)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert lines == [
        "signal: booting: green, amber and red on",
        "signal: ready: three rising beeps, green steady",
        "signal: good read: green dips, one beep",
        "signal: refused: red for 1 s, two low beeps",
        "signal: queued: amber on",
        "signal: fault camera: red blinking, four low beeps",
        "signal: identify: all LEDs blinking for 2 s",
    ]


def test_mock_pins_come_through_the_gpiozero_entry_point() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="gpiozero_pin_factories")}
    assert names["ordoscan-mock"] == "ordoscan.devtools.pintrace:mock_factory"
    assert names["ordoscan-mock-pwm"] == "ordoscan.devtools.pintrace:mock_pwm_factory"
    factory = make_pin_factory("mock", pwm=True)
    try:
        assert isinstance(factory, MockFactory)
        assert issubclass(factory.pin_class, MockPWMPin)
    finally:
        factory.close()


def test_a_late_worker_still_shows_each_beep_apart(factory: MockFactory) -> None:
    """Woken late (a loaded machine), the worker shows the missed silence between two notes
    of the ready chime, rather than merging them into one long beep."""
    clock = ManualClock(monotonic=7000.0)
    buzzer = pins_of(factory)["buzzer"]
    with Feedback(CFG, pin_factory=factory, clock=clock) as fb:
        fb.booting()
        fb.ready()
        wait_for(lambda: buzzer.state, "the first note")
        clock.advance(READY_NOTE_S + READY_GAP_S + 0.05)  # past the gap, into the second note
        wait_for(lambda: len(buzzer.states) >= 4, "the second note")
        assert [s.state for s in buzzer.states][:4] == [False, True, False, True]
