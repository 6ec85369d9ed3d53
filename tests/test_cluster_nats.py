"""A clustered engine: three NATS 2.9 servers (JetStream, MQTT streams replicated on all
three). The node the kiosk is connected to is killed while scans flow, then started
again; the pharmacy side holds a persistent session on another node.

Reported (run with -s to see it): delivered, repeats, lost, and how long the kiosk took
to be connected again. With `mqtt.hosts` the kiosk lists every node and moves to the
next one; a configuration without it can only name one node and waits for it to return.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ordoscan.config import MqttConfig

from tests.support.brokers.nats import NatsCluster
from tests.support.mosquitto import Subscriber
from tests.support.relay_proc import InProcessRelay, relay_config
from tests.support.wait import wait_until
from tests.test_brokers_engines import first_arrivals

SITE = "pharmacie-test"
SCANS = 300
TIMEOUT = 90.0
HAS_HOSTS = "hosts" in MqttConfig.model_fields


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    c = NatsCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield c
    finally:
        c.stop()


def node_settings(cluster: NatsCluster) -> dict[str, Any]:
    first = cluster.nodes[0]
    if HAS_HOSTS:
        return {"hosts": cluster.hosts}
    return {"host": first.host, "port": first.port}


def test_the_node_in_use_dies_while_scans_flow(cluster: NatsCluster, tmp_path: Path) -> None:
    device = "k-cluster"
    # the pharmacy side on the last node, with a persistent session: it holds what the
    # cluster acknowledged while it was away
    sub = Subscriber(cluster.nodes[2].host, cluster.nodes[2].port,
                     [f"pharmacy/{SITE}/kiosk/{device}/scan"], client_id="lgo-cluster",
                     protocol=4, persistent=True, timeout=TIMEOUT)
    m = node_settings(cluster)
    relay = InProcessRelay(relay_config(
        tmp_path / device, device_id=device, site=SITE, protocol="3.1.1", keepalive_s=10,
        reconnect=(0.2, 2.0), **({"port": cluster.nodes[0].port} | m),
    ))
    rows: list[Any] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.wait(0.02) and len(rows) < SCANS:
            rows.extend(relay.put(1, start=len(rows)))

    producer = threading.Thread(target=produce, daemon=True)
    try:
        relay.publisher.start()
        wait_until(lambda: relay.link_up, TIMEOUT, "the kiosk connected to the cluster")
        producer.start()
        wait_until(lambda: len(first_arrivals(sub)[0]) >= 60, TIMEOUT, "the first scans")
        victim = cluster.nodes[0]  # the first of the list: the node in use
        links_before = len(relay.links)
        killed_at = time.monotonic()
        victim.kill()
        # the kiosk notices (the socket closes) and connects again, elsewhere if it can
        wait_until(lambda: any(up for _, up in relay.links[links_before:]) or not HAS_HOSTS,
                   TIMEOUT, "the kiosk connected to another node")
        time.sleep(0 if HAS_HOSTS else 1.0)  # a single-host kiosk: an outage of ~1 s
        victim.start()
        wait_until(lambda: any(up for _, up in relay.links[links_before:]), TIMEOUT,
                   "the kiosk connected again")
        moved_s = next(t for t, up in relay.links[links_before:] if up) - killed_at
        producer.join(TIMEOUT)
        stop.set()
        assert len(rows) == SCANS
        wait_until(lambda: relay.depth() == 0, TIMEOUT, "the outbox drained")
        try:
            wait_until(lambda: len(first_arrivals(sub)[0]) == SCANS, TIMEOUT,
                       "every scan at the pharmacy side")
        finally:
            order, repeats = first_arrivals(sub)
            lost = sorted({r.seq for r in rows} - set(order))
            print(f"\ncluster failover ({'mqtt.hosts' if HAS_HOSTS else 'one host'}): "
                  f"{len(order)} delivered, {repeats} repeats, {len(lost)} lost, "
                  f"connected again {moved_s:.2f} s after the kill")
        assert not lost, f"lost seq {lost[:20]}"
        assert order == sorted(order), "first arrivals out of seq order"
    finally:
        stop.set()
        relay.close()
        sub.close()
