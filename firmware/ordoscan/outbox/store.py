"""The outbox's queue API over one SQLite connection: put, pending, ack, expire, purge.

`put()` returns only once the scan is committed with synchronous=FULL (the WAL
is fsync'd): the good-read beep comes after it. Rows leave only by `ack()`
(delivered), `expire()` (too old, counted) or `purge()` (operator).

Privacy: secure_delete zeroes deleted rows, and the WAL is checkpointed and
truncated soon after deletions (at once when the queue empties), so a delivered
payload does not linger in the files. Logs carry at most `privacy.mask(payload)`.

Ages are measured with the monotonic clock for scans of the current boot, so
an NTP step of the wall clock (a Pi has no RTC) neither expires nor rejuvenates
queued scans.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.errors import ConfigError, OutboxCorrupt, OutboxDiskError, OutboxError, OutboxFull
from ordoscan.lifecycle import Closeable
from ordoscan.message import NAME_PATTERN, ScanMessage, new_scan_id
from ordoscan.outbox import db
from ordoscan.outbox.checkpoint import Checkpoints
from ordoscan.outbox.files import make_last_folder
from ordoscan.outbox.lock import WriterLock
from ordoscan.outbox.model import COLUMNS, OutboxStats, StoredScan
from ordoscan.outbox.recovery import Quarantine, Salvage
from ordoscan.outbox.reserve import SpaceReserve
from ordoscan.outbox.seqfile import SeqFile
from ordoscan.privacy import mask

log = logging.getLogger("ordoscan.outbox")

T = TypeVar("T")

# Age of a row in seconds: by the monotonic clock for rows of this boot, else by wall time.
_AGE = "(CASE WHEN boot_id = :boot THEN :mono - created_mono ELSE :wall - created_at END)"


def _boot_id() -> str:
    """This boot's identity: monotonic times are comparable only within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "process-" + os.urandom(8).hex()  # no /proc: trust monotonic time per process


