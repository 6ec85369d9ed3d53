"""Replay: frames from an image file, a followed folder or a video, for the desk and the tests.

A followed folder plays each file once (see `followed`). An image `name.png`
may have a sharper twin `name.hires.png` (same scene, same framing, more
pixels): it is never a frame of its own, but the frame's `zoom` reads its
regions from it, as the picamera2 source reads them from its main stream.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ordoscan import privacy
from ordoscan.camera.base import (
    CameraSource,
    Frame,
    Grey,
    Zoom,
    import_cv2,
    teardown,
    why,
    zoom_box,
)
from ordoscan.camera.followed import Identity, PlayedFiles, identity
from ordoscan.clock import SYSTEM_CLOCK, Clock
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraLost, CameraOpenError
from ordoscan.images import file_kind, load_image

load_grey_image = load_image  # the name the camera package has always exported

log = logging.getLogger("ordoscan.camera")

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".mjpg",
        ".mjpeg",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".h264",
        ".264",
        ".ts",
    }
)


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


HIRES = ".hires"  # name.hires.png: the sharper twin of name.png, what Frame.zoom reads


def hires_twin(path: Path) -> Path:
    return path.with_name(f"{path.stem}{HIRES}{path.suffix}")


def _is_twin(name: str) -> bool:
    return Path(name).stem.endswith(HIRES)


class _HiresTwin:
    """Frame.zoom of a replayed image: regions of its twin, loaded on the first call only."""

    def __init__(self, path: Path, frame: tuple[int, int]) -> None:
        self._path = path
        self._frame = frame  # (width, height) of the frame shown
        self._image: Grey | None = None
        self._failed = False
        self._lock = threading.Lock()  # the analysis thread calls it; loading happens once

    def __call__(self, x0: int, y0: int, x1: int, y1: int) -> Grey | None:
        with self._lock:
            if self._image is None and not self._failed:
                try:
                    self._image = load_image(self._path)
                except Exception as e:
                    self._failed = True
                    log.warning("replay: %s unusable for zoom: %s", _shown(self._path), why(e))
            image = self._image
        if image is None:
            return None
        box = zoom_box((x0, y0, x1, y1), self._frame, (image.shape[1], image.shape[0]))
        if box is None:
            return None
        bx0, by0, bx1, by1 = box
        return np.array(image[by0:by1, bx0:bx1], dtype=np.uint8)


def _shown(path: Path) -> str:
    """A path as it may appear in a log line: a name from outside may hold any character."""
    return privacy.printable(str(path), limit=300)


def _reason(e: BaseException, path: Path) -> str:
    """The loader's message without the file name, which the caller shows its own way."""
    return why(e).removeprefix(f"{_shown(path)}: ")


