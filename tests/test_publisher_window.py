"""The delivery window's rules, without a broker: driven by the test's clock only."""

from __future__ import annotations

from ordoscan.devtools.clock import ManualClock
from ordoscan.publisher.window import ACK_BATCH, ACK_MAX_DELAY_S, DeliveryWindow


def test_at_most_size_scans_and_never_past_the_brokers_receive_maximum() -> None:
    clock = ManualClock()
    w = DeliveryWindow(size=5)
    w.opened(receive_max=None)
    assert w.room_for_scans(clock.monotonic()) == 5
    for mid in range(1, 4):
        w.sent_scan(mid, seq=mid, scan_id=f"s{mid}")
    assert w.room_for_scans(clock.monotonic()) == 2 and w.cursor == 3
    w.opened(receive_max=3)  # a broker with Receive Maximum 3; a status already waits
    w.sent_other(10, "status")
    assert w.room_for_scans(clock.monotonic()) == 2
    w.sent_scan(11, 1, "s1")
    w.sent_scan(12, 2, "s2")
    assert w.room_for_scans(clock.monotonic()) == 0 and not w.room_for_others()
    assert w.answered(10) is not None and w.room_for_others()
    assert w.peak == 3


def test_a_new_connection_resends_from_the_first_queued_scan() -> None:
    w = DeliveryWindow(size=4)
    w.opened(None)
    for mid in (1, 2):
        w.sent_scan(mid, mid, f"s{mid}")
    w.closed()
    assert w.inflight == {} and w.scans == 0 and w.cursor == 0
    w.opened(None)
    assert w.answered(1) is None  # a PUBACK of the old link is not ours any more


def test_delivered_seqs_are_flushed_in_batches_or_after_a_short_delay() -> None:
    clock = ManualClock()
    w = DeliveryWindow(size=ACK_BATCH + 10)
    w.opened(None)
    for mid in range(1, ACK_BATCH + 3):
        w.sent_scan(mid, mid, f"s{mid}")
    for mid in range(1, 3):
        sent = w.answered(mid)
        assert sent is not None and w.delivered(sent, clock.monotonic())
    assert not w.acks_due(clock.monotonic())  # two acked, more in flight, no delay yet
    assert w.deadline(clock.monotonic()) == clock.monotonic() + ACK_MAX_DELAY_S
    clock.advance(ACK_MAX_DELAY_S)
    assert w.acks_due(clock.monotonic())
    assert w.take_acks() == [1, 2] and w.take_acks() == []
    for mid in range(3, ACK_BATCH + 3):
        sent = w.answered(mid)
        assert sent is not None
        w.delivered(sent, clock.monotonic())
    assert w.acks_due(clock.monotonic())  # a full batch (and nothing left in flight)
    assert w.take_acks() == list(range(3, ACK_BATCH + 3))


def test_a_refusal_pauses_then_resends_from_the_first_one_at_a_time() -> None:
    clock = ManualClock()
    w = DeliveryWindow(size=10)
    w.opened(None)
    for mid in range(1, 6):
        w.sent_scan(mid, mid, f"s{mid}")
    refused = w.answered(2)
    assert refused is not None and refused.seq == 2
    assert w.refused(clock.monotonic(), delay=3.0)  # a new pause: logged once
    assert not w.refused(clock.monotonic(), delay=3.0)  # a second refusal in the same pause
    assert w.room_for_scans(clock.monotonic()) == 0  # paused
    ok = w.answered(1)
    assert ok is not None and not w.delivered(ok, clock.monotonic())  # fault stays
    clock.advance(3.0)
    assert w.room_for_scans(clock.monotonic()) == 0  # 3, 4, 5 still in flight: wait for them
    for mid in (3, 4, 5):
        w.answered(mid)
    assert w.room_for_scans(clock.monotonic()) == 1  # one at a time, from the first queued
    assert w.cursor == 0
    w.sent_scan(6, 2, "s2")
    sent = w.answered(6)
    assert sent is not None and w.delivered(sent, clock.monotonic())  # accepted: fault clears
    assert w.refusals == 0 and w.room_for_scans(clock.monotonic()) == 10
