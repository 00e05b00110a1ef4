"""Curated word lists for the prompt verifier (:mod:`imgcache.match.semantic.verifier`) and its
scene reader (:mod:`imgcache.match.semantic.scene`).

Kept deliberately small and conservative: a pair of words belongs in ``SYNONYMS`` only when
swapping one for the other can never change the picture (spelling variants, true synonyms).
When in doubt a word is *not* a synonym: a wrong image is worse than a cache miss. "huge" is
not "big", "kitten" is not "cat", "plane" is not "airplane" (it may be a geometric plane).

All entries are lower case, as produced by :func:`imgcache.normalize.normalize_prompt`.
"""

from __future__ import annotations

from collections.abc import Iterable

# Articles carry no content once counts are spelled by nouns ("a dog" vs "dogs" still differ).
DROPPED = frozenset({"a", "an", "the"})

# Single-token synonyms and spelling variants -> canonical token(s); a value with a space
# stands for several tokens ("atop" -> "on top of", matching the three words spelled out).
SYNONYMS: dict[str, str] = {
    # medium nouns
    "photograph": "photo",
    "photographs": "photos",
    "image": "picture",
    "images": "pictures",
    "pic": "picture",
    "pics": "pictures",
    # furniture, vehicles, things
    "couch": "sofa",
    "couches": "sofas",
    "automobile": "car",
    "automobiles": "cars",
    "aeroplane": "airplane",
    "aeroplanes": "airplanes",
    "television": "tv",
    "televisions": "tvs",
    "refrigerator": "fridge",
    "refrigerators": "fridges",
    "doughnut": "donut",
    "doughnuts": "donuts",
    "tshirt": "t shirt",
    "ocean": "sea",
    "oceans": "seas",
    # degree and size
    "really": "very",
    "large": "big",
    "little": "small",
    # places
    "beside": "next to",
    "atop": "on top of",
    "underneath": "under",
    "beneath": "under",
    "toward": "towards",
    # British / American spelling
    "grey": "gray",
    "greyish": "grayish",
    "colour": "color",
    "colours": "colors",
    "coloured": "colored",
    "colourful": "colorful",
    "harbour": "harbor",
    "harbours": "harbors",
    "neighbour": "neighbor",
    "neighbours": "neighbors",
    "neighbourhood": "neighborhood",
    "armour": "armor",
    "armoured": "armored",
    "favourite": "favorite",
    "flavour": "flavor",
    "vapour": "vapor",
    "parlour": "parlor",
    "centre": "center",
    "theatre": "theater",
    "metre": "meter",
    "metres": "meters",
    "jewellery": "jewelry",
    "aluminium": "aluminum",
    "moustache": "mustache",
    "pyjamas": "pajamas",
    "cosy": "cozy",
    "stylised": "stylized",
    "realised": "realized",
    "watercolour": "watercolor",
    "watercolours": "watercolors",
    "colouring": "coloring",
    "glamour": "glamor",
    # number words -> digits ("one cat" == "1 cat"; "a cat" stays distinct from both)
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "&": "and",
    "cannot": "can not",
}

# Multi-word phrases -> canonical token(s) (split on spaces); hyphenated compounds arrive as separate words
# ("photo-realistic" -> "photo realistic") and are joined here with their one-word spelling.
PHRASES: dict[tuple[str, ...], str] = {
    ("close", "to"): "near",
    ("photo", "realistic"): "photorealistic",
    ("hyper", "realistic"): "hyperrealistic",
    ("hyper", "realism"): "hyperrealism",
    ("ultra", "realistic"): "ultrarealistic",
    ("hyper", "detailed"): "hyperdetailed",
    ("ultra", "detailed"): "ultradetailed",
    ("close", "up"): "closeup",
    ("sci", "fi"): "scifi",
    ("water", "color"): "watercolor",
    ("art", "station"): "artstation",
    ("t", "shirt"): "t shirt",
    ("tee", "shirt"): "t shirt",
    ("dont",): "do not",
    ("don", "t"): "do not",
    ("doesn", "t"): "does not",
    ("didn", "t"): "did not",
    ("isn", "t"): "is not",
    ("aren", "t"): "are not",
    ("wasn", "t"): "was not",
    ("weren", "t"): "were not",
    ("can", "t"): "can not",
    ("couldn", "t"): "could not",
    ("won", "t"): "will not",
    ("wouldn", "t"): "would not",
    ("w", "o"): "without",  # "w/o": the slash is dropped before phrases are matched
}

