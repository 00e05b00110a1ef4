"""Image bytes: the PNGs the fake makes, and the checks and token counts of images it receives.

Pillow (the test extra) is imported lazily to read image sizes; without it images are
checked by signature only and counted as 85 tokens.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass

from ...pricing import image_tokens
from .protocol import ApiError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the API's per-image limit
_IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")  # what vision inputs may be (Pillow's names)
_FALLBACK_IMAGE_TOKENS = 85  # an image whose size or model has no formula
_SIGNATURES = (_PNG_SIGNATURE, b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


# --------------------------------------------------------------------------- made


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def fake_png(width: int, height: int, seed: bytes | str, *, alpha: bool = False) -> bytes:
    """Encode a striped/banded PNG whose colours are derived from ``seed``.

    Rows are built with bytes multiplication (no per-pixel loop): a
    1024x1024 image takes a few milliseconds.
    """
    if width < 1 or height < 1:
        raise ValueError("width and height must be positive")
    digest = hashlib.sha512(seed.encode() if isinstance(seed, str) else seed).digest()
    channels = 4 if alpha else 3
    band = -(-width // 8)

    def scanline(offset: int, opacity: bytes) -> bytes:
        colours = [digest[offset + 3 * i : offset + 3 * i + 3] + opacity for i in range(8)]
        return b"\x00" + b"".join(c * band for c in colours)[: width * channels]

    rows = (scanline(0, b"\xff" if alpha else b""), scanline(24, b"\x80" if alpha else b""))
    stripe = -(-height // 16)
    raw = b"".join(rows[i % 2] * stripe for i in range(16))[: height * len(rows[0])]
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 1))
        + _png_chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------- received


def image_digest(data: bytes) -> str:
    """How answers name an input image: the first 12 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:12]


@dataclass(frozen=True)
class ImageInfo:
    digest: str
    size: tuple[int, int] | None  # None when Pillow is not installed


def _unsupported_image() -> ApiError:
    return ApiError(
        400,
        "You uploaded an unsupported image. Please make sure your image is below 20 MB in size "
        "and is of one the following formats: ['png', 'jpeg', 'gif', 'webp'].",
        code="invalid_image_format",
    )


def read_image(data: bytes) -> ImageInfo:
    """Check that ``data`` is a PNG, JPEG, GIF or WebP image of at most 20 MB; read its size."""
    if not data or len(data) > MAX_IMAGE_BYTES:
        raise _unsupported_image()
    try:
        from PIL import Image  # the test extra; imported here so the module needs nothing
    except ImportError:
        webp = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
        if not (webp or data.startswith(_SIGNATURES)):
            raise _unsupported_image() from None
        return ImageInfo(image_digest(data), None)
    try:
        with Image.open(io.BytesIO(data)) as image:
            size, kind = image.size, image.format
            image.verify()
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for bad input
        raise _unsupported_image() from None
    if kind not in _IMAGE_FORMATS:
        raise _unsupported_image()
    return ImageInfo(image_digest(data), size)


def image_input_tokens(image: ImageInfo, detail: str, model: str) -> int:
    """An image's input tokens by the pricing formulas; 85 without a size or a formula."""
    if image.size is None:
        return _FALLBACK_IMAGE_TOKENS
    detail = "high" if detail == "original" else detail  # no formula for "original"
    counted = image_tokens(*image.size, detail=detail, model=model)
    return _FALLBACK_IMAGE_TOKENS if counted is None else counted
