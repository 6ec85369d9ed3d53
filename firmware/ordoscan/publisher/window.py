"""The delivery window: which publishes await an answer, and what may be sent next.

Pure bookkeeping: times come in as arguments (read from the one Clock by the
publisher thread), nothing here touches a socket or paho, so the rules are
unit-tested without a broker:

- at most `size` scans await their PUBACK, and never more publishes than the
  broker's Receive Maximum;
- scans are taken from the outbox after `cursor`, in seq order;
- delivered seqs are removed from the outbox in batches (one fsync per batch);
- after a refused PUBACK, sending pauses (the caller's back-off), the window
  empties, then starts again from the first queued scan one at a time until
  the broker accepts one, so a later scan never overtakes the refused one;
- with end-to-end delivery (`confirm`, mqtt.delivery = "pharmacy") a good
  PUBACK only moves a scan to `unconfirmed`, where it keeps its place in the
  window until the pharmacy acknowledges its scan_id; one left unconfirmed
  for `ack_timeout_s` makes the window start again from the first queued scan
  (same scan_ids, in order).
"""

from __future__ import annotations

from dataclasses import dataclass

# Delivered rows are deleted in batches: one fsync per batch instead of one per scan.
ACK_BATCH = 64
ACK_MAX_DELAY_S = 0.1
RECEIVE_MAX_DEFAULT = 65535


@dataclass(slots=True)
class Sent:
    """A QoS 1 publish waiting for its PUBACK."""

    kind: str  # "scan", "status" or "reply"
    seq: int = 0
    scan_id: str = ""
    shown: str = ""  # the scan's identifier as a log may show it (privacy.mask)


@dataclass(slots=True)
class Unconfirmed:
    """A scan the broker took, waiting for the pharmacy's acknowledgement."""

    scan_id: str
    shown: str
    since: float  # monotonic: when the broker's PUBACK came


