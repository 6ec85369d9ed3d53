"""The outbox's own files: only the last folder is created, and no symbolic link is followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from ordoscan.errors import OutboxDiskError, OutboxError

from tests.test_outbox import open_box, put


def test_a_typo_in_the_path_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "dir" / "outbox.sqlite3"
    with pytest.raises(OutboxDiskError) as refused:
        open_box(db)
    assert str(db.parent) in str(refused.value) and "does not exist" in str(refused.value)
    assert not (tmp_path / "nonexistent").exists(), "a tree was built from a typo"


def test_the_last_folder_alone_is_created_0700(tmp_path: Path) -> None:
    db = tmp_path / "state" / "outbox.sqlite3"
    with open_box(db) as box:
        assert put(box, 1).seq == 1
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_a_symlinked_outbox_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("someone else's file\n")
    target.chmod(0o644)
    db = tmp_path / "state" / "outbox.sqlite3"
    db.parent.mkdir()
    db.symlink_to(target)
    for readonly in (False, True):
        with pytest.raises(OutboxError, match="symbolic link") as refused:
            open_box(db, readonly=readonly)
        assert str(db) in str(refused.value)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644, "chmod followed the link"
    assert target.read_text() == "someone else's file\n"


@pytest.mark.parametrize("suffix", ["-wal", "-shm", ".seq", ".reserve", ".lock"])
def test_a_symlinked_side_file_is_refused(tmp_path: Path, suffix: str) -> None:
    db = tmp_path / "outbox.sqlite3"
    open_box(db).close()
    side = tmp_path / f"outbox.sqlite3{suffix}"
    side.unlink(missing_ok=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o644)
    side.symlink_to(victim)
    with pytest.raises(OutboxError, match="symbolic link") as refused:
        open_box(db)
    assert str(side) in str(refused.value)
    assert victim.read_bytes() == b"precious" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_the_sequence_file_is_never_written_through_a_link(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    victim = tmp_path / "victim"
    (tmp_path / "outbox.sqlite3.seq.tmp").symlink_to(victim)
    with open_box(db) as box:
        with pytest.raises(OutboxError, match=r"outbox\.sqlite3\.seq\.tmp"):
            put(box, 1)
        assert box.pending() == [], "the refused scan left nothing half-written"
    assert not os.path.exists(victim)
