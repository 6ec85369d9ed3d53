"""ordoscan.devtools.pintrace: the mock pins' changes, as the virtual rig reads them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gpiozero import LED, TonalBuzzer
from gpiozero.pins.mock import MockFactory
from gpiozero.tones import Tone
from ordoscan.config import GpioConfig
from ordoscan.devtools.clock import ManualClock
from ordoscan.devtools.pintrace import PIN_TRACE_ENV, traced_mock_factory
from ordoscan.feedback import Feedback, make_pin_factory

from tests.hil.rig import wait_until
from tests.hil.signals import DIP_MAX_S, SOUND_LATE_S, WRITE_GROUP_S, Change, decode
from tests.hil.virtual import trace_change


def lines(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mock_pins_append_their_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "pins.jsonl"
    monkeypatch.setenv(PIN_TRACE_ENV, str(trace))
    factory = make_pin_factory("mock")
    led = LED(17, pin_factory=factory, initial_value=False)
    try:
        led.on()
        led.on()  # no change, no line
        led.off()
    finally:
        led.close()
        factory.close()
    got = lines(trace)
    assert [(r["bcm"], r["value"]) for r in got] == [(17, 1), (17, 0)]
    assert got[0]["t"] <= got[1]["t"]
    assert {r["pid"] for r in got} == {os.getpid()}


def test_a_tonal_buzzer_traces_its_duty_cycle(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    trace = tmp_path / "pins.jsonl"
    monkeypatch.setenv(PIN_TRACE_ENV, str(trace))
    factory = make_pin_factory("mock", pwm=True)
    buzzer = TonalBuzzer(18, pin_factory=factory, mid_tone=Tone("A5"), octaves=3)
    try:
        buzzer.play(Tone(frequency=880.0))
        buzzer.stop()
    finally:
        buzzer.close()
        factory.close()
    values = [r["value"] for r in lines(trace) if r["bcm"] == 18]
    assert values[0] == 0.5 and values[-1] == 0  # sounding: a square wave; then silent


def test_no_trace_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIN_TRACE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    factory = make_pin_factory("mock")
    led = LED(17, pin_factory=factory)
    led.on()
    led.close()
    factory.close()
    assert list(tmp_path.iterdir()) == []
    assert factory.pin_class.__name__ == "MockPin"


class _SlowWrites:
    """Each pin write comes a little after the previous one: a worker thread preempted between
    the writes of one state change, as on a loaded machine."""

    def _change_state(self, value: Any) -> bool:
        time.sleep(WRITE_GROUP_S + 0.01)
        changed: bool = super()._change_state(value)  # type: ignore[misc]
        return changed


def test_a_starved_feedback_worker_keeps_the_lengths_of_its_signals(tmp_path: Path) -> None:
    """A feedback worker starved as on a loaded machine: preempted between the writes of one
    state change, woken late (the edges it missed are then written one after the other, at
    once: here its clock jumps ahead while it waits), and slow to see the kiosk ready. The
    trace keeps the instant each level belongs to, and the rig decodes the signals from it;
    read by the time of the writes, the same trace shows other signals."""
    trace = tmp_path / "pins.jsonl"
    traced = traced_mock_factory(str(trace))
    factory = MockFactory(pin_class=type("SlowTracedPin", (_SlowWrites, traced.pin_class), {}))
    clock = ManualClock(monotonic=5000.0)
    fb = Feedback(GpioConfig(pin_factory="mock"), pin_factory=factory, clock=clock)

    def wait_lines(pred: Callable[[list[dict[str, float]]], bool]) -> None:
        assert wait_until(lambda: pred(lines(trace)), 30.0)

    def written(bcm: int, value: int) -> Callable[[list[dict[str, float]]], bool]:
        return lambda got: any((r["bcm"], r["value"]) == (bcm, value) for r in got)

    try:
        fb.booting()
        fb.start()
        wait_lines(written(22, 1))  # red on: booting (all on)
        time.sleep(SOUND_LATE_S + 0.1)  # a slow start: the kiosk is ready this much later
        clock.advance(SOUND_LATE_S + 0.1)
        fb.ready()
        wait_lines(written(18, 1))  # the ready tune has begun
        clock.advance(5.0)  # starved through the whole tune
        assert fb.wait_idle(30.0)
        fb.good_read()
        wait_lines(written(17, 0))  # green off: the dip has begun (the only time it is off)
        time.sleep(DIP_MAX_S + 0.1)  # starved through the dip and its beep
        clock.advance(1.0)
        assert fb.wait_idle(30.0)
        got = lines(trace)
    finally:
        fb.stop()
        traced.close()
    assert all("due" in r for r in got)  # every write of the worker carries its instant
    assert all("due" not in r for r in lines(trace)[len(got):])  # all off at stop: none
    changes = [c for c in map(trace_change, got) if c is not None]
    assert [e.token for e in decode(changes, 5010.0)] == ["ready(3)", "good_read(1)"]
    by_write = [Change(float(r["t"]), c.channel, c.on) for r, c in zip(got, changes, strict=True)]
    seen = [e.token for e in decode(by_write, float(got[-1]["t"]) + 5.0)]
    assert "ready(3)" not in seen and "good_read(1)" not in seen, seen
