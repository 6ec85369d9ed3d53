"""File-system helpers of the outbox: side-file names, directory syncs, readable errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ordoscan.errors import OutboxDiskError


def sibling(path: Path, suffix: str) -> Path:
    """A side file of the outbox: the same name with `suffix` appended."""
    return path.with_name(path.name + suffix)


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symbolic link as the last component (OutboxDiskError)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutboxDiskError(
                f"{path}: is a symbolic link; the outbox and its side files must be real "
                "files (set outbox.path to the real location)"
            ) from None
        raise


def fsync_dir(folder: Path) -> None:
    """Make a create or rename in `folder` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def explain_os(e: OSError) -> str:
    """A short reason for an OSError, in the words an operator acts on."""
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    if e.errno == errno.EROFS:
        return "the file system is read-only"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)
