"""The chaos soak's checker: every good-read signal was kept, in order, duplicates only resent.

Inputs are what the rig saw from outside, never what the daemon says of itself:

- `shown`: what was in front of the camera and when (a patient's ordonnance,
  another code, or nothing), with the identifier the scene encodes;
- `good_reads`: the times of the good-read signals (green dip, from the pins);
- `messages`: the scan messages the pharmacy-side subscriber received, in
  arrival order.

A good-read signal belongs to the patient at the counter when it was given:
the last one shown before it (the soak leaves the counter empty between
patients for longer than the kiosk takes to react, so this is never the
previous one). The claims:

1. lost = 0: every identifier that got a good-read signal reached the broker;
2. order: each message is either new, with a seq above every seq before it,
   or an exact resend of one already received (same seq, same scan_id, same
   payload); first arrivals have no seq gap (a gap would be a scan committed
   and then lost, signalled or not);
3. nothing is invented: every payload received was shown as an ordonnance,
   and no good-read signal came while no ordonnance was in view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ordoscan.message import ScanMessage


@dataclass(frozen=True)
class Shown:
    """One thing held under the camera from `start` to `end` (time.monotonic())."""

    start: float
    end: float
    kind: str  # a scene kind of ordoscan.devtools.scenes
    payload: str | None  # the ordonnance identifier, None for anything else


@dataclass
class Verdict:
    shown: int = 0  # things held under the camera
    ordonnances: int = 0  # of which ordonnances (paper or phone)
    signalled: int = 0  # good-read signals seen on the pins
    signalled_codes: int = 0  # distinct identifiers that got one
    delivered: int = 0  # distinct scans (scan_id) received
    duplicates: int = 0  # resends of a scan already received
    rescans: int = 0  # the same identifier scanned again as a new scan (after a restart)
    unsignalled: int = 0  # identifiers received that never got a signal (a kill in between)
    lost: int = 0  # identifiers signalled and never received
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    shown: Sequence[Shown], good_reads: Sequence[float], messages: Sequence[ScanMessage],
    *, max_latency_s: float,
) -> Verdict:
    """Check a soak's record; `max_latency_s`: the longest a signal may follow a patient leaving."""
    v = Verdict(shown=len(shown), ordonnances=sum(1 for s in shown if s.payload))
    ordered = sorted(shown, key=lambda s: s.start)
    signalled: Counter[str] = Counter()
    for t in good_reads:
        at = [s for s in ordered if s.start <= t]
        if not at or t > at[-1].end + max_latency_s:
            v.problems.append(f"a good-read signal at t={t:.2f} with nothing in view")
            continue
        if at[-1].payload is None:
            v.problems.append(f"a good-read signal at t={t:.2f} for a {at[-1].kind}, "
                              "not an ordonnance")
            continue
        signalled[at[-1].payload] += 1
    v.signalled = sum(signalled.values())
    v.signalled_codes = len(signalled)

    first: dict[int, ScanMessage] = {}
    seq_of: dict[str, int] = {}
    order: list[int] = []
    for i, m in enumerate(messages):
        if m.seq in first:
            if first[m.seq] != m:
                v.problems.append(f"message #{i}: seq {m.seq} received again with other content "
                                  "(a duplicate must be the same scan)")
            v.duplicates += 1
            continue
        if m.scan_id in seq_of:
            v.problems.append(f"message #{i}: scan_id sent under two seqs "
                              f"({seq_of[m.scan_id]} and {m.seq})")
        if order and m.seq < order[-1]:
            v.problems.append(f"message #{i}: seq {m.seq} after seq {order[-1]} (out of order)")
        first[m.seq] = m
        seq_of[m.scan_id] = m.seq
        order.append(m.seq)
    if order:
        span = set(range(min(order), max(order) + 1))
        gaps = sorted(span - set(order))
        if gaps:
            v.problems.append(f"seq gaps (scans committed and never received): {gaps[:10]}")
    v.delivered = len(first)

    received: Counter[str] = Counter(m.payload for m in first.values())
    v.rescans = sum(n - 1 for n in received.values())
    known = {s.payload for s in shown if s.payload}
    phantom = [p for p in received if p not in known]
    if phantom:
        v.problems.append(f"{len(phantom)} payload(s) received that were never shown")
    v.unsignalled = sum(1 for p in received if p in known and p not in signalled)
    lost = [p for p in signalled if p not in received]
    v.lost = len(lost)
    if lost:
        v.problems.append(f"LOST: {len(lost)} scan(s) got the good-read signal and never reached "
                          "the broker: " + ", ".join("…" + p[-4:] for p in lost[:10]))
    return v
