"""The scan loop: frame → decode → classify → de-duplicate → outbox → feedback.

One thread, "ordoscan-scan", the only writer of new scans. What a frame's
reads give, in order:

1. an INS code is ignored: no signal, nothing kept, never logged;
2. each new ordonnance is committed to the outbox, and only then the
   good-read signal is given (once per frame); a repeat gets the same signal
   and is not sent again; a full outbox or a disk error gets the fault signal.
   This is done as soon as the decoder reads the ordonnance, while its other
   passes on the frame still run (a slow core's budget is spent after the
   beep, not before it); the frame's other codes once it is decoded;
3. a refused code (medicine pack, 2D-Doc, URL, anything else) gets the
   refusal signal, except while an ordonnance is in view (this frame, or seen
   within same_code_timeout_s): the kiosk then says "got it" and nothing else,
   since codes printed beside the prescription are no reason to alarm the
   patient. Such refusals are still logged and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ordoscan.camera import LatestFrameReader
from ordoscan.classifier import Classified, Classifier, Kind
from ordoscan.clock import Clock
from ordoscan.config import ScanConfig
from ordoscan.decoder import Decoder, Symbol, Zoom
from ordoscan.decoder.side import SideCore
from ordoscan.dedupe import Deduper, Read
from ordoscan.errors import OutboxDiskError, OutboxError, OutboxFull
from ordoscan.feedback import Feedback
from ordoscan.lifecycle import Service
from ordoscan.outbox import Outbox
from ordoscan.privacy import mask
from ordoscan.telemetry import PipelineStats

log = logging.getLogger("ordoscan.scanner")

THREAD_NAME = "ordoscan-scan"
FRAME_WAIT_S = 0.5  # the longest wait for a frame (the stop event is checked in between)
FRAME_ERROR_LOG_EVERY = 100  # a bad frame is logged, then only every Nth of a run

# Fault names, shown by the red LED and in telemetry / status.
FAULT_OUTBOX_FULL = "outbox_full"
FAULT_DISK = "disk"
FAULT_OUTBOX = "outbox"  # the outbox refused a scan for another reason (logged)


class Scanner(Service):
    """Reads frames from the camera reader and turns them into committed scans and signals."""

    def __init__(
        self,
        scan: ScanConfig,
        *,
        decode_fps: float,
        reader: LatestFrameReader,
        outbox: Outbox,
        feedback: Feedback,
        stats: PipelineStats,
        stop_event: threading.Event,
        set_fault: Callable[[str, bool], None],
        on_stored: Callable[[], None],
        on_frame: Callable[[], None] | None = None,
        clock_synced: bool = False,
        clock: Clock,
        decode_clock: Callable[[], float] = time.monotonic,
        frame_waiting: Callable[[], bool] | None = None,
        side: SideCore | None = None,
    ) -> None:
        """`stop_event` is shared with the other loops of the daemon; `on_stored` is
        called once per frame that committed a scan (after the good-read signal), and
        `on_frame` after each frame is fully handled (an observer for the demo and tests);
        `decode_clock` is what the decoder's budget and duty cycle count in;
        `frame_waiting` says whether a newer frame waits (default: the reader's), so that
        the decoder gives its extra passes to the newest frame; `side`, the decoder's second
        core (ordoscan.decoder.side), is the loop's: stop() closes it."""
        self._scan = scan
        self._side = side
        self._decoder = Decoder(scan.decode_budget_ms, fps=decode_fps, clock=decode_clock,
                                side=side)
        self._classifier = Classifier(scan)
        self._deduper = Deduper(scan.same_code_timeout_s, scan.repeat_window_s)
        self._reader = reader
        self._frame_waiting = frame_waiting if frame_waiting is not None else reader.waiting
        self._outbox = outbox
        self._feedback = feedback
        self._stats = stats
        self._stop = stop_event
        self._set_fault = set_fault
        self._on_stored = on_stored
        self._on_frame = on_frame
        self._clock = clock
        # whether the wall clock is NTP-synced; refreshed by the daemon's housekeeping
        self.clock_synced = clock_synced
        self.beat = clock.monotonic()  # the loop's last turn, for the watchdog
        self.last_frame_at: float | None = None  # when the loop last got a frame
        self._ordonnance_seen_at = -1e18  # frame time of the last frame holding an ordonnance
        self._frame_errors_in_row = 0
        self._thread: threading.Thread | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop's thread; a second call does nothing."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """End the loop once the frame in hand is done, waiting up to `timeout` for its
        thread (a second call waits again: see alive())."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._side is not None and not self.alive():
            self._side.close(timeout)  # (its last task was joined by the frame's decode)

    def alive(self) -> bool:
        """The loop's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        self._decoder.warm()  # (before the first frame, not during a customer's scan)
        while not self._stop.is_set():
            self.beat = self._clock.monotonic()
            frame = self._reader.get(timeout=FRAME_WAIT_S)
            if frame is None or self._stop.is_set():
                continue
            self.last_frame_at = self._clock.monotonic()
            try:
                # the frame's lease is held until the next get(): its zoom is valid throughout
                self.process(frame.image, frame.timestamp, frame.zoom)
            except Exception:  # a bug on one frame must not end the kiosk's reading
                log.exception("frame %d could not be processed", frame.index)

    def process(self, image: Any, timestamp: float, zoom: Zoom | None = None) -> None:
        """One frame through decode → classify → dedupe → outbox → feedback (an ordonnance
        as soon as it is read, see the module)."""
        t0 = time.perf_counter()
        failed: list[Exception] = []

        def on_read(symbol: Symbol) -> None:
            if failed:
                return
            item = self._classifier.classify(symbol)
            if item.kind is not Kind.ORDONNANCE:
                return  # (a refusal waits for the whole frame: an ordonnance silences it)
            try:
                self._take(timestamp, [item])
            except Exception as e:  # the frame's, not the decoder's: raised once it is decoded
                failed.append(e)

        try:
            symbols = self._decoder.decode(image, zoom, self._frame_waiting, on_read)
        except Exception as e:  # a corrupt frame must not end the loop
            self._stats.frame_error()
            self._frame_errors_in_row += 1
            if self._frame_errors_in_row % FRAME_ERROR_LOG_EVERY == 1:
                log.warning("a frame could not be decoded (%s: %s)", type(e).__name__, e)
            self._frame_done()
            return
        self._frame_errors_in_row = 0
        self._stats.frame(time.perf_counter() - t0)
        if failed:
            raise failed[0]
        # every symbol again: an ordonnance taken already is still in view for the deduper
        self._take(timestamp, [self._classifier.classify(s) for s in symbols])
        self._frame_done()

    def _take(self, timestamp: float, items: list[Classified]) -> None:
        """Classified symbols of the frame at `timestamp` through dedupe, outbox, feedback."""
        if any(i.kind is Kind.ORDONNANCE for i in items):
            self._ordonnance_seen_at = timestamp
        reads = self._deduper.update(timestamp, items)
        if reads:
            self._act(reads, timestamp)

    def _frame_done(self) -> None:
        if self._on_frame is not None:
            try:
                self._on_frame()
            except Exception:  # an observer's bug must not stop the reading
                log.exception("the frame observer failed")

    def _act(self, reads: list[Read], timestamp: float) -> None:
        stored = repeated = refused = False
        for r in reads:
            item = r.item
            if item.kind is Kind.INS:
                self._stats.ignore(Kind.INS.value)
                continue
            if item.kind is not Kind.ORDONNANCE:
                self._stats.read(item.kind.value)
                self._stats.refused(item.kind.value)
                why = f" ({item.reason})" if item.reason else ""
                log.info("refused: %s in a %s%s", item.kind.value, item.format, why)
                refused = True
                continue
            if r.repeat:
                self._stats.repeat()
                repeated = True
                log.info("repeat of %s: signalled again, not sent again", mask(item.payload))
                continue
            self._stats.read(item.kind.value)
            if self._store(item, timestamp):
                stored = True
        if stored:
            self._feedback.good_read()
            self._on_stored()
        elif repeated:
            self._feedback.repeat()
        # an ordonnance in this frame, or seen a moment ago, silences a refusal
        in_view = timestamp - self._ordonnance_seen_at < self._scan.same_code_timeout_s
        if refused and not in_view:
            self._feedback.refused()

    def _store(self, item: Classified, timestamp: float) -> bool:
        """Commit one ordonnance; True once it is on disk. Failures give the fault signal."""
        # the frame's capture time on the wall clock
        wall = self._clock.wall() - (self._clock.monotonic() - timestamp)
        try:
            row = self._outbox.put(
                kind=item.kind.value, symbology=item.format, symbology_id=item.symbology_id,
                payload=item.payload, clock_synced=self.clock_synced,
                scanned_at=datetime.fromtimestamp(wall, UTC),
            )
        except OutboxError as e:
            # full and disk errors have their own fault (and clear apart); the rest is one
            reason, fault = (
                ("full", FAULT_OUTBOX_FULL) if isinstance(e, OutboxFull)
                else ("disk", FAULT_DISK) if isinstance(e, OutboxDiskError)
                else ("error", FAULT_OUTBOX)
            )
            self._stats.outbox_refusal(reason)
            log.error("scan %s NOT taken: %s", mask(item.payload), e)
            self._set_fault(fault, True)
            return False
        self._stats.stored()
        self._set_fault(FAULT_DISK, False)  # a write went through: the disk is fine again
        self._set_fault(FAULT_OUTBOX, False)
        log.info("scan %s queued as seq %d (%s)", mask(item.payload), row.seq, item.format)
        return True
