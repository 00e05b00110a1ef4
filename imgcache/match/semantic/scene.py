"""The scene a prompt describes, for prompts that build one scene with different sentences.

:func:`~imgcache.match.semantic.verifier.verify` first compares prompts part by part, word by
word. People also rebuild the sentence: "a cardboard spaceship" / "a spaceship made of
cardboard", "a witch riding a broom" / "a broom being ridden by a witch", "a rabbit sitting on
a turtle's back" / "... on the back of a turtle", "four teacups surrounding a kettle" / "a
kettle with four teacups around it". :func:`scene` reads the prompt's words (classed by
:mod:`~imgcache.match.semantic.sentence`) as a small scene graph:

* *things*: a run of a thing's words, the last the head and the others its modifiers in their
  order ("yellow tiger"). "X made of Y" puts Y before X's head; "X's Y" and "Y of X" give Y an
  owner, unless Y depicts X ("Monet's painting" is not "a painting of Monet"); "X that is
  pink" is "pink X" (colours and sizes only: "a house that is a boat" is no "boat house").
  Neither rebuilding is made where the words name a compound noun of their own in WordNet
  (:mod:`~imgcache.match.semantic.wordnet`: "a snow leopard", "a red panda", "a big cat");
* *relations*: a verb and/or a relation word from the thing before it to the thing after it
  ("rabbit -ride-> broom"). A passive "Y (being) ridden by X" is "X ride Y"; "X with Y
  <relation> it / its Z" is "Y <relation> X / Z of X"; "left of" / "right of", "above" /
  "below", "in front of" / "behind" are one relation read one way; "surrounding" is
  "around", "featuring" is "with"; things joined by "and" before a relation act together,
  "with A and B" is "with A" and "with B", "by A and B" keeps its order. "Y V-ed by X" is
  read as a passive only for verbs that take an agent ("ridden by"; "a tent pitched by a
  lake" is beside it); "its Z" of the relation's own subject is its own ("a cat on its back"
  is no "cat on the back of a cat");
* *styles*: "in the style of X" at the end of a part, "X-style <medium>", "..., X style".

Two prompts describe the same scene when their facts are equal as multisets. What a reader
of English could attach two ways makes it unsure, and unsure is "different": a relation after
a relation's object ("a cat on a mat chased by a dog": the cat or the mat?), things joined by
"and" after a relation ("wearing a hat and a woman"), "his" / "her", "its" with two things to
stand for, "X with Y <verb> it" (who does what?), a verb spelled like a relation ("nearing"),
"under" a state ("under arrest"), an object relative clause ("the pizza that a chef is
tossing"), "-ing by" (walking by a woman), a passive with several agents, "X of Y of Z",
"that is" after "and" or a relation, a copula it does not know, and (in the verifier) quoted
text, which must match as written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from . import lexicon as lx
from .sentence import (
    AND,
    BARE,
    COPULA,
    MADE_OF,
    POSSESSIVE_S,
    PREPOSITIONS,
    PRONOUN,
    QUOTE,
    RELATION,
    REVERSED,
    STYLE_OF,
    VERB,
    WHICH_IS,
    WORD,
    Unsure,
    Word,
    classify,
    is_participle,
    stem,
)
from .wordnet import may_be_compound, may_be_person

__all__ = ["scene"]

Fact = tuple[object, ...]
_INVERSE = {"right of": "left of", "below": "above", "behind": "in front of", "under": "over",
            "contain": "in", "top with": "on"}  # "a box containing a cat": the cat in the box
_SYMMETRIC = frozenset({"next to", "near"})  # "a cat next to a dog" is "a dog next to a cat"
# Verbs read as relations: "surrounding" is "around", "containing" is "in" read backwards.
_VERB_RELATIONS = {"surround": "around", "feature": "with", "contain": "contain", "top with": "top with"}
_NEUTER = frozenset({"it", "its", "them", "their"})  # "his" / "her" would need a gender: unsure
_QUALITIES = lx.COLORS | lx.SIZES | lx.PALETTE  # what "X that is Y" may say of X, whatever follows
# Verbs whose "-ed by X" says who does it ("a broom ridden by a witch"); only theirs is read as
# a passive: with most others "by X" may say where ("a tent pitched by a lake", "a boat
# anchored by a pier").
_BY_AN_AGENT = frozenset(stem(word) for word in lx.AGENT_PARTICIPLES)


@dataclass(frozen=True)
class _Thing:
    """A thing: its words (modifiers, then the head) and its owner ("back" of "turtle")."""

    words: tuple[str, ...]
    owner: _Thing | None = None

    def key(self) -> Fact:
        return (self.words, self.owner.key() if self.owner is not None else None)


Node = _Thing | tuple[_Thing, ...]  # a thing, or things joined by "and"
Unit = tuple[str, object]  # a Word, or ("thing", _Thing) / ("style", words)
_PICTURE = _Thing(("=picture",))  # what a part that starts with "by" is said of
_ITSELF = _Thing(("=itself",))  # the owner in "a cat lying on its back"


def _key(node: Node) -> Fact:
    if isinstance(node, tuple):
        return ("and", *sorted(thing.key() for thing in node))
    return node.key()


def _members(node: Node | None) -> tuple[_Thing, ...]:
    return node if isinstance(node, tuple) else (node,) if node is not None else ()


@lru_cache(maxsize=4096)
def scene(parts: tuple[tuple[str, ...], ...]) -> frozenset[tuple[Fact, int]] | None:
    """The facts of a prompt's parts (:func:`~imgcache.match.semantic.verifier._analyse`'s
    output), with their counts; None when unsure."""
    pieces = classify(parts)
    if pieces is None:
        return None
    facts: Counter[Fact] = Counter()
    styled_parts = 0
    try:
        for words in pieces:
            part: Counter[Fact] = Counter()
            try:
                _Part(part).read(_invert(_bind(_things(words))))
            except Unsure:
                part = Counter({_as_written(words): 1})
            styled_parts += any(fact[0] == "style" for fact in part)
            facts.update(part)
    except Unsure:
        return None
    if styled_parts > 1:
        return None  # "a cat in the style of Monet, a dog in the style of Picasso": whose style?
    return frozenset(facts.items())


def _as_written(words: list[Word]) -> Fact:
    """A part the reader cannot take apart, as one fact: its classed words in their order.
    Two prompts share it only by saying it alike, ambiguities and all; a part that leans on
    another (it starts with a relation or a verb, or has a pronoun) is not compared at all."""
    if not words or words[0][0] != WORD or any(cls == PRONOUN for cls, _ in words):
        raise Unsure
    return ("as written", tuple(words))


def _things(words: list[Word]) -> list[Unit]:
    """Runs of a thing's words as one thing."""
    units: list[Unit] = []
    for cls, word in words:
        if cls == WORD and units and units[-1][0] == "thing":
            last = units[-1][1]
            assert isinstance(last, _Thing)
            units[-1] = ("thing", _Thing((*last.words, word)))
        else:
            units.append(("thing", _Thing((word,))) if cls == WORD else (cls, word))
    return units


