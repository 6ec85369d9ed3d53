"""One writer per outbox (SPEC §8): an OS lock held for the writer's life, freed by the kernel."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ordoscan.cli import main
from ordoscan.clock import SYSTEM_CLOCK
from ordoscan.errors import OutboxInUse

from tests.support.kiosk import ROOT, Daemon, kiosk_data, write_config
from tests.support.mosquitto import free_port
from tests.support.wait import wait_until
from tests.test_outbox import open_box, put


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of the outbox folder with a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def settled(folder: Path) -> dict[str, str]:
    """The folder's snapshot once the running daemon has stopped changing it (start-up)."""
    last: list[dict[str, str]] = [{}]

    def steady() -> bool:
        previous = last[0]
        time.sleep(0.5)
        last[0] = snapshot(folder)
        return last[0] == previous

    wait_until(steady, 20, "the outbox folder to settle after start-up")
    return last[0]


def test_a_second_writer_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    with open_box(db) as first:
        put(first, 1)
        before = snapshot(tmp_path)
        with pytest.raises(OutboxInUse) as refused:
            open_box(db)
        assert str(db) in str(refused.value)
        assert f"PID {os.getpid()}" in str(refused.value)
        assert snapshot(tmp_path) == before, "the refused writer touched the files"
        # inspection is still possible beside the writer, and names it
        with open_box(db, readonly=True) as ro:
            assert ro.stats().depth == 1
            assert ro.writer_lock.holder() == os.getpid()
        assert put(first, 2).seq == 2
    with open_box(db) as again:  # closed: the lock is free
        assert put(again, 3).seq == 3
    with open_box(db, readonly=True) as ro:
        assert ro.writer_lock.holder() is None


def test_sigkill_of_the_holder_frees_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from ordoscan.outbox import Outbox
            box = Outbox({str(db)!r}, max_messages=10, max_age_h=1, device_id="k", site="s")
            print("HOLDING", flush=True)
            time.sleep(600)
        """)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HOLDING"
        with pytest.raises(OutboxInUse, match=rf"PID {holder.pid}\b"):
            open_box(db)
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(10) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.wait(10)
    with open_box(db) as box:  # no stale lock left behind by the killed process
        assert put(box, 1).seq == 1


def test_two_daemons_on_one_outbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The second `ordoscan run` exits 1 at once naming the file and the PID; queue
    commands beside the running daemon: stats and list read, purge refuses; SIGKILL of
    the daemon frees the outbox for the next one."""
    data = kiosk_data(tmp_path, free_port())  # no broker: the scans stay queued
    config = write_config(data, tmp_path / "ordoscan.toml")
    db = Path(data["outbox"]["path"])
    with open_box(db, SYSTEM_CLOCK, device_id="kiosk-e2e", site="pharmacie-e2e") as box:
        put(box, 1)
        put(box, 2)
    first = Daemon(config)
    try:
        assert first.wait_log(r"\bready\b", 60), first.text()[-3000:]
        before = settled(db.parent)
        second = Daemon(config)
        try:
            rc = second.wait(30)
        finally:
            second.kill()
        assert rc == 1, second.text()[-3000:]
        assert str(db) in second.text() and f"PID {first.pid}" in second.text()
        assert "ready" not in second.text()
        assert snapshot(db.parent) == before, "the refused daemon wrote to the outbox folder"
        assert first.proc.poll() is None, "the first daemon must keep running"

        assert main(["queue", "stats", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "queued       2 of" in out and f"in use by    PID {first.pid}" in out
        assert main(["queue", "list", "--config", str(config)]) == 0
        assert "2 scan(s) waiting" in capsys.readouterr().out
        assert main(["queue", "purge", "--config", str(config), "--yes"]) == 1
        err = capsys.readouterr().err
        assert "refusing to purge" in err and f"PID {first.pid}" in err
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        first.kill()
    third = Daemon(config)
    try:
        assert third.wait_log(r"\bready\b", 60), third.text()[-3000:]
        assert "2 scan(s) queued" in third.text()
        third.signal(signal.SIGTERM)
        assert third.wait(10) == 0
    finally:
        third.kill()
