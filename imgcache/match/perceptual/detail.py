"""Text-like detail: which tiles of an image hold text, and the detail image kept of them.

Hashes and a 128 px thumbnail show a page, not its digits, so an image holding text keeps the
tiles around its text at up to :data:`DOC_THUMB` pixels (quantized, PNG), with the height of
its lines, for the verifier to compare at glyph scale; any other image keeps a plain detail
image, the whole picture at up to :data:`PLAIN_SIDE` pixels, which stands for its pixels should
a copy of it read as text. The scan errs towards missing text: text it misses is left to the
thumbnails, and a photo it mistakes for text only loses small copies.
What it fires on, and the sizes kept: README.md, "Vision: fingerprints and the verifier".
"""

from __future__ import annotations

import functools
import io
import json
import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

DOC_THUMB = 1024
"""Longest side of the detail image kept for an image holding text-like detail (documents,
screenshots, a photographed receipt, a caption): grayscale, the tiles around text kept,
PNG-compressed (about 10-70 KiB)."""

PLAIN_SIDE = 512
"""Longest side of the plain detail image every other image keeps: the whole picture,
grayscale, JPEG (about 20-45 KiB), so that a copy of it that does hold text (or loses some
in re-encoding) is compared with pixels rather than with nothing."""
_PLAIN_QUALITY = 85

# -- text-like detail (see _analyse) ----------------------------------------------------------
_TILE = 16            # detail pixels per tile side
_CALM_WINDOW = 16     # a tile's background: the 16-level window holding most of its pixels
_INK_LEVEL = 40       # a pixel this far from its tile's background is ink
_HALO_LEVEL = 100     # ... and, over texture, this far from its median (see _scan)
_TEXT_INK = (0.03, 0.6)   # share of ink in a text tile


@dataclass(frozen=True)
class _Rules:
    """What a text tile must show (see :func:`_analyse`)."""

    calm: float       # share of its pixels on its background
    crossings: float  # ink/background crossings per inked row (strokes)
    polarity: float   # share of its ink on one side of its background (dark or light)
    gap_rows: int     # rows without ink (between its lines)
    aligned: float    # share of inked rows it has in common with a text tile beside it


_STRICT = _Rules(calm=0.4, crossings=2.5, polarity=0.9, gap_rows=2, aligned=0.6)
"""Text: what is compared, and what makes an image hold readable text."""
_LOOSE = _Rules(calm=0.3, crossings=1.8, polarity=0.75, gap_rows=1, aligned=0.4)
"""Text that may be: kept (with its neighbours) but not compared. Re-encoding moves a tile's
measures a little; a tile strict in one copy is loose in the other, so both keep its pixels."""
_DOCUMENT_TEXT = 0.05   # share of tiles that are text in a document (a page, a receipt) ...
_DOCUMENT_FLAT = 0.85   # ... or of flat tiles around its text (a screen, a sparse page)
_FLAT_CALM = 0.9              # a flat tile: this share of its pixels on its background
_LINE_TILES = 3       # text tiles side by side from which an image holds text to verify (or
_TEXT_STRONG = 12     # text tiles in all, at one scale) ...
_READABLE = 4.0       # ... if its lines are this many pixels high in the image itself
_LARGE_TEXT = 10      # the half-size scan counts text whose lines are this high (the other is
                      # found by the full-size one)
_GLYPH_RUNS = 4       # line heights needed for a line height
_KEEP_AROUND = 2      # tiles kept around text tiles (near them, flat ones as their mean)
_LOOSE_ALONE = 24     # tiles of loose text that make an image without text keep its detail (twice
                      # the text tiles the verifier lets go as text in one copy only, in a photo)
_FLAT_RANGE = 24      # a flat tile: all its pixels within this many levels
_QUANT = 4            # the stored detail keeps every _QUANT-th gray level

