"""The scans' side of the publisher: outbox rows out, PUBACKs and pharmacy acks in.

`Courier` owns the outbox reads and deletes, the DeliveryWindow, the counters
and the two delivery faults (the broker refuses scans; the pharmacy does not
confirm them). It never touches the network: the publisher thread hands it a
`publish` function and the answers, so it runs only on that thread.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ordoscan.backoff import Backoff
from ordoscan.clock import Clock
from ordoscan.config import Config
from ordoscan.errors import OutboxError
from ordoscan.privacy import mask
from ordoscan.publisher.link import PropertiesCache
from ordoscan.publisher.window import DeliveryWindow, Sent
from ordoscan.remote import LogThrottle, held_note

if TYPE_CHECKING:
    from ordoscan.outbox import Outbox

log = logging.getLogger("ordoscan.publisher")

MAX_ACK_BYTES = 1024

# publish(body, properties) -> the packet id, or None when the link went down while writing
Publish = Callable[[bytes, Properties | None], int | None]


def shown_payload(body: bytes) -> str:
    """The masked identifier of a queued scan's message, for its log lines."""
    try:
        payload = json.loads(body).get("payload")
    except (ValueError, AttributeError):
        payload = None
    return mask(payload if isinstance(payload, str) else None)


def parse_ack(payload: bytes) -> tuple[int, str] | str:
    """(seq, scan_id) of a pharmacy acknowledgement, or what is wrong with it (sized first)."""
    if len(payload) > MAX_ACK_BYTES:
        return f"{len(payload)} bytes, over the limit of {MAX_ACK_BYTES}"
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    seq, scan_id = data.get("seq"), data.get("scan_id")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        return "'seq' must be a positive integer"
    if not isinstance(scan_id, str) or not 1 <= len(scan_id) <= 64:
        return "'scan_id' must be a string of 1 to 64 characters"
    return seq, scan_id


