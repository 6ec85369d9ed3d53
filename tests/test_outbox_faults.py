"""The outbox against damaged files, a full disk and a read-only file system (real files)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordoscan.errors import OutboxDiskError, OutboxError
from ordoscan.outbox import RESERVE_BYTES, SEQ_BLOCK, Outbox
from ordoscan.outbox.pages import PageReader
from ordoscan.outbox.recovery import Salvage

from tests.test_outbox import T0, Clock, open_box, put

STAMP = "20261118T110640Z"  # T0 in UTC, as it appears in quarantined file names


def fill(db: Path, n: int) -> list[bytes]:
    """A real outbox file with n scans, closed (checkpointed); returns their bodies."""
    with open_box(db, max_messages=10_000) as box:
        return [put(box, i).body for i in range(n)]


def scans_table_leaves(db: Path) -> list[int]:
    """Page numbers of the leaf pages of the scans table (SQLite's dbstat)."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        rows = c.execute(
            "SELECT pageno FROM dbstat WHERE name = 'scans' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    return [int(r[0]) for r in rows]


def smash_page(db: Path, pageno: int, page_size: int = 4096) -> None:
    with open(db, "r+b") as f:
        f.seek((pageno - 1) * page_size)
        f.write(bytes([0xA5]) * page_size)


# --- damaged files ------------------------------------------------------------------------


def test_garbage_file_is_quarantined_and_a_fresh_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "outbox.sqlite3"
    garbage = random.Random(1).randbytes(10_000)
    db.write_bytes(garbage)
    with caplog.at_level("ERROR", logger="ordoscan.outbox"), open_box(db) as box:
        report = tmp_path / f"outbox.sqlite3.corrupt-{STAMP}.report"
        assert box.stats().quarantined == (str(report),)
        assert not (tmp_path / f"outbox.sqlite3.corrupt-{STAMP}").exists(), "scrubbed"
        facts = json.loads(report.read_text())
        assert facts["scans_recovered"] == 0 and facts["damaged_file_bytes"] == 10_000
        assert "not a database" in facts["why"] and facts["when"].startswith("2026-11-18T11:06")
        assert box.integrity_check() == "ok"
        assert put(box, 1).seq == 1
    assert "damaged" in caplog.text and str(report) in caplog.text
    # Reported again by a later process, until it is deleted after max_age_h.
    with open_box(db) as box:
        assert box.stats().quarantined == (str(report),)


def test_quarantined_files_are_deleted_after_max_age(tmp_path: Path) -> None:
    """What a quarantined file holds would have expired: it is not kept longer."""
    db = tmp_path / "outbox.sqlite3"
    bodies = fill(db, 30)
    smash_page(db, scans_table_leaves(db)[0])
    clock = Clock(T0)
    with open_box(db, clock, max_messages=10_000) as box:
        (quarantined,) = box.stats().quarantined
        assert len(box.pending()) < 30
        clock.t += 23 * 3600
        box.expire()
        assert box.stats().quarantined == (quarantined,)
        clock.t += 3600
        box.expire()
        assert box.stats().quarantined == ()
    assert not list(tmp_path.glob("*.corrupt-*"))
    data = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.is_file())
    for body in bodies:
        assert body not in data


