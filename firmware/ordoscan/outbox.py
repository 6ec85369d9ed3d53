"""The durable outbox: scans waiting for the broker, in one SQLite file.

`put()` returns only once the scan is committed with synchronous=FULL (the WAL
is fsync'd): the good-read beep comes after it. Rows leave only by `ack()`
(delivered), `expire()` (too old, counted) or `purge()` (operator).

Privacy: secure_delete zeroes deleted rows, and the WAL is checkpointed and
truncated soon after deletions (at once when the queue empties), so a delivered
payload does not linger in the files. Logs carry at most `privacy.mask(payload)`.

Ages are measured with the monotonic clock for scans of the current boot, so
an NTP step of the wall clock (a Pi has no RTC) neither expires nor rejuvenates
queued scans.

Robustness:
- a damaged file is moved aside (`<file>.corrupt-<UTC time>`, with its -wal and
  -shm), the scans still readable in it are copied into a fresh file, and the
  quarantined names are reported by `stats()` until they are deleted, after
  max_age_h (what they hold would have expired by then);
- sequence numbers never go back, even if the file is lost: a sidecar
  (`<file>.seq`) holds a reserved ceiling, rewritten once per SEQ_BLOCK scans,
  and a fresh file continues above it;
- a reserve file (`<file>.reserve`) keeps a little disk space aside: when the
  disk fills up, new scans are refused but it is released so that delivered
  scans can still be deleted and the queue drains.
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
from typing import TypeVar
from urllib.parse import quote

from pydantic import ValidationError

from ordoscan.errors import (
    ConfigError,
    OutboxCorrupt,
    OutboxDiskError,
    OutboxError,
    OutboxFull,
)
from ordoscan.lifecycle import Closeable
from ordoscan.message import NAME_PATTERN, ScanMessage, new_scan_id
from ordoscan.privacy import mask

log = logging.getLogger("ordoscan.outbox")

T = TypeVar("T")

APPLICATION_ID = 0x4F524453  # "ORDS" in the file header: this file is an ordoscan outbox
FORMAT_VERSION = 1
SEQ_BLOCK = 1000
RESERVE_BYTES = 256 * 1024
# Deleted rows stay in the WAL until a checkpoint truncates it: one is done when
# the queue empties, after this many deletions, or this long after the first.
CHECKPOINT_AFTER_DELETES = 256
CHECKPOINT_AFTER_S = 2.0
# Salvage of a damaged file: how many damaged spots to step over at most.
SALVAGE_MAX_SKIPS = 100_000

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_DISK_CODES = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "the outbox file or its folder is read-only",
    sqlite3.SQLITE_IOERR: "I/O error (failing storage?)",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened",
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_BUSY: "the file is locked by another process",
    sqlite3.SQLITE_LOCKED: "the file is locked",
}

_SCHEMA_STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    # created_at is wall time; created_mono and boot_id give a true age within one
    # boot, whatever the wall clock does (a Pi has no RTC: NTP may jump it by days).
    "CREATE TABLE IF NOT EXISTS scans (seq INTEGER PRIMARY KEY, scan_id TEXT NOT NULL,"
    " created_at REAL NOT NULL, created_mono REAL NOT NULL, boot_id TEXT NOT NULL,"
    " body BLOB NOT NULL)",
    # A small index: count(*) reads it rather than the table and its bodies.
    "CREATE INDEX IF NOT EXISTS scans_created_at ON scans (created_at)",
)

Row = tuple[int, str, float, float, str, bytes]  # the columns of scans, in order
_COLUMNS = "seq, scan_id, created_at, created_mono, boot_id, body"
# Age of a row in seconds: by the monotonic clock for rows of this boot, else by wall time.
_AGE = "(CASE WHEN boot_id = :boot THEN :mono - created_mono ELSE :wall - created_at END)"


def _boot_id() -> str:
    """This boot's identity: monotonic times are comparable only within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "process-" + os.urandom(8).hex()  # no /proc: trust monotonic time per process


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
    return None if code is None else int(code) & 0xFF  # the primary code, no extended bits


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
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        monotonic: Callable[[], float] | None = None,
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
        if monotonic is None and clock is not time.time:
            # An injected wall clock alone drives ages too: its readings are this
            # instance's "monotonic" time, not comparable with any other boot's.
            monotonic, boot_id = clock, boot_id or f"clock-{os.urandom(8).hex()}"
        self._mono = monotonic or time.monotonic
        self._boot = boot_id or _boot_id()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._seq_ceiling = 0
        self._deleted_since_checkpoint = 0
        self._first_delete_at: float | None = None
        self._reserve_retry_at = 0.0
        if readonly:
            self._open_readonly()
        else:
            self._open()

    # --- file names --------------------------------------------------------------------

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    @property
    def _seq_path(self) -> Path:
        return self._sibling(".seq")

    @property
    def _reserve_path(self) -> Path:
        return self._sibling(".reserve")

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

    def _forget_old_quarantines(self) -> None:
        """Delete quarantined files older than max_age_h.

        Their readable scans were copied into the live file, and anything still
        in them would have expired by now: health data is not kept longer than
        the outbox itself would keep it.
        """
        prefix = len(self.path.name + ".corrupt-")
        for name in self._quarantined_files():
            stamp = Path(name).name[prefix : prefix + 16]
            try:
                when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                continue
            if self._clock() - when.timestamp() < self.max_age_s:
                continue
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(name + suffix)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.warning("%s: cannot delete: %s", name + suffix, _explain_os(e))
            log.warning("%s: quarantined file deleted after %g h", name, self.max_age_s / 3600)

    # --- opening -----------------------------------------------------------------------

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
            self._recover(str(e))
        self._continue_seq()
        self._ensure_reserve()
        self._forget_old_quarantines()
        quarantined = self._quarantined_files()
        if quarantined:
            log.warning(
                "%s: quarantined outbox file(s) kept for inspection: %s",
                self.path,
                ", ".join(quarantined),
            )

    def _connect(self, uri_query: str | None = None) -> sqlite3.Connection:
        target = f"file:{quote(str(self.path))}?{uri_query}" if uri_query else str(self.path)
        return sqlite3.connect(
            target,
            uri=uri_query is not None,
            timeout=5.0,
            isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
            check_same_thread=False,  # shared by the pipeline and MQTT threads, under self._lock
        )

    def _create_file(self) -> None:
        """Create the database file 0600 ourselves: SQLite would follow the umask."""
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
        """Open, set the pragmas, check the file, create the tables; raises OutboxCorrupt."""
        self._create_file()
        try:
            mode = self.path.stat().st_mode & 0o777
            if mode & 0o077:
                os.chmod(self.path, 0o600)  # an older or hand-made file: it holds health data
                log.warning("%s: permissions were %03o, set to 600", self.path, mode)
        except OSError as e:
            raise OutboxDiskError(f"{self.path}: {_explain_os(e)}") from None
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            raise self._error(e, "open") from None
        try:
            self._check_format(conn)
            row = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise OutboxDiskError(f"{self.path}: SQLite WAL mode is not available here ({row})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            problem = self._check(conn, "quick_check")
            if problem != "ok":
                raise OutboxCorrupt(f"{self.path}: the outbox file is damaged: {problem}")
            conn.execute("BEGIN IMMEDIATE")  # also proves that the file is writable
            for stmt in _SCHEMA_STATEMENTS:
                conn.execute(stmt)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except OutboxError:
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
                    f"{self.path}: outbox format {version} is newer than this firmware's "
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
    def _check(conn: sqlite3.Connection, pragma: str) -> str:
        rows = conn.execute(f"PRAGMA {pragma}").fetchall()
        return "; ".join(str(r[0]) for r in rows) or "no result"

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise OutboxDiskError(
                f"{self.path}: no outbox file (nothing was queued yet, or outbox.path is wrong)"
            )
        try:
            conn = self._connect("mode=ro")
            try:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            except sqlite3.OperationalError:
                # WAL readers need the -shm file; on a read-only file system with
                # no WAL left to replay, the file alone is the whole truth.
                conn.close()
                wal = self._sibling("-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise
                conn = self._connect("mode=ro&immutable=1")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        except sqlite3.Error as e:
            raise self._error(e, "open") from None
        if app_id != APPLICATION_ID and (app_id or tables):
            conn.close()
            raise OutboxError(f"{self.path}: is an SQLite database but not an ordoscan outbox")
        self._conn = conn

    # --- damaged files -----------------------------------------------------------------

    def _recover(self, problem: str) -> None:
        """Quarantine the damaged file, start a fresh one, copy back what can be read."""
        log.error("%s", problem)
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        target = self._quarantine()
        salvage = _Salvage.read(target, self._seq_ceiling)
        self._conn = self._open_checked()
        self._restore(salvage)
        log.error(
            "%s: damaged outbox moved to %s; %d queued scan(s) recovered into a fresh file%s",
            self.path,
            target,
            len(salvage.rows),
            "" if salvage.meta_ok else " (its counters were unreadable)",
        )

    def _quarantine(self) -> Path:
        """Move the damaged file (and its -wal/-shm) aside under a UTC-timestamped name."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        target = self._sibling(f".corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self._sibling(f".corrupt-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = self._sibling(suffix)
                if src.exists():
                    os.rename(src, f"{target}{suffix}")
            _fsync_dir(self.path.parent)
        except OSError as e:
            raise OutboxDiskError(
                f"{self.path}: cannot quarantine the damaged outbox: {_explain_os(e)}"
            ) from None
        return target

    def _restore(self, salvage: _Salvage) -> None:
        """Put the scans read back from a quarantined file into the fresh one."""
        # Readable counters are exact; otherwise the sidecar ceiling is above any seq used.
        top = max(salvage.last_seq, salvage.rows[-1][0] if salvage.rows else 0)
        last_seq = top if salvage.meta_ok else max(top, self._seq_ceiling)

        def fill(c: sqlite3.Connection) -> None:
            c.executemany(
                f"INSERT OR IGNORE INTO scans ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                salvage.rows,
            )
            self._set_meta(c, "last_seq", last_seq)
            self._set_meta(c, "expired_total", salvage.expired_total)

        self._write(fill, "restore the scans of a damaged file")

    def _continue_seq(self) -> None:
        """A fresh file (the old one lost) continues above every seq that may have been used."""
        conn = self._require()
        try:
            fresh = conn.execute("SELECT 1 FROM meta WHERE key = 'last_seq'").fetchone() is None
        except sqlite3.Error as e:
            raise self._error(e, "read") from None
        if fresh:
            ceiling = self._seq_ceiling
            self._write(lambda c: self._set_meta(c, "last_seq", ceiling), "start")
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

    # --- small helpers -----------------------------------------------------------------

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

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _fs_problem(self) -> str | None:
        """What is wrong with the folder or file, as seen from the file system."""
        folder = self.path.parent
        try:
            st = os.statvfs(folder)
        except OSError as e:
            return f"{folder}: {_explain_os(e)}"
        if st.f_flag & os.ST_RDONLY:
            return "the file system is read-only"
        if st.f_bavail * st.f_frsize < 64 * 1024:
            return "the disk is full"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"the folder {folder} is not writable by this user"
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            return "the file is not readable and writable by this user"
        return None

    def _error(self, e: sqlite3.Error, doing: str) -> OutboxError:
        """Turn an SQLite error into the outbox error the daemon acts on."""
        code = _errcode(e)
        if code in _CORRUPT_CODES:
            return OutboxCorrupt(f"{self.path}: {doing}: the outbox file is damaged ({e})")
        if code == sqlite3.SQLITE_FULL:
            reason: str | None = _DISK_CODES[code]
        else:
            reason = self._fs_problem() or (_DISK_CODES.get(code) if code is not None else None)
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
            raise self._error(e, doing) from e

    def _delete(self, body: Callable[[sqlite3.Connection], None], doing: str) -> None:
        """A write that frees space: on a full disk, release the reserve and try again."""
        try:
            self._write(body, doing)
        except OutboxDiskError as e:
            if not self._is_full(e) or not self._release_reserve():
                raise
            self._write(body, doing)

    @staticmethod
    def _is_full(e: OutboxDiskError) -> bool:
        cause = e.__cause__
        return isinstance(cause, sqlite3.Error) and _errcode(cause) == sqlite3.SQLITE_FULL

    # --- sequence ceiling and space reserve --------------------------------------------

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
        tmp = self._sibling(".seq.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{ceiling}\n".encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._seq_path)
            _fsync_dir(self.path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutboxDiskError(
                f"{self._seq_path}: cannot write the sequence file: {_explain_os(e)}"
            ) from None
        self._seq_ceiling = ceiling

    def _ensure_reserve(self) -> None:
        """Keep RESERVE_BYTES aside for deletions on a full disk (best effort)."""
        try:
            if self._reserve_path.stat().st_size >= RESERVE_BYTES:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            fd = os.open(self._reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, bytes(RESERVE_BYTES))  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                self._reserve_path.unlink()
            log.debug("%s: no space reserve: %s", self.path, _explain_os(e))

    def _release_reserve(self) -> bool:
        try:
            self._reserve_path.unlink()
        except OSError:
            return False
        log.warning("%s: disk full: space reserve released to delete scans", self.path)
        return True

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

        def op() -> StoredScan:
            return self._put(kind, symbology, symbology_id, payload, clock_synced, scanned_at)

        with self._lock:
            self._require_writable()
            stored = self._guarded(op)
            if time.monotonic() >= self._reserve_retry_at and not self._reserve_path.exists():
                self._reserve_retry_at = time.monotonic() + 60.0  # not at every scan on a full disk
                self._ensure_reserve()
        log.debug("stored seq=%d kind=%s payload=%s", stored.seq, kind, mask(payload))
        return stored

    def _put(
        self,
        kind: str,
        symbology: str,
        symbology_id: str,
        payload: str,
        clock_synced: bool,
        scanned_at: datetime | None,
    ) -> StoredScan:
        now, mono = self._clock(), self._mono()
        when = scanned_at if scanned_at is not None else datetime.fromtimestamp(now, UTC)
        result: list[StoredScan] = []

        def insert(c: sqlite3.Connection) -> None:
            depth = c.execute("SELECT count(*) FROM scans").fetchone()[0]
            if depth >= self.max_messages:
                # Expired rows hold no capacity; nothing else is ever evicted.
                depth -= self._delete_expired(c)
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
            body = msg.to_json()
            if seq > self._seq_ceiling:
                self._reserve_seq(seq)
            c.execute(
                f"INSERT INTO scans ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, scan_id, now, mono, self._boot, body),
            )
            self._set_meta(c, "last_seq", seq)
            result.append(StoredScan(seq, scan_id, now, now + self.max_age_s, body))

        self._write(insert, "store a scan")
        return result[0]

    def _now(self) -> dict[str, float | str]:
        """The parameters of _AGE: this boot, and both clocks read now."""
        return {"boot": self._boot, "mono": self._mono(), "wall": self._clock()}

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[StoredScan]:
        """Scans not yet delivered and not expired, in seq order."""
        now = self._now()

        def op() -> list[tuple[int, str, bytes, float]]:
            try:
                return (
                    self._require()
                    .execute(
                        f"SELECT seq, scan_id, body, {_AGE} AS age FROM scans"
                        " WHERE seq > :after AND age < :max_age ORDER BY seq LIMIT :limit",
                        {
                            **now,
                            "after": after_seq,
                            "max_age": self.max_age_s,
                            "limit": max(0, limit),
                        },
                    )
                    .fetchall()
                )
            except sqlite3.Error as e:
                raise self._error(e, "read") from None

        with self._lock:
            rows = self._guarded(op)
            self._maybe_checkpoint()
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
        counted: list[int] = []

        def delete(c: sqlite3.Connection) -> None:
            counted[:] = [max(0, c.executemany("DELETE FROM scans WHERE seq = ?", params).rowcount)]

        with self._lock:
            self._require_writable()
            self._guarded(lambda: self._delete(delete, "delete delivered scans"))
            self._deleted(counted[0])
        return counted[0]

    def _delete_expired(self, c: sqlite3.Connection) -> int:
        params = {**self._now(), "max_age": self.max_age_s}
        n = max(0, c.execute(f"DELETE FROM scans WHERE {_AGE} >= :max_age", params).rowcount)
        if n:
            self._set_meta(c, "expired_total", self._meta(c, "expired_total") + n)
            log.warning(
                "%s: %d scan(s) older than %g h dropped undelivered",
                self.path,
                n,
                self.max_age_s / 3600,
            )
        return n

    def expire(self) -> int:
        """Drop scans older than max_age_h; counted in stats().expired_total."""
        counted: list[int] = []

        def delete(c: sqlite3.Connection) -> None:
            counted[:] = [self._delete_expired(c)]

        with self._lock:
            self._require_writable()
            self._guarded(lambda: self._delete(delete, "expire old scans"))
            self._deleted(counted[0])
            self._maybe_checkpoint(force=True)
            self._forget_old_quarantines()
        return counted[0]

    def purge(self) -> int:
        """Delete every queued scan (operator action); returns how many."""
        counted: list[int] = []

        def delete(c: sqlite3.Connection) -> None:
            counted[:] = [max(0, c.execute("DELETE FROM scans").rowcount)]

        with self._lock:
            self._require_writable()
            self._guarded(lambda: self._delete(delete, "purge"))
            self._deleted(counted[0])
            self._maybe_checkpoint(force=True)
        if counted[0]:
            log.warning("%s: %d queued scan(s) purged by the operator", self.path, counted[0])
        return counted[0]

    def stats(self) -> OutboxStats:
        """Depth, oldest age, expired count, last seq, capacity, quarantined files."""

        def op() -> tuple[int, float | None, int, int]:
            conn = self._require()
            try:
                depth, oldest = conn.execute(
                    f"SELECT count(*), max({_AGE}) FROM scans", self._now()
                ).fetchone()
                return (
                    depth,
                    oldest,
                    self._meta(conn, "expired_total"),
                    self._meta(conn, "last_seq"),
                )
            except sqlite3.Error as e:
                raise self._error(e, "read") from None

        with self._lock:
            depth, oldest, expired_total, last_seq = self._guarded(op)
            self._maybe_checkpoint()
        return OutboxStats(
            depth=int(depth),
            oldest_age_s=None if oldest is None else max(0.0, float(oldest)),
            expired_total=expired_total,
            last_seq=last_seq,
            max_messages=self.max_messages,
            quarantined=self._quarantined_files(),
        )

    def integrity_check(self) -> str:
        """'ok', or what SQLite finds wrong with the file (for `ordoscan check`)."""
        with self._lock:
            conn = self._require()
            try:
                return self._check(conn, "integrity_check")
            except sqlite3.Error as e:
                return f"integrity check failed: {e}"

    def checkpoint(self) -> bool:
        """Copy the WAL into the file and truncate it; False if another reader held it."""
        with self._lock:
            self._require_writable()
            return self._checkpoint_locked()

    # --- checkpoints -------------------------------------------------------------------

    def _deleted(self, n: int) -> None:
        if n <= 0:
            return
        if self._first_delete_at is None:
            self._first_delete_at = time.monotonic()
        self._deleted_since_checkpoint += n
        self._maybe_checkpoint()

    def _maybe_checkpoint(self, force: bool = False) -> None:
        conn = self._conn
        if conn is None or self.readonly or self._deleted_since_checkpoint == 0:
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
                due = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM scans)").fetchone()[0] == 1
            except sqlite3.Error:
                return
        if due:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> bool:
        conn = self._conn
        if conn is None or self.readonly:
            return False
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as e:
            log.warning("%s: checkpoint failed: %s", self.path, e)
            return False
        if busy:
            return False
        self._deleted_since_checkpoint = 0
        self._first_delete_at = None
        return True

    # --- closing -----------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint (so delivered payloads leave the WAL) and close; idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if not self.readonly:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            with contextlib.suppress(sqlite3.Error):
                conn.close()


@dataclass
class _Salvage:
    """What could be read back from a quarantined file."""

    rows: list[Row]
    last_seq: int
    expired_total: int
    meta_ok: bool

    @classmethod
    def read(cls, target: Path, seq_ceiling: int) -> _Salvage:
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
        query = f"SELECT {_COLUMNS} FROM scans WHERE seq >= ? ORDER BY seq"
        nxt, failures = 1, 0
        while nxt <= bound and failures < SALVAGE_MAX_SKIPS:
            start = nxt
            try:
                for row in conn.execute(query, (nxt,)):
                    nxt = int(row[0]) + 1
                    cls._keep(row, found)
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
                cls._keep(row, found)

    @staticmethod
    def _keep(row: tuple[object, ...], found: dict[int, Row]) -> None:
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
