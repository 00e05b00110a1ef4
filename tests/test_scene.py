"""The scene reader: prompts that build one scene with another sentence are the same request;
look-alike rebuildings that move a role, an attribute, a count or a relation are not.

All prompts are made up for these tests; every pair is checked in both directions.
"""

from __future__ import annotations

import pytest

from imgcache.match.semantic.scene import scene
from imgcache.match.semantic.verifier import SCENE_REASON, _analyse, verify
from imgcache.match.semantic.wordnet import may_be_adjective, may_be_compound
from imgcache.normalize import normalize_prompt

REBUILT = [
    ("a spaceship made of cardboard", "a cardboard spaceship"),
    ("a statue carved from marble", "a marble statue"),
    ("a rabbit sitting on a turtle's back", "a rabbit sitting on the back of a turtle"),
    ("a turtle with a rabbit sitting on its back", "a rabbit sitting on the back of a turtle"),
    ("four teacups surrounding a kettle", "a kettle with four teacups around it"),
    ("a witch riding a broom", "a broom being ridden by a witch"),
    ("a man wearing a hat", "a hat worn by a man"),
    ("a dog biting a man", "a man bitten by a dog"),
    ("a cat eating a mouse", "a mouse eaten by a cat"),
    ("a painting of a fox in the style of Starry Night", "Starry Night-style painting of a fox"),
    ("A banana on the left of an apple.", "An apple on the right of a banana."),
    ("a lamp above a desk", "a desk below a lamp"),
    ("a cat on a table", "a table with a cat on it"),
    ("a cat on a table", "a table with a cat on top"),
    ("On the street, five cars.", "five cars on the street"),
    ("On the grass sit two cats and two dogs.", "Two cats and two dogs sitting on the grass."),
    ("a blue cup and a green phone", "a green phone and a blue cup"),
    ("A giraffe that is pink.", "A pink giraffe."),
    ("a car painted pink", "a pink car"),
    ("a winged frog", "a frog with wings"),
    ("a red-haired woman with green eyes", "a woman with red hair and green eyes"),
    ("a painting by Monet, Renoir and Degas", "a painting by Monet and Renoir and Degas"),
    ("painted by Monet and Degas", "a painting by Monet and Degas"),
    ("A sign that says open.", "open written on a sign."),
    ("a box containing a cat", "a cat in a box"),
    ("a cake topped with a cherry", "a cherry on a cake"),
    ("a cat next to a dog", "a dog next to a cat"),
    ("a bridge over a river", "a river under a bridge"),
    ("canned food inside an ice cave", "an ice cave with canned food inside"),
    ("a dog behind a man", "a man with a dog behind"),
    ("On a table, a couple of glasses are sitting.", "A couple of glasses are sitting on a table."),
    ("Walking a dog, a man", "a man walking a dog"),
    ("Cruising through the rainforest, a bus", "a bus cruising through the rainforest"),
    ("A bus and a car, with the car on the left.", "A car on the left of a bus."),
    ("a yellow and black bus", "a black and yellow bus"),
    ("Indonesia by Eugene de Blaas", "Indonesia as painted by Eugene de Blaas"),
    ("a painting of an old man", "an old man, as a painting"),
    ("A car, red in color.", "A red car."),
    ("a car whose color is black", "a black car"),
    ("a car painted in black", "a black car"),
    ("a car, black, a van, white", "a black car, a white van"),
    ("A sign that says 'NeurIPS'.", "'NeurIPS' written on a sign."),
    ("A sign that says 'NeurIPS'.", "A sign reading 'NeurIPS'."),
    ("a storefront with 'Text to Image' written on it", "a storefront that reads 'Text to Image'"),
    ("a sign that says 'hello world'", "a sign with the words 'hello world' on it"),
    ("a giant cupcake with a mouth", "a giant cupcake that has a mouth"),
    ("a cat having a hat", "a cat with a hat"),
    ("a cup that is green and a phone that is blue", "a green cup and a blue phone"),
    ("a couple of glasses sitting on a table", "a table with a couple of glasses sitting on it"),
    ("a bird scaring a scarecrow", "a scarecrow being scared by a bird"),
    ("a blue eyed cat", "a cat with blue eyes"),
    ("a four legged robot", "a robot with four legs"),
    ("a car that is red", "a red car"),
    ("a teapot made of glass", "a glass teapot"),
    ("a screen displaying 'hello'", "a screen that says 'hello'"),
]

