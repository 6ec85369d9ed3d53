"""End to end, in one process: replay camera → the whole App → a real mosquitto,
LEDs and buzzer on gpiozero's MockFactory.

Each scene is one frame (one file in the followed replay folder). Before each,
the pins' histories are cleared; after it, the test waits until the frame is
handled and the feedback is idle, then checks every pin's states and the time
between its changes with gpiozero's assert_states_and_times. The reaction
time (frame to first edge) is not asserted here: it is the pipeline
benchmark's business; the durations of the signals are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordoscan.message import ScanMessage

from tests.support.kiosk import (
    GOOD_READ,
    NOTHING,
    PREFIX,
    REFUSED,
    Kiosk,
    assert_pin,
    payloads,
    scene,
    start_kiosk,
    steady,
    wait_ready,
    wait_until,
)
from tests.support.mosquitto import Broker, Subscriber


@pytest.fixture
def kiosk(tmp_path: Path, broker: Broker) -> Iterator[Kiosk]:
    k = start_kiosk(tmp_path, broker.port, mqtt={"telemetry_interval_s": 1})
    try:
        yield k
    finally:
        k.app.stop()



def scans(sub: Subscriber) -> list[ScanMessage]:
    return [ScanMessage.from_json(p) for p in sub.on("/scan")]


def test_boot_then_ready(kiosk: Kiosk) -> None:
    wait_ready(kiosk)
    p = kiosk.pins
    # booting: all on; ready: amber and red off, green stays, three rising beeps
    assert_pin("green", p["green"], [(False, 0.0), (True, None)])
    assert_pin("amber", p["amber"], [(False, 0.0), (True, None), (False, None)])
    assert_pin("red", p["red"], [(False, 0.0), (True, None), (False, None)])
    from ordoscan.feedback import READY_GAP_S, READY_NOTE_S

    note, gap = READY_NOTE_S, READY_GAP_S
    assert_pin("buzzer", p["buzzer"], [(False, 0.0), (True, None), (False, note), (True, gap),
                                       (False, note), (True, gap), (False, note)])


def test_scene_sequence_messages_and_signals(
    kiosk: Kiosk, broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ordoscan")
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/#"], client_id="e2e-pharmacy")
    try:
        wait_ready(kiosk)
        expected_payloads = []
        for kind, seed in (("ordonnance", 0), ("ordonnance", 2), ("phone_dark", 0)):
            kiosk.show(kind, seed)
            kiosk.assert_signals(GOOD_READ)
            expected_payloads += payloads(scene(kind, seed), "ordonnance_numerique")
            n = len(expected_payloads)
            assert sub.wait_for(lambda s, n=n: len(s.on("/scan")) >= n, 30), f"scan {n} missing"

        kiosk.show("medicine_pack", 0)
        kiosk.assert_signals(REFUSED)
        kiosk.show("blank", 0)
        kiosk.assert_signals(NOTHING)
        kiosk.show("ordonnance", 0, "again")  # a repeat: the same signal, not sent again
        kiosk.assert_signals(GOOD_READ)

        # telemetry counts what happened (it is sent every second)
        assert sub.wait_for(lambda s: any(
            json.loads(t)["scans"]["duplicates"] == 1 for t in s.on("/telemetry")), 30)
        received = scans(sub)
        assert [m.payload for m in received] == expected_payloads
        assert [m.seq for m in received] == [1, 2, 3]
        assert {m.kind for m in received} == {"ordonnance_numerique"}
        assert {(m.symbology, m.symbology_id) for m in received} == {("QRCode", "]Q1")}
        assert all(m.device_id == "kiosk-e2e" for m in received)
        assert kiosk.app.outbox is not None
        assert kiosk.app.outbox.stats().last_seq == 3  # nothing else was ever queued
        telemetry = json.loads(sub.on("/telemetry")[-1])
        assert telemetry["scans"]["reads"] == {"medicine_pack": 1, "ordonnance_numerique": 3}
        assert telemetry["scans"]["refusals"] == {"medicine_pack": 1}
        assert telemetry["scans"]["ignored"] == {"ins": 1}
        assert telemetry["queue"]["depth"] == 0
        assert telemetry["camera"]["state"] in ("ok", "idle")
        assert telemetry["broker"]["connected"] is True
        assert set(telemetry["system"]) >= {"cpu_temp_c", "throttled", "disk_free_bytes"}
        assert telemetry["scans"]["decode_ms"]["window"] >= 6
    finally:
        kiosk.app.stop()
        sub.wait_for(lambda s: any(b'"offline"' in p for p in s.on("/status")), 10)
        sub.close()

    # The INS code of scene 2 appears nowhere: not in a message, a log line or a file.
    ins = payloads(scene("ordonnance", 2), "ins")
    assert len(ins) == 1
    secret = ins[0].encode()
    everything = b"".join(p for _, p, _ in sub.messages)
    assert secret not in everything and secret[4:] not in everything
    assert ins[0] not in caplog.text and ins[0][4:] not in caplog.text
    for f in tmp_path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert secret not in data and secret[4:] not in data, f"INS content in {f}"
    # and the delivered prescriptions are not kept either
    for f in (tmp_path / "outbox").iterdir():
        data = f.read_bytes()
        for p in expected_payloads:
            assert p.encode() not in data, f"a delivered payload is still in {f.name}"
    # logs show payloads masked only
    for p in expected_payloads:
        assert p not in caplog.text
        assert "…" + p[-4:] in caplog.text


def test_broker_down_amber_scans_held_then_delivered(tmp_path: Path) -> None:
    # a broker that remembers the pharmacy's persistent session across a SIGKILL
    broker = Broker(tmp_path / "broker", persistent=True).start()
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/scan"], client_id="e2e-held",
                     persistent=True)
    k = start_kiosk(tmp_path, broker.port)
    try:
        wait_ready(k)
        assert wait_until(lambda: k.app.publisher is not None and k.app.publisher.connected, 30)
        # the subscription must be on disk before the broker dies
        assert wait_until(lambda: (tmp_path / "broker" / "mosquitto.db").exists(), 30)
        broker.kill()
        assert wait_until(lambda: k.app.status()["broker"] == "unreachable", 30)

        k.show("ordonnance", 0)
        # good read as usual; then amber comes on (beside green) and stays on
        k.assert_signals(GOOD_READ | {"amber": [(False, 0.0), (True, None)]})
        k.show("phone_light", 1)
        k.assert_signals(GOOD_READ | {"amber": steady(True)})
        assert k.app.outbox is not None
        assert k.app.outbox.stats().depth == 2  # held, on disk

        for pin in k.pins.values():
            pin.clear_states()
        broker.start()
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 2, 60), "held scans not delivered"
        assert wait_until(lambda: k.app.outbox is not None and k.app.outbox.stats().depth == 0, 30)
        assert wait_until(lambda: not k.pins["amber"].state, 30)
        assert_pin("amber", k.pins["amber"], [(True, 0.0), (False, None)])
        assert_pin("green", k.pins["green"], steady(True))
        got = scans(sub)
        assert [m.seq for m in got] == [1, 2]
        assert [m.payload for m in got] == (
            payloads(scene("ordonnance", 0), "ordonnance_numerique")
            + payloads(scene("phone_light", 1), "ordonnance_numerique"))
    finally:
        k.app.stop()
        sub.close()
        broker.kill()
