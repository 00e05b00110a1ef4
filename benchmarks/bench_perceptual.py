"""Perceptual fingerprints: verifier accuracy on the eval images (../shared/eval/images beside the
repository when it is there, else rendered images only), and fingerprint speed.

    python benchmarks/bench_perceptual.py [--quick] [--json] [--strict] [--show-errors]

Accuracy (``perceptual_accuracy``): every image of ``../shared/eval/images`` (and a sample of
the potato burst, and invoices and text screens rendered here with Pillow's default font) is
fingerprinted as stored, then queried with variants of the same picture (JPEG quality 50-95,
resized to 50% and 25%, converted to PNG / WebP / JPEG, metadata stripped) that must hit, and
with different pictures that must not: neighbouring frames of the burst (also re-encoded), the
stereo pair, mirrored and rotated copies, crops of another region, an object added or removed,
documents differing in one number or word, and every other pair of distinct images.
Targets from issue 4: hit rate >= 95%, false accepts <= 0.5%. ``../shared/eval/images`` is
evaluation data beside the repository, not in it: without it the accuracy runs on the rendered
documents and synthetic stand-ins for the photos only (the report says ``eval images: missing
(rendered only)``), and the speed benchmarks on a synthetic 1024x1024 picture.

Hard families (:func:`hard_documents`, :func:`detail_families`), each a reference and pictures
that differ from it in fine detail only: invoices in 8-16 px type up to an A4 page, chat
screenshots up to 1920 px, a colour stamp, a receipt photographed on a wooden table (and
another receipt on the same table, and one in smaller type in a wider shot), a caption under a
photo, an outlined watermark over one, a price tag on a product photo, a bar chart whose one
bar differs, a form whose one check box differs, a slide in large type. Their same-picture
copies are counted apart from the issue's population (per variant), their different pictures
at 100/75/50/25% and JPEG q50/q75 with every other negative; a table gives, per family, copies
answered same, false accepts and the closest graded negative. Copies made with other resizers
than Lanczos (bilinear, box, at 50%) and 75% copies are reported apart too: they are not in
the issue's population. With ``--show-errors``: every wrong verdict. Always: the margins (per
comparison class, the hardest accepted copy and the closest different picture, as measure /
limit) and the encoded size of a few fingerprints.

Speed (``fingerprint_jpeg_1024``, ``fingerprint_png_1024``): :func:`fingerprint` of a 1024x1024
file against Pillow's bare full decode of the same file (``Image.open(...).load()``), side by
side. Targets: JPEG p50 <= 5 ms; PNG <= 1.5x the bare decode.

Exit status is 0 whatever the figures unless a benchmark could not run; ``--strict`` also
exits 1 when a target is missed.
"""

from __future__ import annotations

import io
import itertools
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from _real_photos import encode, flat_rgb
from PIL import Image, ImageDraw, ImageFont

from imgcache.match.perceptual.fingerprint import Fingerprint, fingerprint
from imgcache.match.perceptual.verifier import (
    _FINE_TEXT_LIMITS,
    _PHOTO_LIMITS,
    _TEXT_LIMITS,
    same_picture,
    thumb_evidence,
)

EVAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "eval" / "images"
HIT_TARGET = 0.95
FALSE_ACCEPT_TARGET = 0.005
JPEG_P50_MS = 5.0
PNG_MAX_RATIO = 1.5

# -- images ------------------------------------------------------------------------------------


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


