"""Perceptual fingerprints and the verifier, on images made here and scikit-image's sample photos."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from imgcache.errors import ImageError
from imgcache.match.perceptual.detail import _unpack_detail
from imgcache.match.perceptual.fingerprint import THUMB, Fingerprint, fingerprint
from imgcache.match.perceptual.verifier import same_picture, thumb_evidence

from _helpers import encode, png_chunk
from _samples import burst_frame, sample_path


def photo(seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth synthetic 'photo': blurred random blobs on a gradient."""
    rnd = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    arr = np.stack([x / w * 200, y / h * 200, (x + y) / (w + h) * 255], axis=-1)
    for _ in range(12):
        cx, cy, r = rnd.uniform(0, w), rnd.uniform(0, h), rnd.uniform(15, 60)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        arr = arr * (1 - blob) + blob * rnd.uniform(0, 255, 3)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def invoice(total: str, font_size: int | None = None, size: tuple[int, int] = (600, 800)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default() if font_size is None else ImageFont.load_default(size=font_size)
    d.text((40, 30), "INVOICE #1042", fill="black", font=font)
    step = max(22, int((font_size or 10) * 2.2))
    for row in range(12):
        d.text((40, 100 + step * row), f"Item {row + 1}: widgets", fill="black", font=font)
        d.text((size[0] - 120 - 6 * step, 100 + step * row), f"{(row + 1) * 13.25:8.2f}", fill="black", font=font)
    d.text((size[0] - 220 - 6 * step, 100 + 13 * step), "TOTAL", fill="black", font=font)
    d.text((size[0] - 120 - 6 * step, 100 + 13 * step), total, fill="black", font=font)
    return img


def screen(word: str, size: tuple[int, int] = (800, 500), font_size: int = 14) -> Image.Image:
    img = Image.new("RGB", size, (245, 245, 250))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    d.rectangle((0, 0, size[0], 40), fill=(40, 90, 160))
    lines = ["Hi, I ordered the blue jacket last week.", "The tracking number says it shipped",
             f"to {word} instead of my address.", "Can you please check the order 48213?"]
    for i, line in enumerate(lines):
        y = 70 + int(font_size * 4) * i
        d.rounded_rectangle((20, y - 6, 20 + font_size * 33, y + int(font_size * 1.7)), 8, fill="white",
                            outline=(200, 200, 210))
        d.text((30, y), line, fill=(20, 20, 20), font=font)
    return img


def receipt_photo(total: str, items: int = 3, size: tuple[int, int] = (900, 1200)) -> Image.Image:
    """A till receipt on a wooden table, slightly turned and unevenly lit, as photographed."""
    rnd = np.random.default_rng(7)  # the table and the light: the same in every photo
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    grain = np.asarray(Image.fromarray((rnd.random((h // 4, w // 4)) * 255).astype(np.uint8))
                       .resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    wave = 20 * np.sin(x / 7 + 3 * np.sin(y / 40))
    table = np.stack([110 + 0.35 * grain + wave, 70 + 0.25 * grain + 0.7 * wave, 40 + 0.15 * grain + 0.4 * wave], -1)
    photo_ = Image.fromarray(table.clip(0, 255).astype(np.uint8), "RGB")
    lines = np.random.default_rng(items)  # what was bought
    paper = Image.new("RGB", (int(w * 0.42), int(h * 0.8)), (238, 234, 225))
    d = ImageDraw.Draw(paper)
    font = ImageFont.load_default(size=14)
    d.text((20, 20), "CORNER GROCERY", fill=(30, 30, 30), font=ImageFont.load_default(size=20))
    row = 70
    while row < paper.height - 120:
        d.text((20, row), f"ITEM {lines.integers(100, 999)}", fill=(40, 40, 40), font=font)
        d.text((paper.width - 90, row), f"{lines.integers(100, 2000) / 100:6.2f}", fill=(40, 40, 40), font=font)
        row += 24
    d.text((20, row + 14), "TOTAL", fill=(20, 20, 20), font=font)
    d.text((paper.width - 90, row + 14), total, fill=(20, 20, 20), font=font)
    mask = Image.new("L", paper.size, 255).rotate(2, resample=Image.Resampling.BICUBIC, expand=True)
    paper = paper.rotate(2, resample=Image.Resampling.BICUBIC, expand=True)
    photo_.paste(paper, ((w - paper.width) // 2, (h - paper.height) // 2), mask)
    light = (0.8 + 0.25 * x / w - 0.1 * y / h)[..., None]
    arr = np.asarray(photo_, dtype=np.float64) * light + rnd.normal(0, 3, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def captioned(caption: str, *, band: bool = True) -> Image.Image:
    """A photo with a caption on a white band below it, or as a white, outlined watermark."""
    base = photo(20, (480, 320))
    font = ImageFont.load_default(size=14)
    if band:
        out = Image.new("RGB", (480, 350), "white")
        out.paste(base, (0, 0))
        ImageDraw.Draw(out).text((10, 328), caption, fill=(30, 30, 30), font=font)
        return out
    arr = np.asarray(base).astype(np.float64)  # a textured surface under the watermark
    arr += np.random.default_rng(21).normal(0, 25, arr.shape[:2])[..., None]
    out = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    ImageDraw.Draw(out).text((300, 290), caption, fill="white", font=font, stroke_width=1, stroke_fill=(20, 20, 20))
    return out


def price_tagged(price: str) -> Image.Image:
    """A product photo with a paper price tag on it."""
    out = photo(22, (600, 400))
    tag = Image.new("RGB", (130, 64), (250, 248, 240))
    d = ImageDraw.Draw(tag)
    d.text((10, 6), "Latte 12 oz", fill=(60, 60, 60), font=ImageFont.load_default(size=12))
    d.text((10, 24), price, fill=(10, 10, 10), font=ImageFont.load_default(size=26))
    out.paste(tag, (440, 306))
    return out


def bar_chart(values: list[int]) -> Image.Image:
    img = Image.new("RGB", (800, 500), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    d.text((60, 14), "Monthly orders, 2024", fill=(20, 20, 20), font=ImageFont.load_default(size=18))
    d.line((70, 450, 770, 450), fill=(40, 40, 40))
    for v in range(0, 101, 20):
        d.text((36, 442 - v * 3.8), f"{v:3d}", fill=(40, 40, 40), font=font)
    for i, (month, v) in enumerate(zip(["Jan", "Feb", "Mar", "Apr", "May", "Jun"], values)):
        x = 100 + i * 112
        d.rectangle((x, 450 - v * 3.8, x + 60, 449), fill=(60, 110, 190))
        d.text((x + 18, 458), month, fill=(40, 40, 40), font=font)
    return img


def form(ticked: tuple[bool, ...]) -> Image.Image:
    img = Image.new("RGB", (700, 460), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=13)
    d.text((40, 30), "Patient consent form", fill="black", font=ImageFont.load_default(size=20))
    for i, tick in enumerate(ticked):
        y = 100 + i * 60
        d.rectangle((40, y, 54, y + 14), outline="black")
        if tick:
            d.line((43, y + 7, 47, y + 11), fill="black", width=2)
            d.line((47, y + 11, 52, y + 3), fill="black", width=2)
        d.text((66, y), f"I agree to clause {i + 1} of the terms described above.", fill="black", font=font)
    return img


def scaled(img: Image.Image, scale: float) -> Image.Image:
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)


def same(a: bytes | Image.Image, b: bytes | Image.Image) -> bool:
    decision, reason = same_picture(fingerprint(a), fingerprint(b))
    assert reason
    return decision


# -- the fingerprint -------------------------------------------------------------------------


def test_fingerprint_fields() -> None:
    data = encode(photo())
    fp = fingerprint(data)
    assert isinstance(fp, Fingerprint)
    assert (fp.width, fp.height) == (320, 240)
    assert len(fp.sha256) == 64 and 0 <= fp.phash < 2**64 and 0 <= fp.dhash < 2**64
    assert len(fp.thumb) == 128 * 128
    assert same_picture(fp, fingerprint(data)) == (True, "identical bytes (sha256)")


def test_path_bytes_and_pil_inputs_agree(tmp_path: Path) -> None:
    data = encode(photo())
    path = tmp_path / "p.png"
    path.write_bytes(data)
    by_bytes, by_path = fingerprint(data), fingerprint(path)
    assert by_bytes == fingerprint(str(path)) == by_path
    img = Image.open(io.BytesIO(data))
    by_pil = fingerprint(img)
    assert by_pil.thumb == by_bytes.thumb and by_pil.phash == by_bytes.phash
    assert same_picture(by_pil, by_bytes)[0]


# -- accepted: the same picture ---------------------------------------------------------------


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_reencoding_hits(quality: int) -> None:
    img = photo(1)
    assert same(encode(img), encode(img, "JPEG", quality=quality))


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_resized_hits(scale: float) -> None:
    img = photo(2, (640, 480))
    small = img.resize((int(640 * scale), int(480 * scale)), Image.Resampling.LANCZOS)
    assert same(encode(img), encode(small, "JPEG", quality=90))


def test_format_conversion_and_stripped_metadata_hit() -> None:
    img = photo(3)
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    with_meta = encode(img, "JPEG", quality=90, exif=exif.tobytes())
    stripped = encode(Image.open(io.BytesIO(with_meta)), "JPEG", quality=90)
    assert same(with_meta, stripped)
    assert same(encode(img), encode(img, "WEBP", quality=85))
    assert same(encode(img, "JPEG", quality=90), encode(img))


def test_document_reencoded_hits() -> None:
    doc = invoice("1,234.50")
    assert same(encode(doc), encode(doc, "JPEG", quality=90))


@pytest.mark.parametrize("quality", [50, 75])
def test_document_with_legible_text_hits_when_reencoded(quality: int) -> None:
    doc = screen("Portland")
    assert same(encode(doc), encode(doc, "JPEG", quality=quality))


def test_resized_document_with_large_text_hits() -> None:
    doc = invoice("1,234.50", font_size=24, size=(1240, 1754))  # an A4 page at 150 dpi, 12 pt
    assert same(encode(doc), encode(scaled(doc, 0.75)))
    assert not same(encode(doc), encode(scaled(invoice("1,234.60", font_size=24, size=(1240, 1754)), 0.75)))
    fp = fingerprint(encode(doc))
    assert len(fp.thumb) == THUMB * THUMB and fp.detail  # and the detail image of a document
    assert len(fp.to_bytes()) < 150 * 1024


@pytest.mark.parametrize("make", [lambda: invoice("1,234.50"), lambda: screen("Portland")])
def test_quarter_size_document_is_a_miss_by_design(make) -> None:
    doc = make()
    decision, reason = same_picture(fingerprint(encode(doc)), fingerprint(encode(scaled(doc, 0.25))))
    assert not decision and "too small to verify" in reason


def test_fine_text_is_held_to_near_lossless_copies() -> None:
    doc = invoice("1,234.50", font_size=8)  # 8 px text on a 600 x 800 page: 2 rows of the grid
    stored = fingerprint(encode(doc))
    decision, reason = same_picture(stored, fingerprint(encode(doc, "WEBP", quality=80)))
    assert decision and "fine text" in reason
    decision, reason = same_picture(stored, fingerprint(encode(doc, "JPEG", quality=50)))
    assert not decision and "fine text" in reason


# -- rejected: other pictures -----------------------------------------------------------------


def test_different_photos_rejected() -> None:
    assert not same(encode(photo(4)), encode(photo(5)))


@pytest.mark.parametrize("op", [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
                                Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_90])
def test_mirrored_and_rotated_rejected(op: Image.Transpose) -> None:
    img = photo(6, (300, 300))
    assert not same(encode(img), encode(img.transpose(op)))


def test_small_rotation_rejected() -> None:
    img = photo(7)
    assert not same(encode(img), encode(img.rotate(3, resample=Image.Resampling.BICUBIC)))


def test_crop_of_another_region_rejected() -> None:
    img = photo(8, (640, 480))
    crop = img.crop((80, 60, 640, 480)).resize((640, 480), Image.Resampling.LANCZOS)
    assert not same(encode(img), encode(crop))


def test_object_added_or_removed_rejected() -> None:
    img = photo(9, (400, 300))
    edited = img.copy()
    ImageDraw.Draw(edited).ellipse((200, 100, 240, 140), fill=(20, 200, 30), outline="black")
    assert not same(encode(img), encode(edited))
    assert not same(encode(edited, "JPEG", quality=85), encode(img))


@pytest.mark.parametrize("other", ["1,284.50", "1,234.60", "7,234.50"])
def test_invoices_differing_in_total_rejected(other: str) -> None:
    a, b = invoice("1,234.50"), invoice(other)
    fa, fb = fingerprint(encode(a)), fingerprint(encode(b))
    assert (fa.phash ^ fb.phash).bit_count() <= 4  # the 64-bit hashes cannot tell them apart
    assert not same_picture(fa, fb)[0]
    assert not same_picture(fa, fingerprint(encode(b, "JPEG", quality=85)))[0]


@pytest.mark.parametrize("font_size", [None, 8, 12, 16])
@pytest.mark.parametrize("other", ["1,234.60", "1,284.50", "1,234.5O"])
def test_invoice_with_one_character_changed_rejected_at_every_scale(font_size: int | None, other: str) -> None:
    stored = fingerprint(encode(invoice("1,234.50", font_size)))
    changed = invoice(other, font_size)
    for scale in (1.0, 0.75, 0.5, 0.25):
        copy = changed if scale == 1.0 else scaled(changed, scale)
        for data in (encode(copy), encode(copy, "JPEG", quality=75)):
            decision, reason = same_picture(stored, fingerprint(data))
            assert not decision, f"{other} at {scale:.0%} accepted: {reason}"


@pytest.mark.parametrize(("size", "font_size"), [((800, 500), 14), ((1280, 800), 12), ((1920, 1080), 16)])
def test_screenshot_with_one_word_changed_rejected(size: tuple[int, int], font_size: int) -> None:
    stored = fingerprint(encode(screen("Portland", size, font_size)))
    changed = screen("Portlend", size, font_size)
    for copy in (changed, scaled(changed, 0.5)):
        for data in (encode(copy), encode(copy, "JPEG", quality=50)):
            assert not same_picture(stored, fingerprint(data))[0]


def test_document_evidence_reports_grid_and_text_size() -> None:
    a, b = fingerprint(encode(screen("Portland"))), fingerprint(encode(screen("Portlend")))
    ev = thumb_evidence(a, b)
    # 800 x 500, lines of about 8.5 pixels: compared on a grid where they span 7
    assert ev["doc"] == 1.0 and ev["same"] == 1.0 and 7 <= ev["glyph"] <= 11 and 300 <= ev["grid"] <= 500
    assert ev["d2"] > 40  # the changed word, well above what JPEG q50 leaves (about 20)
    assert thumb_evidence(a, a)["d1"] == 0.0
    photo_ev = thumb_evidence(fingerprint(encode(photo(4))), fingerprint(encode(photo(4), "JPEG", quality=80)))
    assert photo_ev["doc"] == 0.0 and "d2" not in photo_ev


def test_burst_neighbours_rejected() -> None:
    frames = [Image.open(io.BytesIO(burst_frame(i))).convert("RGB") for i in range(3)]
    prints = [fingerprint(encode(frame)) for frame in frames]
    assert not same_picture(prints[0], prints[1])[0]
    assert not same_picture(prints[1], prints[2])[0]
    # nor a small copy of a neighbour, compared at what the small copy can show
    small = frames[1].resize((75, 75), Image.Resampling.LANCZOS)
    assert not same_picture(prints[0], fingerprint(encode(small)))[0]
    # while a re-encoded frame still hits, and so does a quarter-size copy
    assert same_picture(prints[0], fingerprint(encode(frames[0], "JPEG", quality=85)))[0]
    own_small = frames[0].resize((75, 75), Image.Resampling.LANCZOS)
    assert same_picture(prints[0], fingerprint(encode(own_small)))[0]


def test_stereo_pair_rejected() -> None:
    left, right = sample_path("motorcycle_left.png"), sample_path("motorcycle_right.png")
    assert not same_picture(fingerprint(left), fingerprint(right))[0]


# -- fine detail wherever it is -------------------------------------------------------------------


@pytest.fixture(scope="module")
def receipt() -> Fingerprint:
    return fingerprint(encode(receipt_photo("12.50")))


@pytest.mark.slow  # seconds
@pytest.mark.parametrize("other", ["12.80", "12.60", "72.50"])
def test_photographed_receipt_with_another_total_rejected_at_every_scale(receipt: Fingerprint, other: str) -> None:
    """A receipt on a wooden table is not a document (a textured background), yet its text is
    verified: at full size, re-encoded, and at 75%, 50% and 25% (too small to verify there)."""
    changed = receipt_photo(other)
    for scale in (1.0, 0.75, 0.5, 0.25):
        copy = changed if scale == 1.0 else scaled(changed, scale)
        for data in (encode(copy), encode(copy, "JPEG", quality=50), encode(copy, "JPEG", quality=75)):
            decision, reason = same_picture(receipt, fingerprint(data))
            assert not decision, f"total {other} at {scale:.0%} accepted: {reason}"


def test_photographed_receipt_copies(receipt: Fingerprint) -> None:
    image = receipt_photo("12.50")
    for data in (encode(image, "JPEG", quality=75), encode(image, "WEBP", quality=80)):
        decision, reason = same_picture(receipt, fingerprint(data))
        assert decision and "document" in reason, reason
    decision, reason = same_picture(receipt, fingerprint(encode(scaled(image, 0.25))))
    assert not decision and "too small to verify" in reason
    assert len(receipt.to_bytes()) < 150 * 1024


@pytest.mark.slow  # seconds
def test_close_up_receipt_with_another_total_rejected() -> None:
    """Close up, each price is a lone number in a tile of its own, far from the items' names:
    compared all the same (a tile with strokes near readable text)."""
    stored = fingerprint(encode(receipt_photo("12.50", size=(1500, 2000))))
    changed = receipt_photo("12.80", size=(1500, 2000))
    for data in (encode(changed), encode(changed, "JPEG", quality=50), encode(scaled(changed, 0.75))):
        decision, reason = same_picture(stored, fingerprint(data))
        assert not decision, reason
    assert same_picture(stored, fingerprint(encode(receipt_photo("12.50", size=(1500, 2000)), "JPEG", quality=75)))[0]


def test_another_receipt_on_the_same_table_rejected(receipt: Fingerprint) -> None:
    other = receipt_photo("12.50", items=4)
    for data in (encode(other), encode(other, "JPEG", quality=75)):
        assert not same_picture(receipt, fingerprint(data))[0]


@pytest.mark.parametrize("band", [True, False])
def test_changed_caption_rejected(band: bool) -> None:
    caption = "Porch, Portland, May 2019 - photo A. Smith" if band else "(c) 2019 A. Smith"
    stored = fingerprint(encode(captioned(caption, band=band)))
    assert stored.detail, "the caption is text-like detail"
    changed = captioned(caption.replace("2019", "2018"), band=band)
    for data in (encode(changed), encode(changed, "JPEG", quality=75), encode(scaled(changed, 0.5))):
        decision, reason = same_picture(stored, fingerprint(data))
        assert not decision, reason
    assert same_picture(stored, fingerprint(encode(captioned(caption, band=band), "JPEG", quality=90)))[0]


def test_changed_price_tag_rejected() -> None:
    stored = fingerprint(encode(price_tagged("$4.99")))
    for price in ("$4.49", "$4.90"):
        changed = price_tagged(price)
        for data in (encode(changed), encode(changed, "JPEG", quality=75)):
            assert not same_picture(stored, fingerprint(data))[0], price
    assert same_picture(stored, fingerprint(encode(price_tagged("$4.99"), "JPEG", quality=90)))[0]


def test_chart_with_one_bar_changed_rejected() -> None:
    stored = fingerprint(encode(bar_chart([42, 55, 61, 48, 70, 66])))
    changed = bar_chart([42, 55, 65, 48, 70, 66])
    for data in (encode(changed), encode(changed, "JPEG", quality=75), encode(scaled(changed, 0.5))):
        assert not same_picture(stored, fingerprint(data))[0]
    assert same_picture(stored, fingerprint(encode(bar_chart([42, 55, 61, 48, 70, 66]), "JPEG", quality=75)))[0]


def test_form_with_another_box_ticked_rejected() -> None:
    stored = fingerprint(encode(form((True, False, True, False))))
    changed = form((True, True, True, False))
    for data in (encode(changed), encode(changed, "JPEG", quality=75)):
        decision, reason = same_picture(stored, fingerprint(data))
        assert not decision, reason


def test_half_size_copy_of_a_document_is_too_small_to_verify() -> None:
    """A 50% copy of a page in 10-14 px type keeps lines of 4-5 pixels: a changed digit there
    is no larger than what another resampling filter leaves, so it is a miss, not a guess."""
    for make in (lambda: invoice("1,234.50"), lambda: screen("Portland")):
        doc = make()
        for flt in (Image.Resampling.LANCZOS, Image.Resampling.BILINEAR):
            half = doc.resize((doc.width // 2, doc.height // 2), flt)
            decision, reason = same_picture(fingerprint(encode(doc)), fingerprint(encode(half)))
            assert not decision and "too small to verify" in reason


def test_photo_without_text_keeps_the_photo_path() -> None:
    img = photo(23, (800, 600))
    fp = fingerprint(encode(img))
    assert _unpack_detail(fp.detail).plain and len(fp.to_bytes()) < 64 * 1024  # thumbnail, plain detail
    for data in (encode(scaled(img, 0.25), "JPEG", quality=80), encode(img, "JPEG", quality=50)):
        decision, reason = same_picture(fp, fingerprint(data))
        assert decision and "(photo)" in reason, reason


# -- bad input ----------------------------------------------------------------------------------


def png_header_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def test_decompression_bomb_fails_fast() -> None:
    bomb = png_header_bomb()
    assert len(bomb) < 200
    with pytest.raises(ImageError, match="max_pixels|bomb"):
        fingerprint(bomb)
    with pytest.raises(ImageError):
        fingerprint(encode(photo()), max_pixels=1000)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                                  b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_not_an_image(data: bytes) -> None:
    with pytest.raises(ImageError):
        fingerprint(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt: str) -> None:
    data = encode(photo(10), fmt)
    with pytest.raises(ImageError):
        fingerprint(data[: len(data) // 2])


def test_over_max_bytes(tmp_path: Path) -> None:
    data = encode(photo())
    with pytest.raises(ImageError, match="max_bytes"):
        fingerprint(data, max_bytes=len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match="max_bytes"):
        fingerprint(path, max_bytes=100)


def test_missing_file_and_wrong_type() -> None:
    with pytest.raises(ImageError):
        fingerprint("/nonexistent/image.png")
    with pytest.raises(ImageError):
        fingerprint(12345)  # type: ignore[arg-type]


def test_image_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        fingerprint(b"nope")


# -- modes and containers -----------------------------------------------------------------------


def test_16_bit_gray() -> None:
    arr8 = np.asarray(photo(11).convert("L"))
    arr16 = arr8.astype(np.uint16) * 257
    img16 = Image.fromarray(arr16)
    assert img16.mode.startswith("I")
    fp16 = fingerprint(encode(img16))
    assert same_picture(fp16, fingerprint(encode(Image.fromarray(arr8))))[0]


def test_cmyk_jpeg() -> None:
    img = photo(12)
    fp = fingerprint(encode(img.convert("CMYK"), "JPEG", quality=95))
    assert same_picture(fp, fingerprint(encode(img)))[0]


def test_palette_image() -> None:
    img = photo(13)
    pal = img.quantize(256)
    assert pal.mode == "P"
    assert fingerprint(encode(pal)).width == 320


def test_transparency_composited_on_white() -> None:
    img = photo(14).convert("RGBA")
    arr = np.asarray(img).copy()
    arr[:, :100, 3] = 0  # the left part is transparent
    rgba = Image.fromarray(arr, "RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    assert same(encode(rgba), encode(flat))
    la = rgba.convert("LA")
    assert fingerprint(encode(la)).height == 240


def test_animated_gif_uses_first_frame() -> None:
    frames = [photo(15).convert("P"), photo(16).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    fp = fingerprint(buf.getvalue())
    assert same_picture(fp, fingerprint(encode(frames[0], "GIF")))[0]
    assert not same_picture(fp, fingerprint(encode(frames[1], "GIF")))[0]


def test_exif_rotated_jpeg_equals_rotated_pixels() -> None:
    img = photo(17, (400, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    tagged = encode(img, "JPEG", quality=92, exif=exif.tobytes())
    upright = encode(img.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=92)
    fp = fingerprint(tagged)
    assert (fp.width, fp.height) == (300, 400)
    assert same_picture(fp, fingerprint(upright))[0]
    assert not same_picture(fp, fingerprint(encode(img, "JPEG", quality=92)))[0]


def test_large_jpeg_draft_matches_full_decode() -> None:
    img = photo(18, (1200, 1024))
    assert same(encode(img), encode(img, "JPEG", quality=90))


def test_fingerprint_bytes_round_trip_and_rejects_garbage() -> None:
    fp = fingerprint(encode(photo()))
    assert _unpack_detail(fp.detail).plain and len(fp.to_bytes()) < 64 * 1024  # a photo: thumbnail, plain detail
    assert Fingerprint.from_bytes(fp.to_bytes()) == fp
    encoded = fp.to_bytes()
    flipped = bytearray(encoded)
    flipped[-100] ^= 0xFF
    for bad in (b"", b"{}", encoded[:-1], b"x\n" + fp.thumb, encoded.replace(b'"v":2', b'"v":1'), bytes(flipped)):
        with pytest.raises(ValueError):
            Fingerprint.from_bytes(bad)


def test_document_fingerprint_round_trip_and_damaged_detail() -> None:
    fp = fingerprint(encode(invoice("1,234.50")))
    assert fp.detail and len(fp.to_bytes()) < 150 * 1024
    again = Fingerprint.from_bytes(fp.to_bytes())
    assert again == fp and same_picture(again, fingerprint(encode(invoice("1,234.50"), "JPEG", quality=90)))[0]
    header, _, body = fp.to_bytes().partition(b"\n")
    # a detail blob that does not parse is refused even with a matching checksum
    broken = body[:len(fp.thumb)] + fp.detail[:40] + b"\0" * (len(fp.detail) - 40)
    head = json.loads(header)
    head["crc32"] = zlib.crc32(broken)
    with pytest.raises(ValueError):
        Fingerprint.from_bytes(json.dumps(head).encode() + b"\n" + broken)


# -- photos with incidental text: found again, and refused where their text differs -------------


def street_photo(sign: str, seed: int = 5, size: tuple[int, int] = (960, 640)) -> Image.Image:
    """A textured street-like photo (sensor noise, foliage-like texture, a brick-like wall) with
    a small shop sign on it: text that is a detail of the picture, not its content."""
    rnd = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    leaves = np.asarray(Image.fromarray((rnd.random((h // 3, w // 3)) * 255).astype(np.uint8))
                        .resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    bricks = 30 * ((np.floor(y / 18) % 2 == 0) ^ (np.floor((x + 20 * (np.floor(y / 18) % 2)) / 40) % 2 == 0))
    sky = y < h * 0.3
    base = np.where(sky, 170 + 40 * (1 - y / h), 60 + 0.5 * leaves + bricks * (x > w / 2))
    arr = np.stack([base * 0.9, base, base * 0.8], -1) + rnd.normal(0, 4, (h, w, 3))
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.rectangle((w * 0.55, h * 0.35, w * 0.55 + 260, h * 0.35 + 60), fill=(235, 230, 215), outline=(40, 40, 40))
    d.text((w * 0.55 + 12, h * 0.35 + 10), sign, fill=(25, 25, 25), font=ImageFont.load_default(size=18))
    d.text((w * 0.55 + 12, h * 0.35 + 34), "open daily 9-18", fill=(25, 25, 25), font=ImageFont.load_default(size=14))
    return img


@pytest.fixture(scope="module")
def street() -> Fingerprint:
    return fingerprint(encode(street_photo("BAKERY 24 Main St"), "JPEG", quality=92))


def test_a_sign_in_a_photo_does_not_make_it_a_document(street: Fingerprint) -> None:
    """Copies of a photo holding a sign hit: re-encoded at every common quality, and resized
    to half with any resampler, where a document in the same type would be too small to verify."""
    image = street_photo("BAKERY 24 Main St")
    copies = [encode(image, "JPEG", quality=q) for q in (50, 60, 75)] + [encode(image, "WEBP", quality=80)]
    copies += [encode(image.resize((480, 320), flt), "JPEG", quality=90)
               for flt in (Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BOX)]
    for data in copies:
        decision, reason = same_picture(street, fingerprint(data))
        assert decision, reason


@pytest.mark.parametrize("other", ["BAKERY 26 Main St", "BAKERY 24 Main Rd"])
def test_a_photo_whose_sign_says_another_thing_is_refused(street: Fingerprint, other: str) -> None:
    changed = street_photo(other)
    for data in (encode(changed, "JPEG", quality=92), encode(changed, "JPEG", quality=60),
                 encode(changed.resize((480, 320), Image.Resampling.LANCZOS), "JPEG", quality=90)):
        decision, reason = same_picture(street, fingerprint(data))
        assert not decision, reason


def test_documents_are_told_from_photos_with_text() -> None:
    """The detail records whether text is the image's content; a blob written before that was
    recorded reads as a document whenever it holds readable text (the stricter rules)."""
    from imgcache.match.perceptual.detail import _DETAIL_MAGIC

    blob = fingerprint(encode(invoice("1,234.50"))).detail
    page = _unpack_detail(blob)
    sign = _unpack_detail(fingerprint(encode(street_photo("BAKERY 24 Main St"))).detail)
    assert page.document and not sign.document
    start = len(_DETAIL_MAGIC) + 2
    end = start + int.from_bytes(blob[len(_DETAIL_MAGIC):start], "big")
    head = json.loads(blob[start:end])
    del head["doc"]
    old = json.dumps(head, separators=(",", ":")).encode()
    legacy = _DETAIL_MAGIC + len(old).to_bytes(2, "big") + old + blob[end:]
    assert _unpack_detail(legacy).document == head["strong"] is True


def price_plate(img: Image.Image, price: str, px: int, at: tuple[int, int] = (700, 300)) -> Image.Image:
    """``img`` with a small plate reading "EUR <price>" in ``px`` px type at ``at``."""
    out = img.convert("RGB")
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=px)
    box = d.textbbox((0, 0), f"EUR {price}", font=font)
    x, y = at
    d.rectangle((x, y, x + box[2] + px, y + box[3] + px), fill=(235, 232, 220), outline=(30, 30, 30))
    d.text((x + px // 2, y + px // 2 - box[1] // 2), f"EUR {price}", fill=(30, 30, 30), font=font)
    return out


@pytest.mark.parametrize(("seed", "px"), [(2, 12), (4, 14)])
def test_a_price_changed_in_a_halved_copy_is_compared_with_the_whole_picture(seed: int, px: int) -> None:
    """The stored photo's scan finds no text (its plate is small), the halved copy's finds a
    little: the halved copy's text is compared with the stored copy's plain detail image (the
    whole picture), so another price is refused and the same one found. (Before plain detail
    images, two tiles of text in one copy only were let go as texture: the price was answered.)"""
    base = photo(seed, (1280, 960))
    stored = fingerprint(encode(price_plate(base, "12.50", px), "JPEG", quality=92))
    assert _unpack_detail(stored.detail).plain
    for price, want in (("12.80", False), ("12.50", True)):
        half = price_plate(base, price, px).resize((640, 480), Image.Resampling.LANCZOS)
        decision, reason = same_picture(stored, fingerprint(encode(half, "JPEG", quality=90)))
        assert decision is want, reason
        assert "text in a photo" in reason


@pytest.mark.parametrize(("size", "seed", "px"), [((480, 360), 1, 9), ((400, 300), 2, 12)])
def test_a_price_no_scan_reads_as_text_is_compared_where_it_has_strokes(size: tuple[int, int], seed: int,
                                                                         px: int) -> None:
    """A plate too small to read as text leaves both copies with plain detail images; its tiles
    with strokes on a calm background are compared all the same, so another price is refused
    and a re-encoded copy found. (Before, two plain copies were never compared: the price was
    answered.)"""
    base = photo(seed, size)
    at = (size[0] // 2, size[1] // 3)
    stored = fingerprint(encode(price_plate(base, "12.50", px, at), "JPEG", quality=92))
    assert _unpack_detail(stored.detail).plain and not _unpack_detail(stored.detail).text
    other = fingerprint(encode(price_plate(base, "12.80", px, at), "JPEG", quality=92))
    decision, reason = same_picture(stored, other)
    assert not decision and "detail differs" in reason, reason
    decision, reason = same_picture(stored, fingerprint(encode(price_plate(base, "12.50", px, at), "JPEG", quality=60)))
    assert decision, reason


def test_plain_detail_images_are_checked_when_read() -> None:
    """A plain detail blob parses only as written: grayscale JPEG of the header's size (at most
    PLAIN_SIDE), no tile flags but marks (the scan's, on the plain image's tiles), no text claimed."""
    from imgcache.match.perceptual.detail import _DETAIL_MAGIC, _MARK, PLAIN_SIDE, _blob, _pack_plain

    arr = np.asarray(photo(7, (900, 600)).convert("L"))
    marks = np.zeros((600 // 16, 900 // 16), bool)
    marks[10, 20] = marks[36, 55] = True  # tiles centred on (168, 328) and (584, 888) px
    blob = _pack_plain(arr, 1.0, marks)
    plain = _unpack_detail(blob)
    assert plain.plain and max(plain.pixels.shape) == PLAIN_SIDE and plain.scale == pytest.approx(900 / 512, 1e-3)
    assert plain.data().all() and not plain.text and not plain.document
    assert np.argwhere(plain.flags).tolist() == [[5, 11], [20, 31]]  # 168 * 512 / 900 // 16 = 5, ...
    assert (plain.flags[plain.flags > 0] == _MARK).all()
    start = len(_DETAIL_MAGIC) + 2
    end = start + int.from_bytes(blob[len(_DETAIL_MAGIC):start], "big")
    table_end = end + 4 + int.from_bytes(blob[end:end + 4], "big")
    head, table, jpeg = json.loads(blob[start:end]), zlib.decompress(blob[end + 4:table_end]), blob[table_end:]
    assert _blob(head, table, jpeg) == blob
    rgb = io.BytesIO()
    Image.new("RGB", (head["w"], head["h"])).save(rgb, "JPEG")
    changes: list[dict[str, object]] = [{"w": head["w"] + 1}, {"text": 3}, {"strong": True}, {"doc": True},
                                        {"w": 2 * PLAIN_SIDE, "h": 2 * head["h"]}]
    bad = [_blob({**head, **change}, table, jpeg) for change in changes]
    bad += [_blob(head, table, rgb.getvalue()), _blob(head, table, b"\xff\xd8 not a jpeg"),
            _blob(head, b"\x01" * len(table), jpeg)]  # a JPEG in colour, not a JPEG, tile flags set
    for data in bad:
        with pytest.raises(ValueError):
            _unpack_detail(data)


def test_line_height_is_measured_on_lines_of_text_tiles() -> None:
    """Only text tiles standing three or more side by side set a line height (grass or brick
    read as scattered pairs of text tiles must not bring a sign's line height down)."""
    from imgcache.match.perceptual.detail import _in_lines

    text = np.zeros((4, 8), bool)
    text[0, 1:4] = True        # a line of three
    text[1, 0:2] = True        # a pair
    text[2, 3:8] = True        # a line of five, to the edge
    text[3, [0, 2, 4, 6]] = True  # scattered
    lined = _in_lines(text)
    assert lined[0].tolist() == [False, True, True, True, False, False, False, False]
    assert not lined[1].any() and not lined[3].any()
    assert lined[2].tolist() == [False, False, False, True, True, True, True, True]
    assert not _in_lines(np.ones((2, 2), bool)).any()
