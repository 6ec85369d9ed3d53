"""`ordoscan queue stats|list|purge` through the real CLI, on real outbox files."""

from __future__ import annotations

import os
import pty
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ordoscan.cli import main
from ordoscan.commands.queue import format_age
from ordoscan.outbox import Outbox

from tests.test_outbox import Clock

PAYLOADS = ["01S2TBPZ2JCNZZYGHZ", "01ABCDEFGHIJKL1234", "01ZYXWVUTSRQPO9876"]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "ordoscan.toml"
    path.write_text(
        '[device]\nid = "kiosk-07"\nsite = "pharmacie-test"\n'
        f'[outbox]\npath = "{tmp_path / "state" / "outbox.sqlite3"}"\n'
        "max_messages = 50\nmax_age_h = 2\n"
    )
    return path


def outbox_path(cfg: Path) -> Path:
    return cfg.parent / "state" / "outbox.sqlite3"


def fill(cfg: Path, ages_s: list[float]) -> list[int]:
    """Queue one scan per age (seconds before now), with the payloads above."""
    seqs = []
    now = time.time()
    for age, payload in zip(ages_s, PAYLOADS, strict=False):
        with Outbox(
            outbox_path(cfg),
            max_messages=50,
            max_age_h=2,
            device_id="kiosk-07",
            site="pharmacie-test",
            clock=Clock(now - age),
        ) as box:
            seqs.append(
                box.put(
                    kind="ordonnance_numerique",
                    symbology="QRCode",
                    symbology_id="]Q1",
                    payload=payload,
                    clock_synced=True,
                ).seq
            )
    return seqs


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A real pseudo-terminal as stdin; yields the master side to type into."""
    master, slave = pty.openpty()
    stdin = os.fdopen(slave, "r", buffering=1)
    monkeypatch.setattr("sys.stdin", stdin)
    try:
        yield master
    finally:
        stdin.close()
        os.close(master)


def test_stats(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(cfg, [3725, 60, 5])
    assert main(["queue", "stats", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert str(outbox_path(cfg)) in out
    assert "queued       3 of 50" in out
    assert "oldest       1 h 02 min" in out
    assert "expired      0" in out
    assert "last seq     3" in out
    assert "quarantined  none" in out


def test_stats_reports_expired_and_quarantined(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = outbox_path(cfg)
    db.parent.mkdir()
    db.write_bytes(b"this is not a database" * 100)
    Outbox(db, max_messages=50, max_age_h=2, device_id="kiosk-07", site="pharmacie-test").close()
    fill(cfg, [3 * 3600, 10])  # the first one is past max_age_h = 2
    with Outbox(
        db, max_messages=50, max_age_h=2, device_id="kiosk-07", site="pharmacie-test"
    ) as box:
        assert box.expire() == 1
    assert main(["queue", "stats", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "expired      1" in out
    assert "queued       1 of 50" in out
    assert "1 damaged file(s)" in out and ".corrupt-" in out


def test_list_masks_payloads(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seqs = fill(cfg, [125, 20, 3])
    assert main(["queue", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit() and "scan(s)" not in ln]
    assert [int(ln.split()[0]) for ln in lines] == seqs
    for ln, payload in zip(lines, PAYLOADS, strict=True):
        assert "ordonnance_numerique" in ln
        assert ln.endswith("…" + payload[-4:])
    for payload in PAYLOADS:
        assert payload not in out
        assert payload[:-4] not in out
    assert "2 min 05 s" in lines[0]
    assert "3 scan(s) waiting" in out


def test_list_and_stats_do_not_create_the_file(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("stats", "list", "purge"):
        assert main(["queue", action, "--config", str(cfg), "--yes"]) == 1
        err = capsys.readouterr().err
        assert "no outbox file" in err and str(outbox_path(cfg)) in err
    assert not outbox_path(cfg).parent.exists()


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[outbox]\nmax_messages = 0\n")
    assert main(["queue", "stats", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "outbox.max_messages" in err


def test_purge_refuses_without_a_terminal(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fill(cfg, [1, 1])
    with open(tmp_path / "empty-stdin", "w+") as not_a_tty:
        monkeypatch.setattr("sys.stdin", not_a_tty)
        assert main(["queue", "purge", "--config", str(cfg)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert main(["queue", "stats", "--config", str(cfg)]) == 0
    assert "queued       2 of 50" in capsys.readouterr().out


def test_purge_with_yes(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(cfg, [1, 1, 1])
    assert main(["queue", "purge", "--config", str(cfg), "--yes"]) == 0
    assert "purged 3 scan(s)" in capsys.readouterr().out
    assert main(["queue", "stats", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "queued       0 of 50" in out and "last seq     3" in out
    assert main(["queue", "purge", "--config", str(cfg), "--yes"]) == 0
    assert "nothing to purge" in capsys.readouterr().out


def test_purge_asks_on_a_terminal_and_obeys(
    cfg: Path, capsys: pytest.CaptureFixture[str], terminal: int
) -> None:
    fill(cfg, [1, 1])
    os.write(terminal, b"n\n")
    assert main(["queue", "purge", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "Purge 2 scans? [y/N]" in out and "nothing purged" in out
    os.write(terminal, b"\n")  # the default is no
    assert main(["queue", "purge", "--config", str(cfg)]) == 1
    assert "nothing purged" in capsys.readouterr().out
    os.write(terminal, b"y\n")
    assert main(["queue", "purge", "--config", str(cfg)]) == 0
    assert "purged 2 scan(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min 00 s"),
        (3599, "59 min 59 s"),
        (3600, "1 h 00 min"),
        (86399, "23 h 59 min"),
        (90000, "1 d 01 h"),
        (-5, "0 s"),
    ],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


def test_list_shows_a_tampered_row_escaped(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import sqlite3

    fill(cfg, [10.0])
    with sqlite3.connect(outbox_path(cfg)) as db:  # the file is not the kiosk's to trust
        body = {"kind": "\x1b[2J\u202eevil\x9b", "payload": "01S2TBPZ2JCNZZ\x1b[0m"}
        db.execute("UPDATE scans SET body = ?", (json.dumps(body).encode(),))
    assert main(["queue", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for raw in ("\x1b", "\u202e", "\x9b"):
        assert raw not in out
    assert "\\e[2J\\u202eevil\\x9b" in out and "…\\e[0m" in out


def test_stats_on_a_damaged_outbox_says_what_to_do_next(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(cfg, [10, 10, 10])
    db = outbox_path(cfg)
    with open(db, "r+b") as f:  # the schema page
        f.seek(100)
        f.write(bytes([0xA5]) * 300)
    for action in ("stats", "list"):
        assert main(["queue", action, "--config", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert str(db) in err and "damaged" in err
        assert "next: restart the daemon (`sudo systemctl restart ordoscan`)" in err
    # what the daemon does at its next start
    Outbox(db, max_messages=50, max_age_h=2, device_id="kiosk-07", site="pharmacie-test").close()
    assert main(["queue", "stats", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "queued       3 of 50" in out
    assert "1 damaged file(s) replaced" in out and ".report" in out
    assert "next: read the report" in out
