"""Recipes: a bake or a pot dish handed down by someone, with ingredient and method lists and
notes, quantities in grams, millilitres and minutes.
"""

from __future__ import annotations

from app.bench.natural.drafts import _bullets, _Draft, _mentioning, _numbered, _para, _s
from app.bench.natural.names import _Person
from app.bench.natural.values import _Ctx

_BAKES = (("cardamom buns", "buns", "Shape into buns and brush them with a little milk"),
          ("plum cake", "slices", "Spread the dough in a lined tin and press halved plums into it"),
          ("rye crackers", "crackers", "Roll the dough out thinly and cut it into squares"),
          ("onion tart", "slices", "Line a tart tin with the dough and fill it with fried onions"),
          ("honey biscuits", "biscuits", "Roll the dough into small balls and flatten them on a tray"))
_POTS = (("barley soup", "bowls", "pearl barley"), ("lentil stew", "portions", "red lentils"),
         ("fish chowder", "bowls", "white fish"), ("bean hotpot", "portions", "dried beans"))
_SPICES = ("ground cardamom", "cinnamon", "caraway seeds", "ground ginger", "aniseed")
_SIDES = ("rye bread", "boiled potatoes", "pickled beetroot", "a spoon of sour cream")


def _recipe(c: _Ctx) -> _Draft:
    owner = c.names.person()
    cafe_val, town = c.invent(lambda: c.names.word() + c.pick((" Café", " House", " Corner"))), c.names.place()
    cafe = cafe_val.text
    bake = c.rng.random() < 0.55
    dish, units, how = c.pick(_BAKES if bake else _POTS)
    makes = c.num(6, 24) if bake else c.num(4, 10)
    keeps = c.num(2, 7, "days")
    closed = c.year(1968, 2012)
    d = _Draft(title=c.pick((f"{_s(owner.first)} {dish}", f"{dish.capitalize()} ({owner.name})",
                             f"{dish.capitalize()}, from {_s(owner.first)} recipe box")),
               entities=[owner.name, cafe, town])
    ref = f"{_s(owner.first)} {dish}"
    d.entities.append(ref)
    s1 = c.pick((f"This recipe comes from {owner.name}.", f"I got this one from {owner.name} years ago.",
                 f"{owner.name} wrote this out for me on the back of an envelope."))
    s2 = c.pick((f"{owner.She} made it every week at {cafe}, the café {owner.she} ran in {town} until {closed}.",
                 f"For years {owner.she} served it at {cafe} in {town}, until the place closed in {closed}."))
    s3 = c.pick((f"The quantities below make {makes} {units}, which keep for {keeps} in a tin or the fridge.",
                 f"It makes {makes} {units}; they keep for {keeps} if you hide them well.")) if bake else c.pick((
        f"The quantities below make {makes} {units}, and it keeps for {keeps} in the fridge.",
        f"There is enough for {makes} {units}; leftovers keep for {keeps} in the fridge and taste better for it."))
    d.fact("cafe", "place", cafe_val, s2,
           f"What was {_s(owner.name)} café called?", f"Where did {owner.name} cook for a living?",
           skill="reference")
    d.fact("closed", "year", closed, s2, f"Until which year did {owner.name} run {cafe}?",
           f"When did {owner.name} stop cooking at {cafe}?", skill="reference")
    d.fact("makes", "count", makes, s3, f"How many {units} does the recipe for {ref} give?",
           f"How many {units} do you get from {_s(owner.first)} recipe?", skill="reference")
    d.fact("keeps", "duration", keeps, s3, f"How long will {ref} stay good?",
           f"For how many days can you store {ref}?", skill="reference")
    d.blocks.append(_para(s1, s2, s3))
    items, steps = _bake_body(c, d, how, ref) if bake else _pot_body(c, d, how, ref)
    d.blocks += ["## Ingredients", _bullets(items), "## Method", _numbered(steps)]
    _recipe_notes(c, d, owner, ref, bake)
    return d


def _recipe_notes(c: _Ctx, d: _Draft, owner: _Person, ref: str, bake: bool) -> None:
    freeze = c.num(2, 6, "months")
    longer = c.num(5, 25, "minutes", step=5)
    brand = c.invent(lambda: f"{c.names.word()} Mill")
    what = "flour" if bake else "barley and stock cubes"
    notes = [c.pick((f"They freeze well for up to {freeze}." if bake else f"It freezes well for up to {freeze}.",
                     f"Frozen, it is still good after {freeze}.")),
             f"{owner.first} would only buy {what} from {brand}, and said you could taste the difference.",
             c.pick((f"For a double batch, add {longer} to the {'baking' if bake else 'simmering'} time.",
                     f"Doubling it works, but allow an extra {longer} on the heat."))]
    c.rng.shuffle(notes)
    d.fact("freeze", "duration", freeze, _mentioning(notes, freeze),
           f"How long will {ref} last in the freezer?", skill="list")
    d.fact("brand", "company", brand, _mentioning(notes, brand),
           f"Where did {owner.name} insist on buying {what}?", skill="list")
    d.fact("longer", "duration", longer, _mentioning(notes, longer),
           f"How much extra cooking time does a double batch of {ref} need?", skill="list")
    d.blocks += [c.pick(("## Notes", "## Tips")), _bullets(notes)]


