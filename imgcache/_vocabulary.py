"""Small words every layer shares: the shape of a key, sentinels, canonical JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import ConfigError

HEX_ID = re.compile(r"[0-9a-f]{64}")
"""A sha256 in hex: a request key, a blob digest, the ``<id>`` of a logical store key."""
NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_namespace(namespace: str) -> str:
    """Namespaces become parts of Redis keys, S3 keys and paths, so they are kept plain."""
    if not isinstance(namespace, str) or not NAMESPACE.fullmatch(namespace):
        raise ConfigError(
            f"namespace {namespace!r} must be 1-64 characters of letters, digits, '.', '_', '-'"
            " starting with a letter or digit"
        )
    return namespace


class Sentinel:
    """A named marker value (``MISSING``, ``FAILED``...) that is false and prints its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __bool__(self) -> bool:
        return False


def json_records(lines: list[bytes]) -> list[dict[str, Any]]:
    """The records among ``lines`` that are JSON objects, in order; the others are skipped
    (what is read back from a shared list may be damaged)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def compact_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """JSON without spaces, UTF-8 kept as is: what records and manifests are stored as."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys).encode()
