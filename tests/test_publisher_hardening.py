"""The broker side against hostile or confusing conditions, with a real mosquitto each time:
invisible refusals (MQTT 3.1.1), one huge command, a command flood, two kiosks with one id,
the per-scan delivery line, and a clean broker stop named as such."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from ordoscan.publisher.connection import FAULT_DUPLICATE_ID
from ordoscan.remote import Remote
from ordoscan.security import INVISIBLE_REFUSAL
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.kiosk import DEVICE, start_kiosk, wait_ready
from tests.support.kiosk import SITE as KIOSK_SITE
from tests.support.mosquitto import Broker
from tests.support.relay_proc import InProcessRelay, RelayProcess, relay_config, write_config
from tests.support.wait import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parents[1]
SITE = "pharmacie-test"
PREFIX = f"pharmacy/{SITE}/kiosk/kiosk-01"


class Lines(logging.Handler):
    """Every log record of the kiosk's loggers, formatted as the journal would hold it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("ordoscan"):
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def scan_acl_broker(tmp_path: Path) -> Broker:
    """Anonymous clients may do everything of the kiosk except publish its scans."""
    acl = tmp_path / "broker" / "acl"
    acl.parent.mkdir(parents=True, exist_ok=True)
    acl.write_text("".join(
        f"topic readwrite {PREFIX}/{t}\n" for t in ("status", "telemetry", "reply", "cmd/#", "ack")
    ) + f"topic read {PREFIX}/scan\n")
    conf = f"listener {{port}} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
    if os.geteuid() == 0:  # else mosquitto drops to its own user and cannot read the ACL here
        conf += "user root\n"
    return Broker(tmp_path / "broker", conf=conf).start()


def ordoscan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ordoscan", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


# --- item 3: a refusal MQTT 3.1.1 cannot show -----------------------------------------------


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_check_publishes_on_the_scan_topic_with_the_kiosks_identity(
    tmp_path: Path, protocol: str
) -> None:
    broker = scan_acl_broker(tmp_path)
    try:
        config = write_config(relay_config(tmp_path / "k", port=broker.port, site=SITE,
                                           protocol=protocol), tmp_path / "k.toml")
        from ordoscan.commands.check import check_broker, check_config

        _, cfg = check_config(str(config))
        assert cfg is not None
        refused = check_broker(cfg)
        acl = tmp_path / "broker" / "acl"
        acl.write_text(acl.read_text() + f"topic write {PREFIX}/scan\n")
        broker.reload()
        allowed = check_broker(cfg)
    finally:
        broker.kill()
    if protocol == "5":
        assert refused.status == "FAIL" and refused.data["publish_ok"] is False
        assert f"refuses this kiosk's scans on {PREFIX}/scan" in refused.detail
        assert "Not authorized (0x87)" in refused.detail
        assert allowed.status == "ok" and allowed.data["publish_ok"] is True
        assert "was accepted" in allowed.detail
    else:  # both look alike: say it plainly
        for r in (refused, allowed):
            assert r.status == "warn" and r.data["publish_ok"] is None
            assert "cannot be known" in r.detail and "MQTT 3.1.1" in r.detail


def test_config_validate_and_the_start_log_say_a_311_refusal_is_invisible(
    tmp_path: Path, broker: Broker, lines: Lines
) -> None:
    data = relay_config(tmp_path / "k", port=broker.port, site=SITE, protocol="3.1.1")
    out = ordoscan("config", "validate", "--config", str(write_config(data, tmp_path / "k.toml")))
    assert out.returncode == 0 and "valid" in out.stdout
    assert f"warning: {INVISIBLE_REFUSAL}" in out.stdout
    five = relay_config(tmp_path / "k5", port=broker.port, site=SITE)
    out5 = ordoscan("config", "validate", "--config", str(write_config(five, tmp_path / "5.toml")))
    assert out5.returncode == 0 and "warning" not in out5.stdout
    relay = InProcessRelay(data)
    try:
        relay.publisher.start()
        wait_until(lambda: relay.link_up, 20, "the 3.1.1 link")
    finally:
        relay.close()
    assert any(INVISIBLE_REFUSAL in line and line.startswith("WARNING") for line in lines.lines)


