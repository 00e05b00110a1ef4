"""Vision requests end to end: ``@cache.cached(kind="vision")`` over real tiers.

Exact hits (same bytes), perceptual hits (a re-encoded, converted or resized copy of a stored
picture, verified), misses (another picture, a mirror image, an invoice with another total,
another question), bad inputs that must pass through uncached, namespaces, processes sharing
Redis and S3, damaged blobs, manifests and feed records, a Redis that dies, and remote URLs
served by a local HTTP server. Nothing under test is mocked: real Pillow, real tiers, real
servers. Photos are scikit-image's bundled sample data (a test dependency, see _samples.py);
documents and the burst are rendered here.

The perceptual verifier's thresholds are being tuned, so only clear-cut pairs are used: JPEG
q85, lossless WebP and a 50% resize of a photo must hit; another photo, a mirrored photo, the
next frame of a burst and an invoice with another total must miss.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image, ImageDraw, ImageFont, ImageOps

from imgcache import Cache, InvalidRequest, Request
from imgcache.images import image_input
from imgcache.match.config import VisionOptions
from imgcache.match.perceptual.fingerprint import Fingerprint, fingerprint
from imgcache.match.perceptual.verifier import _DHASH_MAX, _PHASH_MAX
from imgcache.store.base import blob_key, entry_key
from imgcache.manifest import parse as parse_manifest
from imgcache.store.disk import DiskTier
from imgcache.testing import RedisServer, free_port, wait_until

from _helpers import Upstream, data_url, encode, png_chunk
from _samples import burst_frame, sample, sample_path

NAME = "describe"
PROMPT = "What is in this picture?"

pytestmark = pytest.mark.cache_options("vision")


# --- pictures ---------------------------------------------------------------------------------


@functools.cache
def original(name: str) -> bytes:
    """The sample file's own bytes."""
    return sample(name)


@functools.cache
def photo(name: str) -> Image.Image:
    return Image.open(sample_path(name)).convert("RGB")


def jpeg85(name: str) -> bytes:
    return encode(photo(name), "JPEG", quality=85)


def webp_lossless(name: str) -> bytes:
    return encode(photo(name), "WEBP", lossless=True)


def half_size(name: str) -> bytes:
    img = photo(name)
    return encode(img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS))


def mirrored(name: str) -> bytes:
    return encode(ImageOps.mirror(photo(name)))


NEAR_COPIES: dict[str, Callable[[str], bytes]] = {
    "jpeg-q85": jpeg85,
    "png-to-webp-lossless": webp_lossless,
    "resized-50%": half_size,
}


def burst(i: int) -> bytes:
    """Frame ``i`` of a burst of one scene (consecutive frames: near hashes, other pictures)."""
    return burst_frame(i)


