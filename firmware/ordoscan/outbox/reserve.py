"""A little disk space kept aside (`<outbox>.reserve`).

When the disk fills up new scans are refused, but the reserve is released so
that delivered scans can still be deleted and the queue drains.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ordoscan.clock import Clock
from ordoscan.outbox.files import explain_os, open_nofollow, refuse_link, sibling

log = logging.getLogger("ordoscan.outbox")

RESERVE_BYTES = 256 * 1024
RETRY_S = 60.0  # a missing reserve is re-made at most this often (not at every scan on a full disk)


class SpaceReserve:
    """The reserve file: made when there is room, released when a deletion needs it."""

    def __init__(self, outbox: Path, clock: Clock) -> None:
        self.path = sibling(outbox, ".reserve")
        self._outbox = outbox
        self._clock = clock
        self._retry_at = 0.0

    def ensure(self) -> None:
        """Keep RESERVE_BYTES aside for deletions on a full disk (best effort)."""
        refuse_link(self.path)  # OutboxError naming it: never write through a link
        try:
            if self.path.stat().st_size >= RESERVE_BYTES:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            fd = open_nofollow(self.path, os.O_WRONLY | os.O_CREAT)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, bytes(RESERVE_BYTES))  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.debug("%s: no space reserve: %s", self._outbox, explain_os(e))

    def ensure_later(self) -> None:
        """After a scan: re-make a released reserve, at most once per RETRY_S."""
        now = self._clock.monotonic()
        if now >= self._retry_at and not os.path.lexists(self.path):
            self._retry_at = now + RETRY_S
            self.ensure()

    def release(self) -> bool:
        """Free the reserved space; False if there was none to free."""
        try:
            self.path.unlink()
        except OSError:
            return False
        log.warning("%s: disk full: space reserve released to delete scans", self._outbox)
        return True
