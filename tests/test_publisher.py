"""Publisher against a real mosquitto: order, message validity, status, outages, commands."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordoscan.backoff import backoff_delay
from ordoscan.clock import SystemClock
from ordoscan.message import ScanMessage

from tests.support.mosquitto import Broker, Subscriber
from tests.support.relay_proc import InProcessRelay, payload_for, relay_config

SITE = "pharmacie-test"
PREFIX = f"pharmacy/{SITE}/kiosk/kiosk-01"


def received_scans(sub: Subscriber) -> list[ScanMessage]:
    return [ScanMessage.from_json(p) for p in sub.on("/scan")]


def assert_delivered_in_order(sub: Subscriber, rows: list[object]) -> None:
    """Every row arrived, first arrivals in seq order; a re-delivery is identical (scan_id)."""
    msgs = received_scans(sub)
    by_seq: dict[int, ScanMessage] = {}
    first_order: list[int] = []
    for m in msgs:
        if m.seq in by_seq:
            assert by_seq[m.seq] == m, f"seq {m.seq} re-delivered with different content"
            continue
        by_seq[m.seq] = m
        first_order.append(m.seq)
    expected = {r.seq: r.scan_id for r in rows}  # type: ignore[attr-defined]
    assert {s: m.scan_id for s, m in by_seq.items()} == expected
    assert first_order == sorted(first_order), "scans must arrive in seq order"
    assert len({m.scan_id for m in msgs}) == len(rows)


@pytest.fixture
def relay(tmp_path: Path, broker: Broker) -> Iterator[InProcessRelay]:
    r = InProcessRelay(relay_config(tmp_path / "kiosk", port=broker.port, site=SITE))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def sub(broker: Broker) -> Iterator[Subscriber]:
    s = Subscriber(broker.host, broker.port, [f"{PREFIX}/#"])
    try:
        yield s
    finally:
        s.close()


# --- back-off -------------------------------------------------------------------------------


def test_backoff_has_jitter_doubles_and_is_capped() -> None:
    low, high = 0.5, 30.0
    rng = random.Random(1234)
    for attempt in range(40):
        ceiling = min(high, low * 2 ** (attempt + 1))
        samples = [backoff_delay(attempt, low, high, rng) for _ in range(200)]
        assert all(low <= d <= ceiling for d in samples), attempt
        # jitter: the delays of one attempt are spread, not one value
        assert statistics.pstdev(samples) > 0.1 * (ceiling - low)
    late = [backoff_delay(30, low, high, rng) for _ in range(500)]
    assert max(late) <= high and max(late) > 0.95 * high  # the cap is reached, never passed
    # two kiosks that lost the broker at the same moment do not retry together
    a, b = random.Random(1), random.Random(2)
    assert [backoff_delay(n, low, high, a) for n in range(8)] != [
        backoff_delay(n, low, high, b) for n in range(8)
    ]


def test_backoff_degenerate_range_is_the_minimum() -> None:
    rng = random.Random(5)
    assert {backoff_delay(n, 2.0, 2.0, rng) for n in range(10)} == {2.0}


# --- delivery -------------------------------------------------------------------------------


def test_scans_delivered_in_order_as_valid_messages(relay: InProcessRelay, sub: Subscriber) -> None:
    rows = relay.put(40)
    relay.publisher.start()
    assert sub.wait_for(lambda s: len(s.on("/scan")) >= 40), relay.publisher.stats()
    assert_delivered_in_order(sub, rows)
    for i, m in enumerate(received_scans(sub)):
        assert m.schema_ == "ordoscan.scan/1"
        assert (m.device_id, m.site, m.kind) == ("kiosk-01", SITE, "ordonnance_numerique")
        assert (m.symbology, m.symbology_id, m.payload) == ("QRCode", "]Q1", payload_for(i))
        assert m.clock_synced is True
    for raw in sub.raw:
        if raw.topic.endswith("/scan"):  # type: ignore[attr-defined]
            props = raw.properties  # type: ignore[attr-defined]
            assert props.ContentType == "application/json"
            # the remaining life of a fresh scan: max_age_h = 24 h, minus a little
            assert 24 * 3600 - 120 <= props.MessageExpiryInterval <= 24 * 3600
            assert raw.qos == 1 and not raw.retain  # type: ignore[attr-defined]
    assert relay.wait(lambda: relay.depth() == 0, 10), "delivered rows leave the outbox"
    assert relay.publisher.stats()["delivered"] == 40
    assert relay.link_up is True and relay.fault is None

    # later scans go out as they are put (wake), still in order
    more = relay.put(5, start=100)
    assert sub.wait_for(lambda s: len(s.on("/scan")) >= 45)
    assert_delivered_in_order(sub, rows + more)


def test_expired_scans_are_not_sent_and_expiry_follows_remaining_life(
    tmp_path: Path, broker: Broker, sub: Subscriber
) -> None:
    now = [1_800_000_000.0]

    class FakeWall(SystemClock):
        """Real monotonic time (the link's timers), a wall clock moved by the test."""

        def wall(self) -> float:
            return now[0]

    relay = InProcessRelay(
        relay_config(tmp_path / "kiosk", port=broker.port, site=SITE, max_age_h=1),
        clock=FakeWall(), outbox_clock=lambda: now[0],
    )
    try:
        old = relay.put(2)  # will be 65 minutes old: expired
        now[0] += 10 * 60
        young = relay.put(1, start=50)  # will be 55 minutes old: 5 minutes left
        now[0] += 55 * 60
        fresh = relay.put(1, start=60)
        relay.publisher.start()
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 2)
        relay.wait(lambda: relay.depth() <= 2, 5)
        got = received_scans(sub)
        assert [m.seq for m in got] == [young[0].seq, fresh[0].seq]
        assert not {r.seq for r in old} & {m.seq for m in got}
        expiry = {m.seq: raw.properties.MessageExpiryInterval  # type: ignore[attr-defined]
                  for m, raw in zip(got, [r for r in sub.raw if r.topic.endswith("/scan")],  # type: ignore[attr-defined]
                                    strict=True)}
        assert 0 < expiry[young[0].seq] <= 5 * 60
        assert 50 * 60 < expiry[fresh[0].seq] <= 3600
    finally:
        relay.close()


