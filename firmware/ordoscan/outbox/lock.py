"""One writer per outbox: an OS lock on `<outbox>.lock`, held for the writer's life.

flock(2) on an open file: the kernel releases it when the process ends, even by
SIGKILL, so a crash never leaves a stale lock behind. The holder writes its PID
into the file for people; the PID named in a refusal is the kernel's own
record (/proc/locks) when it can be read, so a stale number is never named.
The file is never deleted (deleting a lock file races with a new holder).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from ordoscan.errors import OutboxDiskError, OutboxInUse
from ordoscan.outbox.files import explain_os, open_nofollow, sibling


def _kernel_holder(inode: int) -> int | None:
    """The PID holding an flock on this inode, from /proc/locks (Linux)."""
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have "->" after the id
        if (
            len(fields) >= 6
            and fields[1] == "FLOCK"
            and fields[4].isdigit()
            and fields[5].rsplit(":", 1)[-1] == str(inode)
        ):
            return int(fields[4])
    return None


class WriterLock:
    """The exclusive lock of one outbox; `acquire()` is idempotent, `release()` too."""

    def __init__(self, outbox: Path) -> None:
        self.path = sibling(outbox, ".lock")
        self._outbox = outbox
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise OutboxInUse naming the file and the holding PID."""
        if self._fd is not None:
            return
        try:
            fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            reason = explain_os(e)
            raise OutboxDiskError(f"{self.path}: cannot open the lock file: {reason}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self._holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutboxInUse(
                    f"{self._outbox}: the outbox is in use by another ordoscan process "
                    f"(PID {holder or 'unknown'} holds {self.path}); only one daemon may "
                    "write an outbox: stop the other one, or give this one its own outbox.path"
                ) from None
            raise OutboxDiskError(f"{self.path}: cannot lock: {explain_os(e)}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass  # the PID is for people; the lock itself is what counts
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> int | None:
        with contextlib.suppress(OSError):
            pid = _kernel_holder(os.fstat(fd).st_ino)
            if pid is not None:
                return pid
        with contextlib.suppress(OSError, ValueError):
            return int(os.pread(fd, 32, 0).decode("ascii").strip())
        return None

    def holder(self) -> int | None:
        """The PID holding the lock now, or None; only looks (never takes it, even briefly)."""
        if self._fd is not None:
            return os.getpid()
        try:
            inode = os.lstat(self.path).st_ino
        except OSError:
            return None
        return _kernel_holder(inode)

    def release(self) -> None:
        """Let go of the lock (closing the file releases it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