def render_receipt(total: str, *, size: tuple[int, int] = (900, 1200), seed: int = 3, items: int | None = None,
                   font_size: int = 14) -> Image.Image:
    """A till receipt on a wooden (textured) table, tilted and unevenly lit, as photographed;
    ``total`` is the only varying field (``items``: another seed for the lines, another receipt
    on the same table, under the same light)."""
    import numpy as np

    rnd = random.Random(seed if items is None else items)
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
    font = ImageFont.load_default(size=font_size)
    d.text((20, 20), "CORNER GROCERY", fill=(30, 30, 30), font=ImageFont.load_default(size=round(font_size * 1.4)))
    row = 70
    while row < ph - 120:
        d.text((20, row), f"ITEM {rnd.randint(100, 999)}", fill=(40, 40, 40), font=font)
        d.text((pw - 90, row), f"{rnd.randint(100, 2000) / 100:6.2f}", fill=(40, 40, 40), font=font)
        row += round(font_size * 1.7)
    d.text((20, row + 14), "TOTAL", fill=(20, 20, 20), font=font)
    d.text((pw - 90, row + 14), total, fill=(20, 20, 20), font=font)
    mask = Image.new("L", (pw, ph), 255).rotate(2.0, resample=Image.Resampling.BICUBIC, expand=True)
    paper = paper.rotate(2.0, resample=Image.Resampling.BICUBIC, expand=True)
    table.paste(paper, ((w - paper.width) // 2, (h - paper.height) // 2), mask)
    light = (0.8 + 0.25 * x / w - 0.1 * y / h)[..., None]
    arr = np.asarray(table, dtype=np.float64) * light + rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def eval_photo(name: str, fallback_seed: int) -> Image.Image:
    """An eval photo in RGB, or a synthetic one (smooth blobs) when the eval set is missing."""
    for ext in (".png", ".jpg"):
        path = EVAL / f"{name}{ext}"
        if path.exists():
            with Image.open(path) as im:
                return flat_rgb(im).convert("RGB")
    import numpy as np

    rng = np.random.default_rng(fallback_seed)
    y, x = np.mgrid[0:400, 0:600].astype(np.float64)
    arr = np.stack([x / 3, y / 2, (x + y) / 4], -1)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 600), rng.uniform(0, 400), rng.uniform(20, 80)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        arr = arr * (1 - blob) + blob * rng.uniform(0, 255, 3)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def render_caption(text: str, *, photo: str = "chelsea", band: bool = True) -> Image.Image:
    """A photo with a caption: on a white band below it (``band``), or as a watermark, white
    text with a dark outline over the picture's lower right corner."""
    img = eval_photo(photo, 11)
    font = ImageFont.load_default(size=14)
    if band:
        out = Image.new("RGB", (img.width, img.height + 30), "white")
        out.paste(img, (0, 0))
        ImageDraw.Draw(out).text((10, img.height + 8), text, fill=(30, 30, 30), font=font)
        return out
    out = img.copy()
    d = ImageDraw.Draw(out)
    width = d.textlength(text, font=font)
    d.text((out.width - width - 12, out.height - 26), text, fill="white", font=font, stroke_width=1,
           stroke_fill=(20, 20, 20))
    return out


def render_price_tag(price: str) -> Image.Image:
    """A product photo (the coffee cup) with a paper price tag, slightly turned, on it."""
    img = eval_photo("coffee", 12)
    tag = Image.new("RGBA", (130, 64), (250, 248, 240, 255))
    d = ImageDraw.Draw(tag)
    d.rectangle((0, 0, 129, 63), outline=(120, 120, 120, 255))
    d.text((10, 6), "Latte 12 oz", fill=(60, 60, 60, 255), font=ImageFont.load_default(size=12))
    d.text((10, 24), price, fill=(10, 10, 10, 255), font=ImageFont.load_default(size=26))
    tag = tag.rotate(4, resample=Image.Resampling.BICUBIC, expand=True)
    out = img.copy()
    out.paste(tag, (img.width - tag.width - 30, img.height - tag.height - 30), tag)
    return out


def render_chart(values: list[int]) -> Image.Image:
    """A bar chart (months, values on a labelled axis); one bar may differ."""
    img = Image.new("RGB", (800, 500), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    d.text((60, 14), "Monthly orders, 2024", fill=(20, 20, 20), font=ImageFont.load_default(size=18))
    x0, y0, y1 = 70, 450, 70
    d.line((x0, y0, 770, y0), fill=(40, 40, 40), width=1)
    d.line((x0, y0, x0, y1), fill=(40, 40, 40), width=1)
    for v in range(0, 101, 20):
        y = y0 - v * (y0 - y1) / 100
        d.line((x0 - 5, y, x0, y), fill=(40, 40, 40))
        d.text((x0 - 34, y - 8), f"{v:3d}", fill=(40, 40, 40), font=font)
    for i, (month, v) in enumerate(zip(["Jan", "Feb", "Mar", "Apr", "May", "Jun"], values)):
        x = x0 + 30 + i * 112
        d.rectangle((x, y0 - v * (y0 - y1) / 100, x + 60, y0 - 1), fill=(60, 110, 190))
        d.text((x + 18, y0 + 8), month, fill=(40, 40, 40), font=font)
    return img


def render_form(ticked: tuple[bool, ...]) -> Image.Image:
    """A consent form with check boxes; which boxes are ticked is what varies."""
    img = Image.new("RGB", (700, 520), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    d.text((40, 30), "Patient consent form", fill="black", font=ImageFont.load_default(size=20))
    lines = ["I consent to the treatment described above.", "I consent to the use of anaesthesia.",
             "I agree that my data may be shared with my GP.", "I would like to receive reminders by SMS.",
             "I agree to take part in the follow-up study."]
    for i, (line, tick) in enumerate(zip(lines, ticked)):
        y = 100 + i * 60
        d.rectangle((40, y, 54, y + 14), outline="black", width=1)
        if tick:
            d.line((43, y + 7, 47, y + 11), fill="black", width=2)
            d.line((47, y + 11, 52, y + 3), fill="black", width=2)
        d.text((66, y), line, fill="black", font=font)
    d.text((40, 440), "Signature: ______________________    Date: 14/03/2024", fill="black", font=font)
    return img


def render_slide(figure: str) -> Image.Image:
    """A presentation slide (1280 x 720, large type); ``figure`` is the one number that varies."""
    img = Image.new("RGB", (1280, 720), (250, 250, 252))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, 1280, 110), fill=(30, 60, 120))
    d.text((60, 28), "Quarterly results", fill="white", font=ImageFont.load_default(size=52))
    font = ImageFont.load_default(size=36)
    for i, line in enumerate([f"Revenue up {figure} on last year", "Three new stores opened",
                              "Online orders: 41% of sales", "Next review: 14 March"]):
        d.ellipse((70, 180 + i * 110, 86, 196 + i * 110), fill=(30, 60, 120))
        d.text((110, 166 + i * 110), line, fill=(25, 25, 25), font=font)
    return img


def detail_families() -> dict[str, list[Image.Image]]:
    """Pictures whose fine detail differs, beyond the hard documents, the first one the
    reference: a caption under a photo and a watermark over one, a year or a name apart; a
    price tag on a product photo; two receipts photographed on the same table, a receipt with a
    smaller font in a wider shot, and one close up (its prices a column of lone numbers, far
    from the items' names); a bar chart whose one bar differs; a form whose one
    check box differs; a slide in large type whose one figure differs."""
    caption = "Chelsea on the porch, Portland, May 2019 - photo A. Smith"
    return {
        "caption_band": [render_caption(c) for c in (caption, caption.replace("2019", "2018"),
                                                         caption.replace("Portland", "Portlend"))],
        "watermark": [render_caption(c, photo="coffee", band=False) for c in ("(c) 2019 A. Smith", "(c) 2018 A. Smith",
                                                                              "(c) 2019 B. Smith")],
        "price_tag": [render_price_tag(p) for p in ("$4.99", "$4.49", "$5.99", "$4.90")],
        "receipts_table": [render_receipt("12.50", items=i) for i in (3, 4, 5)],
        "receipt_wide": [render_receipt(t, size=(1600, 1200), font_size=12) for t in ("12.50", "12.80", "72.50")],
        "receipt_close": [render_receipt(t, size=(1500, 2000)) for t in ("12.50", "12.80", "12.60")],
        "chart": [render_chart(v) for v in ([42, 55, 61, 48, 70, 66], [42, 55, 65, 48, 70, 66],
                                            [42, 55, 61, 48, 64, 66])],
        "slide": [render_slide(f) for f in ("12%", "17%", "12.5%", "13%")],
        "form_checkbox": [render_form(t) for t in ((True, True, False, True, False), (True, True, True, True, False),
                                                   (True, False, False, True, False))],
    }


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
    yield "webp_q80", encode(flat_rgb(img) if img.mode not in ("L", "RGB") else img, "WEBP", quality=80)
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x0110] = "Model X"
    with_meta = encode(img, "JPEG", quality=90, exif=exif.tobytes())
    stripped = Image.open(io.BytesIO(with_meta))
    stripped.load()
    yield "metadata_stripped", encode(stripped, "JPEG", quality=90)