def _meta(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _set_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _message(
    device_id: str,
    site: str,
    scan_id: str,
    seq: int,
    when: datetime,
    clock_synced: bool,
    kind: str,
    symbology: str,
    symbology_id: str,
    payload: str,
) -> bytes:
    """The exact JSON message of one scan; OutboxError names the fields it refuses."""
    try:
        msg = ScanMessage(
            scan_id=scan_id,
            seq=seq,
            device_id=device_id,
            site=site,
            scanned_at=when,
            clock_synced=clock_synced,
            kind=kind,  # type: ignore[arg-type]  # checked by the model
            symbology=symbology,
            symbology_id=symbology_id,
            payload=payload,
        )
    except ValidationError as e:
        # The model hides inputs in its errors; name the fields only.
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise OutboxError(
            f"scan refused, not a valid ordoscan.scan/1 message: {fields}"
        ) from None
    return msg.to_json()


class Outbox(Closeable):
    """A durable FIFO of scan messages in SQLite, safe to share between threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_messages: int,
        max_age_h: float,
        device_id: str,
        site: str,
        clock: Clock = SYSTEM_CLOCK,
        readonly: bool = False,
        boot_id: str | None = None,
    ) -> None:
        """Open or create the outbox; `readonly` (inspection) never creates or repairs."""
        if max_messages < 1:
            raise ConfigError(f"outbox.max_messages = {max_messages!r}: must be at least 1")
        if not max_age_h > 0:
            raise ConfigError(f"outbox.max_age_h = {max_age_h!r}: must be more than 0")
        for key, value in (("device.id", device_id), ("device.site", site)):
            if not re.match(NAME_PATTERN, value):
                raise ConfigError(
                    f"{key} = {value!r}: must be 1 or more of letters, digits, '_', '.', '-'"
                )
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_age_s = max_age_h * 3600.0
        self.device_id = device_id
        self.site = site
        self.readonly = readonly
        self._clock = clock
        if boot_id is None and clock is not SYSTEM_CLOCK:
            # An injected clock's monotonic readings belong to this instance alone,
            # not comparable with any boot's: rows of other instances age by wall time.
            boot_id = f"clock-{os.urandom(8).hex()}"
        self._boot = boot_id or _boot_id()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._seq = SeqFile(self.path)
        self._reserve = SpaceReserve(self.path, clock)
        self._quarantine = Quarantine(self.path)
        self._checkpoints = Checkpoints(self.path, clock)
        self.writer_lock = WriterLock(self.path)
        if readonly:
            self._conn = db.open_readonly(self.path)
            return
        try:
            self._open()
        except BaseException:
            self.writer_lock.release()
            raise

    # --- opening and recovery ----------------------------------------------------------

    def _open(self) -> None:
        make_last_folder(self.path.parent)
        self.writer_lock.acquire()  # before anything is written: one writer per outbox
        self._seq.load()
        try:
            self._conn = db.open_checked(self.path)
        except OutboxCorrupt as e:
            self._recover(str(e))
        self._continue_seq()
        for left in self._quarantine.leftovers():
            self._salvage(left, "a damaged copy left by an earlier recovery")
        self._reserve.ensure()
        self._quarantine.forget_older_than(self.max_age_s, self._clock.wall())
        reports = self._quarantine.files()
        if reports:
            log.warning(
                "%s: the outbox was found damaged and replaced; report(s): %s",
                self.path,
                ", ".join(reports),
            )

    def _recover(self, problem: str) -> None:
        """Quarantine the damaged file, start a fresh one, copy back what can be read."""
        log.error("%s", problem)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        target = self._quarantine.move_aside(self._clock.wall())
        self._conn = db.open_checked(self.path)
        self._salvage(target, problem)

    def _salvage(self, target: Path, problem: str) -> None:
        """Copy the readable scans of a damaged copy into the live file, then scrub the copy."""
        salvage = Salvage.read(target, self._seq.ceiling)
        self._restore(salvage)  # committed: from here on the copy is not needed
        report = self._quarantine.replace_with_report(target, problem, salvage, self._clock.wall())
        log.error(
            "%s: damaged outbox replaced; %d queued scan(s) recovered into a fresh file%s; "
            "the damaged copy was scrubbed, report in %s",
            self.path,
            len(salvage.rows),
            "" if salvage.meta_ok else " (its counters were unreadable)",
            report,
        )

    def _restore(self, salvage: Salvage) -> None:
        """Put the scans read back from a quarantined file into the fresh one."""
        # Readable counters are exact; otherwise the sidecar ceiling is above any seq used.
        top = max(salvage.last_seq, salvage.rows[-1][0] if salvage.rows else 0)
        last_seq = top if salvage.meta_ok else max(top, self._seq.ceiling)

        def fill(c: sqlite3.Connection) -> None:
            c.executemany(
                f"INSERT OR IGNORE INTO scans ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                salvage.rows,
            )
            # max: a copy salvaged late (after a crash) never takes the counters back
            _set_meta(c, "last_seq", max(last_seq, _meta(c, "last_seq")))
            _set_meta(c, "expired_total", max(salvage.expired_total, _meta(c, "expired_total")))

        self._write(fill, "restore the scans of a damaged file")

    def _continue_seq(self) -> None:
        """A fresh file (the old one lost) continues above every seq that may have been used."""
        conn = self._require()
        try:
            fresh = conn.execute("SELECT 1 FROM meta WHERE key = 'last_seq'").fetchone() is None
        except sqlite3.Error as e:
            raise db.sqlite_error(self.path, e, "read") from None
        if fresh:
            ceiling = self._seq.ceiling
            self._write(lambda c: _set_meta(c, "last_seq", ceiling), "start")
            if ceiling:
                log.warning(
                    "%s: new outbox file; sequence numbers continue after %d", self.path, ceiling
                )

    def _guarded(self, op: Callable[[], T]) -> T:
        """Run one operation; if the file turns out damaged, recover and run it again."""
        with self._lock:
            self._require()
            try:
                return op()
            except OutboxCorrupt as e:
                if self.readonly:
                    raise
                self._recover(str(e))
                return op()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed or self.readonly:
                raise OutboxError(f"{self.path}: the outbox is closed")
            # A recovery failed half-way (disk trouble): try again, now that it may be fixed.
            self._open()
        assert self._conn is not None
        return self._conn

    def _require_writable(self) -> sqlite3.Connection:
        if self.readonly:
            raise OutboxError(f"{self.path}: opened read-only")
        return self._require()

    def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run one read under the lock, recovering a damaged file first when writable."""

        def guarded() -> T:
            try:
                return op(self._require())
            except sqlite3.Error as e:
                raise db.sqlite_error(self.path, e, "read") from None

        with self._lock:
            result = self._guarded(guarded)
            self._maybe_checkpoint()
        return result

    def _write(self, body: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """Run `body` in one write transaction and return its result; on failure nothing is kept."""
        conn = self._require_writable()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise db.sqlite_error(self.path, e, doing) from e
        return result

    def _delete(self, body: Callable[[sqlite3.Connection], int], doing: str) -> int:
        """A write that frees space (returns how many rows): on a full disk, release the reserve."""

        def attempt() -> int:
            try:
                return self._write(body, doing)
            except OutboxDiskError as e:
                if not db.is_full(e) or not self._reserve.release():
                    raise
                return self._write(body, doing)

        with self._lock:
            self._require_writable()
            n = self._guarded(attempt)
            self._checkpoints.deleted(self._conn, n)
        return n

    # --- the API -----------------------------------------------------------------------

    def put(
        self,
        *,
        kind: str,
        symbology: str,
        symbology_id: str,
        payload: str,
        clock_synced: bool,
        scanned_at: datetime | None = None,
    ) -> StoredScan:
        """Queue one scan; returns once it is on disk. Raises OutboxFull or OutboxDiskError."""
        if kind == "ins" or payload.startswith("IS01"):
            raise OutboxError("an INS code (patient identity) is never stored")

        now, mono = self._clock.wall(), self._clock.monotonic()
        when = scanned_at if scanned_at is not None else datetime.fromtimestamp(now, UTC)

        def insert(c: sqlite3.Connection) -> StoredScan:
            depth = c.execute("SELECT count(*) FROM scans").fetchone()[0]
            if depth >= self.max_messages:
                # Expired rows hold no capacity; nothing else is ever evicted.
                depth -= self._delete_expired(c)
                if depth >= self.max_messages:
                    raise OutboxFull(
                        f"{self.path}: the outbox holds {depth} scans (outbox.max_messages = "
                        f"{self.max_messages}); the new scan is refused"
                    )
            seq = _meta(c, "last_seq") + 1
            scan_id = new_scan_id(now)
            body = _message(
                self.device_id, self.site, scan_id, seq, when, clock_synced,
                kind, symbology, symbology_id, payload,
            )
            self._seq.ensure(seq)
            c.execute(
                f"INSERT INTO scans ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, scan_id, now, mono, self._boot, body),
            )
            _set_meta(c, "last_seq", seq)
            return StoredScan(seq, scan_id, now, now + self.max_age_s, body)

        with self._lock:
            self._require_writable()
            stored = self._guarded(lambda: self._write(insert, "store a scan"))
            self._reserve.ensure_later()
        log.debug("stored seq=%d kind=%s payload=%s", stored.seq, kind, mask(payload))
        return stored

    def _now(self) -> dict[str, float | str]:
        """The parameters of _AGE: this boot, and both clocks read now."""
        return {"boot": self._boot, "mono": self._clock.monotonic(), "wall": self._clock.wall()}

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[StoredScan]:
        """Scans not yet delivered and not expired, in seq order."""
        now = self._now()
        params = {**now, "after": after_seq, "max_age": self.max_age_s, "limit": max(0, limit)}
        rows: list[tuple[int, str, bytes, float]] = self._read(
            lambda c: c.execute(
                f"SELECT seq, scan_id, body, {_AGE} AS age FROM scans"
                " WHERE seq > :after AND age < :max_age ORDER BY seq LIMIT :limit",
                params,
            ).fetchall()
        )
        wall = float(now["wall"])
        # created_at and expires_at in wall time, consistent with the true age.
        return [
            StoredScan(seq, scan_id, wall - age, wall - age + self.max_age_s, bytes(body))
            for seq, scan_id, body, age in rows
        ]

    def ack(self, seq: int) -> bool:
        """Delete one delivered scan; False if it was not (or no longer) there."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete delivered scans in one transaction; returns how many were there."""
        params = [(int(s),) for s in seqs]
        if not params:
            return 0
        return self._delete(
            lambda c: max(0, c.executemany("DELETE FROM scans WHERE seq = ?", params).rowcount),
            "delete delivered scans",
        )

    def _delete_expired(self, c: sqlite3.Connection) -> int:
        params = {**self._now(), "max_age": self.max_age_s}
        n = max(0, c.execute(f"DELETE FROM scans WHERE {_AGE} >= :max_age", params).rowcount)
        if n:
            _set_meta(c, "expired_total", _meta(c, "expired_total") + n)
            log.warning(
                "%s: %d scan(s) older than %g h dropped undelivered",
                self.path,
                n,
                self.max_age_s / 3600,
            )
        return n

    def expire(self) -> int:
        """Drop scans older than max_age_h; counted in stats().expired_total."""
        with self._lock:
            n = self._delete(self._delete_expired, "expire old scans")
            self._maybe_checkpoint(force=True)
            self._quarantine.forget_older_than(self.max_age_s, self._clock.wall())
        return n

    def purge(self) -> int:
        """Delete every queued scan (operator action); returns how many."""
        with self._lock:
            n = self._delete(lambda c: max(0, c.execute("DELETE FROM scans").rowcount), "purge")
            self._maybe_checkpoint(force=True)
        if n:
            log.warning("%s: %d queued scan(s) purged by the operator", self.path, n)
        return n

    def stats(self) -> OutboxStats:
        """Depth, oldest age, expired count, last seq, capacity, quarantined files."""

        def op(c: sqlite3.Connection) -> tuple[int, float | None, int, int]:
            query = f"SELECT count(*), max({_AGE}) FROM scans"
            depth, oldest = c.execute(query, self._now()).fetchone()
            return depth, oldest, _meta(c, "expired_total"), _meta(c, "last_seq")

        depth, oldest, expired_total, last_seq = self._read(op)
        return OutboxStats(
            depth=int(depth),
            oldest_age_s=None if oldest is None else max(0.0, float(oldest)),
            expired_total=expired_total,
            last_seq=last_seq,
            max_messages=self.max_messages,
            quarantined=self._quarantine.files(),
        )

    def integrity_check(self) -> str:
        """'ok', or what SQLite finds wrong with the file (for `ordoscan check`)."""
        with self._lock:
            conn = self._require()
            try:
                return db.pragma_text(conn, "integrity_check")
            except sqlite3.Error as e:
                return f"integrity check failed: {e}"

    def checkpoint(self) -> bool:
        """Copy the WAL into the file and truncate it; False if another reader held it."""
        with self._lock:
            self._require_writable()
            return self._checkpoints.now(self._require_writable())

    # --- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint (so delivered payloads leave the WAL) and close; idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                if not self.readonly:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self.writer_lock.release()  # last: the file is consistent and closed

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if not self.readonly:
            self._checkpoints.maybe(self._conn, force)
