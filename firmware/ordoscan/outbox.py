"""The durable outbox: scans waiting for the broker, in one SQLite file.

`put()` returns only once the scan is committed with synchronous=FULL (the WAL
is fsync'd): the good-read beep comes after it. Rows leave only by `ack()`
(delivered), `expire()` (too old, counted) or `purge()` (operator).

Privacy: secure_delete zeroes deleted rows, and the WAL is checkpointed and
truncated after deletions, so a delivered payload does not linger in the file.
Logs carry at most `privacy.mask(payload)`.

Sequence numbers never go back, even if the file is lost: a small sidecar
(`<file>.seq`) holds a reserved ceiling, rewritten once per SEQ_BLOCK scans, and
a fresh file continues above it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from ordoscan.errors import ConfigError, OutboxCorrupt, OutboxDiskError, OutboxError, OutboxFull
from ordoscan.message import NAME_PATTERN, ScanMessage, new_scan_id
from ordoscan.privacy import mask

log = logging.getLogger("ordoscan.outbox")

APPLICATION_ID = 0x4F524453  # "ORDS": marks the file as an ordoscan outbox
FORMAT_VERSION = 1
SEQ_BLOCK = 1000
# Deleted rows stay in the WAL until a checkpoint truncates it: do one when the
# queue empties, after this many deletions, or this many seconds after the first.
CHECKPOINT_AFTER_DELETES = 256
CHECKPOINT_AFTER_S = 2.0

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scans (
    seq INTEGER PRIMARY KEY,
    scan_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS scans_created_at ON scans (created_at);
"""