def _bind(units: list[Unit]) -> list[Unit]:
    """Possessives, "of" owners, materials, "that is" qualities and styles folded into things."""
    out: list[Unit] = []
    i = 0
    while i < len(units):
        cls, value = units[i]
        nxt = units[i + 1] if i + 1 < len(units) else ("", None)
        after = out[-1][1] if out and out[-1][0] == "thing" else None
        other = nxt[1] if nxt[0] == "thing" else None
        if cls == STYLE_OF and isinstance(other, _Thing):
            if i + 2 < len(units):
                raise Unsure  # "a cat in the style of Monet next to a dog": the cat's or the picture's?
            out.append(("style", other.words))
            i += 2
            continue
        if cls in (POSSESSIVE_S, MADE_OF, WHICH_IS) or (cls, value) == (RELATION, "of"):
            one = (cls, value) == (WHICH_IS, "is")  # "a cup and a phone that is blue": the phone
            if not isinstance(after, _Thing) or (cls in (MADE_OF, WHICH_IS) and not one and len(out) > 1
                                                 and out[-2][0] == AND):
                raise Unsure  # "a cup and a plate made of gold": the plate, or both?
            then_and = i + 2 < len(units) and units[i + 2][0] == AND
            if cls != POSSESSIVE_S and then_and and not (cls == WHICH_IS and _names_a_thing(units, i + 3)):
                raise Unsure  # "a bowl of cherries and grapes", "carved from marble and gold"
            if isinstance(other, _Thing):
                if cls == WHICH_IS and ((i + 2 < len(units) and not then_and) or after.owner is not None
                                        or (len(out) > 1 and out[-2][0] in (RELATION, VERB))):
                    raise Unsure  # "the roof of a house that is red", "a man with a dog who is happy"
                if cls == WHICH_IS and not _a_quality(other.words, str(value)):
                    raise Unsure  # "a house that is a boat" is not "a boat house"
                out[-1] = ("thing", _joined(cls, after, other))
                i += 2
                continue
            if cls == WHICH_IS and nxt[0] in (RELATION, VERB):
                i += 1  # "a cat that is on a mat"
                continue
            raise Unsure
        if cls == "thing":
            assert isinstance(value, _Thing)
            words = value.words
            if "style" in words[:-1] and words[0] != "style" and words[-1] in lx.MEDIA:  # "starry night style painting"
                at = words.index("style")
                out.append(("style", words[:at]))
                value = _Thing(words[at + 1:])
            elif words[-1] == "style" and len(words) > 1:  # "..., starry night style"
                out.append(("style", words[:-1]))
                i += 1
                continue
        out.append((cls, value))
        i += 1
    return out


