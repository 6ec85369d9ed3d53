"""Broker failover (mqtt.hosts): two real mosquittos; the node in use dies while scans flow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ordoscan.config import split_host_port
from ordoscan.errors import ConfigError
from ordoscan.message import ScanMessage

from tests.support.mosquitto import Broker, ProvisionedBroker, Subscriber
from tests.support.pki import CertAuthority
from tests.support.relay_proc import InProcessRelay, as_config, relay_config
from tests.support.wait import wait_until

SITE = "pharmacie-test"
PREFIX = f"pharmacy/{SITE}/kiosk/kiosk-01"
TIMEOUT = 60.0


def test_hosts_are_validated_with_the_entry_named() -> None:
    assert split_host_port("broker-b:8884", 8883) == ("broker-b", 8884)
    assert split_host_port("[::1]:1884", 8883) == ("::1", 1884)
    assert split_host_port("broker-a", 8883) == ("broker-a", 8883)
    for bad, words in (("b:99999", "1 to 65535"), ("", "host:port"), ("a b:1", "host:port")):
        with pytest.raises(ConfigError) as e:
            as_config(relay_config(Path("/tmp/x"), port=1883, hosts=["127.0.0.1:1883", bad]))
        assert "mqtt.hosts" in str(e.value) and words in str(e.value)
    with pytest.raises(ConfigError, match=r"non-loopback host 'broker\.example'"):
        as_config(relay_config(Path("/tmp/x"), port=1883, hosts=["127.0.0.1", "broker.example"]))


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    a, b = Broker(tmp_path / "a").start(), Broker(tmp_path / "b").start()
    try:
        yield a, b
    finally:
        a.kill()
        b.kill()


@pytest.mark.parametrize("delivery", ["broker", "pharmacy"])
def test_killing_the_node_in_use_while_scans_flow_loses_nothing(
    tmp_path: Path, two_nodes: tuple[Broker, Broker], delivery: str
) -> None:
    a, b = two_nodes
    subs = [Subscriber(n.host, n.port, [f"{PREFIX}/scan"], client_id="lgo") for n in (a, b)]
    relay = InProcessRelay(relay_config(
        tmp_path / "k", port=1, site=SITE, hosts=[f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
        reconnect=(0.2, 1.0), delivery=delivery, ack_timeout_s=2,
    ))
    acks: list[object] = []
    if delivery == "pharmacy":  # the pharmacy side, on both nodes: acknowledge what arrives
        for s in subs:
            s.client.on_message = ack_on(s, acks)
    try:
        relay.publisher.start()
        wait_until(lambda: relay.publisher.stats()["host"] == f"127.0.0.1:{a.port}", TIMEOUT,
                   "the first node in use")
        rows = relay.put(50)
        wait_until(lambda: len(subs[0].on("/scan")) >= 10, TIMEOUT, "scans through node a")
        a.kill()  # the node in use dies in the middle of the flow
        rows += relay.put(50, start=50)
        wait_until(lambda: relay.publisher.stats()["host"] == f"127.0.0.1:{b.port}", TIMEOUT,
                   "the move to node b")
        relay.wait(lambda: relay.depth() == 0, TIMEOUT, "the outbox drained")
        # every scan sent after the kill reaches the pharmacy (in broker mode, what node a
        # acknowledged and then lost with its process is gone: pharmacy mode closes that)
        wait_until(lambda: {m.seq for m in arrived(subs)} >= {r.seq for r in rows[50:]},
                   TIMEOUT, "every later scan at the pharmacy")
        if delivery == "pharmacy":
            wait_until(lambda: {m.seq for m in arrived(subs)} >= {r.seq for r in rows},
                       TIMEOUT, "every scan at the pharmacy")
    finally:
        relay.close()
        for s in subs:
            s.close()
    got = arrived(subs)
    first: dict[int, ScanMessage] = {}
    order: list[int] = []
    for m in got:
        if m.seq in first:
            assert first[m.seq] == m, "a duplicate is a resend: same scan_id, same content"
            continue
        first[m.seq] = m
        order.append(m.seq)
    lost = {r.seq for r in rows} - set(first)
    print(f"\n{delivery}: 100 scans, node a killed after {len(subs[0].on('/scan'))} arrived "
          f"there; {len(first)} distinct at the pharmacy, {len(got) - len(first)} resend(s), "
          f"{len(lost)} lost")
    assert all(first[r.seq].scan_id == r.scan_id for r in rows if r.seq in first)
    assert order == sorted(order), "first arrivals in seq order"
    if delivery == "pharmacy":
        assert not lost
    else:  # only what the dead node had acknowledged before the kill can be missing
        assert lost <= {r.seq for r in rows[:50]}


def arrived(subs: list[Subscriber]) -> list[ScanMessage]:
    """Scans as the pharmacy saw them: node a's, then node b's (which came later)."""
    return [ScanMessage.from_json(p) for s in subs for p in s.on("/scan")]


def ack_on(sub: Subscriber, acks: list[object]) -> object:
    record = sub.client.on_message

    def on_message(client: object, userdata: object, msg: object) -> None:
        record(client, userdata, msg)  # type: ignore[operator]
        scan = ScanMessage.from_json(msg.payload)  # type: ignore[attr-defined]
        ack = f'{{"scan_id": "{scan.scan_id}", "seq": {scan.seq}}}'
        sub.client.publish(f"{PREFIX}/ack", ack, qos=1)
        acks.append(scan.seq)

    return on_message


def test_tls_is_checked_against_each_hosts_name(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "ca")
    wrong = ca._issue("elsewhere", "server-elsewhere",
                      ["subjectAltName=DNS:elsewhere.example", "extendedKeyUsage=serverAuth"],
                      False)
    right, kiosk = ca.server(), ca.client("kiosk-01")
    nodes = [ProvisionedBroker(tmp_path / name, ca_cert=ca.cert, server_cert=cert.cert,
                               server_key=cert.key, site=SITE).start()
             for name, cert in (("a", wrong), ("b", right))]
    relay = InProcessRelay(relay_config(
        tmp_path / "k", port=8883, site=SITE, tls=True, ca_file=str(ca.cert),
        cert_file=str(kiosk.cert), key_file=str(kiosk.key), reconnect=(0.2, 0.5),
        hosts=[f"127.0.0.1:{n.port}" for n in nodes],
    ))
    try:
        relay.publisher.start()
        wait_until(lambda: relay.publisher.stats()["host"] == f"127.0.0.1:{nodes[1].port}",
                   TIMEOUT, "node b (its certificate names 127.0.0.1)")
        faults = [text for _, text in relay.faults if text]
    finally:
        relay.close()
        for n in nodes:
            n.kill()
    assert any(f.startswith(f"127.0.0.1:{nodes[0].port}: TLS") and "mismatch" in f
               for f in faults), faults