_KEEP, _FLAT, _TEXT, _MARK = 1, 2, 4, 8  # tile flags
_POPCOUNT = np.array([i.bit_count() for i in range(256)], np.int32)
_DETAIL_MAGIC = b"IMGD\x02"


@dataclass(frozen=True)
class _Detail:
    """A detail image and what :func:`_analyse` found in it."""

    pixels: np.ndarray  # (h, w) uint8; tiles not kept hold their mean
    flags: np.ndarray   # (ceil(h / _TILE), ceil(w / _TILE)) uint8: _KEEP | _FLAT | _TEXT | _MARK
    glyph: float        # height of the text's lines, in pixels of ``pixels``; 0 if unknown
    text: int           # text tiles
    scale: float        # pixels of the image per pixel of ``pixels`` (1 or more)
    strong: bool        # holds readable text (see _analyse)
    document: bool      # text is its content: it must be verified at glyph scale (see _analyse)
    plain: bool = False  # the whole picture, no text found (see _pack_plain)

    def data(self) -> np.ndarray:
        """Tiles whose pixels are stored (kept, or flat and stored as their mean; all, if plain)."""
        return np.ones(self.flags.shape, bool) if self.plain else (self.flags & (_KEEP | _FLAT)) > 0


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


@dataclass
class _Found:
    """What :func:`_scan` finds in one image."""

    text: np.ndarray   # (rows, columns) of tiles: text by the _STRICT rules
    maybe: np.ndarray  # ... text by the _LOOSE rules (text included)
    marks: np.ndarray  # tiles with strokes on a calm background, in a line or not (a lone number)
    runs: np.ndarray   # heights of the text's lines (see _line_heights)
    flat: float        # share of tiles with _FLAT_CALM of their pixels on their background


def _scan(*images: tuple[np.ndarray, bool]) -> list[_Found]:
    """Per (array, halos) of ``images``: what it holds (see :func:`_analyse`; ``halos``: also
    text set off from texture by a halo). The arrays' tiles are measured together (one pass of
    each step for all of them)."""
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

    calm_ink = (calm >= _STRICT.calm) & (beyond(level, _INK_LEVEL) > 0)
    # text over texture (a watermark, a caption on a photo) is set off by a halo or an outline:
    # there, ink is what lies _HALO_LEVEL off the tile's median, on the side that has more of it
    halo = ~calm_ink & (beyond(median, _HALO_LEVEL) > 0)
    for (ty, tx), start, size, (_, halos) in zip(shapes, first, sizes, images):
        grid = halo[start:start + size].reshape(ty, tx)
        beside = np.zeros_like(grid)  # text over texture only counts in lines: a tile of it beside
        beside[:, 1:] |= grid[:, :-1]
        beside[:, :-1] |= grid[:, 1:]
        grid &= beside & halos
    loose_calm = ~calm_ink & ~halo & (calm >= _LOOSE.calm) & (beyond(level, _INK_LEVEL) > 0)
    cand = np.flatnonzero(calm_ink | halo | loose_calm)
    strict_cand = ~loose_calm[cand]
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
    # haloed tiles: the side with more ink is the glyphs (the other, their outline)
    bits = np.where(~haloed[:, None], dark | light, np.where((n_light >= n_dark)[:, None], light, dark))
    share = np.where(~haloed, n_dark + n_light, np.where(n_light >= n_dark, n_light, n_dark)) / (_TILE * _TILE)
    rows = bits != 0  # (k, _TILE): the tile's inked rows
    inked = rows.sum(axis=1)
    crossings = _popcount((bits ^ (bits >> 1)) & 0x7FFF).sum(axis=1) / np.maximum(inked, 1)  # ink to paper
    inky = (share >= _TEXT_INK[0]) & (share <= _TEXT_INK[1])
    sided = np.maximum(n_dark, n_light) / np.maximum(n_dark + n_light, 1)

    def marked(rules: _Rules) -> np.ndarray:
        return inky & (crossings >= rules.crossings) & (haloed | (sided >= rules.polarity))

    strict, loose = marked(_STRICT) & strict_cand, marked(_LOOSE)
    found = []
    for i, ((ty, tx), start, (arr, _)) in enumerate(zip(shapes, first, images)):
        mine = np.flatnonzero(image == i)
        at = local[mine]
        marks = np.zeros(ty * tx, bool)  # strokes on a calm background, in a line or not (a lone number)
        marks[at[strict[mine] & ~haloed[mine]]] = True
        text, maybe = (_text_lines(rules, at, (flags & (inked <= _TILE - rules.gap_rows))[mine], rows[mine], ty, tx)
                       for rules, flags in ((_STRICT, strict), (_LOOSE, loose)))
        lined = _in_lines(text)  # a line's height is measured on lines, not on scattered texture
        runs = (_line_heights(arr, lined if lined.any() else text, at, mine, haloed, low, high, n_dark, n_light, tx)
                if text.any() else np.zeros(0, np.intp))
        flat = float((calm[start:start + ty * tx] >= _FLAT_CALM).mean())
        found.append(_Found(text, maybe | text, marks.reshape(ty, tx), runs, flat))
    return found


