"""The verifier: whether an image made for one prompt is a right answer to another.

Cosine similarity of sentence embeddings only *proposes* candidates: "a cat on a dog" and "a
dog on a cat" embed almost identically. :func:`verify` decides, by lexical alignment:

1. request filler is cut from the start ("generate an image of", "please draw", "can you
   make", "i want a picture of") and polite filler from the end ("please", "for me");
2. the rest is split into parts at ``, ; . ? :`` and each part into tokens (words, numbers,
   and every other symbol - emoji included - as a token of its own; hyphens, quotes and
   brackets are dropped, so "photo-realistic" == "photo realistic");
3. articles are dropped, and each token or short phrase is mapped to a canonical spelling
   from a small curated lexicon (:mod:`imgcache.match.semantic.lexicon`: photograph -> photo,
   couch -> sofa, atop -> on top of, grey -> gray, two -> 2, sits/sitting/sat -> sit, ...);
4. a "<medium> of" leading a part becomes a part of its own ("a photo of a fox" == "fox,
   photo"; not when two parts have one); a part made only of colour or size words stays
   glued to the part before it, and so does a labelled part ("left: a cat, right: a dog");
   where two or more parts name things ("a man", "two dogs"), a part that describes ("bald",
   "in a red dress", "wearing a hat") is glued to the last thing before it;
5. two prompts are the same iff their multisets of parts are equal, each part an *ordered*
   token sequence: so comma-separated parts may be reordered, but any word that one prompt
   has and the other lacks (a colour, a number, "without", "woodcut", "sunset", "close up")
   or a change of word order inside a part (who rides whom) makes them different;
6. prompts that step 5 finds different are compared once more as the scene they describe
   (:mod:`imgcache.match.semantic.scene`: things, relations, styles), so a sentence rebuilt
   in another voice or order is the same request, while a role, count or attribute moved to
   another thing is not.

Conservative by design: a wrong image is worse than a miss. Linear in the prompt's length.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

from . import lexicon as lx
from .scene import scene
from .sentence import PREPOSITIONS, QUOTE
from .wordnet import may_be_adjective, may_be_adverb, may_be_compound

__all__ = ["Verdict", "content_text", "verify"]

SAME_REASON = "same content (filler, synonyms, order of comma-separated parts ignored)"
SCENE_REASON = ("same scene in another sentence (the same things, modifiers and relations: voice, "
                "possessives, 'made of', 'with ... on it' and clause order ignored)")
EMPTY_REASON = "no content left after removing filler (semantic matching declines)"


@dataclass(frozen=True)
class Verdict:
    """The verifier's decision and a human-readable reason for it."""

    same: bool
    reason: str


# -- filler ----------------------------------------------------------------------------------

# Leading request filler, stripped repeatedly (each alternative anchored at the start).
_LEAD = re.compile(
    r"""(?:
        /imagine(?:\s+prompt)?\s*:?
      | (?:hey|hi|hello)(?:\s+there)?(?:\s*[,!:.]|(?=\s+(?:please|pls|can|could|would|will|i|let|lets|let's
            |help|generate|create|make|draw|render|imagine|depict|show|give)\b))[\s,!:.]*
      | (?:please|pls|plz|kindly)\b[\s,:]*
      | (?:can|could|would|will)\s+you\b
      | i(?:\s+would|\s*'d|\s+will|\s*'ll|\s+really)?\s+(?:like|love|want|need)(?:\s+you)?
            (?:\s+to(?:\s+(?:see|have|get))?)?\b
      | i\s*(?:am|'m)\s+looking\s+for\b
      | (?:let's|lets|let\s+us|help\s+me)\b
      | (?:generate|create|make|draw|render|imagine|depict|visuali[sz]e)
            (?!\s+(?:of|up)\b)(?:\s+(?:me|us|for\s+me|for\s+us))?\b[\s:]*
      | (?:show|give|get|produce|design)
            (?:\s+(?:me|us|for\s+me|for\s+us)\b|(?=\s+(?:an?|the|some)\s))
      | (?:(?:an?|the|one|some)\s+)?(?:image|picture|pic|visual)
            (?:\s+(?:of|showing|that\s+shows|which\s+shows|depicting|that\s+depicts|featuring))?
            \s*:
      | (?:(?:an?|the|one|some)\s+)?(?:image|picture|pic|visual)
            \s+(?:of|showing|that\s+shows|which\s+shows|depicting|that\s+depicts|featuring)\b
    )[\s,]*""",
    re.VERBOSE,
)
_WORD = re.compile(r"[^\W\d_]+")
_LEAD_WINDOW = 300  # filler is short: look only at the start, so a long prompt costs nothing

