"""Perceptual matching of images: the same picture in other bytes (re-encoded, resized, converted).

Modules: ``decoding`` (what decoding an image may take), ``fingerprint`` (an image reduced to
a thumbnail, two hashes and, where it holds text, ``detail``), ``verifier`` (whether two
fingerprints are one picture), ``hamming`` (the index of their hashes) and ``matcher``
(scopes, find, add). :class:`PerceptualMatcher` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_names

# The function shares its name with its module: importing it here binds the package's
# ``fingerprint`` to the function, after the import system bound it to the module. (numpy
# only, as before the split; Pillow and imagehash are imported when an image is fingerprinted.)
from .fingerprint import Fingerprint, fingerprint

__all__ = ["Fingerprint", "PerceptualMatcher", "fingerprint"]

_LAZY = {"PerceptualMatcher": "imgcache.match.perceptual.matcher"}

if TYPE_CHECKING:
    from .matcher import PerceptualMatcher


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