LOOK_ALIKE = [
    ("a rabbit sitting on the back of a turtle", "a rabbit with a turtle sitting on its back"),
    ("four teacups surrounding a kettle", "a teacup surrounded by four kettles"),
    ("a yellow tiger with blue stripes", "a yellow-striped blue tiger"),
    ("a spaceship made of cardboard", "a spaceship carrying cardboard boxes"),
    ("a train on top of a surfboard", "a train with a surfboard on top of it"),
    ("a car on the left of a bus", "a car with a bus to its left"),
    ("a dog chasing a cat", "a dog chased by a cat"),
    ("a horse ridden by an astronaut", "a horse riding an astronaut"),
    ("a green cup and a blue phone", "a green phone and a blue cup"),
    ("two cats and a dog on a mat", "two dogs and a cat on a mat"),
    ("a toy cat", "a cat toy"),
    ("a dog's toy", "a toy of a dog"),
    ("a model of a car", "a car's model"),
    ("a statue of a man", "a man's statue"),
    ("Monet's painting of a bridge", "a painting of Monet on a bridge"),
    ("a painting of Norman Rockwell by Monet", "a painting by Norman Rockwell and Monet"),
    ("a cat in a cardboard box", "a cardboard cat in a box"),
    ("a dog with a cat on its head", "a cat with a dog on its head"),
    ("a house by the sea, a dog", "a dog by the sea, a house"),
    ("a cat on a mat in a room", "a cat in a room on a mat"),
    ("a blue-eyed cat with red fur", "a red-eyed cat with blue fur"),
    ("a cat to the left of a dog", "a cat to the right of a dog"),
    ("a tree in front of a house", "a house in front of a tree"),
    ("a tree in front of a house", "a tree behind a house"),
    ("a sign that says 'open'", "a sign that says 'closed'"),
    ("a man holding a baby", "a baby holding a man"),
    ("the sheep is grazing on a hill", "the sheep are grazing on a hill"),
    ("a cat, a dog house", "a dog, a cat house"),
    # found by a review of the reader: each was once answered "same"
    ("a dog walking by a woman", "a woman walking a dog"),
    ("a box carried by a man and a woman", "a woman, a man carrying a box"),
    ("a cat on a mat chased by a dog", "a dog chasing a mat with a cat on it"),
    ("a man on a horse holding a sword", "a man on a horse, the horse holding a sword"),
    ("a girl reading a poem", "a poem written on a girl"),
    ("a girl with a boy on his shoulders", "a girl with a boy on her shoulders"),
    ("a cat holding a mouse by its tail", "a cat holding a mouse by the cat's tail"),
    ("a cat on a mat and a dog on a rug", "a cat on a dog and a mat on a rug"),
    ("a man wearing a hat and a woman", "a man wearing a woman and a hat"),
    ("a man without a hat and a dog", "a man without a dog and a hat"),
    ("a red-haired woman holding a cat", "a woman holding a red-haired cat"),
    ("a big striped cat", "a cat with big stripes"),
    ("a cat and a dog that are black", "a cat and a black dog"),
    ("a cup and a plate made of gold", "a cup and a gold plate"),
    ("a house that is a boat", "a boat house"),
    ("a heart carved in a tree", "a tree heart"),
    ("a pirate style cat wearing a hat", "a cat wearing a pirate style hat"),
    ("In a cage, a lion staring at a man", "a lion staring at a man in a cage"),
    ("a cat, in a box, a dog", "a cat, a dog in a box"),
    ("a portrait by Warhol, Elvis and Marilyn Monroe", "a portrait by Elvis, Warhol and Marilyn Monroe"),
    ("two 5 cent coins", "25 cent coins"),
    ("a hotel room with a single bed", "a hotel room with one bed"),
    ("a man taping a window", "a man tapping a window"),
    ("a man with a dog who is happy", "a man with a happy dog"),
    ("a wall painted red and white", "a red wall and white"),
    ("a man with a dog that has a hat", "a man with a hat and a dog"),
    ("a cup and a phone that are blue", "a cup and a blue phone"),
    ("a cup and a phone painted blue", "a cup and a blue phone"),
    ("a car that is fast and shiny", "a fast car and shiny"),
    ("a cat that is a pet", "a pet cat and a cat"),
    ("a cat on a mat, black", "a black cat on a mat"),
    ("a cat and a dog, black", "a cat and a black dog"),
    ("a cat, black, a dog, white", "a white cat, a black dog"),
    ("a yellow and black bus", "a yellow and a black bus"),
    ("a red and blue car", "a blue car and red"),
    ("a cat, as a king", "a king cat"),
    ("A bus and a car, with the bus on the left.", "A car on the left of a bus."),
    ("A bus and a car, with the car on the left.", "A car on the right of a bus."),
    ("a painting, an old man", "an old man painting"),
    ("a box with a cat in a hat", "a cat in a box"),
    ("a man with a dog behind", "a man behind a dog"),
    ("a box containing a cat", "a box in a cat"),
    ("a cake topped with a cherry", "a cake on a cherry"),
    ("a bridge over a river", "a bridge under a river"),
    ("a cat next to a dog on a mat", "a dog next to a cat on a mat"),
    ("a dog that is hot", "a hot dog"),
    ("a statue of a man", "a man and a statue"),
    ("a wood duck", "a wooden duck"),
    ("a girl reading 'Hamlet'", "'Hamlet' written on a girl"),
    ("a girl reading 'Hamlet'", "a sign reading 'Hamlet'"),
    ("a sign that says 'open'", "a sign that says 'open now'"),
    ("a sign that says 'up' above a sign that says 'down'", "a sign that says 'down' above a sign that says 'up'"),
    ("a man holding a sign that says 'stop'", "a man that says 'stop' holding a sign"),
    ("a shirt with 'hi' on it", "a shirt with 'hi' on its back"),
    ('a sign saying "cats and dogs"', 'a sign saying "dogs and cats"'),  # quoted text: as written
    ("a sign that says 'Joe's Pizza'", "a sign that says 'pizza of Joe'"),
    # found by a second review: each was once answered "same"
    ("a bearded man's dog", "a man's bearded dog"),
    ("a huge castle made of stones", "a castle made of huge stones"),
    ("a house made from a boat", "a boat house"),
    ("a house made of light", "a light house"),
    ("a statue carved from marble and gold", "a marble statue and gold"),
    ("a plate of chicken", "a chicken's plate"),
    ("a leg of lamb", "a lamb's leg"),
    ("a bowl of cherries and grapes", "grapes and a bowl of cherries"),
    ("a group of cats and dogs", "dogs and a group of cats"),
    ("the roof of a house that is red", "the red roof of a house"),
    ("a cat in the style of Monet and Picasso", "a cat and Picasso in the style of Monet"),
    ("in the park walking a dog", "a dog walking in the park"),
    ("in a box, a cat, a dog", "a cat in a box, a dog"),
    ("pony rides at a fair", "a pony riding at a fair"),
    ("arm rests on a sofa", "an arm resting on a sofa"),
    ("a man eating shark", "a shark eaten by a man"),
    ("cat scratching post", "a cat scratching a post"),
    ("a sculpture displayed by a window", "a window displaying a sculpture"),
    ("three 5mm screws", "35mm screws"),
    ("two 3d printers", "23d printers"),
    ("five 0s", "50s"),
    ("a man in the front of a bus", "a bus behind a man"),
    ("a dog in the front of a car", "a dog in front of a car"),
    ("a dog walked by a man", "a dog walking by a man"),
    ("ski runs in the alps", "ski running in the alps"),
    ("a man-eating shark", "a man eating a shark"),
    # found by a third review: each was once answered "same"
    ("a panda painted red", "a red panda"),            # a colour or size that makes a compound
    ("a hole, black", "a black hole"),
    ("a widow whose color is black", "a black widow"),
    ("a cat that is big", "a big cat"),
    ("a whale painted blue", "a blue whale"),
    ("a leopard made of snow", "a snow leopard"),      # a material that makes a compound
    ("a mine made of gold", "a gold mine"),
    ("a fish made of gold", "a goldfish"),
    ("a mill made of paper", "a paper mill"),
    ("a bucket made of ice", "an ice bucket"),
    ("a grater made of cheese", "a cheese grater"),
    ("a cat lying on its back", "a cat lying on the back of a cat"),  # its own, or another's
    ("a fox sleeping on its tail", "a fox sleeping on the fox's tail"),
    ("two cats licking their paws", "two cats licking the paws of two cats"),
    ("a boy with a kite flying it", "a kite flying a boy"),  # who does what to "it"?
    ("a woman with a cat feeding it", "a cat feeding a woman"),
    ("a tall and a thin man", "a tall and thin man"),  # two men, or one
    ("an old and a young woman", "an old and young woman"),
    ("two winged horses", "horses with two wings"),    # a word before a part a thing may lack
    ("a white winged horse", "a horse with white wings"),
    ("a tent pitched by a lake", "a lake pitching a tent"),  # "by" a place, not an agent
    ("a boat anchored by a pier", "a pier anchoring a boat"),
    ("a cake made by a lake", "a lake making a cake"),
    ("a dress designed by a child", "a child designing a dress"),  # a finished thing, not the act
    ("a striped bass on ice", "a bass with stripes on ice"),  # a species (WordNet)
    ("a ship nearing an island", "a ship near an island"),  # a verb spelled like a relation
    ("a cat liking a dog", "a cat like a dog"),
    ("a cat in the style of Monet next to a dog in the style of Picasso",
     "a cat in the style of Picasso next to a dog in the style of Monet"),
    ("the pizza that a chef is tossing", "a pizza chef tossing"),
    ("a cake left of a plate", "a plate right of a cake"),  # what is left of it, or beside it
    ("a man under arrest", "an arrest over a man"),
    ("a man eating sharks", "man-eating sharks"),
    # found by a fourth review
    ("a bearded dragon", "a dragon with a beard"),  # an animal named by a part it has: a species
    ("a hooded crow", "a crow with a hood"),
    ("a silver dealer", "a dealer made of silver"),  # a person: of the trade, not the material
    ("a silk merchant", "a merchant made of silk"),
    ("a woman on the phone", "a phone with a woman on it"),  # "on" a state or an activity
    ("a thief on the run", "a run with a thief on it"),
    ("a band on stage", "a stage with a band on it"),
    ("a cat in the style of Monet, a dog in the style of Picasso",
     "a cat in the style of Picasso, a dog in the style of Monet"),
]