def test_status_online_retained_offline_on_clean_stop(
    relay: InProcessRelay, broker: Broker, sub: Subscriber
) -> None:
    def state(s: Subscriber) -> str | None:
        statuses = s.on("/status")
        return json.loads(statuses[-1])["state"] if statuses else None

    relay.publisher.start()
    assert sub.wait_for(lambda s: state(s) == "online")
    # a subscriber that comes later still learns the state: it is retained
    late = Subscriber(broker.host, broker.port, [f"{PREFIX}/status"], client_id="late")
    try:
        assert late.wait_for(lambda s: len(s.messages) >= 1)
        topic, payload, retained = late.messages[0]
        status = json.loads(payload)
        assert retained and topic == f"{PREFIX}/status"
        assert status["state"] == "online"
        assert (status["device_id"], status["site"]) == ("kiosk-01", SITE)
        assert status["version"]
    finally:
        late.close()
    relay.publisher.stop()
    assert not relay.publisher.alive()
    assert sub.wait_for(lambda s: state(s) == "offline")
    assert json.loads(sub.on("/status")[-1])["reason"] == "stopped"
    after = Subscriber(broker.host, broker.port, [f"{PREFIX}/status"], client_id="after")
    try:
        assert after.wait_for(lambda s: len(s.messages) >= 1)
        _, payload, retained = after.messages[0]
        assert retained and json.loads(payload)["state"] == "offline"
    finally:
        after.close()


def test_mqtt_311_delivers_too(tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/#"], protocol=4)
    relay = InProcessRelay(
        relay_config(tmp_path / "kiosk", port=broker.port, site=SITE, protocol="3.1.1")
    )
    try:
        rows = relay.put(25)
        relay.publisher.start()
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 25)
        assert_delivered_in_order(sub, rows)
        assert relay.wait(lambda: relay.depth() == 0, 10)
        assert json.loads(sub.on("/status")[0])["state"] == "online"
        assert "as ordoscan-kiosk-01 (p2," in broker.log()  # mosquitto's name for 3.1.1
    finally:
        relay.close()
        sub.close()


