"""Outbox durability and privacy: SIGKILL after put(), no payload left after delivery, threads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from ordoscan.message import ScanMessage
from ordoscan.outbox import Outbox

from tests.support import child_env
from tests.test_outbox import open_box, put

WRITER = textwrap.dedent(
    """
    import sys
    from ordoscan.outbox import Outbox

    path, start = sys.argv[1], int(sys.argv[2])
    box = Outbox(path, max_messages=100_000, max_age_h=24, device_id="kiosk-01", site="pharma")
    i = start
    while True:
        s = box.put(kind="ordonnance_numerique", symbology="QRCode", symbology_id="]Q1",
                    payload=f"01KILLTEST{i:08d}", clock_synced=True)
        print(s.seq, s.scan_id, i, flush=True)  # printed only once put() has returned
        i += 1
    """
)


def run_writer_and_kill(db: Path, start: int, lines_before_kill: int) -> list[tuple[int, str, int]]:
    """Start a process that puts scans in a loop, SIGKILL it, return what it reported stored."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(start)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )
    reported: list[tuple[int, str, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seq, scan_id, i = line.split()
            reported.append((int(seq), scan_id, int(i)))
            if len(reported) >= lines_before_kill:
                break
        # Killed in the middle of its next put(), most likely.
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    for line in rest.splitlines():  # anything printed between our last read and the kill
        seq, scan_id, i = line.split()
        reported.append((int(seq), scan_id, int(i)))
    assert proc.returncode == -signal.SIGKILL, err
    assert len(reported) >= lines_before_kill, err
    return reported


def test_sigkill_right_after_put_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    everything: list[tuple[int, str, int]] = []
    start = 0
    for round_, n in enumerate((50, 120, 75)):
        reported = run_writer_and_kill(db, start, n)
        everything += reported
        start = reported[-1][2] + 1000  # new payload numbers for the next run
        with Outbox(db, max_messages=100_000, max_age_h=24, device_id="k", site="s") as box:
            assert box.integrity_check() == "ok", f"round {round_}"
            stored = {s.seq: s for s in box.pending(limit=100_000)}
        for seq, scan_id, i in everything:
            assert seq in stored, f"seq {seq} was reported stored, then lost (round {round_})"
            msg = ScanMessage.from_json(stored[seq].body)
            assert msg.scan_id == scan_id
            assert msg.payload == f"01KILLTEST{i:08d}"
    seqs = [s for s, _, _ in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seq increases across restarts"


def files_of(db: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm", ".seq", ".reserve"):
        f = Path(f"{db}{suffix}")
        if f.exists():
            data += f.read_bytes()
    return data


def test_delivered_payloads_leave_the_file_and_the_wal(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    a, b, c = "01PRIVACYAAAA00001", "01PRIVACYBBBB00002", "01PRIVACYCCCC00003"
    with open_box(db) as box:
        sa = put(box, 0, payload=a)
        put(box, 0, payload=b)
        assert a.encode() in files_of(db), "a queued payload is on disk (so the search works)"
        assert box.ack(sa.seq)
        assert box.checkpoint()
        on_disk = files_of(db)
        assert a.encode() not in on_disk, "delivered payload still in the file bytes"
        assert b.encode() in on_disk, "the undelivered one is still there"
        # The queue emptying triggers the checkpoint by itself.
        sc = put(box, 0, payload=c)
        assert box.ack_many([s.seq for s in box.pending()]) == 2
        on_disk = files_of(db)
        for p in (a, b, c):
            assert p.encode() not in on_disk, p
        assert Path(f"{db}-wal").stat().st_size == 0
        assert sc.seq == 3
    for p in (a, b, c):
        assert p.encode() not in files_of(db), p


def test_purged_and_expired_payloads_leave_the_files(tmp_path: Path) -> None:
    from tests.test_outbox import Clock

    db = tmp_path / "outbox.sqlite3"
    clock = Clock()
    with open_box(db, clock, max_age_h=1) as box:
        put(box, 0, payload="01EXPIREDPAYLOAD01")
        clock.t += 1800
        put(box, 0, payload="01KEPTPAYLOAD00002")
        clock.t += 1800
        assert box.expire() == 1
        assert b"01EXPIREDPAYLOAD01" not in files_of(db)
        assert b"01KEPTPAYLOAD00002" in files_of(db)
        assert box.purge() == 1
        assert b"01KEPTPAYLOAD00002" not in files_of(db)


def test_many_deliveries_are_scrubbed_in_batches(tmp_path: Path) -> None:
    """Draining a long queue: every payload delivered is gone once the queue is empty."""
    db = tmp_path / "outbox.sqlite3"
    with open_box(db, max_messages=10_000) as box:
        stored = [put(box, i) for i in range(600)]
        for s in stored:
            assert box.ack(s.seq)
        data = files_of(db)
    for s in stored[::37]:
        assert json.loads(s.body)["payload"].encode() not in data


def test_pipeline_and_mqtt_threads_share_one_outbox(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    total = 400
    delivered: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with open_box(db, max_messages=10_000) as box:

        def producer() -> None:
            try:
                for i in range(total):
                    put(box, i)
            except BaseException as e:  # reported to the test below
                errors.append(e)

        def consumer() -> None:
            try:
                after = 0
                while not stop.is_set() and len(delivered) < total:
                    batch = box.pending(limit=25, after_seq=after)
                    if not batch:
                        stop.wait(0.005)
                        continue
                    delivered.extend(s.seq for s in batch)
                    after = batch[-1].seq
                    assert box.ack_many([s.seq for s in batch]) == len(batch)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
        for t in threads:
            t.start()
        threads[0].join(120)
        threads[1].join(120)
        stop.set()
        assert not errors, errors
        assert delivered == list(range(1, total + 1))
        st = box.stats()
        assert st.depth == 0 and st.last_seq == total


@pytest.mark.parametrize("n", [1, 3])
def test_reopen_many_times_keeps_one_quarantine_free_file(tmp_path: Path, n: int) -> None:
    db = tmp_path / "outbox.sqlite3"
    for i in range(n):
        with open_box(db) as box:
            put(box, i)
    with open_box(db) as box:
        assert box.stats().quarantined == ()
        assert box.stats().depth == n
