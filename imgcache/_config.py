"""Parsing of configuration values given as text (environment variables, CLI options)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
               "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1 << 10, "mib": 1 << 20,
               "gib": 1 << 30, "tib": 1 << 40, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_bytes(text: str, name: str) -> int:
    """``"256MiB"``, ``"1GB"``, ``"1048576"`` -> bytes."""
    match = _SIZE.fullmatch(text)
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(f"{name}={text!r} is not a size such as 268435456, 256MiB or 1GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str, name: str) -> float | None:
    """``"3600"``, ``"90s"``, ``"12h"``, ``"7d"`` -> seconds; ``""``, ``"none"`` -> None."""
    if text.strip().lower() in ("", "none", "never", "0"):
        return None
    match = _DURATION.fullmatch(text)
    if not match:
        raise ConfigError(f"{name}={text!r} is not a duration such as 3600, 90s, 12h or 7d")
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]


def cache_config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``Cache`` keyword arguments from ``IMGCACHE_*`` variables (those that are set)."""
    from ._files import parse_file_mode

    config: dict[str, Any] = {}
    for name, key in (
        ("IMGCACHE_NAMESPACE", "namespace"),
        ("IMGCACHE_REDIS_URL", "redis_url"),
        ("IMGCACHE_S3_BUCKET", "s3_bucket"),
        ("IMGCACHE_S3_ENDPOINT_URL", "s3_endpoint_url"),
        ("IMGCACHE_S3_PREFIX", "s3_prefix"),
        ("IMGCACHE_DIR", "directory"),
    ):
        if environ.get(name):
            config[key] = environ[name]
    if environ.get("IMGCACHE_MEMORY_BYTES"):
        config["memory_bytes"] = parse_bytes(environ["IMGCACHE_MEMORY_BYTES"], "IMGCACHE_MEMORY_BYTES")
    if environ.get("IMGCACHE_TTL"):
        config["ttl"] = parse_duration(environ["IMGCACHE_TTL"], "IMGCACHE_TTL")
    if environ.get("IMGCACHE_FILE_MODE"):
        config["file_mode"] = parse_file_mode(environ["IMGCACHE_FILE_MODE"], "IMGCACHE_FILE_MODE")
    if environ.get("IMGCACHE_BUDGET"):
        config["budget"] = budget_from_env(environ)
    if any(environ.get(name) for name in ("IMGCACHE_RPM", "IMGCACHE_IPM", "IMGCACHE_QUEUE_TIMEOUT")):
        config["rate_limits"] = rate_limits_from_env(environ)
    return config


def rate_limits_from_env(environ: Mapping[str, str]) -> Any:
    """``IMGCACHE_RPM`` and ``IMGCACHE_IPM`` (``dall-e-3=5,gpt-image-1=20``) and
    ``IMGCACHE_QUEUE_TIMEOUT`` (``30s``) as :class:`imgcache.RateLimits`."""
    from .spend.config import RateLimits

    def pairs(name: str) -> list[str]:
        return [part for part in (environ.get(name) or "").split(",") if part.strip()]

    options: dict[str, Any] = {}
    if environ.get("IMGCACHE_QUEUE_TIMEOUT"):
        options["queue_timeout"] = parse_duration(environ["IMGCACHE_QUEUE_TIMEOUT"], "IMGCACHE_QUEUE_TIMEOUT") or 0.0
    return RateLimits.parse(pairs("IMGCACHE_RPM"), pairs("IMGCACHE_IPM"), **options)


def budget_from_env(environ: Mapping[str, str]) -> Any:
    """``IMGCACHE_BUDGET`` ("50/day") with ``IMGCACHE_BUDGET_SCOPE``, ``_WARN_AT`` and
    ``_WEBHOOK``, as an :class:`imgcache.Budget`; ConfigError naming the variable."""
    from .spend.config import Budget

    options: dict[str, Any] = {}
    if environ.get("IMGCACHE_BUDGET_SCOPE"):
        options["scope"] = environ["IMGCACHE_BUDGET_SCOPE"]
    if environ.get("IMGCACHE_BUDGET_WEBHOOK"):
        options["webhook"] = environ["IMGCACHE_BUDGET_WEBHOOK"]
    warn_at = environ.get("IMGCACHE_BUDGET_WARN_AT")
    if warn_at:
        try:
            options["warn_at"] = None if warn_at.strip().lower() == "none" else float(warn_at)
        except ValueError:
            raise ConfigError(f"IMGCACHE_BUDGET_WARN_AT={warn_at!r} is not a fraction such as 0.8") from None
    try:
        return Budget.parse(environ["IMGCACHE_BUDGET"], **options)
    except ConfigError as exc:
        raise ConfigError(f"IMGCACHE_BUDGET: {exc}") from None
