"""When to checkpoint the WAL, so that deleted payloads do not linger in it.

Deleted rows stay in the WAL until a checkpoint truncates it: one is done when
the queue empties, after CHECKPOINT_AFTER_DELETES deletions, or
CHECKPOINT_AFTER_S after the first deletion since the last one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ordoscan.clock import Clock

log = logging.getLogger("ordoscan.outbox")

CHECKPOINT_AFTER_DELETES = 256
CHECKPOINT_AFTER_S = 2.0


class Checkpoints:
    """Counts deletions and truncates the WAL when one is due; the caller holds its lock."""

    def __init__(self, outbox: Path, clock: Clock) -> None:
        self._outbox = outbox
        self._clock = clock
        self._deleted = 0
        self._first_delete_at: float | None = None

    def deleted(self, conn: sqlite3.Connection | None, n: int) -> None:
        """Record `n` deleted rows, and checkpoint if that makes one due."""
        if n <= 0:
            return
        if self._first_delete_at is None:
            self._first_delete_at = self._clock.monotonic()
        self._deleted += n
        self.maybe(conn)

    def maybe(self, conn: sqlite3.Connection | None, force: bool = False) -> None:
        """Checkpoint if deletions are pending and one is due (or `force`)."""
        if conn is None or self._deleted == 0:
            return
        due = (
            force
            or self._deleted >= CHECKPOINT_AFTER_DELETES
            or (
                self._first_delete_at is not None
                and self._clock.monotonic() - self._first_delete_at >= CHECKPOINT_AFTER_S
            )
        )
        if not due:
            try:
                due = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM scans)").fetchone()[0] == 1
            except sqlite3.Error:
                return
        if due:
            self.now(conn)

    def now(self, conn: sqlite3.Connection) -> bool:
        """Copy the WAL into the file and truncate it; False if another reader held it."""
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as e:
            log.warning("%s: checkpoint failed: %s", self._outbox, e)
            return False
        if busy:
            return False
        self._deleted = 0
        self._first_delete_at = None
        return True
