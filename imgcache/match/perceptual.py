"""Perceptual fingerprints of images, and the verifier that says whether two are one picture.

:func:`fingerprint` decodes an image safely and reduces it to a :class:`Fingerprint`:

1. the input (bytes, a path, or a PIL image) is bounded by ``max_bytes`` and digested
   (sha256) for the exact match; only the formats in :data:`FORMATS` are opened;
2. the header's size is checked against ``max_pixels`` *before* any pixel is decoded, so a
   40,000 x 40,000 PNG fails at once (:class:`~imgcache.errors.ImageError`), without
   allocating; anything Pillow raises (not an image, truncated, corrupt) becomes an ImageError;
3. JPEGs at least 8 x THUMB on their short side are decoded at 1/8 scale (``draft``: only each
   block's DC coefficient, an exact 8x8 box average, so it matches a full decode); others are
   decoded in full, then resized with Pillow's bilinear filter (a triangle that widens with the
   scale, so 25%, 50% and 100% copies land on nearly the same thumbnail);
4. the image is brought to a canonical form: the first frame of an animation (an animated GIF
   or WebP is keyed by its first frame only), EXIF orientation applied (the table of
   :func:`PIL.ImageOps.exif_transpose`, applied to the thumbnail), transparency composited on
   a fixed white background, 16-bit samples scaled to 8 bits, CMYK / palette / bilevel
   converted; then an ITU-R 601 grayscale square of :data:`THUMB` x :data:`THUMB`;
5. ``phash`` and ``dhash`` (imagehash, 64 bits each) are computed from that thumbnail. It is
   kept as ``thumb`` for the verifier; for a document-like image (a clean or flat background:
   documents, screenshots, diagrams) a finer :data:`DOC_THUMB` square is kept instead, made
   from a full decode with Lanczos (little left above its Nyquist frequency to alias).

:func:`same_picture` is the verifier: equal digests are the same picture; otherwise the aspect
ratio must agree, both hashes must fall within a small Hamming radius (a gate, nothing more:
two invoices that differ only in their total have nearly equal hashes), and the thumbnails
must agree. Photos: at 64 x 64 (fewer where a copy is under 80 pixels a side), slightly
blurred, the mean absolute difference, the largest one, and the largest |mean| of the signed
difference over 2x2 and 4x4 windows (an added object, a burst frame or a rotation shows there,
re-encoding noise averages out). A photo never matches a document.

Documents are compared on a grid tied to the smaller copy: 256 pixels a side (the 320 px
thumbnail oversampled, so the resampling filters of two copies agree on what the grid keeps),
or 0.8 of the smaller copy's pixels where that is less; the finer thumbnail is brought down to
what the smaller copy can still show. Measures: the largest pixel difference (``d1``) and the
largest |mean| of the signed difference over 2x2 windows, about a glyph's stroke (``d2``).
What a changed digit shows depends on how many grid pixels a glyph spans, estimated from the
height of the text lines (:func:`_glyph_size`), so the limits come in two sets, from
``benchmarks/bench_perceptual.py --show-errors`` (its hard documents: fonts of 8-24 px, pages
of 600 x 800 to 1920 x 1080, totals a digit apart, "Portland"/"Portlend"):

* legible text (glyphs of 3+ grid pixels): d1 <= 18, d2 <= 10; the closest different
  document had d1 25, d2 13.3 (about 1.4x room); JPEG q50+ and WebP hit;
* fine text (an 8 px font on a 600 px page, a 1920 px screenshot): a changed digit shows as
  d1 10, d2 4.3, no more than JPEG q50 noise, so only near-lossless copies (PNG, WebP, JPEG
  q90+: d1 <= 6, d2 <= 3) hit.

Limits, by design or of a thumbnail of at most 100 KiB: a copy keeping less than 75% of the
grid the larger one gives (a 25% copy of a page) is a miss, as it cannot show which digit is
there; a 50% copy mostly misses too, since its own resampling differs from the thumbnail's at
sharp strokes by d1 20-33, d2 11-19, as much as a changed digit; a finer, compressed
representation of documents would be needed to verify those. The thumbnails are grayscale: a
colour change of equal luminance does not show. A document photographed on a textured
background (a receipt on a table) is classed as a photo, whose check cannot see a changed
digit: the benchmark counts those false accepts. A wrong "same" is worse than a miss.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["DOC_THUMB", "FORMATS", "THUMB", "Fingerprint", "fingerprint", "same_picture"]

THUMB = 128
"""Side of the grayscale thumbnail of a photo (THUMB * THUMB = 16 KiB); the hashes come from it."""
DOC_THUMB = 320
"""Side of the finer thumbnail kept for documents and screenshots (100 KiB)."""

FORMATS = ("PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
"""Formats :func:`fingerprint` opens (those of them this Pillow build can read)."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_BACKGROUND = 255  # transparency is composited on white