# Verb forms that differ only in tense or agreement (never in count: "sits" is not a noun
# plural) -> one canonical form. Left out on purpose: forms that double as plural nouns
# ("runs", "holds", "eats", "reads", "drinks", "flies", "stands", "looks"), and participles
# of verbs that take an object, whose "-ed by" is a passive ("a dog walked by a man" is not
# "a dog walking by a man").
VERB_FORMS: dict[str, tuple[str, ...]] = {
    "sit": ("sits", "sitting", "sat"),
    "stand": ("standing", "stood"),
    "lie": ("lying",),
    "run": ("running", "ran"),
    "walk": ("walking",),
    "fly": ("flying", "flew"),
    "swim": ("swims", "swimming", "swam"),
    "hold": ("holding",),
    "wear": ("wears", "wearing", "wore"),
    "ride": ("riding", "rode"),
    "sleep": ("sleeps", "sleeping", "slept"),
    "eat": ("eating", "ate"),
    "read": ("reading",),
    "climb": ("climbing",),
    "float": ("floating", "floated"),
    "lean": ("leans", "leaning", "leaned", "leant"),
    "carry": ("carries", "carrying"),
    "smile": ("smiling", "smiled"),
    "laugh": ("laughing",),
    "cry": ("crying", "cried"),
    "jump": ("jumping",),
    "chase": ("chasing",),
    "hug": ("hugging",),
    "kiss": ("kissing",),
    "stare": ("staring",),
    "gaze": ("gazing",),
    "perch": ("perched", "perching"),
    "hang": ("hangs", "hanging"),
    "glow": ("glows", "glowing"),
}
VERBS: dict[str, str] = {form: base for base, forms in VERB_FORMS.items() for form in forms}
# "-s" forms that double as plural nouns ("ski runs", "climbing holds"): a verb only where
# its object's article or determiner follows ("a girl holds a lantern").
VERBS_BEFORE_OBJECT: dict[str, str] = {
    "runs": "run", "holds": "hold", "eats": "eat", "reads": "read", "climbs": "climb",
    "stares": "stare", "gazes": "gaze", "rides": "ride", "walks": "walk", "chases": "chase",
    "hugs": "hug", "kisses": "kiss", "jumps": "jump",
}
DETERMINERS = frozenset({"a", "an", "the", "his", "her", "its", "their", "my", "your", "our",
                         "this", "that", "these", "those"})

# Common subjects: a short comma part ending in one names a thing of its own, that the parts
# after it may describe ("man, bald, woman, blonde").
CREATURES = frozenset({
    "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "person", "people", "child",
    "children", "kid", "kids", "baby", "babies", "lady", "ladies", "guy", "guys", "couple",
    "cat", "cats", "kitten", "kittens", "dog", "dogs", "puppy", "puppies", "horse", "horses",
    "bird", "birds", "fox", "foxes", "bear", "bears", "rabbit", "rabbits", "robot", "robots",
})