@functools.cache
def invoice(total: str) -> bytes:
    img = Image.new("RGB", (620, 820), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=18)
    draw.text((40, 30), "INVOICE #1042", fill="black", font=font)
    for row in range(14):
        draw.text((40, 100 + 26 * row), f"Item {row + 1}: widgets", fill="black", font=font)
        draw.text((470, 100 + 26 * row), f"{(row + 1) * 13.25:8.2f}", fill="black", font=font)
    draw.text((360, 520), "TOTAL", fill="black", font=font)
    draw.text((470, 520), total, fill="black", font=font)
    return encode(img)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` RGB pixels (a decompression
    bomb as far as any decoder that trusts the header is concerned)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)  # the start of the first rows, nothing more
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


# --- the function under cache -----------------------------------------------------------------


def vision_upstream(label: str = "up") -> Upstream:
    """A stand-in for a paid vision API, called ``(image, prompt, model, detail)``: counts calls,
    and every answer is new (:func:`upstream_answer`), so a test can tell a stored answer from
    a fresh one."""

    def answer(n: int, image: Any, prompt: str, model: str, detail: str) -> str:
        return upstream_answer(n, prompt, model, detail, label)

    return Upstream(answer, numbered=True)


def describer(cache: Cache, upstream: Upstream, name: str = NAME) -> Any:
    @cache.cached(kind="vision", name=name)
    def describe(image: Any = None, prompt: str = PROMPT, model: str = "gpt-4o", detail: str = "auto",
                 images: Any = None) -> str:
        return upstream(image if images is None else images, prompt, model, detail)

    return describe


def request_for(cache: Cache, data: Any, *, prompt: str = PROMPT, model: str = "gpt-4o",
                detail: str = "auto", name: str = NAME) -> Request:
    """The Request ``describer`` builds for a one-image call (for scope ids and keys)."""
    image = image_input(data, cache.vision_options)
    return Request.build("vision", name, prompt, {"model": model, "detail": detail}, (image,))


def counts(cache: Cache) -> dict[str, Any]:
    return cache.stats()


def by_match(cache: Cache) -> dict[str, int]:
    return cache.stats()["by_match"]


def entry_files(root: Path, namespace: str) -> list[Path]:
    directory = root / namespace / "e"
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def disk_tier(cache: Cache) -> DiskTier:
    [disk] = [tier for tier in cache.store.tiers if isinstance(tier, DiskTier)]
    return disk


def disk_manifest(cache: Cache, key: str) -> dict[str, Any]:
    disk = disk_tier(cache)
    assert disk is not None
    raw = disk.get(entry_key(cache.namespace, key))
    return parse_manifest(raw, key)


# --- exact and perceptual hits --------------------------------------------------------------


def test_the_same_bytes_are_an_exact_hit_and_the_entry_records_its_images(cache: Cache) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    data = original("chelsea.png")
    first = describe(image=data)
    assert describe(image=data) == first
    assert upstream.calls == 1
    stats = counts(cache)
    assert (stats["requests"], stats["hits"], stats["misses"], stats["stored"]) == (2, 1, 1, 1)
    assert stats["by_match"] == {"exact": 1, "semantic": 0, "perceptual": 0}
    assert stats["unreadable_images"] == 0

    # The manifest in the tier names each input image and the blob of its fingerprint.
    manifest = disk_manifest(cache, describe.cache_key(image=data))
    assert manifest["request"]["images"] == [hashlib.sha256(data).hexdigest()]
    [image] = manifest["images"]
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["width"], image["height"]) == (451, 300)
    disk = disk_tier(cache)
    assert disk is not None
    blob = disk.get(blob_key(cache.namespace, image["fp"]))
    assert hashlib.sha256(blob).hexdigest() == image["fp"]
    stored = Fingerprint.from_bytes(blob)
    assert stored.sha256 == image["sha256"] and f"{stored.phash:016x}" == image["phash"]


def test_an_exact_hit_never_decodes_the_image(tmp_path: Path) -> None:
    """A cache that could not decode the picture (max_pixels below its size) still gets exact
    hits for its bytes, stored by another cache object: the key is the bytes' digest, and the
    image is fingerprinted only on an exact miss. A near copy needs decoding: it passes through."""
    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path) as a:
        stored = describer(a, upstream)(image=original("chelsea.png"))  # 451 x 300
    with Cache("vision", directory=tmp_path, vision=VisionOptions(max_pixels=100_000)) as b:
        describe = describer(b, upstream)
        assert describe(image=original("chelsea.png")) == stored
        assert describe(image=jpeg85("chelsea.png")) == upstream_answer(2, PROMPT)
        stats = counts(b)
        assert stats["by_match"]["exact"] == 1 and stats["unreadable_images"] == 1
        assert upstream.calls == 2


@pytest.mark.parametrize("photo_name", ["chelsea.png", "coffee.png"])
@pytest.mark.parametrize("copy", list(NEAR_COPIES))
def test_a_near_copy_of_a_stored_photo_is_a_perceptual_hit(
    tmp_path: Path, photo_name: str, copy: str
) -> None:
    upstream = vision_upstream()
    near = NEAR_COPIES[copy](photo_name)
    assert near != original(photo_name)
    with Cache("vision", directory=tmp_path) as cache:
        describe = describer(cache, upstream)
        stored = describe(image=original(photo_name))
        assert describe(image=near) == stored
        assert upstream.calls == 1
        assert by_match(cache) == {"exact": 0, "semantic": 0, "perceptual": 1}
        assert counts(cache)["stored"] == 1

        # The near copy's own key now holds an alias of the entry: its repeat is answered by
        # key, without the matcher. _serve counts it by the alias manifest's match field,
        # so it shows as perceptual again (not exact).
        assert describe(image=near) == stored
        assert upstream.calls == 1
        assert by_match(cache) == {"exact": 0, "semantic": 0, "perceptual": 2}
        alias = disk_manifest(cache, describe.cache_key(image=near))
        assert alias["match"] == "perceptual"
        assert alias["matched"]["key"] == describe.cache_key(image=original(photo_name))
        assert alias["request"]["images"] == [hashlib.sha256(near).hexdigest()]

    # A new cache object (a new process) on the directory finds the alias by key.
    with Cache("vision", directory=tmp_path, vision=VisionOptions(perceptual=False)) as again:
        assert describer(again, upstream)(image=near) == stored
        assert upstream.calls == 1


@pytest.mark.parametrize("other", ["another photo", "mirrored", "next burst frame", "invoice total"])
def test_other_pictures_are_misses(cache: Cache, other: str) -> None:
    stored_image, query = {
        "another photo": (original("chelsea.png"), original("coffee.png")),
        "mirrored": (original("chelsea.png"), mirrored("chelsea.png")),
        "next burst frame": (burst(0), burst(1)),
        "invoice total": (invoice("1,234.50"), invoice("1,284.50")),
    }[other]
    if other == "next burst frame":
        # The rendered burst keeps what made it a test: hashes within the verifier's gate (the
        # index proposes the stored frame), so it is the thumbnail check that must refuse it.
        a, b = fingerprint(stored_image), fingerprint(query)
        assert (a.phash ^ b.phash).bit_count() <= _PHASH_MAX and (a.dhash ^ b.dhash).bit_count() <= _DHASH_MAX
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    stored = describe(image=stored_image)
    fresh = describe(image=query)
    assert fresh != stored and upstream.calls == 2
    assert by_match(cache)["perceptual"] == 0
    # Control: the matcher is alive for this very entry (a lossless conversion hits).
    lossless = encode(Image.open(io.BytesIO(stored_image)), "WEBP", lossless=True)
    assert describe(image=lossless) == stored
    assert upstream.calls == 2
    assert by_match(cache)["perceptual"] == 1


def test_a_different_question_about_the_same_picture_is_a_miss(cache: Cache) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    data, near = original("chelsea.png"), jpeg85("chelsea.png")
    stored = describe(image=data)
    answers = {stored}
    # The same bytes with another prompt: a miss.
    answers.add(describe(image=data, prompt="Is it daytime?"))
    assert len(answers) == 2
    for kwargs in ({"prompt": "How many cats?"}, {"model": "gpt-4o-mini"}, {"detail": "high"}):
        answer = describe(image=near, **kwargs)
        assert answer not in answers, kwargs
        answers.add(answer)
        # the new question is stored for itself: asked about the original, it hits
        assert describe(image=data, **kwargs) == answer
    assert upstream.calls == 5
    # Another function with the same arguments is another scope too.
    other = describer(cache, upstream, name="describe-v2")
    assert other(image=near) not in answers
    assert upstream.calls == 6
    # The prompt is normalized: case, spacing and trailing punctuation do not matter.
    assert describe(image=data, prompt="  what is in THIS picture ") == stored
    assert describe(image=near, prompt="what is in this picture") == stored
    assert upstream.calls == 6


def test_lists_of_images_match_in_order_and_in_full(cache: Cache) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    cat, cup, man = original("chelsea.png"), original("coffee.png"), original("astronaut.png")
    stored = describe(images=[cat, cup])
    assert describe(images=[cat, cup]) == stored
    assert describe(images=(jpeg85("chelsea.png"), webp_lossless("coffee.png"))) == stored
    assert upstream.calls == 1 and by_match(cache)["perceptual"] == 1
    misses = [
        [cup, cat],                                   # order matters
        [cat, man],                                   # the second image differs
        [jpeg85("chelsea.png"), mirrored("coffee.png")],  # the second is a mirror image
        [cat],                                        # fewer images
        [cat, cup, man],                              # more images
    ]
    for i, images in enumerate(misses, start=2):
        assert describe(images=images) != stored
        assert upstream.calls == i, i
    assert by_match(cache)["perceptual"] == 1


def test_bytes_path_data_url_and_pil_inputs_of_one_file_agree(cache: Cache, tmp_path: Path) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    path = sample_path("chelsea.png")
    stored = describe(image=path.read_bytes())
    assert describe(image=path) == stored
    assert describe(image=str(path)) == stored
    assert describe(image=bytearray(path.read_bytes())) == stored
    assert describe(image=data_url(path.read_bytes())) == stored
    assert by_match(cache)["exact"] == 4
    # A PIL image is keyed by its pixels (another key), and matched as the same picture.
    with Image.open(path) as img:
        assert describe(image=img) == stored
    assert by_match(cache)["perceptual"] == 1
    # A JPEG data URL of the picture is a perceptual hit as well.
    assert describe(image=data_url(jpeg85("chelsea.png"), "image/jpeg")) == stored
    assert upstream.calls == 1
    # The wrapped function gets the caller's own argument, not the cache's reading of it.
    assert upstream.asked[0][0] == path.read_bytes()


def test_pil_palette_images_that_differ_only_in_their_palette_are_different_pictures(
    cache: Cache,
) -> None:
    """Two palette images with the same indices and different palettes are different
    pictures (here: one is the colour negative of the other)."""
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    picture = photo("chelsea.png").quantize(64)
    negative = picture.copy()
    negative.putpalette([255 - v for v in picture.getpalette()])
    assert picture.convert("RGB").tobytes() != negative.convert("RGB").tobytes()
    stored = describe(image=picture)
    assert describe(image=negative) != stored, "a colour negative was answered from the cache"
    assert upstream.calls == 2


def test_perceptual_matching_switched_off_matches_exact_bytes_only(tmp_path: Path) -> None:
    upstream = vision_upstream()
    data, near = original("chelsea.png"), jpeg85("chelsea.png")
    with Cache("vision", directory=tmp_path / "a") as cache:
        describe = describer(cache, upstream)
        stored = describe(image=data)
        with cache.options(perceptual=False):
            assert describe(image=near) != stored
            assert describe(image=data) == stored
        assert upstream.calls == 2
        # Outside the block the matcher is back (the JPEG copy has an entry of its own now,
        # stored without fingerprints, so use another copy).
        assert describe(image=half_size("chelsea.png")) == stored
        assert upstream.calls == 2
        assert by_match(cache)["perceptual"] == 1

    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path / "b", vision=VisionOptions(perceptual=False)) as cache:
        assert cache.perceptual is None
        describe = describer(cache, upstream)
        stored = describe(image=data)
        for copy in (near, webp_lossless("chelsea.png"), half_size("chelsea.png")):
            assert describe(image=copy) != stored
        assert describe(image=data) == stored
        assert upstream.calls == 4
        assert by_match(cache) == {"exact": 1, "semantic": 0, "perceptual": 0}
        # No fingerprints are made or stored without the matcher.
        assert "images" not in disk_manifest(cache, describe.cache_key(image=data))


def test_async_vision_functions(cache: Cache) -> None:
    upstream = vision_upstream()

    @cache.cached(kind="vision", name=NAME)
    async def describe(image: Any, prompt: str = PROMPT, model: str = "gpt-4o",
                       detail: str = "auto") -> str:
        await asyncio.sleep(0)
        return upstream(image, prompt, model, detail)

    async def run() -> None:
        stored = await describe(image=original("coffee.png"))
        assert await describe(image=original("coffee.png")) == stored
        assert await describe(image=half_size("coffee.png")) == stored
        assert await describe(image=mirrored("coffee.png")) != stored
        assert upstream.calls == 2
        # Unreadable input passes through, twice.
        for _ in range(2):
            assert (await describe(image=b"not an image at all")).startswith("up answer")
        assert upstream.calls == 4
        with pytest.raises(InvalidRequest):
            await describe(image=12)
        assert upstream.calls == 4

    asyncio.run(run())
    stats = counts(cache)
    assert stats["by_match"] == {"exact": 1, "semantic": 0, "perceptual": 1}
    assert stats["unreadable_images"] == 2 and stats["stored"] == 2
    # An async and a sync function under one name share entries.
    assert describer(cache, upstream)(image=jpeg85("coffee.png")) == upstream_answer(1, PROMPT)
    assert upstream.calls == 4


def upstream_answer(n: int, prompt: str, model: str = "gpt-4o", detail: str = "auto",
                    label: str = "up") -> str:
    return f"{label} answer {n} to {prompt!r} ({model}, {detail})"


# --- bad inputs -------------------------------------------------------------------------------


def _truncated_png() -> bytes:
    data = original("chelsea.png")
    return data[: len(data) // 2]


def _truncated_png_file(tmp: Path) -> Path:
    path = tmp / "cut.png"
    path.write_bytes(_truncated_png())
    return path


def _truncated_pil() -> Image.Image:
    return Image.open(io.BytesIO(_truncated_png()))


UNREADABLE: dict[str, Callable[[Path], Any]] = {
    "not an image": lambda tmp: b"GIF89a? no: just some bytes that are not an image" * 10,
    "empty bytes": lambda tmp: b"",
    "truncated png": lambda tmp: _truncated_png(),
    "truncated png file": _truncated_png_file,
    "truncated PIL image": lambda tmp: _truncated_pil(),
    "missing path": lambda tmp: tmp / "no such file.png",
    "missing str path": lambda tmp: str(tmp / "nope" / "x.jpg"),
    "bomb png 40000x40000": lambda tmp: png_header_only(40_000, 40_000),
    "png over max_pixels": lambda tmp: png_header_only(9_000, 9_000),
    "malformed data url": lambda tmp: "data:image/png;base64,@@@not base64@@@",
    "data url of garbage": lambda tmp: data_url(b"plain text, not a picture"),
    "readable image + unreadable image": lambda tmp: [original("coffee.png"), b"garbage bytes"],
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_images_pass_through_uncached(tmp_path: Path, case: str) -> None:
    value = UNREADABLE[case](tmp_path)
    if isinstance(value, bytes) and case.startswith(("bomb", "png over")):
        assert len(value) < 1000  # tiny file, huge header
    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path / "cache") as cache:
        describe = describer(cache, upstream)
        kwargs = {"images": value} if isinstance(value, list) else {"image": value}
        first = describe(**kwargs)
        second = describe(**kwargs)
        assert (first, second) == (upstream_answer(1, PROMPT), upstream_answer(2, PROMPT))
        stats = counts(cache)
        assert stats["unreadable_images"] == 2
        assert (stats["requests"], stats["upstream_calls"], stats["hits"], stats["stored"]) == (2, 2, 0, 0)
        assert entry_files(tmp_path / "cache", "vision") == []
        # The readable picture of a mixed request was not stored for itself either.
        assert describe(image=original("coffee.png")) == upstream_answer(3, PROMPT)


@pytest.mark.parametrize("how", ["bytes", "path", "data url"])
def test_an_image_over_max_image_bytes_passes_through_uncached(tmp_path: Path, how: str) -> None:
    data = original("chelsea.png")
    limit = len(data) // 4
    path = tmp_path / "chelsea.png"
    path.write_bytes(data)
    value = {"bytes": data, "path": path, "data url": data_url(data)}[how]
    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path / "cache", vision=VisionOptions(max_image_bytes=limit)) as cache:
        describe = describer(cache, upstream)
        assert describe(image=value) == upstream_answer(1, PROMPT)
        assert describe(image=value) == upstream_answer(2, PROMPT)
        stats = counts(cache)
        assert stats["unreadable_images"] == 2 and stats["stored"] == 0
        assert entry_files(tmp_path / "cache", "vision") == []
        # Under the limit, the same cache stores as usual.
        small = encode(photo("chelsea.png").resize((64, 43)), "JPEG", quality=70)
        assert len(small) < limit
        assert describe(image=small) == describe(image=small)
        assert upstream.calls == 3


def test_a_pil_image_over_max_pixels_passes_through(tmp_path: Path) -> None:
    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path, vision=VisionOptions(max_pixels=10_000)) as cache:
        describe = describer(cache, upstream)
        img = photo("chelsea.png")
        describe(image=img)
        describe(image=img)
        assert upstream.calls == 2
        assert counts(cache)["unreadable_images"] == 2 and counts(cache)["stored"] == 0


@pytest.mark.parametrize("kwargs", [
    {"image": 42},
    {"image": True},
    {"image": 3.5},
    {"image": {"url": "https://example.com/cat.png"}},
    {"images": [b"\x89PNG\r\n\x1a\n", 7]},
    {"image": None},
    {"images": []},
    {"image": original("chelsea.png"), "prompt": 5},
], ids=["int", "bool", "float", "dict", "list with int", "none", "empty list", "non-str prompt"])
def test_values_that_are_not_images_raise_invalid_request(cache: Cache, kwargs: dict[str, Any]) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    with pytest.raises(InvalidRequest):
        describe(**kwargs)
    assert upstream.calls == 0


def _sixteen_bit_png() -> bytes:
    gray = np.asarray(photo("chelsea.png").convert("L")).astype(np.uint16) * 257
    data = encode(Image.fromarray(gray))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    return data


def _eight_bit_png() -> bytes:
    return encode(photo("chelsea.png").convert("L"))


def _large_rgb() -> Image.Image:
    img = photo("chelsea.png")
    return img.resize((img.width * 4, img.height * 4), Image.Resampling.BICUBIC)  # short side 1200


def _cmyk_jpeg() -> bytes:
    data = encode(_large_rgb().convert("CMYK"), "JPEG", quality=90)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    return data


def _animated_gif(first: str, second: str) -> bytes:
    a = photo(first)
    b = photo(second).resize(a.size)
    data = encode(a, "GIF", save_all=True, append_images=[b], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    return data


@pytest.mark.parametrize("kind", ["16-bit png", "cmyk jpeg", "animated gif", "rgba png"])
def test_unusual_formats_are_cached_normally(cache: Cache, kind: str) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    data, copy = {
        # the copy is the same picture, clear-cut: identical or near-identical thumbnails
        "16-bit png": (_sixteen_bit_png(), _eight_bit_png()),
        "cmyk jpeg": (_cmyk_jpeg(), encode(_large_rgb())),
        "animated gif": (_animated_gif("chelsea.png", "coffee.png"), None),
        "rgba png": (original("horse.png"), encode(Image.open(sample_path("horse.png")), "WEBP", lossless=True)),
    }[kind]
    stored = describe(image=data)
    assert describe(image=data) == stored
    stats = counts(cache)
    assert stats["unreadable_images"] == 0 and stats["stored"] == 1 and stats["by_match"]["exact"] == 1
    if copy is not None:
        assert describe(image=copy) == stored
        assert by_match(cache)["perceptual"] == 1
    else:  # another animation whose first frame differs is another picture
        assert describe(image=_animated_gif("coffee.png", "chelsea.png")) != stored
    assert counts(cache)["unreadable_images"] == 0


# --- namespaces -------------------------------------------------------------------------------


def test_a_namespace_never_answers_another(shared_storage: dict[str, Any]) -> None:
    up_a, up_b = vision_upstream("A"), vision_upstream("B")
    with Cache("ns-a", **shared_storage) as a, Cache("ns-b", **shared_storage) as b:
        describe_a, describe_b = describer(a, up_a), describer(b, up_b)
        describe_a(image=original("chelsea.png"))
        describe_a(image=original("coffee.png"))
        a.flush()
        for image in (jpeg85("chelsea.png"), original("chelsea.png"), half_size("chelsea.png"),
                      original("coffee.png")):
            assert describe_b(image=image).startswith("B answer")
        assert up_a.calls == 2

        # A feed record in B's namespace that names A's entry (a damaged or hostile record)
        # is indexed, and still never answers: B's tiers have no such entry.
        request = request_for(b, webp_lossless("coffee.png"))
        assert request.key == describe_b.cache_key(image=webp_lossless("coffee.png"))
        a_key = describe_a.cache_key(image=original("coffee.png"))
        phash = fingerprint(original("coffee.png")).phash
        record = {"s": b.perceptual.scope_id(request), "k": a_key, "h": f"{phash:016x}"}
        b.perceptual.feed.append([json.dumps(record).encode()])
        b.perceptual.sync(force=True)
        # B's own coffee entry answers (B's answer), never A's.
        assert describe_b(image=webp_lossless("coffee.png")).startswith("B answer")
        assert describe_b(image=half_size("coffee.png")).startswith("B answer")
        # And A's own entries answer A.
        assert describe_a(image=jpeg85("coffee.png")).startswith("A answer")
        assert up_a.calls == 2


def test_a_feed_record_naming_another_namespaces_entry_is_never_served(tmp_path: Path) -> None:
    up_a, up_b = vision_upstream("A"), vision_upstream("B")
    with Cache("ns-a", directory=tmp_path) as a, Cache("ns-b", directory=tmp_path) as b:
        describe_a, describe_b = describer(a, up_a), describer(b, up_b)
        describe_a(image=original("astronaut.png"))
        query = jpeg85("astronaut.png")
        request = request_for(b, query)
        a_key = describe_a.cache_key(image=original("astronaut.png"))
        record = {"s": b.perceptual.scope_id(request), "k": a_key,
                  "h": f"{fingerprint(original('astronaut.png')).phash:016x}"}
        b.perceptual.feed.append([json.dumps(record).encode()])
        assert b.perceptual.sync(force=True) >= 1
        assert describe_b(image=query) == upstream_answer(1, PROMPT, label="B")
        assert up_a.calls == 1


# --- shared between processes -----------------------------------------------------------------

WORKER = r'''
import json, os, sys
from imgcache import Cache

cfg = json.loads(sys.argv[1])
cache = Cache(cfg["namespace"], redis_url=cfg["redis_url"], s3_bucket=cfg["bucket"],
              s3_endpoint_url=cfg["endpoint"], redis_max_blob_bytes=cfg["redis_max_blob_bytes"])

@cache.cached(kind="vision", name="describe")
def describe(image=None, prompt="What is in this picture?", model="gpt-4o", detail="auto", images=None):
    return f"answer from process {os.getpid()}"

answer = describe(image=cfg["path"])
cache.close()
print(json.dumps({"answer": answer, "pid": os.getpid(), "stats": cache.stats()}))
'''


def test_another_process_entry_is_found_perceptually_through_the_feed(
    redis_url: str, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    config = {"redis_url": redis_url, "s3_bucket": bucket, "s3_endpoint_url": endpoint,
              "redis_max_blob_bytes": 4096}  # fingerprints (16 KiB and up) live in S3 only
    upstream = vision_upstream()
    with Cache("fleet", **config) as b:
        describe = describer(b, upstream)
        # B has looked (and synced its feed cursor) before the other process stores.
        describe(image=original("astronaut.png"))
        assert upstream.calls == 1

        cfg = {"namespace": "fleet", "redis_url": redis_url, "bucket": bucket, "endpoint": endpoint,
               "redis_max_blob_bytes": 4096, "path": str(sample_path("chelsea.png"))}
        done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(cfg)], capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        worker = json.loads(done.stdout.strip().splitlines()[-1])
        assert worker["stats"]["stored"] == 1
        assert worker["answer"] == f"answer from process {worker['pid']}"

        # The worker's fingerprint blob is in S3, not in Redis: B reads it from S3.
        client = redis.Redis.from_url(redis_url)
        try:
            key = describe.cache_key(image=original("chelsea.png"))
            manifest = json.loads(client.get(f"imgcache:fleet:e:{{{key}}}"))
            fp = manifest["images"][0]["fp"]
            assert not client.exists(f"imgcache:fleet:b:{{{fp}}}")
        finally:
            client.close()

        assert b.perceptual.sync(force=True) >= 1
        assert describe(image=jpeg85("chelsea.png")) == worker["answer"]
        assert describe(image=half_size("chelsea.png")) == worker["answer"]
        assert upstream.calls == 1
        assert by_match(b)["perceptual"] == 2
        # And the other way round: a new process finds B's entry (read at its first lookup).
        with Cache("fleet", **config) as c:
            assert describer(c, vision_upstream("C"))(image=webp_lossless("astronaut.png")) == upstream_answer(1, PROMPT)
            assert by_match(c)["perceptual"] == 1


def test_two_cache_objects_on_one_directory_share_entries_through_the_feed(tmp_path: Path) -> None:
    up_a, up_b = vision_upstream("A"), vision_upstream("B")
    options = VisionOptions(sync_interval=0.0)  # every lookup reads the feed
    with Cache("dir", directory=tmp_path, vision=options) as a, \
            Cache("dir", directory=tmp_path, vision=options, memory_bytes=0) as b:
        describe_a, describe_b = describer(a, up_a), describer(b, up_b)
        describe_b(image=original("astronaut.png"))  # B's cursor is set before A stores
        stored = describe_a(image=original("coffee.png"))
        assert describe_b(image=jpeg85("coffee.png")) == stored
        assert up_b.calls == 1 and by_match(b)["perceptual"] == 1


# --- faults -----------------------------------------------------------------------------------


def _fingerprint_digest(manifest: dict[str, Any]) -> str:
    [image] = manifest["images"]
    return image["fp"]


@pytest.mark.parametrize("backend", ["directory", "redis"])
def test_a_corrupt_fingerprint_blob_gives_no_perceptual_hit(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "directory":
        config: dict[str, Any] = {"directory": tmp_path}
    else:
        config = {"redis_url": request.getfixturevalue("redis_url")}
    upstream = vision_upstream()
    with Cache("faults", **config) as cache:
        describe = describer(cache, upstream)
        stored = describe(image=original("chelsea.png"))
        cache.flush()
        key = describe.cache_key(image=original("chelsea.png"))
        if backend == "directory":
            manifest = disk_manifest(cache, key)
            path = disk_tier(cache).path_for(blob_key("faults", _fingerprint_digest(manifest)))
            blob = bytearray(path.read_bytes())
            blob[-100] ^= 0xFF  # one thumbnail pixel
            path.write_bytes(bytes(blob))
        else:
            client = redis.Redis.from_url(config["redis_url"])
            try:
                manifest = json.loads(client.get(f"imgcache:faults:e:{{{key}}}"))
                name = f"imgcache:faults:b:{{{_fingerprint_digest(manifest)}}}"
                blob = bytearray(client.get(name))
                blob[-100] ^= 0xFF
                client.set(name, bytes(blob))
            finally:
                client.close()
        cache.store.memory.clear()  # the memory tier held the good copy

        fresh = describe(image=jpeg85("chelsea.png"))
        assert fresh != stored and upstream.calls == 2
        stats = counts(cache)
        assert stats["corrupt"] >= 1 and stats["by_match"]["perceptual"] == 0
        # The entry itself is intact: its exact repeat is still answered.
        assert describe(image=original("chelsea.png")) == stored
        assert upstream.calls == 2


def test_a_manifest_naming_another_images_fingerprint_is_never_served(tmp_path: Path) -> None:
    """An entry for the coffee picture whose manifest names the cat's (valid) fingerprint blob,
    proposed by a feed record for a question about the cat: the fingerprint does not belong to
    the entry's image, so the coffee answer must not be served for the cat."""
    upstream = vision_upstream()
    with Cache("faults", directory=tmp_path) as cache:
        describe = describer(cache, upstream)
        describe(image=original("chelsea.png"), prompt="first question")  # stores the cat's fingerprint
        coffee_answer = describe(image=original("coffee.png"), prompt="second question")
        cat_fp = _fingerprint_digest(disk_manifest(
            cache, describe.cache_key(image=original("chelsea.png"), prompt="first question")))
        coffee_key = describe.cache_key(image=original("coffee.png"), prompt="second question")
        manifest = disk_manifest(cache, coffee_key)
        manifest["images"][0]["fp"] = cat_fp
        disk = disk_tier(cache)
        disk.set(entry_key("faults", coffee_key), json.dumps(manifest).encode())
        query = jpeg85("chelsea.png")
        request = request_for(cache, query, prompt="second question")
        record = {"s": cache.perceptual.scope_id(request), "k": coffee_key,
                  "h": f"{fingerprint(original('chelsea.png')).phash:016x}"}
        cache.perceptual.feed.append([json.dumps(record).encode()])
        cache.perceptual.sync(force=True)
        cache.store.memory.clear()
        # Precondition: the tampered entry is proposed for the cat (so only the check that a
        # stored fingerprint belongs to the entry's image stands between it and the caller).
        index = cache.perceptual.index
        assert coffee_key in [k for k, _ in index.search(record["s"], fingerprint(query).phash, 10)]

        answer = describe(image=query, prompt="second question")
        assert answer != coffee_answer, "the coffee picture's answer was served for the cat"
        assert upstream.calls == 3
        assert counts(cache)["corrupt"] >= 1


@pytest.mark.parametrize("differs", ["prompt", "model", "detail", "function"])
def test_a_feed_record_naming_an_entry_of_another_scope_is_never_served(
    cache: Cache, differs: str
) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    other = describer(cache, upstream, name="describe-other")
    stored = describe(image=original("chelsea.png"))
    stored_key = describe.cache_key(image=original("chelsea.png"))
    query = jpeg85("chelsea.png")
    kwargs = {"prompt": {"prompt": "count the cats"}, "model": {"model": "gpt-4o-mini"},
              "detail": {"detail": "low"}, "function": {}}[differs]
    name = "describe-other" if differs == "function" else NAME
    call = other if differs == "function" else describe
    request = request_for(cache, query, name=name, **kwargs)
    assert request.key == call.cache_key(image=query, **kwargs)
    record = {"s": cache.perceptual.scope_id(request), "k": stored_key,
              "h": f"{fingerprint(original('chelsea.png')).phash:016x}"}
    cache.perceptual.feed.append([json.dumps(record).encode(), b"not json", b'{"s": "short"}'])
    cache.perceptual.sync(force=True)

    answer = call(image=query, **kwargs)
    assert answer != stored and upstream.calls == 2
    assert by_match(cache)["perceptual"] == 0
    assert counts(cache)["corrupt"] >= 2  # the two garbage records at least
    # The real scope still works.
    assert describe(image=query) == stored


def test_redis_killed_mid_run_costs_no_call(own_redis: RedisServer) -> None:
    upstream = vision_upstream()
    with Cache("kill", redis_url=own_redis.url) as cache:
        describe = describer(cache, upstream)
        cat = describe(image=original("chelsea.png"))
        cup = describe(image=original("coffee.png"))
        cache.flush()
        own_redis.kill()

        # Every call still returns the right answer; what the memory tier holds still hits.
        assert describe(image=original("chelsea.png")) == cat
        assert describe(image=jpeg85("coffee.png")) == cup
        man = describe(image=original("astronaut.png"))
        assert man not in (cat, cup)
        assert describe(image=b"not an image") == upstream_answer(4, PROMPT)
        assert describe(image=half_size("astronaut.png")) == man
        assert upstream.calls == 4
        assert cache.stats()["tiers"]["redis"] == "down"

        own_redis.restart()  # back, empty
        assert wait_until(lambda: cache.stats()["tiers"]["redis"] == "up"), "breaker never closed"
        new = describe(image=original("horse.png"))
        assert upstream.calls == 5
        cache.flush()
        key = describe.cache_key(image=original("horse.png"))
        client = redis.Redis.from_url(own_redis.url, socket_timeout=2.0)
        try:
            assert client.exists(f"imgcache:kill:e:{{{key}}}")
        finally:
            client.close()
        # A new process finds it perceptually through the restarted Redis.
        with Cache("kill", redis_url=own_redis.url) as other:
            assert describer(other, vision_upstream("o"))(image=jpeg85("horse.png")) == new


# --- remote URLs ------------------------------------------------------------------------------


class ImageServer:
    """A local HTTP server for image files: ``files`` by path; ``/stream/...`` sends a file
    without a Content-Length (read until the connection closes); anything else is a 404."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's spelling
                server.requests.append(self.path)
                stream = self.path.startswith("/stream/")
                body = server.files.get(self.path.removeprefix("/stream") if stream else self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if not stream:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def calls(self, path: str) -> int:
        return self.requests.count(path)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_a_remote_image_is_fetched_and_keyed_by_its_content(cache: Cache, image_server: ImageServer) -> None:
    image_server.files.update({"/a.png": original("chelsea.png"), "/b.png": original("chelsea.png"),
                               "/c.jpg": jpeg85("chelsea.png")})
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    stored = describe(image=image_server.url("/a.png"))
    assert image_server.calls("/a.png") == 1
    assert upstream.asked[0][0] == image_server.url("/a.png")
    assert describe(image=image_server.url("/b.png")) == stored  # another URL, the same bytes
    assert describe(image=original("chelsea.png")) == stored      # the bytes themselves
    assert by_match(cache)["exact"] == 2
    assert describe(image=image_server.url("/c.jpg")) == stored   # a near copy
    assert by_match(cache)["perceptual"] == 1
    assert upstream.calls == 1
    assert describe.cache_key(image=image_server.url("/a.png")) == describe.cache_key(image=original("chelsea.png"))
    # A URL whose content changes is keyed by what it serves now.
    image_server.files["/a.png"] = original("coffee.png")
    assert describe(image=image_server.url("/a.png")) != stored
    assert upstream.calls == 2


@pytest.mark.parametrize("case", ["404", "over the limit", "over the limit, no length", "refused",
                                  "not an image"])
def test_a_remote_image_that_cannot_be_fetched_passes_through(
    tmp_path: Path, image_server: ImageServer, case: str
) -> None:
    big = original("chelsea.png")
    image_server.files.update({"/big.png": big, "/text.png": b"<html>not found</html>" * 20})
    url = {
        "404": image_server.url("/missing.png"),
        "over the limit": image_server.url("/big.png"),
        "over the limit, no length": image_server.url("/stream/big.png"),
        "refused": f"http://127.0.0.1:{free_port()}/x.png",
        "not an image": image_server.url("/text.png"),
    }[case]
    upstream = vision_upstream()
    options = VisionOptions(max_image_bytes=len(big) // 2, fetch_timeout=20.0)
    with Cache("vision", directory=tmp_path, vision=options) as cache:
        describe = describer(cache, upstream)
        assert describe(image=url) == upstream_answer(1, PROMPT)
        assert describe(image=url) == upstream_answer(2, PROMPT)
        assert upstream.asked[0][0] == url
        stats = counts(cache)
        assert stats["unreadable_images"] == 2 and stats["stored"] == 0 and stats["hits"] == 0
        assert entry_files(tmp_path, "vision") == []


def test_with_fetching_off_a_remote_image_is_keyed_by_its_url(tmp_path: Path, image_server: ImageServer) -> None:
    image_server.files.update({"/a.png": original("chelsea.png"), "/b.png": original("chelsea.png")})
    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path, vision=VisionOptions(fetch_remote=False)) as cache:
        describe = describer(cache, upstream)
        url_a, url_b = image_server.url("/a.png"), image_server.url("/b.png")
        stored = describe(image=url_a)
        assert describe(image=url_a) == stored
        assert describe(image=url_b) != stored                 # other URL, same bytes: a miss
        assert describe(image=original("chelsea.png")) != stored  # the bytes: a miss
        assert upstream.calls == 3
        # A URL that would 404 is keyed (and cached) by its URL all the same: nothing is fetched.
        missing = image_server.url("/gone.png")
        assert describe(image=missing) == describe(image=missing)
        assert upstream.calls == 4
        # A request with a URL-keyed image is matched exactly only, even beside real bytes.
        pair = describe(images=[url_a, original("coffee.png")])
        assert describe(images=[url_a, jpeg85("coffee.png")]) != pair
        assert upstream.calls == 6
        assert image_server.requests == []
        stats = counts(cache)
        assert stats["unreadable_images"] == 0 and stats["by_match"]["perceptual"] == 0


# --- invalidation -----------------------------------------------------------------------------


def test_invalidate_reaches_the_perceptual_aliases_of_a_result(cache: Cache) -> None:
    upstream = vision_upstream()
    describe = describer(cache, upstream)
    stored = describe(image=original("chelsea.png"))
    assert describe(image=jpeg85("chelsea.png")) == stored  # a perceptual alias of it
    assert describe(image=half_size("chelsea.png")) == stored
    assert upstream.calls == 1

    describe.invalidate(image=original("chelsea.png"))

    # Every copy of the invalidated result is refused: the entry and both aliases. The first
    # call goes upstream; the others are matched anew to what it made.
    fresh = describe(image=jpeg85("chelsea.png"))
    assert fresh == upstream_answer(2, PROMPT)
    assert describe(image=half_size("chelsea.png")) == fresh
    assert describe(image=original("chelsea.png")) == fresh
    assert describe(image=webp_lossless("chelsea.png")) == fresh
    assert upstream.calls == 2
    assert cache.contains(request_for(cache, original("chelsea.png")))
    stats = counts(cache)
    assert stats["hits"] == stats["by_match"]["perceptual"] == 5


def invalidation_across_processes(a: Cache, b: Cache) -> None:
    """``a`` stores a picture and an alias; ``b`` reads both into its memory; ``a`` invalidates
    the picture; ``b`` stops serving both within its sync interval, and serves what ``a``
    made after the invalidation."""
    upstream = vision_upstream()
    describe_a, describe_b = describer(a, upstream), describer(b, upstream)
    stored = describe_a(image=original("coffee.png"))
    assert describe_a(image=jpeg85("coffee.png")) == stored
    assert describe_b(image=original("coffee.png")) == stored
    assert describe_b(image=jpeg85("coffee.png")) == stored
    assert b.stats()["by_tier"]["memory"] == 0 and upstream.calls == 1

    describe_a.invalidate(image=original("coffee.png"))
    fresh = describe_a(image=original("coffee.png"))
    assert fresh == upstream_answer(2, PROMPT)
    time.sleep(0.2)  # b's sync interval: 0.1 s

    assert describe_b(image=original("coffee.png")) == fresh  # its memory copy refused, a's new one read
    assert describe_b(image=jpeg85("coffee.png")) == fresh  # the old alias refused, matched anew
    assert upstream.calls == 2


def test_invalidate_reaches_another_process_sharing_storage(shared_storage: dict[str, Any]) -> None:
    with Cache("vision", stats_interval=0.1, **shared_storage) as a, \
            Cache("vision", stats_interval=0.1, **shared_storage) as b:
        invalidation_across_processes(a, b)


def test_malformed_invalidation_records_are_skipped(tmp_path: Path) -> None:
    upstream = vision_upstream()
    with Cache("vision", directory=tmp_path, stats_interval=0.0) as cache:
        describe = describer(cache, upstream)
        stored = describe(image=original("chelsea.png"))
        key = describe.cache_key(image=original("chelsea.png"))
        feed = tmp_path / "vision" / "invalidated.log"
        feed.write_bytes(b"not json\n[1, 2]\n" + json.dumps({"k": key, "t": "soon"}).encode() + b"\n"
                         + json.dumps({"k": "../" + key[3:], "t": time.time() + 60}).encode() + b"\n"
                         + json.dumps({"k": key, "t": float("nan")}).encode().replace(b"NaN", b"1e999") + b"\n")
        assert describe(image=original("chelsea.png")) == stored
        assert describe(image=jpeg85("chelsea.png")) == stored
        assert upstream.calls == 1
        # a well-formed record from another process takes effect
        with feed.open("ab") as log:
            log.write(json.dumps({"k": key, "t": time.time()}).encode() + b"\n")
        assert describe(image=original("chelsea.png")) == upstream_answer(2, PROMPT)
