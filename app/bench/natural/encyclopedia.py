"""Encyclopedia entries: a person's life or a town's portrait, several facts to a sentence and
"she", "the firm" or "there" standing for what the question names.
"""

from __future__ import annotations

from app.bench.natural.drafts import _a, _Draft, _either, _para, _s
from app.bench.natural.values import _Ctx

_CRAFTS = ("hydrologist", "textile designer", "choral composer", "marine surveyor", "bookbinder",
           "typeface designer", "soil chemist", "organ builder", "rope maker", "lens grinder")
_PROCESSES = ("dating lake sediments", "dyeing wool with lichen", "tuning bronze bells",
              "tracing underground streams", "polishing telescope mirrors",
              "binding books without glue", "forecasting spring floods")
_STUDIES = ("physics", "chemistry", "geology", "music", "mechanical engineering", "botany",
            "mathematics", "economics")
_GOODS = ("brass fittings", "weather instruments", "wool blankets", "church organs",
          "survey tripods", "paper and card", "reading glasses")
_BOOK_OPENINGS = ("Notes from", "Letters to", "A Winter at", "The Waters of", "Small Hours in",
                  "Maps of")
_BODIES = ("Observatory", "Conservatory", "Maritime Museum", "Botanic Garden", "Survey Office",
           "Glass Institute")
_COMPASS = ("northern", "southern", "eastern", "western")
_BEARINGS = ("north", "south", "east", "west", "north-east", "south-west")


def _book(c: _Ctx) -> str:
    return f"{c.pick(_BOOK_OPENINGS)} {c.names.place()}"


def _encyclopedia(c: _Ctx) -> _Draft:
    return _either(c, _encyclopedia_person, _encyclopedia_town)