# Trailing polite filler: "..., please", "... for me", "...! thanks".
_TAIL = re.compile(
    r"""(?:
        (?:^|(?<=[\s,;:.!?]))(?<!says\s)(?<!saying\s)(?<!reads\s)(?<!word\s)(?<!text\s)
            (?:please|pls|plz)
      | \s+for\s+(?:me|us)
      | [,;:.!?]\s*(?:thanks|thank\s+you|thx|ty)(?:\s+so\s+much)?
    )[\s,;:.!?]*$""",
    re.VERBOSE,
)
_TAIL_WINDOW = 80


def _names_a_thing(filler: str, rest: str) -> bool:
    """A request verb that, with the word after it, names a thing ("draw bridge", "make
    believe"; WordNet's compounds)."""
    said = filler.split()
    following = _WORD.match(rest)
    return len(said) == 1 and said[0].isalpha() and following is not None and may_be_compound((said[0], following.group()))


def _strip_filler(text: str) -> str:
    head, rest = text[:_LEAD_WINDOW], text[_LEAD_WINDOW:]
    for _ in range(8):
        match = _LEAD.match(head)
        if match is None or match.end() == 0 or _names_a_thing(match.group(), head[match.end():]):
            break
        head = head[match.end():]
    text = head + rest
    for _ in range(4):
        cut = max(0, len(text) - _TAIL_WINDOW)
        if cut:
            space = text.find(" ", cut)
            cut = space if space >= 0 else len(text)
        match = _TAIL.search(text, cut)
        if match is None:
            break
        text = text[: match.start()].rstrip(" ,;:.!?")
    return text.strip(" ,;:.!?")


def content_text(prompt: str) -> str:
    """The prompt with request filler removed: what the embedder should embed.

    ``prompt`` is a :func:`~imgcache.normalize.normalize_prompt` output (lower case, plain
    quotes, single spaces). Returns ``""`` when nothing but filler is left.
    """
    text = _strip_filler(prompt)
    return text if _TOKEN.search(text) else ""


# -- tokens and parts ------------------------------------------------------------------------

# Part boundaries: , ; : . ? (and their CJK forms; "!" is emphasis as often as an end of
# sentence, so it only separates words); never inside a number ("1,000", "1.5",
# "10:30"), and a "." only before a space or the end, and not after an initial ("h.r. giger").
_SEPARATOR = re.compile(
    r"[;?\u3001\u3002\uff0c\uff1b\uff1a\uff1f]"
    r"|(?<!\d)[,:]|[,:](?!\d)"
    r"|(?<!\b\w)\.(?=\s|$)"
)
# Numbers (with a minus sign: "-5" is not "5"), letter runs (a run of CJK characters is one
# token) and every other visible character except the ignorable punctuation (quotes,
# brackets, dashes, slashes, emphasis marks, emoji presentation selectors) as a token.
_TOKEN = re.compile(
    r"(?:(?<![\w.])-)?\d+(?:[.,:]\d+)*"
    r"|[^\W\d_]+"
    r"|[^\s\w'\"`()\[\]{}<>\-/\\|*~.,:;!?\ufe0e\ufe0f]"
)
# DiffusionDB spells some numbers digit by digit before a unit: "3 5 mm", "1 9 9 0 s".
# Joined in the text, so "two 5 mm screws" (a number word) stays two numbers.
_SPACED_DIGITS = re.compile(r"(?<![\w.])\d(?: \d)+(?= ?(?:mm|k|s|px|fps|d|p)\b)")
_SEPARATOR_KEPT = re.compile(f"({_SEPARATOR.pattern})")
# "left: a cat, right: a dog": with two or more colons, a label names the part after it.
_LABEL_COLONS = (":", "\uff1a")
# "fifty-one dollar bills" are 51, "fifty one-dollar bills" 50 (the hyphen says which words go).
_HYPHENATED_NUMBER = re.compile(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)-"
                                r"(one|two|three|four|five|six|seven|eight|nine)\b")
