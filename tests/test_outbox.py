"""The durable outbox on real SQLite files: order, durability, capacity, expiry, privacy."""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ordoscan.clock import Clock as OutboxClock
from ordoscan.errors import ConfigError, OutboxError, OutboxFull
from ordoscan.message import ScanMessage
from ordoscan.outbox import SEQ_BLOCK, Outbox, StoredScan

T0 = 1_795_000_000.0  # a fixed "now" (2026-11-18): ages come from this injected clock


class Clock:
    """A settable clock for the outbox: one reading serves as wall and monotonic time."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def wall(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.is_set()


class TwoClocks(Clock):
    """Wall and monotonic time set apart, as NTP and a reboot move them."""

    def __init__(self, wall: Clock, mono: Clock) -> None:
        self.wall_clock, self.mono_clock = wall, mono

    def wall(self) -> float:
        return self.wall_clock.t

    def monotonic(self) -> float:
        return self.mono_clock.t


def payload(i: int) -> str:
    return f"01TESTPAYLOAD{i:05d}"


def open_box(path: Path, clock: OutboxClock | None = None, **kw: object) -> Outbox:
    args: dict[str, object] = {
        "max_messages": 100,
        "max_age_h": 24,
        "device_id": "kiosk-01",
        "site": "pharma",
    }
    args.update(kw)
    return Outbox(path, clock=clock or Clock(), **args)  # type: ignore[arg-type]


def put(box: Outbox, i: int, **kw: object) -> StoredScan:
    args: dict[str, object] = {
        "kind": "ordonnance_numerique",
        "symbology": "QRCode",
        "symbology_id": "]Q1",
        "payload": payload(i),
        "clock_synced": True,
    }
    args.update(kw)
    return box.put(**args)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite3"


def test_put_returns_the_exact_message_to_publish(db: Path) -> None:
    clock = Clock()
    with open_box(db, clock) as box:
        when = datetime(2026, 11, 25, 10, 31, 7, 412_345, tzinfo=UTC)
        s = put(box, 7, scanned_at=when, clock_synced=False)
    msg = ScanMessage.from_json(s.body)
    assert msg.seq == s.seq == 1
    assert msg.scan_id == s.scan_id
    assert msg.payload == payload(7)
    assert msg.device_id == "kiosk-01" and msg.site == "pharma"
    assert msg.clock_synced is False
    assert json.loads(s.body)["scanned_at"] == "2026-11-25T10:31:07.412Z"
    assert s.created_at == T0
    assert s.expires_at == T0 + 24 * 3600


def test_scanned_at_defaults_to_the_clock(db: Path) -> None:
    with open_box(db, Clock(T0 + 0.25)) as box:
        s = put(box, 1)
    assert json.loads(s.body)["scanned_at"] == datetime.fromtimestamp(T0, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.250Z"
    )


def test_pending_is_in_seq_order_and_pages(db: Path) -> None:
    with open_box(db) as box:
        stored = [put(box, i) for i in range(25)]
        assert [s.seq for s in stored] == list(range(1, 26))
        assert box.pending() == stored
        first = box.pending(limit=10)
        assert [s.seq for s in first] == list(range(1, 11))
        nxt = box.pending(limit=10, after_seq=first[-1].seq)
        assert [s.seq for s in nxt] == list(range(11, 21))
        scan_ids = [s.scan_id for s in stored]
        assert len(set(scan_ids)) == 25
        assert scan_ids == sorted(scan_ids), "UUIDv7 scan ids sort in creation order"


def test_rows_and_seq_survive_reopen(db: Path) -> None:
    with open_box(db) as box:
        a = [put(box, i) for i in range(5)]
        assert box.ack(a[0].seq)
    with open_box(db) as box:
        assert box.pending() == a[1:]
        b = put(box, 99)
        assert b.seq == 6
        assert box.stats().last_seq == 6


def test_seq_never_reused_after_ack_purge_and_reopen(db: Path) -> None:
    seen: list[int] = []
    with open_box(db) as box:
        seen += [put(box, i).seq for i in range(3)]
        assert box.ack_many(seen) == 3
        seen.append(put(box, 3).seq)
        assert box.purge() == 1
        assert box.stats().depth == 0
    with open_box(db) as box:
        seen.append(put(box, 4).seq)
        box.purge()
    with open_box(db) as box:
        seen.append(put(box, 5).seq)
    assert seen == [1, 2, 3, 4, 5, 6]


def test_seq_continues_above_a_lost_file(db: Path) -> None:
    """A deleted (or quarantined) file does not send seq back to 1: the sidecar remembers."""
    with open_box(db) as box:
        last = [put(box, i) for i in range(3)][-1].seq
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    with open_box(db) as box:
        s = put(box, 9)
    assert s.seq > last
    assert s.seq == SEQ_BLOCK + 1  # the ceiling reserved by the first put


def test_ack(db: Path) -> None:
    with open_box(db) as box:
        a, b, c = (put(box, i) for i in range(3))
        assert box.ack(b.seq) is True
        assert box.ack(b.seq) is False
        assert box.ack(12345) is False
        assert box.pending() == [a, c]
        assert box.ack_many([a.seq, c.seq, 777]) == 2
        assert box.ack_many([]) == 0
        assert box.pending() == []
        assert box.stats().depth == 0


def test_full_outbox_refuses_and_evicts_nothing(db: Path) -> None:
    with open_box(db, max_messages=5) as box:
        kept = [put(box, i) for i in range(5)]
        with pytest.raises(OutboxFull, match=r"max_messages = 5"):
            put(box, 5)
        with pytest.raises(OutboxFull):
            put(box, 6)
        assert box.pending() == kept
        st = box.stats()
        assert st.depth == 5 and st.max_messages == 5 and st.last_seq == 5
        # A refused scan does not consume a seq; room comes back after an ack.
        box.ack(kept[0].seq)
        assert put(box, 7).seq == 6


def test_expiry_is_counted_persisted_and_frees_capacity(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with open_box(db, clock, max_messages=4, max_age_h=1) as box:
        old = [put(box, i) for i in range(3)]
        clock.t += 1800
        young = put(box, 3)
        clock.t += 1800  # the first three are now exactly max_age old
        assert box.pending() == [young], "expired rows are not handed out"
        st = box.stats()
        assert st.depth == 4 and st.oldest_age_s == pytest.approx(3600)
        with caplog.at_level("WARNING", logger="ordoscan.outbox"):
            assert box.expire() == 3
        assert "3 scan(s)" in caplog.text
        for s in old:
            assert payload(int(json.loads(s.body)["payload"][-5:])) not in caplog.text
        assert box.expire() == 0
        assert box.stats().expired_total == 3
        assert box.stats().oldest_age_s == pytest.approx(1800)
    with open_box(db, clock, max_messages=4, max_age_h=1) as box:
        assert box.stats().expired_total == 3
        # When full, expired rows give way to a new scan (and are counted); others never do.
        more = [put(box, 10 + i) for i in range(3)]
        with pytest.raises(OutboxFull):
            put(box, 20)
        clock.t += 1800  # `young` reaches max_age; `more` are half as old
        s = put(box, 21)
        assert box.stats().expired_total == 4
        assert [r.seq for r in box.pending()] == [m.seq for m in more] + [s.seq]


def test_ins_is_never_stored(db: Path) -> None:
    with open_box(db) as box:
        with pytest.raises(OutboxError, match="INS"):
            put(box, 0, kind="ins", payload="")
        with pytest.raises(OutboxError, match="INS"):
            put(box, 0, kind="unknown", payload="IS0112345678901234567")
        assert box.stats().depth == 0 and box.stats().last_seq == 0


def test_invalid_fields_are_refused_without_echoing_the_payload(db: Path) -> None:
    with open_box(db) as box:
        with pytest.raises(OutboxError) as ei:
            put(box, 0, kind="not-a-kind", payload="SECRETPAYLOAD0001")
        assert "kind" in str(ei.value)
        assert "SECRETPAYLOAD0001" not in str(ei.value)
        with pytest.raises(OutboxError, match="payload"):
            put(box, 0, payload="")
        with pytest.raises(OutboxError, match="scanned_at"):
            put(box, 0, scanned_at=datetime(2026, 1, 1))  # naive
        assert box.stats().depth == 0 and box.stats().last_seq == 0
        assert put(box, 1).seq == 1


def test_bad_identity_or_limits_are_config_errors(db: Path) -> None:
    with pytest.raises(ConfigError, match=r"device.id = 'kiosk 01'"):
        open_box(db, device_id="kiosk 01")
    with pytest.raises(ConfigError, match="max_messages"):
        open_box(db, max_messages=0)
    with pytest.raises(ConfigError, match="max_age_h"):
        open_box(db, max_age_h=0)


def test_files_are_private(db: Path) -> None:
    old = os.umask(0o022)
    try:
        with open_box(db) as box:
            put(box, 1)
            for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.seq")):
                assert f.exists(), f
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)


def test_loose_permissions_are_tightened(db: Path) -> None:
    with open_box(db) as box:
        put(box, 1)
    db.chmod(0o644)
    with open_box(db) as box:
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert box.stats().depth == 1


def test_closed_outbox_raises(db: Path) -> None:
    box = open_box(db)
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        put(box, 1)
    with pytest.raises(OutboxError, match="closed"):
        box.pending()


def test_integrity_check_ok(db: Path) -> None:
    with open_box(db) as box:
        put(box, 1)
        assert box.integrity_check() == "ok"


def test_age_follows_the_monotonic_clock_when_the_wall_clock_jumps(db: Path) -> None:
    """A Pi has no RTC: NTP may move the wall clock by days after a scan was queued."""
    wall, mono = Clock(T0), Clock(100.0)
    kw = {"clock": TwoClocks(wall, mono), "boot_id": "boot-1", "max_age_h": 1}
    with Outbox(db, max_messages=10, device_id="kiosk-01", site="pharma", **kw) as box:  # type: ignore[arg-type]
        s = put(box, 1, clock_synced=False)
        wall.t += 60 * 3600  # the weekend the kiosk was off, caught up by NTP
        mono.t += 10
        assert box.expire() == 0
        (p,) = box.pending()
        assert p.seq == s.seq and p.body == s.body
        assert box.stats().oldest_age_s == pytest.approx(10)
        assert p.expires_at == pytest.approx(wall.t + 3600 - 10)
        wall.t -= 90 * 3600  # and backwards
        mono.t += 3600  # an hour later: now it is due
        assert box.pending() == []
        assert box.expire() == 1


def test_age_across_a_reboot_uses_the_wall_clock(db: Path) -> None:
    wall, mono = Clock(T0), Clock(5000.0)
    common = {"max_messages": 10, "max_age_h": 1, "device_id": "kiosk-01", "site": "pharma"}
    with Outbox(db, clock=TwoClocks(wall, mono), boot_id="boot-1", **common) as box:  # type: ignore[arg-type]
        put(box, 1)
    wall.t += 1800
    mono.t = 3.0  # monotonic time restarts with the machine
    with Outbox(db, clock=TwoClocks(wall, mono), boot_id="boot-2", **common) as box:  # type: ignore[arg-type]
        assert box.stats().oldest_age_s == pytest.approx(1800)
        assert len(box.pending()) == 1
        wall.t += 1800
        assert box.expire() == 1


def test_logs_never_show_more_than_the_last_four_characters(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "01LOGPRIVACYZZ9876"
    clock = Clock()
    with caplog.at_level("DEBUG", logger="ordoscan"):
        with open_box(db, clock, max_messages=2, max_age_h=1) as box:
            s = put(box, 0, payload=secret)
            put(box, 1)
            with pytest.raises(OutboxFull) as full:
                put(box, 0, payload=secret)
            box.ack(s.seq)
            clock.t += 7200
            box.expire()
            put(box, 0, payload=secret)
            box.purge()
        db.write_bytes(b"garbage" * 100)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        open_box(db, clock).close()
    assert "…9876" in caplog.text, "the masked form is what identifies a scan in logs"
    assert secret[:-4] not in caplog.text
    assert secret[:-4] not in str(full.value)