def other_resizers(img: Image.Image) -> Iterator[tuple[str, bytes]]:
    """More copies of the same picture, reported apart (not in the issue's population): a 75%
    copy, and 50% copies made with other filters than Lanczos (bilinear, box, as browsers and
    image libraries do), one of them re-encoded."""
    w, h = img.size
    rgb = flat_rgb(img) if img.mode not in ("L", "RGB") else img
    for name, scale, flt in (("resize_75", 0.75, Image.Resampling.LANCZOS),
                             ("resize_50_bilinear", 0.5, Image.Resampling.BILINEAR),
                             ("resize_50_box", 0.5, Image.Resampling.BOX)):
        small = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), flt)
        yield name, encode(small, "PNG")
        if name == "resize_75":
            yield "resize_75_jpeg_q85", encode(small, "JPEG", quality=85)


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
    first_potato = next((n for n in sources if n.startswith("potato_")), None)
    for seed, (name, img) in enumerate(sources.items()):
        for kind, data in same_variants(img):
            pairs.append((kind, True, name, prints[name], fingerprint(data)))
        if not name.startswith("potato_") or name == first_potato:
            for kind, data in other_resizers(img):
                pairs.append((kind, True, f"extra:{name}", prints[name], fingerprint(data)))
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
    for family, docs in {**hard_documents(), **detail_families()}.items():
        ref = fingerprint(encode(docs[0]))
        for kind, data in same_variants(docs[0]):
            pairs.append((kind, True, f"hard:{family}", ref, fingerprint(data)))
        for kind, data in other_resizers(docs[0]):
            pairs.append((kind, True, f"extra:{family}", ref, fingerprint(data)))
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


