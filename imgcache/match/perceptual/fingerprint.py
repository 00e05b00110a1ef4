"""Perceptual fingerprints: what the verifier needs to know of an image, made once per image.

Any image input is untrusted: it is decoded within bounds (its size read from the header, its
decode memory budgeted, see :mod:`~imgcache.match.perceptual.decoding`) and reduced to a small
grayscale thumbnail with two 64-bit hashes, which find and compare photos; an image holding
text also keeps a detail image (:mod:`~imgcache.match.perceptual.detail`), since a thumbnail
cannot show a changed digit, and any other a plain one (the whole picture, smaller), for a
copy of it in which text is found. Sizes, figures and limits: README.md, "Vision: fingerprints and
the verifier".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._vocabulary import HEX_ID
from ...errors import ImageError
from .decoding import decoding, read_image_file
from .detail import DOC_THUMB, _analyse, _pack_detail, _pack_plain, _Scan, _unpack_detail

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["DOC_THUMB", "FORMATS", "THUMB", "Fingerprint", "fingerprint"]

THUMB = 128
"""Side of the grayscale thumbnail every fingerprint keeps (THUMB * THUMB = 16 KiB); the hashes
and the photo comparison come from it."""

FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
"""Formats :func:`fingerprint` opens (those of them this Pillow build can read)."""

_VERSION = 2
_BACKGROUND = 255  # transparency is composited on white


@dataclass(frozen=True)
class Fingerprint:
    """What :func:`~imgcache.match.perceptual.verifier.same_picture` needs to know of an image:
    the 16 KiB thumbnail and a detail image (about 20-50 KiB plain, up to a few hundred KiB for
    a textured photo with text-like detail). Figures: README.md, "Vision"."""

    sha256: str
    """Hex digest of the input bytes (of mode, size and pixels for a PIL image)."""
    phash: int
    """64-bit perceptual hash (imagehash.phash) of the canonical thumbnail."""
    dhash: int
    """64-bit difference hash of the canonical thumbnail, a second opinion."""
    width: int
    """Width after EXIF orientation, in pixels of the full image."""
    height: int
    thumb: bytes
    """THUMB x THUMB 8-bit grayscale pixels, row by row."""
    detail: bytes = b""
    """For an image holding text-like detail, its detail image (at most DOC_THUMB a side,
    grayscale, the tiles around text PNG-compressed) with its tile flags and line height, in a
    checked binary layout (see :func:`~imgcache.match.perceptual.detail._pack_detail`); for
    other images the plain detail image (see ``_pack_plain``); empty in fingerprints written
    before plain detail images."""

    def to_bytes(self) -> bytes:
        """A compact, self-describing encoding (a JSON header line, then the thumbnail and the
        detail), for storing a fingerprint as a content-addressed blob; never pickled."""
        body = self.thumb + self.detail
        header = {"v": _VERSION, "sha256": self.sha256, "phash": f"{self.phash:016x}",
                  "dhash": f"{self.dhash:016x}", "width": self.width, "height": self.height,
                  "thumb": len(self.thumb), "detail": len(self.detail), "crc32": zlib.crc32(body)}
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        """The inverse of :meth:`to_bytes`; ValueError for anything else (another version, a
        damaged body, a thumbnail or detail image of the wrong shape)."""
        head, sep, body = bytes(data).partition(b"\n")
        if not sep:
            raise ValueError("not an encoded fingerprint: no header line")
        try:
            h = json.loads(head)
            if not isinstance(h, dict) or h.get("v") != _VERSION:
                raise ValueError(f"version {h.get('v') if isinstance(h, dict) else None!r} is not {_VERSION}")
            n_thumb, n_detail, crc = h["thumb"], h["detail"], h["crc32"]
            if not all(isinstance(n, int) and n >= 0 for n in (n_thumb, n_detail, crc)):
                raise ValueError("bad lengths")
            if n_thumb + n_detail != len(body) or zlib.crc32(body) != crc:
                raise ValueError("body does not match its header (truncated or damaged)")
            fp = cls(sha256=h["sha256"], phash=int(h["phash"], 16), dhash=int(h["dhash"], 16),
                     width=h["width"], height=h["height"], thumb=body[:n_thumb], detail=body[n_thumb:])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an encoded fingerprint: {exc!r}") from exc
        if (not HEX_ID.fullmatch(str(fp.sha256)) or fp.phash >> 64 or fp.dhash >> 64 or fp.phash < 0
                or fp.dhash < 0 or not all(isinstance(n, int) and n > 0 for n in (fp.width, fp.height))):
            raise ValueError("not an encoded fingerprint: bad field")
        if len(fp.thumb) != THUMB * THUMB:
            raise ValueError(f"not an encoded fingerprint: a thumbnail of {len(fp.thumb)} bytes")
        if fp.detail:
            _unpack_detail(fp.detail)  # ValueError unless a well-formed detail image
        return fp


# -- decoding ----------------------------------------------------------------------------------


def _read_input(data: Any, max_bytes: int) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif isinstance(data, (str, os.PathLike)):
        raw = read_image_file(data, max_bytes)
    else:
        raise ImageError(f"not an image input: {type(data).__name__} (bytes, path or PIL image)")
    if len(raw) > max_bytes:
        raise ImageError(f"image input is larger than max_bytes={max_bytes:,}")
    if not raw:
        raise ImageError("empty image input")
    return raw


def _open(raw: bytes) -> PILImage.Image:
    from PIL import Image

    Image.init()
    formats = [f for f in FORMATS if f in Image.OPEN]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(raw), formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb: {exc}") from exc
    except Exception as exc:  # UnidentifiedImageError, SyntaxError, struct.error, ...
        raise ImageError(f"not a readable image ({', '.join(formats)}): {exc}") from exc


def _check_size(img: PILImage.Image, max_pixels: int) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} pixels is over max_pixels={max_pixels:,} "
                         "(a decompression bomb?)")


_ORIENT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
           6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # as ImageOps.exif_transpose


def _orientation(img: PILImage.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as exif_transpose does
        return 1
    return value if value in _ORIENT else 1


def _to_gray(img: PILImage.Image) -> PILImage.Image:
    """The image in mode L: alpha composited on white, 16-bit and float samples rescaled."""
    from PIL import Image

    mode = img.mode
    if mode == "L":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):  # 16-bit, 32-bit and float gray
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr8 = (arr >> 8).astype(np.uint8)  # integer ops: no float copy of a large image
        elif mode == "I" and arr.size and arr.max() > 255:
            arr8 = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        else:
            scale = 255.0 if mode == "F" and arr.size and arr.max() <= 1.0 else 1.0
            arr8 = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L")
    if mode in ("P", "PA") or ("transparency" in img.info and mode not in ("LA", "La", "RGBA", "RGBa")):
        img = img.convert("RGBA")  # the palette's or the colour key's alpha, resolved
        mode = "RGBA"
    if mode in ("La", "RGBa"):  # premultiplied alpha
        img = img.convert("LA" if mode == "La" else "RGBA")
        mode = img.mode
    if mode in ("LA", "RGBA"):
        # Composited in gray, which is linear in RGB: what compositing in RGB then converting
        # gives (within rounding), at 3 bytes a pixel of working memory instead of 12.
        gray, alpha = img.convert("L"), img.getchannel("A")
        return Image.composite(gray, Image.new("L", img.size, _BACKGROUND), alpha)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    return img.convert("L")


def _draft_scale(size: tuple[int, int], side: int) -> int:
    """The largest of 1, 2, 4 or 8 that leaves the longest side of ``size`` at least ``side``."""
    scale = 1
    while scale < 8 and max(size) // (2 * scale) >= side:
        scale *= 2
    return scale


def _draft(img: PILImage.Image, side: int | None) -> None:
    """Have a JPEG decode at the smallest 1/2, 1/4 or 1/8 scale whose longest side still
    reaches ``side``, and only its luma (``draft``; other formats decode whole)."""
    if side and img.format in ("JPEG", "MPO"):
        width, height = img.size
        scale = _draft_scale(img.size, side)
        if scale > 1 or img.mode in ("RGB", "YCbCr"):
            img.draft("L" if img.mode in ("L", "RGB", "YCbCr") else None,
                      (-(-width // scale), -(-height // scale)))


@contextmanager
def _gray(img: PILImage.Image, draft_side: int | None, max_decode_bytes: int) -> Iterator[PILImage.Image]:
    """The first frame in mode L (see :func:`_draft`), decoded within the decode budget, which
    it holds until the block ends (the full-size gray image lives that long)."""
    _draft(img, draft_side)
    with decoding(img, max_decode_bytes):
        img.load()
        yield _to_gray(img)


def _fit(gray: PILImage.Image, side: int) -> PILImage.Image:
    """``gray`` brought within ``side`` pixels a side (Lanczos: a windowed sinc over 3 source
    pixels per output pixel, which leaves little to alias and keeps strokes sharp)."""
    from PIL import Image

    width, height = gray.size
    if max(width, height) <= side:
        return gray
    scale = side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return gray.resize(size, Image.Resampling.LANCZOS)


# -- the fingerprint -------------------------------------------------------------------------


def fingerprint(
    data: bytes | str | os.PathLike[str] | PILImage.Image,
    *,
    max_pixels: int = 50_000_000,
    max_bytes: int = 64 << 20,
    max_decode_bytes: int = 256 << 20,
) -> Fingerprint:
    """The :class:`Fingerprint` of an image (bytes, a path, or a PIL image).

    Raises :class:`~imgcache.errors.ImageError` for bytes that are not an image of
    :data:`FORMATS`, truncated or corrupt files, inputs over ``max_bytes``, and images over
    ``max_pixels`` or whose decoding would take over ``max_decode_bytes`` (both checked from
    the header, before decoding; see :mod:`~imgcache.match.perceptual.decoding`). An animated image is
    fingerprinted by its first frame. A PIL image is read, never modified.
    """
    import imagehash
    from PIL import Image

    raw: bytes | None = None
    if isinstance(data, Image.Image):
        img = data
        _check_size(img, max_pixels)
        digest = hashlib.sha256(f"{img.mode}:{img.size}:".encode())
        try:
            digest.update(img.tobytes())
        except Exception as exc:
            raise ImageError(f"cannot read PIL image: {exc}") from exc
        sha = digest.hexdigest()
    else:
        raw = _read_input(data, max_bytes)
        sha = hashlib.sha256(raw).hexdigest()
        img = _open(raw)
        _check_size(img, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(img, "is_animated", False):
                img.seek(0)
            width, height = img.size
            # A JPEG is first decoded at about half the detail size (draft: fast), any other
            # image reduced as a draft would have it (2 x 2 means), so that one picture gives
            # one detail image whatever its format. Text found there is looked at again at the
            # full detail size (a JPEG decoded again).
            with _gray(img, DOC_THUMB // 2 if raw is not None else None, max_decode_bytes) as gray:
                orientation = _orientation(img)  # after decoding: a PNG's EXIF may follow its pixels
                method = getattr(Image.Transpose, _ORIENT[orientation]) if orientation != 1 else None
                factor = _draft_scale(gray.size, DOC_THUMB // 2)
                reduced = gray.reduce(factor) if factor > 1 else gray
                thumb = reduced.resize((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=2.0)
                arr, scan = _scanned(reduced, method, max(width, height))
                if scan.strong and factor > 1:
                    arr, scan = _scanned(gray, method, max(width, height))
                drafted = max(gray.size) < min(DOC_THUMB, max(width, height))
            if scan.strong and drafted and raw is not None:
                with _gray(_open(raw), DOC_THUMB, max_decode_bytes) as gray:
                    arr, scan = _scanned(gray, method, max(width, height))
            if method is not None:
                thumb = thumb.transpose(method)
            scale = max(1.0, max(width, height) / max(arr.shape))
            packed = _pack_detail(arr, scan, scale) if scan.kept else _pack_plain(arr, scale, scan.marks)
            if orientation >= 5:
                width, height = height, width
            phash = imagehash.phash(thumb)
            dhash = imagehash.dhash(thumb)
    except ImageError:
        raise
    except Exception as exc:  # truncated data, broken chunks, unsupported modes, ...
        raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    return Fingerprint(sha256=sha, phash=_hash_int(phash), dhash=_hash_int(dhash),
                       width=width, height=height, thumb=thumb.tobytes(), detail=packed)


def _scanned(gray: PILImage.Image, method: PILImage.Transpose | None, side: int) -> tuple[np.ndarray, _Scan]:
    """``gray`` within DOC_THUMB, turned upright by ``method``, and what its text scan finds
    (``side``: the image's longest side, for the scan's sense of scale)."""
    detail = _fit(gray, DOC_THUMB)
    arr = np.asarray(detail.transpose(method) if method is not None else detail)
    return arr, _analyse(arr, max(1.0, side / max(arr.shape)))


def _hash_int(h: Any) -> int:
    return int("".join("1" if bit else "0" for bit in h.hash.flatten()), 2)