_RELATION = frozenset({"in", "on", "at", "with", "without", "by", "from", "under", "over",
                       "and", "of", "to", "near", "behind", "above", "below"})
_VERB_BASES = frozenset(lx.VERB_FORMS)
_MEDIUM_HEAD_MAX = 5  # "award winning hyperrealistic oil painting of": a medium, not a scene
_DESCRIBING = lx.COLORS | lx.SIZES | lx.PALETTE
_BARE_THING_MAX = 3  # a tag as short as "old fisherman" may name a creature: a thing
_MAYBE_COMPOUND = "~compound"  # starts a part that may be a compound ("man eating sharks")
_MAYBE_NOUN = "~noun"  # ends a verb's bare form after a singular word: it may be a noun
_BEFORE_A_VERB = frozenset({"to", "can", "could", "will", "would", "should", "must", "might", "may", "not",
                            "i", "you", "we", "they", "who", "people", "children", "men", "women"})
_GLUE = "\x00"  # joins an attribute-only part to the part before it


# Each word that needs attention, with what it becomes: nothing (articles), canonical tokens
# (synonyms); phrases are matched on canonical tokens, looking back from their last word.
_EXPAND: dict[str, tuple[str, ...]] = {word: () for word in lx.DROPPED}
_EXPAND.update({word: tuple(value.split(" ")) for word, value in lx.SYNONYMS.items()})
# Short double-quoted text is text to draw ('a sign saying "stop, go"'): its punctuation
# stays in place as tokens (private-use stand-ins), so it is never split and reordered.
_QUOTED = re.compile(r'"[^"]{1,40}"')
_QUOTED_TEXT = re.compile(r"""(?:^|[\s(])(["'])[^"']+\1""")  # '"open"' or "'open'", not "turtle's"
_QUOTED_PUNCT = str.maketrans({ch: chr(0xE000 + i) for i, ch in enumerate(",;:.!?")})
_SHOWN_PUNCT = str.maketrans({chr(0xE000 + i): ch for i, ch in enumerate(",;:.!?")})
# Quoted text to draw ('a sign that says "open"'): opened after a space, a bracket or the
# start, closed before a space, punctuation or the end (so not "a turtle's back").
_QUOTATION = re.compile(r"""(?:^|(?<=[\s(]))(["'])([^"'\s][^"']{0,199})\1(?=[\s.,;:!?)]|$)""")
_PHRASES = {key: tuple(value.split(" ")) for key, value in lx.PHRASES.items()}
_PHRASE_LAST = frozenset(key[-1] for key in _PHRASES)
_PHRASE_LENGTHS = sorted({len(key) for key in _PHRASES}, reverse=True)
_COLOR_WORDS = frozenset({"colored", "color"})
_SPECIAL = (frozenset(_EXPAND) | _PHRASE_LAST | _COLOR_WORDS | frozenset(lx.VERBS) | frozenset(lx.VERBS_BEFORE_OBJECT)
            | lx.AUXILIARIES)
# With a noun like "sheep" in a part, "a", verb agreement and "is"/"are" carry the count.
_SPECIAL_KEEP_NUMBER = _SPECIAL - frozenset(lx.VERBS) - lx.AUXILIARIES - {"a", "an"}


def _push(out: list[str], token: str, after_aux: bool) -> bool:
    """Append one canonical token to ``out``; returns whether it is an auxiliary."""
    if token in _PHRASE_LAST:
        for length in _PHRASE_LENGTHS:
            if length - 1 <= len(out):
                key = (*out[len(out) - length + 1 :], token)
                replacement = _PHRASES.get(key)
                if replacement is not None:
                    del out[len(out) - length + 1 :]
                    out.extend(replacement)
                    return False
    if after_aux and (token in lx.VERBS or token.endswith("ing")):
        out.pop()  # "a cat is sleeping" == "a cat sleeping"
    if token in _COLOR_WORDS and out and out[-1] in lx.COLORS:
        return False  # "a red colored car" == "a red car"
    out.append(lx.VERBS.get(token, token))
    return token in lx.AUXILIARIES


def _verbal(token: str) -> bool:
    """A canonical token that may be a verb taking an object ("eat", "chasing", "painted")."""
    return token in _VERB_BASES or (len(token) > 4 and token.endswith(("ing", "ed")))


