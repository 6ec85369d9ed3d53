"""Benchmark: the relay (outbox + publisher) against bare paho, same mosquitto, same run.

- put latency: a durable outbox.put() while the publisher is relaying, against a
  bare sqlite3 insert with the same durability (WAL, synchronous=FULL);
- drain: 10,000 scans put while the broker is down, then the broker started;
  timed from the connection to the last PUBACK (rows deleted in batches);
- bare paho: the same 10,000 bodies published by a plain QoS 1 loop_start()
  client with the same in-flight window, no outbox, no persistence.

Targets: the drain under 10 s, and at least half the bare paho throughput.
"""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import Broker
from tests.support.relay_proc import InProcessRelay, put_scans, relay_config

DRAIN = 10_000
PUTS = 500
WINDOW = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_sqlite_put_latencies(path: Path, body: bytes, count: int) -> list[float]:
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        c.execute("INSERT INTO q (body) VALUES (?)", (body,))
        out.append(time.perf_counter() - t0)
    c.close()
    return out


def bare_paho_publish(broker: Broker, bodies: list[bytes], topic: str) -> float:
    """Seconds from the first publish() to the last PUBACK, paho's own loop thread."""
    acked = threading.Event()
    count = [0]

    def on_publish(*_: object) -> None:
        count[0] += 1
        if count[0] == len(bodies):
            acked.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-paho",
                         protocol=mqtt.MQTTv5)  # the kiosk's default protocol: like for like
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        t0 = time.perf_counter()
        for body in bodies:
            client.publish(topic, body, qos=1)
        assert acked.wait(120), f"bare paho: {count[0]} of {len(bodies)} acknowledged"
        return time.perf_counter() - t0
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.bench
def test_relay_drain_and_put_latency_against_bare_paho(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    relay = InProcessRelay(relay_config(tmp_path / "kiosk", port=broker.port, inflight=WINDOW,
                                        reconnect=(0.05, 0.2)))
    try:
        # --- drain after an outage -----------------------------------------------------------
        relay.publisher.start()  # the broker is down: the publisher retries meanwhile
        rows = put_scans(relay.outbox, DRAIN)
        assert relay.depth() == DRAIN
        broker.start()
        assert relay.wait(lambda: relay.link_up is True, 30)
        t_link = relay.links[-1][0]
        while relay.publisher.stats()["delivered"] < DRAIN:
            time.sleep(0.005)
        drain_s = time.monotonic() - t_link
        assert relay.wait(lambda: relay.depth() == 0, 10), "acknowledged rows must be deleted"

        # --- put latency while relaying --------------------------------------------------------
        latencies = []
        for i in range(PUTS):
            t0 = time.perf_counter()
            relay.outbox.put(kind="ordonnance_numerique", symbology="QRCode", symbology_id="]Q1",
                             payload=f"01B{i:015d}", clock_synced=True)
            latencies.append(time.perf_counter() - t0)
            relay.publisher.wake()
        assert relay.wait(lambda: relay.publisher.stats()["delivered"] == DRAIN + PUTS, 30)
        raw_latencies = bare_sqlite_put_latencies(tmp_path / "raw.sqlite3", rows[0].body, PUTS)
    finally:
        relay.close()

    # --- the same bodies through bare paho, same broker ---------------------------------------
    try:
        bare_s = bare_paho_publish(broker, [r.body for r in rows], relay.publisher.topic_scan)
    finally:
        broker.kill()

    ours_rate, bare_rate = DRAIN / drain_s, DRAIN / bare_s
    ms = 1000.0
    print()
    print(f"relay benchmark: mosquitto on loopback, MQTT 5, QoS 1, window {WINDOW}, "
          "no subscriber")
    print(f"{'measure':<46}{'ordoscan':>12}{'bare':>12}{'ratio':>8}")
    print(f"{'put latency p50 (ms), durable':<46}{percentile(latencies, .5) * ms:>12.2f}"
          f"{percentile(raw_latencies, .5) * ms:>12.2f}"
          f"{percentile(latencies, .5) / percentile(raw_latencies, .5):>8.2f}")
    print(f"{'put latency p99 (ms), durable':<46}{percentile(latencies, .99) * ms:>12.2f}"
          f"{percentile(raw_latencies, .99) * ms:>12.2f}"
          f"{percentile(latencies, .99) / percentile(raw_latencies, .99):>8.2f}")
    print(f"{f'drain {DRAIN:,} queued scans (s)':<46}{drain_s:>12.2f}{bare_s:>12.2f}"
          f"{drain_s / bare_s:>8.2f}")
    print(f"{'throughput (scans/s)':<46}{ours_rate:>12.0f}{bare_rate:>12.0f}"
          f"{ours_rate / bare_rate:>8.2f}")
    print("(bare: sqlite3 insert with the same durability; paho loop_start, no outbox)")
    print(f"put latency mean {statistics.mean(latencies) * ms:.2f} ms over {PUTS} puts")

    assert drain_s < 10.0, f"{DRAIN} scans drained in {drain_s:.1f} s (target: under 10 s)"
    assert ours_rate >= 0.5 * bare_rate, "the relay must reach half the bare paho throughput"
