"""Perceptual fingerprints: verifier accuracy on the eval images, and fingerprint speed.

    python benchmarks/bench_perceptual.py [--quick] [--json] [--strict] [--show-errors]

Accuracy (``perceptual_accuracy``): every image of ``../shared/eval/images`` (and a sample of
the potato burst, and invoices and text screens rendered here with Pillow's default font) is
fingerprinted as stored, then queried with variants of the same picture (JPEG quality 50-95,
resized to 50% and 25%, converted to PNG / WebP / JPEG, metadata stripped) that must hit, and
with different pictures that must not: neighbouring frames of the burst (also re-encoded), the
stereo pair, mirrored and rotated copies, crops of another region, an object added or removed,
documents differing in one number or word, and every other pair of distinct images.
Targets from issue 4: hit rate >= 95%, false accepts <= 0.5%.

Speed (``fingerprint_jpeg_1024``, ``fingerprint_png_1024``): :func:`fingerprint` of a 1024x1024
file against Pillow's bare full decode of the same file (``Image.open(...).load()``), side by
side. Targets: JPEG p50 <= 5 ms; PNG <= 1.5x the bare decode.

Exit status is 0 whatever the figures unless a benchmark could not run; ``--strict`` also
exits 1 when a target is missed.
"""

from __future__ import annotations

import io
import itertools
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Result,
    compare,
    emit_json,
    exit_code,
    parser,
    print_facts,
    report,
    report_stream,
    run_guarded,
    summary,
    table,
)
from PIL import Image, ImageDraw, ImageFont

from imgcache.match.perceptual import (
    _GLYPH_MIN,
    _MIN_GRID_SHARE,
    Fingerprint,
    fingerprint,
    same_picture,
    thumb_evidence,
)

EVAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "eval" / "images"
HIT_TARGET = 0.95
FALSE_ACCEPT_TARGET = 0.005
JPEG_P50_MS = 5.0
PNG_MAX_RATIO = 1.5

# -- images ------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        img = flatten(img)
    img.save(buf, fmt, **options)
    return buf.getvalue()


def flatten(img: Image.Image) -> Image.Image:
    """RGBA/LA/P on white, as a user saving a transparent image as JPEG would do."""
    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB") if img.mode not in ("L", "RGB") else img


