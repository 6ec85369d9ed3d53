"""ordoscan.devtools.pintrace: the mock pins' changes, as the virtual rig reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gpiozero import LED, TonalBuzzer
from gpiozero.tones import Tone
from ordoscan.devtools.pintrace import PIN_TRACE_ENV
from ordoscan.feedback import make_pin_factory


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