@dataclass
class Tally:
    """What :func:`evaluate` counts."""

    same: dict[str, list[int]] = field(default_factory=dict)       # issue population, per variant
    groups: dict[str, list[int]] = field(default_factory=dict)     # "all photos", "all documents"
    hard: dict[str, list[int]] = field(default_factory=dict)       # hard families' copies, per variant
    extra: dict[str, list[int]] = field(default_factory=dict)      # other resizers, per variant
    different: dict[str, list[int]] = field(default_factory=dict)  # negatives, per kind
    families: dict[str, dict[str, Any]] = field(default_factory=dict)  # hard families, both sides
    errors: list[str] = field(default_factory=list)
    measures: dict[str, dict[str, list[tuple[float, str]]]] = field(default_factory=dict)


def _count(table: dict[str, list[int]], key: str, hit: bool) -> None:
    row = table.setdefault(key, [0, 0])
    row[0] += hit
    row[1] += 1


def _score(ev: dict[str, float]) -> tuple[str, float] | None:
    """The comparison class of a pair past the hash and aspect gates, and its score: the largest
    measure over its limit, thumbnails and detail alike (the verdict is "same" at 1.0 or less);
    None when the detail was not compared (text too small to verify, or in one copy only)."""
    photo = max(ev[k] / v for k, v in _PHOTO_LIMITS.items())
    if not ev.get("doc") or "d2" not in ev:
        return "photo", photo
    if not math.isfinite(ev["d2"]):
        return None
    limits = _FINE_TEXT_LIMITS if ev["fine"] else _TEXT_LIMITS
    return ("fine text" if ev["fine"] else "legible text"), max(photo, *(ev[k] / v for k, v in limits.items()))


