"""The built-in demo corpus: seeded short children's stories in the spirit of TinyStories.

Every story is made from a plan (a hero, a friend, a place, an object, a problem, a
way out, a lesson) told through a few paragraph templates with simple dialogue, so
the text has real words, repeated structure and enough variety for a small BPE to
find words and a small LM to learn (its loss falls well below the unigram entropy).

The output depends only on the seed and the number of documents: it uses its own
``random.Random`` and never iterates over sets or dicts whose order could change.
Documents are separated by a line holding exactly ``<|endoftext|>``, as in the
TinyStoriesV2 text files.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from lm.errors import LMError
from lm.io import atomic_open

EOT = "<|endoftext|>"

GIRLS = [
    "Lily", "Mia", "Sue", "Anna", "Emma", "Zoe", "Lucy", "Ella", "Rosa", "Kim", "Amy", "Nora",
    "Grace", "Chloe", "Ruby", "Hana", "Maya", "Sofia", "Ivy", "Jade", "Luna", "Olivia", "Daisy",
    "Fatima", "Priya", "Mei", "Sara", "Alice", "Clara", "Elsa",
]  # fmt: skip
BOYS = [
    "Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Noah", "Finn", "Omar", "Ravi", "Joe",
    "Liam", "Ethan", "Hugo", "Kai", "Luca", "Mateo", "Oscar", "Felix", "Arjun", "Yusuf", "Theo",
    "Henry", "Jonah", "Kenji", "Pablo", "Dan", "Bob", "Adam",
]  # fmt: skip
ANIMALS = [
    ("a little", "bunny", "hop"),
    ("a big", "bear", "walk"),
    ("a small", "cat", "run"),
    ("a happy", "dog", "run"),
    ("a tiny", "bird", "fly"),
    ("a slow", "turtle", "crawl"),
    ("a brave", "mouse", "run"),
    ("a shy", "fox", "run"),
    ("a funny", "duck", "waddle"),
    ("a kind", "frog", "jump"),
    ("a curious", "squirrel", "climb"),
    ("a sleepy", "owl", "fly"),
]
PLACES = [
    ("the park", "trees", "green"),
    ("the garden", "flowers", "bright"),
    ("the beach", "waves", "blue"),
    ("the forest", "leaves", "dark"),
    ("the farm", "cows", "muddy"),
    ("the school", "desks", "busy"),
    ("the lake", "ducks", "calm"),
    ("the hill", "rocks", "windy"),
    ("the zoo", "animals", "loud"),
    ("the kitchen", "pots", "warm"),
    ("the library", "books", "quiet"),
    ("the market", "apples", "noisy"),
]
OBJECTS = [
    ("red", "ball"),
    ("shiny", "key"),
    ("blue", "kite"),
    ("soft", "blanket"),
    ("yellow", "hat"),
    ("big", "box"),
    ("pretty", "shell"),
    ("old", "map"),
    ("little", "boat"),
    ("green", "crayon"),
    ("golden", "coin"),
    ("round", "cookie"),
    ("wooden", "toy car"),
    ("pink", "balloon"),
]
FOODS = [
    "apple pie", "soup", "pancakes", "carrots", "cheese", "bread", "cake", "grapes", "rice",
    "noodles", "cookies", "berries", "banana", "sandwich", "pizza", "honey", "milk", "lemonade",
    "peas", "corn", "watermelon", "muffins", "pears", "eggs",
]  # fmt: skip
TASTES = [
    "yummy",
    "sweet",
    "warm",
    "crunchy",
    "juicy",
    "soft",
    "fresh",
    "sour",
    "salty",
    "delicious",
]
ACTIVITIES = [
    "draw pictures", "sing songs", "build towers", "dance", "read books", "jump rope",
    "play hide and seek", "ride a bike", "swim", "dig in the sand", "fly a kite", "paint",
    "count the stars", "plant seeds", "bake cookies", "catch bugs", "splash in puddles",
    "climb trees", "collect leaves", "feed the birds", "play the drum", "make a sandcastle",
    "skip stones", "blow bubbles", "tell jokes", "pick flowers", "roll down the hill",
]  # fmt: skip
COLORS = [
    "red",
    "blue",
    "green",
    "yellow",
    "purple",
    "orange",
    "pink",
    "white",
    "black",
    "brown",
    "gray",
    "gold",
]
SOUNDS = [
    ("the wind", "whooshed"), ("a dog", "barked"), ("the rain", "tapped"), ("a bell", "rang"),
    ("the birds", "chirped"), ("a car", "honked"), ("the thunder", "rumbled"), ("a baby", "giggled"),
    ("the river", "bubbled"), ("a train", "whistled"),
]  # fmt: skip
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "many"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SEASONS = ["spring", "summer", "fall", "winter"]
RELATIVES = [
    "mom",
    "dad",
    "grandma",
    "grandpa",
    "big sister",
    "big brother",
    "aunt",
    "uncle",
    "teacher",
]
ADJECTIVES = [
    "tiny", "huge", "fluffy", "shiny", "bumpy", "smooth", "striped", "spotted", "sparkly", "wobbly",
    "squeaky", "sticky", "fuzzy", "gentle", "clever", "silly", "grumpy", "friendly", "strange",
    "wonderful", "beautiful", "colorful", "enormous", "little", "ancient", "magic", "secret",
    "hidden", "broken", "tall", "short", "heavy", "light", "empty", "crowded", "bouncy", "chilly",
    "cozy", "dusty", "frosty", "glowing", "hungry", "noisy", "quiet", "rusty", "sleepy", "soggy",
    "speedy", "spiky", "twinkly", "velvety", "wiggly", "zigzag",
]  # fmt: skip
NOUNS = [
    "snail", "butterfly", "rainbow", "castle", "dragon", "puppy", "kitten", "pony", "robot",
    "rocket", "pumpkin", "mushroom", "feather", "pebble", "acorn", "puddle", "bridge", "tunnel",
    "lantern", "umbrella", "whistle", "teapot", "basket", "ladder", "window", "blanket fort",
    "snowman", "sunflower", "ladybug", "caterpillar", "jellyfish", "starfish", "octopus", "penguin",
    "giraffe", "elephant", "lion", "monkey", "zebra", "hedgehog", "raccoon", "beaver", "goat",
    "sheep", "pig", "chicken", "parrot", "crab", "whale", "dolphin", "tractor", "bus", "train",
    "airplane", "wagon", "sled", "drum", "guitar", "piano", "trumpet", "puzzle", "marble",
    "sticker", "ribbon", "necklace", "crown", "wand", "treasure chest", "cloud", "moon", "star",
]  # fmt: skip
VERBS_PAST = [
    "wiggled", "giggled", "sparkled", "tumbled", "wandered", "whispered", "shouted", "laughed",
    "clapped", "skipped", "twirled", "bounced", "peeked", "splashed", "hummed", "yawned",
    "stretched", "marched", "tiptoed", "zoomed", "floated", "snored", "sneezed", "waved",
]  # fmt: skip
FEELINGS_BAD = ["sad", "scared", "worried", "upset", "lonely", "angry"]
FEELINGS_GOOD = ["happy", "proud", "glad", "excited", "calm", "thankful"]
WEATHER = ["sunny", "rainy", "cold", "warm", "windy", "snowy"]
TIMES = [
    "Once upon a time",
    "One day",
    "One sunny morning",
    "Long ago",
    "One evening",
    "Every summer",
]
PROBLEMS = ["lost", "broke", "could not reach", "dropped", "forgot"]
LESSONS = [
    "sharing makes everyone happy",
    "it is good to ask for help",
    "being kind is the best way to make a friend",
    "you should never give up",
    "telling the truth is important",
    "friends help each other",
    "it is fun to try new things",
    "being patient pays off",
]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


class _Story:
    """One story's cast and setting, drawn from the rng."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        if rng.random() < 0.5:
            self.hero, self.he, self.his = _pick(rng, GIRLS), "she", "her"
        else:
            self.hero, self.he, self.his = _pick(rng, BOYS), "he", "his"
        self.animal_adj, self.animal, self.move = _pick(rng, ANIMALS)
        friends = [n for n in GIRLS + BOYS if n != self.hero]
        self.friend = _pick(rng, friends)
        self.place, self.things, self.place_adj = _pick(rng, PLACES)
        self.obj_adj, self.obj = _pick(rng, OBJECTS)
        self.bad = _pick(rng, FEELINGS_BAD)
        self.good = _pick(rng, FEELINGS_GOOD)
        self.weather = _pick(rng, WEATHER)
        self.time = _pick(rng, TIMES)
        self.problem = _pick(rng, PROBLEMS)
        self.lesson = _pick(rng, LESSONS)
        self.age = rng.randint(3, 9)
        self.food = _pick(rng, FOODS)
        self.taste = _pick(rng, TASTES)
        self.activity = _pick(rng, ACTIVITIES)
        self.activity2 = _pick(rng, ACTIVITIES)
        self.color = _pick(rng, COLORS)
        self.sound, self.sound_verb = _pick(rng, SOUNDS)
        self.number = _pick(rng, NUMBERS)
        self.day = _pick(rng, DAYS)
        self.season = _pick(rng, SEASONS)
        self.relative = _pick(rng, RELATIVES)

    def him(self) -> str:
        return "her" if self.he == "she" else "him"