def _encyclopedia_person(c: _Ctx) -> _Draft:
    who, a, b = c.names.person(), c.names.person(), c.names.person()
    town, city, uni_town, body_town = (c.names.place() for _ in range(4))
    born_day = c.day(1921, 1966)
    born = c.date(born_day, c.pick(("dmy", "mdy")))
    craft, process = c.pick(_CRAFTS), c.pick(_PROCESSES)
    method = c.invent(lambda: f"{c.names.word()} method")
    employer = c.names.company()
    company = c.invent(c.names.company)
    years_there = c.num(2, 11, "years")
    founded = c.year(born_day.year + 26, born_day.year + 40)
    staff_year = int(founded.text) + c.rng.randint(5, 12)
    staff = c.num(12, 140)
    book = c.invent(lambda: _book(c))
    book_year = c.year(int(founded.text) + 2, int(founded.text) + 15)
    pages = c.num(180, 620, "pages")
    award = f"{c.names.word()} {c.pick(('Medal', 'Prize', 'Award'))}"
    body = c.pick(_BODIES)
    topic = c.pick([p for p in _PROCESSES if p != process])
    spouse = c.names.person()
    d = _Draft(title=who.name, entities=[who.name, a.name, b.name, town, city, uni_town, body_town,
                                         employer, company.text, book.text, award, spouse.name])

    lead = c.pick((
        f"**{who.name}** (born {born} in {town}) is {_a(craft)} best known for the {method} of {process}.",
        f"{who.name}, born in {town} on {born}, is {_a(craft)} whose reputation rests on the {method} of {process}.",
        f"Born on {born} in {town}, {who.name} is {_a(craft)}, remembered above all for the {method} of {process}.",
    ))
    d.fact("born", "date", born, lead, f"When was {who.name} born?", f"What is {_s(who.name)} date of birth?")
    d.fact("birthplace", "place", c.named(town, c.names.place), lead,
           f"Where was {who.name} born?", f"Which town does {who.name} come from?")
    d.fact("method", "name", method, lead, f"Which technique made {who.name} well known?",
           f"What is {who.name} chiefly famous for?")

    if c.rng.random() < 0.5:
        s1 = (f"{who.She} studied {c.pick(_STUDIES)} at the University of {uni_town} and spent "
              f"{years_there} at {employer} before moving to {city}.")
        s2 = f"There, in {founded}, {who.she} founded {company}, a small firm making {c.pick(_GOODS)}."
    else:
        s1 = (f"After a degree in {c.pick(_STUDIES)} from the University of {uni_town}, {who.she} "
              f"worked for {years_there} at {employer}.")
        s2 = (f"In {founded} {who.she} moved to {city} and started {company} there, a workshop producing "
              f"{c.pick(_GOODS)}.")
    s3 = c.pick((f"By {staff_year} the firm had {staff} people on its payroll.",
                 f"The business grew quickly: {staff} people worked there by {staff_year}."))
    d.blocks.append(_para(lead))
    d.blocks.append(_para(s1, s2, s3))
    d.fact("tenure", "duration", years_there, s1, f"How long did {who.name} work at {employer}?",
           f"For how many years was {who.name} employed by {employer}?", skill="reference")
    d.fact("founded_firm", "company", company, s2, f"What's the firm {who.name} set up called?",
           f"Which company did {who.name} found?", skill="reference")
    d.fact("founded_year", "year", founded, s2, f"Which year did {who.name} start {company}?",
           skill="reference")
    d.fact("staff", "count", staff, s3, f"How many employees did {company} have in {staff_year}?",
           f"What was the headcount at {company} in {staff_year}?", skill="reference")

    if c.rng.random() < 0.5:
        s4 = f"{who.She} published {book} in {book_year}; the book runs to {pages} and deals with {topic}."
        s5 = f"That year {who.she} also received the {award}, the first {craft} to be given it."
    else:
        s4 = f"{book}, which {who.she} published in {book_year}, covers {topic} over {pages}."
        s5 = f"The same year brought {who.her} the {award}."
    d.fact("pages", "count", pages, s4, f"How many pages does {book} have?",
           f"What's the page count of {book}?")
    if c.rng.random() < 0.5:
        d.fact("book_year", "year", book_year, s4, f"When did {book} come out?",
               f"In which year was {book} first published?")
    else:
        d.fact("award_year", "year", book_year, f"{s4} {s5}",
               f"In which year did {who.name} win the {award}?",
               f"When was {who.name} given the {award}?", skill="reference")
    s6 = c.pick((
        f"{who.She} worked closely with {a.name} and {b.name}; the latter went on to direct the {body} in {body_town}.",
        (f"Among {who.hers} assistants were {a.name} and {b.name}, the latter of whom later ran the {body} in "
         f"{body_town}."),
    ))
    d.fact("successor", "person", c.who(b), s6,
           f"Which of {_s(who.name)} colleagues became head of {_s(body_town)} {body}?",
           f"Who among {_s(who.name)} co-workers ended up leading {_s(body_town)} {body}?",
           skill="reference", near=[a.name])
    later = c.pick(((f"{who.last} still lives in {city}, where a footbridge was named after {who.her} in "
                    f"{c.rng.randint(2001, 2022)}."),
                    f"{who.last} retired to {town} and has not published since.",
                    (f"{who.She} married {spouse.name}, {_a(c.pick(_CRAFTS))}, in {int(book_year.text) + 3}; "
                    f"the couple divide their time between {city} and {town}.")))
    boxes = c.num(12, 240)
    archive = c.pick(((f"{who.Hers} papers, some {boxes} boxes of letters and drawings, are kept by the library in "
                       f"{uni_town}."),
                      (f"The university library in {uni_town} holds {who.hers} archive: {boxes} boxes, most of them "
                      f"still uncatalogued.")))
    d.fact("archive", "count", boxes, archive, f"How many boxes make up {_s(who.name)} archive?",
           f"How large is the collection of {_s(who.name)} papers, counted in boxes?", skill="reference")
    d.blocks.append(_para(s4, s5))
    d.blocks.append(_para(s6, later, archive))
    return d