# -- verifier limits (chosen from benchmarks/bench_perceptual.py; conservative) ---------------
_ASPECT_TOLERANCE = 0.03     # relative difference of width/height
_PHASH_MAX = 10              # Hamming distance gates, of 64 bits
_DHASH_MAX = 12
# photos, at half resolution (64x64, blurred): see thumb_evidence
_PHOTO_LIMITS = {"mad": 2.5, "p1": 8.0, "p2": 7.0, "p4": 4.5}
# documents and screenshots: both thumbnails are resampled to a common grid, at most _DOC_GRID
# (DOC_THUMB oversampled 1.25x, so that the resampling filters of two copies agree on every
# frequency the grid keeps) and at most 0.8 of the smaller copy's pixels, so that the finer
# copy is compared with what the smaller one can still show. Where that grid keeps less than
# _MIN_GRID_SHARE of the one the larger copy alone would give (the benchmark's 25% copies of a
# page), the smaller copy cannot show a glyph-sized change: a miss, by design.
_DOC_GRID = 256
_MIN_GRID_SHARE = 0.75
# Text whose glyphs span at least _GLYPH_MIN grid pixels both ways (see _glyph_size) shows a
# changed digit above what JPEG q50 or a 75% copy leaves: the normal limits. Finer text
# (an 8 px font on a 600 px page, a 1920 px screenshot) shows a changed digit as little more
# than q50 noise: only near-lossless copies (PNG, WebP, JPEG q90+) pass the strict limits.
_GLYPH_MIN = 3.0
_TEXT_LIMITS = {"dmad": 1.5, "d1": 18.0, "d2": 10.0}
_FINE_TEXT_LIMITS = {"dmad": 1.0, "d1": 6.0, "d2": 3.0}
_STROKE_LEVEL = 24  # a horizontal step of this many gray levels is a glyph's stroke
# document-like (see _document_like): shares of the 128x128 thumbnail
_DOC_CLEAN_SHARE = 0.5
_DOC_FLAT_SHARE = 0.6
_DOC_MARK_SHARE = 0.03
_MARK_LEVEL = 24


@dataclass(frozen=True)
class Fingerprint:
    """What :func:`same_picture` needs to know of an image (about 4 KiB)."""

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

    def to_bytes(self) -> bytes:
        """A compact, self-describing encoding (a JSON header line, then the thumbnail), for
        storing a fingerprint as a content-addressed blob; never pickled."""
        header = {"v": 1, "sha256": self.sha256, "phash": f"{self.phash:016x}",
                  "dhash": f"{self.dhash:016x}", "width": self.width, "height": self.height}
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + self.thumb

    @classmethod
    def from_bytes(cls, data: bytes) -> Fingerprint:
        """The inverse of :meth:`to_bytes`; ValueError for anything else."""
        head, sep, thumb = bytes(data).partition(b"\n")
        if not sep:
            raise ValueError("not an encoded fingerprint: no header line")
        try:
            h = json.loads(head)
            fp = cls(sha256=h["sha256"], phash=int(h["phash"], 16), dhash=int(h["dhash"], 16),
                     width=h["width"], height=h["height"], thumb=thumb)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an encoded fingerprint: {exc!r}") from exc
        if (h.get("v") != 1 or not _SHA256.fullmatch(str(fp.sha256)) or fp.phash >> 64 or fp.dhash >> 64
                or not all(isinstance(n, int) and n > 0 for n in (fp.width, fp.height))):
            raise ValueError("not an encoded fingerprint: bad field")
        _as_array(fp)  # the thumbnail must be one of the known squares
        return fp