# --- item 8: one huge command ----------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory now and at its peak (VmHWM: a buffer freed again still shows there)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def test_a_huge_command_never_reaches_the_kiosks_memory(tmp_path: Path, broker: Broker) -> None:
    size = 64 * 1024 * 1024
    config = write_config(relay_config(tmp_path / "k", port=broker.port, site=SITE),
                          tmp_path / "k.toml")
    relay = RelayProcess(config)
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker")
    try:
        assert relay.wait_line("LINK up"), relay.seen
        sender.connect(broker.host, broker.port)
        sender.loop_start()

        def ping_reaches_it() -> bool:  # the kiosk subscribes just after "LINK up"
            sender.publish(f"{PREFIX}/cmd/ping", b"", qos=1).wait_for_publish(10)
            try:
                return relay.wait_line("CMD ping 0", 0.5)
            except WaitTimeout:
                return False

        wait_until(ping_reaches_it, 30, "a command to reach the kiosk")
        before = rss_kib(relay.proc.pid)
        sender.publish(f"{PREFIX}/cmd/ping", b"x" * size, qos=1).wait_for_publish(60)
        sender.publish(f"{PREFIX}/cmd/identify", b"", qos=1).wait_for_publish(10)
        assert relay.wait_line("CMD identify 0", 60), relay.seen  # in order: the big one is gone
        after = rss_kib(relay.proc.pid)
    finally:
        sender.disconnect()
        sender.loop_stop()
        relay.terminate()
    print(f"\nkiosk memory around a {size // 2**20} MiB command: RSS {before[0]} -> {after[0]} "
          f"KiB, peak {before[1]} -> {after[1]} KiB")
    assert not any(line.startswith(f"CMD ping {size}") for line in relay.seen)
    assert after[1] - before[1] < 8 * 1024, (before, after)  # not even briefly held


def test_an_oversized_command_is_refused_unread_with_311(
    tmp_path: Path, broker: Broker, lines: Lines
) -> None:
    relay = InProcessRelay(relay_config(tmp_path / "k", port=broker.port, site=SITE,
                                        protocol="3.1.1"))
    replies: list[dict[str, object]] = []
    remote = Remote(device_id="kiosk-01", identify=lambda s: None, status=dict,
                    reply=replies.append)
    relay.handler = remote.handle
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker")
    try:
        relay.publisher.start()
        wait_until(lambda: relay.link_up, 20, "link")
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        sender.publish(f"{PREFIX}/cmd/ping", b'{"id": "' + b"9" * 5000 + b'"}',
                       qos=1).wait_for_publish(10)
        relay.wait(lambda: len(relay.commands) >= 1, 20)
    finally:
        sender.disconnect()
        sender.loop_stop()
        relay.close()
    assert relay.publisher.side.commands_oversized == 1
    assert len(replies) == 1 and replies[0]["ok"] is False  # one reply, as for any refusal
    assert "over the limit of 1024" in str(replies[0]["error"]) and "id" not in replies[0]
    assert any("command ping refused unread: 5010 bytes, over the limit of 1024" in line
               for line in lines.lines)


# --- item 9: a flood of commands -------------------------------------------------------------


