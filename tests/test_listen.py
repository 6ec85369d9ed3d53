"""`ordoscan listen`: the reference subscriber, run as the integrator would run it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from ordoscan.commands.listen import RecentIds
from ordoscan.message import ScanMessage
from ordoscan.outbox import Outbox
from paho.mqtt.enums import CallbackAPIVersion

from tests.support import child_env
from tests.support.listen_proc import Listen, printed_lines
from tests.support.mosquitto import Broker, ProvisionedBroker
from tests.support.pki import CertAuthority
from tests.support.relay_proc import (
    InProcessRelay,
    as_config,
    put_scans,
    relay_config,
    write_config,
)

ROOT = Path(__file__).resolve().parents[1]
SITE = "pharmacie-test"
PREFIX = f"pharmacy/{SITE}/kiosk/kiosk-01"


def scan_bodies(tmp_path: Path, count: int) -> list[bytes]:
    """Genuine ordoscan.scan/1 messages, made by the outbox."""
    with Outbox(tmp_path / "bodies.sqlite3", max_messages=100, max_age_h=1,
                device_id="kiosk-01", site=SITE) as outbox:
        return [row.body for row in put_scans(outbox, count)]


def publish_all(broker: Broker, items: list[bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for body in items:
            client.publish(f"{PREFIX}/scan", body, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_listen_prints_each_scan_once_and_reports_invalid_messages(
    tmp_path: Path, broker: Broker
) -> None:
    config = write_config(relay_config(tmp_path, port=broker.port, site=SITE),
                          tmp_path / "listen.toml")
    a, b, c = scan_bodies(tmp_path, 3)
    listen = Listen("--config", str(config), "--count", "3")
    assert listen.wait_listening(), listen.err
    not_json = b"\xff\xfe not json"
    wrong = json.dumps({**json.loads(a), "seq": 0, "kind": "ins"}).encode()
    publish_all(broker, [a, a, not_json, wrong, b, a, c])
    rc, lines = listen.finish()
    assert rc == 0, listen.err
    assert [json.loads(line) for line in lines] == [json.loads(x) for x in (a, b, c)]
    for line in lines:
        ScanMessage.from_json(line)  # each printed line is a valid message
    invalid = [e for e in listen.err if "invalid message on" in e]
    assert len(invalid) == 2
    assert "seq" in invalid[1] and "kind" in invalid[1]
    payload = json.loads(a)["payload"]
    assert not any(payload in e for e in listen.err)  # stderr never echoes a message
    assert "3 scan(s) printed, 2 duplicate(s) skipped, 2 invalid message(s)" in listen.err[-1]


def test_listen_with_the_lgo_certificate_shows_what_a_kiosk_relays(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "ca")
    server, kiosk, lgo = ca.server(), ca.client("kiosk-01"), ca.client("lgo")
    broker = ProvisionedBroker(tmp_path / "broker", ca_cert=ca.cert, server_cert=server.cert,
                               server_key=server.key, site=SITE).start()
    try:
        # the pharmacy side: the kiosk's topics, the LGO's identity
        lgo_cfg = relay_config(tmp_path / "lgo", port=broker.port, site=SITE, tls=True,
                               ca_file=str(ca.cert), cert_file=str(lgo.cert),
                               key_file=str(lgo.key))
        listen = Listen("--config", str(write_config(lgo_cfg, tmp_path / "lgo.toml")),
                        "--count", "5")
        assert listen.wait_listening(), listen.err
        relay = InProcessRelay(relay_config(
            tmp_path / "kiosk", port=broker.port, site=SITE, tls=True, ca_file=str(ca.cert),
            cert_file=str(kiosk.cert), key_file=str(kiosk.key),
        ))
        try:
            rows = relay.put(5)
            relay.publisher.start()
            rc, lines = listen.finish(60)
        finally:
            relay.close()
        assert rc == 0, listen.err
        printed = [ScanMessage.from_json(line) for line in lines]
        assert [(m.seq, m.scan_id) for m in printed] == [(r.seq, r.scan_id) for r in rows]
        assert printed[0].payload == "01T000000000000000"  # unmasked: this is the LGO's view
    finally:
        broker.kill()


def test_listen_bad_usage_and_config_exit_2(tmp_path: Path) -> None:
    rc, _ = Listen("--config", str(tmp_path / "missing.toml")).finish()
    assert rc == 2
    config = write_config(relay_config(tmp_path, port=1883), tmp_path / "ok.toml")
    listen = Listen("--config", str(config), "--count", "-1")
    rc, _ = listen.finish()
    assert rc == 2 and any("--count -1" in e for e in listen.err)


def test_listen_refuses_a_world_readable_key(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "ca")
    lgo = ca.client("lgo")
    os.chmod(lgo.key, 0o644)
    cfg = relay_config(tmp_path, port=8883, host="broker.example", tls=True,
                       ca_file=str(ca.cert), cert_file=str(lgo.cert), key_file=str(lgo.key))
    as_config(cfg)  # a valid configuration: the refusal is about the file's mode
    listen = Listen("--config", str(write_config(cfg, tmp_path / "l.toml")))
    rc, _ = listen.finish()
    assert rc == 1
    assert any(f"chmod 600 {lgo.key}" in e for e in listen.err)


def test_recent_ids_is_bounded_and_forgets_the_oldest() -> None:
    ids = RecentIds(size=3)
    assert [ids.add(x) for x in "abca"] == [True, True, True, False]
    assert ids.add("d")  # "b" is now the oldest and is forgotten
    assert ids.add("b") and not ids.add("d")
    assert len(ids._ids) == 3


def test_listen_waits_for_a_broker_that_is_not_there_yet(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    config = write_config(
        relay_config(tmp_path, port=broker.port, site=SITE, reconnect=(0.2, 0.5)),
        tmp_path / "listen.toml",
    )
    listen = Listen("--config", str(config), "--count", "1")
    try:
        deadline = time.monotonic() + 30
        while not any("retrying in" in e for e in listen.err) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any("connection refused" in e for e in listen.err)
        broker.start()
        assert listen.wait_listening(), listen.err
        publish_all(broker, scan_bodies(tmp_path, 1))
        rc, lines = listen.finish()
        assert rc == 0 and len(lines) == 1
    finally:
        if listen.proc.poll() is None:
            listen.proc.kill()
        broker.kill()


def test_listen_misses_nothing_sent_while_it_is_away(tmp_path: Path, broker: Broker) -> None:
    config = write_config(relay_config(tmp_path, port=broker.port, site=SITE),
                          tmp_path / "listen.toml")
    bodies = scan_bodies(tmp_path, 6)
    want = [json.loads(b)["scan_id"] for b in bodies]
    first = Listen("--config", str(config))
    assert first.wait_listening(), first.err
    publish_all(broker, bodies[:2])
    out = printed_lines(first)
    printed = [json.loads(out.get(timeout=60))["scan_id"] for _ in range(2)]
    first.proc.kill()  # SIGKILL: no goodbye to the broker
    first.proc.wait(10)
    publish_all(broker, bodies[2:])  # sent while no listener runs
    again = Listen("--config", str(config))
    out = printed_lines(again)
    try:
        while not set(want) <= set(printed):
            printed.append(json.loads(out.get(timeout=60))["scan_id"])
    except queue.Empty:
        pass
    finally:
        again.proc.terminate()
        again.proc.wait(10)
    # at least once: one killed before its acknowledgement went out may come again
    assert list(dict.fromkeys(printed)) == want, printed


def test_listen_help_says_payloads_are_in_clear_and_the_session_persists() -> None:
    out = subprocess.run([sys.executable, "-m", "ordoscan", "listen", "--help"], cwd=ROOT,
                         env=child_env(), capture_output=True,
                         text=True, timeout=60)
    text = " ".join(out.stdout.split())
    assert "IN CLEAR" in text and "persistent session" in text
    assert "misses nothing sent while it reconnects" in text