def _opening(s: _Story) -> str:
    rng = s.rng
    choices = [
        f"{s.time}, there was a {'girl' if s.he == 'she' else 'boy'} named {s.hero}. "
        f"{s.he.capitalize()} was {s.age} years old and loved to play at {s.place}.",
        f"{s.time}, {s.hero} went to {s.place} with {s.his} mom. It was a {s.weather} day, "
        f"and the {s.things} looked {s.place_adj}.",
        f"{s.time}, {s.animal_adj} {s.animal} lived near {s.place}. "
        f"Every day it would {s.move} around and look at the {s.things}.",
        f"{s.hero} had {_a(s.obj_adj)} {s.obj_adj} {s.obj}. {s.he.capitalize()} took it everywhere, "
        f"even to {s.place}.",
    ]
    return _pick(rng, choices)


def _detail(s: _Story) -> str:
    rng = s.rng
    adj, color = _pick(rng, ADJECTIVES), _pick(rng, COLORS)
    choices = [
        f"{s.hero} liked to {s.activity} and {s.activity2}. {s.his.capitalize()} favorite color "
        f"was {s.color}.",
        f"It was {s.day}, and it was {s.season}. {s.hero}'s {s.relative} made {s.food} for lunch. "
        f"The {s.food} was {s.taste}.",
        f"There were {s.number} {s.things} at {s.place}. {s.hero} counted them one by one.",
        f"Outside, {s.sound} {s.sound_verb}. {s.hero} looked out and saw {s.number} {s.color} "
        f"birds in the sky.",
        f'"Let\'s {s.activity}!" said {s.friend}. "Yes!" said {s.hero}, and they ran to {s.place}.',
        f"At {s.place}, {s.hero} saw {_a(adj)} {adj} {_pick(rng, NOUNS)}, "
        f"{_a(color)} {color} {_pick(rng, NOUNS)} "
        f"and {s.number} {_pick(rng, ADJECTIVES)} {_pick(rng, NOUNS)}s.",
        f"The {_pick(rng, NOUNS)} {_pick(rng, VERBS_PAST)} and the {_pick(rng, NOUNS)} "
        f"{_pick(rng, VERBS_PAST)}. {s.hero} {_pick(rng, VERBS_PAST)} too.",
        f"{s.hero} wore {s.his} {s.color} coat because it was {s.weather}. {s.he.capitalize()} "
        f"took some {s.food} in a bag.",
    ]
    return _pick(rng, choices)


