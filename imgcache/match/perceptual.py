"""Perceptual fingerprints of images, and the verifier that says whether two are one picture.

:func:`fingerprint` decodes an image safely and reduces it to a :class:`Fingerprint`:

1. the input (bytes, a path, or a PIL image) is bounded by ``max_bytes`` and digested
   (sha256) for the exact match; only the formats in :data:`FORMATS` are opened;
2. the header's size is checked against ``max_pixels`` *before* any pixel is decoded, so a
   40,000 x 40,000 PNG fails at once (:class:`~imgcache.errors.ImageError`), without
   allocating; anything Pillow raises (not an image, truncated, corrupt) becomes an ImageError;
3. the first frame (an animated GIF or WebP is keyed by its first frame only) is brought to
   ITU-R 601 grayscale (transparency composited on white, 16-bit samples scaled to 8 bits,
   CMYK / palette / bilevel converted) and EXIF orientation applied. A JPEG is decoded at the
   smallest 1/2, 1/4 or 1/8 scale (``draft``, luma only) that keeps DOC_THUMB / 2 pixels on its
   long side, and again at full detail size only if it turns out to hold text;
4. every image keeps a :data:`THUMB` x :data:`THUMB` thumbnail (Pillow's bilinear filter, which
   widens with the scale, so 25%, 50% and 100% copies land on nearly the same pixels), and
   ``phash`` / ``dhash`` (imagehash, 64 bits each) of it;
5. an image holding text-like detail (see below) also keeps a *detail image*: grayscale, at
   most :data:`DOC_THUMB` pixels on its long side (Lanczos), in tiles of 16 x 16: the tiles
   around text are kept (quantized to every 4th level, PNG), flat tiles near them as their mean,
   the rest only as their mean. Sizes (``benchmarks/bench_perceptual.py``): a photo without text
   16 KiB (the thumbnail), with a few text-like tiles about 26 KiB; an invoice 29-51 KiB; an A4
   page 38-40 KiB; a 1920 x 1080 screenshot 23 KiB; a receipt photographed on a wooden table
   66-96 KiB.

Text-like detail (:func:`_analyse`), per tile: a calm background (most pixels within 16 levels)
with ink standing 40 levels off it, or, over texture (a watermark), ink 100 levels off the
tile's median; ink covering 3-60% of the tile, nearly all on one side (dark on light or light
on dark), crossing the background 2.5+ times per inked row (strokes, not an outline), rows
without ink (between lines: not a railing), and a tile beside it whose inked rows are mostly
its own (a line of text). The image is scanned at its detail size and at half of it (large
type). Its text's line height is the lower quartile of whole runs of inked rows (a clear row
above and below) in its text tiles: specks and lower-case letters only lower it, towards a
miss. An image *holds readable text* when three text tiles stand side by side (or twelve in
all) and its lines are 4+ pixels high in the image itself. This fires on documents, screenshots,
charts, forms, captions, price tags, a receipt photographed on a table, outlined watermarks;
not on the eval photos (a pagoda's railings, a launch tower's lattice, a field of stars read as
a few text tiles, not as lines of readable text).

:func:`same_picture` is the verifier: equal digests are the same picture; otherwise the aspect
ratio must agree, both hashes must fall within a small Hamming radius (a gate, nothing more:
two invoices that differ only in their total have nearly equal hashes), and the thumbnails
must agree, at 64 x 64 (fewer where a copy is under 80 pixels a side), slightly blurred: the
mean absolute difference, the largest one, and the largest |mean| of the signed difference
over 2x2 and 4x4 windows (an added object, a burst frame or a rotation shows there, re-encoding
noise averages out). That is all for a pair where neither copy holds readable text: the photo
path, as before.

Where either copy holds readable text, its detail is verified at glyph scale:

* both detail images are resampled (Lanczos) to a grid where the text's lines span
  ``_GLYPH_GRID`` = 7 pixels (the line height of the larger copy, or the smaller of both when
  they are of one size), and at most 0.75 of the smaller copy's detail when the sizes differ
  (what its own resampling still leaves alone). A resized copy whose lines span fewer than
  7 / 0.75 = 9.3 pixels cannot show which digit is there: "too small to verify", a miss. So
  is a copy that holds no detail image while the other holds readable text;
* compared are the text tiles of either copy and one tile around them, and its other tiles
  with strokes (a lone price, a tick), where both hold pixels; more than three text tiles of
  one copy where the other holds nothing (texture) is text in one copy only, a miss;
* measures, after a light blur (sigma 0.3 grid pixels): ``d1``, the largest pixel difference,
  and ``d2``, the largest |mean| of the signed difference over 2x2 windows (a stroke). Legible
  text (lines of 7+ grid pixels): d2 <= 34, d1 <= 96. Text whose lines span fewer than 7
  pixels even at full size (an 8 px font on a 600 px page) shows a changed digit as little
  more than JPEG q50 noise: only near-lossless copies pass (d2 <= 12, d1 <= 40).

Figures from ``benchmarks/bench_perceptual.py --show-errors`` (hard families: invoices in fonts
of 8-16 px up to A4, screenshots up to 1920 px, a colour stamp, receipts photographed on a
table (close up, and in a wider shot), a caption, a watermark, a price tag, a chart, a form's
check box, a slide): no false accept among 1,806 different pairs, photographed receipts at
every size and quality included. Legible text: the hardest accepted copy reached 0.82 of its
limits (a caption band at JPEG q50), the closest different picture 1.37 times them (one letter
of a 1280 px screenshot), room 1.67; fine text: 0.91 and 3.45; the thumbnails: 0.89 and 1.87.
Photos hit 99.4%, the issue's population 97.0%.

Limits, by design: a 50% copy of a page in 8-16 px type keeps lines of 4-6 pixels, where
another resampling filter (bilinear, box) changes strokes as much as a changed digit does, so
it is a miss ("too small to verify"), and so is every 25% copy of text; only type large enough
to keep 9+ pixel lines in the smaller copy verifies across sizes. Fine text re-encoded below
JPEG q90 misses. The detail is grayscale: a colour change of equal luminance does not show.
Text the scan does not read as text (light-gray type under 40 levels of contrast, text over
texture without a halo, lines under 4 pixels, an image whose only text is a word or two) is
left to the thumbnails. A photo whose detail reads as text (a few borderline tiles) loses its
small copies to "too small to verify": misses, not wrong hits. A wrong "same" is worse than a
miss.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImageError
from ..images import read_file
from .decoding import decoding

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["DOC_THUMB", "FORMATS", "THUMB", "Fingerprint", "fingerprint", "same_picture", "thumb_evidence"]

THUMB = 128
"""Side of the grayscale thumbnail every fingerprint keeps (THUMB * THUMB = 16 KiB); the hashes
and the photo comparison come from it."""
DOC_THUMB = 1024
"""Longest side of the detail image kept for an image holding text-like detail (documents,
screenshots, a photographed receipt, a caption): grayscale, the tiles around text kept,
PNG-compressed (about 10-70 KiB)."""

FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
"""Formats :func:`fingerprint` opens (those of them this Pillow build can read)."""

_VERSION = 2
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BACKGROUND = 255  # transparency is composited on white

# -- verifier limits (chosen from benchmarks/bench_perceptual.py; conservative) ---------------
_ASPECT_TOLERANCE = 0.03     # relative difference of width/height
_PHASH_MAX = 10              # Hamming distance gates, of 64 bits
_DHASH_MAX = 12
# photos, at half resolution (64x64, blurred): see thumb_evidence
_PHOTO_LIMITS = {"mad": 2.5, "p1": 8.0, "p2": 7.0, "p4": 4.5}

# -- text-like detail (see _analyse) ----------------------------------------------------------
_TILE = 16            # detail pixels per tile side
_CALM_WINDOW = 16     # a tile's background: the 16-level window holding most of its pixels
_INK_LEVEL = 40       # a pixel this far from its tile's background is ink
_TEXT_CALM = 0.4      # share of a text tile's pixels on its background
_TEXT_INK = (0.03, 0.6)   # share of ink in a text tile
_TEXT_CROSSINGS = 2.5     # ink/background crossings per inked row of a text tile (strokes)
_HALO_LEVEL = 100     # ... and, over texture, this far from its median (see _scan)
_TEXT_POLARITY = 0.9  # share of a text tile's ink on one side of its background (dark or light)
_TEXT_GAP_ROWS = 2    # rows without ink in a text tile (between its lines)
_TEXT_ALIGNED = 0.6   # share of inked rows a text tile has in common with one beside it
_LINE_TILES = 3       # text tiles side by side from which an image holds text to verify (or
_TEXT_STRONG = 12     # text tiles in all, at one scale) ...
_READABLE = 4.0       # ... if its lines are this many pixels high in the image itself
_LARGE_TEXT = 10      # the half-size scan counts text whose lines are this high (the other is
                      # found by the full-size one)
_GLYPH_RUNS = 4       # line heights needed for a line height
_KEEP_AROUND = 2      # tiles kept around text tiles (near them, flat ones as their mean)
_COMPARE_AROUND = 1   # tiles compared around text tiles
_MISSING_TILES = 3    # text tiles of one copy the other may hold no pixels for (read as texture)
_FLAT_RANGE = 24      # a flat tile: all its pixels within this many levels
_QUANT = 4            # the stored detail keeps every _QUANT-th gray level

# -- the detail comparison (see _detail_evidence) ---------------------------------------------
_GLYPH_GRID = 7.0     # text is compared on a grid where its lines are this many pixels high
_RESIZED_GRID = 0.75  # ... at most this share of the smaller copy's detail when sizes differ
_DETAIL_BLUR = 0.3    # sigma (grid pixels) of the blur both sides get before comparing
_TEXT_LIMITS = {"d1": 96.0, "d2": 34.0}
_FINE_TEXT_LIMITS = {"d1": 40.0, "d2": 12.0}


@dataclass(frozen=True)
class Fingerprint:
    """What :func:`same_picture` needs to know of an image: 16 KiB for a photo, some 20-90 KiB
    with the detail image of a document or a photo holding text."""

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
    checked binary layout (see :func:`_pack_detail`); empty for other images."""

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
        if (not _SHA256.fullmatch(str(fp.sha256)) or fp.phash >> 64 or fp.dhash >> 64 or fp.phash < 0
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
        raw = read_file(data, max_bytes)
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


def _draft(img: PILImage.Image, side: int | None) -> None:
    """Have a JPEG decode at the smallest 1/2, 1/4 or 1/8 scale whose longest side still
    reaches ``side``, and only its luma (``draft``; other formats decode whole)."""
    if side and img.format in ("JPEG", "MPO"):
        width, height = img.size
        scale = 1
        while scale < 8 and max(width, height) // (2 * scale) >= side:
            scale *= 2
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


# -- text-like detail ----------------------------------------------------------------------------

_KEEP, _FLAT, _TEXT, _MARK = 1, 2, 4, 8  # tile flags
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int32)
_DETAIL_MAGIC = b"IMGD\x02"