def _kept_article(out: list[str], following: str | None) -> str | None:
    """The token an article stays as, where it tells two meanings apart: after a verb it
    marks the verb's object ("a man eating a shark", not "a man-eating shark"), after "that
    is" a noun ("a boat", not a quality), after "and" after a word that may describe another
    thing, and
    "in the front of" a car is not "in front of" it."""
    if not out:
        return None
    if _verbal(out[-1]) or (out[-1] in lx.AUXILIARIES and len(out) > 1 and out[-2] in ("that", "which", "who")):
        return "a"  # "a man eating a shark"; "a house that is a boat" (not a quality)
    if out[-1] == "in" and following in ("front", "back"):
        return "the"
    if out[-1] == "and" and (following in _DESCRIBING or (len(out) > 1 and (
            out[-2] in _DESCRIBING or may_be_adjective(out[-2])))):
        return "a"  # "a tall and a thin man" is two men, "a tall and thin man" one
    return None


def _canonical_tokens(words: list[str]) -> list[str]:
    """Articles dropped (but for :func:`_kept_article`); synonyms, phrases and verb forms
    mapped to canonical tokens."""
    keep_number = lx.same_in_plural(words)
    special = _SPECIAL_KEEP_NUMBER if keep_number else _SPECIAL
    out: list[str] = []
    after_aux = False
    for at, word in enumerate(words):
        if word not in special:  # the common case, kept cheap
            if after_aux and word.endswith("ing"):
                out.pop()
            if word in _VERB_BASES and at and not (words[at - 1].endswith("s") or words[at - 1] in _BEFORE_A_VERB
                                                    or words[at - 1] in lx.DETERMINERS):
                word += _MAYBE_NOUN  # "a dog run", "an umbrella stand" (but "two dogs run")
            out.append(word)
            after_aux = False
            continue
        following = words[at + 1] if at + 1 < len(words) else None
        if word in lx.VERBS_BEFORE_OBJECT and following in lx.DETERMINERS:
            word = lx.VERBS_BEFORE_OBJECT[word]  # "a girl holds a lantern" (not "climbing holds")
        if word in lx.DROPPED:
            kept = _kept_article(out, following)
            if kept is not None:
                out.append(kept)
                after_aux = False
                continue
        tokens = _EXPAND.get(word, (word,))
        if not tokens:
            after_aux = False  # an article: "is a sleeping cat" keeps its "is"
        for token in tokens:
            after_aux = _push(out, token, after_aux)
    if len(out) > 2 and out[0] == "there" and out[1] in ("is", "are") and not keep_number:
        del out[:2]  # "there is a cat on a mat" == "a cat on a mat"
    if len(out) > 1 and out[0] in lx.LIST_GLUE:
        del out[0]  # ", and a black hat" is the list's glue, not content
    if (len(words) > 2 and words[0] not in lx.DROPPED and words[1] in lx.VERBS and words[1].endswith("ing")
            and words[2] not in lx.DROPPED):
        out.insert(0, _MAYBE_COMPOUND)  # "man eating sharks" may be sharks; "a man eating sharks" is a man
    return out


def _split_medium(tokens: list[str]) -> list[list[str]]:
    """``[photo, of, red, fox]`` -> ``[[photo], [red, fox]]``: a leading "<...medium> of"
    (``[monet, s, painting, of, bridge]`` -> ``[[painting], [bridge, by, monet]]``)."""
    try:
        at = tokens.index("of", 1, _MEDIUM_HEAD_MAX + 1)
    except ValueError:
        return [tokens]
    head, rest = tokens[:at], tokens[at + 1 :]
    if not rest or head[-1] not in lx.MEDIA:
        return [tokens]
    for word in head[:-1]:
        if word in _RELATION or word in _VERB_BASES or word.endswith("ing"):
            return [tokens]  # "a woman holding a portrait of a man": not a leading medium
    if len(head) > 2 and head[-2] == "s" and not head[-3].isdigit():  # not "a 70s cartoon of"
        return [head[-1:], [*rest, "by", *head[:-2]]]  # "Monet's painting of X": X by Monet
    return [head, rest]