class Courier:
    """Moves queued scans through the window; decides when a row may leave the outbox."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        clock: Clock,
        retry: Backoff,
        *,
        on_fault_change: Callable[[], None],
        on_error: Callable[[str], None],
    ) -> None:
        m = cfg.mqtt
        self.cfg = cfg
        self._outbox = outbox
        self._clock = clock
        self._retry = retry  # pauses after a refused scan
        self._changed = on_fault_change
        self._error = on_error  # the publisher's last_error
        self.pharmacy = m.delivery == "pharmacy"
        self.topic_scan = f"{cfg.topic_prefix}/scan"
        self.topic_ack = f"{cfg.topic_prefix}/ack"
        self._v5 = m.protocol == "5"
        self.window = DeliveryWindow(
            m.inflight, confirm=self.pharmacy, ack_timeout_s=m.ack_timeout_s
        )
        self._props = PropertiesCache()
        self._log_acks = LogThrottle(1.0, clock=clock)
        self.fault_refused: str | None = None  # the broker refuses scans (or our status/reply)
        self.fault_pharmacy: str | None = None  # sent, but the pharmacy does not confirm
        self.delivered = 0  # good PUBACKs
        self.confirmed = 0  # acknowledged by the pharmacy (delivery = "pharmacy")
        self.resent = 0  # sent again after ack_timeout_s without the pharmacy's ack
        self.refused = 0
        self.last_delivery_at: float | None = None

    def stats(self) -> dict[str, Any]:
        w = self.window
        return {
            "delivered": self.delivered,
            "refused": self.refused,
            "inflight": w.scans,
            "inflight_peak": w.peak,
            "receive_maximum": w.receive_max,
            "last_delivery_at": self.last_delivery_at,
            "delivery": self.cfg.mqtt.delivery,
            # "sent to the broker" (delivered) apart from "confirmed by the pharmacy"
            "sent_unconfirmed": len(w.unconfirmed),
            "confirmed": self.confirmed,
            "resent": self.resent,
        }

    def _refusal_fault(self, text: str | None) -> None:
        self.fault_refused = text
        self._changed()

    def _pharmacy_fault(self, text: str | None) -> None:
        self.fault_pharmacy = text
        self._changed()

    # --- rows out ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Remove the rows whose delivery is final, in one batch."""
        seqs = self.window.take_acks()
        if not seqs:
            return
        try:
            self._outbox.ack_many(seqs)
        except OutboxError as e:
            # The rows stay and are sent again after the next reconnect (same scan_id).
            log.error("delivered scans could not be removed from the outbox: %s", e)
            self._error(str(e))

    def fill(self, publish: Publish, now: float) -> bool:
        """Publish what the window has room for; True if anything went out."""
        self._check_overdue(now)
        free = self.window.room_for_scans(now)
        if free <= 0:
            return False
        if self.window.restarting:
            self.flush()  # a pass from the first row: what is confirmed is gone first
        try:
            rows = self._outbox.pending(limit=free, after_seq=self.window.cursor)
        except OutboxError as e:
            log.error("cannot read the outbox: %s", e)
            self._error(str(e))
            self.window.paused_until = now + 1.0
            return False
        wall = self._clock.wall()
        sent = False
        for row in rows:
            life = row.expires_at - wall
            if life <= 0:
                self.window.skipped(row.seq)
                continue  # expired on the way: never sent, outbox.expire() counts it
            props = self._props.get(max(1, math.ceil(life))) if self._v5 else None
            mid = publish(row.body, props)
            if mid is None:
                return sent  # the link went down while writing; on_disconnect has the reason
            self.window.sent_scan(mid, row.seq, row.scan_id, shown_payload(row.body))
            sent = True
        return sent

    # --- answers in --------------------------------------------------------------------------

    def answered(self, sent: Sent, reason: ReasonCode) -> None:
        """The PUBACK of one of our publishes (`sent` from window.answered)."""
        if sent.kind != "scan":
            if reason.is_failure:
                text = f"the broker refused our {sent.kind}: {reason} (0x{reason.value:02X})"
                log.error("%s", text)
                self._refusal_fault(text)
            return
        if reason.is_failure:
            self._scan_refused(sent, reason)
            return
        now = self._clock.monotonic()
        self.delivered += 1
        self.last_delivery_at = self._clock.wall()
        # one line per scan, so support staff can prove from the journal where a scan went
        log.info("scan %s seq %d delivered to the broker", sent.shown, sent.seq)
        if self.window.delivered(sent, now):
            self._retry.reset()
            if self.fault_refused is not None:
                log.info("the broker accepts scans again")
                self._refusal_fault(None)

    def _scan_refused(self, sent: Sent, reason: ReasonCode) -> None:
        self.refused += 1
        text = (
            f"the broker refused scan seq {sent.seq} on {self.topic_scan}: {reason} "
            f"(0x{reason.value:02X})"
        )
        if reason.value == 0x87:
            text += "; its ACL must let this kiosk publish there"
        now = self._clock.monotonic()
        delay = self._retry.next() if self.window.paused_until <= now else 0.0
        if self.window.refused(now, delay):
            log.error("%s; kept in the outbox, retrying in %.1f s", text, delay)
        self._error(text)
        self._refusal_fault(text)

    def _check_overdue(self, now: float) -> None:
        late = self.window.overdue(now)
        if not late:
            return
        self.resent += len(late)
        seq, first = late[0]
        text = (
            f"{len(late)} scan(s) sent to the broker but not confirmed by the pharmacy within "
            f"{self.cfg.mqtt.ack_timeout_s:g} s (first: {first.shown} seq {seq})"
        )
        log.warning("%s: sending them again, same scan_id, in order", text)
        self._pharmacy_fault(text)

    def pharmacy_ack(self, payload: bytes) -> None:
        """`{prefix}/ack` from the pharmacy system: `{"scan_id": "...", "seq": N}`."""
        parsed = parse_ack(payload)
        if isinstance(parsed, str):
            held = self._log_acks.allow()
            if held is not None:
                log.warning("ignoring a message on %s: %s%s", self.topic_ack, parsed,
                            held_note(held))
            return
        seq, scan_id = parsed
        now = self._clock.monotonic()
        entry = self.window.confirmed(seq, scan_id, now)
        if entry is not None:
            shown = entry.shown
        else:  # sent on an earlier connection, or before a resend: the outbox says if it is ours
            try:
                rows = self._outbox.pending(limit=1, after_seq=seq - 1)
            except OutboxError as e:
                log.error("cannot read the outbox: %s", e)
                return
            if not rows or rows[0].seq != seq or rows[0].scan_id != scan_id:
                return  # already removed (a repeated ack), or not one of ours
            self.window.remove(seq, now)
            shown = shown_payload(rows[0].body)
        self.confirmed += 1
        log.info("scan %s seq %d confirmed by the pharmacy", shown, seq)
        if self.fault_pharmacy is not None:
            log.info("the pharmacy confirms scans again")
            self._pharmacy_fault(None)