@dataclass(frozen=True)
class _Detail:
    """A detail image and what :func:`_analyse` found in it."""

    pixels: np.ndarray  # (h, w) uint8; tiles not kept hold their mean
    flags: np.ndarray   # (ceil(h / _TILE), ceil(w / _TILE)) uint8: _KEEP | _FLAT | _TEXT | _MARK
    glyph: float        # height of the text's lines, in pixels of ``pixels``; 0 if unknown
    text: int           # text tiles
    scale: float        # pixels of the image per pixel of ``pixels`` (1 or more)
    strong: bool        # holds readable text, which must be verified at glyph scale (see _analyse)

    def data(self) -> np.ndarray:
        """Tiles whose pixels are stored (kept, or flat and stored as their mean)."""
        return (self.flags & (_KEEP | _FLAT)) > 0


def _tiles(arr: np.ndarray) -> np.ndarray:
    """``arr`` as (rows of tiles, _TILE, columns of tiles, _TILE), edges repeated to fill."""
    h, w = arr.shape
    ty, tx = -(-h // _TILE), -(-w // _TILE)
    if (ty * _TILE, tx * _TILE) != (h, w):
        arr = np.pad(arr, ((0, ty * _TILE - h), (0, tx * _TILE - w)), mode="edge")
    return arr.reshape(ty, _TILE, tx, _TILE)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` grown by ``steps`` tiles (a square neighbourhood)."""
    for _ in range(steps):
        p = np.pad(mask, 1, constant_values=False)
        rows = p[:-2] | p[1:-1] | p[2:]
        mask = rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]
    return mask


def _row_bits(mask: np.ndarray) -> np.ndarray:
    """(k, _TILE, _TILE) booleans as (k, _TILE) 16-bit rows. (Packing the flat array, two bytes
    a row, is many times faster than ``np.packbits(mask, axis=2)``.)"""
    return np.packbits(np.ascontiguousarray(mask).reshape(-1)).view(">u2").reshape(mask.shape[:2]).astype(np.uint16)


def _popcount(bits: np.ndarray) -> np.ndarray:
    return _POPCOUNT[bits & 0xFF] + _POPCOUNT[bits >> 8]


@functools.lru_cache(maxsize=8)
def _histogram_bins(ty: int, tx: int) -> np.ndarray:
    """For every other pixel (rows and columns 0, 2, 4, ...) of an image of (ty, tx) tiles, the
    first of the histogram bins of its tile: with its level's bin added, an index for
    ``np.bincount`` that counts every tile's histogram at once. Cached: images come in few sizes."""
    per, bins = _TILE // 2, 256 // (_CALM_WINDOW // 2)
    tile = (np.arange(ty * per, dtype=np.int32) // per * tx)[:, None] + np.arange(tx * per, dtype=np.int32) // per
    tile *= bins
    tile.flags.writeable = False
    return tile


def _scan(*images: tuple[np.ndarray, bool]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per (array, halos) of ``images``: its text tiles, its tiles with strokes, and the heights
    of its text's lines (see :func:`_analyse`; ``halos``: also text set off from texture by a
    halo). The arrays' tiles are measured together (one pass of each step for all of them)."""
    half = _CALM_WINDOW // 2
    bins = 256 // half
    grids = [_tiles(arr) for arr, _ in images]
    shapes = [(g.shape[0], g.shape[2]) for g in grids]
    sizes = [ty * tx for ty, tx in shapes]
    first = np.cumsum([0, *sizes])  # the first tile of each image in the joint numbering
    n = int(first[-1])
    samples = (_TILE // 2) ** 2
    counts = np.concatenate([  # per tile, a histogram of every other pixel, in bins of ``half`` levels
        np.bincount((_histogram_bins(ty, tx) + g.reshape(ty * _TILE, tx * _TILE)[::2, ::2] // half).ravel(),
                    minlength=ty * tx * bins).reshape(ty * tx, bins)
        for g, (ty, tx) in zip(grids, shapes)])
    cum = np.zeros((n, bins + 1), np.int32)
    np.cumsum(counts, axis=1, out=cum[:, 1:])
    pairs = cum[:, 2:] - cum[:, :-2]  # pixels in bins (i, i + 1)
    best = pairs.argmax(axis=1)
    rows_n = np.arange(n)
    calm = pairs[rows_n, best] / samples
    level = np.minimum(best * half + half, 255)
    median = np.argmax(cum[:, 1:] * 2 >= samples, axis=1) * half + half // 2

    def beyond(centre: np.ndarray, step: int) -> np.ndarray:
        """Sampled pixels in bins wholly more than ``step`` levels off ``centre``."""
        low = np.clip((centre - step) // half, 0, bins)  # bins below index ``low`` lie below
        high = np.clip((centre + step) // half + 1, 0, bins)  # and from ``high`` on, above
        return cum[rows_n, low] + samples - cum[rows_n, high]

    calm_ink = (calm >= _TEXT_CALM) & (beyond(level, _INK_LEVEL) > 0)
    # text over texture (a watermark, a caption on a photo) is set off by a halo or an outline:
    # there, ink is what lies _HALO_LEVEL off the tile's median, on the side that has more of it
    halo = ~calm_ink & (beyond(median, _HALO_LEVEL) > 0)
    for (ty, tx), start, size, (_, halos) in zip(shapes, first, sizes, images):
        grid = halo[start:start + size].reshape(ty, tx)
        beside = np.zeros_like(grid)  # text over texture only counts in lines: a tile of it beside
        beside[:, 1:] |= grid[:, :-1]
        beside[:, :-1] |= grid[:, 1:]
        grid &= beside & halos
    cand = np.flatnonzero(calm_ink | halo)
    image = np.searchsorted(first, cand, side="right") - 1  # which image each candidate is of
    local = cand - first[image]
    tiles = np.empty((len(cand), _TILE, _TILE), np.uint8)
    for i, g in enumerate(grids):
        mine = image == i
        tiles[mine] = g[local[mine] // shapes[i][1], :, local[mine] % shapes[i][1], :]
    haloed = halo[cand]
    centre = np.where(haloed, median[cand], level[cand])
    step = np.where(haloed, _HALO_LEVEL, _INK_LEVEL)
    low = np.clip(centre - step, 0, 255).astype(np.uint8)[:, None, None]
    high = np.minimum(centre + step, 255).astype(np.uint8)[:, None, None]  # nothing lies above 255
    dark, light = _row_bits(tiles < low), _row_bits(tiles > high)
    n_dark, n_light = _popcount(dark).sum(axis=1), _popcount(light).sum(axis=1)
    one_sided = haloed | (np.maximum(n_dark, n_light) >= _TEXT_POLARITY * (n_dark + n_light))
    # haloed tiles: the side with more ink is the glyphs (the other, their outline)
    bits = np.where(~haloed[:, None], dark | light, np.where((n_light >= n_dark)[:, None], light, dark))
    share = np.where(~haloed, n_dark + n_light, np.where(n_light >= n_dark, n_light, n_dark)) / (_TILE * _TILE)
    rows = bits != 0  # (k, _TILE): the tile's inked rows
    inked = rows.sum(axis=1)
    crossings = _popcount((bits ^ (bits >> 1)) & 0x7FFF).sum(axis=1) / np.maximum(inked, 1)  # ink to paper
    marked = (share >= _TEXT_INK[0]) & (share <= _TEXT_INK[1]) & (crossings >= _TEXT_CROSSINGS) & one_sided
    strokes = marked & (inked <= _TILE - _TEXT_GAP_ROWS)
    found = []
    for i, ((ty, tx), (arr, _)) in enumerate(zip(shapes, images)):
        mine = np.flatnonzero(image == i)
        at = local[mine]
        text = np.zeros(ty * tx, bool)
        text[at[strokes[mine]]] = True
        text = text.reshape(ty, tx)
        marks = np.zeros(ty * tx, bool)  # strokes on a calm background, in a line or not (a lone number)
        marks[at[marked[mine] & ~haloed[mine]]] = True
        marks = marks.reshape(ty, tx)
        if not text.any():
            found.append((text, marks, np.zeros(0, np.intp)))
            continue
        # a line of text: a tile's inked rows are mostly those of a text tile beside it
        profile = np.zeros((ty * tx, _TILE), bool)
        profile[at] = rows[mine]
        profile = profile.reshape(ty, tx, _TILE)
        both = (profile[:, 1:] & profile[:, :-1]).sum(axis=2)
        either = (profile[:, 1:] | profile[:, :-1]).sum(axis=2)
        aligned = text[:, 1:] & text[:, :-1] & (both >= _TEXT_ALIGNED * np.maximum(either, 1))
        text[:] = False
        text[:, 1:] |= aligned
        text[:, :-1] |= aligned
        found.append((text, marks, _line_heights(arr, text, at, mine, haloed, low, high, n_dark, n_light, tx)))
    return found


def _line_heights(arr: np.ndarray, text: np.ndarray, at: np.ndarray, mine: np.ndarray, haloed: np.ndarray,
                  low: np.ndarray, high: np.ndarray, n_dark: np.ndarray, n_light: np.ndarray, tx: int) -> np.ndarray:
    """In each text tile and half a tile above and below it, the runs of rows holding its ink
    with a row clear of it on either side (a whole line, not one cut by the window)."""
    keep = text.ravel()[at]
    k = mine[keep]
    if not k.size:
        return np.zeros(0, np.intp)
    ty_k, tx_k = at[keep] // tx, at[keep] % tx
    pad = _TILE // 2
    h, w = arr.shape  # beyond its edges, the image's edge rows and columns repeat
    ys = np.clip((ty_k * _TILE - pad)[:, None] + np.arange(2 * _TILE), 0, h - 1)
    xs = np.clip((tx_k * _TILE)[:, None] + np.arange(_TILE), 0, w - 1)
    strips = arr[ys[:, :, None], xs[:, None, :]]  # (k, 2 _TILE, _TILE)
    dark, light = strips < low[k], strips > high[k]
    lighter = (n_light[k] >= n_dark[k])[:, None, None]
    ink = np.where(haloed[k][:, None, None], np.where(lighter, light, dark), dark | light)
    r = np.pad(ink.any(axis=2).astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(r, axis=1)
    starts, ends = np.nonzero(edges == 1)[1], np.nonzero(edges == -1)[1]
    runs = ends - starts
    whole = (starts > 0) & (ends < 2 * _TILE) & (starts < pad + _TILE) & (ends > pad)
    return runs[(runs >= 2) & whole]


def _lines(text: np.ndarray) -> bool:
    """Whether ``text`` holds a line of text: _LINE_TILES text tiles side by side, or
    _TEXT_STRONG text tiles in all."""
    run = text[:, : text.shape[1] - _LINE_TILES + 1].copy()
    for k in range(1, _LINE_TILES):
        run &= text[:, k: text.shape[1] - _LINE_TILES + 1 + k]
    return bool(run.any()) or int(text.sum()) >= _TEXT_STRONG


def _analyse(arr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Text tiles, tiles with strokes, the height of the text's lines, and whether the image
    holds readable text, of a detail image showing the image at 1 / ``scale``.

    Per tile of _TILE x _TILE pixels: its background is the _CALM_WINDOW-level window holding
    most of its pixels (sampled every other pixel); ink is what lies _INK_LEVEL or more off it.
    A tile with strokes has a calm background (_TEXT_CALM of its pixels), ink covering
    _TEXT_INK of it, nearly all on one side of the background (dark on light or light on dark:
    _TEXT_POLARITY), and many crossings between ink and background along its inked rows (not
    an object's outline). A text tile also has rows without ink (between lines: not a railing
    or a lattice), and a tile of the kind beside it whose inked rows are mostly its own (a line
    of text, not the odd patch of a photo). The image is scanned at its size and at half of it
    (text too large for a tile). The lines' height is the lower quartile of the runs of inked
    rows (2+ pixels) in the text tiles of each column of tiles: dots and lower-case letters
    only lower it, towards a miss. The image holds readable text if either scan finds a line of
    text (see :func:`_lines`) whose lines are _READABLE pixels high in the image itself (and,
    for the half-size scan, _LARGE_TEXT pixels of the detail image)."""
    from PIL import Image

    h, w = arr.shape
    if min(h, w) >= 4 * _TILE:
        half = np.asarray(Image.fromarray(arr).reduce(2))  # 2 x 2 means
        (text, marks, runs), (text2, marks2, runs2) = _scan((arr, True), (half, False))
        found = [(_lines(text), runs, 1), (_lines(text2), runs2, 2)]
        for fine, coarse in ((text, text2), (marks, marks2)):
            up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:fine.shape[0], :fine.shape[1]]
            fine[:up.shape[0], :up.shape[1]] |= up
    else:
        [(text, marks, runs)] = _scan((arr, True))
        found = [(_lines(text), runs, 1)]
    glyph, strong = 0.0, False
    for count, lines, factor in found:
        height = factor * float(np.percentile(lines, 25)) if lines.size >= _GLYPH_RUNS else 0.0
        if count and height * scale >= _READABLE and height >= (factor - 1) * _LARGE_TEXT:
            return text, marks, height, True
        glyph = glyph or height
    return text, marks, glyph, strong


def _pack_detail(arr: np.ndarray, text: np.ndarray, marks: np.ndarray, glyph: float, scale: float,
                 strong: bool) -> bytes:
    """The detail blob: _DETAIL_MAGIC, a 2-byte length and a JSON header (size, tile, line
    height, text tiles, scale, readable text), a 4-byte length and the tile flags and the
    tiles' mean levels (a byte each per tile, row by row; zlib), then a PNG of the kept tiles,
    quantized to every _QUANT-th level. Kept: the tiles within _KEEP_AROUND of text, and the
    tiles with strokes near them (should the other copy read text there); around those, the
    flat tiles (all pixels within _FLAT_RANGE levels) are recorded as their mean (paper, a
    screen's background). Other tiles only have their mean, which compares with nothing."""
    from PIL import Image

    h, w = arr.shape
    b = _tiles(arr)
    means = np.asarray(Image.fromarray(arr).reduce(_TILE))
    near = _dilate(text, _KEEP_AROUND)
    marks = marks & ~text & (True if strong else _dilate(near, _KEEP_AROUND))  # all of them with readable text
    keep = near | _dilate(marks, 1)
    flat = np.zeros_like(keep)
    around = np.argwhere(_dilate(keep, 1) & ~keep)
    if len(around):
        tiles = b[around[:, 0], :, around[:, 1], :]
        spread = tiles.max(axis=(1, 2)).astype(np.int16) - tiles.min(axis=(1, 2))
        flat[around[spread <= _FLAT_RANGE, 0], around[spread <= _FLAT_RANGE, 1]] = True
    kept = np.argwhere(keep)
    cols = max(1, math.isqrt(len(kept) - 1) + 1) if len(kept) else 1
    rows = max(1, -(-len(kept) // cols))
    mosaic = np.zeros((rows * cols, _TILE, _TILE), np.uint8)
    mosaic[:len(kept)] = (b[kept[:, 0], :, kept[:, 1], :].astype(np.uint16) + _QUANT // 2) // _QUANT
    mosaic = mosaic.reshape(rows, cols, _TILE, _TILE).transpose(0, 2, 1, 3).reshape(rows * _TILE, cols * _TILE)
    buf = io.BytesIO()
    Image.fromarray(mosaic, "L").save(buf, "PNG", compress_level=3)
    flags = (np.where(keep, _KEEP, 0) | np.where(flat, _FLAT, 0) | np.where(text, _TEXT, 0)
             | np.where(marks, _MARK, 0)).astype(np.uint8)
    header = json.dumps({"w": w, "h": h, "tile": _TILE, "glyph": round(glyph, 2), "text": int(text.sum()),
                         "scale": round(scale, 4), "strong": strong}, sort_keys=True, separators=(",", ":")).encode()
    table = zlib.compress(flags.tobytes() + means.tobytes(), 6)
    return (_DETAIL_MAGIC + len(header).to_bytes(2, "big") + header + len(table).to_bytes(4, "big") + table
            + buf.getvalue())


@functools.lru_cache(maxsize=16)
def _unpack_detail(blob: bytes) -> _Detail:
    """The inverse of :func:`_pack_detail` (the last few are kept); ValueError for anything else."""
    from PIL import Image

    try:
        if not blob.startswith(_DETAIL_MAGIC):
            raise ValueError("no detail header")
        start = len(_DETAIL_MAGIC) + 2
        end = start + int.from_bytes(blob[len(_DETAIL_MAGIC):start], "big")
        head = json.loads(blob[start:end])
        w, h, tile, text = head["w"], head["h"], head["tile"], head["text"]
        glyph, scale, strong = float(head["glyph"]), float(head["scale"]), head["strong"]
        if (not all(isinstance(v, int) for v in (w, h, tile, text)) or tile != _TILE or text < 0
                or not isinstance(strong, bool) or not 0 < max(w, h) <= DOC_THUMB or min(w, h) < 1
                or not 0 <= glyph <= DOC_THUMB or not 1 <= scale < 1e4):
            raise ValueError("bad detail header")
        ty, tx = -(-h // _TILE), -(-w // _TILE)
        start, end = end + 4, end + 4 + int.from_bytes(blob[end:end + 4], "big")
        table = zlib.decompressobj().decompress(blob[start:end], 2 * ty * tx + 1)
        flags = np.frombuffer(table[:ty * tx], np.uint8)
        means = np.frombuffer(table[ty * tx:], np.uint8)
        if flags.size != ty * tx or means.size != ty * tx or flags.max(initial=0) > (_KEEP | _FLAT | _TEXT | _MARK):
            raise ValueError("bad tile flags")
        flags = flags.reshape(ty, tx)
        kept = np.argwhere(flags & _KEEP)
        cols = max(1, math.isqrt(len(kept) - 1) + 1) if len(kept) else 1
        rows = max(1, -(-len(kept) // cols))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(blob[end:]), formats=["PNG"])
            im.load()
        if im.mode != "L" or im.size != (cols * _TILE, rows * _TILE):
            raise ValueError(f"a {im.mode} {im.size} mosaic, not L {(cols * _TILE, rows * _TILE)}")
        levels = np.asarray(im)
        if levels.max(initial=0) > 255 // _QUANT + 1:
            raise ValueError("detail levels out of range")
        tiles = levels.reshape(rows, _TILE, cols, _TILE).transpose(0, 2, 1, 3).reshape(-1, _TILE, _TILE)[:len(kept)]
        full = np.repeat(np.repeat(means.reshape(ty, 1, tx, 1), _TILE, axis=1), _TILE, axis=3)
        full[kept[:, 0], :, kept[:, 1], :] = np.minimum(tiles.astype(np.uint16) * _QUANT, 255)
        pixels = np.ascontiguousarray(full.reshape(ty * _TILE, tx * _TILE)[:h, :w])
        return _Detail(pixels, flags, glyph, text, scale, strong)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - json, PIL and struct errors alike
        raise ValueError(f"not a detail image: {exc!r}") from exc


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
    the header, before decoding; see :mod:`~imgcache.match.decoding`). An animated image is
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
            # A JPEG is first decoded at about half the detail size (draft: fast); one that
            # turns out to hold text is decoded again, at the full detail size.
            with _gray(img, DOC_THUMB // 2 if raw is not None else None, max_decode_bytes) as gray:
                orientation = _orientation(img)  # after decoding: a PNG's EXIF may follow its pixels
                thumb = gray.resize((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=2.0)
                detail = _fit(gray, DOC_THUMB)
                decoded_side = max(gray.size)
            method = getattr(Image.Transpose, _ORIENT[orientation]) if orientation != 1 else None
            if method is not None:
                thumb, detail = thumb.transpose(method), detail.transpose(method)
            arr = np.asarray(detail)
            text, marks, glyph, strong = _analyse(arr, max(1.0, max(width, height) / max(arr.shape)))
            if strong and raw is not None and decoded_side < min(DOC_THUMB, max(width, height)):
                with _gray(_open(raw), DOC_THUMB, max_decode_bytes) as gray:
                    detail = _fit(gray, DOC_THUMB)
                arr = np.asarray(detail.transpose(method) if method is not None else detail)
                text, marks, glyph, strong = _analyse(arr, max(1.0, max(width, height) / max(arr.shape)))
            scale = max(1.0, max(width, height) / max(arr.shape))
            packed = _pack_detail(arr, text, marks, glyph, scale, strong) if text.any() else b""
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


def _hash_int(h: Any) -> int:
    return int("".join("1" if bit else "0" for bit in h.hash.flatten()), 2)


# -- the verifier ------------------------------------------------------------------------------


def _window_max(diff: np.ndarray, k: int) -> float:
    """Largest |mean| of the signed difference over k x k windows (all positions)."""
    if k == 1:
        return float(np.abs(diff).max(initial=0.0))
    c = np.pad(diff, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return float(np.abs(sums).max(initial=0.0)) / (k * k)


def _as_array(fp: Fingerprint) -> np.ndarray:
    if len(fp.thumb) != THUMB * THUMB:
        raise ImageError(f"fingerprint thumbnail of {len(fp.thumb)} bytes is not {THUMB} x {THUMB}")
    return np.frombuffer(fp.thumb, np.uint8).reshape(THUMB, THUMB).astype(np.float64)


def _half(t: np.ndarray) -> np.ndarray:
    n = t.shape[0] // 2
    return t.reshape(n, 2, n, 2).mean(axis=(1, 3))


def _blur(t: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 blur in both directions (edges repeated)."""
    p = np.pad(t, 1, mode="edge")
    t = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    return (t[:, :-2] + 2 * t[:, 1:-1] + t[:, 2:]) / 4


def _gauss3(t: np.ndarray, sigma: float) -> np.ndarray:
    """A 3-tap Gaussian blur of ``sigma`` pixels in both directions (edges repeated)."""
    if sigma <= 0:
        return t
    e = math.exp(-1 / (2 * sigma * sigma))
    side, centre = e / (1 + 2 * e), 1 / (1 + 2 * e)
    p = np.pad(t, 1, mode="edge")
    t = centre * p[1:-1] + side * (p[:-2] + p[2:])
    return centre * t[:, 1:-1] + side * (t[:, :-2] + t[:, 2:])


def _small_grid(a: Fingerprint, b: Fingerprint, side: int) -> tuple[int, int]:
    """The (columns, rows) grid two photo thumbnails are compared on: ``side``, or 0.8 of the
    smaller copy's pixels where that is less (what a small copy can still show)."""
    return (min(side, max(1, int(min(a.width, b.width) * 0.8))),
            min(side, max(1, int(min(a.height, b.height) * 0.8))))


def _resample(t: np.ndarray, size: tuple[int, int], crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``t`` resampled to ``size`` (Lanczos), or the ``crop`` (x0, y0, x1, y1) of that."""
    from PIL import Image

    x0, y0, x1, y1 = crop or (0, 0, *size)
    if (t.shape[1], t.shape[0]) == tuple(size):
        return t[y0:y1, x0:x1].astype(np.float32)
    sx, sy = t.shape[1] / size[0], t.shape[0] / size[1]
    im = Image.fromarray(t.astype(np.float32), "F")
    out = im.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    return np.asarray(out, dtype=np.float32)


def _photo_evidence(a: Fingerprint, b: Fingerprint) -> dict[str, float]:
    ta, tb = _as_array(a), _as_array(b)
    size = _small_grid(a, b, THUMB // 2)
    if size == (THUMB // 2, THUMB // 2):
        half = _blur(_half(ta)) - _blur(_half(tb))
    else:  # a copy with fewer than 80 pixels a side: both at what it can still show
        half = _blur(_resample(ta, size).astype(np.float64)) - _blur(_resample(tb, size).astype(np.float64))
    return {"mad": float(np.abs(half).mean()), "p1": float(np.abs(half).max()),
            "p2": _window_max(half, 2), "p4": _window_max(half, 4)}


def _at_grid(flags: np.ndarray, shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Tile flags of a detail image of ``shape`` (rows, columns), per pixel of a ``size`` grid."""
    (h, w), (gw, gh) = shape, size
    ry = np.minimum(((np.arange(gh) + 0.5) * (h / gh) // _TILE).astype(np.intp), flags.shape[0] - 1)
    rx = np.minimum(((np.arange(gw) + 0.5) * (w / gw) // _TILE).astype(np.intp), flags.shape[1] - 1)
    return flags[ry][:, rx]


_NO_DETAIL = {"d1": math.inf, "d2": math.inf}


def _detail_evidence(a: Fingerprint, b: Fingerprint) -> dict[str, float]:
    """The detail comparison's figures (see :func:`thumb_evidence`)."""
    da = _unpack_detail(a.detail) if a.detail else None
    db = _unpack_detail(b.detail) if b.detail else None
    ev: dict[str, float] = {"doc": float(bool(da is not None and da.strong or db is not None and db.strong))}
    if not ev["doc"]:
        return ev
    if da is None or db is None:  # one copy shows no text-like detail at all
        (have, fp), other = ((da, a), b) if da is not None else ((db, b), a)
        glyph = have.glyph * have.scale * min(other.width / fp.width, other.height / fp.height)
        ev.update(glyph=glyph, missing=float(have.text))
        if glyph * _RESIZED_GRID < _GLYPH_GRID and other.width * other.height < fp.width * fp.height:
            ev["small"] = 1.0
        return {**ev, **_NO_DETAIL} if have.text > _MISSING_TILES or ev.get("small") else ev
    small, big = (da, db) if da.pixels.size <= db.pixels.size else (db, da)
    (sh, sw), (bh, bw) = small.pixels.shape, big.pixels.shape
    same = abs(sh - bh) <= 1 and abs(sw - bw) <= 1
    # the text's line height in pixels of the smaller detail image: that of the larger copy if it
    # holds readable text (more pixels to measure), the smaller of both when they are of one size
    if same:
        glyph = min(d.glyph for d in (da, db) if d.strong)
    else:
        glyph = big.glyph * sh / bh if big.strong else small.glyph
    ev.update(glyph=glyph, same=float(same), missing=0.0)
    if glyph <= 0 or (not same and glyph * _RESIZED_GRID < _GLYPH_GRID):
        return {**ev, "small": 1.0, **_NO_DETAIL}
    scale = min(1.0, _GLYPH_GRID / glyph)
    size = (max(1, round(sw * scale)), max(1, round(sh * scale)))
    ev.update(small=0.0, grid=float(min(size)), fine=float(glyph < _GLYPH_GRID))
    # compared: the tiles around text in either copy, and its other tiles with strokes (a lone
    # number), where both hold pixels. Text tiles of one copy where the other holds none
    # (texture, shading) are counted; a few are let go (a tile one copy reads as text and the
    # other not), more are text in one copy only: a miss.
    around_small = _COMPARE_AROUND if same else max(1, round(_COMPARE_AROUND * sw / bw))
    text = _at_grid((big.flags & _TEXT) > 0, big.pixels.shape, size) | _at_grid(
        (small.flags & _TEXT) > 0, small.pixels.shape, size)
    region = (_at_grid(_dilate((big.flags & _TEXT) > 0, _COMPARE_AROUND) | ((big.flags & _MARK) > 0),
                       big.pixels.shape, size)
              | _at_grid(_dilate((small.flags & _TEXT) > 0, around_small) | ((small.flags & _MARK) > 0),
                         small.pixels.shape, size))
    held = _at_grid(da.data(), da.pixels.shape, size) & _at_grid(db.data(), db.pixels.shape, size)
    tile = _TILE * size[0] / bw  # a tile of the larger copy, in grid pixels
    ev["missing"] = float((text & ~held).sum()) / (tile * tile)
    if ev["missing"] > _MISSING_TILES:
        return {**ev, **_NO_DETAIL}
    region &= held
    ev["region"] = float(region.mean())
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    if not rows.size:
        return {**ev, "d1": 0.0, "d2": 0.0}
    # only the box around the compared pixels is resampled (and a pixel more for the blur)
    y0, y1 = max(0, rows[0] - 1), min(size[1], rows[-1] + 2)
    x0, x1 = max(0, cols[0] - 1), min(size[0], cols[-1] + 2)
    ra = _gauss3(_resample(da.pixels, size, (x0, y0, x1, y1)), _DETAIL_BLUR)
    rb = _gauss3(_resample(db.pixels, size, (x0, y0, x1, y1)), _DETAIL_BLUR)
    diff = np.where(region[y0:y1, x0:x1], ra - rb, np.float32(0))
    quads = diff[:-1, :-1] + diff[1:, :-1] + diff[:-1, 1:] + diff[1:, 1:]
    ev.update(d1=float(np.abs(diff).max(initial=0.0)), d2=float(np.abs(quads).max(initial=0.0)) / 4)
    return ev


def thumb_evidence(a: Fingerprint, b: Fingerprint) -> dict[str, float]:
    """The comparison's figures, in gray levels (for the verdict, tuning and reasons).

    Every pair: the thumbnails at half resolution, slightly blurred (resampling filters differ
    at edges): ``mad`` the mean absolute difference, ``p1`` the largest one, ``p2`` and ``p4``
    the largest |mean| of the signed difference over 2x2 and 4x4 windows.

    ``doc`` is 1.0 when either copy holds readable text (see :func:`_analyse`); then also:
    ``glyph``, the height of its lines in pixels of the smaller copy's detail image (0 if
    unknown); ``missing``, the text tiles of one copy the other holds no pixels for (all of
    them when a copy has no detail image); ``small`` (1.0 when the smaller copy's lines are too
    small to verify); ``same`` (1.0 when both detail images are of one size); and, when
    compared, ``grid`` (the comparison grid's shorter side), ``fine`` (1.0 when the lines span
    fewer than _GLYPH_GRID pixels even there), ``region`` (the share of the grid compared), and
    ``d1`` and ``d2``, the largest |mean| of the signed difference over 1x1 and 2x2 windows (a
    stroke), in gray levels, around the text; infinite when not compared.
    """
    return {**_photo_evidence(a, b), **_detail_evidence(a, b)}


def same_picture(a: Fingerprint, b: Fingerprint) -> tuple[bool, str]:
    """Whether ``a`` and ``b`` are one picture (re-encoded, resized, converted): (decision, reason).

    Conservative: different photos of one scene, mirrored, rotated or cropped images, an
    object added or removed, and documents whose text differs are answered False, and so is
    a copy too small to show the text the other one holds.
    """
    if a.sha256 == b.sha256:
        return True, "identical bytes (sha256)"
    ra, rb = a.width / a.height, b.width / b.height
    if abs(ra - rb) / max(ra, rb) > _ASPECT_TOLERANCE:
        return False, f"aspect ratios differ ({a.width}x{a.height} vs {b.width}x{b.height})"
    dp = (a.phash ^ b.phash).bit_count()
    if dp > _PHASH_MAX:
        return False, f"phash distance {dp} > {_PHASH_MAX}"
    dd = (a.dhash ^ b.dhash).bit_count()
    if dd > _DHASH_MAX:
        return False, f"dhash distance {dd} > {_DHASH_MAX}"
    ev = _photo_evidence(a, b)
    over = [f"{k} {ev[k]:.1f} > {v:g}" for k, v in _PHOTO_LIMITS.items() if ev[k] > v]
    if over:
        return False, f"thumbnails differ: {', '.join(over)}; phash {dp}, dhash {dd}"
    photo = ", ".join(f"{k} {ev[k]:.1f}" for k in _PHOTO_LIMITS)
    dev = _detail_evidence(a, b)
    if not dev["doc"]:
        return True, f"same picture (photo): {photo}; phash {dp}, dhash {dd}"
    if dev.get("small"):
        return False, (f"text-like detail, too small to verify: its lines span {dev['glyph']:.1f} pixels of the "
                       f"smaller copy, fewer than {_GLYPH_GRID / _RESIZED_GRID:.0f}, where a changed glyph would "
                       "not show")
    if dev["missing"] > _MISSING_TILES:
        return False, (f"text-like detail in one copy only: {dev['missing']:.0f} tiles of text where the other "
                       "copy shows texture or nothing")
    if "d2" not in dev:
        return True, (f"same picture (photo; {dev['missing']:.0f} tiles of text-like detail in one copy only): "
                      f"{photo}; phash {dp}, dhash {dd}")
    fine = bool(dev["fine"])
    limits = _FINE_TEXT_LIMITS if fine else _TEXT_LIMITS
    kind = (f"text-like detail, {'fine' if fine else 'legible'} text ({dev['glyph']:.1f} px lines, "
            f"grid {dev['grid']:.0f})")
    over = [f"{k} {dev[k]:.1f} > {v:g}" for k, v in limits.items() if dev[k] > v]
    if over:
        return False, f"detail differs ({kind}): {', '.join(over)}; {photo}; phash {dp}, dhash {dd}"
    figures = ", ".join(f"{k} {dev[k]:.1f}" for k in limits)
    return True, f"same picture ({kind}): {figures}; {photo}; phash {dp}, dhash {dd}"