def _text_lines(rules: _Rules, at: np.ndarray, strokes: np.ndarray, rows: np.ndarray, ty: int, tx: int) -> np.ndarray:
    """Of the tiles ``at`` with ``strokes`` (and their inked ``rows``), those in a line of text:
    a tile's inked rows are mostly those of a tile with strokes beside it."""
    text = np.zeros(ty * tx, bool)
    text[at[strokes]] = True
    text = text.reshape(ty, tx)
    if not text.any():
        return text
    profile = np.zeros((ty * tx, _TILE), bool)
    profile[at] = rows
    profile = profile.reshape(ty, tx, _TILE)
    both = (profile[:, 1:] & profile[:, :-1]).sum(axis=2)
    either = (profile[:, 1:] | profile[:, :-1]).sum(axis=2)
    aligned = text[:, 1:] & text[:, :-1] & (both >= rules.aligned * np.maximum(either, 1))
    text[:] = False
    text[:, 1:] |= aligned
    text[:, :-1] |= aligned
    return text


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


def _in_lines(text: np.ndarray) -> np.ndarray:
    """The text tiles that stand in a row of _LINE_TILES or more side by side."""
    n = text.shape[1] - _LINE_TILES + 1
    out = np.zeros_like(text)
    if n <= 0:
        return out
    run = text[:, :n].copy()
    for k in range(1, _LINE_TILES):
        run &= text[:, k:n + k]
    for k in range(_LINE_TILES):
        out[:, k:n + k] |= run
    return out


def _lines(text: np.ndarray) -> bool:
    """Whether ``text`` holds a line of text: _LINE_TILES text tiles side by side, or
    _TEXT_STRONG text tiles in all."""
    return bool(_in_lines(text).any()) or int(text.sum()) >= _TEXT_STRONG