class ReplaySource(CameraSource):
    """Frames from an image file, a followed folder or a video, paced at cfg.fps."""

    live = False

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        frames_per_image: int = 1,
        poll_interval_s: float = 0.2,
        remember_played: bool = True,
    ) -> None:
        if frames_per_image < 1:
            raise ValueError(f"frames_per_image must be at least 1, not {frames_per_image}")
        self._cfg = cfg
        self._path = Path(cfg.path)
        self._period = 1.0 / cfg.fps
        self._clock = clock
        self._closing = threading.Event()  # close() from another thread cuts a wait short
        self._frames_per_image = frames_per_image
        self._poll = poll_interval_s
        self._opened = False
        self._is_dir = False
        self._playing: Iterator[Grey] | None = None  # frames of the current file
        self._video: Any = None  # the cv2.VideoCapture being played
        self._pending: Grey | None = None  # decoded, waiting for its time
        self._file_zoom: Zoom | None = None  # the sharper twin of the file playing
        self._pending_zoom: Zoom | None = None
        self._due: float | None = None
        self._index = 0
        self._last_name = ""  # folder with loop: the last file started, in name order
        # folder without loop: each file once, by identity, remembered in the folder
        self._played = PlayedFiles(self._path, save=remember_played)
        self._current: Identity | None = None  # the file playing, marked played once done
        self._present: set[Identity] = set()  # the folder's files at the last listing
        self._played_in_cycle = 0
        self._file_done = False  # single file: played once
        # (path, mtime_ns, image) of the last image decoded: a looped file is decoded once
        self._cache: tuple[Path, int, Grey] | None = None
        self._warned: set[tuple[str, int]] = set()
        self.skipped_files = 0

    @property
    def name(self) -> str:
        return f"replay {_shown(self._path)}"

    def open(self) -> None:
        path, shown = self._path, _shown(self._path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise CameraOpenError(f"replay path {shown}: no such file or folder") from None
        except OSError as e:
            raise CameraOpenError(f"replay path {shown}: {e.strerror}") from None
        if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):  # a FIFO would block a read
            raise CameraOpenError(
                f"replay path {shown}: is {file_kind(mode)}; camera.path must name an image, "
                "a video or a folder"
            )
        self._reset()
        self._is_dir = stat.S_ISDIR(mode)
        if self._is_dir and not self._cfg.loop:
            self._played.load()
        if self._is_dir:
            try:
                with os.scandir(path) as entries:
                    next(entries, None)
            except OSError as e:
                raise CameraOpenError(
                    f"replay folder {shown}: cannot be listed: {e.strerror}"
                ) from None
        elif _is_video(path):
            video = self._open_video(path)
            if video is None:
                raise CameraOpenError(f"replay video {shown}: cannot be read as a video")
            video.release()
        else:
            try:
                self._image(path)
            except Exception as e:
                raise CameraOpenError(f"replay image {shown}: {_reason(e, path)}") from None
        self._opened = True
        self._closing.clear()
        log.info(
            "%s open (%s, %g fps, loop=%s)",
            self.name,
            self._kind(),
            self._cfg.fps,
            self._cfg.loop,
        )

    def _kind(self) -> str:
        if not self._is_dir:
            return "file"
        if self._cfg.loop:
            return "folder, every file in name order, again and again"
        return f"folder, followed: each new file once, {len(self._played)} played before"

    def _reset(self) -> None:
        self._stop_playing()
        self._pending = None
        self._due = None
        self._index = 0
        self._last_name = ""
        self._played_in_cycle = 0
        self._file_done = False
        self._current = None
        self._file_zoom = self._pending_zoom = None

    def read(self, timeout: float) -> Frame | None:
        if not self._opened:
            raise CameraLost(f"{self.name}: not open")
        now = self._clock.monotonic()
        deadline = now + max(0.0, timeout)
        while not self._closing.is_set():  # close() from another thread ends a wait
            if self._pending is None:
                self._pending = self._next_image()
            if self._pending is not None:
                due = now if self._due is None else self._due
                if due > deadline:
                    self._sleep(deadline - now)
                    return None
                if due > now:
                    self._sleep(due - now)
                image, self._pending = self._pending, None
                zoom, self._pending_zoom = self._pending_zoom, None
                return self._deliver(image, due, zoom)
            if not self._is_dir or now >= deadline:
                # a single file that ended: no frame, not a fault
                if deadline > now:
                    self._sleep(deadline - now)
                return None
            self._sleep(min(self._poll, deadline - now))  # a followed folder: look again soon
            now = self._clock.monotonic()
        return None

    def _deliver(self, image: Grey, due: float, zoom: Zoom | None) -> Frame:
        now = self._clock.monotonic()
        # the next frame one period on; after a late read, one period from now: no burst
        late = now - due > self._period
        self._due = (now if late else due) + self._period
        frame = Frame(image, now, self._index, zoom)
        self._index += 1
        return frame

    def _next_image(self) -> Grey | None:
        """The next image to show, or None if there is none for now."""
        while True:
            if self._playing is not None:
                image = next(self._playing, None)
                if image is not None:
                    self._played_in_cycle += 1
                    self._pending_zoom = self._file_zoom
                    return image
                self._stop_playing()
                self._done_with_current()
            if not self._start_next_file():
                return None

    def _start_next_file(self) -> bool:
        """Start the next file; False if there is none for now."""
        # a loop starts again only if the last round gave frames: no endless spin on bad files
        if not self._is_dir:
            if self._file_done and (not self._cfg.loop or not self._played_in_cycle):
                return False
            self._file_done, self._played_in_cycle = True, 0
            return self._start_file(self._path, fatal=True)
        if not self._cfg.loop:
            return self._start_next_unplayed()
        while True:
            name = self._next_name()
            if name is None:
                if not self._cfg.loop or not self._played_in_cycle:
                    return False
                self._last_name, self._played_in_cycle = "", 0  # loop: from the first file again
                continue
            self._last_name = name
            if self._start_file(self._path / name, fatal=False):
                return True

    def _start_next_unplayed(self) -> bool:
        """Start the first file, in name order, not played yet (whatever its name sorts after)."""
        while True:
            found = self._next_unplayed()
            if found is None:
                return False
            name, self._current = found
            if self._start_file(self._path / name, fatal=False):
                return True
            self._done_with_current()  # unreadable: tried; retried only once it changes

    def _done_with_current(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            self._played.mark(current, self._present)

    def _next_unplayed(self) -> tuple[str, Identity] | None:
        best: tuple[str, Identity] | None = None
        present: set[Identity] = set()
        for entry in self._listing():
            if entry.name.startswith(".") or _is_twin(entry.name):  # being written, the record
                continue
            try:
                if not entry.is_file():
                    continue
                ident = identity(entry.name, entry.stat())
            except OSError:
                continue
            present.add(ident)
            if ident not in self._played and (best is None or entry.name < best[0]):
                best = (entry.name, ident)
        self._present = present
        return best

    def _listing(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self._path) as listing:
                return list(listing)
        except OSError as e:
            raise CameraLost(
                f"replay folder {_shown(self._path)}: cannot be listed: {e.strerror}"
            ) from None

    def _next_name(self) -> str | None:
        """The first file name after the last one started, skipping dot-files (being written)."""
        best: str | None = None
        for entry in self._listing():
            name = entry.name
            if (
                name.startswith(".")
                or _is_twin(name)
                or name <= self._last_name
                or (best is not None and name >= best)
            ):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file():
                    best = name
        return best

    def _start_file(self, path: Path, *, fatal: bool) -> bool:
        self._file_zoom = None
        if _is_video(path):
            video = self._open_video(path)
            if video is None:
                return self._unreadable(path, "cannot be read as a video", fatal)
            self._video = video
            self._playing = self._video_frames(path, video)
            return True
        try:
            image = self._image(path)
        except Exception as e:
            return self._unreadable(path, _reason(e, path), fatal)
        self._playing = iter([image] * self._frames_per_image)
        twin = hires_twin(path)
        if twin.is_file():
            self._file_zoom = _HiresTwin(twin, (image.shape[1], image.shape[0]))
        return True

    def _unreadable(self, path: Path, why: str, fatal: bool) -> bool:
        if fatal:
            raise CameraLost(f"replay file {_shown(path)}: {why}")
        self.skipped_files += 1
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            key = (str(path), 0)
        if key not in self._warned:  # once per file version, not on every loop
            self._warned.add(key)
            log.warning("replay: skipped %s: %s", _shown(path), why)
        return False

    def _image(self, path: Path) -> Grey:
        mtime = path.stat().st_mtime_ns
        if self._cache is not None and self._cache[0] == path and self._cache[1] == mtime:
            return self._cache[2]
        image = load_image(path)
        self._cache = (path, mtime, image)
        return image

    def _open_video(self, path: Path) -> Any:
        try:
            cv2 = import_cv2(f"replaying the video {_shown(path)}")
        except CameraOpenError as e:
            log.warning("%s", e)
            return None
        try:
            video = cv2.VideoCapture(str(path))
            if video.isOpened():
                return video
            video.release()
        except Exception as e:
            log.debug("replay: %s: %s", _shown(path), why(e))
        return None

    def _video_frames(self, path: Path, video: Any) -> Iterator[Grey]:
        cv2 = importlib.import_module("cv2")
        while True:
            try:
                ok, image = video.read()
            except Exception as e:
                log.warning(
                    "replay: %s: read failed, the rest is skipped: %s", _shown(path), why(e)
                )
                return
            if not ok or image is None:
                return
            array = np.asarray(image)
            if array.ndim == 3:
                array = cv2.cvtColor(
                    array, cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
                )
            yield np.asarray(array, dtype=np.uint8)

    def _stop_playing(self) -> None:
        self._playing = None
        video, self._video = self._video, None
        if video is not None:
            teardown(f"replay: release {_shown(self._path)}", video.release)

    def close(self) -> None:
        self._closing.set()
        self._opened = False
        self._stop_playing()
        self._pending = None

    def _sleep(self, seconds: float) -> None:
        self._clock.wait(self._closing, seconds)