def _encyclopedia_town(c: _Ctx) -> _Draft:
    town, city, village = c.names.place(), c.names.place(), c.names.place()
    lake = c.names.word()
    district, river, peak = c.names.word(), f"{c.names.word()} River", f"Mount {c.names.word()}"
    fest = f"{c.names.word()} {c.pick(('Days', 'Fair', 'Regatta'))}"
    distance = c.num(8, 140, "km")
    people = c.num(1800, 48000, group=True)
    census = c.rng.randint(2011, 2022)
    rail = c.year(1851, 1912)
    company = c.invent(c.names.company)
    since = c.year(1890, 1985)
    staff = c.num(60, 900)
    fest_day = c.date(c.day(2020, 2020), "md")
    source = c.num(600, 2400, "m", step=10, group=True)
    july = c.num(14, 23, "°C", step=0.5, decimals=1)
    goods = c.pick(_GOODS)
    d = _Draft(title=town, entities=[town, city, village, f"Lake {lake}", river, peak, fest, company.text])

    s1 = c.pick((
        f"{town} is a town on the {c.pick(_COMPASS)} shore of Lake {lake}, {distance} {c.pick(_BEARINGS)} of {city}.",
        f"Lying {distance} {c.pick(_BEARINGS)} of {city}, {town} is a lakeside town facing Lake {lake}.",
    ))
    s2 = c.pick(((f"With {people} inhabitants at the {census} census it is the largest settlement in the "
                 f"{district} district, although it was little more than a village until the railway "
                 f"arrived in {rail}."),
                 (f"The {census} census counted {people} inhabitants, which makes it the largest place in the "
                 f"{district} district; before the railway came in {rail} it was a fishing village.")))
    d.fact("lake", "place", c.named(f"Lake {lake}", lambda: f"Lake {c.names.word()}", lake), s1,
           f"Which lake is {town} on?", f"On the shore of what lake does {town} stand?")
    d.fact("distance", "quantity", distance, s1, f"How far is {town} from {city}?",
           f"What's the distance between {city} and {town}?")
    d.fact("population", "count", people, s2, f"How big is {_s(town)} population?",
           f"How many residents does {town} have?", skill="reference")
    d.fact("railway", "year", rail, s2, f"When did the railway reach {town}?",
           f"Which year saw the first trains arrive in {town}?", skill="reference")
    s3 = c.pick((f"Its best-known employer is {company}, which has made {goods} there since {since}.",
                 (f"Since {since} {company} has produced {goods} there, and it remains the local employer "
                 f"most people have heard of.")))
    s4 = c.pick((f"The company employs about {staff} people, many of whom commute from {village}.",
                 f"Around {staff} people work for the firm, a good share of them from nearby {village}."))
    d.fact("employer", "company", company, s3, f"Which company is the big employer in {town}?",
           f"What firm gives {town} most of its jobs?", skill="reference")
    d.fact("employer_since", "year", since, s3, f"Since when has {company} been producing {goods} in {town}?",
           f"In which year did {company} begin working in {town}?")
    d.fact("workforce", "count", staff, s4, f"How many people work for {company}?",
           f"What's the size of {_s(company)} workforce?", skill="reference")
    s5 = c.pick(((f"Every year on {fest_day} the town holds the {fest}, a market and boat race that "
                 f"draws visitors from across the region."),
                 f"The {fest}, held each {fest_day}, fills the harbour with stalls and rowing crews."))
    d.fact("festival", "date", fest_day, s5, f"When does {town} celebrate the {fest}?",
           f"What date is the {fest} in {town}?")
    s6 = c.pick(((f"The {river}, which rises on {peak} at {source} above sea level, enters the lake "
                 f"just south of the harbour."),
                 (f"Its water is fed by the {river}: the stream starts high on {peak}, at {source}, and "
                 f"reaches the lake below the old harbour.")))
    d.fact("source", "quantity", source, s6, f"At what height does the {river} have its source?",
           f"How high up on {peak} does the {river} begin?")
    s7 = c.pick((f"July is the warmest month, averaging {july}.",
                 f"Summers are mild, with an average July temperature of {july}."))
    d.fact("july", "quantity", july, s7, f"How warm is a typical July in {town}?",
           f"What's the average July temperature in {town}?", skill="reference")
    island = c.names.place()
    d.entities.append(island)
    ferries, crossing = c.num(3, 14), c.num(15, 70, "minutes", step=5)
    s8 = c.pick((f"In summer a ferry leaves for {island} {ferries} times a day; the crossing takes {crossing}.",
                 (f"The ferry to {island}, {crossing} away across the water, sails {ferries} times a day between "
                 f"May and September.")))
    d.fact("ferries", "count", ferries, s8, f"How many summer sailings a day are there from {town} to {island}?",
           f"How many times a day does the summer boat go to {island}?")
    d.fact("crossing", "duration", crossing, s8, f"How long does the boat trip to {island} take?",
           f"How many minutes does it take to get across to {island}?")
    tail = [s5, s6, s7]
    c.rng.shuffle(tail)
    d.blocks += [_para(s1, s2), _para(s3, s4), _para(*tail), s8]
    return d
