"""How much memory decoding images may take: per image, and in the whole process at once.

A small file can name a large image (a 372 KB PNG of 7000 x 7000 16-bit RGBA pixels), so what
a decode costs is read from its header, before any pixel is decoded (:func:`decode_cost`), and
refused over the image's limit (``VisionOptions.max_decode_bytes``). Decodes that pass share
one process-wide :class:`ByteBudget` (``IMGCACHE_DECODE_BUDGET``, default
:data:`DEFAULT_BUDGET`): a decode waits for room, up to :data:`WAIT_SECONDS`, so many requests
at once cannot add their peaks up.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..._config import parse_bytes
from ..._files import NotAFile, open_file
from ...errors import ImageError

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_BUDGET = 512 << 20
WAIT_SECONDS = 30.0


def decode_cost(img: Image) -> int:
    """Bytes decoding ``img`` (opened, not loaded; after any ``draft``) to gray holds at once:
    the larger of its pixels at the file's own sample depth (16-bit RGBA: 8 bytes a pixel) and
    what Pillow decodes them into (4 bytes a pixel for every mode of several bands) plus the
    working copies made from that: the gray image; with alpha also the alpha band, a background
    and the composite; a palette or colour-keyed image is first made RGBA. Within 5% of the peak
    measured on 49-megapixel PNGs."""
    width, height = img.size
    mode = img.mode
    bands = len(img.getbands())
    sample = 4 if mode in ("I", "F") else 2 if mode.startswith("I;16") else 1
    sixteen = any(";16" in str(getattr(tile, "args", "")) for tile in getattr(img, "tile", None) or ())
    in_file = bands * max(sample, 2 if sixteen else 1)
    decoded = 4 if bands > 1 else sample
    if mode in ("P", "PA") or "transparency" in img.info:
        working = 4 + 4
    elif mode in ("LA", "La", "RGBA", "RGBa"):
        working = 4
    else:
        working = 2 if sample > 1 else 1
    return width * height * max(in_file, decoded + working)


class ByteBudget:
    """A counting semaphore of bytes: ``with budget.reserve(n): ...`` waits until ``n`` fits."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, size: int, timeout: float = WAIT_SECONDS) -> Iterator[None]:
        size = min(size, self.capacity)  # a single decode over the whole budget runs alone
        deadline = time.monotonic() + timeout
        with self._room:
            while self.in_use + size > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ImageError(f"no room to decode the image within {timeout:g} s "
                                     f"({self.in_use:,} of {self.capacity:,} decoding bytes in use)")
                self._room.wait(left)
            self.in_use += size
        try:
            yield
        finally:
            with self._room:
                self.in_use -= size
                self._room.notify_all()


def _capacity() -> int:
    text = os.environ.get("IMGCACHE_DECODE_BUDGET")
    return parse_bytes(text, "IMGCACHE_DECODE_BUDGET") if text else DEFAULT_BUDGET


DECODES = ByteBudget(_capacity())
"""The process's decode budget."""


@contextmanager
def decoding(img: Image, limit: int) -> Iterator[None]:
    """Room to decode ``img``: ImageError if its cost is over ``limit``, else a reservation."""
    cost = decode_cost(img)
    if cost > limit:
        width, height = img.size
        raise ImageError(f"decoding the {width}x{height} {img.mode} image would take {cost:,} bytes, "
                         f"over max_decode_bytes={limit:,} (a decompression bomb?)")
    with DECODES.reserve(cost):
        yield


def read_image_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` + 1 of them; ImageError otherwise.
    Opened without blocking, so a FIFO or a device (``/dev/zero``, a pipe nobody writes to)
    is refused instead of hanging the caller or filling its memory."""
    try:
        fd = open_file(path, os.O_RDONLY, follow_symlinks=True)
    except NotAFile:
        raise ImageError(f"image file {os.fspath(path)!r} is not a regular file") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read image file {os.fspath(path)!r}: {exc}") from exc
    with open(fd, "rb") as fh:
        try:
            return fh.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(f"cannot read image file {os.fspath(path)!r}: {exc}") from exc