@dataclass(frozen=True, slots=True)
class StoredScan:
    """One queued scan; `body` is the exact JSON message to publish."""

    seq: int
    scan_id: str
    created_at: float
    expires_at: float
    body: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Counters of the outbox, for telemetry, `ordoscan queue stats` and `ordoscan check`."""

    depth: int
    oldest_age_s: float | None
    expired_total: int
    last_seq: int
    max_messages: int
    quarantined: tuple[str, ...]


def _errcode(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF  # primary code, without the extended bits


def _fsync_dir(folder: Path) -> None:
    """Make a create or rename in `folder` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _explain_os(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    if e.errno == errno.EROFS:
        return "the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


class Outbox:
    """A durable FIFO of scan messages in SQLite, safe to share between threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_messages: int,
        max_age_h: float,
        device_id: str,
        site: str,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        if max_messages < 1:
            raise ConfigError(f"outbox.max_messages = {max_messages!r}: must be at least 1")
        if not max_age_h > 0:
            raise ConfigError(f"outbox.max_age_h = {max_age_h!r}: must be more than 0")
        self.path = Path(path)
        self.max_messages = max_messages
        self.max_age_s = max_age_h * 3600.0
        self.device_id = device_id
        self.site = site
        self.readonly = readonly
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._last_seq = 0
        self._seq_ceiling = 0
        self._deleted_since_checkpoint = 0
        self._first_delete_at: float | None = None
        self._check_identity(device_id, site)
        if readonly:
            self._open_readonly()
        else:
            self._open()

    # --- opening, quarantine --------------------------------------------------

    @staticmethod
    def _check_identity(device_id: str, site: str) -> None:
        for key, value in (("device.id", device_id), ("device.site", site)):
            if not re.match(NAME_PATTERN, value):
                raise ConfigError(
                    f"{key} = {value!r}: must be 1 or more of letters, digits, '_', '.', '-'"
                )

    @property
    def _seq_path(self) -> Path:
        return self.path.with_name(self.path.name + ".seq")

    def _connect(self, target: Path, *, uri_mode: str | None = None) -> sqlite3.Connection:
        if uri_mode:
            from urllib.parse import quote

            return sqlite3.connect(
                f"file:{quote(str(target))}?mode={uri_mode}",
                uri=True,
                timeout=5.0,
                isolation_level=None,
                check_same_thread=False,
            )
        return sqlite3.connect(
            str(target), timeout=5.0, isolation_level=None, check_same_thread=False
        )

    def _open(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise OutboxDiskError(
                f"{folder}: cannot create the outbox folder: {_explain_os(e)}"
            ) from None
        if not folder.is_dir():
            raise OutboxDiskError(f"{folder}: the outbox folder is not a directory")
        self._seq_ceiling = self._read_seq_ceiling()
        try:
            self._conn = self._open_checked()
        except OutboxCorrupt as e:
            log.error("%s", e)
            salvage = self._quarantine()
            self._conn = self._open_checked()
            self._restore(salvage)
        self._after_open()

    def _create_file(self) -> None:
        """Create the database file 0600 ourselves: SQLite would use the umask."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as e:
            raise OutboxDiskError(
                f"{self.path}: cannot create the outbox file: {_explain_os(e)}"
            ) from None
        os.close(fd)
        try:
            _fsync_dir(self.path.parent)
        except OSError as e:
            raise OutboxDiskError(
                f"{self.path.parent}: cannot sync the outbox folder: {_explain_os(e)}"
            ) from None

    def _open_checked(self) -> sqlite3.Connection:
        """Open, set the pragmas, check the file and create the tables; raises OutboxCorrupt."""
        self._create_file()
        try:
            mode = self.path.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(self.path, 0o600)  # older or hand-made file: it holds health data
                log.warning("%s: permissions were %03o, set to 600", self.path, mode)
        except OSError as e:
            raise OutboxDiskError(f"{self.path}: {_explain_os(e)}") from None
        try:
            conn = self._connect(self.path)
        except sqlite3.Error as e:
            raise self._error(e, "open") from None
        try:
            self._check_format(conn)
            mode_row = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode_row is None or str(mode_row[0]).lower() != "wal":
                raise OutboxDiskError(
                    f"{self.path}: the file system does not support SQLite WAL mode ({mode_row})"
                )
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA foreign_keys=OFF")
            problem = self._quick_check(conn)
            if problem != "ok":
                raise OutboxCorrupt(f"{self.path}: the outbox file is damaged: {problem}")
            conn.execute("BEGIN IMMEDIATE")  # also proves the file is writable
            for stmt in _SCHEMA_SQL.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except (OutboxCorrupt, OutboxError):
            conn.close()
            raise
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            raise self._error(e, "open") from None
        return conn

    def _check_format(self, conn: sqlite3.Connection) -> None:
        """Refuse a valid SQLite database that belongs to something else."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id == APPLICATION_ID:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > FORMAT_VERSION:
                raise OutboxError(
                    f"{self.path}: outbox format {version} is newer than this firmware knows "
                    f"({FORMAT_VERSION}); refusing to touch it"
                )
            return
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        if app_id != 0 or tables:
            raise OutboxError(
                f"{self.path}: is an SQLite database but not an ordoscan outbox; "
                "refusing to touch it (check outbox.path)"
            )

    @staticmethod
    def _quick_check(conn: sqlite3.Connection) -> str:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        return "; ".join(str(r[0]) for r in rows) or "no result"

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise OutboxDiskError(
                f"{self.path}: no outbox file (nothing was queued yet, or outbox.path is wrong)"
            )
        try:
            conn = self._connect(self.path, uri_mode="ro")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id or tables):
                conn.close()
                raise OutboxError(f"{self.path}: is an SQLite database but not an ordoscan outbox")
        except sqlite3.Error as e:
            raise self._error(e, "open") from None
        self._conn = conn
        self._after_open()

    def _after_open(self) -> None:
        conn = self._require()
        try:
            self._last_seq = self._meta(conn, "last_seq")
        except sqlite3.Error as e:
            raise self._error(e, "read") from None
        if self.readonly:
            return
        if self._last_seq < self._seq_ceiling and self._meta_missing(conn, "last_seq"):
            # A fresh file (the old one was lost or quarantined): continue above
            # every seq that may have been handed out.
            self._last_seq = self._seq_ceiling
            self._write(lambda c: self._set_meta(c, "last_seq", self._last_seq), "start")
            log.warning(
                "%s: new outbox file; sequence numbers continue after %d", self.path, self._last_seq
            )
        quarantined = self._quarantined_files()
        if quarantined:
            log.warning(
                "%s: quarantined outbox file(s) kept for inspection: %s",
                self.path,
                ", ".join(quarantined),
            )

    def _quarantined_files(self) -> tuple[str, ...]:
        prefix = self.path.name + ".corrupt-"
        try:
            names = sorted(
                p.name
                for p in self.path.parent.iterdir()
                if p.name.startswith(prefix) and not p.name.endswith(("-wal", "-shm"))
            )
        except OSError:
            return ()
        return tuple(str(self.path.parent / n) for n in names)

    def _quarantine(self) -> _Salvage:
        """Move the damaged file (and its -wal/-shm) aside under a timestamped name."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.rename(src, str(target) + suffix)
            _fsync_dir(self.path.parent)
        except OSError as e:
            raise OutboxDiskError(
                f"{self.path}: cannot quarantine the damaged outbox: {_explain_os(e)}"
            ) from None
        log.error("%s: damaged outbox moved to %s; a fresh one is started", self.path, target)
        salvage = _Salvage.read(target, self)
        if salvage.rows or salvage.lost:
            log.error(
                "%s: %d queued scan(s) recovered from the damaged file, %d could not be read",
                self.path,
                len(salvage.rows),
                salvage.lost,
            )
        return salvage

    def _restore(self, salvage: _Salvage) -> None:
        """Put the scans read back from a quarantined file into the fresh one."""
        self._seq_ceiling = max(self._seq_ceiling, salvage.last_seq)

        def fill(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT OR IGNORE INTO scans (seq, scan_id, created_at, body) VALUES (?, ?, ?, ?)",
                salvage.rows,
            )
            if salvage.last_seq:
                self._set_meta(c, "last_seq", salvage.last_seq)
            if salvage.expired_total:
                self._set_meta(c, "expired_total", salvage.expired_total)

        self._write(fill, "restore")

    # --- small helpers -----------------------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError(f"{self.path}: the outbox is closed")
        return self._conn

    def _require_writable(self) -> sqlite3.Connection:
        if self.readonly:
            raise OutboxError(f"{self.path}: opened read-only")
        return self._require()

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _meta_missing(conn: sqlite3.Connection, key: str) -> bool:
        return conn.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is None

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _error(self, e: sqlite3.Error, doing: str) -> OutboxError:
        """Turn an SQLite error into the outbox error the daemon acts on."""
        code = _errcode(e)
        if code in _CORRUPT_CODES:
            return OutboxCorrupt(f"{self.path}: {doing}: the outbox file is damaged ({e})")
        reasons = {
            sqlite3.SQLITE_FULL: "the disk is full",
            sqlite3.SQLITE_READONLY: "the outbox file or its folder is read-only",
            sqlite3.SQLITE_IOERR: "I/O error (failing storage?)",
            sqlite3.SQLITE_CANTOPEN: "cannot open the file (missing folder, or no permission)",
            sqlite3.SQLITE_PERM: "permission denied",
            sqlite3.SQLITE_BUSY: "the file is locked by another process",
            sqlite3.SQLITE_LOCKED: "the file is locked",
        }
        reason = reasons.get(code) if code is not None else None
        return OutboxDiskError(f"{self.path}: {doing}: {reason or 'disk error'} ({e})")

    def _write(self, body: Callable[[sqlite3.Connection], None], doing: str) -> None:
        """Run `body` in one write transaction; on failure nothing of it is kept."""
        conn = self._require_writable()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise self._error(e, doing) from None

    def _read_seq_ceiling(self) -> int:
        try:
            text = self._seq_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as e:
            log.warning("%s: cannot read the sequence file: %s", self._seq_path, e)
            return 0
        if not text.isdigit():
            log.warning("%s: ignoring a sequence file that is not a number", self._seq_path)
            return 0
        return int(text)

    def _reserve_seq(self, seq: int) -> None:
        """Durably record a ceiling above `seq` before `seq` is used."""
        ceiling = seq + SEQ_BLOCK - 1
        tmp = self._seq_path.with_name(self._seq_path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{ceiling}\n".encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._seq_path)
            _fsync_dir(self._seq_path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutboxDiskError(
                f"{self._seq_path}: cannot write the sequence file: {_explain_os(e)}"
            ) from None
        self._seq_ceiling = ceiling

    def _row(self, row: tuple[int, str, float, bytes]) -> StoredScan:
        seq, scan_id, created_at, body = row
        return StoredScan(seq, scan_id, created_at, created_at + self.max_age_s, bytes(body))

    # --- the API ------------------------------------------------------------------

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
        with self._lock:
            self._require_writable()
            try:
                return self._put_once(
                    kind, symbology, symbology_id, payload, clock_synced, scanned_at
                )
            except OutboxDiskError as e:
                if "disk is full" not in str(e):
                    raise
                # A large WAL may be what fills the disk: shrink it and try once more.
                if not self._checkpoint_locked():
                    raise
                log.warning("%s: disk full; WAL truncated, retrying the write", self.path)
                return self._put_once(
                    kind, symbology, symbology_id, payload, clock_synced, scanned_at
                )

    def _put_once(
        self,
        kind: str,
        symbology: str,
        symbology_id: str,
        payload: str,
        clock_synced: bool,
        scanned_at: datetime | None,
    ) -> StoredScan:
        now = self._clock()
        when = scanned_at if scanned_at is not None else datetime.fromtimestamp(now, UTC)
        result: list[StoredScan] = []

        def insert(c: sqlite3.Connection) -> None:
            depth = c.execute("SELECT count(*) FROM scans").fetchone()[0]
            if depth >= self.max_messages:
                # Expired rows do not hold capacity; anything else is never evicted.
                depth -= self._delete_expired(c, now)
                if depth >= self.max_messages:
                    raise OutboxFull(
                        f"{self.path}: the outbox holds {depth} scans (outbox.max_messages = "
                        f"{self.max_messages}); the new scan is refused"
                    )
            seq = self._meta(c, "last_seq") + 1
            scan_id = new_scan_id(now)
            try:
                msg = ScanMessage(
                    scan_id=scan_id,
                    seq=seq,
                    device_id=self.device_id,
                    site=self.site,
                    scanned_at=when,
                    clock_synced=clock_synced,
                    kind=kind,  # type: ignore[arg-type]
                    symbology=symbology,
                    symbology_id=symbology_id,
                    payload=payload,
                )
            except ValidationError as e:
                # The model hides inputs in its errors; name the fields only.
                fields = ", ".join(
                    f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
                )
                raise OutboxError(
                    f"scan refused, not a valid ordoscan.scan/1 message: {fields}"
                ) from None
            body = msg.to_json()
            if seq > self._seq_ceiling:
                self._reserve_seq(seq)
            c.execute(
                "INSERT INTO scans (seq, scan_id, created_at, body) VALUES (?, ?, ?, ?)",
                (seq, scan_id, now, body),
            )
            self._set_meta(c, "last_seq", seq)
            result.append(StoredScan(seq, scan_id, now, now + self.max_age_s, body))

        self._write(insert, "store a scan")
        stored = result[0]
        self._last_seq = stored.seq
        log.debug("stored seq=%d kind=%s payload=%s", stored.seq, kind, mask(payload))
        return stored

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[StoredScan]:
        """Scans not yet delivered and not expired, in seq order."""
        cutoff = self._clock() - self.max_age_s
        with self._lock:
            conn = self._require()
            try:
                rows = conn.execute(
                    "SELECT seq, scan_id, created_at, body FROM scans"
                    " WHERE seq > ? AND created_at > ? ORDER BY seq LIMIT ?",
                    (after_seq, cutoff, max(0, limit)),
                ).fetchall()
            except sqlite3.Error as e:
                raise self._error(e, "read") from None
        return [self._row(r) for r in rows]

    def ack(self, seq: int) -> bool:
        """Delete one delivered scan; False if it was not (or no longer) there."""
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Delete delivered scans in one transaction; returns how many were there."""
        params = [(int(s),) for s in seqs]
        if not params:
            return 0
        deleted: list[int] = []

        def delete(c: sqlite3.Connection) -> None:
            cur = c.executemany("DELETE FROM scans WHERE seq = ?", params)
            deleted.append(max(0, cur.rowcount))

        with self._lock:
            self._write(delete, "delete delivered scans")
            self._deleted(deleted[0])
        return deleted[0]

    def _delete_expired(self, c: sqlite3.Connection, now: float) -> int:
        cur = c.execute("DELETE FROM scans WHERE created_at <= ?", (now - self.max_age_s,))
        n = max(0, cur.rowcount)
        if n:
            self._set_meta(c, "expired_total", self._meta(c, "expired_total") + n)
            self._deleted(n)
            log.warning(
                "%s: %d scan(s) older than %g h dropped undelivered",
                self.path,
                n,
                self.max_age_s / 3600,
            )
        return n

    def expire(self) -> int:
        """Drop scans older than max_age_h; counted in stats().expired_total."""
        now = self._clock()
        counted: list[int] = []
        with self._lock:
            self._write(lambda c: counted.append(self._delete_expired(c, now)), "expire old scans")
            self._maybe_checkpoint(force=self._deleted_since_checkpoint > 0)
        return counted[0]

    def purge(self) -> int:
        """Delete every queued scan (operator action); returns how many."""
        counted: list[int] = []

        def delete(c: sqlite3.Connection) -> None:
            counted.append(max(0, c.execute("DELETE FROM scans").rowcount))

        with self._lock:
            self._write(delete, "purge")
            self._deleted(counted[0])
            self._maybe_checkpoint(force=True)
        if counted[0]:
            log.warning("%s: %d queued scan(s) purged by the operator", self.path, counted[0])
        return counted[0]

    def stats(self) -> OutboxStats:
        """Depth, oldest age, expired count, last seq, capacity, quarantined files."""
        now = self._clock()
        with self._lock:
            conn = self._require()
            try:
                depth, oldest = conn.execute(
                    "SELECT count(*), min(created_at) FROM scans"
                ).fetchone()
                expired_total = self._meta(conn, "expired_total")
                last_seq = self._meta(conn, "last_seq")
            except sqlite3.Error as e:
                raise self._error(e, "read") from None
        return OutboxStats(
            depth=int(depth),
            oldest_age_s=None if oldest is None else max(0.0, now - float(oldest)),
            expired_total=expired_total,
            last_seq=last_seq,
            max_messages=self.max_messages,
            quarantined=self._quarantined_files(),
        )

    def integrity_check(self) -> str:
        """'ok', or what SQLite found wrong with the file."""
        with self._lock:
            conn = self._require()
            try:
                rows = conn.execute("PRAGMA integrity_check").fetchall()
            except sqlite3.Error as e:
                return f"integrity check failed: {e}"
        return "; ".join(str(r[0]) for r in rows) or "no result"

    def checkpoint(self) -> bool:
        """Copy the WAL into the file and truncate it; False if a reader held it."""
        with self._lock:
            self._require_writable()
            return self._checkpoint_locked()

    # --- checkpoints ----------------------------------------------------------------

    def _deleted(self, n: int) -> None:
        if n <= 0:
            return
        if self._first_delete_at is None:
            self._first_delete_at = time.monotonic()
        self._deleted_since_checkpoint += n
        self._maybe_checkpoint()

    def _maybe_checkpoint(self, force: bool = False) -> None:
        if self._conn is None or self._conn.in_transaction or self._deleted_since_checkpoint == 0:
            return
        due = (
            force
            or self._deleted_since_checkpoint >= CHECKPOINT_AFTER_DELETES
            or (
                self._first_delete_at is not None
                and time.monotonic() - self._first_delete_at >= CHECKPOINT_AFTER_S
            )
        )
        if not due:
            try:
                due = (
                    self._conn.execute("SELECT NOT EXISTS (SELECT 1 FROM scans)").fetchone()[0] == 1
                )
            except sqlite3.Error:
                return
        if due:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> bool:
        conn = self._conn
        if conn is None or self.readonly:
            return False
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as e:
            log.warning("%s: checkpoint failed: %s", self.path, e)
            return False
        if busy:
            return False
        self._deleted_since_checkpoint = 0
        self._first_delete_at = None
        return True

    # --- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint (so delivered payloads leave the WAL) and close; idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if not self.readonly:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass
class _Salvage:
    """What could be read back from a quarantined file."""

    rows: list[tuple[int, str, float, bytes]]
    last_seq: int
    expired_total: int
    lost: int

    @classmethod
    def read(cls, target: Path, outbox: Outbox) -> _Salvage:
        """Read every intact row of a damaged file, from both ends of the table."""
        found: dict[int, tuple[int, str, float, bytes]] = {}
        meta: dict[str, int] = {}
        bad: set[object] = set()
        try:
            conn = sqlite3.connect(str(target), timeout=1.0, isolation_level=None)
        except sqlite3.Error:
            return cls([], 0, 0, 0)
        try:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA query_only=ON")
            with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
                for key, value in conn.execute("SELECT key, value FROM meta"):
                    meta[str(key)] = int(value)
            for order in (
                "ASC",
                "DESC",
            ):  # a damaged page stops a scan; read from the other end too
                with contextlib.suppress(sqlite3.Error):
                    for row in conn.execute(
                        f"SELECT seq, scan_id, created_at, body FROM scans ORDER BY seq {order}"
                    ):
                        if row[0] in found or row[0] in bad:
                            break
                        checked = cls._valid(row, outbox)
                        if checked is None:
                            bad.add(row[0])
                        else:
                            found[checked[0]] = checked
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        int_seqs = [s for s in (*found, *bad) if isinstance(s, int)]
        last_seq = max([meta.get("last_seq", 0), *int_seqs])
        rows = [found[s] for s in sorted(found)]
        return cls(rows, last_seq, meta.get("expired_total", 0), len(bad))

    @staticmethod
    def _valid(row: tuple[object, ...], outbox: Outbox) -> tuple[int, str, float, bytes] | None:
        """A salvaged row is kept only if its message is intact and matches its columns."""
        try:
            seq, scan_id, created_at, body = row
            data = bytes(body)  # type: ignore[call-overload]
            msg = ScanMessage.from_json(data)
        except (ValueError, TypeError):
            return None
        if msg.seq != seq or msg.scan_id != scan_id or not isinstance(created_at, int | float):
            return None
        return (int(msg.seq), msg.scan_id, float(created_at), data)
