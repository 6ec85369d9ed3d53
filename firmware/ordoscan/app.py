"""The daemon: wires camera → decoder → classifier → dedupe → outbox → feedback → publisher.

Threads (the App's own loops share one stop event; each stage's thread is
ended by its own stop(), in the order stop() states):

- camera reader (camera.LatestFrameReader): keeps only the newest frame,
  reopens a failed camera with back-off;
- scan loop (scanner.Scanner): decode, classify, de-duplicate, commit to the
  outbox, then signal; it is the only writer of new scans;
- publisher (publisher.Publisher): drains the outbox to the broker, serves
  commands;
- feedback worker (feedback.Feedback): drives the LEDs and the buzzer;
- housekeeping (here): amber LED, faults, expiry, telemetry, systemd status
  and the watchdog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ordoscan import __version__
from ordoscan.camera import CameraSource, LatestFrameReader, open_source
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import Config
from ordoscan.decoder.side import SideCore
from ordoscan.errors import OrdoscanError
from ordoscan.feedback import Feedback
from ordoscan.health import (
    Check,
    SystemdNotifier,
    Watchdog,
    clock_synced,
    frames_arriving,
    system_info,
)
from ordoscan.outbox import Outbox, OutboxStats
from ordoscan.publisher import Publisher
from ordoscan.remote import Remote
from ordoscan.scanner import FAULT_OUTBOX_FULL, Scanner
from ordoscan.telemetry import PipelineStats, TelemetryTimer, build_telemetry

log = logging.getLogger("ordoscan.app")

BOOT_SHOWN_S = 1.0  # at most this long for "all on" to reach the pins at start
HOUSEKEEPING_S = 0.5  # amber, faults and status are at most this late
EXPIRE_EVERY_S = 60.0
CLOCK_CHECK_EVERY_S = 30.0
# Watchdog: no frame from a live camera for this many stall timeouts, or a
# loop stuck this long, and the pings stop (systemd restarts the service once
# WatchdogSec passes without one; a shorter hiccup costs nothing).
CAMERA_SILENT_FACTOR = 3.0
THREAD_STUCK_LIMIT_S = 10.0
# Stop budget (SIGTERM must end the process within 5 s, interpreter exit
# included): each step waits at most its own limit and never past the total.
STOP_BUDGET_S = 4.0
SCAN_JOIN_S = 1.5  # the frame in hand: a decode within its budget, one fsync'd write
THREAD_JOIN_S = 1.0
PUBLISHER_STOP_S = 2.0  # the offline status and the last PUBACKs

# Fault name shown by the red LED and in telemetry / status (the scan loop has its own).
FAULT_CAMERA = "camera"


class App:
    """The kiosk daemon: owns the stages, their threads and the one stop event."""

    def __init__(
        self,
        cfg: Config,
        *,
        pin_factory: object | None = None,
        notifier: SystemdNotifier | None = None,
        source: CameraSource | None = None,
        on_frame: Callable[[], None] | None = None,
        on_stored: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        decode_clock: Callable[[], float] = time.monotonic,
        frame_waiting: Callable[[], bool] | None = None,
        decode_side: Callable[[], SideCore] = SideCore,
    ) -> None:
        self.cfg = cfg
        self.clock = clock  # the one clock, passed down to the stages that take one
        # what the decoder's budget and duty cycle count in (seconds): elapsed time on a
        # kiosk; a benchmark on a shared machine gives the scan thread's CPU time instead
        self._decode_clock = decode_clock
        # whether a newer frame waits for the scan loop (None: the camera reader's slot); a
        # benchmark's camera on a virtual timeline says it itself
        self._frame_waiting = frame_waiting
        # makes the decoder's second core when scan.decode_threads is 2; a benchmark's camera
        # on a virtual timeline gives one on that timeline
        self._decode_side = decode_side
        self.stop_event = threading.Event()
        self.stats = PipelineStats()
        self._pin_factory = pin_factory
        self._notifier = notifier if notifier is not None else SystemdNotifier()
        self._source = source
        self._started_at = time.monotonic()
        self._lock = threading.Lock()  # guards the state below, set from several threads
        self._faults: set[str] = set()
        self._camera_ok = False
        self._camera_message = "not open yet"
        self._broker_up = False
        self._broker_fault: str | None = None
        self._ready = False
        # called by the scan loop after each frame is fully handled (signals posted): an
        # observer the demo and the tests attach to follow the kiosk frame by frame
        self._on_frame = on_frame
        # called by the scan loop when a frame has committed a scan (its good read signalled),
        # which may be before the frame's decoding ends: another observer, for the benchmarks
        self._stored_observer = on_stored
        self._house_beat = clock.monotonic()
        # the stages, created by start()
        self.outbox: Outbox | None = None
        self.feedback: Feedback | None = None
        self.reader: LatestFrameReader | None = None
        self.publisher: Publisher | None = None
        self.remote: Remote | None = None
        self.scanner: Scanner | None = None
        self.watchdog: Watchdog | None = None
        self._housekeeping: threading.Thread | None = None
        self._stopped = False

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the kiosk up; if a step fails, what was started is stopped and the error raised."""
        log.info("ordoscan %s starting (device %s, site %s)", __version__,
                 self.cfg.device.id, self.cfg.device.site)
        try:
            self._open_outbox()  # first: from here on a read has somewhere durable to go
            self._start_feedback()  # all LEDs on: booting
            self._start_camera()  # reader thread; READY=1 once the camera is up
            self._start_publisher()  # drains what earlier runs left in the outbox
            self._start_scanner()  # decode, classify, de-duplicate, commit, signal
            self._start_housekeeping()  # amber, faults, expiry, telemetry
            self._start_watchdog()  # pings systemd only while every stage is alive
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Tear down, each step only once the one before is done; idempotent.

        1. the stop event (every loop ends at its next turn), the watchdog
           pings end and systemd hears STOPPING=1;
        2. the scan loop: the frame in hand is finished, so a read on its way
           to the outbox is committed (and signalled) or not taken at all;
        3. the camera reader: frames released, camera closed;
        4. housekeeping (no more telemetry or status);
        5. the publisher: retained "offline" status, last PUBACKs, clean
           disconnect; what is unacknowledged stays queued for the next start;
        6. feedback: LEDs and buzzer off, pins released;
        7. the outbox: checkpointed and closed, last of all.
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + STOP_BUDGET_S

        def left(limit: float) -> float:
            return max(0.1, min(limit, deadline - time.monotonic()))

        self.stop_event.set()
        if self.watchdog is not None:
            self.watchdog.stop()
        self._notifier.stopping()
        if self.scanner is not None:
            self.scanner.stop(left(SCAN_JOIN_S))
        if self.reader is not None:
            self.reader.stop(left(THREAD_JOIN_S))
        if self.scanner is not None:
            self.scanner.stop(left(THREAD_JOIN_S))  # a last chance once the camera is closed
            if self.scanner.alive():
                log.warning("the scan loop did not end in time")
        if self._housekeeping is not None:
            self._housekeeping.join(left(THREAD_JOIN_S))
            if self._housekeeping.is_alive():
                log.warning("the housekeeping loop did not end in time")
        if self.publisher is not None:
            self.publisher.stop(left(PUBLISHER_STOP_S))
        if self.feedback is not None:
            self.feedback.stop(left(THREAD_JOIN_S))
        if self.outbox is not None:
            depth = self._depth()
            self.outbox.close()
            log.info("stopped; %s scan(s) left queued for the next start",
                     "?" if depth is None else depth)

    def request_stop(self) -> None:
        """Ask the daemon to stop (safe from a signal handler): sets the stop event only."""
        self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (or timeout); True if it was."""
        return self.stop_event.wait(timeout)

    def __enter__(self) -> App:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start steps -------------------------------------------------------------------------

    def _open_outbox(self) -> None:
        o = self.cfg.outbox
        self.outbox = Outbox(
            o.path, max_messages=o.max_messages, max_age_h=o.max_age_h,
            device_id=self.cfg.device.id, site=self.cfg.device.site, clock=self.clock,
        )
        st = self.outbox.stats()
        log.info("outbox %s open: %d scan(s) queued, last seq %d", o.path, st.depth, st.last_seq)
        if st.quarantined:
            log.warning("outbox: %d damaged file(s) were replaced (scans salvaged, copies "
                        "scrubbed); report(s) beside it", len(st.quarantined))

    def _start_feedback(self) -> None:
        self.feedback = Feedback(self.cfg.gpio, pin_factory=self._pin_factory, clock=self.clock)
        self.feedback.start()
        self.feedback.booting()
        # shown before going on: a fast camera's "ready" would otherwise replace it unseen
        self.feedback.wait_idle(BOOT_SHOWN_S)

    def _start_camera(self) -> None:
        source = self._source
        if source is None:
            source = open_source(self.cfg.camera, clock=self.clock)
        self._source = source
        self.reader = LatestFrameReader(
            source, stall_timeout_s=self.cfg.camera.stall_timeout_s, on_state=self._on_camera,
            clock=self.clock,
        )
        self.reader.start()

    def _start_publisher(self) -> None:
        assert self.outbox is not None and self.feedback is not None
        self.publisher = Publisher(
            self.cfg, self.outbox,
            on_link=self._on_link, on_fault=self._on_broker_fault, on_command=self._on_command,
            on_alarm=self._set_fault,  # duplicate_id: red LED, status and telemetry
            clock=self.clock,
        )
        publisher = self.publisher
        self.remote = Remote(
            device_id=self.cfg.device.id,
            identify=self.feedback.identify,
            status=self.status,
            reply=publisher.reply,
        )
        publisher.start()

    def _start_watchdog(self) -> None:
        self.watchdog = Watchdog(
            self._notifier, self._liveness_checks(), status=self.status_line
        )
        self.watchdog.start()

    def _start_scanner(self) -> None:
        assert self.reader is not None and self.outbox is not None
        assert self.feedback is not None
        self.scanner = Scanner(
            self.cfg.scan, decode_fps=self.cfg.camera.fps,
            reader=self.reader, outbox=self.outbox, feedback=self.feedback, stats=self.stats,
            stop_event=self.stop_event, set_fault=self._set_fault, on_stored=self._on_stored,
            on_frame=self._on_frame, clock_synced=clock_synced(), clock=self.clock,
            decode_clock=self._decode_clock, frame_waiting=self._frame_waiting,
            side=self._decode_side() if self.cfg.scan.decode_threads > 1 else None,
        )
        self.scanner.start()

    def _start_housekeeping(self) -> None:
        self._housekeeping = threading.Thread(
            target=self._housekeeping_loop, name="ordoscan-housekeeping", daemon=True
        )
        self._housekeeping.start()

    # -- callbacks from the other threads ---------------------------------------------------------

    def _on_stored(self) -> None:
        """A frame committed a scan: the publisher sends it now, amber follows the queue."""
        if self.publisher is not None:
            self.publisher.wake()
        self._update_amber()
        if self._stored_observer is not None:
            self._stored_observer()

    def _on_camera(self, ok: bool, message: str) -> None:
        with self._lock:
            self._camera_ok, self._camera_message = ok, message
        self._set_fault(FAULT_CAMERA, not ok)
        if ok:
            self._maybe_ready()

    def _on_link(self, up: bool) -> None:
        with self._lock:
            self._broker_up = up
        self._update_amber()

    def _on_broker_fault(self, text: str | None) -> None:
        with self._lock:
            self._broker_fault = text
        self._update_amber()

    def _on_command(self, name: str, payload: bytes) -> None:
        if self.remote is not None:
            self.remote.handle(name, payload)

    # -- state ------------------------------------------------------------------------------------

    def _maybe_ready(self) -> None:
        with self._lock:
            if self._ready or self.feedback is None or self.outbox is None:
                return
            self._ready = True
        self.feedback.ready()
        self._notifier.ready(self.status_line())
        log.info("ready")

    def _set_fault(self, name: str, active: bool) -> None:
        with self._lock:
            if (name in self._faults) == active:
                return
            if active:
                self._faults.add(name)
            else:
                self._faults.discard(name)
        if self.feedback is not None:
            self.feedback.set_fault(name, active)
        if not active:
            log.info("fault cleared: %s", name)

    def _depth(self) -> int | None:
        st = self._outbox_stats()
        return None if st is None else st.depth

    def _outbox_stats(self) -> OutboxStats | None:
        if self.outbox is None:
            return None
        try:
            return self.outbox.stats()
        except OrdoscanError as e:
            log.error("outbox: %s", e)
            return None

    def _update_amber(self, depth: int | None = None) -> None:
        """Amber: scans are queued and the broker is unreachable (or refuses them)."""
        if self.feedback is None:
            return
        if depth is None:
            depth = self._depth()
        with self._lock:
            blocked = not self._broker_up or self._broker_fault is not None
        self.feedback.set_queued(bool(depth) and blocked)

    def camera_state(self) -> dict[str, Any]:
        """The camera as telemetry shows it: ok, idle (replay with nothing to play), lost."""
        with self._lock:
            ok, message = self._camera_ok, self._camera_message
        out: dict[str, Any] = {"source": self.cfg.camera.source, "message": message}
        if self.reader is None:
            return out | {"state": "off"}
        rs = self.reader.stats()
        age = None if rs.last_frame_at is None else self.clock.monotonic() - rs.last_frame_at
        state = "lost" if not ok else "ok"
        quiet = age is None or age > self.cfg.camera.stall_timeout_s
        if ok and quiet and not self._camera_live():
            state = "idle"  # a replay with nothing (more) to play
        exposure = getattr(self._source, "exposure_state", None)  # (a source of one's own)
        return out | {
            "state": state, "frames": rs.frames, "dropped": rs.dropped, "reopens": rs.reopens,
            "last_frame_age_s": None if age is None else round(age, 1),
            "exposure": exposure() if callable(exposure) else None,
        }

    def _camera_live(self) -> bool:
        return bool(getattr(self._source, "live", True))

    def faults(self) -> list[str]:
        with self._lock:
            return sorted(self._faults)

    def status(self) -> dict[str, Any]:
        """What `cmd/ping` answers: a small summary, no payloads."""
        st = self._outbox_stats()
        with self._lock:
            broker_up, broker_fault = self._broker_up, self._broker_fault
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "queue_depth": None if st is None else st.depth,
            "oldest_age_s": None if st is None or st.oldest_age_s is None
            else round(st.oldest_age_s, 1),
            "broker": "connected" if broker_up else "unreachable",
            # which broker of mqtt.hosts is in use (None while unreachable)
            "broker_host": self.publisher.stats()["host"] if self.publisher else None,
            "broker_fault": broker_fault,
            "camera": self.camera_state()["state"],
            "faults": self.faults(),
        }

    def status_line(self) -> str:
        """systemd's STATUS=: one line, e.g. "queue 0; broker connected; camera ok"."""
        s = self.status()
        parts = [f"queue {s['queue_depth'] if s['queue_depth'] is not None else '?'}"]
        if s["oldest_age_s"] is not None:
            parts[0] += f" (oldest {s['oldest_age_s']:.0f} s)"
        parts.append(f"broker {s['broker']}")
        parts.append(f"camera {s['camera']}")
        if s["faults"]:
            parts.append("faults: " + ", ".join(s["faults"]))
        return "; ".join(parts)

    def telemetry(self) -> dict[str, Any]:
        """One `{prefix}/telemetry` message."""
        st = self._outbox_stats()
        queue: dict[str, Any] = {"error": "outbox unreadable"}
        if st is not None:
            queue = {
                "depth": st.depth,
                "oldest_age_s": None if st.oldest_age_s is None else round(st.oldest_age_s, 1),
                "expired_total": st.expired_total, "last_seq": st.last_seq,
                "max_messages": st.max_messages, "quarantined": len(st.quarantined),
            }
        broker: dict[str, Any] = self.publisher.stats() if self.publisher else {}
        pipeline = self.stats.snapshot()
        if self.feedback is not None:
            pipeline["feedback_dropped"] = self.feedback.dropped_events
        return build_telemetry(
            device_id=self.cfg.device.id, site=self.cfg.device.site,
            uptime_s=time.monotonic() - self._started_at,
            pipeline=pipeline, queue=queue, camera=self.camera_state(),
            broker=broker | {"faults": self.faults()},
            system=system_info(self.cfg.outbox.path),
        )

    # -- housekeeping -----------------------------------------------------------------------------

    def _liveness_checks(self) -> dict[str, Check]:
        """What must hold for the watchdog to be fed: frames arrive, every stage thread turns."""
        checks: dict[str, Check] = {
            "publisher": lambda: (
                self.publisher is not None and self.publisher.alive(),
                "the publisher thread is not running",
            ),
            "scan loop": lambda: self._beating(
                self.scanner.beat if self.scanner is not None else self._house_beat, "scan loop"
            ),
            "housekeeping": lambda: self._beating(self._house_beat, "housekeeping"),
        }
        if self._camera_live():
            # A replay that ended is not a stall. The frames counted are those the scan
            # loop took, so a stuck loop shows here too, and a camera that reopens
            # again and again without a frame is not taken for a working one.
            limit = CAMERA_SILENT_FACTOR * self.cfg.camera.stall_timeout_s
            checks["camera"] = frames_arriving(
                lambda: self.scanner.last_frame_at if self.scanner is not None else None, limit,
                clock=self.clock.monotonic,
            )
        return checks

    def _beating(self, beat: float, what: str) -> tuple[bool, str]:
        stuck = self.clock.monotonic() - beat
        return stuck <= THREAD_STUCK_LIMIT_S, f"{what} stuck for {stuck:.0f} s"

    def _housekeeping_loop(self) -> None:
        timer = TelemetryTimer(self.cfg.mqtt.telemetry_interval_s)
        last: dict[str, float] = {}

        def due(what: str, period: float) -> bool:
            now = time.monotonic()
            if now - last.get(what, now - period) < period:
                return False
            last[what] = now
            return True

        while not self.stop_event.wait(HOUSEKEEPING_S):
            self._house_beat = self.clock.monotonic()
            try:
                st = self._outbox_stats()
                if st is not None:
                    self._update_amber(st.depth)
                    if FAULT_OUTBOX_FULL in self.faults() and st.depth < st.max_messages:
                        self._set_fault(FAULT_OUTBOX_FULL, False)
                if due("expire", EXPIRE_EVERY_S) and self.outbox is not None:
                    self.outbox.expire()
                if due("clock", CLOCK_CHECK_EVERY_S) and self.scanner is not None:
                    self.scanner.clock_synced = clock_synced()
                if timer.due() and self.publisher is not None:
                    self.publisher.publish_telemetry(self.telemetry())
            except Exception:  # housekeeping goes on; a stuck one is the watchdog's business
                log.exception("housekeeping failed")