class DeliveryWindow:
    """What is in flight on one connection, and what the outbox may send next."""

    def __init__(self, size: int, *, confirm: bool = False, ack_timeout_s: float = 30.0) -> None:
        self.size = size
        self.confirm = confirm
        self.ack_timeout_s = ack_timeout_s
        self.unconfirmed: dict[int, Unconfirmed] = {}  # by seq, oldest first
        self.receive_max = RECEIVE_MAX_DEFAULT
        self.inflight: dict[int, Sent] = {}  # by packet id
        self.scans = 0  # scans among `inflight`
        self.peak = 0
        self.cursor = 0  # highest seq published on this connection
        self.refusals = 0  # consecutive refused PUBACKs, for the retry back-off
        self.paused_until = 0.0
        self._restart = False  # after a refusal: resend from the first queued scan
        self._acked: list[int] = []
        self._first_ack_at = 0.0

    # --- connection ---------------------------------------------------------------------

    def opened(self, receive_max: int | None) -> None:
        """A new connection (CONNACK): everything queued is sent again from the first seq."""
        self.inflight.clear()
        self.unconfirmed.clear()
        self.scans = 0
        self.cursor = 0
        self._restart = False
        self.receive_max = receive_max or RECEIVE_MAX_DEFAULT

    def closed(self) -> None:
        """The link is gone: nothing is in flight any more (the rows stay queued)."""
        self.inflight.clear()
        self.unconfirmed.clear()
        self.scans = 0
        self.cursor = 0

    # --- sending ------------------------------------------------------------------------

    def room_for_scans(self, now: float) -> int:
        """How many more scans may be published now."""
        if self.paused_until > now:
            return 0
        if self._restart:
            if self.scans:
                return 0  # let the window empty first, then resend in order
            self._restart = False
            self.cursor = 0
        window = 1 if self.refusals else self.size
        busy = self.scans + len(self.unconfirmed)
        return max(0, min(window - busy, self.receive_max - len(self.inflight)))

    @property
    def restarting(self) -> bool:
        """The next scans sent start again from the first queued one."""
        return self.cursor == 0

    def room_for_others(self) -> bool:
        """A status or reply may be published (the broker's Receive Maximum is not reached)."""
        return len(self.inflight) < self.receive_max

    def skipped(self, seq: int) -> None:
        """A row passed over without sending (expired on the way)."""
        self.cursor = seq

    def sent_scan(self, mid: int, seq: int, scan_id: str, shown: str = "") -> None:
        self.cursor = seq
        self.inflight[mid] = Sent("scan", seq, scan_id, shown)
        self.scans += 1
        self.peak = max(self.peak, self.scans)

    def sent_other(self, mid: int, kind: str) -> None:
        self.inflight[mid] = Sent(kind)

    # --- answers ------------------------------------------------------------------------

    def answered(self, mid: int) -> Sent | None:
        """The PUBACK of `mid` came: what it was for (None if not ours or not any more)."""
        sent = self.inflight.pop(mid, None)
        if sent is not None and sent.kind == "scan":
            self.scans -= 1
        return sent

    def delivered(self, sent: Sent, now: float) -> bool:
        """A scan's good PUBACK; True when the broker accepts scans again (no pause, no resend
        pending), so a delivery fault may clear."""
        if self.confirm:
            self.unconfirmed[sent.seq] = Unconfirmed(sent.scan_id, sent.shown, now)
        else:
            self._done(sent.seq, now)
        if self.paused_until <= now and not self._restart:
            self.refusals = 0
            return True
        return False

    def _done(self, seq: int, now: float) -> None:
        if not self._acked:
            self._first_ack_at = now
        self._acked.append(seq)

    def confirmed(self, seq: int, scan_id: str, now: float) -> Unconfirmed | None:
        """The pharmacy acknowledged (scan_id, seq): the row may go, if it was ours to wait for.
        None when it is not waiting here (the caller checks the outbox, then `remove`)."""
        entry = self.unconfirmed.get(seq)
        if entry is None or entry.scan_id != scan_id:
            return None
        del self.unconfirmed[seq]
        self._done(seq, now)
        return entry

    def remove(self, seq: int, now: float) -> None:
        """A queued row the pharmacy acknowledged although it is not waiting here (sent on an
        earlier connection or before a resend): removed with the next batch."""
        self._done(seq, now)

    def overdue(self, now: float) -> list[tuple[int, Unconfirmed]]:
        """Scans unconfirmed for ack_timeout_s: all unconfirmed ones are forgotten and the
        window starts again from the first queued scan (same scan_ids, in order)."""
        if not self.unconfirmed:
            return []
        oldest = min(u.since for u in self.unconfirmed.values())
        if now - oldest < self.ack_timeout_s:
            return []
        late = sorted(self.unconfirmed.items())
        self.unconfirmed.clear()
        self._restart = True
        return late

    def refused(self, now: float, delay: float) -> bool:
        """A scan's refused PUBACK: pause `delay` (unless already paused) and resend from the
        first queued scan. True when this starts a new pause (worth a log line)."""
        self._restart = True
        if self.paused_until > now:
            return False
        self.refusals += 1
        self.paused_until = now + delay
        return True

    def acks_due(self, now: float) -> bool:
        """Time to remove the delivered rows: a full batch, the delay passed, or nothing left."""
        return bool(self._acked) and (
            len(self._acked) >= ACK_BATCH
            or now - self._first_ack_at >= ACK_MAX_DELAY_S
            or self.scans == 0
        )

    def take_acks(self) -> list[int]:
        """The delivered seqs not yet removed from the outbox (and forget them)."""
        seqs, self._acked = self._acked, []
        return seqs

    def deadline(self, now: float) -> float | None:
        """The next moment the window needs a turn (ack flush or end of a pause), if any."""
        times = []
        if self.unconfirmed:
            times.append(min(u.since for u in self.unconfirmed.values()) + self.ack_timeout_s)
        if self._acked:
            times.append(self._first_ack_at + ACK_MAX_DELAY_S)
        if self.paused_until > now:
            times.append(self.paused_until)
        return min(times) if times else None
