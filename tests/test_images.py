"""The one image loader of `ordoscan decode` and the replay camera: what it refuses, and how."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from ordoscan.camera import LatestFrameReader, ReplaySource
from ordoscan.config import CameraConfig
from ordoscan.errors import CameraOpenError, DecodeError
from ordoscan.images import MAX_PIXELS, load_image
from PIL import Image

from tests.support.wait import wait_until

EPU = "01S2TBPZ2JCNZZYGHZ"


def qr_png(path: Path) -> Path:
    code = zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode).to_image(scale=4)
    Image.fromarray(np.asarray(code)).save(path)
    return path


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 megapixels, past Pillow's warning threshold (89 MP), a few kilobytes on disk."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (10_000, 10_000), 1).save(path)
    return path


def in_thread(action: Any, timeout: float = 30) -> Any:
    """Run action on a thread: a call that blocks for ever fails the test instead of hanging."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = action()
        except BaseException as e:
            out["error"] = e

    threading.Thread(target=run, daemon=True).start()
    wait_until(lambda: out, timeout, "the call to return")
    return out


def test_a_fifo_is_refused_at_once_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    out = in_thread(lambda: load_image(fifo))
    assert isinstance(out.get("error"), DecodeError)
    assert str(out["error"]) == f"{fifo}: is a FIFO (named pipe), not an image file"


def test_decode_of_a_fifo_goes_on_with_the_next_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    good = qr_png(tmp_path / "good.png")
    run = subprocess.run(
        [sys.executable, "-m", "ordoscan", "decode", str(fifo), str(good)],
        capture_output=True, text=True, timeout=120,
        env=os.environ | {"ORDOSCAN_CONFIG": "", "HOME": str(tmp_path)},
    )
    assert run.returncode == 1
    assert f"{fifo}: is a FIFO" in run.stderr
    assert f"{good}: ordonnance_numerique" in run.stdout


def test_an_image_over_the_limit_is_refused_from_its_header_with_size_and_limit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wide.png"
    Image.new("1", (7_100, 7_100), 1).save(path)  # 50.4 MP: 6 MB as bits, 50 MB as grey
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as e:
            load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value) == (
        f"{path}: image too large: 7100x7100 is over the limit of {MAX_PIXELS:,} pixels "
        "(50 megapixels); scale it down"
    )
    assert peak < 5_000_000  # the pixels were never decoded


def test_the_limit_can_be_stated_per_call(tmp_path: Path) -> None:
    path = qr_png(tmp_path / "code.png")
    width, height = Image.open(path).size
    with pytest.raises(DecodeError, match=rf"{width}x{height} is over the limit of 100 pixels"):
        load_image(path, max_pixels=100)
    assert load_image(path).shape == (height, width)


def test_pillow_warnings_never_escape_raw(huge_png: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DecodeError, match="10000x10000 is over the limit"):
            load_image(huge_png)
    assert caught == []


def test_the_replay_camera_refuses_what_decode_refuses(
    tmp_path: Path, huge_png: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(CameraOpenError, match="10000x10000 is over the limit"):
        ReplaySource(CameraConfig(source="replay", path=str(huge_png))).open()
    folder = tmp_path / "scenes"
    folder.mkdir()
    os.link(huge_png, folder / "a-huge.png")
    qr_png(folder / "b-code.png")
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level(logging.DEBUG, "ordoscan"),
        ReplaySource(CameraConfig(source="replay", path=str(folder), fps=50)) as source,
    ):
        warnings.simplefilter("always")
        frame = source.read(5)
        assert frame is not None and frame.image.shape == load_image(folder / "b-code.png").shape
    assert caught == []
    assert "skipped" in caplog.text and "over the limit" in caplog.text
    assert "DecompressionBomb" not in caplog.text


def test_a_fifo_as_replay_path_is_a_clear_camera_fault(tmp_path: Path) -> None:
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    states: list[tuple[bool, str]] = []
    source = ReplaySource(CameraConfig(source="replay", path=str(fifo)))
    reader = LatestFrameReader(
        source, stall_timeout_s=3, on_state=lambda ok, m: states.append((ok, m)),
        backoff_first_s=0.01, backoff_cap_s=0.01,
    )
    out = in_thread(reader.start)
    assert "error" not in out
    try:
        wait_until(lambda: states, 30, "the camera state")
        assert states[0] == (False, f"replay path {fifo}: is a FIFO (named pipe); camera.path "
                             "must name an image, a video or a folder")
    finally:
        reader.stop()


def test_a_file_name_cannot_forge_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    forged = "x.png\n2026-12-02 ordoscan INFO scan …YGHZ seq 8 delivered"
    (folder / forged).write_text("not an image")
    qr_png(folder / "z.png")
    with (
        caplog.at_level(logging.INFO, "ordoscan"),
        ReplaySource(CameraConfig(source="replay", path=str(folder), fps=50)) as source,
    ):
        assert source.read(5) is not None
    lines = [r.getMessage() for r in caplog.records]
    assert any("skipped" in m and "x.png\\n2026" in m for m in lines), lines
    assert not any("\n" in m for m in lines)
    single = ReplaySource(CameraConfig(source="replay", path=str(folder / forged)))
    assert "\n" not in single.name
    with pytest.raises(CameraOpenError) as e:
        single.open()
    assert "\n" not in str(e.value)
