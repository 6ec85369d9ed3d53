"""ReplaySource: image files, followed folders and videos, paced by an injected clock."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zxingcpp
from ordoscan.camera import Frame, LatestFrameReader, ReplaySource, load_grey_image, open_source
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraLost, CameraOpenError
from PIL import Image


class FakeTime:
    """An ordoscan.clock.Clock for the source: a wait moves the clock, no real waiting."""

    def __init__(self) -> None:
        self.now = 50.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_764_000_000.0 + self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        assert timeout >= 0
        self.slept.append(timeout)
        self.now += timeout
        return event.is_set()


def replay(path: Path, t: FakeTime, **changes: Any) -> ReplaySource:
    values: dict[str, Any] = {"source": "replay", "path": str(path), "fps": 10}
    frames_per_image = changes.pop("frames_per_image", 1)
    return ReplaySource(
        CameraConfig(**(values | changes)),
        clock=t,
        frames_per_image=frames_per_image,
    )


def qr_png(path: Path, text: str, scale: int = 4) -> Path:
    image = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode).to_image(scale=scale)
    Image.fromarray(np.asarray(image)).save(path)
    return path


def decoded(frame: Frame | None) -> str:
    assert frame is not None
    results = zxingcpp.read_barcodes(frame.image)
    assert len(results) == 1, f"frame {frame.index}: {len(results)} codes"
    return str(results[0].text)


def grey_file(path: Path, value: int, size: tuple[int, int] = (8, 6)) -> Path:
    Image.new("L", size, value).save(path)
    return path


def write_atomically(folder: Path, name: str, value: int) -> None:
    """How a feeder drops a scene into a followed folder: write a dot-file, then rename it."""
    hidden = folder / f".{name}.part"
    Image.new("L", (8, 6), value).save(hidden, format="PNG")
    hidden.rename(folder / name)


def values(source: ReplaySource, count: int, timeout: float = 1.0) -> list[int | None]:
    out: list[int | None] = []
    for _ in range(count):
        frame = source.read(timeout)
        out.append(None if frame is None else int(frame.image[0, 0]))
    return out


def test_a_single_image_gives_one_grey_frame_then_none(tmp_path: Path) -> None:
    t = FakeTime()
    path = qr_png(tmp_path / "scene.png", "01S2TBPZ2JCNZZYGHZ")
    with replay(path, t) as source:
        frame = source.read(1.0)
        assert frame is not None
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 2
        assert (frame.index, frame.timestamp) == (0, 50.0)
        assert decoded(frame) == "01S2TBPZ2JCNZZYGHZ"
        assert source.read(2.5) is None  # ended, loop = false: it waited out the timeout
        assert t.now == pytest.approx(52.5)
        assert source.read(0) is None


def test_loop_repeats_at_the_configured_rate(tmp_path: Path) -> None:
    t = FakeTime()
    path = grey_file(tmp_path / "one.png", 77)
    with replay(path, t, loop=True, fps=4) as source:
        frames = [source.read(10) for _ in range(5)]
    stamps = [f.timestamp for f in frames if f is not None]
    assert stamps == pytest.approx([50.0, 50.25, 50.5, 50.75, 51.0])
    assert [f.index for f in frames if f is not None] == [0, 1, 2, 3, 4]


def test_a_read_shorter_than_the_frame_period_returns_none_and_the_frame_comes_later(
    tmp_path: Path,
) -> None:
    t = FakeTime()
    with replay(grey_file(tmp_path / "one.png", 5), t, loop=True, fps=2) as source:
        assert source.read(1) is not None
        assert source.read(0.2) is None  # the next one is due 0.5 s after the first
        frame = source.read(1)
        assert frame is not None and frame.timestamp == pytest.approx(50.5)


def test_a_late_reader_gets_the_next_frame_at_once_without_a_burst(tmp_path: Path) -> None:
    t = FakeTime()
    with replay(grey_file(tmp_path / "one.png", 5), t, loop=True, fps=10) as source:
        assert source.read(1) is not None
        t.now += 5  # the reader was busy for 5 s
        late = source.read(1)
        assert late is not None and late.timestamp == pytest.approx(55.0)
        following = source.read(1)
        assert following is not None and following.timestamp == pytest.approx(55.1)


def test_a_folder_plays_in_name_order_and_skips_dot_files(tmp_path: Path) -> None:
    t = FakeTime()
    grey_file(tmp_path / "b.png", 20)
    grey_file(tmp_path / "a.png", 10)
    grey_file(tmp_path / "c.jpg", 30)
    grey_file(tmp_path / ".hidden.png", 99)
    (tmp_path / "sub").mkdir()
    grey_file(tmp_path / "sub" / "z.png", 98)
    with replay(tmp_path, t) as source:
        got = values(source, 4)
    assert got[:3] == [10, 20, pytest.approx(30, abs=2)]  # JPEG: near enough
    assert got[3] is None


def test_frames_per_image_shows_each_image_several_frames(tmp_path: Path) -> None:
    t = FakeTime()
    grey_file(tmp_path / "a.png", 10)
    grey_file(tmp_path / "b.png", 20)
    with replay(tmp_path, t, frames_per_image=3) as source:
        assert values(source, 7) == [10, 10, 10, 20, 20, 20, None]


def test_a_followed_folder_plays_files_that_appear_later(tmp_path: Path) -> None:
    t = FakeTime()
    grey_file(tmp_path / "001.png", 1)
    with replay(tmp_path, t) as source:
        assert values(source, 2) == [1, None]
        write_atomically(tmp_path, "002.png", 2)
        grey_file(tmp_path / "000.png", 200)  # sorts before what was played: played all the same
        assert values(source, 3) == [200, 2, None]
        (tmp_path / ".003.png.part").write_bytes(b"half a file")  # still being written
        assert values(source, 1) == [None]
        write_atomically(tmp_path, "003.png", 3)
        assert values(source, 1) == [3]


def test_an_empty_folder_is_not_an_error_and_waits_for_files(tmp_path: Path) -> None:
    t = FakeTime()
    with replay(tmp_path, t) as source:
        assert source.read(1.0) is None
        assert t.now == pytest.approx(51.0)
        assert all(s <= 0.2 for s in t.slept)  # it looked again every poll interval
        write_atomically(tmp_path, "a.png", 42)
        assert values(source, 1) == [42]


def test_loop_over_a_folder_starts_again_with_new_files_included(tmp_path: Path) -> None:
    t = FakeTime()
    grey_file(tmp_path / "a.png", 1)
    grey_file(tmp_path / "b.png", 2)
    with replay(tmp_path, t, loop=True) as source:
        assert values(source, 3) == [1, 2, 1]
        write_atomically(tmp_path, "c.png", 3)
        assert values(source, 4) == [2, 3, 1, 2]


def test_a_corrupt_file_in_a_folder_is_skipped_with_a_warning_naming_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = FakeTime()
    grey_file(tmp_path / "a.png", 1)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (tmp_path / "c.jpg").write_bytes(b"")
    grey_file(tmp_path / "d.png", 4)
    with caplog.at_level(logging.WARNING, "ordoscan.camera"), replay(tmp_path, t, loop=True) as src:
        assert values(src, 6) == [1, 4, 1, 4, 1, 4]
        assert src.skipped_files == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per bad file, not once per loop
    assert any(str(tmp_path / "b.png") in w for w in warnings)
    assert any(str(tmp_path / "c.jpg") in w for w in warnings)


def test_a_folder_of_only_bad_files_with_loop_does_not_spin(tmp_path: Path) -> None:
    t = FakeTime()
    (tmp_path / "bad.png").write_bytes(b"nope")
    with replay(tmp_path, t, loop=True) as source:
        assert source.read(1.0) is None
        assert t.now == pytest.approx(51.0)


def test_a_missing_path_is_an_open_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "scene.png"
    with pytest.raises(CameraOpenError, match=f"{missing}: no such file or folder"):
        replay(missing, FakeTime()).open()


def test_an_unreadable_single_image_is_an_open_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "scene.png"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CameraOpenError, match=f"replay image {bad}: not an image"):
        replay(bad, FakeTime()).open()


def test_an_unreadable_single_video_is_an_open_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(CameraOpenError, match=f"replay video {bad}: cannot be read as a video"):
        replay(bad, FakeTime()).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unlistable_folder_is_an_open_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        with pytest.raises(CameraOpenError, match=f"replay folder {folder}: cannot be listed"):
            replay(folder, FakeTime()).open()
    finally:
        folder.chmod(0o755)


def test_a_followed_folder_that_vanishes_is_camera_lost(tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    with replay(folder, FakeTime()) as source:
        assert source.read(0.1) is None
        folder.rmdir()
        with pytest.raises(CameraLost, match=f"replay folder {folder}"):
            source.read(0.1)


def test_a_single_image_that_breaks_while_looping_is_camera_lost(tmp_path: Path) -> None:
    path = grey_file(tmp_path / "one.png", 3)
    with replay(path, FakeTime(), loop=True) as source:
        assert source.read(1) is not None
        path.write_bytes(b"broken now")
        os.utime(path, ns=(1, 1))  # a new version: the cached pixels no longer count
        with pytest.raises(CameraLost, match=f"replay file {path}: not an image"):
            source.read(1)


def write_video(path: Path, levels: list[int], size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert writer.isOpened()
    for level in levels:
        writer.write(np.full((size[1], size[0], 3), level, np.uint8))
    writer.release()
    return path


def test_a_video_plays_its_frames_in_grey_then_ends(tmp_path: Path) -> None:
    t = FakeTime()
    video = write_video(tmp_path / "clip.avi", [20, 120, 220])
    with replay(video, t) as source:
        frames = [source.read(1) for _ in range(4)]
    assert frames[3] is None
    levels = [int(f.image.mean()) for f in frames[:3] if f is not None]
    assert levels == [pytest.approx(v, abs=12) for v in (20, 120, 220)]
    assert all(f is not None and f.image.shape == (48, 64) for f in frames[:3])


def test_videos_in_a_followed_folder_play_between_images(tmp_path: Path) -> None:
    t = FakeTime()
    grey_file(tmp_path / "1.png", 10)
    write_video(tmp_path / "2.avi", [100, 100])
    grey_file(tmp_path / "3.png", 250)
    (tmp_path / "4.mp4").write_bytes(b"not a video")
    with replay(tmp_path, t) as source:
        got = values(source, 5)
    assert got[0] == 10 and got[3] == 250 and got[4] is None
    assert got[1] == pytest.approx(100, abs=12) and got[2] == pytest.approx(100, abs=12)
    assert source.skipped_files == 1


def test_a_qr_in_a_colour_jpeg_reads_after_grey_conversion(tmp_path: Path) -> None:
    code = np.asarray(
        zxingcpp.create_barcode("01ABCDEFGH12345678", zxingcpp.BarcodeFormat.QRCode).to_image(
            scale=5
        )
    )
    rgb = np.stack([code, (code * 0.6).astype(np.uint8), np.full_like(code, 200)], axis=-1)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb, "RGB").save(path, quality=90)
    with replay(path, FakeTime()) as source:
        assert decoded(source.read(1)) == "01ABCDEFGH12345678"


def test_grey_conversion_of_other_image_modes(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 0x8000, np.uint16)).save(tmp_path / "deep.png")
    assert load_grey_image(tmp_path / "deep.png").tolist() == [[0x80] * 5] * 4
    Image.new("RGBA", (3, 2), (255, 255, 255, 0)).save(tmp_path / "alpha.png")
    assert load_grey_image(tmp_path / "alpha.png").shape == (2, 3)
    Image.new("P", (3, 2), 0).save(tmp_path / "palette.gif")
    assert load_grey_image(tmp_path / "palette.gif").dtype == np.uint8


def test_close_cuts_a_waiting_read_short(tmp_path: Path) -> None:
    source = ReplaySource(CameraConfig(source="replay", path=str(tmp_path), fps=10))
    source.open()
    done = threading.Event()

    def read() -> None:
        source.read(60)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.05)
    source.close()
    assert done.wait(20)


def test_open_source_builds_the_configured_source(tmp_path: Path) -> None:
    from ordoscan.camera import Picamera2Source, V4L2Source

    assert isinstance(open_source(CameraConfig(source="picamera2")), Picamera2Source)
    assert isinstance(open_source(CameraConfig(source="v4l2")), V4L2Source)
    source = open_source(CameraConfig(source="replay", path=str(tmp_path)))
    assert isinstance(source, ReplaySource) and source.live is False
    assert source.name == f"replay {tmp_path}"


def test_through_the_reader_a_finished_replay_keeps_the_daemon_idle_not_faulty(
    tmp_path: Path,
) -> None:
    grey_file(tmp_path / "a.png", 9)
    states: list[tuple[bool, str]] = []
    source = ReplaySource(CameraConfig(source="replay", path=str(tmp_path), fps=50))
    with LatestFrameReader(
        source, stall_timeout_s=0.05, on_state=lambda ok, m: states.append((ok, m))
    ) as reader:
        frame = reader.get(20)
        assert frame is not None and int(frame.image[0, 0]) == 9
        frame = reader.get(0.3)  # well past stall_timeout_s: an ended replay is not a stall
        assert frame is None
        write_atomically(tmp_path, "b.png", 11)
        frame = reader.get(20)
        assert frame is not None and int(frame.image[0, 0]) == 11
    assert all(ok for ok, _ in states)


# -- a followed folder (loop = false): each file once, by identity, across restarts


def test_a_restart_plays_only_what_was_not_played(tmp_path: Path) -> None:
    grey_file(tmp_path / "a.png", 1)
    grey_file(tmp_path / "b.png", 2)
    with replay(tmp_path, FakeTime()) as source:
        assert values(source, 3) == [1, 2, None]
    assert (tmp_path / ".ordoscan-played.json").is_file()
    grey_file(tmp_path / "0-dropped-while-down.png", 3)
    with replay(tmp_path, FakeTime()) as source:  # the daemon restarted
        assert values(source, 2) == [3, None]


def test_new_content_or_a_new_name_plays_again_the_same_file_does_not(tmp_path: Path) -> None:
    grey_file(tmp_path / "a.png", 1)
    with replay(tmp_path, FakeTime()) as source:
        assert values(source, 2) == [1, None]
        os.utime(tmp_path / "a.png")  # touched: new content for all the folder knows
        assert values(source, 2) == [1, None]
        os.link(tmp_path / "a.png", tmp_path / "b.png")  # one file per frame, as the rig does
        assert values(source, 2) == [1, None]
        grey_file(tmp_path / "a.png", 9, size=(10, 6))  # rewritten in place (b.png is a link)
        assert values(source, 3) == [9, 9, None]
        assert values(source, 1) == [None]  # nothing played twice


def test_the_record_forgets_files_that_left_the_folder(tmp_path: Path) -> None:
    import json

    for i in range(3):
        grey_file(tmp_path / f"{i}.png", i + 1)
    with replay(tmp_path, FakeTime()) as source:
        assert values(source, 3) == [1, 2, 3]
        (tmp_path / "0.png").unlink()
        (tmp_path / "1.png").unlink()
        grey_file(tmp_path / "3.png", 4)
        assert values(source, 2) == [4, None]
    record = json.loads((tmp_path / ".ordoscan-played.json").read_text())
    assert len(record["played"]) == 2  # 2.png and 3.png


def test_a_damaged_record_plays_everything_again_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    grey_file(tmp_path / "a.png", 1)
    (tmp_path / ".ordoscan-played.json").write_text("{half")
    with caplog.at_level(logging.WARNING, "ordoscan.camera"), replay(tmp_path, FakeTime()) as src:
        assert values(src, 2) == [1, None]
    assert "unreadable" in caplog.text and "played again" in caplog.text


def test_a_folder_that_cannot_take_the_record_still_plays_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".ordoscan-played.json.tmp").mkdir()  # the record cannot be written, even as root
    grey_file(tmp_path / "a.png", 1)
    grey_file(tmp_path / "b.png", 2)
    with caplog.at_level(logging.WARNING, "ordoscan.camera"), replay(tmp_path, FakeTime()) as src:
        assert values(src, 3) == [1, 2, None]
    assert caplog.text.count("cannot write") == 1
    assert "a restart plays every file again" in caplog.text
    with replay(tmp_path, FakeTime()) as source:
        assert values(source, 1) == [1]


def test_a_self_test_uses_up_no_file(tmp_path: Path) -> None:
    grey_file(tmp_path / "a.png", 1)
    config = CameraConfig(source="replay", path=str(tmp_path), fps=10)
    with open_source(config, remember_played=False) as checked:
        assert checked.read(1) is not None
    with replay(tmp_path, FakeTime()) as source:
        assert values(source, 1) == [1]


def test_loop_plays_every_file_again_and_keeps_no_record(tmp_path: Path) -> None:
    grey_file(tmp_path / "a.png", 1)
    with replay(tmp_path, FakeTime(), loop=True) as source:
        assert values(source, 3) == [1, 1, 1]
    assert not (tmp_path / ".ordoscan-played.json").exists()
