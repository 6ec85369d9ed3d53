"""What the outbox stores and reports: the table layout, the row and stats types."""

from __future__ import annotations

from dataclasses import dataclass

APPLICATION_ID = 0x4F524453  # "ORDS" in the file header: this file is an ordoscan outbox
FORMAT_VERSION = 1

SCHEMA_STATEMENTS = (
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
COLUMNS = "seq, scan_id, created_at, created_mono, boot_id, body"


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