@pytest.mark.parametrize(("window", "broker_max", "expected"), [(3, 20, 3), (20, 5, 5)])
def test_inflight_window_and_the_brokers_receive_maximum(
    tmp_path: Path, window: int, broker_max: int, expected: int
) -> None:
    broker = Broker(tmp_path / "broker", conf=(
        f"listener {{port}} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages {broker_max}\n"
    )).start()
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/scan"])
    relay = InProcessRelay(
        relay_config(tmp_path / "kiosk", port=broker.port, site=SITE, inflight=window)
    )
    try:
        rows = relay.put(200)
        relay.publisher.start()
        assert relay.wait(lambda: relay.depth() == 0, 30)
        stats = relay.publisher.stats()
        assert stats["receive_maximum"] == broker_max  # announced in CONNACK, honoured
        assert stats["inflight_peak"] == expected  # the window filled, and never beyond
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 200)
        assert_delivered_in_order(sub, rows)
    finally:
        relay.close()
        sub.close()
        broker.kill()


# --- outages ----------------------------------------------------------------------------------


def test_broker_outage_scans_queued_then_delivered_in_order(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", persistent=True).start()
    # the pharmacy system holds a persistent session, so the broker keeps its subscription
    sub = Subscriber(broker.host, broker.port, [f"{PREFIX}/scan"], persistent=True)
    relay = InProcessRelay(
        relay_config(tmp_path / "kiosk", port=broker.port, site=SITE, reconnect=(0.2, 1.0))
    )
    try:
        relay.publisher.start()
        first = relay.put(10)
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 10)

        broker.stop()  # clean outage
        assert relay.wait(lambda: relay.link_up is False, 20)
        during = relay.put(30, start=10)
        assert relay.depth() == 30  # queued, durable, not lost
        broker.start()
        assert relay.wait(lambda: relay.depth() == 0, 30), relay.publisher.stats()
        assert relay.link_up is True
        assert sub.wait_for(lambda s: len(s.on("/scan")) >= 40)

        # hard outage (SIGKILL; the kiosk sees its socket reset). Not while draining: what
        # the broker acknowledged and then lost in its own crash is the broker's durability.
        broker.kill()
        during_kill = relay.put(20, start=40)
        broker.start()
        assert relay.wait(lambda: relay.depth() == 0, 30), relay.publisher.stats()
        assert sub.wait_for(lambda s: len({m.seq for m in received_scans(s)}) >= 60)
        assert_delivered_in_order(sub, first + during + during_kill)
        assert relay.publisher.stats()["reconnects"] >= 2
    finally:
        relay.close()
        sub.close()
        broker.kill()


def test_stop_while_broker_down_is_prompt_and_keeps_rows(tmp_path: Path, broker: Broker) -> None:
    relay = InProcessRelay(relay_config(tmp_path / "kiosk", port=broker.port, site=SITE))
    broker.kill()
    try:
        relay.publisher.start()
        relay.put(7)
        assert relay.wait(lambda: relay.link_up is False, 20)
        started = time.monotonic()
        relay.publisher.stop(3.0)
        assert time.monotonic() - started < 10  # bounded; the design budget is 3 s
        assert not relay.publisher.alive()
        assert relay.depth() == 7
        assert relay.publisher.stats()["last_error"]
        assert relay.fault is None  # an unreachable broker is an outage, not a fault
    finally:
        relay.close()


# --- commands, replies, telemetry ----------------------------------------------------------------


def test_commands_replies_and_telemetry(relay: InProcessRelay, sub: Subscriber) -> None:
    # a command left retained would run again at every reconnect: it is ignored
    sub.client.publish(f"{PREFIX}/cmd/identify", b"{}", qos=1, retain=True).wait_for_publish(10)
    relay.publisher.publish_telemetry({"queue_depth": 0})  # offline: dropped, not queued
    relay.publisher.start()
    # "online" is published after the command subscription: from then on commands arrive
    assert sub.wait_for(lambda s: len(s.on("/status")) >= 1)
    assert relay.publisher.stats()["telemetry_dropped"] == 1
    sub.client.publish(f"{PREFIX}/cmd/ping", b'{"id": "42"}', qos=1)
    assert relay.wait(lambda: len(relay.commands) >= 1)
    assert relay.commands == [("ping", b'{"id": "42"}')]  # the retained identify came first

    relay.publisher.reply({"command": "ping", "id": "42", "ok": True})
    relay.publisher.publish_telemetry({"queue_depth": 3, "reads": {"ordonnance_numerique": 2}})
    assert sub.wait_for(lambda s: s.on("/reply") and s.on("/telemetry"))
    assert json.loads(sub.on("/reply")[0]) == {"command": "ping", "id": "42", "ok": True}
    assert json.loads(sub.on("/telemetry")[0])["queue_depth"] == 3
    assert relay.publisher.stats()["telemetry_dropped"] == 1
