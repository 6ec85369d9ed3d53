"""Damaged outbox files: moved aside, their readable scans salvaged, then scrubbed.

A damaged file is renamed `<outbox>.corrupt-<UTC time>` (with its -wal and
-shm). Its scans are read back twice: through SQLite (rows it can still reach),
and straight from the b-tree leaf pages (`pages`), which works even when the
schema page is destroyed. Once the store has committed them in a fresh file,
the damaged copy is overwritten with zeros and deleted: it held identifiers,
and they must not outlive the queue. What stays is a report without any
identifier (`<outbox>.corrupt-<UTC time>.report`: when, why, how many scans),
shown by `queue stats` and `check` until it is deleted after max_age_h.
A damaged copy left by a crash in between is salvaged again at the next open.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ordoscan.clock import iso_ms
from ordoscan.errors import OutboxDiskError
from ordoscan.message import ScanMessage
from ordoscan.outbox.files import explain_os, fsync_dir, sibling
from ordoscan.outbox.model import COLUMNS, Row
from ordoscan.outbox.pages import PageReader

log = logging.getLogger("ordoscan.outbox")

# Salvage of a damaged file: how many damaged spots to step over at most.
SALVAGE_MAX_SKIPS = 100_000
_STAMP = "%Y%m%dT%H%M%SZ"
_SIDE = ("", "-wal", "-shm")
REPORT = ".report"
# What an operator does about a damaged live file (shown by `queue` and `check`).
DAMAGED_NEXT = (
    "next: restart the daemon (`sudo systemctl restart ordoscan`): at start it moves the "
    "damaged file aside, copies every readable scan into a fresh outbox, scrubs the copy and "
    "writes a report beside it; then run `ordoscan queue stats` again"
)


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

    def leftovers(self) -> tuple[Path, ...]:
        """Damaged copies not yet salvaged and scrubbed (a crash came in between)."""
        return tuple(Path(n) for n in self.files() if not n.endswith((REPORT, REPORT + ".tmp")))

    def move_aside(self, wall: float) -> Path:
        """Move the damaged file (and its -wal/-shm) aside under a UTC-timestamped name."""
        stamp = datetime.fromtimestamp(wall, UTC).strftime(_STAMP)
        target = sibling(self.outbox, f".corrupt-{stamp}")
        n = 1
        while target.exists() or sibling(target, REPORT).exists():
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

    def replace_with_report(
        self, target: Path, problem: str, salvage: Salvage, wall: float
    ) -> Path:
        """Write a report without identifiers, then zero and delete the damaged copy."""
        report = sibling(target, REPORT)
        try:
            size = target.stat().st_size
        except OSError:
            size = None
        text = json.dumps(
            {
                "when": iso_ms(wall),
                "outbox": str(self.outbox),
                "why": problem,
                "damaged_file_bytes": size,
                "scans_recovered": len(salvage.rows),
                "counters_readable": salvage.meta_ok,
                "last_seq": salvage.last_seq,
                "damaged_file": "overwritten and deleted once its scans were safe in the outbox",
            },
            indent=2,
        )
        tmp = sibling(report, ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, text.encode("utf-8") + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, report)
        except OSError as e:
            log.warning("%s: cannot write the damage report: %s", report, explain_os(e))
        for suffix in _SIDE:
            _scrub(Path(f"{target}{suffix}"))
        with contextlib.suppress(OSError):
            fsync_dir(self.outbox.parent)
        return report

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
            conn = None
        if conn is not None:
            cls._through_sqlite(conn, found, meta, seq_ceiling)
        _from_pages(target, found, meta)
        rows = [found[s] for s in sorted(found)]
        meta_ok = "last_seq" in meta
        return cls(rows, meta.get("last_seq", 0), meta.get("expired_total", 0), meta_ok)

    @classmethod
    def _through_sqlite(
        cls, conn: sqlite3.Connection, found: dict[int, Row], meta: dict[str, int], ceiling: int
    ) -> None:
        """The rows and counters SQLite can still reach through the file's schema."""
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
                bound = meta.get("last_seq") or ceiling or SALVAGE_MAX_SKIPS
                cls._scan(conn, found, bound)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

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


def _from_pages(target: Path, found: dict[int, Row], meta: dict[str, int]) -> None:
    """Add the rows and counters read straight from the leaf pages (no schema needed).

    A scans row is a 6-value record whose first value is NULL (seq is the rowid) and
    whose body is a valid message with that seq and scan_id; a meta row is a
    2-value record ('last_seq' or 'expired_total', an integer).
    """
    try:
        readers = PageReader.open(target)
    except OSError as e:
        log.warning("%s: cannot read its pages: %s", target, explain_os(e))
        return
    best: tuple[dict[int, Row], dict[str, int]] = ({}, {})
    for reader in readers:  # one unless the header is damaged: then the best page size
        rows: dict[int, Row] = {}
        counters: dict[str, int] = {}
        for rec in reader.records():
            v = rec.values
            if rec.rowid is not None and len(v) == 6 and v[0] is None:
                keep((rec.rowid, *v[1:]), rows)
            elif rec.rowid is None and len(v) == 2 and v[0] in _COUNTERS and isinstance(v[1], int):
                counters[str(v[0])] = max(v[1], counters.get(str(v[0]), 0))
        if len(rows) + len(counters) > len(best[0]) + len(best[1]):
            best = (rows, counters)
    for seq, row in best[0].items():
        found.setdefault(seq, row)
    for key, value in best[1].items():
        meta.setdefault(key, value)


_COUNTERS = ("last_seq", "expired_total")


def _scrub(path: Path) -> None:
    """Overwrite a file with zeros, then delete it (best effort, logged)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except OSError as e:
        log.warning("%s: cannot scrub: %s", path, explain_os(e))
        return
    try:
        size = os.fstat(fd).st_size
        chunk = bytes(min(size, 1 << 20))
        done = 0
        while done < size:
            done += os.write(fd, chunk[: size - done])
        os.fsync(fd)
    except OSError as e:
        log.warning("%s: cannot overwrite: %s", path, explain_os(e))
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError as e:
        log.warning("%s: cannot delete: %s", path, explain_os(e))