def _analyse(arr: np.ndarray, scale: float) -> _Scan:
    """What a detail image showing the image at 1 / ``scale`` holds: text tiles, tiles with
    strokes, the height of the text's lines, whether it holds readable text, and whether it is
    a document.

    Per tile of _TILE x _TILE pixels: its background is the _CALM_WINDOW-level window holding
    most of its pixels (sampled every other pixel); ink is what lies _INK_LEVEL or more off it.
    A tile with strokes has a calm background (_TEXT_CALM of its pixels), ink covering
    _TEXT_INK of it, nearly all on one side of the background (dark on light or light on dark:
    _TEXT_POLARITY), and many crossings between ink and background along its inked rows (not
    an object's outline). A text tile also has rows without ink (between lines: not a railing
    or a lattice), and a tile of the kind beside it whose inked rows are mostly its own (a line
    of text, not the odd patch of a photo). The image is scanned at its size and at half of it
    (text too large for a tile). The lines' height is the lower quartile of the runs of inked
    rows (2+ pixels) in the text tiles that stand in lines (_LINE_TILES side by side; all text
    tiles when none do: grass or brick read as scattered text tiles must not set a sign's line
    height): dots and lower-case letters only lower it, towards a miss. The image holds
    readable text if either scan finds a line of text (see :func:`_lines`) whose lines are
    _READABLE pixels high in the image itself (and, for the half-size scan, _LARGE_TEXT pixels
    of the detail image)."""
    from PIL import Image

    h, w = arr.shape
    if min(h, w) >= 4 * _TILE:
        half = np.asarray(Image.fromarray(arr).reduce(2))  # 2 x 2 means
        fine, coarse = _scan((arr, True), (half, False))
        scans = [(fine, _lines(fine.text), 1), (coarse, _lines(coarse.text), 2)]
        for mask in ("text", "maybe", "marks"):
            into = getattr(fine, mask)
            up = np.repeat(np.repeat(getattr(coarse, mask), 2, axis=0), 2, axis=1)[:into.shape[0], :into.shape[1]]
            into[:up.shape[0], :up.shape[1]] |= up
    else:
        [fine] = _scan((arr, True))
        scans = [(fine, _lines(fine.text), 1)]
    glyph, strong = 0.0, False
    for found, in_lines, factor in scans:
        lines = found.runs
        height = factor * float(np.percentile(lines, 25)) if lines.size >= _GLYPH_RUNS else 0.0
        if in_lines and height * scale >= _READABLE and height >= (factor - 1) * _LARGE_TEXT:
            glyph, strong = height, True
            break
        glyph = glyph or height
    share = float(fine.text.mean())
    document = strong and (share >= _DOCUMENT_TEXT or fine.flat >= _DOCUMENT_FLAT)
    return _Scan(fine.text, fine.maybe, fine.marks, glyph, strong, document)


@dataclass(frozen=True)
class _Scan:
    """What :func:`_analyse` finds in an image."""

    text: np.ndarray   # text tiles (the _STRICT rules, either scan)
    maybe: np.ndarray  # tiles that may be text (the _LOOSE rules): kept, not compared
    marks: np.ndarray  # tiles with strokes on a calm background (a lone number)
    glyph: float       # height of the text's lines in pixels of the detail image; 0 if unknown
    strong: bool       # holds readable text
    document: bool     # text is its content (a page, a screen, a receipt), not a detail of a photo

    @property
    def kept(self) -> bool:
        """Whether the image keeps a detail image: it holds text, or loose text in _LOOSE_ALONE tiles."""
        return bool(self.text.any()) or int(self.maybe.sum()) >= _LOOSE_ALONE


def _pack_detail(arr: np.ndarray, scan: _Scan, scale: float) -> bytes:
    """The detail blob: _DETAIL_MAGIC, a 2-byte length and a JSON header (size, tile, line
    height, text tiles, scale, readable text, document), a 4-byte length and the tile flags and the
    tiles' mean levels (a byte each per tile, row by row; zlib), then a PNG of the kept tiles,
    quantized to every _QUANT-th level. Kept: the tiles within _KEEP_AROUND of text and next to
    what may be text (so that both copies of a picture keep the tiles either reads as text), and
    every tile with strokes and its neighbours (a lone price on a sign, anywhere); around those, the
    flat tiles (all pixels within _FLAT_RANGE levels) are recorded as their mean (paper, a
    screen's background). Other tiles only have their mean, which compares with nothing."""
    from PIL import Image

    h, w = arr.shape
    b = _tiles(arr)
    means = np.asarray(Image.fromarray(arr).reduce(_TILE))
    text, strong = scan.text, scan.strong
    near = _dilate(text, _KEEP_AROUND)
    marks = scan.marks & ~text
    keep = near | _dilate(scan.maybe, 1) | _dilate(marks, 1)
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
    Image.fromarray(mosaic, "L").save(buf, "PNG", compress_level=1)
    flags = (np.where(keep, _KEEP, 0) | np.where(flat, _FLAT, 0) | np.where(text, _TEXT, 0)
             | np.where(marks, _MARK, 0)).astype(np.uint8)
    header = {"w": w, "h": h, "tile": _TILE, "glyph": round(scan.glyph, 2), "text": int(text.sum()),
              "scale": round(scale, 4), "strong": strong, "doc": scan.document}
    return _blob(header, flags.tobytes() + means.tobytes(), buf.getvalue())


