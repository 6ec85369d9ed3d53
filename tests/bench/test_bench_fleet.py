"""Benchmark: a fleet of N simulated kiosks (the real Outbox and Publisher, many per process)
against a 3-node NATS cluster (JetStream, replicas 3), the pharmacy side reading through
a JetStream pull consumer (NATS 2.9's MQTT has no MQTT 5 shared subscriptions).

For each back-off, with jitter and without: the fleet connects, queues one scan each and
drains; then the whole cluster is killed, every kiosk queues ORDOSCAN_FLEET_BACKLOG more
scans while it is down, and the cluster is started again. Measured from that start: the
peak rate of connection attempts (any 1 s window), the time until every kiosk is
connected again, the time until every outbox is empty and the consumer has every scan,
and the scans lost (queued on a kiosk, never seen by the consumer).

    ./dev bench -k fleet                        # N = 250
    ORDOSCAN_FLEET_N=2000 ./dev bench -k fleet  # the target, on a machine with the cores

The outboxes live on tmpfs (/dev/shm when there): 2,000 SQLite files fsync'ed on one disk
would measure that disk, where each real kiosk has its own SD card. docs/FLEET.md uses
these figures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ordoscan.devtools.fleet import PER_PROCESS, Fleet, peak_rate

from tests.support.brokers.nats import JetStreamConsumer, NatsCluster

# 250 is what a shared 2-core machine completes (docs/FLEET.md); 2,000 needs more cores
N = int(os.environ.get("ORDOSCAN_FLEET_N", "250"))
BACKLOG = int(os.environ.get("ORDOSCAN_FLEET_BACKLOG", "2"))
OUTAGE_S = 10.0
LIMIT_S = 900.0


def poll(fleet: Fleet, done: Callable[[dict[str, Any]], bool], what: str,
         attempts: list[float]) -> float:
    """Seconds until done(stats); every connection attempt seen meanwhile goes to attempts."""
    t0 = time.monotonic()
    while True:
        stats = fleet.stats()
        attempts.extend(stats["attempts"])
        if done(stats):
            print(f"fleet: {what} after {time.monotonic() - t0:.1f} s", flush=True)
            return time.monotonic() - t0
        if time.monotonic() - t0 > LIMIT_S:
            raise AssertionError(f"fleet of {fleet.n}: {what} not reached in {LIMIT_S:g} s: "
                                 f"{stats['connected']} connected, {stats['depth']} queued")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="ordoscan-fleet-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.bench
@pytest.mark.timeout(3 * 3600)  # two fleets of 2,000 on 2 cores: far beyond the 300 s default
def test_fleet_restart_of_the_whole_cluster(workdir: Path) -> None:
    cluster = NatsCluster(workdir / "cluster").start()
    consumer = JetStreamConsumer([f"127.0.0.1:{n.client_port}" for n in cluster.nodes])
    rows: list[dict[str, Any]] = []
    try:
        consumer.start()
        for jitter in (True, False):
            fleet = Fleet(workdir / f"fleet-{jitter}", N, cluster.hosts, jitter=jitter)
            try:
                rows.append(run_once(fleet, cluster, consumer, jitter))
            finally:
                fleet.stop()
    finally:
        consumer.close()
        cluster.kill()
    print(f"\nfleet: {N} kiosks ({-(-N // PER_PROCESS)} processes) on a 3-node NATS 2.9 cluster "
          f"(JetStream R3), whole cluster killed for {OUTAGE_S:g} s, {BACKLOG} scans per "
          "kiosk queued meanwhile")
    print(f"{'N':>6} {'jitter':>6} {'first connect s':>15} {'peak attempts/s':>15} "
          f"{'reconnect all s':>15} {'drain s':>8} {'queued':>7} {'lost':>5} "
          f"{'repeats':>7} {'fds/proc':>8} {'RSS MB/proc':>11}")
    for r in rows:
        print(f"{N:>6} {'yes' if r['jitter'] else 'no':>6} {r['first']:>15.1f} "
              f"{r['peak']:>15.0f} {r['reconnect']:>15.1f} {r['drain']:>8.1f} "
              f"{r['queued']:>7} {r['lost']:>5} {r['repeats']:>7} {r['fds']:>8} "
              f"{r['rss_mb']:>11.0f}")
    for r in rows:
        assert r["lost"] == 0, f"{r['lost']} scan(s) lost (jitter {r['jitter']})"


def run_once(fleet: Fleet, cluster: NatsCluster, consumer: JetStreamConsumer,
             jitter: bool) -> dict[str, Any]:
    t0 = time.monotonic()
    fleet.start()
    poll(fleet, lambda s: s["connected"] == fleet.n, "first connection of all", [])
    first = time.monotonic() - t0
    before = consumer.count()
    fleet.put(1)
    poll(fleet, lambda s: s["depth"] == 0 and consumer.count() == before + fleet.n,
         "the first scans delivered", [])

    cluster.kill()
    down_at = time.monotonic()
    queued = fleet.put(BACKLOG)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    expected = consumer.count() + queued
    fleet.stats()  # drops the attempts made during the outage
    attempts: list[float] = []
    start = time.monotonic()  # times count from here: the cluster's own start is in them
    cluster.start()
    poll(fleet, lambda s: s["connected"] == fleet.n, "reconnection of all", attempts)
    reconnect = time.monotonic() - start
    poll(fleet, lambda s: s["depth"] == 0 and consumer.count() >= expected,
         "the backlog drained", attempts)
    drain = time.monotonic() - start
    stats = fleet.stats()
    missing = fleet.put_keys - consumer.keys
    return {
        "jitter": jitter, "first": first, "peak": peak_rate(sorted(attempts)),
        "reconnect": reconnect, "drain": drain, "queued": queued, "lost": len(missing),
        "repeats": consumer.received - len(consumer.keys),
        "fds": stats["fds"], "rss_mb": stats["max_rss_kb"] / 1024,
    }
