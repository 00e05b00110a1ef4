"""A prompt's words as :mod:`~imgcache.match.semantic.scene` reads them: each word classed
(a thing's word, a relation, a verb, a pronoun, ...) after phrases that say one thing in
several words are rewritten to one form.

Input: the parts of :func:`~imgcache.match.semantic.verifier._analyse` (lower case, articles
dropped, synonyms and verb forms canonical). Rewrites, all meaning-preserving:

* relation phrases become one word: "on top of" -> "on", "to the left of" -> "left of" (not
  a bare "left of": "what is left of"), "inside (of)" -> "in", "made of / from", "carved
  from" (a material), "in the style of";
* "1960 s" -> "1960s" (DiffusionDB's spacing);
* "red in color", "colored red", "painted red" -> "red" (the latter as "that is red");
* "a long-necked man" -> "a man with a long neck", "a winged frog" -> "a frog with wings"
  (the word before goes with the part only if it describes one: a colour, a number, "long",
  and only a part every such creature has: "a blue eyed cat", but "two winged horses" may be
  two horses; never across a possessive: "a bearded man's dog");
* "a tall and thin man" is one man when the word before "and" may be an adjective (WordNet);
  the verifier keeps the article of "a tall and a thin man" (two);
* "painted by X" at the start of a part -> "painting by X";
* "by A, B and C": the names commas split into parts joined again by "and";
* of two parts, a first that starts with a relation word is read after the second when that
  one only names things ("on the street, five cars" is "five cars on the street"), a last one
  after the one before it on the same terms; "..., by X" stays alone (the picture's author).

The verifier keeps an article after a verb as "a": a verb followed by a bare noun ("a man
eating shark", "cat scratching post") may be a compound, so the verb is marked :data:`BARE`
and only ever equals another bare one (never "a shark eaten by a man").
"""

from __future__ import annotations

from collections.abc import Iterable

from . import lexicon as lx
from .wordnet import may_be_adjective, may_be_animal, may_be_compound

__all__ = [
    "AND",
    "BARE",
    "COPULA",
    "MADE_OF",
    "POSSESSIVE_S",
    "PRONOUN",
    "QUOTE",
    "RELATION",
    "REVERSED",
    "STYLE_OF",
    "VERB",
    "WHICH_IS",
    "WORD",
    "Word",
    "classify",
    "stem",
]

# Word classes.
WORD = "word"            # a thing's word
RELATION = "relation"    # a preposition or a relation phrase ("left of")
VERB = "verb"
PRONOUN = "pronoun"
AND = "and"
POSSESSIVE_S = "'s"      # "turtle s back"
MADE_OF = "made of"      # "X made of Y": Y is X's material
STYLE_OF = "style of"    # "in the style of X"
WHICH_IS = "which is"    # "a giraffe that is pink"
REVERSED = "written on"  # after a verb: its object comes first ("'open' written on a sign")
COPULA = "is"            # any other "is", "are", "being"
Word = tuple[str, str]   # (class, word)
BARE = "+bare"           # ends a verb whose object has no article: it may be a compound
QUOTE = "qtext"          # starts the word the verifier puts for a quotation ("qtexta")

