"""End-to-end delivery (mqtt.delivery = "pharmacy"): a scan leaves the kiosk only once the
pharmacy system has it in its own store. Real mosquitto, the real publisher and outbox, and
`ordoscan listen --ack` as the pharmacy side; brokers that drop what they acknowledged."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from ordoscan.devtools.clock import ManualClock
from ordoscan.outbox import Outbox
from ordoscan.publisher.delivery import parse_ack
from ordoscan.publisher.window import DeliveryWindow

from tests.support.listen_proc import Listen, printed_lines
from tests.support.mosquitto import Broker
from tests.support.relay_proc import InProcessRelay, RelayProcess, relay_config, write_config
from tests.support.wait import wait_until

SITE = "pharmacie-test"
PREFIX = f"pharmacy/{SITE}/kiosk/kiosk-01"
TIMEOUT = 60.0


# --- the window's rules, without a broker ------------------------------------------------------


def test_a_good_puback_is_not_enough_and_an_overdue_scan_is_sent_again_in_order() -> None:
    clock = ManualClock()
    w = DeliveryWindow(size=3, confirm=True, ack_timeout_s=30.0)
    w.opened(None)
    for seq in (1, 2, 3):
        w.sent_scan(seq, seq, f"s{seq}", f"…000{seq}")
    for mid in (1, 2, 3):
        sent = w.answered(mid)
        assert sent is not None
        w.delivered(sent, clock.monotonic())
    assert w.take_acks() == []  # the broker has them; the outbox keeps them
    assert w.room_for_scans(clock.monotonic()) == 0  # they hold their place in the window
    assert w.confirmed(2, "another id", clock.monotonic()) is None  # a forged ack: nothing
    assert w.confirmed(2, "s2", clock.monotonic()) is not None
    assert w.take_acks() == [2] and w.room_for_scans(clock.monotonic()) == 1
    clock.advance(29.0)
    assert w.overdue(clock.monotonic()) == []
    assert w.deadline(clock.monotonic()) == pytest.approx(clock.monotonic() + 1.0)
    clock.advance(1.0)
    late = w.overdue(clock.monotonic())
    assert [seq for seq, _ in late] == [1, 3]
    assert w.room_for_scans(clock.monotonic()) == 3 and w.cursor == 0  # again from the first


def test_acks_are_sized_and_checked_before_use() -> None:
    assert parse_ack(b'{"scan_id": "abc", "seq": 4}') == (4, "abc")
    assert "over the limit" in str(parse_ack(b" " * 2000))
    for bad in (b"[]", b"nope", b'{"scan_id": "abc", "seq": true}', b'{"seq": 3}'):
        assert isinstance(parse_ack(bad), str), bad


# --- with a real broker ------------------------------------------------------------------------


def lossy_broker(tmp_path: Path, extra: str = "") -> Broker:
    """A broker that acknowledges scans and then drops what an away subscriber cannot queue."""
    conf = "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1\n" + extra
    if os.geteuid() == 0 and extra:  # else mosquitto drops to its own user and cannot read here
        conf += "user root\n"
    return Broker(tmp_path / "broker", conf=conf).start()


def pharmacy_side(tmp_path: Path, port: int, protocol: str = "5") -> Path:
    return write_config(relay_config(tmp_path / "lgo", port=port, site=SITE, protocol=protocol),
                        tmp_path / "lgo.toml")


def stored_ids(store: Path) -> list[str]:
    with sqlite3.connect(store) as db:
        return [r[0] for r in db.execute("SELECT scan_id FROM scans ORDER BY seq")]


def stored_seqs(store: Path) -> list[int]:
    with sqlite3.connect(store) as db:
        return [r[0] for r in db.execute("SELECT seq FROM scans ORDER BY seq")]


def start_listen(config: Path, store: Path) -> Listen:
    listen = Listen("--config", str(config), "--ack", "--store", str(store))
    assert listen.wait_listening(), listen.err
    return listen


@pytest.mark.parametrize("delivery", ["broker", "pharmacy"])
def test_a_broker_that_drops_after_its_puback_cannot_lose_a_scan_in_pharmacy_mode(
    tmp_path: Path, delivery: str
) -> None:
    broker = lossy_broker(tmp_path)
    store = tmp_path / "lgo.sqlite3"
    lgo = pharmacy_side(tmp_path, broker.port)
    relay = InProcessRelay(relay_config(tmp_path / "k", port=broker.port, site=SITE,
                                        delivery=delivery, ack_timeout_s=1))
    try:
        away = start_listen(lgo, store)  # makes its persistent session, then is killed
        away.proc.kill()
        away.proc.wait(10)
        rows = relay.put(10)
        relay.publisher.start()
        # the broker acknowledged every scan, and kept one for the pharmacy (queue of 1)
        relay.wait(lambda: relay.publisher.stats()["delivered"] >= 10, TIMEOUT, "10 PUBACKs")
        back = start_listen(lgo, store)
        out = printed_lines(back)
        if delivery == "pharmacy":
            relay.wait(lambda: relay.depth() == 0, TIMEOUT, "every scan confirmed")
        else:
            assert relay.depth() == 0  # gone from the kiosk on the PUBACK alone
            out.get(timeout=TIMEOUT)  # the one the broker kept
            wait_until(lambda: relay.publisher.stats()["delivered"] >= 10, 5, "settle")
        back.proc.terminate()
        back.proc.wait(20)
        stats = relay.publisher.stats()
    finally:
        relay.close()
        broker.kill()
    got = stored_ids(store)
    print(f"\n{delivery}: 10 scans, {len(got)} in the pharmacy's store; kiosk sent "
          f"{stats['delivered']} publish(es), {stats['resent']} resent after the ack timeout")
    if delivery == "pharmacy":
        assert got == [r.scan_id for r in rows]
        assert stats["confirmed"] == 10 and stats["sent_unconfirmed"] == 0
    else:
        assert len(got) < 10  # the hole that end-to-end delivery closes


def test_an_invisible_311_refusal_cannot_lose_a_scan_in_pharmacy_mode(tmp_path: Path) -> None:
    acl = tmp_path / "broker" / "acl"
    acl.parent.mkdir(parents=True)
    allowed = "".join(f"topic readwrite {PREFIX}/{t}\n"
                      for t in ("status", "telemetry", "reply", "cmd/#", "ack"))
    acl.write_text(allowed + f"topic read {PREFIX}/scan\n")
    broker = lossy_broker(tmp_path, f"acl_file {acl}\n")
    store = tmp_path / "lgo.sqlite3"
    relay = InProcessRelay(relay_config(tmp_path / "k", port=broker.port, site=SITE,
                                        protocol="3.1.1", delivery="pharmacy", ack_timeout_s=1))
    listen = start_listen(pharmacy_side(tmp_path, broker.port, "3.1.1"), store)
    try:
        rows = relay.put(3)
        relay.publisher.start()
        # MQTT 3.1.1: the refused scans are acknowledged like any other, then dropped...
        relay.wait(lambda: relay.publisher.stats()["resent"] >= 3, TIMEOUT, "a resend")
        assert relay.depth() == 3  # ...but they stay on the kiosk
        assert "not confirmed by the pharmacy" in str(relay.fault)
        acl.write_text(allowed + f"topic readwrite {PREFIX}/scan\n")
        broker.reload()
        relay.wait(lambda: relay.depth() == 0, TIMEOUT, "every scan confirmed")
        relay.wait(lambda: relay.fault is None, TIMEOUT, "the fault to clear")
    finally:
        listen.proc.terminate()
        listen.proc.wait(20)
        relay.close()
        broker.kill()
    assert stored_ids(store) == [r.scan_id for r in rows]


def kiosk_depth(data: dict[str, Any]) -> int:
    with Outbox(data["outbox"]["path"], max_messages=20000, max_age_h=24, device_id="kiosk-01",
                site=SITE, readonly=True) as outbox:
        return int(outbox.stats().depth)


def test_sigkill_of_the_kiosk_and_of_the_pharmacy_side_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    store = tmp_path / "lgo.sqlite3"
    lgo = pharmacy_side(tmp_path, broker.port)
    data = relay_config(tmp_path / "k", port=broker.port, site=SITE, delivery="pharmacy",
                        ack_timeout_s=2, reconnect=(0.2, 0.5))
    config = write_config(data, tmp_path / "k.toml")
    printed: list[str] = []
    try:
        listen = start_listen(lgo, store)
        out = printed_lines(listen)
        kiosk = RelayProcess(config, produce=120)
        assert kiosk.wait_line("READY")
        wait_until(lambda: len(kiosk.puts) >= 40, TIMEOUT, "40 scans queued")
        kiosk.kill()  # mid-flow, scans in flight and unconfirmed
        first = list(kiosk.puts)
        while not out.empty():
            printed.append(json.loads(out.get())["scan_id"])
        listen.proc.kill()  # the pharmacy side too
        listen.proc.wait(10)
        kiosk = RelayProcess(config, produce=40, start=1000)
        assert kiosk.wait_line("READY")
        listen = start_listen(lgo, store)
        out = printed_lines(listen)
        wait_until(lambda: len(kiosk.puts) >= 40, TIMEOUT, "40 more scans queued")
        want = {scan_id for _, scan_id in first + kiosk.puts}
        wait_until(lambda: want <= set(stored_ids(store)), TIMEOUT * 2, "every scan stored")
        wait_until(lambda: kiosk_depth(data) == 0, TIMEOUT, "every confirmation at the kiosk")
        assert kiosk.terminate() == 0
        listen.proc.terminate()
        listen.proc.wait(20)
        while not out.empty():
            printed.append(json.loads(out.get())["scan_id"])
    finally:
        broker.kill()
    left = kiosk_depth(data)
    stored = stored_ids(store)
    print(f"\nkiosk and pharmacy side SIGKILLed: {len(want)} scans queued, {len(stored)} stored, "
          f"{len(printed)} printed, {left} left on the kiosk")
    # no loss: every scan the test saw queued, and every seq the kiosk ever gave (one killed
    # between its commit and its PUT line is queued too); no duplicate row
    assert want <= set(stored) and len(stored) == len(set(stored))
    assert stored_seqs(store) == list(range(1, len(stored) + 1))
    assert len(printed) == len(set(printed))  # each printed once, across restarts
    assert left == 0