@lru_cache(maxsize=4096)
def _analyse(prompt: str) -> tuple[tuple[str, ...], ...]:
    """The prompt's parts, each an ordered tuple of canonical tokens (empty: no content)."""
    text = _SPACED_DIGITS.sub(lambda match: match.group().replace(" ", ""), content_text(prompt))
    if "-" in text:
        text = _HYPHENATED_NUMBER.sub(lambda match: str(int(lx.SYNONYMS[match[1]]) + int(lx.SYNONYMS[match[2]])), text)
    if '"' in text:
        text = _QUOTED.sub(lambda match: match.group().translate(_QUOTED_PUNCT), text)
    cut = _SEPARATOR_KEPT.split(text)  # part, separator, part, ...
    labels = sum(separator in _LABEL_COLONS for separator in cut[1::2]) > 1
    raw_parts = []  # (words, canonical tokens, whether a label comes before)
    for at in range(0, len(cut), 2):
        words = _TOKEN.findall(cut[at])
        tokens = _canonical_tokens(words)
        if tokens:
            raw_parts.append((words, tokens, labels and at > 0 and cut[at - 1] in _LABEL_COLONS))
    split = [_split_medium(tokens) for _, tokens, _ in raw_parts]
    if sum(len(pieces) > 1 for pieces in split) > 1:
        split = [[tokens] for _, tokens, _ in raw_parts]  # "a photo of a cat, a painting of a dog"
    pieces: list[tuple[list[str], str]] = []  # (tokens, what it is: _THING, _LEANS or _FREE)
    for (words, _, labelled), medium_split in zip(raw_parts, split):
        for at, piece in enumerate(medium_split):
            if pieces and ((labelled and at == 0) or all(word in lx.ATTACHED for word in piece)):
                pieces[-1] = ([*pieces[-1][0], _GLUE, *piece], pieces[-1][1])  # "left: a cat"; "a cat, black"
            else:
                pieces.append((piece, _role(words, piece) if at == len(medium_split) - 1 else _FREE))
    return _grouped(pieces)


_THING, _LEANS, _FREE = "thing", "leans", "free"


def _role(words: list[str], tokens: list[str]) -> str:
    """What a comma part is: a thing ("a man", "two dogs", "a photo of a cat"), a part that
    describes the one before it (a relation or verb phrase, "in a red dress", "wearing a hat",
    or only adjectives and adverbs, "bald", "very tall", "dark gray"), or free (anything else:
    "digital art", "4k", "highly detailed", "fox")."""
    first = tokens[0]
    if ("of" in tokens or lx.MEDIA.isdisjoint(tokens[:_MEDIUM_HEAD_MAX])) and (
            words[0] in lx.DETERMINERS or (first.isdigit() and len(tokens) > 1 and len(tokens[1]) > 2)):
        return _THING  # "two dogs", not "8 k", "3 d render", "1920 s", "a manga drawing by X"
    if len(tokens) <= _BARE_THING_MAX and tokens[-1] in lx.CREATURES:
        return _THING  # "man, bald, woman, blonde"
    if first in _RELATION or first in PREPOSITIONS or _verbal(first):
        return _LEANS
    if lx.PICTURE_QUALITIES.isdisjoint(tokens) and all(
            word in _DESCRIBING or may_be_adjective(word) or may_be_adverb(word) for word in tokens):
        return _LEANS
    return _FREE


def _grouped(pieces: list[tuple[list[str], str]]) -> tuple[tuple[str, ...], ...]:
    """Parts as compared: where two or more parts name things, each part that describes is glued
    to the last thing before it ("a man, bald, a woman, blonde" is not "a man, blonde, a woman,
    bald"), the parts describing one thing in any order; free parts may go anywhere."""
    if sum(role == _THING for _, role in pieces) < 2:
        return tuple(tuple(piece) for piece, _ in pieces)
    groups: list[tuple[list[str], list[tuple[str, ...]]]] = []
    last_thing: list[tuple[str, ...]] | None = None
    for piece, role in pieces:
        if role == _LEANS and last_thing is not None:
            last_thing.append(tuple(piece))
            continue
        groups.append((piece, []))
        if role == _THING:
            last_thing = groups[-1][1]
    return tuple(tuple(chain(head, *((_GLUE, *leaning) for leaning in sorted(after)))) for head, after in groups)


# -- verdict ---------------------------------------------------------------------------------


