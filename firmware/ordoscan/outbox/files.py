"""File-system helpers of the outbox: side-file names, directory syncs, readable errors."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ordoscan.errors import OutboxDiskError, OutboxError


def sibling(path: Path, suffix: str) -> Path:
    """A side file of the outbox: the same name with `suffix` appended."""
    return path.with_name(path.name + suffix)


def _link_refused(path: Path) -> OutboxError:
    return OutboxError(
        f"{path}: is a symbolic link; refusing to follow it (the outbox and its side files "
        "must be real files: set outbox.path to the real location)"
    )


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open that refuses a symbolic link as the last component (OutboxError naming it)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_refused(path) from None
        raise


def refuse_link(path: Path) -> None:
    """Raise OutboxError naming `path` if it is a symbolic link (absent is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutboxDiskError(f"{path}: {explain_os(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _link_refused(path)


def make_last_folder(folder: Path) -> None:
    """Create the outbox folder, but never its parents: a typo must not build a tree as root."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise OutboxDiskError(
            f"{folder}: cannot create the outbox folder: {folder.parent} does not exist "
            "(is outbox.path spelled right? only the last folder is created)"
        ) from None
    except OSError as e:
        raise OutboxDiskError(
            f"{folder}: cannot create the outbox folder: {explain_os(e)}"
        ) from None
    if not folder.is_dir():
        raise OutboxDiskError(f"{folder}: the outbox folder is not a directory")


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