PREPOSITIONS = frozenset({
    "on", "in", "at", "with", "without", "by", "from", "under", "over", "near", "behind",
    "above", "below", "to", "into", "onto", "around", "through", "across", "against", "along",
    "towards", "between", "among", "like", "off", "for", "about", "beyond", "past", "upon",
    "inside", "outside", "within", "after", "before", "during", "amid", "amidst", "than", "as", "of",
})
_PHRASES: dict[tuple[str, ...], str] = {
    ("on", "top", "of"): "on", ("on", "top"): "on top", ("inside", "of"): "in", ("inside",): "in",
    ("within",): "in", ("upon",): "on", ("in", "front", "of"): "in front of",
    ("next", "to"): "next to", ("out", "of"): "out of",
    ("to", "left", "of"): "left of", ("on", "left", "of"): "left of",
    ("to", "right", "of"): "right of", ("on", "right", "of"): "right of", ("right", "of"): "right of",
    ("full", "of"): "full of", ("filled", "with"): "full of",
    ("covered", "in"): "covered in", ("covered", "with"): "covered in", ("dressed", "in"): "wear",
    ("made", "of"): MADE_OF, ("made", "out", "of"): MADE_OF, ("made", "from"): MADE_OF,
    ("carved", "from"): MADE_OF, ("carved", "out", "of"): MADE_OF,
    ("in", "style", "of"): STYLE_OF, ("style", "of"): STYLE_OF,
    ("written", "on"): REVERSED,
}
# "a cupcake that has a mouth" is "a cupcake with a mouth", when nothing but one thing comes
# before ("a man with a dog that has a hat" says whose hat; "with" would not).
_HAS = {("that", "has"), ("that", "have"), ("which", "has"), ("which", "have"), ("who", "has"),
        ("who", "have"), ("having",)}
_PHRASE_LENGTHS = sorted({len(key) for key in _PHRASES}, reverse=True)
_PLACES = frozenset({"in front of", "next to", "left of", "right of", "out of"})
_ITS_SIDE = {"left": "left of", "right": "right of"}  # "to its left" is "left of it"
_MADE_BY = {"painted": "painting", "drawn": "drawing", "sketched": "sketch", "illustrated": "illustration",
            "photographed": "photo", "rendered": "render"}
# "a red-haired woman" is "a woman with red hair", "a winged frog" "a frog with wings".
_HAVING = {
    "haired": "hair", "winged": "wings", "feathered": "feathers", "eyed": "eyes", "horned": "horns",
    "legged": "legs", "tailed": "tail", "necked": "neck", "striped": "stripes", "spotted": "spots",
    "bearded": "beard", "skinned": "skin", "furred": "fur", "scaled": "scales", "hooded": "hood",
    "clawed": "claws", "fanged": "fangs", "tusked": "tusks", "antlered": "antlers", "finned": "fins",
}
# Parts a creature has anyway, so that a word before them can only say which: "a blue eyed cat",
# "four legged"; before a part it may lack the word may be the creature's ("two winged horses").
_OWN_PARTS = frozenset({"haired", "eyed", "legged", "tailed", "necked", "skinned", "furred", "feathered",
                        "scaled", "clawed"})
# Parts that name a species when put before an animal ("a hooded crow", "a bearded dragon");
# "winged" rarely does ("a winged horse" is a horse with wings).
_SPECIES_PARTS = frozenset(_HAVING) - _OWN_PARTS - {"winged"}
# Verbs that say only where a thing is: "on a table, two glasses (are) sitting".
_POSITIONS = frozenset({"sit", "stand", "lie", "hang", "float", "perch", "lean", "sleep", "glow",
                        "parked", "resting", "waiting", "standing", "lying"})
_COLOURS_AND_SIZES = lx.COLORS | lx.SIZES
_DEGREE = frozenset({"very", "extremely", "really", "super"})
_PRONOUNS = frozenset({"it", "its", "them", "their", "itself", "themselves", "him", "his", "her"})
_RELATIVE = frozenset({"that", "which", "who"})
_COPULAS = frozenset({"is", "are", "being", "be", "been", "was", "were"})
_SAYS = frozenset({"says", "say", "saying"})  # what a sign says ("reading" a poem is not)
# Verbs a sign "says" a quotation with ("a sign reading 'open'"); the scene decides whether
# the thing is one that bears text.
_WRITES = frozenset({"reads", "read", "reading", "spells", "spell", "spelling", "bears", "bearing",
                     "displays", "displaying", "shows", "showing"})