# -- decoding ----------------------------------------------------------------------------------


def _read_input(data: Any, max_bytes: int) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif isinstance(data, (str, os.PathLike)):
        try:
            with open(data, "rb") as fh:
                raw = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ImageError(f"cannot read image file {os.fspath(data)!r}: {exc}") from exc
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
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (_BACKGROUND,) * 3 + (255,))
        return Image.alpha_composite(base, rgba).convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    return img.convert("L")


def _decode_thumb(img: PILImage.Image, side: int, *, draft: bool) -> PILImage.Image:
    """The first frame as a ``side`` x ``side`` grayscale thumbnail (large JPEGs at 1/8 scale)."""
    from PIL import Image

    width, height = img.size
    if draft and img.format in ("JPEG", "MPO") and min(width, height) >= 8 * side:
        # At 1/8 the decoder keeps only each block's DC coefficient: an exact 8x8 box average,
        # so the thumbnail matches the one of a full decode (1/2 and 1/4 use scaled IDCTs,
        # whose ringing would differ from a full decode's at the edges of text).
        img.draft("L" if img.mode in ("L", "RGB", "YCbCr") else None,
                  (-(-width // 8), -(-height // 8)))
    img.load()
    if img.mode in ("P", "PA"):  # resampling would average palette indices
        img = img.convert("RGBA")
    elif img.mode.startswith("I") or img.mode in ("F", "1"):
        img = _to_gray(img)
    # Pillow's bilinear filter widens with the scale factor (a triangle of 2 source pixels per
    # output pixel): unlike BOX, its response hardly depends on the ratio, so the same picture
    # at 25%, 50% or 100% lands on nearly the same thumbnail. RGBA is averaged premultiplied.
    return _to_gray(img.resize((side, side), Image.Resampling.BILINEAR))


def _decode_detail(img: PILImage.Image) -> PILImage.Image:
    """The first frame, decoded in full, as a DOC_THUMB square: grayscale first, then Lanczos
    (a windowed sinc over 3 source pixels per output pixel): unlike the bilinear triangle it
    leaves little above the thumbnail's Nyquist frequency to alias, so copies of different
    sizes land on nearly the same pixels, and it keeps strokes sharp."""
    from PIL import Image

    img.load()
    return _to_gray(img).resize((DOC_THUMB, DOC_THUMB), Image.Resampling.LANCZOS)


def fingerprint(
    data: bytes | str | os.PathLike[str] | PILImage.Image,
    *,
    max_pixels: int = 50_000_000,
    max_bytes: int = 64 << 20,
) -> Fingerprint:
    """The :class:`Fingerprint` of an image (bytes, a path, or a PIL image).

    Raises :class:`~imgcache.errors.ImageError` for bytes that are not an image of
    :data:`FORMATS`, truncated or corrupt files, inputs over ``max_bytes``, and images over
    ``max_pixels`` (checked from the header, before decoding). An animated image is
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
            orientation = _orientation(img)
            width, height = img.size
            thumb = _decode_thumb(img, THUMB, draft=raw is not None)
            doc = _document_like(np.asarray(thumb))
            if doc:  # documents keep a finer thumbnail, decoded in full
                if raw is not None and img.size != (width, height):
                    img = _open(raw)
                detail = _decode_detail(img)
            if orientation != 1:
                method = getattr(Image.Transpose, _ORIENT[orientation])
                thumb = thumb.transpose(method)
                if doc:
                    detail = detail.transpose(method)
                if orientation >= 5:
                    width, height = height, width
            phash = imagehash.phash(thumb)
            dhash = imagehash.dhash(thumb)
    except ImageError:
        raise
    except Exception as exc:  # truncated data, broken chunks, unsupported modes, ...
        raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    return Fingerprint(sha256=sha, phash=_hash_int(phash), dhash=_hash_int(dhash),
                       width=width, height=height, thumb=(detail if doc else thumb).tobytes())


def _hash_int(h: Any) -> int:
    return int("".join("1" if bit else "0" for bit in h.hash.flatten()), 2)


# -- the verifier ------------------------------------------------------------------------------


def _window_max(diff: np.ndarray, k: int) -> float:
    """Largest |mean| of the signed difference over k x k windows (all positions)."""
    c = np.pad(diff, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return float(np.abs(sums).max()) / (k * k)


def _document_like(t: np.ndarray) -> bool:
    """Documents, screenshots, diagrams: a clean background (most pixels within 2 levels of the
    commonest level), or a flat one (within 8 levels) with marks standing off it (text, lines).
    Errs towards "document": the stricter comparison only costs misses."""
    counts = np.bincount(t.astype(np.uint8).ravel(), minlength=256)
    clean = np.convolve(counts, np.ones(5), mode="same").max() / t.size
    window = np.convolve(counts, np.ones(17), mode="same")
    level = int(window.argmax())
    flat = float(window[level]) / t.size
    marks = float((np.abs(t.astype(np.int16) - level) > _MARK_LEVEL).mean())
    return clean >= _DOC_CLEAN_SHARE or (flat >= _DOC_FLAT_SHARE and marks >= _DOC_MARK_SHARE)


def _as_array(fp: Fingerprint) -> np.ndarray:
    side = math.isqrt(len(fp.thumb))
    if side * side != len(fp.thumb) or side not in (THUMB, DOC_THUMB):
        raise ImageError(f"fingerprint thumbnail of {len(fp.thumb)} bytes is not square")
    return np.frombuffer(fp.thumb, np.uint8).reshape(side, side).astype(np.float64)


def _half(t: np.ndarray) -> np.ndarray:
    n = t.shape[0] // 2
    return t.reshape(n, 2, n, 2).mean(axis=(1, 3))


def _blur(t: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] / 4 blur in both directions (edges repeated)."""
    p = np.pad(t, 1, mode="edge")
    t = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    return (t[:, :-2] + 2 * t[:, 1:-1] + t[:, 2:]) / 4


def _grid(a: Fingerprint, b: Fingerprint, side: int) -> tuple[tuple[int, int], float]:
    """The (columns, rows) grid two thumbnails are compared on: at most ``side``, and at most 0.8
    of the smaller copy's pixels (a 50% copy of a 600 x 800 page: 240 x 256 for documents), and
    the share of the larger copy's own grid it keeps (1.0 when neither copy is small)."""
    def grid(width: int, height: int) -> tuple[int, int]:
        return min(side, max(1, int(width * 0.8))), min(side, max(1, int(height * 0.8)))

    size = grid(min(a.width, b.width), min(a.height, b.height))
    finer = grid(max(a.width, b.width), max(a.height, b.height))
    return size, min(size[0] / finer[0], size[1] / finer[1])


def _glyph_size(t: np.ndarray, width: int, height: int) -> float:
    """How many pixels of ``t`` (a grid of a ``width`` x ``height`` image) the document's smaller
    text spans: the height of its lines in rows, or that height in columns where the grid
    squeezes columns more (a 1920 x 1080 screenshot on a square grid). A line's height is a run
    of rows holding a stroke (a horizontal step of _STROKE_LEVEL, which horizontal rules do
    not make) within a 16-pixel wide strip; the lower quartile of all runs is taken, so specks
    and thin text only lower it: the error is towards "too fine", a miss."""
    strokes = np.abs(np.diff(t, axis=1)) > _STROKE_LEVEL
    runs: list[np.ndarray] = []
    for x0 in range(0, strokes.shape[1] - 15, 16):
        rows = strokes[:, x0:x0 + 16].any(axis=1).astype(np.int8)
        edges = np.diff(np.concatenate(([0], rows, [0])))
        runs.append(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))
    found = np.concatenate(runs) if runs else np.zeros(0)
    if not found.size:
        return math.inf  # no strokes at all: no text finer than the grid
    rows_high = float(np.percentile(found, 25))
    squeeze = (t.shape[1] / width) / (t.shape[0] / height)  # grid columns per row, relative
    return rows_high * min(1.0, squeeze)


def _resample(t: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(t.astype(np.float32), "F")
    return np.asarray(im.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def thumb_evidence(a: Fingerprint, b: Fingerprint) -> dict[str, float]:
    """The thumbnail comparison's figures, in gray levels (for the verdict, tuning and reasons).

    Photos are compared at half the thumbnail's resolution, slightly blurred (resampling
    filters differ at edges): ``mad`` the mean absolute difference, ``p1`` the largest one,
    ``p2`` and ``p4`` the largest |mean| of the signed difference over 2x2 and 4x4 windows.
    Documents (a DOC_THUMB thumbnail) on the grid of :func:`_grid` (``grid``, its shorter
    side): ``dmad``, ``d1`` (a pixel), ``d2`` (the signed mean over 2x2 windows, about a glyph's
    stroke). ``doc`` is 1.0 for documents.
    """
    ta, tb = _as_array(a), _as_array(b)
    if ta.shape != tb.shape:
        raise ValueError("thumbnails of different sizes (a document and a photo)")
    if ta.shape[0] == DOC_THUMB:
        size, share = _grid(a, b, _DOC_GRID)
        if share < _MIN_GRID_SHARE:
            return {"dmad": math.inf, "d1": math.inf, "d2": math.inf, "grid": float(min(size)),
                    "share": share, "glyph": 0.0, "doc": 1.0}
        ra, rb = _resample(ta, size), _resample(tb, size)
        glyph = min(_glyph_size(ra, a.width, a.height), _glyph_size(rb, b.width, b.height))
        full = ra - rb
        return {"dmad": float(np.abs(full).mean()), "d1": float(np.abs(full).max()),
                "d2": _window_max(full, 2), "grid": float(min(size)), "share": share, "glyph": glyph,
                "doc": 1.0}
    size, share = _grid(a, b, THUMB // 2)
    if size == (THUMB // 2, THUMB // 2):
        half = _blur(_half(ta)) - _blur(_half(tb))
    else:  # a copy with fewer than 80 pixels a side: both at what it can still show
        half = _blur(_resample(ta, size)) - _blur(_resample(tb, size))
    return {"mad": float(np.abs(half).mean()), "p1": float(np.abs(half).max()),
            "p2": _window_max(half, 2), "p4": _window_max(half, 4), "doc": 0.0}


def same_picture(a: Fingerprint, b: Fingerprint) -> tuple[bool, str]:
    """Whether ``a`` and ``b`` are one picture (re-encoded, resized, converted): (decision, reason).

    Conservative: different photos of one scene, mirrored, rotated or cropped images, an
    object added or removed, and documents whose text differs are answered False.
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
    if len(a.thumb) != len(b.thumb):
        return False, "one is document-like (flat background), the other is not"
    ev = thumb_evidence(a, b)
    text = ev["doc"] == 1.0
    if text and ev["share"] < _MIN_GRID_SHARE:
        return False, (f"document-like, too small to verify: the smaller copy keeps {ev['share']:.0%} of the "
                       f"larger one's grid (< {_MIN_GRID_SHARE:.0%}), where a changed glyph would not show")
    fine = text and ev["glyph"] < _GLYPH_MIN
    limits = (_FINE_TEXT_LIMITS if fine else _TEXT_LIMITS) if text else _PHOTO_LIMITS
    over = [f"{k} {ev[k]:.1f} > {v:g}" for k, v in limits.items() if ev[k] > v]
    kind = (f"document-like, {'fine' if fine else 'legible'} text ({ev['glyph']:.1f} px)" if text
            else "photo")
    if over:
        return False, f"thumbnails differ ({kind}): {', '.join(over)}; phash {dp}, dhash {dd}"
    figures = ", ".join(f"{k} {ev[k]:.1f}" for k in limits)
    return True, f"same picture ({kind}): {figures}; phash {dp}, dhash {dd}"
