"""Vision calls end to end: an exact hit and a perceptual hit through ``@cache.cached(kind="vision")``.

    python benchmarks/bench_vision.py [--quick] [--json] [--strict]

On the embedded default (memory + a temporary directory), one stored answer for a 1024x1024
JPEG photo, plus ``--entries`` other images in the same scope (100,000; 10,000 with
``--quick``: index records for random phashes, fed through the shared feed as another process
would):

* ``vision_exact_hit``: the same bytes again. Baseline: sha256 of the bytes, the floor of any
  content-addressed lookup.
* ``vision_perceptual_hit``: the same pixels in new bytes every call (a JPEG comment differs),
  so every call misses the exact key, is fingerprinted, searched, verified against the stored
  fingerprint, and stored as an alias. Baseline: :func:`fingerprint` of the same bytes alone,
  so the ratio is what matching and storing add to the unavoidable decode.

* ``vision_cold_start``: a new process's first vision lookup reads the scope's whole feed
  into its index: a fresh cache on the same directory, synced. Baseline: reading the feed file
  and ``json.loads`` of every record, what any reader of it pays.

No targets in issue 4 for these (its targets are in ``bench_perceptual.py`` and
``bench_hamming.py``); reported for the README.

The photo is ``astronaut.png``: from ``../shared/eval/images`` beside the repository when it is
there, else from scikit-image's bundled sample data (the same file; scikit-image is a test
dependency), else ``--image PATH``. With none of them the benchmark prints ``skipped: ...`` and
exits 0.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    EVAL_DIR,
    Result,
    compare,
    emit_json,
    exit_code,
    parser,
    print_facts,
    report,
    report_stream,
    run_guarded,
    skip_run,
    summary,
)
from PIL import Image

from imgcache import Cache
from imgcache.images import image_input
from imgcache.match.config import PERCEPTUAL_FEED
from imgcache.match.perceptual import fingerprint
from imgcache.request import Request

PHOTO = "astronaut.png"
NAMES = ["vision_exact_hit", "vision_perceptual_hit", "vision_cold_start"]


def find_photo() -> Path | None:
    """``astronaut.png`` from ../shared/eval/images, else from scikit-image's sample data (read
    by path: importing skimage is slow), else None."""
    import importlib.util

    places = [EVAL_DIR / "images"]
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        places.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return next((place / PHOTO for place in places if (place / PHOTO).is_file()), None)


def photo_jpeg(path: Path, comment: str = "") -> bytes:
    with Image.open(path) as im:
        img = im.convert("RGB").resize((1024, 1024), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, comment=comment)
    return out.getvalue()


def variants(base: bytes, count: int) -> list[bytes]:
    """``count`` JPEGs with the pixels of ``base`` and distinct bytes (a comment differs)."""
    with Image.open(io.BytesIO(base)) as im:
        img = im.convert("RGB")
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=90, comment=f"copy {i}")
        out.append(buffer.getvalue())
    return out


def fill_scope(cache: Cache, request: Request, entries: int) -> None:
    """Feed ``entries`` index records of random phashes into the scope of ``request``."""
    matcher = cache.perceptual
    assert matcher is not None
    scope = matcher.scope_id(request)
    rng = random.Random(7)
    records = [json.dumps({"s": scope, "k": hashlib.sha256(str(i).encode()).hexdigest(),
                           "h": f"{rng.getrandbits(64):016x}"}).encode() for i in range(entries)]
    for start in range(0, entries, 10_000):
        matcher.feed.append(records[start:start + 10_000])
    matcher.sync(force=True)


def run(entries: int, quick: bool, photo: Path) -> list[Result]:
    base = photo_jpeg(photo)
    rounds, per_round = (4, 10) if quick else (10, 30)
    copies = iter(variants(base, 10 + 2 * rounds * per_round + 20))
    with tempfile.TemporaryDirectory() as tmp, Cache("bench-vision", directory=tmp, semantic=False) as cache:

        @cache.cached(kind="vision", name="bench.describe")
        def describe(*, image: bytes, prompt: str = "Describe this photo.", model: str = "gpt-4o") -> str:
            return "a person in a space suit"

        describe(image=base)
        fill_scope(cache, Request.build("vision", "bench.describe", "Describe this photo.", {"model": "gpt-4o"},
                                        (image_input(base, cache.vision_options),)), entries)
        stats_before = cache.stats()

        exact = Result("vision_exact_hit", "exact hit: the same 1024x1024 JPEG bytes again "
                       f"({len(base):,} bytes)", "describe(image=bytes)", "hashlib.sha256(bytes)")
        exact.candidate, exact.baseline = compare(lambda: describe(image=base),
                                                  lambda: hashlib.sha256(base).digest(),
                                                  rounds=rounds, per_round=per_round, warmup=5)

        pending: list[bytes] = []

        def perceptual() -> Any:
            data = next(copies)
            pending.append(data)
            return describe(image=data)

        def bare() -> Any:
            return fingerprint(pending[-1] if pending else base)

        near = Result("vision_perceptual_hit",
                      f"perceptual hit: the same picture in new bytes, {entries:,} other images in scope",
                      "describe(image=new bytes)", "fingerprint(bytes) alone")
        near.candidate, near.baseline = compare(perceptual, bare, rounds=rounds, per_round=per_round,
                                                warmup=5)
        stats = cache.stats()
        served = stats["by_match"]["perceptual"] - stats_before["by_match"]["perceptual"]
        near.notes.append(f"{served} perceptual hits, {stats['upstream_calls'] - 1} upstream calls "
                          "after the first (must be 0)")
        near.passed = None if stats["upstream_calls"] == 1 else False
        if stats["upstream_calls"] != 1:
            near.target = "every call a perceptual hit"

        feed = Path(tmp) / "bench-vision" / f"{PERCEPTUAL_FEED}.log"
        indexed: list[int] = []

        def cold_start() -> None:
            with Cache("bench-vision", directory=tmp, semantic=False) as fresh:
                matcher = fresh.perceptual
                assert matcher is not None
                indexed.append(matcher.sync(force=True))

        def parse_feed() -> int:
            return sum(1 for line in feed.read_bytes().splitlines() if json.loads(line))

        cold = Result("vision_cold_start", f"a new process indexes the feed: {entries + 1:,} records",
                      "Cache(...).perceptual.sync()", "json.loads of every feed record")
        cold.candidate, cold.baseline = compare(cold_start, parse_feed, rounds=3, per_round=1, warmup=1)
        cold.notes.append(f"{indexed[-1]:,} records indexed, {cold.candidate.p50 / max(indexed[-1], 1):.2f} µs each")
    return [exact, near, cold]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=None, help="other images in the scope")
    p.add_argument("--image", type=Path, default=None,
                   help=f"the photo (default: {PHOTO} from ../shared/eval/images beside the repository, "
                        "else from scikit-image's sample data; with neither, skipped, exit 0)")
    args = p.parse_args(argv)
    photo = args.image or find_photo()
    if args.image is not None and not args.image.is_file():
        p.error(f"--image: no such file: {args.image}")
    if photo is None:
        return skip_run(NAMES, f"../shared/eval not found (no {EVAL_DIR / 'images' / PHOTO}) and scikit-image "
                        f"is not installed (its sample data has {PHOTO}): pass --image PATH", args.json)
    entries = args.entries if args.entries is not None else (10_000 if args.quick else 100_000)
    results: list[Result] = []
    with report_stream(args.json) as (out, data):
        print_facts([("images in scope", f"{entries + 1:,}"), ("photo", str(photo))], out)
        outcome: list[Result] = []
        guarded = run_guarded("vision", lambda: _first(outcome, run(entries, args.quick, photo)), out, "failed")
        results = outcome if guarded.error is None else [guarded]
        for result in results:
            report(result, out)
        summary(results, out)
        if args.json:
            emit_json(results, data)
    return exit_code(results, args.strict)


def _first(sink: list[Result], results: list[Result]) -> Result:
    sink.extend(results)
    return results[0]


if __name__ == "__main__":
    raise SystemExit(main())