def evaluate(quick: bool) -> Tally:
    """Every pair of :func:`build_pairs` through :func:`same_picture` (both ways round: the
    verdict must be symmetric), counted per variant, family and group, with a line per wrong
    answer and, per comparison class, the figures of every graded pair (for the margins).

    Same-picture pairs of the issue's population (eval images, the burst, the benchmark's own
    renders) are counted in ``same``; those of the hard families in ``hard`` (and per family);
    the other resizers' copies in ``extra``; every different pair in ``different``."""
    tally = Tally()
    for kind, want, label, a, b in build_pairs(quick):
        got, reason = same_picture(a, b)
        if same_picture(b, a)[0] != got:
            raise AssertionError(f"asymmetric verdict: {kind} {label}")
        family = label.split(":", 1)[1].split(" ")[0] if label.startswith(("hard:", "extra:")) else None
        if not want:
            _count(tally.different, kind, got)
        elif label.startswith("extra:"):
            _count(tally.extra, kind, got)
        elif label.startswith("hard:"):
            _count(tally.hard, kind, got)
        else:
            _count(tally.same, kind, got)
            _count(tally.groups, "all documents" if label.startswith(("invoice_", "screen_")) else "all photos", got)
        if family is not None and (label.startswith("hard:") or family in tally.families):
            fam = tally.families.setdefault(family, {"same": [0, 0], "extra": [0, 0], "different": [0, 0],
                                                      "closest": math.inf, "gated": 0})
            _count(fam, "extra" if label.startswith("extra:") else "same" if want else "different", got)
        if got != want:
            tally.errors.append(f"{'MISS' if want else 'FALSE ACCEPT'} {kind}: {label}: {reason}")
        if a.sha256 == b.sha256 or reason.startswith(("aspect", "phash distance", "dhash distance")):
            continue
        graded = _score(thumb_evidence(a, b))
        if graded is None:
            if family is not None and not want:
                tally.families[family]["gated"] += 1
            continue
        cls, score = graded
        if not want and family is not None:
            tally.families[family]["closest"] = min(tally.families[family]["closest"], score)
        side = "accepted positives" if want and got else "negatives" if not want else None
        if side is not None:
            tally.measures.setdefault(cls, {}).setdefault(side, []).append((score, f"{kind}: {label}"))
    return tally


def margins(measures: dict[str, dict[str, list[tuple[float, str]]]]) -> list[list[str]]:
    """Rows: per class, the hardest accepted positive and the closest graded negative (as
    measure / limit), and the room between them."""
    rows = []
    for cls, sides in measures.items():
        pos = max(sides.get("accepted positives", [(0.0, "-")]))
        neg = min(sides.get("negatives", [(math.inf, "-")]))
        ratio = f"{neg[0] / pos[0]:.2f}" if pos[0] > 0 and math.isfinite(neg[0]) else "-"
        rows.append([cls, f"{pos[0]:.2f}", pos[1][:52], f"{neg[0]:.2f}", neg[1][:52], ratio])
    return rows


def _rate(row: list[int]) -> str:
    return f"{row[0] / row[1]:.1%}" if row[1] else "-"


def fingerprint_sizes() -> list[list[str]]:
    """Rows: the encoded size (:meth:`Fingerprint.to_bytes`) of a few fingerprints."""
    samples: list[tuple[str, Image.Image]] = [("photo 512 x 512 (astronaut)", eval_photo("astronaut", 1)),
                                              ("photo 1024 x 1024", photo_1024())]
    samples += [("invoice 600 x 800", render_invoice("1,234.50")),
                ("A4 invoice 1240 x 1754", render_invoice("1,234.50", font_size=16, size=(1240, 1754))),
                ("screenshot 1920 x 1080", render_screen("Portland", size=(1920, 1080), font_size=16)),
                ("receipt photo 900 x 1200", render_receipt("12.50")),
                ("receipt photo 1600 x 1200", render_receipt("12.50", size=(1600, 1200), font_size=12))]
    rows = []
    for name, img in samples:
        for fmt in ("PNG", "JPEG"):
            fp = fingerprint(encode(img, fmt, **({"quality": 85} if fmt == "JPEG" else {})))
            rows.append([name, fmt, f"{len(fp.to_bytes()) / 1024:.1f} KiB", f"{len(fp.detail) / 1024:.1f} KiB"])
    return rows