# "the words 'open'" is the quotation itself.
_TEXT_NOUNS = frozenset({"word", "words", "text", "phrase", "letters", "message", "slogan", "caption"})
# Words before an "-ed" word that describe the part it names ("red-haired", "one-eyed",
# "long-necked"); any other stays with the thing ("a big striped cat": big cat, or big stripes?).
_PART_WORDS = lx.COLORS | frozenset({"long", "short", "curly", "straight", "wavy", "dark", "light",
                                     "blond", "blonde", "bald", "thick", "thin"})
# -ing words that are nouns far more often than verbs, or describe rather than act.
_ING_NOUNS = frozenset({
    "painting", "drawing", "building", "ceiling", "clothing", "evening", "morning", "wedding",
    "king", "ring", "thing", "string", "spring", "wing", "swing", "sibling", "pudding", "lighting",
    "rendering", "engraving", "etching", "landscaping", "stocking", "icing", "frosting", "awning",
    "railing", "siding", "bedding", "dumpling", "earring", "ending", "opening", "setting",
    "shading", "thanksgiving", "viking",
})
_ING_ADJECTIVES = frozenset({
    "amazing", "stunning", "disgusting", "interesting", "charming", "terrifying", "breathtaking",
    "striking", "loving", "shining", "sparkling", "dazzling", "menacing", "imposing", "towering",
    "exciting", "relaxing", "calming", "inviting", "appealing", "fascinating", "captivating",
    "haunting", "cunning", "daring", "boring", "annoying", "surprising", "astonishing", "alluring",
    "enchanting", "mesmerizing", "intimidating", "threatening", "frightening", "horrifying",
    "disturbing", "unsettling", "refreshing", "soothing", "gleaming", "glittering", "shimmering",
    "blazing", "burning", "freezing", "flowing", "rolling", "winding", "sprawling", "bustling",
    "thriving", "booming", "living", "dying", "missing", "matching", "contrasting", "outstanding",
    "pleasing", "promising", "rising", "leading", "trending", "upcoming",
})
_IRREGULAR = {
    "ridden": "ride", "rode": "ride", "eaten": "eat", "held": "hold", "worn": "wear",
    "drawn": "draw", "written": "write", "taken": "take", "made": "make", "built": "build",
    "bitten": "bite", "driven": "drive", "given": "give", "caught": "catch", "thrown": "throw",
    "flown": "fly", "hidden": "hide", "fed": "feed", "brought": "bring", "chosen": "choose",
    "frozen": "freeze", "stolen": "steal", "struck": "strike", "shaken": "shake", "seen": "see",
    "sung": "sing", "spun": "spin", "torn": "tear", "woven": "weave", "broken": "break",
    "hit": "hit", "led": "lead", "lit": "light", "sat": "sit", "stood": "stand",
}


def stem(word: str) -> str:
    """One key for a verb's forms (riding, rides, ridden -> "ride"; tapping -> "tap", taping
    -> "tape"), only ever compared with other verbs' keys. Where the rules guess wrong
    ("opening" -> "opene") two forms of one verb differ: a miss, never a false match."""
    word = _IRREGULAR.get(word, word)
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if base[-1] == base[-2] and base[-1] not in "lsz":
                return base[:-1]  # tapping -> tap
            if base.endswith("i"):
                return base[:-1] + "y"  # carried -> carry
            vowels = "aeiou"
            if base[-1] not in vowels + "wxy" and base[-2] in vowels and base[-3] not in vowels:
                return base + "e"  # taping -> tape, riding -> ride
            return base
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]  # rides -> ride
    return word


class Unsure(Exception):
    """A phrase the reader cannot place: no verdict from the scene (never leaves scene())."""


def classify(parts: tuple[tuple[str, ...], ...]) -> list[list[Word]] | None:
    """Each part's words, classed, after the rewrites of the module's docstring; None for a
    prompt the reader leaves to the word-by-word comparison (a colour-only part glued on, a
    noun whose plural is spelled alike, a phrase it cannot place)."""
    try:
        pieces = _qualities_after(_having(_rewrite(list(part))) for part in parts)
        if any("\x00" in piece or lx.same_in_plural(piece) for piece in pieces):
            return None  # "the sheep is / are grazing": only the verb tells one from many
        return [_classes(piece) for piece in _attach(_sided(_join_lists(pieces)))]
    except Unsure:
        return None


