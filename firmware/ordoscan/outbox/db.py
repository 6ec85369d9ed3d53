"""The SQLite file itself: connecting, format and integrity checks, readable errors."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from ordoscan.errors import OutboxCorrupt, OutboxDiskError, OutboxError
from ordoscan.outbox.files import explain_os, fsync_dir, open_nofollow, refuse_link, sibling
from ordoscan.outbox.model import APPLICATION_ID, FORMAT_VERSION, SCHEMA_STATEMENTS

log = logging.getLogger("ordoscan.outbox")

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


def errcode(e: BaseException) -> int | None:
    """The primary SQLite result code of an error, without the extended bits."""
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_full(e: OutboxDiskError) -> bool:
    """True if the disk error came from SQLite finding the disk full."""
    cause = e.__cause__
    return isinstance(cause, sqlite3.Error) and errcode(cause) == sqlite3.SQLITE_FULL


def fs_problem(path: Path) -> str | None:
    """What is wrong with the folder or file, as seen from the file system."""
    folder = path.parent
    try:
        st = os.statvfs(folder)
    except OSError as e:
        return f"{folder}: {explain_os(e)}"
    if st.f_flag & os.ST_RDONLY:
        return "the file system is read-only"
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return "the disk is full"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by this user"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return "the file is not readable and writable by this user"
    return None


def sqlite_error(path: Path, e: sqlite3.Error, doing: str) -> OutboxError:
    """Turn an SQLite error into the outbox error the daemon acts on."""
    code = errcode(e)
    if code in _CORRUPT_CODES:
        return OutboxCorrupt(f"{path}: {doing}: the outbox file is damaged ({e})")
    if code == sqlite3.SQLITE_FULL:
        reason: str | None = _DISK_CODES[code]
    else:
        reason = fs_problem(path) or (_DISK_CODES.get(code) if code is not None else None)
    return OutboxDiskError(f"{path}: {doing}: {reason or 'disk error'} ({e})")


def connect(path: Path, uri_query: str | None = None) -> sqlite3.Connection:
    """A connection with explicit transactions, shareable between threads under a lock."""
    target = f"file:{quote(str(path))}?{uri_query}" if uri_query else str(path)
    return sqlite3.connect(
        target,
        uri=uri_query is not None,
        timeout=5.0,
        isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
        check_same_thread=False,  # shared by the pipeline and MQTT threads, under a lock
    )


def pragma_text(conn: sqlite3.Connection, pragma: str) -> str:
    """The rows of a checking pragma, joined ('ok' when all is well)."""
    rows = conn.execute(f"PRAGMA {pragma}").fetchall()
    return "; ".join(str(r[0]) for r in rows) or "no result"


def create_file(path: Path) -> None:
    """Create or open the database file ourselves: 0600 (SQLite would follow the umask), no
    symbolic link as the file or its -wal/-shm, and modes changed on the file, never a link."""
    for side in ("-wal", "-shm"):
        refuse_link(sibling(path, side))
    created = True
    try:
        try:
            fd = open_nofollow(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            created = False
            fd = open_nofollow(path, os.O_RDWR)
    except OSError as e:
        raise OutboxDiskError(f"{path}: cannot open the outbox file: {explain_os(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutboxError(f"{path}: is not a regular file (check outbox.path)")
        mode = st.st_mode & 0o777
        if mode & 0o077:
            os.fchmod(fd, 0o600)  # an older or hand-made file: it holds health data
            log.warning("%s: permissions were %03o, set to 600", path, mode)
    except OSError as e:
        raise OutboxDiskError(f"{path}: {explain_os(e)}") from None
    finally:
        os.close(fd)
    if not created:
        return
    try:
        fsync_dir(path.parent)
    except OSError as e:
        raise OutboxDiskError(
            f"{path.parent}: cannot sync the outbox folder: {explain_os(e)}"
        ) from None


def check_format(path: Path, conn: sqlite3.Connection) -> None:
    """Refuse a valid SQLite database that belongs to something else."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id == APPLICATION_ID:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > FORMAT_VERSION:
            raise OutboxError(
                f"{path}: outbox format {version} is newer than this firmware's "
                f"({FORMAT_VERSION}); refusing to touch it"
            )
        return
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id != 0 or tables:
        raise OutboxError(
            f"{path}: is an SQLite database but not an ordoscan outbox; "
            "refusing to touch it (check outbox.path)"
        )


def open_checked(path: Path) -> sqlite3.Connection:
    """Open for writing, set pragmas, check the file, create tables; raises OutboxCorrupt."""
    create_file(path)
    try:
        conn = connect(path)
    except sqlite3.Error as e:
        raise sqlite_error(path, e, "open") from None
    try:
        check_format(path, conn)
        row = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise OutboxDiskError(f"{path}: SQLite WAL mode is not available here ({row})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
        problem = pragma_text(conn, "quick_check")
        if problem != "ok":
            raise OutboxCorrupt(f"{path}: the outbox file is damaged: {problem}")
        conn.execute("BEGIN IMMEDIATE")  # also proves that the file is writable
        for stmt in SCHEMA_STATEMENTS:
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
        raise sqlite_error(path, e, "open") from None
    return conn


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open for inspection only: never creates, repairs or checkpoints."""
    for side in ("", "-wal", "-shm"):
        refuse_link(sibling(path, side))
    if not path.is_file():
        raise OutboxDiskError(
            f"{path}: no outbox file (nothing was queued yet, or outbox.path is wrong)"
        )
    try:
        conn = connect(path, "mode=ro")
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.OperationalError:
            # WAL readers need the -shm file; on a read-only file system with
            # no WAL left to replay, the file alone is the whole truth.
            conn.close()
            wal = sibling(path, "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise
            conn = connect(path, "mode=ro&immutable=1")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    except sqlite3.Error as e:
        raise sqlite_error(path, e, "open") from None
    if app_id != APPLICATION_ID and (app_id or tables):
        conn.close()
        raise OutboxError(f"{path}: is an SQLite database but not an ordoscan outbox")
    return conn