def bench_accuracy(quick: bool, show_errors: bool, out: TextIO) -> Result:
    result = Result("perceptual_accuracy", "same_picture() on eval images + transformations + rendered "
                    "documents", "fingerprint + same_picture", "target")
    t = evaluate(quick)
    hits, n_same = sum(v[0] for v in t.same.values()), sum(v[1] for v in t.same.values())
    false, n_diff = sum(v[0] for v in t.different.values()), sum(v[1] for v in t.different.values())
    hard_hits, n_hard = sum(v[0] for v in t.hard.values()), sum(v[1] for v in t.hard.values())
    extra_hits, n_extra = sum(v[0] for v in t.extra.values()), sum(v[1] for v in t.extra.values())
    hit_rate, fa_rate = hits / n_same, false / n_diff
    rows = [[f"same: {k}", f"{v[0]}/{v[1]}", _rate(v)] for k, v in t.same.items()]
    rows += [[f"same, {k}", f"{v[0]}/{v[1]}", _rate(v)] for k, v in t.groups.items()]
    rows += [[f"same, hard families: {k}", f"{v[0]}/{v[1]}", _rate(v)] for k, v in t.hard.items()]
    rows.append(["same, hard families", f"{hard_hits}/{n_hard}", _rate([hard_hits, n_hard])])
    rows += [[f"same, other resizers: {k}", f"{v[0]}/{v[1]}", _rate(v)] for k, v in t.extra.items()]
    rows += [[f"different: {k}", f"{v[0]}/{v[1]}", _rate(v)] for k, v in t.different.items()]
    print(f"\n== {result.name}: {result.title}", file=out)
    print(table(["pairs", "answered same", "rate"], rows), file=out)
    print("\nhard families (fine detail that differs): copies answered same, other resizers' copies, different "
          "pictures answered same, and the closest graded negative (its largest measure over the limit; "
          "gated: refused before the measures, e.g. too small to verify)", file=out)
    print(table(["family", "copies", "other resizers", "false accepts", "closest negative", "gated"],
                [[k, f"{f['same'][0]}/{f['same'][1]}", f"{f['extra'][0]}/{f['extra'][1]}",
                  f"{f['different'][0]}/{f['different'][1]}",
                  f"{f['closest']:.2f}" if math.isfinite(f["closest"]) else "-", str(f["gated"])]
                 for k, f in t.families.items()]), file=out)
    print(f"\nhit rate (same picture):     {hit_rate:.2%} of {n_same}   (baseline target >= {HIT_TARGET:.0%}; "
          f"eval images, burst and the benchmark's own documents)", file=out)
    both = (hits + hard_hits) / (n_same + n_hard)
    print(f"  with the hard families:    {both:.2%} of {n_same + n_hard}", file=out)
    print(f"  other resizers (apart):    {extra_hits / n_extra:.2%} of {n_extra}", file=out)
    print(f"false accepts (different):   {fa_rate:.3%} of {n_diff} ({false})   (baseline target <= "
          f"{FALSE_ACCEPT_TARGET:.1%})", file=out)
    for line in t.errors if show_errors else t.errors[:15]:
        print(f"  {line}", file=out)
    if not show_errors and len(t.errors) > 15:
        print(f"  ... {len(t.errors) - 15} more (--show-errors)", file=out)
    print("\nmargins: per comparison class, the largest measure / limit of an accepted same-picture pair and the "
          "smallest of a different pair that reached the measures (ratio > 1 is room)", file=out)
    print(table(["class", "hardest hit", "pair", "closest negative", "pair", "ratio"], margins(t.measures)),
          file=out)
    print("\nfingerprint sizes (to_bytes; detail: the detail image's share)", file=out)
    print(table(["image", "format", "fingerprint", "detail"], fingerprint_sizes()), file=out)
    result.target = f"hit rate >= {HIT_TARGET:.0%} and false accepts <= {FALSE_ACCEPT_TARGET:.1%}"
    result.passed = hit_rate >= HIT_TARGET and fa_rate <= FALSE_ACCEPT_TARGET
    print(f"target: {result.target}  ->  {result.verdict}", file=out)
    result.extra.update(hit_rate=round(hit_rate, 5), same_pairs=n_same, false_accept_rate=round(fa_rate, 5),
                        different_pairs=n_diff, false_accepts=false,
                        by_kind={"same": t.same, "different": t.different}, by_group=t.groups,
                        hard_families={"same": t.hard, "families": {k: {kk: vv for kk, vv in f.items()
                                                                         if kk != "closest"}
                                                                     for k, f in t.families.items()}},
                        other_resizers=t.extra, hit_rate_with_hard=round(both, 5), errors=len(t.errors))
    return result