# Nouns whose plural is spelled like the singular: with one of these in a part, only the verb
# tells one from many ("the sheep is grazing" / "the sheep are grazing"), so such a part
# keeps its verb forms and auxiliaries exactly as written.
SAME_PLURAL = frozenset(
    {
        "sheep", "deer", "fish", "moose", "bison", "buffalo", "elk", "reindeer", "salmon",
        "trout", "cod", "carp", "pike", "tuna", "shrimp", "squid", "swine", "aircraft",
        "spacecraft", "hovercraft", "offspring", "species", "series", "you", "samurai",
        "ninja", "antelope", "caribou", "quail", "grouse", "wildebeest", "yak", "haddock",
        "halibut", "mackerel", "herring", "krill", "plankton", "bass", "chassis", "corps",
    }
)


def same_in_plural(words: Iterable[str]) -> bool:
    """Whether one of ``words`` is a noun spelled alike in the plural (also "goldfish",
    "jellyfish" and every other "-fish")."""
    return any(word in SAME_PLURAL or word.endswith("fish") for word in words)

# "is"/"are" before a verb's -ing form is only an auxiliary: "a cat is sleeping" == "a cat
# sleeping". (Left as content elsewhere: "the sheep is" / "the sheep are" carries a count.)
AUXILIARIES = frozenset({"is", "are"})

# Nouns that name a medium or a framing: "<...medium> of X" at the start of a prompt is the
# same request as "X, <...medium>" ("a photo of a fox in snow" == "fox in snow, photo").
MEDIA = frozenset(
    {
        "photo", "photos", "picture", "pictures", "painting", "paintings", "drawing",
        "drawings", "sketch", "illustration", "render", "rendering", "artwork", "art",
        "portrait", "portraits", "cartoon", "woodcut", "engraving", "etching", "lithograph",
        "print", "poster", "watercolor", "pastel", "mural", "sculpture", "statue", "shot",
        "view", "closeup", "selfie", "snapshot", "still", "photography", "depiction",
        "scene", "comic", "anime", "mosaic", "collage", "tapestry", "fresco",
        "screenshot", "diagram", "infographic", "icon", "logo", "sticker",
    }
)

# Words that only glue a part to a list: a leading "and" in ", and a black hat".
LIST_GLUE = frozenset({"and"})

# A part made only of these words modifies whatever precedes it ("a cat, black, a dog,
# white"), so it is compared together with the part before it, never reordered alone.
COLORS = frozenset(
    {
        "red", "blue", "green", "yellow", "orange", "purple", "violet", "pink", "brown",
        "black", "white", "gray", "silver", "golden", "gold", "beige", "cyan", "magenta",
        "teal", "turquoise", "maroon", "navy", "indigo", "crimson", "scarlet", "ivory",
        "cream", "tan", "olive", "lime", "amber", "bronze", "copper",
    }
)
SIZES = frozenset(
    {
        "big", "small", "tiny", "huge", "giant", "gigantic", "enormous", "massive", "miniature",
        "tall", "short", "long", "wide", "narrow", "thick", "thin", "fat", "slim",
    }
)
ATTACHED = COLORS | SIZES | LIST_GLUE
# (Whole-picture palette words - "colorful", "monochrome", "pastel" - attach to nothing.)
PALETTE = frozenset({"colorful", "monochrome", "grayscale", "pastel", "vibrant", "muted"})
# Words that describe the picture, not a thing in it: a comma part of these (and adverbs,
# "highly detailed") may go anywhere in a prompt with two subjects.
PICTURE_QUALITIES = PALETTE | frozenset({
    "detailed", "hyperdetailed", "ultradetailed", "intricate", "realistic", "photorealistic",
    "hyperrealistic", "cinematic", "sharp", "blurry", "grainy", "stylized", "minimalist",
    "minimal", "surreal", "abstract", "dramatic", "atmospheric", "moody", "epic", "ornate",
    "symmetrical", "centered", "octane", "lowpoly", "isometric", "volumetric", "hd", "uhd",
})

# Polite filler at the very end of a prompt ("..., please", "... for me").
TRAILING_POLITE = (
    ("please",), ("pls",), ("plz",), ("for", "me"), ("for", "us"), ("thanks",),
    ("thank", "you"), ("thx",), ("ty",),
)