def _pack_plain(arr: np.ndarray, scale: float, marks: np.ndarray) -> bytes:
    """The plain detail blob of an image without text-like detail: the layout of
    :func:`_pack_detail` (header with ``"plain": true``; of the tile flags only _MARK, the
    scan's ``marks`` on the plain image's tiles) with the whole picture brought within
    PLAIN_SIDE, as a grayscale JPEG, instead of a mosaic of tiles."""
    from PIL import Image

    im = Image.fromarray(arr)
    h, w = arr.shape
    if max(h, w) > PLAIN_SIDE:
        factor = PLAIN_SIDE / max(h, w)
        w, h = max(1, round(w * factor)), max(1, round(h * factor))
        im = im.resize((w, h), Image.Resampling.LANCZOS)
        scale *= arr.shape[1] / w
    ty, tx = -(-h // _TILE), -(-w // _TILE)
    flags = np.zeros((ty, tx), np.uint8)
    at = np.argwhere(marks)  # each marked tile of ``arr`` marks the plain tile its centre falls in
    ry = np.minimum(((at[:, 0] + 0.5) * (h / arr.shape[0])).astype(np.intp), ty - 1)
    rx = np.minimum(((at[:, 1] + 0.5) * (w / arr.shape[1])).astype(np.intp), tx - 1)
    flags[ry, rx] = _MARK
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=_PLAIN_QUALITY)
    header = {"w": w, "h": h, "tile": _TILE, "glyph": 0, "text": 0, "scale": round(scale, 4), "strong": False,
              "doc": False, "plain": True}
    return _blob(header, flags.tobytes() + bytes(ty * tx), buf.getvalue())  # the means are not needed


def _blob(header: dict[str, object], table: bytes, image: bytes) -> bytes:
    """_DETAIL_MAGIC, the JSON ``header`` and the zlib-compressed ``table`` (each after its
    length), then the ``image``'s bytes: the layout :func:`_unpack_detail` reads."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    packed = zlib.compress(table, 6)
    return _DETAIL_MAGIC + len(head).to_bytes(2, "big") + head + len(packed).to_bytes(4, "big") + packed + image


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
        document = head.get("doc", strong)  # written before documents were told from photos: as one
        plain = head.get("plain", False)
        if (not all(isinstance(v, int) for v in (w, h, tile, text)) or tile != _TILE or text < 0
                or not isinstance(strong, bool) or not isinstance(document, bool) or not isinstance(plain, bool)
                or (plain and (text or strong or document or max(w, h) > PLAIN_SIDE))
                or not 0 < max(w, h) <= DOC_THUMB or min(w, h) < 1
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
        if plain:
            if (flags & (_KEEP | _FLAT | _TEXT)).any():
                raise ValueError("tile flags other than marks in a plain detail image")
            return _Detail(_decode_plain(blob[end:], (w, h)), flags, 0.0, 0, scale, False, False, True)
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
        return _Detail(pixels, flags, glyph, text, scale, strong, document)
    except ValueError:
        raise
    except Exception as exc:  # json, PIL and struct errors alike
        raise ValueError(f"not a detail image: {exc!r}") from exc


def _decode_plain(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The plain detail's JPEG, which must be grayscale and of ``size`` (checked before decoding)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = Image.open(io.BytesIO(data), formats=["JPEG"])
        if im.mode != "L" or im.size != size:
            raise ValueError(f"a {im.mode} {im.size} plain image, not L {size}")
        im.load()
    return np.asarray(im)
