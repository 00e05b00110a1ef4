"""The entry manifest: what is stored under a request's key, beside the blobs it names.

One small JSON document per entry: the normalized request, the result with its bytes
replaced by their sha256 digests (see :mod:`imgcache.codec`), when it was made, what it cost,
its lifetime, and for an *alias* (a semantic or perceptual match stored under the matching
request's key) which entry it was matched to. Everything read back from a shared store is
checked here (:func:`parse`) before anything else looks at it.

Lifetime: with a TTL an entry expires ``ttl`` seconds after it was made; a hit in the second
half of its life renews it (:func:`renewed`), up to :data:`TTL_EXTENSION_CAP` TTLs from its
creation (``max_expires``), which is also how long its blobs are kept.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._vocabulary import HEX_ID

if TYPE_CHECKING:
    from .request import Request

VERSION = 1
TTL_EXTENSION_CAP = 8
"""With a TTL, an entry that keeps being hit lives up to this many TTLs from its creation."""
MATCHES = ("exact", "semantic", "perceptual")
"""How an entry came to answer its key: its own result, or an alias of a matched entry's."""
_RESULT_TYPES = frozenset({"bytes", "str", "json"})
_NUMBER_FIELDS = ("created", "ttl", "expires", "max_expires", "cost_usd", "elapsed")


@dataclass(frozen=True)
class Hit:
    """A stored entry as read: its manifest, the blobs it names, and where it was found."""

    manifest: dict[str, Any]
    blobs: dict[str, bytes]
    tier: str
    """The slowest tier that served part of the hit."""


def new(request: Request, result: dict[str, Any], *, ttl: float | None, cost_usd: float | None,
        elapsed: float, images: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The manifest of a result just made for ``request`` (``result``: the codec's reference)."""
    now = time.time()
    manifest = {
        "v": VERSION,
        "key": request.key,
        "request": request.describe(),
        "result": result,
        "created": now,
        "ttl": ttl,
        "expires": None if ttl is None else now + ttl,
        "max_expires": None if ttl is None else now + ttl * TTL_EXTENSION_CAP,
        "cost_usd": cost_usd,
        "elapsed": round(elapsed, 6),
        "hits": 0,
    }
    if images:
        manifest["images"] = images
    return manifest


def alias(request: Request, found: Mapping[str, Any], match: str, matched: dict[str, Any]) -> dict[str, Any]:
    """The manifest that stores ``found`` (an entry made for another request) under
    ``request``'s key as a ``match`` hit; ``matched`` says what was matched and how."""
    matched = dict(matched, created=made_for(found)[1])  # when its result was made
    return dict(found, key=request.key, request=request.describe(), match=match,
                created=time.time(), hits=0, matched=matched)


def same_scope(manifest: Mapping[str, Any], request: Request) -> bool:
    """Whether the entry was made for a request of ``request``'s kind, operation and
    parameters: the only entries a near match may answer it with."""
    stored = manifest.get("request") or {}
    return (stored.get("kind"), stored.get("op"), stored.get("params")) == (
        request.kind, request.operation, request.params)


def made_for(manifest: Mapping[str, Any]) -> tuple[str, float]:
    """(key, created) of the request a stored result was made for: the entry's own for an
    exact entry; for an alias, the matched entry's (as the alias recorded it)."""
    created = manifest.get("created")
    made = float(created) if isinstance(created, (int, float)) else 0.0
    matched = manifest.get("matched")
    if manifest.get("match", "exact") != "exact" and isinstance(matched, Mapping):
        key, origin_created = matched.get("key"), matched.get("created")
        if isinstance(key, str):
            # aliases stored before matched["created"] existed: the alias's own time (later)
            return key, float(origin_created) if isinstance(origin_created, (int, float)) else made
    return str(manifest.get("key")), made


def renewed(manifest: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
    """Sliding TTL: the manifest with a longer life after a hit in the second half of its
    life, up to the cap; None when it needs no renewal (or has no TTL)."""
    ttl, expires, cap = manifest.get("ttl"), manifest.get("expires"), manifest.get("max_expires")
    if ttl is None or expires is None or cap is None:
        return None
    now = time.time() if now is None else now
    if expires - now > ttl / 2 or expires >= cap:
        return None
    return dict(manifest, expires=min(now + ttl, cap), hits=int(manifest.get("hits", 0)) + 1)


def remaining_ttl(manifest: Mapping[str, Any], *, blob: bool = False) -> float | None:
    """Seconds a manifest (or, with ``blob``, its blobs: until the lifetime cap) has left."""
    deadline = manifest.get("max_expires") if blob else manifest.get("expires")
    return None if deadline is None else deadline - time.time()


def expired(manifest: Mapping[str, Any], now: float | None = None) -> bool:
    expires = manifest.get("expires")
    return expires is not None and expires <= (time.time() if now is None else now)


def dump(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode()


def parse(raw: bytes, key_hex: str) -> dict[str, Any]:
    """Parse and check a manifest read back from a tier: its whole shape, since everything in
    it came from a shared store. Anything off is CorruptData (a miss), never a caller's error."""
    from .errors import CorruptData

    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise CorruptData("manifest", f"entry {key_hex[:12]} does not parse: {exc}") from exc
    result = manifest.get("result") if isinstance(manifest, dict) else None
    ok = (
        isinstance(result, dict)
        and manifest.get("v") == VERSION
        and manifest.get("key") == key_hex
        and result.get("type") in _RESULT_TYPES
        and isinstance(result.get("body"), str)
        and HEX_ID.fullmatch(result["body"]) is not None
        and isinstance(result.get("blobs"), list)
        and all(isinstance(d, str) and HEX_ID.fullmatch(d) for d in result["blobs"])
        and all(_number_or_none(manifest.get(name)) for name in _NUMBER_FIELDS)
        and type(manifest.get("hits", 0)) is int
        and manifest.get("match", "exact") in MATCHES
        and _images_ok(manifest.get("images", []))
    )
    if not ok:
        raise CorruptData("manifest", f"entry {key_hex[:12]} is not a valid manifest for its key")
    return manifest  # type: ignore[no-any-return]


def needed_blobs(manifest: Mapping[str, Any]) -> list[str]:
    """Digests of every blob an entry needs: its result's and its images' fingerprints."""
    from .codec import blob_digests

    return list(dict.fromkeys([*blob_digests(manifest["result"]),
                               *(image["fp"] for image in manifest.get("images", []))]))


def _number_or_none(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and math.isfinite(value))


def _images_ok(images: Any) -> bool:
    """A vision entry's ``images``: per input image its digest and its fingerprint blob's."""
    return isinstance(images, list) and all(
        isinstance(image, dict) and all(isinstance(image.get(name), str) and HEX_ID.fullmatch(image[name])
                                        for name in ("sha256", "fp"))
        for image in images)