def same(a: str, b: str) -> bool:
    a, b = normalize_prompt(a), normalize_prompt(b)
    forward, backward = verify(a, b), verify(b, a)
    assert forward.same == backward.same
    return forward.same


@pytest.mark.parametrize(("stored", "query"), REBUILT, ids=[f"{a} / {b}" for a, b in REBUILT])
def test_a_rebuilt_sentence_is_the_same_request(stored: str, query: str) -> None:
    assert same(stored, query)
    assert verify(normalize_prompt(stored), normalize_prompt(query)).reason == SCENE_REASON


@pytest.mark.parametrize(("stored", "query"), LOOK_ALIKE, ids=[f"{a} / {b}" for a, b in LOOK_ALIKE])
def test_a_look_alike_rebuilding_is_another_request(stored: str, query: str) -> None:
    assert not same(stored, query)


@pytest.mark.parametrize("prompt", [
    "it sits on a mat",                                   # a pronoun with nothing to stand for
    "a cat, a dog, on a mat",                             # a part that leans on another's thing
])
def test_what_the_reader_cannot_place_is_left_to_the_word_comparison(prompt: str) -> None:
    assert scene(_analyse(normalize_prompt(prompt))) is None


@pytest.mark.parametrize("prompt", [
    "a photo of a painting of a sculpture of a giraffe",  # "X of Y of Z"
    "a cat that is a pet of a dog",
    "a cat on",                                           # a relation with nothing after it
    "a box being ridden by",                              # a passive with no agent
    "Monet's painting",                                   # by Monet, or of him
    "a cat on a mat chased by a dog",                     # the cat or the mat?
])
def test_a_part_the_reader_cannot_take_apart_is_one_fact_as_written(prompt: str) -> None:
    facts = scene(_analyse(normalize_prompt(prompt)))
    assert facts is not None and "as written" in [fact[0] for fact, _ in facts]


def test_the_scene_lists_things_relations_and_styles() -> None:
    facts = dict(scene(_analyse(normalize_prompt("a witch riding a broom, in the style of Turner"))) or ())
    assert facts == {("rel", (("witch",), None), "ride", (("broom",), None)): 1, ("style", ("turner",)): 1}


def test_a_verb_before_a_bare_noun_is_marked_as_a_possible_compound() -> None:
    facts = dict(scene(_analyse(normalize_prompt("a man eating shark"))) or ())
    assert facts == {("rel", (("man",), None), "eat+bare", (("shark",), None)): 1}
    assert not same("a man eating shark", "a shark eaten by a man")


def test_wordnet_tells_a_compound_noun_from_a_thing_with_a_quality() -> None:
    assert may_be_compound(("snow", "leopards")) and may_be_compound(("gold", "fish"))  # "goldfish"
    assert may_be_compound(("red", "panda")) and may_be_compound(("paper", "mill"))
    assert not may_be_compound(("cardboard", "spaceship")) and not may_be_compound(("red", "car"))
    assert may_be_adjective("tall") and may_be_adjective("wooden") and not may_be_adjective("cat")
