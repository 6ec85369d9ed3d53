"""The sequence side file (`<outbox>.seq`): a durable ceiling above every seq used.

Sequence numbers never go back, even if the database file is lost: the ceiling
is rewritten once per SEQ_BLOCK scans, before the first seq of a block is used,
and a fresh file continues above it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ordoscan.errors import OutboxDiskError
from ordoscan.outbox.files import explain_os, fsync_dir, open_nofollow, sibling

log = logging.getLogger("ordoscan.outbox")

SEQ_BLOCK = 1000


class SeqFile:
    """The reserved ceiling; `ensure(seq)` makes it durable before `seq` is used."""

    def __init__(self, outbox: Path) -> None:
        self.path = sibling(outbox, ".seq")
        self._tmp = sibling(outbox, ".seq.tmp")
        self.ceiling = 0

    def load(self) -> int:
        """Read the ceiling from disk (0 when absent or unreadable, with a warning)."""
        self.ceiling = self._read()
        return self.ceiling

    def _read(self) -> int:
        try:
            fd = open_nofollow(self.path, os.O_RDONLY)  # a link is refused, naming it
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.warning("%s: cannot read the sequence file: %s", self.path, e)
            return 0
        try:
            text = os.read(fd, 64).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            log.warning("%s: cannot read the sequence file: %s", self.path, e)
            return 0
        finally:
            os.close(fd)
        if not text.isdigit():
            log.warning("%s: ignoring a sequence file that is not a number", self.path)
            return 0
        return int(text)

    def ensure(self, seq: int) -> None:
        """Durably record a ceiling above `seq` before `seq` is used."""
        if seq <= self.ceiling:
            return
        ceiling = seq + SEQ_BLOCK - 1
        try:
            fd = open_nofollow(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                os.write(fd, f"{ceiling}\n".encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise OutboxDiskError(
                f"{self.path}: cannot write the sequence file: {explain_os(e)}"
            ) from None
        self.ceiling = ceiling
