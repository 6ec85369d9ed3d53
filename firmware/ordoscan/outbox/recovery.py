"""Damaged outbox files: moved aside, their readable scans salvaged, then forgotten.

A damaged file is renamed `<outbox>.corrupt-<UTC time>` (with its -wal and
-shm); the scans still readable in it are copied into a fresh file by the
store. Quarantined names are reported until they are deleted, after max_age_h
(what they hold would have expired by then).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ordoscan.errors import OutboxDiskError
from ordoscan.message import ScanMessage
from ordoscan.outbox.files import explain_os, fsync_dir, sibling
from ordoscan.outbox.model import COLUMNS, Row

log = logging.getLogger("ordoscan.outbox")

# Salvage of a damaged file: how many damaged spots to step over at most.
SALVAGE_MAX_SKIPS = 100_000
_STAMP = "%Y%m%dT%H%M%SZ"
_SIDE = ("", "-wal", "-shm")


class Quarantine:
    """The quarantined copies of one outbox file."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._prefix = outbox.name + ".corrupt-"

    def files(self) -> tuple[str, ...]:
        """The quarantined files beside the outbox, oldest first."""
        try:
            names = sorted(
                p.name
                for p in self.outbox.parent.iterdir()
                if p.name.startswith(self._prefix) and not p.name.endswith(("-wal", "-shm"))
            )
        except OSError:
            return ()
        return tuple(str(self.outbox.parent / n) for n in names)

    def move_aside(self, wall: float) -> Path:
        """Move the damaged file (and its -wal/-shm) aside under a UTC-timestamped name."""
        stamp = datetime.fromtimestamp(wall, UTC).strftime(_STAMP)
        target = sibling(self.outbox, f".corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = sibling(self.outbox, f".corrupt-{stamp}-{n}")
        try:
            for suffix in _SIDE:
                src = sibling(self.outbox, suffix)
                if src.exists():
                    os.rename(src, f"{target}{suffix}")
            fsync_dir(self.outbox.parent)
        except OSError as e:
            raise OutboxDiskError(
                f"{self.outbox}: cannot quarantine the damaged outbox: {explain_os(e)}"
            ) from None
        return target

    def forget_older_than(self, max_age_s: float, wall: float) -> None:
        """Delete quarantined files older than max_age_s.

        Their readable scans were copied into the live file, and anything still
        in them would have expired by now: health data is not kept longer than
        the outbox itself would keep it.
        """
        cut = len(self._prefix)
        for name in self.files():
            stamp = Path(name).name[cut : cut + 16]
            try:
                when = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
            except ValueError:
                continue
            if wall - when.timestamp() < max_age_s:
                continue
            for suffix in _SIDE:
                try:
                    os.unlink(name + suffix)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("%s: cannot delete: %s", name + suffix, explain_os(e))
            log.warning("%s: quarantined file deleted after %g h", name, max_age_s / 3600)


@dataclass
class Salvage:
    """What could be read back from a quarantined file."""

    rows: list[Row]
    last_seq: int
    expired_total: int
    meta_ok: bool

    @classmethod
    def read(cls, target: Path, seq_ceiling: int) -> Salvage:
        """Read every intact row of a damaged file, stepping over damaged pages."""
        found: dict[int, Row] = {}
        meta: dict[str, int] = {}
        try:
            conn = sqlite3.connect(str(target), timeout=1.0, isolation_level=None)
        except sqlite3.Error:
            return cls([], 0, 0, False)
        try:
            with contextlib.suppress(sqlite3.Error):
                # writable_schema lets SQLite read a file shorter than its header says.
                conn.execute("PRAGMA writable_schema=ON")
                conn.execute("PRAGMA query_only=ON")
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
            except sqlite3.Error:
                tables = set()
            if "meta" in tables:
                with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
                    for key, value in conn.execute("SELECT key, value FROM meta"):
                        meta[str(key)] = int(value)
            if "scans" in tables:
                bound = meta.get("last_seq") or seq_ceiling or SALVAGE_MAX_SKIPS
                cls._scan(conn, found, bound)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        rows = [found[s] for s in sorted(found)]
        meta_ok = "last_seq" in meta
        return cls(rows, meta.get("last_seq", 0), meta.get("expired_total", 0), meta_ok)

    @classmethod
    def _scan(cls, conn: sqlite3.Connection, found: dict[int, Row], bound: int) -> None:
        """Read rows in seq order; past a damaged spot, start again a little further on."""
        query = f"SELECT {COLUMNS} FROM scans WHERE seq >= ? ORDER BY seq"
        nxt, failures = 1, 0
        while nxt <= bound and failures < SALVAGE_MAX_SKIPS:
            start = nxt
            try:
                for row in conn.execute(query, (nxt,)):
                    nxt = int(row[0]) + 1
                    keep(row, found)
                break
            except (sqlite3.Error, ValueError, TypeError):
                failures += 1
                if nxt == start:  # no progress from a fresh start here: step over this seq
                    nxt += 1
        # The bound may be a guess: read down from the top until the first damage.
        with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
            for row in conn.execute(query.replace("ORDER BY seq", "ORDER BY seq DESC"), (nxt,)):
                if int(row[0]) in found:
                    break
                keep(row, found)


def keep(row: tuple[object, ...], found: dict[int, Row]) -> None:
    """Keep a salvaged row only if its message is intact and matches its columns."""
    seq, scan_id, created_at, created_mono, boot_id, body = row
    if not (
        isinstance(body, bytes)
        and isinstance(created_at, int | float)
        and isinstance(created_mono, int | float)
        and isinstance(boot_id, str)
    ):
        return
    try:
        msg = ScanMessage.from_json(body)
    except ValueError:
        return
    if msg.seq == seq and msg.scan_id == scan_id:
        found[msg.seq] = (
            msg.seq,
            msg.scan_id,
            float(created_at),
            float(created_mono),
            boot_id,
            body,
        )
