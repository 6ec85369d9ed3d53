"""Decoder: zxing-cpp on grey frames, QR Code and DataMatrix.

`Decoder.decode(frame)` runs a fast first pass on the frame as it is (a
strided view such as the Y plane of a YUV buffer is read in place, without a
copy). A frame is *hard* when that pass read nothing or saw a symbol it could
not decode; hard frames get extra passes (upscaled, another binarizer) while
the time budget allows. The passes were chosen by measurement on the
synthetic counter scenes (`ordoscan.scenes`) and ZXing's black-box corpus:
each one kept reads codes the others miss, for its time (see
tests/bench/test_bench_decoder.py).

Corrupt input never crashes: an array that is not a 2-D uint8 image raises
DecodeError, an empty one gives no symbols. Payloads are never logged here.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image, ImageOps, UnidentifiedImageError

from ordoscan.errors import DecodeError

Grey = npt.NDArray[np.uint8]

# zxing-cpp's "QRCode" also covers Micro QR and rMQR: only full QR Codes are read.
_QR = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCodeModel1, zxingcpp.BarcodeFormat.QRCodeModel2]
)
_DM = zxingcpp.BarcodeFormats([zxingcpp.BarcodeFormat.DataMatrix])
_MAX_SIDE = 16384  # larger arrays are refused rather than risk zxing-cpp's int sizes
_MIN_SIDE = 8  # nothing decodable fits in fewer pixels
_MAX_PASS_PIXELS = 16_000_000  # an upscaled pass larger than this is skipped (memory, time)


@dataclass(frozen=True, slots=True)
class Symbol:
    """One decoded symbol, before classification."""

    format: str  # "QRCode", "DataMatrix", ... (zxing-cpp format name)
    symbology_id: str  # ISO/IEC 15424 identifier, e.g. "]Q1", "]d2"
    text: str  # decoded text (GS1: with the GS separators)
    raw: bytes  # the symbol's bytes
    position: tuple[tuple[int, int], ...]  # corners, clockwise from top-left


@dataclass(frozen=True, slots=True)
class DecodeStats:
    """Decoder counters for telemetry; times in milliseconds."""

    frames: int  # frames decoded
    last_ms: float  # time of the last frame
    mean_ms: float  # mean time per frame
    max_ms: float  # slowest frame
    hard_frames: int  # frames that got extra passes
    budget_stops: int  # hard frames whose extra passes were cut by the budget
    extra_symbols: int  # symbols found only by an extra pass


@dataclass(frozen=True, slots=True)
class _Pass:
    """One zxing-cpp call on a prepared version of the frame."""

    name: str
    formats: zxingcpp.BarcodeFormats
    scale: float = 1.0  # resize factor applied to the frame first
    invert: bool = True  # also try light-on-dark symbols (phones in dark mode)
    downscale: bool = True  # let zxing-cpp also try smaller versions
    binarizer: zxingcpp.Binarizer = zxingcpp.Binarizer.LocalAverage


# The fast pass: QR Codes first (cheap, and the prescription's symbology), then
# DataMatrix without the inverted try (printed packs and documents are dark on
# light, and the inverted try doubles the DataMatrix cost).
FAST_PASSES: tuple[_Pass, ...] = (
    _Pass("qr", _QR),
    _Pass("datamatrix", _DM, invert=False),
)
# Extra passes on hard frames, most useful first (measured, see the module doc):
# small and blurred codes read once upscaled (x1.5 reads most of them, x2.5 a
# few more); global-histogram binarizing saves photos of codes with large even
# areas (ZXing's corpus); DataMatrix gets the same upscaling. Tried and dropped
# for earning nothing on top of these: x2, x0.75, sharpening, smoothing,
# histogram equalisation, contrast stretching, inverted DataMatrix.
EXTRA_PASSES: tuple[_Pass, ...] = (
    _Pass("qr-x1.5", _QR, scale=1.5, downscale=False),
    _Pass("qr-histogram", _QR, binarizer=zxingcpp.Binarizer.GlobalHistogram),
    _Pass("datamatrix-x1.5", _DM, scale=1.5, invert=False, downscale=False),
    _Pass("qr-x2.5", _QR, scale=2.5, downscale=False),
)


def load_image(path: str | PathLike[str]) -> Grey:
    """Read an image file (PNG, JPEG, GIF, BMP, TIFF, WebP…) as a grey uint8 array.

    Palette, alpha (shown over white), 16-bit and float images are converted;
    a JPEG's EXIF orientation is applied. Raises DecodeError naming the file if
    it is missing, unreadable, too large or not an image.
    """
    name = str(path)
    if Path(name).is_dir():
        raise DecodeError(f"{name}: is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # palette transparency notes
            with Image.open(name) as img:
                img.seek(0)  # animated GIF/WebP: the first frame
                img.load()
                return _to_grey(ImageOps.exif_transpose(img) or img)
    except FileNotFoundError:
        raise DecodeError(f"{name}: no such file") from None
    except PermissionError:
        raise DecodeError(f"{name}: permission denied") from None
    except UnidentifiedImageError:
        raise DecodeError(f"{name}: not an image (unknown or unsupported format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError(f"{name}: image too large to decode safely") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or damaged data
        raise DecodeError(f"{name}: unreadable image ({e})") from None


def _to_grey(img: Image.Image) -> Grey:
    """Any PIL mode as 8-bit luminance."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        return np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _check(image: object) -> Grey | None:
    """The frame as a 2-D uint8 view (no copy); None if empty; DecodeError if corrupt."""
    if not isinstance(image, np.ndarray):
        raise DecodeError(f"frame is a {type(image).__name__}, expected a 2-D numpy uint8 array")
    if image.dtype != np.uint8:
        raise DecodeError(f"frame has dtype {image.dtype}, expected uint8 (grey levels)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise DecodeError(f"frame has shape {image.shape}, expected (height, width) grey pixels")
    h, w = image.shape
    if h > _MAX_SIDE or w > _MAX_SIDE:
        raise DecodeError(f"frame of {w}x{h} pixels is too large (at most {_MAX_SIDE} a side)")
    if h < _MIN_SIDE or w < _MIN_SIDE:
        return None
    return image


class Decoder:
    """zxing-cpp on grey frames: a fast pass, then extra passes on hard frames within a budget."""

    def __init__(
        self, budget_ms: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`budget_ms` bounds the extra passes of one frame; 0 turns them off.

        An extra pass starts only if its expected cost (learnt from the frames
        before) ends within budget_ms of the end of the fast pass, which always
        runs. `clock` is the monotonic clock in seconds (tests give their own).
        decode() is for one thread at a time; stats() may be called from any.
        """
        if not budget_ms >= 0:  # also refuses NaN
            raise DecodeError(f"decode budget_ms = {budget_ms!r}: must be a number >= 0")
        self.budget_ms = float(budget_ms)
        self._clock = clock
        # expected cost of each extra pass, in ms per megapixel of input, learnt as a moving average
        self._cost: dict[str, float] = {}
        self._lock = threading.Lock()
        self._frames = 0
        self._total_ms = 0.0
        self._last_ms = 0.0
        self._max_ms = 0.0
        self._hard = 0
        self._stops = 0
        self._extra = 0

    def decode(self, image: Grey) -> list[Symbol]:
        """The QR Codes and DataMatrix symbols of a grey frame, each once."""
        start = self._clock()
        frame = _check(image)
        if frame is None:
            self._account((self._clock() - start) * 1000.0, False, False, 0)
            return []
        found: dict[tuple[str, bytes], Symbol] = {}
        failed = False
        for p in FAST_PASSES:
            failed |= self._run(p, frame, found)
        hard = failed or not found
        stopped = False
        extra = 0
        if hard:
            fast_end = self._clock()
            mpx = frame.shape[0] * frame.shape[1] / 1e6
            for p in EXTRA_PASSES:
                if frame.size * p.scale * p.scale > _MAX_PASS_PIXELS:
                    continue
                now = self._clock()
                expected = self._cost.get(p.name, 0.0) * mpx * p.scale * p.scale
                if self.budget_ms <= 0 or (now - fast_end) * 1000.0 + expected > self.budget_ms:
                    stopped = True
                    break
                before = len(found)
                self._run(p, frame, found)
                extra += len(found) - before
                spent = (self._clock() - now) * 1000.0 / max(mpx * p.scale * p.scale, 1e-6)
                old = self._cost.get(p.name)
                self._cost[p.name] = spent if old is None else 0.8 * old + 0.2 * spent
        self._account((self._clock() - start) * 1000.0, hard, stopped, extra)
        return list(found.values())

    def _run(self, p: _Pass, frame: Grey, found: dict[tuple[str, bytes], Symbol]) -> bool:
        """Run one pass, add its symbols to `found`; True if it saw a symbol it could not decode."""
        prepared = _prepare(frame, p)
        # TextMode.Plain: GS1 data as its element string with GS (0x1D) separators, as the
        # classifier wants it; the default HRI mode would give "(01)…" and escape controls.
        try:
            results = zxingcpp.read_barcodes(
                prepared,
                formats=p.formats,
                try_rotate=True,
                try_downscale=p.downscale,
                try_invert=p.invert,
                text_mode=zxingcpp.TextMode.Plain,
                binarizer=p.binarizer,
                return_errors=True,
            )
        except (ValueError, TypeError, RuntimeError) as e:  # zxing-cpp refused the buffer
            raise DecodeError(f"frame of shape {frame.shape} could not be decoded: {e}") from None
        failed = False
        sx = frame.shape[1] / prepared.shape[1]
        sy = frame.shape[0] / prepared.shape[0]
        for r in results:
            if not r.valid or r.error is not None:
                failed = True
                continue
            key = (r.symbology.name, r.bytes)
            if key in found:
                continue
            pos = r.position
            corners = (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)
            found[key] = Symbol(
                format=r.symbology.name,
                symbology_id=r.symbology_identifier,
                text=r.text,
                raw=r.bytes,
                position=tuple((round(c.x * sx), round(c.y * sy)) for c in corners),
            )
        return failed

    def _account(self, ms: float, hard: bool, stopped: bool, extra: int) -> None:
        with self._lock:
            self._frames += 1
            self._total_ms += ms
            self._last_ms = ms
            self._max_ms = max(self._max_ms, ms)
            self._hard += hard
            self._stops += stopped
            self._extra += extra

    def stats(self) -> DecodeStats:
        """A snapshot of the counters since the decoder was made."""
        with self._lock:
            mean = self._total_ms / self._frames if self._frames else 0.0
            return DecodeStats(
                self._frames,
                self._last_ms,
                mean,
                self._max_ms,
                self._hard,
                self._stops,
                self._extra,
            )


def _prepare(frame: Grey, p: _Pass) -> Grey:
    """The frame as the pass wants it: the view itself when nothing is to be done."""
    if p.scale == 1.0:
        return frame
    img = Image.fromarray(frame)  # copies a strided view once
    size = (max(1, round(img.width * p.scale)), max(1, round(img.height * p.scale)))
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR))
