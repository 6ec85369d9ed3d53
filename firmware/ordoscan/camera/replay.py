"""Replay: frames from an image file, a followed folder or a video, for the desk and the tests."""

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
from ordoscan.camera.base import CameraSource, Frame, Grey, import_cv2, teardown, why
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
        self._due: float | None = None
        self._index = 0
        self._last_name = ""  # folder: the last file started, in name order
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
            "folder, followed" if self._is_dir else "file",
            self._cfg.fps,
            self._cfg.loop,
        )

    def _reset(self) -> None:
        self._stop_playing()
        self._pending = None
        self._due = None
        self._index = 0
        self._last_name = ""
        self._played_in_cycle = 0
        self._file_done = False

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
                return self._deliver(image, due)
            if not self._is_dir or now >= deadline:
                # a single file that ended: no frame, not a fault
                if deadline > now:
                    self._sleep(deadline - now)
                return None
            self._sleep(min(self._poll, deadline - now))  # a followed folder: look again soon
            now = self._clock.monotonic()
        return None

    def _deliver(self, image: Grey, due: float) -> Frame:
        now = self._clock.monotonic()
        # the next frame one period on; after a late read, one period from now: no burst
        late = now - due > self._period
        self._due = (now if late else due) + self._period
        frame = Frame(image, now, self._index)
        self._index += 1
        return frame

    def _next_image(self) -> Grey | None:
        """The next image to show, or None if there is none for now."""
        while True:
            if self._playing is not None:
                image = next(self._playing, None)
                if image is not None:
                    self._played_in_cycle += 1
                    return image
                self._stop_playing()
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

    def _next_name(self) -> str | None:
        """The first file name after the last one started, skipping dot-files (being written)."""
        try:
            with os.scandir(self._path) as listing:
                entries = list(listing)
        except OSError as e:
            raise CameraLost(
                f"replay folder {_shown(self._path)}: cannot be listed: {e.strerror}"
            ) from None
        best: str | None = None
        for entry in entries:
            name = entry.name
            if (
                name.startswith(".")
                or name <= self._last_name
                or (best is not None and name >= best)
            ):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file():
                    best = name
        return best

    def _start_file(self, path: Path, *, fatal: bool) -> bool:
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