def _qualities_after(pieces: Iterable[list[str]]) -> list[list[str]]:
    """"A car, red (in color)" is "a car that is red" when the part before names one thing
    and nothing else; glued on anything else ("a cat and a dog, black"), it stays glued."""
    out: list[list[str]] = []
    for piece in pieces:
        if len(piece) == 2 and piece[0] == "as" and piece[1] in lx.MEDIA:
            piece = piece[1:]  # "..., as a painting"
        head, glue, tail = _split_glue(piece)
        if head and tail and set(tail) <= _COLOURS_AND_SIZES and _one_thing(head):
            piece = [*head, "that", "is", *tail]
        elif not head and set(tail) <= _COLOURS_AND_SIZES and out and _one_thing(out[-1]):
            out[-1] = [*out[-1], "that", "is", *tail]
            continue
        out.append(piece if head or glue else tail)
    return out


def _split_glue(piece: list[str]) -> tuple[list[str], bool, list[str]]:
    """A part as the words before the verifier's glue mark and those after it (a part with
    no mark: nothing before it, its words after)."""
    if "\x00" not in piece:
        return [], False, piece
    at = piece.index("\x00")
    return piece[:at], True, piece[at + 1:]


def _one_thing(piece: list[str]) -> bool:
    """A part that names one thing and nothing else (no "and", no relation, no verb)."""
    return bool(piece) and "and" not in piece and _bare(piece)


