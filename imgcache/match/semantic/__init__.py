"""Semantic matching of generation prompts: the same picture asked for in other words.

Modules: ``embed`` (embedders), ``index`` (vectors per scope), ``verifier`` and ``lexicon``
(whether two prompts ask for the same picture) and ``matcher`` (propose, verify, sync).
:class:`SemanticMatcher` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_names

__all__ = ["SemanticMatcher"]

_LAZY = {"SemanticMatcher": "imgcache.match.semantic.matcher"}

if TYPE_CHECKING:
    from .matcher import SemanticMatcher


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