def render_invoice(total: str, *, item: str = "Widgets, box of 12", size: tuple[int, int] = (600, 800),
                   seed: int = 0, font_size: int | None = None,
                   stamp: tuple[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """A plain invoice drawn with Pillow's default font; ``total`` is the only varying field
    (``stamp``: a small coloured stamp, its word and colour, near the foot)."""
    rnd = random.Random(seed)
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default() if font_size is None else ImageFont.load_default(size=font_size)
    big = ImageFont.load_default(size=24) if hasattr(ImageFont, "FreeTypeFont") else font
    w, h = size
    d.text((40, 30), f"INVOICE #{1000 + seed}", fill="black", font=big)
    d.text((40, 70), "ACME Supplies Ltd., 12 High Street, Springfield", fill="black", font=font)
    d.text((40, 86), "Date: 2024-03-14    Due: 2024-04-13", fill="black", font=font)
    d.line((40, 120, w - 40, 120), fill="black", width=1)
    y = 135
    for row in range(12):
        qty = rnd.randint(1, 9)
        price = rnd.randint(100, 9999) / 100
        d.text((40, y), f"{item} #{row + 1}", fill="black", font=font)
        d.text((w - 220, y), f"{qty} x {price:8.2f}", fill="black", font=font)
        d.text((w - 110, y), f"{qty * price:9.2f}", fill="black", font=font)
        y += 22
    d.line((40, y + 5, w - 40, y + 5), fill="black", width=1)
    d.text((w - 220, y + 20), "TOTAL", fill="black", font=font)
    d.text((w - 110, y + 20), total, fill="black", font=font)
    d.text((40, h - 60), "Thank you for your business. Payment by bank transfer.", fill="gray",
           font=font)
    if stamp is not None:
        word, color = stamp
        x, y = w - 200, h - 130
        d.rounded_rectangle((x, y, x + 110, y + 40), 6, outline=color, width=3)
        d.text((x + 16, y + 8), word, fill=color, font=ImageFont.load_default(size=20))
    return img


def render_screen(word: str, *, size: tuple[int, int] = (800, 500), font_size: int = 14) -> Image.Image:
    """A chat-app-like screenshot; ``word`` is the one word that varies."""
    img = Image.new("RGB", size, (245, 245, 250))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    d.rectangle((0, 0, size[0], 40), fill=(40, 90, 160))
    d.text((16, 12), "Messages - Support", fill="white", font=font)
    lines = ["Hi, I ordered the blue jacket last week.", "The tracking number says it shipped",
             f"to {word} instead of my address.", "Can you please check the order 48213?",
             "Thanks, Sam"]
    y = 70
    for i, line in enumerate(lines):
        x = 20 if i % 2 == 0 else 300
        d.rounded_rectangle((x, y - 6, x + 460, y + 24), 8, fill=(255, 255, 255), outline=(200, 200, 210))
        d.text((x + 10, y), line, fill=(20, 20, 20), font=font)
        y += 56
    return img


def render_receipt(total: str, *, size: tuple[int, int] = (900, 1200), seed: int = 3) -> Image.Image:
    """A till receipt on a wooden (textured) table, tilted and unevenly lit, as photographed;
    ``total`` is the only varying field. Known risk: it is classed as a photo."""
    import numpy as np

    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    w, h = size
    grain = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1))
    grain = np.asarray(Image.fromarray(((grain - grain.min()) / np.ptp(grain) * 255).astype(np.uint8))
                       .resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    y, x = np.mgrid[0:h, 0:w]
    wave = 20 * np.sin(x / 7.0 + 3 * np.sin(y / 40.0))
    wood = np.stack([110 + 0.35 * grain + wave, 70 + 0.25 * grain + 0.7 * wave, 40 + 0.15 * grain + 0.4 * wave], -1)
    table = Image.fromarray(wood.clip(0, 255).astype(np.uint8), "RGB")
    pw, ph = int(w * 0.42), int(h * 0.8)
    paper = Image.new("RGB", (pw, ph), (238, 234, 225))
    d = ImageDraw.Draw(paper)
    font = ImageFont.load_default(size=14)
    d.text((20, 20), "CORNER GROCERY", fill=(30, 30, 30), font=ImageFont.load_default(size=20))
    row = 70
    while row < ph - 120:
        d.text((20, row), f"ITEM {rnd.randint(100, 999)}", fill=(40, 40, 40), font=font)
        d.text((pw - 90, row), f"{rnd.randint(100, 2000) / 100:6.2f}", fill=(40, 40, 40), font=font)
        row += 24
    d.text((20, row + 14), "TOTAL", fill=(20, 20, 20), font=font)
    d.text((pw - 90, row + 14), total, fill=(20, 20, 20), font=font)
    mask = Image.new("L", (pw, ph), 255).rotate(2.0, resample=Image.Resampling.BICUBIC, expand=True)
    paper = paper.rotate(2.0, resample=Image.Resampling.BICUBIC, expand=True)
    table.paste(paper, ((w - paper.width) // 2, (h - paper.height) // 2), mask)
    light = (0.8 + 0.25 * x / w - 0.1 * y / h)[..., None]
    arr = np.asarray(table, dtype=np.float64) * light + rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def hard_documents() -> dict[str, list[Image.Image]]:
    """Families of documents that differ in one field only, the first one the reference: other
    font sizes and page sizes than the benchmark's own render, totals one digit apart, a word in
    a larger screenshot, a colour stamp, a photographed receipt."""
    totals = ["1,234.50", "1,234.60", "1,284.50", "1,284.60", "1,234.5O"]
    words = ["Portland", "Portlend", "Oakland"]
    return {
        "invoice8": [render_invoice(t, font_size=8) for t in totals],
        "invoice12": [render_invoice(t, font_size=12) for t in totals],
        "invoice16_a4": [render_invoice(t, font_size=16, size=(1240, 1754)) for t in totals],
        "screen12_1280": [render_screen(x, size=(1280, 800), font_size=12) for x in words],
        "screen16_1920": [render_screen(x, size=(1920, 1080), font_size=16) for x in words],
        "stamp": [render_invoice("1,234.50", font_size=12, stamp=s)
                  for s in (("PAID", (200, 0, 0)), ("PAID", (0, 0, 200)), ("VOID", (200, 0, 0)), None)],
        "receipt_photo": [render_receipt(t) for t in ("12.50", "12.80", "12.60", "72.50")],
    }


def with_object(img: Image.Image, seed: int, frac: float = 0.12) -> Image.Image:
    """A copy with a small filled ellipse (an added object) somewhere inside."""
    rnd = random.Random(seed)
    out = img.convert("RGB").copy()
    w, h = out.size
    s = max(4, int(min(w, h) * frac))
    x, y = rnd.randint(0, w - s), rnd.randint(0, h - s)
    color = tuple(rnd.randint(0, 255) for _ in range(3))
    ImageDraw.Draw(out).ellipse((x, y, x + s, y + s), fill=color, outline=(0, 0, 0))
    return out


def load_sources(quick: bool) -> dict[str, Image.Image]:
    """name -> decoded original; photos, a sample of the burst, and rendered documents."""
    sources: dict[str, Image.Image] = {}
    if EVAL.is_dir():
        for path in sorted(EVAL.glob("*.*")):
            if path.suffix.lower() in (".png", ".jpg"):
                with Image.open(path) as im:
                    im.load()
                    sources[path.stem] = im.copy()
        frames = sorted((EVAL / "potatoes").glob("*.png"))
        step = 4 if quick else 1
        for path in frames[::step]:
            with Image.open(path) as im:
                im.load()
                sources[f"potato_{path.stem[-4:]}"] = im.copy()
    totals = ["1,234.50", "1,284.50", "1,234.60", "7,234.50", "1,234.5O"]
    for i, total in enumerate(totals):
        sources[f"invoice_{i}"] = render_invoice(total)
    for i, word in enumerate(["Portland", "Portlend", "Oakland", "Richmond"]):
        sources[f"screen_{i}"] = render_screen(word)
    return sources


def same_variants(img: Image.Image) -> Iterator[tuple[str, bytes]]:
    """Encodings of the same picture that must hit."""
    w, h = img.size
    for q in (50, 75, 95):
        yield f"jpeg_q{q}", encode(img, "JPEG", quality=q)
    for scale in (0.5, 0.25):
        small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        yield f"resize_{int(scale * 100)}", encode(small, "PNG")
    yield "png", encode(img, "PNG")
    yield "webp_q80", encode(flatten(img) if img.mode not in ("L", "RGB") else img, "WEBP", quality=80)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x0110] = "Model X"
    with_meta = encode(img, "JPEG", quality=90, exif=exif.tobytes())
    stripped = Image.open(io.BytesIO(with_meta))
    stripped.load()
    yield "metadata_stripped", encode(stripped, "JPEG", quality=90)


def different_variants(img: Image.Image, seed: int) -> Iterator[tuple[str, bytes]]:
    """Transformations of one picture that make another one (must not hit)."""
    w, h = img.size
    rgb = img.convert("RGB")
    yield "mirrored", encode(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    yield "flipped", encode(img.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    yield "rot180", encode(img.transpose(Image.Transpose.ROTATE_180))
    yield "rot90", encode(img.transpose(Image.Transpose.ROTATE_90))
    yield "rot3deg", encode(rgb.rotate(3, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)))
    # a crop of another region, scaled back to the same size: same aspect ratio, other content
    for name, box in (("crop_shift", (w // 8, h // 8, w, h)), ("crop_corner", (0, 0, w * 3 // 4, h * 3 // 4))):
        yield name, encode(img.crop(box).resize((w, h), Image.Resampling.LANCZOS))
    yield "object_added", encode(with_object(img, seed))
    yield "object_added_jpeg", encode(with_object(img, seed + 1, 0.08), "JPEG", quality=85)


# -- accuracy ----------------------------------------------------------------------------------


Pair = tuple[str, bool, str, Fingerprint, Fingerprint]
"""(kind, same picture?, label, stored fingerprint, queried fingerprint)."""


def build_pairs(quick: bool) -> list[Pair]:
    """Every labelled pair of the evaluation."""
    sources = load_sources(quick)
    prints: dict[str, Fingerprint] = {name: fingerprint(encode(img)) for name, img in sources.items()}
    pairs: list[Pair] = []
    for seed, (name, img) in enumerate(sources.items()):
        for kind, data in same_variants(img):
            pairs.append((kind, True, name, prints[name], fingerprint(data)))
        for kind, data in different_variants(img, seed):
            pairs.append((kind, False, name, prints[name], fingerprint(data)))

    names = list(sources)
    potatoes = [n for n in names if n.startswith("potato_")]
    for a, b in itertools.pairwise(potatoes):
        pairs.append(("burst_neighbour", False, f"{a} / {b}", prints[a], prints[b]))
        pairs.append(("burst_neighbour_jpeg", False, f"{a} / {b} (q75)", prints[a],
                      fingerprint(encode(sources[b], "JPEG", quality=75))))
    if "motorcycle_left" in prints:
        pairs.append(("stereo_pair", False, "motorcycle", prints["motorcycle_left"],
                      prints["motorcycle_right"]))
    docs = [n for n in names if n.startswith(("invoice_", "screen_"))]
    for i, a in enumerate(docs):
        for b in docs[i + 1:]:
            if a.split("_")[0] != b.split("_")[0]:
                continue
            doc = sources[b]
            pairs.append(("document_text", False, f"{a} / {b}", prints[a], prints[b]))
            for q in (75, 95):
                pairs.append(("document_text_jpeg", False, f"{a} / {b} (q{q})", prints[a],
                              fingerprint(encode(doc, "JPEG", quality=q))))
            half = doc.resize((doc.width // 2, doc.height // 2), Image.Resampling.LANCZOS)
            pairs.append(("document_text_resized", False, f"{a} / {b} (50%)", prints[a],
                          fingerprint(encode(half))))
    for a, b in list(itertools.pairwise(potatoes))[::4]:
        small = sources[b].resize((sources[b].width // 4, sources[b].height // 4), Image.Resampling.LANCZOS)
        pairs.append(("burst_neighbour_resized", False, f"{a} / {b} (25%)", prints[a], fingerprint(encode(small))))
    for family, docs in hard_documents().items():
        ref = fingerprint(encode(docs[0]))
        for kind, data in same_variants(docs[0]):
            pairs.append((kind, True, f"hard:{family}", ref, fingerprint(data)))
        for i, doc in enumerate(docs[1:], 1):
            label = f"hard:{family} 0 / {i}"
            pairs.append(("hard_document_text", False, label, ref, fingerprint(encode(doc))))
            for q in (50, 75):
                pairs.append(("hard_document_text_jpeg", False, f"{label} (q{q})", ref,
                              fingerprint(encode(doc, "JPEG", quality=q))))
            for scale in (0.75, 0.5, 0.25):
                small = doc.resize((round(doc.width * scale), round(doc.height * scale)), Image.Resampling.LANCZOS)
                pairs.append(("hard_document_text_resized", False, f"{label} ({scale:.0%})", ref,
                              fingerprint(encode(small))))
    others = [n for n in names if n not in potatoes[1:]]
    for i, a in enumerate(others):
        for b in others[i + 1:]:
            pairs.append(("distinct_images", False, f"{a} / {b}", prints[a], prints[b]))
    return pairs


def evaluate(quick: bool) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[str, list[int]], list[str],
                                  dict[str, dict[str, list[tuple[float, str]]]]]:
    """``(same, hard, different, errors, evidence)``: per kind, [answered same, total]; a line
    per wrong answer; and, per comparison class, the thumbnail figures of every pair that
    reached the thumbnails (for the margins).

    Same-picture pairs of the issue's population (eval images, the burst, the benchmark's own
    renders) are counted in ``same``, also per group (``"all photos"``, ``"all documents"``);
    those of :func:`hard_documents` in ``hard``, per variant."""
    same: dict[str, list[int]] = {}
    hard: dict[str, list[int]] = {}
    diff: dict[str, list[int]] = {}
    errors: list[str] = []
    evidence: dict[str, dict[str, list[tuple[float, str]]]] = {}
    for kind, want, label, a, b in build_pairs(quick):
        got, reason = same_picture(a, b)
        if same_picture(b, a)[0] != got:
            raise AssertionError(f"asymmetric verdict: {kind} {label}")
        is_hard = label.startswith("hard:")
        counts = (hard if want and is_hard else same if want else diff).setdefault(kind, [0, 0])
        counts[0] += got
        counts[1] += 1
        if want:
            group = ("hard documents" if is_hard else "all documents"
                     if label.startswith(("invoice_", "screen_")) else "all photos")
            by_group = (hard if is_hard else same).setdefault(group, [0, 0])
            by_group[0] += got
            by_group[1] += 1
        if got != want:
            errors.append(f"{'MISS' if want else 'FALSE ACCEPT'} {kind}: {label}: {reason}")
        if len(a.thumb) == len(b.thumb) and a.sha256 != b.sha256 and "phash" in reason:
            ev = thumb_evidence(a, b)
            if ev["doc"] and not ev.get("share", 1.0) >= _MIN_GRID_SHARE:
                continue
            cls = "photo" if not ev["doc"] else "legible text" if ev["glyph"] >= _GLYPH_MIN else "fine text"
            side = "accepted positives" if want and got else "negatives" if not want else None
            if side is None:
                continue
            for measure, value in ev.items():
                if measure not in ("doc", "grid", "share", "glyph"):
                    evidence.setdefault(f"{cls}: {measure}", {}).setdefault(side, []).append(
                        (value, f"{kind}: {label}"))
    return same, hard, diff, errors, evidence


def margins(evidence: dict[str, dict[str, list[tuple[float, str]]]]) -> list[list[str]]:
    """Rows: per class and measure, the hardest accepted positive, the closest negative, ratio."""
    rows = []
    for key, sides in evidence.items():
        pos = max(sides.get("accepted positives", [(0.0, "-")]))
        neg = min(sides.get("negatives", [(float("inf"), "-")]))
        ratio = f"{neg[0] / pos[0]:.2f}" if pos[0] > 0 and neg[0] != float("inf") else "-"
        rows.append([key, f"{pos[0]:.1f}", pos[1][:48], f"{neg[0]:.1f}", neg[1][:48], ratio])
    return rows


def bench_accuracy(quick: bool, show_errors: bool, out: TextIO) -> Result:
    result = Result("perceptual_accuracy", "same_picture() on eval images + transformations + rendered "
                    "documents", "fingerprint + same_picture", "target")
    same, hard, diff, errors, evidence = evaluate(quick)
    groups = {k: same.pop(k) for k in ("all photos", "all documents") if k in same}
    hard_group = hard.pop("hard documents", [0, 0])
    hits = sum(v[0] for v in same.values())
    n_same = sum(v[1] for v in same.values())
    false = sum(v[0] for v in diff.values())
    n_diff = sum(v[1] for v in diff.values())
    hit_rate = hits / n_same
    fa_rate = false / n_diff
    rows = [[f"same: {k}", f"{v[0]}/{v[1]}", f"{v[0] / v[1]:.1%}"] for k, v in same.items()]
    rows += [[f"same, {k}", f"{v[0]}/{v[1]}", f"{v[0] / v[1]:.1%}"] for k, v in groups.items()]
    rows += [[f"same, hard documents: {k}", f"{v[0]}/{v[1]}", f"{v[0] / v[1]:.1%}"] for k, v in hard.items()]
    if hard_group[1]:
        rows.append(["same, hard documents", f"{hard_group[0]}/{hard_group[1]}",
                     f"{hard_group[0] / hard_group[1]:.1%}"])
    rows += [[f"different: {k}", f"{v[0]}/{v[1]}", f"{v[0] / v[1]:.1%}"] for k, v in diff.items()]
    print(f"\n== {result.name}: {result.title}", file=out)
    print(table(["pairs", "answered same", "rate"], rows), file=out)
    print(f"hit rate (same picture):     {hit_rate:.2%} of {n_same}   (baseline target >= {HIT_TARGET:.0%}; "
          f"eval images, burst and the benchmark's own documents)", file=out)
    both = (hits + hard_group[0]) / (n_same + hard_group[1])
    print(f"  with the hard documents:   {both:.2%} of {n_same + hard_group[1]}", file=out)
    print(f"false accepts (different):   {fa_rate:.3%} of {n_diff} ({false})   (baseline target <= "
          f"{FALSE_ACCEPT_TARGET:.1%})", file=out)
    for line in errors if show_errors else errors[:15]:
        print(f"  {line}", file=out)
    if not show_errors and len(errors) > 15:
        print(f"  ... {len(errors) - 15} more (--show-errors)", file=out)
    if show_errors:
        print("\nmargins: per measure, the largest value an accepted same-picture pair had and the smallest a "
              "different pair had (past the hash gates; ratio > 1 is room)", file=out)
        print(table(["class: measure", "hardest hit", "pair", "closest negative", "pair", "ratio"],
                    margins(evidence)), file=out)
    result.target = f"hit rate >= {HIT_TARGET:.0%} and false accepts <= {FALSE_ACCEPT_TARGET:.1%}"
    result.passed = hit_rate >= HIT_TARGET and fa_rate <= FALSE_ACCEPT_TARGET
    print(f"target: {result.target}  ->  {result.verdict}", file=out)
    result.extra.update(hit_rate=round(hit_rate, 5), same_pairs=n_same, false_accept_rate=round(fa_rate, 5),
                        different_pairs=n_diff, false_accepts=false, by_kind={"same": same, "different": diff},
                        by_group=groups, hard_documents={"same": hard, "all": hard_group},
                        hit_rate_with_hard=round(both, 5), errors=len(errors))
    return result


# -- speed -------------------------------------------------------------------------------------


def photo_1024() -> Image.Image:
    """A 1024x1024 photo: an eval image scaled up, or a synthetic gradient when missing."""
    for name in ("astronaut.png", "coffee.png"):
        path = EVAL / name
        if path.exists():
            with Image.open(path) as im:
                return im.convert("RGB").resize((1024, 1024), Image.Resampling.BICUBIC)
    y, x = (v.astype("float32") for v in __import__("numpy").mgrid[0:1024, 0:1024])
    import numpy as np

    arr = np.stack([x / 4, y / 4, (x + y) / 8], axis=-1) % 256
    return Image.fromarray(arr.astype("uint8"), "RGB")


def bench_speed(name: str, fmt: str, quick: bool) -> Result:
    data = encode(photo_1024(), fmt, **({"quality": 90} if fmt == "JPEG" else {}))

    def bare() -> Any:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size

    def cand() -> Any:
        return fingerprint(data)

    result = Result(name, f"fingerprint() of a 1024x1024 {fmt} ({len(data):,} bytes), decode included",
                    "fingerprint(bytes)", "Image.open(bytes).load()")
    rounds, per_round = (4, 10) if quick else (10, 30)
    result.candidate, result.baseline = compare(cand, bare, rounds=rounds, per_round=per_round, warmup=5)
    ratio = result.ratio
    assert ratio is not None
    if fmt == "JPEG":
        result.target = f"p50 <= {JPEG_P50_MS:g} ms"
        result.passed = result.candidate.p50 <= JPEG_P50_MS * 1000
        result.notes.append("JPEG is decoded at 1/8 scale (draft mode), hence faster than the bare decode")
    else:
        result.target = f"<= {PNG_MAX_RATIO:g}x baseline"
        result.passed = ratio <= PNG_MAX_RATIO
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--show-errors", action="store_true", help="list every wrong verdict")
    args = p.parse_args(argv)
    results: list[Result] = []
    runs: list[tuple[str, Callable[[TextIO], Result]]] = [
        ("perceptual_accuracy", lambda out: bench_accuracy(args.quick, args.show_errors, out)),
        ("fingerprint_jpeg_1024", lambda out: bench_speed("fingerprint_jpeg_1024", "JPEG", args.quick)),
        ("fingerprint_png_1024", lambda out: bench_speed("fingerprint_png_1024", "PNG", args.quick)),
    ]
    with report_stream(args.json) as (out, data):
        print_facts([("eval images", str(EVAL.resolve()) if EVAL.is_dir() else "missing (rendered only)")], out)
        for name, run in runs:
            result = run_guarded(name, lambda: run(out), out, "failed")
            results.append(result)
            if result.candidate is not None or result.error is not None:
                report(result, out)
        summary(results, out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