def verify(stored: str, query: str) -> Verdict:
    """Whether an image made for ``stored`` is a right answer to ``query``.

    Both are :func:`~imgcache.normalize.normalize_prompt` outputs. Symmetric in ``.same``;
    never "same" when either side has no content beyond filler.
    """
    stored_parts, query_parts = _analyse(stored), _analyse(query)
    if not stored_parts or not query_parts:
        return Verdict(False, EMPTY_REASON)
    quotations = _quotations(stored)
    if quotations != _quotations(query):
        return Verdict(False, f"quoted text: {_quote(Counter(quotations))} here, {_quote(Counter(_quotations(query)))} there")
    if len(stored_parts) == len(query_parts) and sorted(stored_parts) == sorted(query_parts):
        return Verdict(True, SAME_REASON)
    if _same_scene(stored, query, stored_parts, query_parts):
        return Verdict(True, SCENE_REASON)
    return Verdict(False, _explain(stored_parts, query_parts))


def _same_scene(stored: str, query: str, stored_parts: tuple[tuple[str, ...], ...],
                query_parts: tuple[tuple[str, ...], ...]) -> bool:
    """Step 6. Each quotation (the same in both prompts) is one word to the scene reader."""
    quotations = _quotations(stored)
    if quotations:
        names = {text: QUOTE + chr(ord("a") + i) for i, text in enumerate(sorted(set(quotations))[:26])}
        stored, query = _named_quotations(stored, names), _named_quotations(query, names)
        stored_parts, query_parts = _analyse(stored), _analyse(query)
    if _QUOTED_TEXT.search(stored) or _QUOTED_TEXT.search(query):
        return False  # quote marks left that no quotation explains: "a sign that says 'joe's pizza'"
    stored_scene = scene(stored_parts)
    return stored_scene is not None and stored_scene == scene(query_parts)


def _quotations(prompt: str) -> list[str]:
    """Text to draw, as written but for case (folded like the whole prompt): 'a sign that says
    "stop!"' is no 'a sign that says "stop"', nor "colour" "color". A prompt quoted whole is
    no text to draw."""
    if "'" not in prompt and '"' not in prompt:
        return []
    text = content_text(prompt)
    return sorted(match.group(2) for match in _QUOTATION.finditer(text) if match.end() - match.start() < len(text))


def _named_quotations(prompt: str, names: dict[str, str]) -> str:
    return _QUOTATION.sub(lambda match: names.get(match.group(2), match.group()), prompt)


def _quote(words: Counter[str], limit: int = 4) -> str:
    listed = sorted(words.elements())
    shown = ", ".join(f"'{word.translate(_SHOWN_PUNCT)}'" for word in listed[:limit])
    return shown + (f" (+{len(listed) - limit} more)" if len(listed) > limit else "")


def _category(words: Counter[str]) -> str:
    for name, members in lx.CATEGORIES:
        if any(word in members for word in words):
            return name + ": "
    if any(word.isdigit() for word in words):
        return "number: "
    return ""


def _text(part: tuple[str, ...]) -> str:
    return " ".join(word for word in part if word != _GLUE).translate(_SHOWN_PUNCT)


def _explain(stored: tuple[tuple[str, ...], ...], query: tuple[tuple[str, ...], ...]) -> str:
    def words(parts: tuple[tuple[str, ...], ...]) -> Counter[str]:
        counts = Counter(chain.from_iterable(parts))
        counts.pop(_GLUE, None)
        return counts

    only_stored = words(stored) - words(query)
    only_query = words(query) - words(stored)
    if only_stored and only_query:
        label = _category(only_stored | only_query)
        return f"{label}{_quote(only_stored)} here, {_quote(only_query)} there"
    if only_stored or only_query:
        extra = only_stored or only_query
        side = "the stored prompt" if only_stored else "the query"
        return f"{_category(extra)}{_quote(extra)} only in {side}"
    # The same words: arranged differently.
    left = Counter(stored) - Counter(query)
    right = Counter(query) - Counter(stored)
    for a in left:
        for b in right:
            if sorted(a) == sorted(b):
                return f"word order differs in '{_text(a)}' / '{_text(b)}'"
    shown_a = " | ".join(_text(part) for part in left)
    shown_b = " | ".join(_text(part) for part in right)
    return f"the same words grouped differently: '{shown_a}' / '{shown_b}'"