# Categories only name a difference in a verdict's reason; they do not decide anything.
CATEGORIES: tuple[tuple[str, frozenset[str]], ...] = (
    ("negation", frozenset({"no", "not", "without", "with", "never", "none", "nothing",
                            "non", "nobody", "neither", "nor", "only"})),
    ("colour", COLORS | PALETTE),
    ("size", SIZES),
    ("time", frozenset({"sunset", "sunrise", "dawn", "dusk", "night", "nighttime", "noon",
                        "midnight", "morning", "evening", "afternoon", "day", "daytime",
                        "twilight", "winter", "summer", "spring", "autumn", "fall"})),
    ("medium or style", MEDIA | frozenset({"oil", "acrylic", "charcoal", "pencil", "ink",
                                           "pixel", "3d", "digital", "style", "by", "vector",
                                           "cinematic", "realistic", "photorealistic"})),
    ("framing", frozenset({"closeup", "aerial", "full", "body", "macro", "wide", "angle",
                           "overhead", "top", "bird", "eye", "profile", "headshot", "close",
                           "zoom", "zoomed"})),
    ("position", frozenset({"left", "right", "above", "below", "under", "over", "behind",
                            "front", "on", "in", "inside", "outside", "near", "next to",
                            "on top of", "between", "around", "beside"})),
    ("number", frozenset({"a", "an", "is", "are"}) | SAME_PLURAL),
)


# -- the scene reader (:mod:`imgcache.match.semantic.scene`) ---------------------------------

# What a relation word names a state or an activity with, not a place: "a house under
# construction", "a woman on the phone", "a band on stage".
_UNDER_STATES = frozenset({"arrest", "construction", "attack", "pressure", "siege", "repair", "renovation",
                           "investigation", "control", "fire", "threat", "stress", "spell", "influence", "moon"})
_ON_STATES = frozenset({
    "phone", "telephone", "radio", "tv", "television", "air", "fire", "run", "go", "way", "move", "job",
    "line", "loose", "rocks", "date", "diet", "duty", "call", "break", "strike", "trial", "stage",
    "leash", "display", "sale", "screen", "camera", "film", "patrol", "guard", "board", "hold", "foot",
    "horseback", "time", "vacation", "holiday", "mission", "trip", "journey", "walk", "hike", "tour",
    "edge", "verge", "lookout", "mend", "rise", "internet", "web", "fence", "spot", "drugs", "ice",
    "menu", "set", "watch", "alert", "record", "show", "lam",
})
STATES: dict[str, frozenset[str]] = {"under": _UNDER_STATES, "over": _UNDER_STATES, "on": _ON_STATES}

# What "X written on Y" can say of Y ("Y says X"): signs and the like, not a person.
TEXT_BEARERS = frozenset({
    "sign", "signs", "board", "billboard", "banner", "poster", "storefront", "shopfront", "label", "note",
    "card", "cover", "page", "paper", "wall", "door", "screen", "shirt", "t", "plaque", "placard", "menu",
    "book", "cake", "mug", "cup", "box", "bag", "flag", "sticker", "tag", "ticket", "letter", "envelope",
})