def test_a_command_flood_and_a_huge_name_do_not_flood_the_log(
    tmp_path: Path, broker: Broker, lines: Lines
) -> None:
    # MQTT 3.1.1: the kiosk cannot ask the broker to hold back big packets (the long name)
    relay = InProcessRelay(relay_config(tmp_path / "k", port=broker.port, site=SITE,
                                        protocol="3.1.1"))
    remote = Remote(device_id="kiosk-01", identify=lambda s: None, status=dict,
                    reply=relay.publisher.reply)
    relay.handler = remote.handle
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood")
    pings = 20_000
    long_name = "n" * 60_000
    try:
        relay.publisher.start()
        wait_until(lambda: relay.link_up, 20, "link")
        sender.connect(broker.host, broker.port)
        sender.loop_start()
        before = len(lines.lines)
        for _ in range(pings):
            sender.publish(f"{PREFIX}/cmd/ping", b"", qos=0)
        # published last: once it is in, the flood has been handled (the broker keeps order)
        sender.publish(f"{PREFIX}/cmd/{long_name}", b"", qos=1).wait_for_publish(60)
        relay.wait(lambda: bool(relay.commands) and relay.commands[-1][0] == long_name, 240,
                   "the flood to be handled")
        received = relay.publisher.side.commands_received
        # one more, past the throttle's interval (1 s): its line says how many were held
        # back, also when a fast machine handled the whole flood within the interval
        time.sleep(1.2)
        sender.publish(f"{PREFIX}/cmd/ping", b"", qos=1).wait_for_publish(60)
        wait_until(lambda: relay.publisher.side.commands_received > received, 60, "the last ping")
    finally:
        sender.disconnect()
        sender.loop_stop()
        relay.close()
    during = lines.lines[before:]
    print(f"\n{received - 1} empty pings + one 60,000-character command name reached the kiosk: "
          f"{len(during)} log line(s), longest {max(len(x) for x in during)} characters")
    assert received > pings // 2  # the flood did reach the kiosk
    assert len(during) < 100, during[:20]
    assert max(len(x) for x in during) < 400
    assert any("similar line(s) not logged" in x for x in during)


# --- item 13: two kiosks with one device.id ---------------------------------------------------


def test_two_kiosks_with_one_id_raise_duplicate_id(tmp_path: Path, broker: Broker) -> None:
    kiosk = start_kiosk(tmp_path / "a", broker.port, mqtt={"reconnect_min_s": 0.2,
                                                           "reconnect_max_s": 0.5})
    twin: InProcessRelay | None = None
    try:
        wait_ready(kiosk)
        app = kiosk.app
        wait_until(lambda: app.status()["broker"] == "connected", 20, "the kiosk's link")
        twin = InProcessRelay(relay_config(tmp_path / "b", port=broker.port, device_id=DEVICE,
                                           site=KIOSK_SITE, reconnect=(0.2, 0.5)))
        twin.publisher.start()
        wait_until(lambda: FAULT_DUPLICATE_ID in app.faults(), 30, "duplicate_id")
        assert FAULT_DUPLICATE_ID in app.status()["faults"]
        assert app.telemetry()["broker"]["duplicate_id"] is True
        assert FAULT_DUPLICATE_ID in app.telemetry()["broker"]["faults"]
        red = kiosk.pins["red"]
        red.clear_states()
        wait_until(lambda: len(red.states) >= 3, 10, "red blinking")
    finally:
        if twin is not None:
            twin.close()
        kiosk.app.stop()


# --- item 16 and item 20: what the journal says ----------------------------------------------


def test_each_delivery_is_logged_and_a_clean_broker_stop_is_named(
    tmp_path: Path, lines: Lines
) -> None:
    broker = Broker(tmp_path / "broker").start()
    relay = InProcessRelay(relay_config(tmp_path / "k", port=broker.port, site=SITE,
                                        reconnect=(0.2, 0.5)))
    try:
        rows = relay.put(3)
        relay.publisher.start()
        relay.wait(lambda: relay.depth() == 0, 20)
        broker.stop()  # SIGTERM: mosquitto closes every socket without a DISCONNECT
        wait_until(lambda: relay.link_up is False, 20, "the link to drop")
    finally:
        relay.close()
        broker.kill()
    for row in rows:
        shown = "…" + f"{row.seq - 1:015d}"[-4:]
        assert any(f"scan {shown} seq {row.seq} delivered to the broker" in x for x in lines.lines)
    lost = [x for x in lines.lines if "connection lost" in x]
    assert lost and "the broker closed the connection without a word" in lost[0], lost
    assert not any("Unspecified error" in x for x in lines.lines)
