"""Image files as grey frames: the one loader of `ordoscan decode` and the replay camera.

A file from outside is checked before a pixel is decoded: it must be a regular
file (a FIFO or a device would block or never end; it is opened non-blocking
and checked on the open descriptor, so nothing can be swapped in between), and
its size, read from the header, must stay within `MAX_PIXELS`. Pillow's own
warnings never reach the terminal or the log raw: they are caught here and
logged, made printable, at debug level.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import warnings
from os import PathLike
from typing import IO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from ordoscan import privacy
from ordoscan.errors import DecodeError

log = logging.getLogger("ordoscan.images")

Grey = npt.NDArray[np.uint8]

# 50 megapixels: a 48 MP phone photo still loads; its grey frame is 50 MB and the RGB
# decode on the way 150 MB, which a 1 GB Pi can afford once (a 9,400 x 9,400 PNG took 1 GB).
MAX_PIXELS = 50_000_000

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO (named pipe)")."""
    return next((words for test, words in _FILE_KINDS if test(mode)), "not a regular file")


def load_image(path: str | PathLike[str], *, max_pixels: int = MAX_PIXELS) -> Grey:
    """Read an image file (PNG, JPEG, GIF, BMP, TIFF, WebP…) as a grey uint8 array.

    Palette, alpha (shown over white), 16-bit and float images are converted;
    a JPEG's EXIF orientation is applied. Raises DecodeError naming the file
    (made printable) if it is missing, not a regular file, over `max_pixels`,
    unreadable or not an image.
    """
    name = privacy.printable(os.fspath(path), limit=300)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once
    except FileNotFoundError:
        raise DecodeError(f"{name}: no such file") from None
    except PermissionError:
        raise DecodeError(f"{name}: permission denied") from None
    except OSError as e:
        raise DecodeError(f"{name}: cannot be opened ({e.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode  # the file opened, not whatever the name points to now
        if not stat.S_ISREG(mode):
            raise DecodeError(f"{name}: is {file_kind(mode)}, not an image file")
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        return _decode(file, name, max_pixels)


def _decode(file: IO[bytes], name: str, max_pixels: int) -> Grey:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(file) as img:
                width, height = img.size  # from the header: no pixel decoded yet
                if width * height > max_pixels:
                    raise DecodeError(_too_large(name, f"{width}x{height}", max_pixels))
                if img.format == "JPEG":
                    img.draft("L", img.size)  # let libjpeg decode the luma only
                img.seek(0)  # animated GIF/WebP: the first frame
                img.load()
                grey = _to_grey(ImageOps.exif_transpose(img) or img)
        except UnidentifiedImageError:
            raise DecodeError(f"{name}: not an image (unknown or unsupported format)") from None
        except Image.DecompressionBombError as e:  # past Pillow's own hard limit
            found = re.search(r"\((\d+) pixels\)", str(e))
            size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "its size"
            raise DecodeError(_too_large(name, size, min(max_pixels, _pillow_limit()))) from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or damaged data
            raise DecodeError(f"{name}: unreadable image ({privacy.printable(e)})") from None
        finally:
            for w in caught:
                if not issubclass(w.category, Image.DecompressionBombWarning):
                    log.debug("%s: %s", name, privacy.printable(w.message))
    if grey.ndim != 2 or grey.size == 0:
        raise DecodeError(f"{name}: decoded to an unusable {grey.shape} array")
    return grey


def _pillow_limit() -> int:
    limit = Image.MAX_IMAGE_PIXELS
    return 2 * int(limit) if limit else MAX_PIXELS


def _too_large(name: str, size: str, limit: int) -> str:
    return (
        f"{name}: image too large: {size} is over the limit of {limit:,} pixels "
        f"({limit / 1e6:g} megapixels); scale it down"
    )


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
