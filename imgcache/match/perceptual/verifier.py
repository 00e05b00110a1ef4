"""The verifier: whether two fingerprints are one picture (re-encoded, resized, converted).

Hash distances only gate, they never decide: two invoices that differ only in their total hash
nearly alike. The thumbnails decide for photos; where either copy holds text-like detail, it
is compared again in the detail images, a document's on a grid where its lines are a few
pixels high and a photo's at all its smaller copy shows, so one changed digit shows, and a copy
too small to show it is a miss. A wrong "same" is worse than a miss. Figures and
limits: README.md, "Vision: fingerprints and the verifier".
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ImageError
from .detail import _KEEP, _MARK, _TEXT, _TILE, _Detail, _dilate, _unpack_detail
from .fingerprint import THUMB, Fingerprint

__all__ = ["same_picture", "thumb_evidence"]

# -- verifier limits (chosen from benchmarks/bench_perceptual.py; conservative) ---------------
_ASPECT_TOLERANCE = 0.03     # relative difference of width/height
_PHASH_MAX = 10              # Hamming distance gates, of 64 bits
_DHASH_MAX = 12
# photos, at half resolution (64x64, blurred): see thumb_evidence
_PHOTO_LIMITS = {"mad": 2.5, "p1": 8.0, "p2": 7.0, "p4": 4.5}

# -- the detail comparison (see _detail_evidence) ---------------------------------------------
_COMPARE_AROUND = 1   # tiles compared around text tiles
_MISSING_TILES = 3    # text tiles of one copy the other may hold no pixels for (read as texture)
_GLYPH_GRID = 7.0     # text is compared on a grid where its lines are this many pixels high
_RESIZED_GRID = 0.75  # ... at most this share of the smaller copy's detail when sizes differ
_DETAIL_BLUR = 0.3    # sigma (grid pixels) of the blur both sides get before comparing
_TEXT_LIMITS = {"d1": 96.0, "d2": 34.0}
_FINE_TEXT_LIMITS = {"d1": 40.0, "d2": 12.0}
# -- a photo's incidental text (signs, labels): compared at the scale both copies show -------
_PHOTO_TEXT_LIMITS = {"d1": 96.0, "d2": 34.0}
_MISSING_PHOTO_TILES = 12  # text tiles of one copy the other holds no pixels for, in a photo
_PHOTO_LEGIBLE = 3.0  # lines (pixels) under which a copy cannot show which glyph is there


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


def _has_text(d: _Detail) -> bool:
    """Whether a copy shows what must be compared: text tiles, or strokes on a calm background
    (a price on a small sign, found in neither copy's text)."""
    return d.text > 0 or bool((d.flags & _MARK).any())


def _detail_evidence(a: Fingerprint, b: Fingerprint) -> dict[str, float]:
    """The detail comparison's figures (see :func:`thumb_evidence`)."""
    da = _unpack_detail(a.detail) if a.detail else None
    db = _unpack_detail(b.detail) if b.detail else None
    # a plain detail image (no text found) stands for its copy's pixels against what the other
    # copy's scan took for text or strokes (or against its own strokes); readable text must be
    # found in both copies
    if da is not None and da.plain and (db is None or db.strong):
        da = None
    if db is not None and db.plain and (da is None or da.strong):
        db = None
    doc = any(d is not None and d.document for d in (da, db))
    ev: dict[str, float] = {"doc": float(doc), "text": float(any(d is not None and _has_text(d) for d in (da, db)))}
    if not ev["text"]:
        return ev
    if da is None or db is None:  # one copy shows no text-like detail at all
        (have, fp), other = ((da, a), b) if da is not None else ((db, b), a)
        glyph = have.glyph * have.scale * min(other.width / fp.width, other.height / fp.height)
        ev.update(glyph=glyph, missing=float(have.text))
        smaller = other.width * other.height < fp.width * fp.height
        doc = have.document and (smaller or other.width * other.height == fp.width * fp.height)
        ev["doc"] = float(doc)
        small = smaller and glyph * (_RESIZED_GRID if doc else 1.0) < (_GLYPH_GRID if doc else _PHOTO_LEGIBLE)
        if small:  # its text is too small to show in the other copy: a miss if it is readable text
            ev["small"] = 1.0
            refused = doc or have.strong
        else:
            refused = have.text > _MISSING_TILES
        return {**ev, **_NO_DETAIL} if refused else ev
    small, big = (da, db) if da.pixels.size <= db.pixels.size else (db, da)
    (sh, sw), (bh, bw) = small.pixels.shape, big.pixels.shape
    same = abs(a.width - b.width) <= 1 and abs(a.height - b.height) <= 1
    # the text's line height in pixels of the smaller detail image: that of the larger copy if it
    # holds readable text (more pixels to measure), the smaller of both when they are of one size
    if same:
        glyphs = [(d.glyph * sh / d.pixels.shape[0], d.strong) for d in (da, db) if not d.plain]
        glyph = min((g for g, strong in glyphs if strong), default=min((g for g, _ in glyphs), default=0.0))
    else:
        glyph = big.glyph * sh / bh if big.strong or not small.glyph else small.glyph
    ev.update(glyph=glyph, same=float(same), missing=0.0)
    doc = (da.document or db.document) if same else big.document  # resized: the larger copy shows more
    ev["doc"] = float(doc)
    if doc and (glyph <= 0 or (not same and glyph * _RESIZED_GRID < _GLYPH_GRID)):
        return {**ev, "small": 1.0, **_NO_DETAIL}
    if not same and big.strong and glyph * small.scale < _PHOTO_LEGIBLE:  # a photo's readable text, too small
        return {**ev, "small": 1.0, **_NO_DETAIL}
    # a document at glyph scale; a photo's text at all the smaller copy shows
    scale = min(1.0, _GLYPH_GRID / glyph) if glyph > 0 and doc else 1.0
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
    if ev["missing"] > (_MISSING_TILES if doc else _MISSING_PHOTO_TILES) and (doc or same):
        return {**ev, **_NO_DETAIL}
    if not doc:  # a photo: every tile both copies keep (a sign's digits need not read as text)
        region |= _at_grid((big.flags & _KEEP) > 0, big.pixels.shape, size) | _at_grid(
            (small.flags & _KEEP) > 0, small.pixels.shape, size)
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

    ``text`` is 1.0 when either copy holds text tiles or tiles with strokes, ``doc`` when the pair is judged as a
    document (see :func:`~imgcache.match.perceptual.detail._analyse`); with text, also:
    ``glyph``, the height of its lines in pixels of the smaller copy's detail image (0 if
    unknown); ``missing``, the text tiles of one copy the other holds no pixels for (all of
    them when a copy has no detail image); ``small`` (1.0 when the smaller copy's lines are too
    small to verify: not compared); ``same`` (1.0 when both copies are of one size); and, when
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
    if not dev["text"]:
        return True, f"same picture (photo): {photo}; phash {dp}, dhash {dd}"
    doc = bool(dev["doc"])
    if dev.get("small") and not math.isfinite(dev.get("d2", 0.0)):
        least = _GLYPH_GRID / _RESIZED_GRID if doc else _PHOTO_LEGIBLE
        return False, (f"{'document' if doc else 'readable text in a photo'}, too small to verify: its lines span "
                       f"{dev['glyph']:.1f} pixels of the smaller copy, fewer than {least:.0f}, where a changed "
                       "glyph would not show")
    if not math.isfinite(dev.get("d2", 0.0)):
        return False, (f"text-like detail in one copy only: {dev['missing']:.0f} tiles of text where the other "
                       "copy shows texture or nothing")
    if "d2" not in dev:
        why = (f"its text, {dev['glyph']:.1f} px lines in the smaller copy, too small there to compare"
               if dev.get("small") else f"{dev['missing']:.0f} tiles of text-like detail in one copy only")
        return True, f"same picture (photo; {why}): {photo}; phash {dp}, dhash {dd}"
    fine = bool(dev["fine"])
    limits = (_FINE_TEXT_LIMITS if fine else _TEXT_LIMITS) if doc else _PHOTO_TEXT_LIMITS
    kind = (f"{'document' if doc else 'text in a photo'}, {'fine' if fine else 'legible'} text "
            f"({dev['glyph']:.1f} px lines, grid {dev['grid']:.0f})")
    over = [f"{k} {dev[k]:.1f} > {v:g}" for k, v in limits.items() if dev[k] > v]
    if over:
        return False, f"detail differs ({kind}): {', '.join(over)}; {photo}; phash {dp}, dhash {dd}"
    figures = ", ".join(f"{k} {dev[k]:.1f}" for k in limits)
    return True, f"same picture ({kind}): {figures}; {photo}; phash {dp}, dhash {dd}"