def _a_quality(words: tuple[str, ...], copula: str) -> bool:
    """Whether "that is <words>" says a colour or size ("pink"), never what a thing is ("a
    boat") nor an adjective that may make a compound ("a dog that is hot" is no "hot dog")."""
    return set(words) <= _QUALITIES and copula in ("is", "are", "be")


def _names_a_thing(units: list[Unit], at: int) -> bool:
    """Whether ``units[at]`` is a thing, not one more quality ("that is red and white")."""
    if at >= len(units) or units[at][0] != "thing":
        return False
    thing = units[at][1]
    return isinstance(thing, _Thing) and thing.words[-1] not in _QUALITIES


def _joined(how: str, before: _Thing, after: _Thing) -> _Thing:
    """The thing "<before> <how> <after>" names."""
    if how == POSSESSIVE_S:  # "turtle 's back"
        owner, thing = before, after
    elif how == RELATION:  # "back of turtle"
        thing, owner = before, after
    elif how == MADE_OF:  # "spaceship made of cardboard"
        if (before.owner is not None or after.owner is not None or after.words[-1] not in lx.MATERIALS
                or "of" in before.words):
            raise Unsure
        if len(after.words) > 1:
            raise Unsure  # "a castle made of huge stones" is not "a huge stone castle"
        if may_be_compound((*after.words, before.words[-1])) or may_be_person(before.words[-1]) or (
                after.words[-1] in lx.CONTENTS and before.words[-1] in lx.HOLDERS):
            raise Unsure  # "a leopard made of snow" is no "snow leopard", "a silver dealer" no dealer made
            # of silver, nor "a bucket of ice" an "ice bucket"
        return _Thing((*before.words[:-1], *after.words, before.words[-1]))
    else:  # WHICH_IS: "giraffe that is pink"
        if after.owner is not None or "of" in before.words:
            raise Unsure  # "a bowl of cherries that is red"
        if any(may_be_compound((word, before.words[-1])) for word in after.words):
            raise Unsure  # "a panda that is red" is no "red panda"
        return _Thing((*after.words, *before.words), before.owner)
    if thing.words[-1] in lx.DEPICTIONS or thing.owner is not None:
        raise Unsure  # "Monet's painting" (by him, or of him); "a photo of a painting of ..."
    if how == RELATION and (thing.words[-1] not in lx.PARTS or owner.words[-1] in lx.MEATS):
        return _Thing((*thing.words, "of", *owner.words))  # "a plate of chicken", "a leg of lamb"
    return _Thing(thing.words, owner)


def _invert(units: list[Unit]) -> list[Unit]:
    """A sentence that starts with where ("on the grass sit two cats", "sitting on a table is a
    cup", "in the box is a cat") in the usual order; "is", "being" before a verb or a relation
    dropped ("a broom being ridden", "a cat is on a mat"); any other: unsure."""
    classes = [cls for cls, _ in units]
    if (classes[:3] == [RELATION, "thing", VERB] and len(units) > 3 and set(classes[3:]) <= {"thing", AND}
            and stem(str(units[2][1])) in lx.POSITION_VERBS):
        return [*units[3:], units[2], units[0], units[1]]
    if classes[:3] == [RELATION, "thing", COPULA] and len(units) > 3:
        return [*units[3:], units[0], units[1]]
    if classes[:4] == [VERB, RELATION, "thing", COPULA] and len(units) > 4:
        return [*units[4:], units[0], units[1], units[2]]
    for i, cls in enumerate(classes):
        if cls == COPULA and not (0 < i < len(units) - 1 and classes[i + 1] in (VERB, RELATION)):
            raise Unsure
    return [unit for unit in units if unit[0] != COPULA]