def test_truncated_file_keeps_what_is_readable_and_never_reuses_seq(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    bodies = fill(db, 300)
    size = db.stat().st_size
    os.truncate(db, size // 2)
    with open_box(db, max_messages=10_000) as box:
        assert len(box.stats().quarantined) == 1
        recovered = box.pending(limit=1000)
        assert 0 < len(recovered) < 300
        # Recovered rows are the originals, byte for byte, in order.
        assert [r.body for r in recovered] == [bodies[r.seq - 1] for r in recovered]
        assert put(box, 999).seq == 301


def test_smashed_page_loses_only_that_page(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    bodies = fill(db, 300)
    leaves = scans_table_leaves(db)
    assert len(leaves) > 5
    smash_page(db, leaves[len(leaves) // 2])
    with open_box(db, max_messages=10_000) as box:
        assert len(box.stats().quarantined) == 1
        recovered = box.pending(limit=1000)
        seqs = [r.seq for r in recovered]
        assert seqs == sorted(seqs)
        lost = 300 - len(recovered)
        assert 0 < lost <= 300 // len(leaves) + 5, "one leaf page worth of rows at most"
        assert seqs[-1] == 300, "rows after the damaged page are recovered too"
        assert [r.body for r in recovered] == [bodies[s - 1] for s in seqs]
        assert box.stats().last_seq == 300
        assert put(box, 999).seq == 301


def test_unreadable_counters_fall_back_to_the_sequence_file(tmp_path: Path) -> None:
    """Every page destroyed: nothing is readable, seq still goes on above the old ones."""
    db = tmp_path / "outbox.sqlite3"
    fill(db, 20)
    for page in range(1, db.stat().st_size // 4096 + 1):
        smash_page(db, page)
    with open_box(db) as box:
        assert len(box.stats().quarantined) == 1
        assert box.pending() == []
        s = put(box, 1)
    assert s.seq == SEQ_BLOCK + 1


def leftovers(folder: Path, bodies: list[bytes]) -> list[str]:
    """Files beside the live outbox that still hold any of these scans' bytes."""
    live = {"outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm"}
    return [
        f.name
        for f in folder.iterdir()
        if f.is_file() and f.name not in live and any(b in f.read_bytes() for b in bodies)
    ]


def test_schema_page_damaged_all_scans_salvaged_and_the_copy_scrubbed(tmp_path: Path) -> None:
    """Bytes 100-399 (the schema) overwritten: SQLite sees no table, the leaf pages are intact."""
    db = tmp_path / "outbox.sqlite3"
    bodies = fill(db, 4)
    with open(db, "r+b") as f:
        f.seek(100)
        f.write(bytes([0xA5]) * 300)
    with open_box(db) as box:
        assert [r.body for r in box.pending()] == bodies
        assert box.stats().last_seq == 4, "the counters were read from their page too"
        (report,) = box.stats().quarantined
        assert json.loads(Path(report).read_text())["scans_recovered"] == 4
        assert leftovers(tmp_path, bodies) == [], "identifiers left outside the queue"
        assert put(box, 9).seq == 5


def test_header_and_schema_destroyed_scans_still_salvaged(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    bodies = fill(db, 20)
    smash_page(db, 1)
    with open_box(db) as box:
        assert [r.body for r in box.pending()] == bodies
        assert put(box, 1).seq == 21


def scan_bodies_in_pages(db: Path) -> list[bytes]:
    """The bodies of the scans rows found by reading the pages alone (file and its WAL)."""
    (reader,) = PageReader.open(db)
    rows = {r.rowid: r.values[5] for r in reader.records() if len(r.values) == 6}
    return [b for _, b in sorted(rows.items()) if isinstance(b, bytes)]


def test_scans_only_in_the_wal_are_salvaged_from_its_frames(tmp_path: Path) -> None:
    """A crash before any checkpoint, then the schema page damaged: the rows are in WAL frames."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    crashed.mkdir()
    with open_box(live / "outbox.sqlite3", max_messages=10_000) as box:
        assert box.checkpoint()  # the tables are in the file; the scans will be in the WAL only
        bodies = [put(box, i).body for i in range(30)]
        for suffix in ("", "-wal"):  # what a power cut would leave: committed, not checkpointed
            shutil.copy(live / f"outbox.sqlite3{suffix}", crashed / f"outbox.sqlite3{suffix}")
    assert (crashed / "outbox.sqlite3-wal").stat().st_size > 0
    db = crashed / "outbox.sqlite3"
    assert scan_bodies_in_pages(db) == bodies, "read from the committed WAL frames"
    shutil.copy(db, tmp_path / "file-alone.sqlite3")
    assert scan_bodies_in_pages(tmp_path / "file-alone.sqlite3") == [], "not in the file itself"
    with open(db, "r+b") as f:
        f.seek(100)
        f.write(bytes([0xA5]) * 300)
    with open_box(db, max_messages=10_000) as box:
        assert [r.body for r in box.pending()] == bodies
        assert leftovers(crashed, bodies) == []


def test_a_damaged_copy_left_by_a_crash_is_salvaged_at_the_next_open(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    bodies = fill(db, 5)
    stale = tmp_path / f"outbox.sqlite3.corrupt-{STAMP}"
    db.rename(stale)  # moved aside, then the power went before it was salvaged
    with open(stale, "r+b") as f:
        f.seek(100)
        f.write(bytes([0xA5]) * 300)
    with open_box(db) as box:
        assert [r.body for r in box.pending()] == bodies
        assert not stale.exists() and leftovers(tmp_path, bodies) == []
        assert box.stats().quarantined == (f"{stale}.report",)


def test_damage_found_while_running_is_recovered_and_the_scan_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "outbox.sqlite3"
    clock = Clock()
    box = open_box(db, clock)
    try:
        for i in range(40):
            put(box, i)
        assert box.checkpoint()
        # Drop the connection's page cache, then damage every page but the header.
        assert box._conn is not None
        box._conn.execute("PRAGMA shrink_memory")
        pages = db.stat().st_size // 4096
        for p in range(2, pages + 1):
            smash_page(db, p)
        with caplog.at_level("ERROR", logger="ordoscan.outbox"):
            s = put(box, 100)
        assert s.seq > 40
        assert len(box.stats().quarantined) == 1
        assert box.pending()[-1] == s
        assert "damaged" in caplog.text
    finally:
        box.close()
    with open_box(db, clock) as box:
        assert box.pending()[-1] == s


def test_a_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite3"
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("CREATE TABLE customers (name TEXT)")
        c.execute("INSERT INTO customers VALUES ('Dupont')")
        c.commit()
    before = db.read_bytes()
    with pytest.raises(OutboxError, match=r"other\.sqlite3: is an SQLite database but not"):
        open_box(db)
    assert db.read_bytes() == before
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_a_damaged_sequence_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "outbox.sqlite3"
    fill(db, 3)
    (tmp_path / "outbox.sqlite3.seq").write_text("not a number")
    with caplog.at_level("WARNING", logger="ordoscan.outbox"), open_box(db) as box:
        assert put(box, 3).seq == 4  # the file's own counter is authoritative
    assert "sequence file" in caplog.text


# --- disk full, read-only: a real small file system ------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full / read-only file system)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Take every free block of the file system with one file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = bytes(4096)
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    finally:
        os.close(fd)
    return filler


def test_full_disk_refuses_scans_keeps_rows_and_recovers(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = small_fs / "outbox.sqlite3"
    clock = Clock()
    with open_box(db, clock, max_messages=10_000) as box:
        kept = [put(box, i) for i in range(20)]
        assert (small_fs / "outbox.sqlite3.reserve").stat().st_size == RESERVE_BYTES
        filler = fill_disk(small_fs)
        refused = 0
        with caplog.at_level("WARNING", logger="ordoscan.outbox"):
            # Large payloads, so the WAL needs new blocks at once.
            for i in range(200):
                try:
                    put(box, 100 + i, payload="01" + "Z" * 3000 + str(i))
                except OutboxDiskError as e:
                    assert "the disk is full" in str(e)
                    assert str(db) in str(e)
                    refused += 1
                    break
        assert refused == 1, "a full disk refuses the scan with OutboxDiskError"
        assert box.integrity_check() == "ok"
        assert box.pending(limit=1000)[: len(kept)] == kept, "existing rows intact"
        seq_before = box.stats().last_seq
        # Delivered scans can still be deleted: the reserve gives way.
        assert box.ack_many([s.seq for s in kept[:10]]) == 10
        assert not (small_fs / "outbox.sqlite3.reserve").exists()
        filler.unlink()
        s = put(box, 500)
        assert s.seq == seq_before + 1, "no seq lost or reused by the refused scan"
        assert [r.seq for r in box.pending(limit=1000)][:10] == [k.seq for k in kept[10:]]
    with open_box(db, clock, max_messages=10_000) as box:
        assert box.integrity_check() == "ok"
        assert box.pending(limit=1000)[-1] == s
        assert (small_fs / "outbox.sqlite3.reserve").stat().st_size == RESERVE_BYTES


def test_new_outbox_on_a_full_disk_is_a_clear_error(small_fs: Path) -> None:
    fill_disk(small_fs)
    folder = small_fs / "state"
    with pytest.raises(OutboxDiskError, match="disk is full") as ei:
        open_box(folder / "outbox.sqlite3")
    assert str(small_fs) in str(ei.value)


def test_read_only_file_system(small_fs: Path) -> None:
    db = small_fs / "outbox.sqlite3"
    bodies = fill(db, 5)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(OutboxDiskError, match="read-only") as ei:
        open_box(db)
    assert str(db) in str(ei.value)
    with pytest.raises(OutboxDiskError, match="read-only"):
        open_box(small_fs / "new.sqlite3")
    with pytest.raises(OutboxDiskError, match="read-only"):
        open_box(small_fs / "sub" / "new.sqlite3")
    # Inspection still works (ordoscan queue stats / list), and changes nothing.
    with Outbox(db, max_messages=10, max_age_h=24, device_id="k", site="s",
                clock=Clock(), readonly=True) as ro:
        assert [s.body for s in ro.pending()] == bodies
        assert ro.stats().depth == 5
        with pytest.raises(OutboxError, match="read-only"):
            ro.purge()
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    with open_box(db) as box:
        assert put(box, 9).seq == 6


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores file permissions (the tmpfs tests cover root)"
)
def test_unwritable_folder_as_a_normal_user(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutboxDiskError, match="permission denied"):
            open_box(folder / "outbox.sqlite3")
    finally:
        folder.chmod(0o700)


def test_folder_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(OutboxDiskError, match="state"):
        open_box(tmp_path / "state" / "outbox.sqlite3")


def test_clock_for_quarantine_name(tmp_path: Path) -> None:
    """Two quarantines in the same second keep both files."""
    db = tmp_path / "outbox.sqlite3"
    for _ in range(2):
        db.write_bytes(b"garbage" * 1000)
        with open_box(db, Clock(T0)):
            pass
        db.unlink()
        for f in tmp_path.glob("outbox.sqlite3-*"):
            f.unlink()
    names = sorted(p.name for p in tmp_path.glob("outbox.sqlite3.corrupt-*"))
    assert names == [
        f"outbox.sqlite3.corrupt-{STAMP}-2.report",
        f"outbox.sqlite3.corrupt-{STAMP}.report",
    ]


def test_salvage_of_randomly_damaged_files_never_fails_and_never_invents(tmp_path: Path) -> None:
    """Bad input never crashes: bytes flipped anywhere in the file (header, schema, leaves,
    overflow), the salvage returns only rows that are byte for byte what was stored."""
    src = tmp_path / "src.sqlite3"
    with open_box(src, max_messages=10_000) as box:
        bodies: dict[int, bytes] = {}
        for i in range(60):  # some bodies overflow their page, most do not
            s = put(box, i, payload="01" + "K" * (i * 97 % 5000) + f"{i:04d}")
            bodies[s.seq] = s.body
    data = src.read_bytes()
    rng = random.Random(7)
    recovered: list[int] = []
    for round_ in range(25):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 30)):
            at, size = rng.randrange(len(damaged)), rng.randint(1, 600)
            damaged[at : at + size] = rng.randbytes(len(damaged[at : at + size]))  # in place
        target = tmp_path / f"damaged-{round_}"
        target.write_bytes(bytes(damaged))
        salvage = Salvage.read(target, SEQ_BLOCK)
        for row in salvage.rows:
            assert bodies[row[0]] == row[5], "a salvaged row differs from what was stored"
        recovered.append(len(salvage.rows))
    print("rows salvaged per damaged file (of 60):", recovered)
    assert sum(recovered) >= 0.6 * 60 * len(recovered), "scattered damage loses most rows"
