"""Frame.zoom: a region of the frame from a sharper picture of the same instant.

picamera2 gives a main stream beside the lores one the kiosk analyses; the
replay camera a `name.hires.png` beside `name.png`. A small code that is 2-3
pixels a module at lores is read from the real pixels of the sharper picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from ordoscan.camera import Picamera2Source, ReplaySource
from ordoscan.camera.base import zoom_box
from ordoscan.config import CameraConfig
from PIL import Image

from tests.support.camera_aids import camera_config, read_frame, tuning_environment
from tests.support.picamera2_double import IMX708, OV9281, CameraSystem

pytestmark = pytest.mark.usefixtures(tuning_environment.__name__)

EPU = "01S2TBPZ2JCNZZYGHZ"
LORES = (1280, 720)
MAIN = (2304, 1296)  # half the imx708's 4608x2592: its fast binned mode


def small_code_scene(size: tuple[int, int], at: tuple[int, int], scale: int) -> np.ndarray:
    """A white counter with one QR code, `scale` pixels a module, its corner at `at`."""
    w, h = size
    scene = np.full((h, w), 235, np.uint8)
    code = np.asarray(
        zxingcpp.create_barcode(EPU, zxingcpp.BarcodeFormat.QRCode).to_image(scale=scale)
    )
    x, y = at
    scene[y : y + code.shape[0], x : x + code.shape[1]] = code
    return scene


def texts(image: np.ndarray) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


def test_zoom_box_maps_outward_and_clips() -> None:
    assert zoom_box((10, 20, 30, 40), (100, 100), (250, 250)) == (25, 50, 75, 100)
    assert zoom_box((1, 1, 3, 3), (10, 10), (15, 15)) == (1, 1, 5, 5)  # covers, never less
    assert zoom_box((-5, -5, 200, 200), (100, 50), (200, 100)) == (0, 0, 200, 100)
    assert zoom_box((30, 10, 30, 40), (100, 100), (200, 200)) is None


def test_picamera2_zoom_reads_the_main_stream_where_lores_is_too_coarse() -> None:
    system = CameraSystem(IMX708)
    cam = system.cameras[0]
    # 4 px a module in main, so about 2.2 px at lores, blurred by the downscale
    hires = small_code_scene(MAIN, (1500, 700), scale=4)
    with Picamera2Source(camera_config(size=LORES), api=system.api()) as source:
        frame = read_frame(source, lambda: cam.emit(hires=hires))
        assert frame.zoom is not None
        x0, y0 = 1500 * LORES[0] // MAIN[0] - 8, 700 * LORES[1] // MAIN[1] - 8
        box = (x0, y0, x0 + 80, y0 + 80)
        region = frame.zoom(*box)
        assert region is not None and region.dtype == np.uint8 and region.flags.owndata
        assert region.shape == (144, 144)  # the same box, 1.8x the pixels a side
        assert texts(region) == [EPU]
        assert zoom_box(box, LORES, MAIN) == (x1 := 1485, y1 := 684, x1 + 144, y1 + 144)
        assert np.array_equal(region, hires[y1 : y1 + 144, x1 : x1 + 144])  # real pixels
        assert frame.zoom(5, 5, 5, 50) is None  # an empty box
        source.release(frame)
        assert frame.zoom(*box) is None  # released: the buffer is the camera's again


def test_zoom_maps_no_buffer_until_asked_and_leaves_no_view(
    caplog: pytest.LogCaptureFixture,
) -> None:
    system = CameraSystem(IMX708)
    cam = system.cameras[0]
    source = Picamera2Source(camera_config(size=LORES), api=system.api())
    source.open()
    frame = read_frame(source, cam.emit)
    assert frame.zoom is not None
    region = frame.zoom(0, 0, 64, 64)
    source.release(frame)
    del frame
    source.close()
    assert region is not None and region.shape == (116, 116)  # the copy outlives the camera
    assert "still in use" not in caplog.text
    assert system.leaked_buffers == 0


def test_a_sensor_no_sharper_than_lores_gives_no_zoom() -> None:
    system = CameraSystem(OV9281)  # 1280x800: nothing sharper than a 1280x720 lores
    with Picamera2Source(camera_config(size=LORES), api=system.api()) as source:
        frame = read_frame(source, system.cameras[0].emit)
        assert frame.zoom is None
        source.release(frame)


def test_replay_zooms_into_a_hires_twin(tmp_path: Path) -> None:
    hires = small_code_scene(MAIN, (1500, 700), scale=4)
    Image.fromarray(hires).save(tmp_path / "counter.hires.png")
    Image.fromarray(hires).resize(LORES, Image.Resampling.BOX).save(tmp_path / "counter.png")
    with ReplaySource(CameraConfig(source="replay", path=str(tmp_path), fps=50)) as source:
        frame = source.read(5)
        assert frame is not None and frame.image.shape == (720, 1280)
        assert frame.zoom is not None
        region = frame.zoom(825, 380, 905, 460)
        assert region is not None and texts(region) == [EPU]
        assert source.read(0.2) is None  # the twin is not a frame of its own


def test_replay_without_a_twin_gives_no_zoom(tmp_path: Path) -> None:
    Image.new("L", (64, 48), 200).save(tmp_path / "plain.png")
    with ReplaySource(CameraConfig(source="replay", path=str(tmp_path / "plain.png"))) as src:
        frame = src.read(5)
        assert frame is not None and frame.zoom is None
