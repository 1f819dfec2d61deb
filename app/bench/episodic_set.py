"""Generated fictional conversations for ``engram bench episodic``: people stating facts over many
turns, then questions that refer back to one of them.

Written apart from the compressors and knowing nothing of stretches: a conversation is a list of
turns (the person's, each answered by a short acknowledgement), some stating a fact about an
invented person, others small talk; each fact comes with a later question that refers back to
it, tagged with the index of the turn that stated it. Names are built from syllables, so the
model cannot know them; a person is mentioned more than once in a conversation, with different
facts, so a question must find the right mention, not just the name.
"""

from __future__ import annotations

import random

from pydantic import BaseModel

SYLLABLES = ("ta vi sh or ren by kel mar ul fe dra no qui sa lo be th an ir go me ve ca ru zi pol "
             "dun ha ess wy ot ber ly nim").split()
RELATIONS = ("sister", "brother", "cousin", "neighbour", "colleague", "aunt", "uncle", "friend",
             "landlord", "dentist", "manager", "flatmate")
ANIMALS = ("parrot", "tortoise", "ferret", "greyhound", "rabbit", "cat", "goat", "iguana")
JOBS = ("glassblower", "ferry pilot", "tax auditor", "beekeeper", "piano tuner", "surveyor",
        "translator", "baker", "locksmith", "radiographer")
INSTRUMENTS = ("cello", "banjo", "oboe", "accordion", "harp", "trombone", "sitar", "clarinet")
COLOURS = ("green", "mustard yellow", "silver", "dark blue", "orange", "white", "burgundy", "grey")
VEHICLES = ("van", "estate car", "motorbike", "camper", "pickup", "scooter")
FOODS = ("peanuts", "shellfish", "sesame", "kiwi fruit", "mustard", "celery", "oats", "lupin")
MONTHS = ("January February March April May June July August September October November "
          "December").split()
SMALL_TALK = (
    "The weather has been grey all week.", "I slept badly last night.", "I need more coffee today.",
    "Work was quiet this morning.", "I finally cleaned the kitchen.", "The train was late again.",
    "I watched a documentary about glaciers yesterday.", "My back hurts a little.",
    "I'm trying to drink more water.", "It's been a long day.", "I went for a walk at lunch.",
    "The neighbours are painting their fence.")
ACKS = ("Noted.", "Thanks for telling me.", "Got it, I'll remember that.", "Understood.",
        "Good to know.", "I'll keep that in mind.")


class Turn(BaseModel):
    role: str
    content: str


class Question(BaseModel):
    """A later question referring back to the fact stated at turn ``turn`` of its conversation."""

    text: str
    turn: int
    answer: str


class Conversation(BaseModel):
    turns: list[Turn]
    questions: list[Question]


class EpisodicSet(BaseModel):
    train: list[Conversation]
    held_out: list[Conversation]


def invented_name(rng: random.Random) -> str:
    first = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
    last = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
    return f"{first} {last}"


def fact(rng: random.Random, name: str, relation: str) -> tuple[str, str, str]:
    """(statement, question referring back, answer) about one invented person."""
    first = name.split()[0]
    kind = rng.randrange(8)
    if kind == 0:
        animal, pet = rng.choice(ANIMALS), invented_name(rng).split()[0]
        return (f"My {relation} {name} has a {animal} called {pet}.",
                f"What did I tell you {first}'s {animal} is called?", pet)
    if kind == 1:
        job, town = rng.choice(JOBS), invented_name(rng).split()[1]
        return (f"{name}, my {relation}, works as a {job} in {town}.",
                f"What did I say {first} does for a living?", job)
    if kind == 2:
        town, month = invented_name(rng).split()[1], rng.choice(MONTHS)
        return (f"My {relation} {name} is moving to {town} in {month}.",
                f"Where did I mention {first} is moving to?", town)
    if kind == 3:
        instrument, years = rng.choice(INSTRUMENTS), rng.randint(2, 15)
        return (f"{name} has been learning the {instrument} for {years} years.",
                f"Which instrument did I say my {relation} {first} plays?", instrument)
    if kind == 4:
        colour, vehicle = rng.choice(COLOURS), rng.choice(VEHICLES)
        return (f"My {relation} {first} just bought a {colour} {vehicle}.",
                f"What colour was the {vehicle} I told you {first} bought?", colour)
    if kind == 5:
        day, month = rng.randint(1, 28), rng.choice(MONTHS)
        return (f"{name}'s birthday is on {month} {day}.",
                f"When did I say {first}'s birthday is?", f"{month} {day}")
    if kind == 6:
        food = rng.choice(FOODS)
        return (f"Remember that {first}, my {relation}, is allergic to {food}.",
                f"What was {first} allergic to, as I told you?", food)
    code = f"{rng.randint(1000, 9999)}"
    return (f"The gate code at {name}'s house is {code}.",
            f"What gate code did I give you for {first}'s place?", code)


def conversation(rng: random.Random, turns: int, people: int, fact_share: float) -> Conversation:
    """``turns`` turns (half the person's, half acknowledgements) about ``people`` invented people."""
    cast = [(invented_name(rng), rng.choice(RELATIONS)) for _ in range(people)]
    out: list[Turn] = []
    questions: list[Question] = []
    for _ in range(turns // 2):
        if rng.random() < fact_share:
            name, relation = rng.choice(cast)
            statement, question, answer = fact(rng, name, relation)
            questions.append(Question(text=question, turn=len(out), answer=answer))
            out.append(Turn(role="user", content=statement))
            out.append(Turn(role="assistant", content=rng.choice(ACKS)))
        else:
            out.append(Turn(role="user", content=rng.choice(SMALL_TALK)))
            out.append(Turn(role="assistant", content=rng.choice(("I hope it gets better.", "I see.",
                                                                  "That sounds like a lot.", "Okay."))))
    return Conversation(turns=out, questions=questions)


SIZES = {"tiny": (4, 2, 16), "small": (48, 8, 24), "default": (120, 16, 32)}
"""Conversations for training, held out, and turns per conversation."""


def generate(size: str = "small", seed: int = 0) -> EpisodicSet:
    """Training and held-out conversations (seeded; held out from a separate stream)."""
    train_n, held_n, turns = SIZES[size]
    train_rng, held_rng = random.Random(f"train-{seed}"), random.Random(f"held-{seed}")
    return EpisodicSet(train=[conversation(train_rng, turns, 3, 0.7) for _ in range(train_n)],
                       held_out=[conversation(held_rng, turns, 3, 0.7) for _ in range(held_n)])
