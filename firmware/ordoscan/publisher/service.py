"""The publisher thread: drains the outbox to the broker, in seq order, at least once.

One thread owns the paho client and does everything with it (connect, read,
write, publish): no paho state is shared between threads, and other threads
only set flags or queue small messages. A scan leaves the outbox only after
`on_publish` reports a successful PUBACK for it (reason code < 0x80; 0x10
"no matching subscribers" is a success). After each (re)connect the outbox is
resent from its lowest seq, and the only duplicates are scans whose PUBACK was
lost with the link (same scan_id). A PUBACK with an error code leaves the row
in place, reports a fault and pauses with back-off (see DeliveryWindow).

The thread sleeps in select() on the socket and a wake-up socket pair
together (a queue or an Event could not wait on the network as well). What it
does with the paho client, and paho's callbacks, are in `connection`; this
module is the service around it: start and stop, what other threads call, and
faults and link state reported to the daemon on change.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ordoscan.backoff import Backoff
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import Config
from ordoscan.lifecycle import Service
from ordoscan.publisher.connection import Connection
from ordoscan.publisher.delivery import Courier
from ordoscan.publisher.link import Waker
from ordoscan.publisher.side_channel import SideChannel
from ordoscan.security import Credentials, broker_notes, load_credentials

if TYPE_CHECKING:
    from ordoscan.outbox import Outbox

log = logging.getLogger("ordoscan.publisher")


class Publisher(Service):
    """Relays queued scans to the broker and serves the kiosk's status, telemetry and commands."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        *,
        on_link: Callable[[bool], None] | None = None,
        on_fault: Callable[[str | None], None] | None = None,
        on_command: Callable[[str, bytes], None] | None = None,
        on_alarm: Callable[[str, bool], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._outbox = outbox
        self._on_link = on_link
        self._on_fault = on_fault
        self._on_alarm = on_alarm
        self._clock = clock
        m = cfg.mqtt
        self.side = SideChannel(cfg, clock, on_command=on_command, wake=self.wake)
        rng = rng or random.Random()
        retry = Backoff(m.reconnect_min_s, m.reconnect_max_s, jitter=True, rng=rng)
        self._courier = Courier(
            cfg, outbox, clock, retry, on_fault_change=self._report, on_error=self._note_error
        )
        self._creds: Credentials | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._waker = Waker()
        # the paho client and everything owned by the publisher thread
        self._conn = Connection(
            cfg, outbox, self._courier, self.side, waker=self._waker, stop=self._stop,
            clock=clock, rng=rng, report=self._report, set_link_fault=self._set_link_fault,
            alarm=self._alarm, note_error=self._note_error,
        )

        # --- read by other threads (plain values) ---
        self._link_reported: bool | None = None
        self._fault_link: str | None = None
        self._fault_reported: str | None = None
        self._last_error: str | None = None

    # --- public API ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the TLS and secret files (raises SecurityError), then connect in the
        background. Idempotent: a running publisher is left as it is."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._creds = self._conn.creds = load_credentials(self.cfg.mqtt)
        for note in self._creds.notes:
            log.warning("%s", note)
        for problem in self._creds.problems:
            log.error("%s", problem)
        if self._creds.problems:
            self._set_link_fault(self._creds.problems[0])  # the first stays the fault's text
        for note in broker_notes(self.cfg):
            log.warning("%s", note)
        self._waker.open()  # again, if an earlier stop() closed it
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ordoscan-publisher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A new row is in the outbox: publish it without waiting for the next tick."""
        self._waker.wake()

    def publish_telemetry(self, data: dict[str, object]) -> None:
        """{prefix}/telemetry, QoS 0; dropped while offline."""
        self.side.offer("telemetry", data, 0, self._conn.connected)

    def reply(self, data: dict[str, object]) -> None:
        """{prefix}/reply, QoS 1 (an answer to a command); dropped while offline."""
        self.side.offer("reply", data, 1, self._conn.connected)

    def stop(self, timeout: float = 3.0) -> None:
        """Publish the retained offline status, wait briefly for PUBACKs, disconnect.

        Unacknowledged scans simply stay in the outbox for the next start. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._conn.stop_deadline = self._clock.monotonic() + max(0.0, timeout * 0.8)
        self._stop.set()
        self.wake()
        thread.join(timeout)
        if thread.is_alive():
            # Most likely blocked in a TCP/TLS connect (at most connect_timeout): harmless,
            # the rows are on disk and it ends by itself.
            log.warning("publisher thread did not end within %.1f s; leaving it", timeout)
            return
        self._thread = None
        self._waker.close()

    @property
    def topic_scan(self) -> str:
        return self._courier.topic_scan

    @property
    def connected(self) -> bool:
        return self._conn.connected

    def alive(self) -> bool:
        """True while the publisher thread runs (for the watchdog)."""
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """Counters for telemetry and `ordoscan check`."""
        return {
            "connected": self._conn.connected,
            **self._courier.stats(),
            "connects": self._conn.connects,
            "reconnects": self._conn.reconnects,
            "telemetry_dropped": self.side.telemetry_dropped,
            "replies_dropped": self.side.replies_dropped,
            "last_error": self._last_error,
            "fault": self._fault_reported,
            "duplicate_id": self._conn.duplicate_id,
            "host": self._conn.host_in_use,  # the broker in use (mqtt.hosts: which one)
        }

    # --- faults and link state (reported on change only) ---------------------------------------

    def _report(self) -> None:
        c = self._courier
        fault = self._fault_link or c.fault_refused or c.fault_pharmacy
        if fault != self._fault_reported:
            self._fault_reported = fault
            if self._on_fault:
                try:
                    self._on_fault(fault)
                except Exception:
                    log.exception("on_fault callback failed")
        link = self._conn.connected
        if link != self._link_reported:
            self._link_reported = link
            if self._on_link:
                try:
                    self._on_link(link)
                except Exception:
                    log.exception("on_link callback failed")

    def _set_link_fault(self, text: str | None) -> None:
        # a credentials problem found at start (an expired certificate, the file named) says
        # more than the broker's refusal it causes: it stays the text until the link is up
        problems = self._creds.problems if self._creds is not None else ()
        if text is not None and problems:
            text = problems[0]
        self._fault_link = text
        self._report()

    def _note_error(self, text: str) -> None:
        self._last_error = text

    def _alarm(self, name: str, active: bool) -> None:
        if self._on_alarm:
            try:
                self._on_alarm(name, active)
            except Exception:
                log.exception("on_alarm callback failed")

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        while not self._stop.is_set():
            try:
                conn.turn()
            except Exception as e:  # a bug must not end the relay: drop the link, retry later
                log.exception("publisher error")
                conn.lose(f"internal error: {type(e).__name__}: {e}", fault=False)
        try:
            conn.shutdown()
        except Exception:
            log.exception("publisher shutdown error")