def _rewrite(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        word, nxt = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
        after = tokens[i + 2:i + 4]
        if (word in lx.COLORS and nxt == "and" and after[:1] and after[0] in lx.COLORS and len(after) == 2
                and _plain(after[1]) and after[1] not in lx.COLORS):
            out.append("+".join(sorted((word, after[0]))))  # "a yellow and black bus": one bus, two colours
            i += 2
        elif word == "as" and nxt in _MADE_BY and after[:1] == ["by"]:
            i += 1  # "Indonesia as painted by X" is by X
        elif word in _TEXT_NOUNS and nxt is not None and nxt.startswith(QUOTE):
            pass  # "the words 'open'"
        elif word == "s" and out and out[-1].isdigit():
            out[-1] += word  # "1960 s"
        elif (word, nxt) == ("in", "color") and out and out[-1] in lx.COLORS:
            i += 1
        elif word in ("colored", "color") and nxt in lx.COLORS:
            pass
        elif word in ("painted", "dyed") and nxt in lx.COLORS and out:
            out += ["that", "be"]  # of one thing, or of a list
        elif word in ("painted", "dyed") and nxt == "in" and tokens[i + 2:i + 3] and tokens[i + 2] in lx.COLORS and out:
            out += ["that", "be"]  # "painted in black"
            i += 1
        elif (word, nxt) == ("whose", "color") and tokens[i + 2:i + 3] == ["is"]:
            out += ["that", "is"]  # "a car whose color is black"
            i += 2
        elif i == 0 and word in _MADE_BY and nxt == "by":
            out.append(_MADE_BY[word])
        elif word in ("to", "on") and nxt == "its" and i + 2 < len(tokens) and tokens[i + 2] in _ITS_SIDE:
            out += [_ITS_SIDE[tokens[i + 2]], "it"]
            i += 2
        else:
            for length in _PHRASE_LENGTHS:
                phrase = tuple(tokens[i:i + length])
                if phrase in _HAS and _one_thing(out):
                    out.append("with")
                    i += length - 1 + (tokens[i + length:i + length + 1] == ["a"])  # "having a hat"
                    break
                if len(phrase) == length and phrase in _PHRASES:
                    out.append(_PHRASES[phrase])
                    i += length - 1
                    break
            else:
                out.append(word)
        i += 1
    return out


def is_participle(word: str) -> bool:
    """"ridden", "chased": a verb form a passive is made of (not "riding")."""
    return word in _IRREGULAR or (word.endswith("ed") and len(word) > 4)


def _plain(word: str) -> bool:
    """Whether a word can only be a thing's."""
    return not (word in PREPOSITIONS or " " in word or word in _PRONOUNS or word in _RELATIVE
                or word in _COPULAS or word == "and")


def _having(tokens: list[str]) -> list[str]:
    """"a very long-necked old man" -> "an old man with a very long neck": the word before
    the -ed word (and a degree word before that) goes with the part it names."""
    for at, word in enumerate(tokens):
        if word not in _HAVING:
            continue
        start = at
        if start > 0 and (tokens[start - 1] in _PART_WORDS or tokens[start - 1].isdigit()):
            if word not in _OWN_PARTS:
                raise Unsure  # "two winged horses", "a white winged horse": of the wings, or not?
            start -= 1
            if start > 0 and tokens[start - 1] in _DEGREE:
                start -= 1
        end = at + 1
        while (end < len(tokens) and _plain(tokens[end]) and tokens[end] not in _HAVING and tokens[end] != "s"
           and not _verbal(tokens[end])):
            end += 1
        if end == at + 1:
            return tokens  # nothing after it to have the part: "a frog, winged"
        if may_be_compound((word, tokens[end - 1])) or (word in _SPECIES_PARTS and may_be_animal(tokens[end - 1])):
            raise Unsure  # "a bearded dragon", "a hooded crow": species, not a dragon with a beard
        if end < len(tokens) and tokens[end] == "s":
            raise Unsure  # "a bearded man's dog": the man's beard, or the dog's?
        rest = tokens[end:]
        if rest[:1] == ["with"]:
            rest = ["and", *rest[1:]]  # "... with fair skin" joins the list of what it has
        return _having([*tokens[:start], *tokens[at + 1:end], "with", *tokens[start:at], _HAVING[word], *rest])
    return tokens


def _verbal(word: str) -> bool:
    """A word that may be a verb ("holding", "sits", "ridden"): where a thing's words end."""
    return word.endswith("ing") or word in lx.VERBS or word in lx.VERB_FORMS or is_participle(word)


def _join_lists(pieces: list[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if "by" in piece[:-1]:
            j = i + 1
            while j < len(pieces) and all(map(_plain, pieces[j])):
                j += 1
            if j < len(pieces):
                last = pieces[j]
                if "and" in last and all(_plain(w) or w == "and" for w in last):
                    joined = list(piece)
                    for more in pieces[i + 1:j + 1]:
                        joined += ["and", *more]
                    out.append(joined)
                    i = j + 1
                    continue
        out.append(piece)
        i += 1
    return out


def _sided(pieces: list[list[str]]) -> list[list[str]]:
    """"A bus and a car, with the car on the left" is "a car left of a bus"."""
    if len(pieces) != 2 or pieces[0].count("and") != 1 or not _bare(pieces[0]):
        return pieces
    named, side = pieces
    if len(side) < 4 or side[0] != "with" or side[-2:] not in (["on", "left"], ["on", "right"]):
        return pieces
    at = named.index("and")
    first, second, which = named[:at], named[at + 1:], side[1:-2]
    if which not in (first, second) or first == second:
        return pieces
    other = second if which == first else first
    return [[*which, f"{side[-1]} of", *other]]


def _attach(pieces: list[list[str]]) -> list[list[str]]:
    out = [list(piece) for piece in pieces]
    if len(out) != 2:
        return out  # "in a box, a cat, a dog": which of them is in it?
    if _leading(out[0]) and (_bare(out[1]) or _bare([w for w in out[1][:-1] if w != "of"]) and out[1][-1] in _POSITIONS):
        return [out[1] + out[0]]  # "On the street, five cars (are parked)."
    if _leading(out[1]) and _bare(out[0]):
        return [out[0] + out[1]]  # "Five cars, on the street."
    verb = out[0][0]
    if (len(out[0]) > 1 and _bare(out[1]) and (verb in lx.VERB_FORMS and out[0][1] == "a" or verb.endswith("ing")
                                               and verb not in _ING_NOUNS and verb not in _ING_ADJECTIVES)):
        return [out[1] + out[0]]  # "Cruising through the rainforest, a bus."
    return out


def _leading(piece: list[str]) -> bool:
    return bool(piece) and (piece[0] in PREPOSITIONS or piece[0] in _PLACES) and piece[0] != "by"


def _bare(piece: list[str]) -> bool:
    """A part that names things and nothing else: where a fronted place can only belong."""
    return all((_plain(word) and not _verbal(word)) or word == "and" for word in piece)


def _classes(tokens: list[str]) -> list[Word]:
    out: list[Word] = []
    for i, word in enumerate(tokens):
        if word == "a":  # the verifier's mark of a verb's object, or of a noun after "that is"
            if out and out[-1][0] == WHICH_IS:
                out[-1] = (WHICH_IS, out[-1][1] + " a")  # "a house that is a boat": not a quality
            elif not out or out[-1][0] not in (VERB, AND):  # after "and": another thing
                raise Unsure  # "a man painted a wall": "painted" read as a thing's word
            continue
        before = [cls for cls, _ in out if cls != COPULA]  # "a broom (being) ridden"
        after_thing = bool(before) and before[-1] in (WORD, PRONOUN)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if word in (MADE_OF, STYLE_OF):
            out.append((word, word))
        elif word == REVERSED:
            out += [(VERB, "say"), (REVERSED, word)]  # "'open' written on a sign": the sign says it
        elif word in _RELATIVE:
            if nxt in _COPULAS:
                out.append((WHICH_IS, nxt))  # "is": said of one thing
            elif (nxt is not None and _plain(nxt) and not _verbal(nxt) and i + 2 < len(tokens)
                  and (_verbal(tokens[i + 2]) or tokens[i + 2] in _COPULAS)):
                raise Unsure  # "the pizza that a chef is tossing" is no "pizza chef tossing"
        elif word in _COPULAS:
            if not out or out[-1][0] != WHICH_IS:
                out.append((COPULA, word))
        elif word == "s" and after_thing:
            out.append((POSSESSIVE_S, word))
        elif word in _PRONOUNS:
            out.append((PRONOUN, word))
        elif word == "and":
            # "a tall and thin man" is one man (the verifier keeps "a" in "a tall and a thin man")
            one = (nxt not in (None, "a") and out and out[-1][0] == WORD and (len(out) < 2 or out[-2][0] != WORD)
                   and may_be_adjective(str(out[-1][1])))
            out.append((WORD if one else AND, word))
        elif word in PREPOSITIONS or " " in word:
            out.append((RELATION, word))
        elif after_thing and (word in _SAYS or word in _WRITES and nxt is not None and nxt.startswith(QUOTE)):
            out.append((VERB, word))  # what a sign says is text, not a compound
        elif _is_verb(word, after_thing, nxt):
            if nxt is not None and _plain(nxt) and nxt != "a" and not nxt.isdigit() and not is_participle(word):
                word += BARE  # "a man eating shark", "cat scratching post": maybe a compound
            out.append((VERB, word))
        else:
            out.append((WORD, word))
    return out


def _is_verb(word: str, after_thing: bool, nxt: str | None) -> bool:
    """Whether ``word`` acts as a verb here (``after_thing``: right after a thing)."""
    if word in lx.VERB_FORMS or word in _IRREGULAR and (nxt == "by" or after_thing):
        return after_thing or word.endswith("ing")
    if word.endswith("ing") and len(word) > 4 and word not in _ING_NOUNS and word not in _ING_ADJECTIVES:
        return after_thing  # "a dog sleeping"; not "in a recording booth"
    return is_participle(word) and after_thing and nxt in PREPOSITIONS