def _bake_body(c: _Ctx, d: _Draft, shaping: str, ref: str) -> tuple[list[str], list[str]]:
    """A bake's ingredients and method steps, their facts noted on ``d``."""
    flour, butter = c.num(400, 750, "g", step=25), c.num(50, 200, "g", step=10)
    sugar, milk = c.num(40, 180, "g", step=10), c.num(150, 400, "ml", step=25)
    eggs, spice = c.rng.randint(1, 3), c.pick(_SPICES)
    spoon = c.num(1, 3, "tsp")
    warm, rest = c.num(30, 40, "°C"), c.num(20, 90, "minutes", step=5)
    oven, bake = c.num(170, 230, "°C", step=5), c.num(8, 45, "minutes")
    the_eggs = "the eggs" if eggs > 1 else "the egg"
    items = [f"{butter} butter, soft", f"{sugar} sugar", f"{milk} milk",
             f"{eggs} egg{'s' if eggs > 1 else ''}", f"{spoon} {spice}"]
    c.rng.shuffle(items)
    items.insert(0, f"{flour} wheat flour")
    d.fact("milk", "quantity", milk, f"{milk} milk", f"How much milk goes into {ref}?",
           f"What amount of milk do you need for {ref}?", skill="list")
    d.fact("butter", "quantity", butter, f"{butter} butter", f"How much butter is in {ref}?",
           skill="list")
    d.fact("flour", "quantity", flour, f"{flour} wheat flour", f"What weight of flour goes into {ref}?",
           skill="list")
    steps = [
        c.pick((f"Warm the milk to about {warm}, then whisk in {the_eggs} and the {spice}.",
                f"Heat the milk gently, to no more than {warm}, and beat in {the_eggs} and {spice}.")),
        c.pick(((f"Work in the flour, sugar and butter until the dough is smooth, then cover it and let it rest "
                 f"for {rest}."),
                f"Add the dry ingredients and the butter; knead for a few minutes and leave it covered for {rest}.")),
        c.pick((f"{shaping}, then bake at {oven} for {bake}, until golden.",
                f"{shaping}. Bake for {bake} at {oven}, turning the tray halfway through.")),
        c.pick(("Cool on a rack before you put them away.", "Let them cool completely, or they go soggy in the tin.")),
    ]
    d.fact("warm", "quantity", warm, steps[0], f"How warm should the milk be for {ref}?", skill="list")
    d.fact("rest", "duration", rest, steps[1], f"How long does the dough for {ref} rest?",
           f"For how many minutes should {ref} dough sit before shaping?", skill="list")
    d.fact("oven", "quantity", oven, steps[2], f"What oven temperature is right for {ref}?",
           f"How hot should the oven be for {ref}?", skill="list")
    d.fact("bake", "duration", bake, steps[2], f"What baking time does {ref} call for?",
           f"How many minutes in the oven for {ref}?", skill="list")
    return items, steps


def _pot_body(c: _Ctx, d: _Draft, main: str, ref: str) -> tuple[list[str], list[str]]:
    """A pot dish's ingredients and method steps, their facts noted on ``d``."""
    base, stock = c.num(200, 600, "g", step=25), c.num(800, 2000, "ml", step=100)
    onions, carrots = c.rng.randint(1, 3), c.num(150, 400, "g", step=25)
    butter, salt = c.num(20, 60, "g", step=5), c.num(1, 2, "tsp")
    fry, simmer = c.num(5, 15, "minutes"), c.num(25, 90, "minutes", step=5)
    side = c.pick(_SIDES)
    items = [f"{base} {main}", f"{stock} stock", f"{onions} onion{'s' if onions > 1 else ''}, chopped",
             f"{carrots} carrots, diced", f"{butter} butter", f"{salt} salt"]
    d.fact("base", "quantity", base, items[0], f"How much {main} goes into {ref}?", skill="list")
    d.fact("stock", "quantity", stock, items[1], f"How much stock does {ref} take?",
           f"What volume of stock is needed for {ref}?", skill="list")
    d.fact("carrots", "quantity", carrots, items[3], f"What weight of carrots goes into {ref}?", skill="list")
    steps = [
        c.pick((f"Melt the butter in a heavy pot and soften the onions for {fry} without letting them brown.",
                f"Soften the onions in the butter over a low heat, about {fry}; they should not colour.")),
        c.pick((f"Add the {main}, carrots and stock, bring to the boil and simmer for {simmer}, stirring now and then.",
                f"Tip in everything else, and once it bubbles turn the heat down and let it cook for {simmer}.")),
        c.pick((f"Season to taste and serve with {side}.", f"Salt it last, not before, and eat it with {side}.")),
    ]
    d.fact("fry", "duration", fry, steps[0], f"How long are the onions for {ref} softened?", skill="list")
    d.fact("simmer", "duration", simmer, steps[1], f"How long does {ref} simmer?",
           f"For how many minutes should {ref} cook once it boils?", skill="list")
    return items, steps
