"""Results <-> content-addressed blobs.

A result is stored as a *body* blob plus the blobs it refers to, each under the sha256 of its
bytes, and described in the entry manifest by a small reference::

    {"type": "bytes" | "str" | "json", "body": "<sha256>", "blobs": ["<sha256>", ...]}

``json`` results are JSON data in which ``bytes`` values may appear anywhere; each becomes a
blob and is written in the body as ``{"$blob": "<sha256>"}``. That is how an image response
stores its images once, whatever request made them.

Only what comes back exactly as it went in, in any process, is stored: a tuple (it would
come back a list), a dict subclass, a non-string key, a NaN, a string or key that is not valid
Unicode, lists and dicts nested deeper than :data:`~imgcache._limits.MAX_DEPTH` (or a cycle),
an integer of :data:`~imgcache._limits.MAX_INT_DIGITS` digits or more are refused with
:class:`UnstorableResult`, never stored lossy; the caller gets its result uncached.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from ._limits import check_depth, check_int, check_text
from .errors import CorruptData, UnstorableResult

BLOB_MARK = "$blob"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode(value: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Return ``(reference, blobs)`` for a result, or raise UnstorableResult."""
    blobs: dict[str, bytes] = {}
    if type(value) is bytes:
        kind, body = "bytes", value
    elif type(value) is str:
        check_text(value, "result", UnstorableResult)
        kind, body = "str", value.encode()
    else:
        tree = _to_tree(value, blobs, "result")
        kind = "json"
        body = json.dumps(tree, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    body_digest = digest(body)
    refs = sorted(blobs)
    blobs[body_digest] = body
    return {"type": kind, "body": body_digest, "blobs": refs}, blobs


def decode(reference: Mapping[str, Any], blobs: Mapping[str, bytes]) -> Any:
    """Rebuild a result from its reference and blobs (already checked against their digests)."""
    try:
        kind = reference["type"]
        body = blobs[reference["body"]]
        if kind == "bytes":
            return body
        if kind == "str":
            return body.decode()
        if kind == "json":
            return _from_tree(json.loads(body), blobs)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:  # a body nested thousands deep
        raise CorruptData("codec", f"cannot rebuild the result: {exc!r}") from exc
    raise CorruptData("codec", f"unknown result type {kind!r}")


def blob_digests(reference: Mapping[str, Any]) -> list[str]:
    """Every blob a result needs, body first."""
    return [reference["body"], *reference["blobs"]]


def _to_tree(value: Any, blobs: dict[str, bytes], path: str, depth: int = 1) -> Any:
    """``value`` as JSON data with each bytes value replaced by a blob reference; ``depth``
    counts the lists and dicts ``value`` is in, itself included."""
    t = type(value)
    if value is None or t is bool:
        return value
    if t is int:
        check_int(value, path, UnstorableResult)
        return value
    if t is str:
        check_text(value, path, UnstorableResult)
        return value
    if t is float:
        if not math.isfinite(value):
            raise UnstorableResult(f"{path}: {value!r} cannot be stored as JSON")
        return value
    if t is bytes:
        d = digest(value)
        blobs[d] = value
        return {BLOB_MARK: d}
    if t is list:
        check_depth(depth, path, UnstorableResult)
        return [_to_tree(item, blobs, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if t is dict:
        check_depth(depth, path, UnstorableResult)
        if BLOB_MARK in value:
            raise UnstorableResult(f"{path}: the key {BLOB_MARK!r} is reserved")
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise UnstorableResult(f"{path}: key {k!r} is not a str and would come back as one")
            check_text(k, f"{path}: a key", UnstorableResult)
            out[k] = _to_tree(v, blobs, f"{path}.{k}", depth + 1)
        return out
    raise UnstorableResult(
        f"{path}: a {t.__name__} cannot be stored faithfully (bytes, str, and JSON data"
        " with bytes inside are)"
    )


def _from_tree(node: Any, blobs: Mapping[str, bytes]) -> Any:
    if isinstance(node, list):
        return [_from_tree(item, blobs) for item in node]
    if isinstance(node, dict):
        if len(node) == 1 and BLOB_MARK in node:
            return blobs[node[BLOB_MARK]]
        return {k: _from_tree(v, blobs) for k, v in node.items()}
    return node
