"""Surface normalization of prompts: what two spellings of one request have in common.

Only changes that cannot change the picture are made here (the exact key is built from the
result); meaning-level equivalence (filler words, synonyms) belongs to semantic matching.
"""

from __future__ import annotations

import re
import unicodedata

# Typographic quotes, primes and dashes -> ASCII.
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u00b4": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u00ab": '"', "\u00bb": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-",
    }
)
_SPACE = re.compile(r"\s+")
_TRAILING_PUNCT = re.compile(r"[\s.!?,;:\u2026\u3002\uff01\uff1f]+$")


def _drop_format_chars(text: str) -> str:
    """Zero-width spaces, joiners, BOMs and soft hyphens: invisible, so never meaningful."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_prompt(prompt: str) -> str:
    """NFKC, case-folded, typographic quotes made plain, whitespace collapsed, trailing
    punctuation dropped. Idempotent: ``normalize_prompt(normalize_prompt(p)) == normalize_prompt(p)``.
    """
    text = unicodedata.normalize("NFKC", prompt)
    text = _drop_format_chars(text).translate(_TRANSLATE).casefold()
    if not text.isascii():  # case folding can leave text that is no longer NFKC
        text = unicodedata.normalize("NFKC", text)
    text = _SPACE.sub(" ", text).strip()
    return _TRAILING_PUNCT.sub("", text)


def normalize_text(text: str) -> str:
    """The milder normalization of a vision request's text (a chat message, an instruction):
    NFKC, invisible characters dropped, whitespace collapsed. Case and punctuation are kept:
    a model's written answer may follow them ("reply in CAPS", "quote it exactly!")."""
    text = _drop_format_chars(unicodedata.normalize("NFKC", text))
    return _SPACE.sub(" ", text).strip()
