"""Telemetry: the pipeline's counters and the periodic `{prefix}/telemetry` message.

Counters are totals since start (a consumer computes rates from two messages);
decode time is summarised over the last frames only, so one slow minute does
not hide behind a day of fast ones. Nothing here ever holds a payload: kinds,
counts and durations only.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from ordoscan.clock import SYSTEM_CLOCK, Clock, iso_ms

SCHEMA = "ordoscan.telemetry/1"
DECODE_WINDOW = 512  # frames kept for the decode-time percentiles


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(0, min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank]


class PipelineStats:
    """Thread-safe counters of what the scan loop saw and did."""

    def __init__(self, window: int = DECODE_WINDOW) -> None:
        self._lock = threading.Lock()
        self._decode_ms: deque[float] = deque(maxlen=window)
        self.frames = 0
        self.reads: Counter[str] = Counter()  # new reads, by kind
        self.refusals: Counter[str] = Counter()  # refused codes, by kind
        self.ignored: Counter[str] = Counter()  # seen and deliberately passed over (INS)
        self.repeats = 0  # a recent scan shown again: feedback, not re-sent
        self.queued = 0  # scans committed to the outbox
        self.outbox_refused: Counter[str] = Counter()  # "full" / "disk": scans the outbox refused
        self.frame_errors = 0  # frames the decoder could not handle

    def frame(self, decode_s: float) -> None:
        with self._lock:
            self.frames += 1
            self._decode_ms.append(decode_s * 1000.0)

    def frame_error(self) -> None:
        with self._lock:
            self.frame_errors += 1

    def read(self, kind: str) -> None:
        with self._lock:
            self.reads[kind] += 1

    def refused(self, kind: str) -> None:
        with self._lock:
            self.refusals[kind] += 1

    def ignore(self, kind: str) -> None:
        with self._lock:
            self.ignored[kind] += 1

    def repeat(self) -> None:
        with self._lock:
            self.repeats += 1

    def stored(self) -> None:
        with self._lock:
            self.queued += 1

    def outbox_refusal(self, why: str) -> None:
        with self._lock:
            self.outbox_refused[why] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every counter, as plain JSON-able data."""
        with self._lock:
            times = sorted(self._decode_ms)
            decode: dict[str, Any] = {"window": len(times)}
            if times:
                decode |= {
                    "p50": round(_percentile(times, 0.50), 2),
                    "p99": round(_percentile(times, 0.99), 2),
                    "max": round(times[-1], 2),
                    "mean": round(sum(times) / len(times), 2),
                }
            return {
                "frames": self.frames,
                "frame_errors": self.frame_errors,
                "reads": dict(sorted(self.reads.items())),
                "refusals": dict(sorted(self.refusals.items())),
                "ignored": dict(sorted(self.ignored.items())),
                "duplicates": self.repeats,
                "queued": self.queued,
                "outbox_refused": dict(sorted(self.outbox_refused.items())),
                "decode_ms": decode,
            }


def build_telemetry(
    *,
    device_id: str,
    site: str,
    uptime_s: float,
    pipeline: Mapping[str, Any],
    queue: Mapping[str, Any],
    camera: Mapping[str, Any],
    broker: Mapping[str, Any],
    system: Mapping[str, Any],
    now: float | None = None,
) -> dict[str, Any]:
    """`now`: wall time of the message (the App's clock); None reads the system clock."""
    """One telemetry message (QoS 0, not retained): every part is already plain data."""
    return {
        "schema": SCHEMA,
        "device_id": device_id,
        "site": site,
        "at": iso_ms(SYSTEM_CLOCK.wall() if now is None else now),
        "uptime_s": round(uptime_s, 1),
        "queue": dict(queue),
        "scans": dict(pipeline),
        "camera": dict(camera),
        "broker": dict(broker),
        "system": dict(system),
    }


class TelemetryTimer:
    """Says when the next telemetry message is due; interval 0 means never."""

    def __init__(self, interval_s: float, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.interval_s = interval_s
        self._clock = clock
        # the first message goes out soon after start, so a fresh kiosk shows up at once
        self._next = clock.monotonic() + min(interval_s, 5.0)

    def due(self) -> bool:
        if self.interval_s <= 0:
            return False
        now = self._clock.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True