def bench_real_photos(quick: bool, show_errors: bool, out: TextIO) -> Result:
    """Issue 14's population (see _real_photos.py), judged by this verifier and by the one before
    it (the :data:`_real_photos.BASELINE` commit, run in a subprocess), side by side."""
    import _real_photos as real

    result = Result("perceptual_real_photos", "same_picture() on real photographs, documents and near captures "
                    "(../shared/eval/photos, photos_more)", "this verifier", f"verifier at {real.BASELINE}")
    print(f"\n== {result.name}: {result.title}", file=out)
    if not real.sources():
        result.notes.append("skipped: ../shared/eval/photos not found beside the repository")
        print("   skipped: ../shared/eval/photos not found beside the repository", file=out)
        return result
    new = real.verdicts(quick)
    old, where = real.baseline_verdicts(quick)
    print(f"   new: this checkout; old: {where}; split: a quarter of the sources held apart (by a hash of "
          "the name), never used for tuning", file=out)
    print(table(["split", "population", "new", "old"], real.summary_rows(new, old)), file=out)
    print("\nper kind (both splits)", file=out)
    print(table(["group", "must be", "kind", "new", "old"], real.kind_rows(new, old)), file=out)
    wrong = [r for r in new if r[5] != r[1]]
    for row in wrong if show_errors else []:
        print(f"  {'MISS' if row[1] else 'FALSE ACCEPT'} {row[0]}: {row[2]} [{row[3]}]: {row[6]}", file=out)
    held = [r for r in new if r[3] == "held"]
    photos = [r for r in held if not r[4] and r[1] and r[0] in real.SAME_TARGET_KINDS]
    docs = [r for r in held if r[4] and r[1] and r[0] in real.DOCUMENT_TARGET_KINDS]
    rate = (lambda rows: sum(r[5] for r in rows) / len(rows) if rows else 1.0)
    result.target = "held-out photos >= 98%, documents' same-size copies >= 95%, 0 different pictures accepted"
    false_accepts = sum(r[5] for r in new if not r[1])
    result.passed = rate(photos) >= 0.98 and rate(docs) >= 0.95 and not false_accepts
    result.extra.update(held_photo_hit_rate=round(rate(photos), 4), held_document_hit_rate=round(rate(docs), 4),
                        false_accepts=false_accepts, pairs=len(new), baseline=where)
    print(f"target: {result.target}  ->  {result.verdict}", file=out)
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
        result.notes.append("JPEG: luma only, at 1/2 scale here (draft mode); the bare decode is full RGB")
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
        ("perceptual_real_photos", lambda out: bench_real_photos(args.quick, args.show_errors, out)),
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
