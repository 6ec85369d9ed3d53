"""The soak checker finds what it must: losses, disorder, foreign duplicates, inventions."""

from __future__ import annotations

from datetime import UTC, datetime

from ordoscan.message import ScanMessage, new_scan_id

from tests.hil.checker import Shown, check

A, B, C = "01AAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBB", "01CCCCCCCCCCCCCCCC"
SHOWN = [
    Shown(10.0, 11.0, "ordonnance", A),
    Shown(13.0, 14.0, "medicine_pack", None),
    Shown(16.0, 17.0, "phone_dark", B),
    Shown(19.0, 20.0, "ordonnance", C),
]


def msg(seq: int, payload: str, scan_id: str | None = None) -> ScanMessage:
    return ScanMessage(
        scan_id=scan_id or new_scan_id(), seq=seq, device_id="kiosk-hil", site="pharmacie-hil",
        scanned_at=datetime(2026, 11, 25, tzinfo=UTC), clock_synced=True,
        kind="ordonnance_numerique", symbology="QRCode", symbology_id="]Q1", payload=payload,
    )


def test_a_clean_run_with_a_resend() -> None:
    a, b = msg(1, A), msg(2, B)
    v = check(SHOWN, [10.4, 16.5], [a, b, b, msg(3, C)], max_latency_s=1.5)
    assert v.ok, v.problems
    assert (v.signalled, v.delivered, v.duplicates, v.lost, v.unsignalled) == (2, 3, 1, 0, 1)


def test_a_signalled_scan_that_never_arrived_is_lost() -> None:
    v = check(SHOWN, [10.4, 16.5, 19.3], [msg(1, A), msg(2, B)], max_latency_s=1.5)
    assert v.lost == 1 and not v.ok
    assert any("LOST" in p and "…CCCC" in p for p in v.problems)


def test_disorder_gaps_and_foreign_duplicates() -> None:
    v = check(SHOWN, [], [msg(2, B), msg(1, A)], max_latency_s=1.5)
    assert any("out of order" in p for p in v.problems)
    v = check(SHOWN, [], [msg(1, A), msg(3, C)], max_latency_s=1.5)
    assert any("seq gaps" in p for p in v.problems)
    v = check(SHOWN, [], [msg(1, A), msg(1, B)], max_latency_s=1.5)
    assert any("other content" in p for p in v.problems)
    same = new_scan_id()
    v = check(SHOWN, [], [msg(1, A, same), msg(2, A, same)], max_latency_s=1.5)
    assert any("two seqs" in p for p in v.problems)


def test_signals_and_payloads_that_belong_to_nothing() -> None:
    v = check(SHOWN, [13.5], [], max_latency_s=1.5)  # during the medicine pack
    assert any("not an ordonnance" in p for p in v.problems)
    v = check(SHOWN, [30.0], [], max_latency_s=1.5)  # long after the last patient
    assert any("nothing in view" in p for p in v.problems)
    v = check(SHOWN, [], [msg(1, "01ZZZZZZZZZZZZZZZZ")], max_latency_s=1.5)
    assert any("never shown" in p for p in v.problems)


def test_a_rescan_after_a_restart_is_a_new_scan() -> None:
    v = check(SHOWN, [10.2, 10.9], [msg(1, A), msg(2, A)], max_latency_s=1.5)
    assert v.ok, v.problems
    assert (v.signalled, v.signalled_codes, v.delivered, v.rescans) == (2, 1, 2, 1)