# "X of Y" names Y's X ("the back of a turtle") unless X depicts Y ("a toy of a dog").
DEPICTIONS = MEDIA | frozenset({
    "model", "models", "toy", "toys", "figurine", "figurines", "figure", "figures", "doll", "dolls",
    "replica", "miniature", "tattoo", "costume", "mask", "cake", "carving", "bust", "version", "copy",
    "book", "story", "map", "image", "video", "film", "movie", "song", "dream", "memory", "idea",
})
# "Y of X" is X's Y only for a part of a thing; "a plate of chicken", "a group of cats" and "a
# leg of lamb" name a quantity or a dish: one thing, its words as written.
PARTS = frozenset({
    "back", "top", "side", "bottom", "edge", "corner", "surface", "base", "peak", "roof", "wall",
    "door", "window", "deck", "hull", "handle", "lid", "head", "tail", "face", "nose", "mouth",
    "eye", "eyes", "ear", "ears", "hand", "hands", "arm", "arms", "leg", "legs", "foot", "feet",
    "paw", "paws", "wing", "wings", "shoulder", "shoulders", "lap", "neck", "belly", "horn", "horns",
    "fur", "hair", "shell", "trunk", "branch", "branches", "shore", "bank",
})
MEATS = frozenset({"lamb", "chicken", "beef", "pork", "veal", "mutton", "venison", "turkey", "duck",
                   "goose", "rabbit", "crab", "lobster"})
# What "X made of Y" may make X of, so that it is "a Y X": "a house made from a boat" is no
# "boat house", "a house made of light" no "light house".
MATERIALS = frozenset({
    "cardboard", "paper", "wood", "stone", "stones", "marble", "granite", "brick", "bricks",
    "concrete", "glass", "crystal", "metal", "steel", "iron", "gold", "silver", "bronze", "copper",
    "brass", "tin", "aluminum", "plastic", "rubber", "clay", "porcelain", "ceramic", "jade", "ivory",
    "bone", "ice", "snow", "sand", "chocolate", "candy", "sugar", "cheese", "bread", "lego", "legos",
    "wool", "yarn", "felt", "cotton", "silk", "leather", "fabric", "denim", "lace", "straw",
    "bamboo", "wax", "origami", "diamond", "diamonds", "pearl", "pearls", "obsidian",
})
# Materials that are also what a tool or a vessel is for: an "ice bucket" holds ice, a "cheese
# grater" grates cheese; neither is made of it.
CONTENTS = frozenset({"chocolate", "candy", "sugar", "cheese", "bread", "ice", "snow", "sand", "butter",
                      "wax", "paper", "cotton", "wool", "yarn", "lego", "legos", "diamond", "diamonds"})
HOLDERS = frozenset({
    "bucket", "bowl", "jar", "box", "bag", "tray", "dish", "pot", "pan", "tin", "can", "basket", "crate",
    "grater", "knife", "cutter", "slicer", "scoop", "shovel", "spoon", "mold", "mould", "shaker",
    "dispenser", "maker", "machine", "factory", "mill", "mine", "shop", "store", "truck", "storm",
    "lab", "plant", "press", "sculptor", "artist", "vendor", "seller", "thief",
})

# Participles of verbs whose "-ed by X" says who does it (see the scene reader).
AGENT_PARTICIPLES = (
    "ridden", "worn", "bitten", "eaten", "chased", "carried", "pulled", "pushed", "hugged", "kissed",
    "kicked", "caught", "attacked", "hunted", "fed", "driven", "flown", "led", "followed",
    "guarded", "lifted", "thrown", "grabbed", "licked", "petted", "stroked",
    "fought", "protected", "surrounded", "chewed", "swallowed", "towed", "sniffed", "trampled",
    "scratched", "squeezed", "scared", "frightened", "stalked", "pursued", "piloted", "steered",
    "rowed", "hit", "struck", "punched", "slapped", "tickled", "swung", "juggled", "tossed",
    "devoured", "nibbled", "strummed", "rescued", "captured", "trapped", "defeated", "dragged",
    "hauled", "milked", "groomed", "brushed", "washed", "bathed", "cuddled", "embraced", "adored",
    "abducted", "kidnapped", "terrified",
)

# Verbs that say where a thing is, the only ones a sentence may front its place with: "on the
# grass sit two cats" (but "in the park walking a dog" is not "a dog walking in the park").
POSITION_VERBS = frozenset({"sit", "stand", "lie", "lay", "hang", "float", "perch", "lean", "rest",
                            "sleep", "stay", "wait", "grow", "live", "glow", "loom", "tower"})
