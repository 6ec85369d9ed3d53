"""Telemetry counters and message (SPEC §7)."""

from __future__ import annotations

import json
import threading

from ordoscan.devtools.clock import ManualClock
from ordoscan.telemetry import PipelineStats, TelemetryTimer, build_telemetry


def test_counters_and_decode_percentiles() -> None:
    s = PipelineStats(window=100)
    for ms in range(1, 101):  # 1..100 ms
        s.frame(ms / 1000)
    s.read("ordonnance_numerique")
    s.read("ordonnance_numerique")
    s.read("medicine_pack")
    s.refused("medicine_pack")
    s.ignore("ins")
    s.repeat()
    s.stored()
    s.outbox_refusal("full")
    snap = s.snapshot()
    assert snap["frames"] == 100
    assert snap["reads"] == {"medicine_pack": 1, "ordonnance_numerique": 2}
    assert snap["refusals"] == {"medicine_pack": 1}
    assert snap["ignored"] == {"ins": 1}
    assert snap["duplicates"] == 1 and snap["queued"] == 1
    assert snap["outbox_refused"] == {"full": 1}
    d = snap["decode_ms"]
    assert d["window"] == 100 and d["max"] == 100.0
    assert 49 <= d["p50"] <= 52 and 98 <= d["p99"] <= 100
    assert abs(d["mean"] - 50.5) < 0.01


def test_decode_window_keeps_only_recent_frames() -> None:
    s = PipelineStats(window=10)
    for _ in range(50):
        s.frame(0.5)  # slow, long ago
    for _ in range(10):
        s.frame(0.002)
    snap = s.snapshot()
    assert snap["frames"] == 60
    assert snap["decode_ms"]["max"] == 2.0


def test_empty_stats_have_no_percentiles() -> None:
    assert PipelineStats().snapshot()["decode_ms"] == {"window": 0}


def test_counters_are_exact_under_threads() -> None:
    s = PipelineStats()

    def work() -> None:
        for _ in range(2000):
            s.read("url")
            s.frame(0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = s.snapshot()
    assert snap["reads"] == {"url": 8000} and snap["frames"] == 8000


def test_message_is_json_with_every_part() -> None:
    msg = build_telemetry(
        device_id="k1", site="s1", uptime_s=12.345,
        pipeline=PipelineStats().snapshot(),
        queue={"depth": 2, "oldest_age_s": 4.0},
        camera={"state": "ok"}, broker={"connected": True},
        system={"cpu_temp_c": 48.2}, now=0.0,
    )
    assert msg["schema"] == "ordoscan.telemetry/1"
    assert msg["at"] == "1970-01-01T00:00:00.000Z"
    assert msg["uptime_s"] == 12.3
    assert msg["queue"]["depth"] == 2 and msg["camera"]["state"] == "ok"
    assert json.loads(json.dumps(msg)) == msg


def test_timer() -> None:
    clock = ManualClock(monotonic=0.0)
    t = TelemetryTimer(60, clock=clock)
    assert not t.due()
    clock.advance(5.0)  # the first one soon after start
    assert t.due() and not t.due()
    clock.advance(59.0)
    assert not t.due()
    clock.advance(1.0)
    assert t.due()
    off = TelemetryTimer(0, clock=clock)
    clock.advance(1e9)
    assert not off.due()
