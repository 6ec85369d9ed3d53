"""What a followed replay folder has played: each file once, by identity, across restarts.

A file's identity is its name with (device, inode, size, modification time):
the same name with the same content is never played twice, a file rewritten
in place is played again, and so is a new name, even a hard link to a file
already played (the hardware-in-loop rig shows each camera frame as a new hard
link to the picture in view). Dot-files are never played, so a file written
as `.name.part` and renamed into view is played once, whole.

The record is a small JSON file inside the folder itself,
`.ordoscan-played.json`: it travels with the files it describes, and a desk
or a rig needs no other path. It is written atomically after each file;
identities of files no longer in the folder are dropped from it. A folder the
daemon cannot write to is remembered in memory only, with one warning: a
restart then plays every file again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from ordoscan import privacy

log = logging.getLogger("ordoscan.camera")

STATE_NAME = ".ordoscan-played.json"
_VERSION = 1

Identity = tuple[str, int, int, int, int]  # name, st_dev, st_ino, st_size, st_mtime_ns


def identity(name: str, st: os.stat_result) -> Identity:
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PlayedFiles:
    """The identities played from one folder, kept in the folder's state file."""

    def __init__(self, folder: Path, *, save: bool = True) -> None:
        """save=False: read the record, but keep what is played in memory (a self-test)."""
        self._folder = folder
        self._save_to_disk = save
        self._path = folder / STATE_NAME
        self._played: set[Identity] = set()
        self._warned = False

    def load(self) -> None:
        """Read the record; a missing or damaged one starts empty (a damaged one is named)."""
        self._played = set()
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            if data.get("version") != _VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            self._played = {
                (str(n), int(a), int(b), int(c), int(d)) for n, a, b, c, d in data["played"]
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
            log.warning(
                "replay: %s is unreadable (%s): every file in the folder is played again",
                privacy.printable(str(self._path)),
                privacy.printable(e),
            )

    def __contains__(self, ident: Identity) -> bool:
        return ident in self._played

    def __len__(self) -> int:
        return len(self._played)

    def mark(self, ident: Identity, present: set[Identity]) -> None:
        """Record one more file played, and forget those no longer in the folder."""
        self._played = (self._played & present) | {ident}
        if self._save_to_disk:
            self._save()

    def _save(self) -> None:
        body = json.dumps({"version": _VERSION, "played": sorted(self._played)}, ensure_ascii=True)
        temporary = self._folder / f"{STATE_NAME}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
            # renamed whole, not fsync'd: a daemon restart finds it; after a power cut the
            # last file may play again, which de-duplication downstream is there for
            os.replace(temporary, self._path)
        except OSError as e:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if not self._warned:
                self._warned = True
                log.warning(
                    "replay: cannot write %s (%s): what was played is remembered until the "
                    "daemon stops only; a restart plays every file again",
                    privacy.printable(str(self._path)),
                    e.strerror,
                )