def _middle(s: _Story) -> str:
    rng = s.rng
    choices = [
        f"One day, {s.hero} {s.problem} {s.his} {s.obj_adj} {s.obj}. {s.he.capitalize()} felt very {s.bad}. "
        f'"Where is my {s.obj}?" {s.he} said. {s.he.capitalize()} looked under the {s.things} '
        f"and behind a tree, but {s.he} could not find it.",
        f"At {s.place}, {s.hero} saw {s.animal_adj} {s.animal}. The {s.animal} looked {s.bad}. "
        f'"What is wrong?" asked {s.hero}. "I {s.problem} my {s.obj}," said the {s.animal}.',
        f'{s.friend} came to {s.place} too. "Can I play with your {s.obj}?" {s.friend} asked. '
        f'{s.hero} did not want to share. "No, it is mine!" {s.he} said, and {s.friend} felt {s.bad}.',
        f"The weather became {s.weather}. {s.hero} wanted to go home, but {s.he} could not find "
        f"the way. {s.he.capitalize()} sat down and felt {s.bad}.",
    ]
    return _pick(rng, choices)


def _turn(s: _Story) -> str:
    rng = s.rng
    choices = [
        f'Then {s.friend} came by. "Do not be {s.bad}," {s.friend} said. "I will help you." '
        f"They looked together, and soon they found the {s.obj} near the {s.things}.",
        f"{s.hero} thought for a moment. Then {s.he} had an idea. {s.he.capitalize()} asked "
        f"the {s.animal} to {s.move} up high and look. The {s.animal} saw the {s.obj} right away!",
        f'{s.hero} saw that {s.friend} was {s.bad}. "I am sorry," {s.he} said. '
        f'"We can play with my {s.obj} together." {s.friend} smiled a big smile.',
        f"A kind old man saw {s.hero}. He held {s.his} hand and walked with {s.him()} "
        f"back to {s.place}. Mom was there, and she gave {s.hero} a big hug.",
    ]
    return _pick(rng, choices)


