"""The canonical request and its exact key.

A :class:`Request` is what a call asks for, with everything that cannot change the answer
taken out: the prompt normalized, parameters canonicalized (defaults resolved by the adapter,
integral floats made ints, bytes replaced by their digest), parameters that do not change the
output dropped. Its :attr:`Request.key` is a versioned sha256 of that, stable across processes,
machines and releases (golden-key tests pin it); bump :data:`KEY_VERSION` to change it.

What cannot be keyed is refused with :class:`~imgcache.errors.InvalidRequest`, before any
lookup or upstream call: values that are not JSON data, and (:class:`~imgcache.errors.BeyondLimits`)
a prompt or string that is not valid Unicode (a lone surrogate), parameters nested deeper than
:data:`~imgcache._limits.MAX_DEPTH`, integers of :data:`~imgcache._limits.MAX_INT_DIGITS`
digits or more.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ._limits import check_depth, check_int, check_text
from .errors import BeyondLimits, InvalidRequest
from .normalize import normalize_prompt

if TYPE_CHECKING:
    from .images import ImageInput

KEY_VERSION: Final = 1
KINDS: Final = ("generation", "vision")

JSONData = Any  # str | int | float | bool | None | list[JSONData] | dict[str, JSONData]


def canonical_json(value: JSONData) -> str:
    """One spelling for one value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_value(value: Any, path: str = "params", depth: int = 1) -> JSONData:
    """Turn a parameter value into canonical JSON data, or raise InvalidRequest (see the
    limits in :mod:`imgcache._limits`). ``depth`` counts the lists and dicts ``value`` is in,
    itself included."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        check_text(value, path, BeyondLimits)
        return value
    if isinstance(value, int):
        check_int(value, path, BeyondLimits)
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{path}: {value!r} is not a finite number")
        return int(value) if value.is_integer() else value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, (list, tuple)):
        check_depth(depth, path, BeyondLimits)
        return [canonical_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        check_depth(depth, path, BeyondLimits)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRequest(f"{path}: key {k!r} is not a string")
            check_text(k, f"{path}: a key", BeyondLimits)
            out[k] = canonical_value(v, f"{path}.{k}", depth + 1)
        return out
    raise InvalidRequest(
        f"{path}: a {type(value).__name__} is not JSON data; pass str, number, bool, None,"
        " bytes, or lists and dicts of them"
    )


@dataclass(frozen=True, slots=True)
class Request:
    """A canonical request. Build it with :meth:`Request.build`."""

    kind: str
    operation: str
    """Which API or function answers it, e.g. ``openai.images.generate``: two functions
    never share entries unless they are given the same name."""
    prompt: str
    """The normalized prompt."""
    params: dict[str, JSONData]
    images: tuple[str, ...] = ()
    """The sha256 of each input image, in order (vision requests)."""
    raw_prompt: str = field(default="", compare=False)
    key: str = field(default="", compare=False)
    inputs: tuple[ImageInput, ...] = field(default=(), compare=False, repr=False)
    """The images themselves, for perceptual matching on an exact miss."""

    @classmethod
    def build(
        cls, kind: str, operation: str, prompt: Any, params: Mapping[str, Any],
        images: tuple[ImageInput, ...] = (),
    ) -> Request:
        """``images`` key the request by their digests (in order); a generation has none.
        InvalidRequest for what cannot be keyed (see the module's docstring)."""
        if kind not in KINDS:
            raise InvalidRequest(f"kind must be one of {KINDS}, not {kind!r}")
        if not isinstance(prompt, str):
            raise InvalidRequest(
                f"prompt must be a str, not {type(prompt).__name__}"
                if prompt is not None
                else "prompt is required"
            )
        check_text(prompt, "prompt", BeyondLimits)
        check_text(operation, "operation", BeyondLimits)
        normalized = normalize_prompt(prompt)
        canonical = canonical_value(dict(params))
        digests = tuple(image.sha256 for image in images)
        fields = {"v": KEY_VERSION, "kind": kind, "op": operation, "prompt": normalized, "params": canonical}
        if digests:  # absent, not empty, for generations: their keys stay as they were
            fields["images"] = list(digests)
        key = hashlib.sha256(canonical_json(fields).encode()).hexdigest()
        return cls(kind, operation, normalized, canonical, digests, prompt, key, tuple(images))

    def describe(self) -> dict[str, JSONData]:
        """What an entry manifest records about the request that made it."""
        described = {"kind": self.kind, "op": self.operation, "prompt": self.prompt, "params": self.params}
        if self.images:
            described["images"] = list(self.images)
        return described