@dataclass
class _Part:
    """Reads one part's units into ``facts``."""

    facts: Counter[Fact]
    things: list[Node] = field(default_factory=list)  # every thing or group, in order
    related: set[int] = field(default_factory=set)   # ids of things in a relation (all alive)
    last: Node | None = None     # the thing a relation starts from
    first: Node | None = None    # the part's first thing: what "its" stands for
    host: Node | None = None     # X of "X with Y ... it"
    pending: tuple[Node, str, bool] | None = None  # subject, relation, whether a verb's
    last_is_object: bool = False  # ``last`` ends a relation: what follows may be about either

    def relate(self, subject: Node, relation: str, obj: Node | None, verb: bool) -> None:
        if _bears(subject) and _quotation(obj) and relation in _SHOWS_TEXT:
            relation = "say"  # "a sign reading 'open'", "a shirt with 'hi'"
        elif _quotation(subject) and _bears(obj) and relation == "on":
            subject, relation, obj = obj, "say", subject  # "a sign with 'open' on it"
        if isinstance(obj, tuple):
            if relation == "with":  # "with red hair and blue eyes"
                for member in obj:
                    self.relate(subject, relation, member, verb)
                return
            if relation != "by":  # "wearing a hat and a woman": the woman worn, or beside?
                raise Unsure
        if isinstance(obj, _Thing) and obj.words[-1] in lx.STATES.get(relation, ()):
            raise Unsure  # "a man under arrest" is not below it, "a woman on the phone" not on top
        if obj is not None and not verb and relation in _INVERSE:
            subject, relation, obj = obj, _INVERSE[relation], subject
        if relation in _SYMMETRIC and not verb and isinstance(obj, _Thing) and isinstance(subject, _Thing):
            subject, obj = sorted((subject, obj), key=_key)  # type: ignore[assignment]
        target = obj if relation != "by" or not isinstance(obj, tuple) else ("by", *(t.key() for t in obj))
        self.facts[("rel", _key(subject), relation, None if target is None else
                    target if relation == "by" and isinstance(obj, tuple) else _key(target))] += 1
        stack = [*_members(subject), *_members(obj)]
        while stack:  # the things related, and their owners
            thing = stack.pop()
            self.related.add(id(thing))
            if thing.owner is not None:
                stack.append(thing.owner)

    def read(self, units: list[Unit]) -> None:
        i = 0
        while i < len(units):
            cls, value = units[i]
            if cls == "style":
                self.facts[("style", value)] += 1
            elif cls == "thing":
                i = self._thing(units, i)
            elif cls == PRONOUN:
                i = self._pronoun(units, i)
            elif cls in (RELATION, VERB):
                i = self._relation(units, i)
            elif cls != AND:
                raise Unsure
            i += 1
        if self.pending is not None:
            raise Unsure
        for node in self.things:
            alone = [thing for thing in _members(node) if id(thing) not in self.related]
            if isinstance(node, tuple) and len(alone) == len(node):
                self.facts[("things", _key(node))] += 1  # "a man and a statue" is no "statue, man"
            else:
                for thing in alone:
                    self.facts[("thing", thing.key())] += 1

    def _thing(self, units: list[Unit], i: int) -> int:
        node: Node = units[i][1]  # type: ignore[assignment]
        while i + 2 < len(units) and units[i + 1][0] == AND and units[i + 2][0] == "thing":
            node = (*_members(node), units[i + 2][1])  # type: ignore[misc]
            i += 2
        self.things.append(node)
        self.first = self.first or node
        self.last_is_object = False
        if self.pending is not None:
            subject, relation, verb = self.pending
            if relation == "with" and _refers_back(units[i + 1:]):
                self.host = subject  # "X with Y <relation> it": Y relates to X, not X to Y
            else:
                self.relate(subject, relation, node, verb)
                self.last_is_object = True
            self.pending = None
        self.last = node
        return i

    def _pronoun(self, units: list[Unit], i: int) -> int:
        if self.pending is None or units[i][1] not in _NEUTER:
            raise Unsure
        subject, relation, verb = self.pending
        owned = units[i + 1][1] if i + 1 < len(units) and units[i + 1][0] == "thing" else None
        if self.host is None and units[i][1] != "it" and owned is not None and len(self.things) == 1:
            self.host = self.first  # "a fox sleeping on its tail": nothing else it could be
        if self.host is None:
            raise Unsure
        if units[i][1] != "it" and isinstance(owned, _Thing):
            if owned.owner is not None or not isinstance(self.host, _Thing):
                raise Unsure
            # "a cat on its back" is no "cat on the back of a cat": its own back is the subject's
            target: Node = _Thing(owned.words, _ITSELF if self.host is subject else self.host)
            self.things.append(target)
            self.last = target
            i += 1
        else:
            if verb and " " not in relation:
                raise Unsure  # "a boy with a kite flying it": who flies what?
            target = self.host
        self.relate(subject, relation, target, verb)
        self.host = self.pending = None
        return i

    def _relation(self, units: list[Unit], i: int) -> int:
        cls, word = units[i]
        assert isinstance(word, str)
        if self.last is None and (cls, word) == (RELATION, "by"):
            self.last = _PICTURE  # "..., by Monet"
        if self.last is None or self.pending is not None or self.last_is_object:
            raise Unsure  # nothing to relate; two relations in a row; "a cat on a mat chased by ..."
        relation, verb = word, False
        nxt = units[i + 1] if i + 1 < len(units) else ("", None)
        if cls == VERB:
            relation, verb = stem(word.removesuffix(BARE)), True
            if relation in PREPOSITIONS:
                raise Unsure  # "a ship nearing an island" is not "near" it
            if word.endswith(BARE) and relation not in _VERB_RELATIONS:
                relation += BARE
            if nxt == (RELATION, "by") and is_participle(word) and relation not in _BY_AN_AGENT:
                raise Unsure  # "a sculpture displayed by a window": beside it
            if nxt[0] == REVERSED or (nxt == (RELATION, "by") and is_participle(word)):
                return self._passive(units, i, _VERB_RELATIONS.get(relation, relation))
            if nxt[0] == RELATION:
                relation = f"{relation} {nxt[1]}"
                i += 1
            relation = _VERB_RELATIONS.get(relation, relation)
            verb = relation not in _VERB_RELATIONS.values()
        self.pending = (self.last, relation, verb)
        if i + 1 >= len(units) or units[i + 1][0] == AND:  # nothing after it
            if relation in _ENDING_PLACES and self.host is not None:
                self.relate(self.last, _ENDING_PLACES[relation], self.host, False)  # "X with Y on top / inside"
                self.host = None
            elif verb:
                self.relate(self.last, relation, None, True)  # "a dog sleeping"
            else:
                raise Unsure
            self.pending = None
        return i

    def _passive(self, units: list[Unit], i: int, relation: str) -> int:
        """"Y V-ed by X" is "X V Y"; "Y written on X" (or on it): X says Y."""
        agent = units[i + 2] if i + 2 < len(units) else ("", None)
        if i + 3 < len(units) and units[i + 3][0] == AND:
            raise Unsure  # "carried by a man and a woman": the reader takes one agent
        if agent[0] == PRONOUN and agent[1] in _NEUTER and self.host is not None:
            actor, self.host = self.host, None
        elif agent[0] == "thing" and isinstance(agent[1], _Thing):
            actor = agent[1]
            self.things.append(actor)
        else:
            raise Unsure
        if units[i + 1][0] == REVERSED:
            if not isinstance(actor, _Thing) or actor.words[-1] not in lx.TEXT_BEARERS:
                raise Unsure  # "a poem written on a girl" is not "a girl saying a poem"
            relation = "say"
        assert self.last is not None
        self.relate(actor, relation, self.last, True)
        self.last = actor
        return i + 2


_SHOWS_TEXT = frozenset({"say", "read", "spell", "bear", "display", "show", "with"})


def _quotation(node: Node | None) -> bool:
    return isinstance(node, _Thing) and len(node.words) == 1 and node.words[0].startswith(QUOTE)


def _bears(node: Node | None) -> bool:
    """Whether a thing is one that text is written on (a sign, not a girl)."""
    return isinstance(node, _Thing) and node.words[-1] in lx.TEXT_BEARERS


# A relation word that ends "X with Y <word>" and means Y <relation> X.
_ENDING_PLACES = {"on top": "on", "in": "in", "under": "under", "behind": "behind"}


def _refers_back(rest: list[Unit]) -> bool:
    """Whether a "with" phrase ends in a pronoun for the thing before "with", or in a place
    word ("on top", "inside")."""
    for at, (cls, word) in enumerate(rest):
        if cls == PRONOUN or word in _ENDING_PLACES and (at + 1 == len(rest) or rest[at + 1][0] == AND):
            return True
        if cls in ("thing", AND):
            return False
    return False