def _ending(s: _Story) -> str:
    rng = s.rng
    choices = [
        f"{s.hero} felt {s.good}. From that day on, {s.he} knew that {s.lesson}.",
        f'"Thank you!" said {s.hero}. {s.he.capitalize()} and {s.friend} played at {s.place} '
        f"until the sun went down. They were very {s.good}.",
        f"That night, {s.hero} went to bed with {s.his} {s.obj} next to {s.him()}. "
        f"{s.he.capitalize()} was {s.good} and had sweet dreams.",
        f'The {s.animal} said, "You are a good friend." {s.hero} smiled. '
        f"{s.he.capitalize()} learned that {s.lesson}.",
    ]
    return _pick(rng, choices)


def story(rng: random.Random) -> str:
    """One story: three to seven short paragraphs."""
    s = _Story(rng)
    paragraphs = [_opening(s)]
    for _ in range(rng.randint(0, 2)):
        paragraphs.append(_detail(s))
    paragraphs.append(_middle(s))
    if rng.random() < 0.3:
        paragraphs.append(_middle(s))
    paragraphs.append(_turn(s))
    paragraphs.append(_ending(s))
    return "\n\n".join(paragraphs)


def generate_stories(documents: int, seed: int = 0) -> Iterator[str]:
    """Yield ``documents`` stories, deterministically for ``seed``."""
    if documents < 0:
        raise LMError(f"documents must be >= 0, got {documents}")
    rng = random.Random(seed)
    for _ in range(documents):
        yield story(rng)


def write_corpus(path: str | Path, documents: int, seed: int = 0) -> dict:
    """Write the demo corpus (each story followed by a line ``<|endoftext|>``) atomically.

    Returns a summary: documents, bytes, seed.
    """
    n_bytes = 0
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        for text in generate_stories(documents, seed):
            chunk = f"{text}\n{EOT}\n"
            f.write(chunk)
            n_bytes += len(chunk.encode("utf-8"))
    return {"documents": documents, "bytes": n_bytes, "seed": seed}
