"""Diary entries: a day out told in the first person, with a dated title, clock times, prices
and "she" or "it" standing for what the question names.
"""

from __future__ import annotations

import calendar

from app.bench.natural.drafts import _Draft, _para, _s
from app.bench.natural.names import _Person
from app.bench.natural.values import _Ctx, _date_text

_FOODS = ("fish soup", "a cheese pie", "mushroom pancakes", "smoked herring", "a lentil salad", "dumplings")
_REPAIRS = ("hearing aids", "ship radios", "church clocks", "electric bikes", "pianos", "tram doors")


def _diary(c: _Ctx) -> _Draft:
    friend, sister = c.names.person(), c.names.person()
    sister = _Person(sister.first, friend.last, sister.pronouns)
    town, lighthouse = c.names.place(), f"{c.names.word()} lighthouse"
    company = c.invent(c.names.company)
    restaurant = f"{c.names.word()}{c.pick((' Inn', ' Kitchen', ' Grill'))}"
    today = c.day(2012, 2024)
    title = c.pick((f"{calendar.day_name[today.weekday()]}, {_date_text(today, 'dmy')}", _date_text(today, "iso"),
                    f"{calendar.day_name[today.weekday()]} {_date_text(today, 'md')}"))
    train, home = c.clock(6, 10), c.clock(19, 23)
    temp = c.num(-4, 19, "°C")
    walk, pay = c.num(10, 45, "minutes", step=5), c.num(140, 420, "crowns", step=5)
    bill, owed = c.num(220, 980, "crowns", step=10), c.num(60, 380, "crowns", step=2)
    km, built = c.num(3, 14, "km"), c.year(1822, 1931)
    d = _Draft(title=title, entities=[friend.name, sister.name, town, lighthouse, company.text, restaurant])
    p1a = c.pick(((f"Took the {train} train to {town} with {friend.name}, who had finally handed in "
                   f"{friend.hers} thesis."),
                  f"{friend.name} and I caught the {train} to {town}; {friend.she} was in a good mood for once."))
    p1b = c.pick(((f"It was {temp} and drizzling when we arrived, and the walk from the station took {walk} because "
                  f"{friend.she} insisted on stopping at every bakery."),
                  (f"The thermometer outside the station said {temp}; {friend.she} wanted to walk anyway, and it took "
                  f"us {walk} to reach the harbour.")))
    d.fact("train", "time", train, p1a, f"What time did the train to {town} leave?",
           f"Which departure did the diarist and {friend.name} take to {town}?")
    d.fact("temp", "quantity", temp, p1b, f"How cold or warm was it when the diarist reached {town}?",
           f"What was the temperature on arrival in {town}?", skill="reference")
    d.fact("walk", "duration", walk, p1b, f"How long was the walk from {town} station?",
           f"How many minutes did it take to get from the station into {town}?", skill="reference")
    p2a = c.pick((f"{_s(friend.first)} sister {sister.first} met us at the market.",
                  f"At the market we ran into {sister.first}, {_s(friend.first)} younger sister."))
    p2b = c.pick(((f"{sister.She} has a new job at {company}, where {sister.she} repairs {c.pick(_REPAIRS)}, and "
                  f"{sister.she} says the pay is {pay} an hour, more than {friend.first} has ever earned."),
                  (f"These days {sister.she} works for {company}, fixing {c.pick(_REPAIRS)} for {pay} an hour, "
                  f"which {friend.first} pretended not to envy.")))
    d.fact("employer", "company", company, p2b, f"Who does {sister.name} work for now?",
           f"Which company employs {sister.name}?", skill="reference")
    d.fact("pay", "money", pay, p2b, f"What is {_s(sister.name)} hourly wage?",
           f"How much does {sister.name} earn per hour?", skill="reference")
    p3 = c.pick(((f"We had lunch at {restaurant} ({c.pick(_FOODS)} for me, {c.pick(_FOODS)} for the others) and the "
                 f"bill came to {bill}, which {sister.first} paid before anyone could argue."),
                 (f"Lunch was at {restaurant}; {sister.first} paid the {bill} bill before anyone could stop "
                  f"{sister.her}.")))
    d.fact("bill", "money", bill, p3, f"How much did lunch at {restaurant} cost?",
           f"What did the meal at {restaurant} come to?")
    p4a = c.pick((f"In the afternoon we walked out along the cliffs to the {lighthouse}, {km} each way.",
                  f"After that we followed the cliff path to the {lighthouse}, which is {km} out of town."))
    p4b = c.pick((f"It was built in {built}, according to the sign, and it is still lit every night.",
                  f"The sign says it went up in {built}; the keeper's cottage is a café now."))
    d.fact("km", "quantity", km, p4a, f"How far is it from {town} to the {lighthouse}?",
           f"What distance did they walk to reach the {lighthouse}?")
    d.fact("built", "year", built, p4b, f"When was the {lighthouse} built?",
           f"In which year did the {lighthouse} go up?", skill="reference")
    p5 = c.pick((f"Home by {home}. Must pay {friend.first} back the {owed} for the tickets.",
                 f"Back at {home}, tired. I still owe {friend.first} {owed} for the tickets."))
    d.fact("owed", "money", owed, p5, f"How much does the diarist owe {friend.name}?",
           f"What sum does the writer need to give back to {friend.name}?")
    paragraphs = [_para(p1a, p1b), _para(p2a, p2b), p3, _para(p4a, p4b)]
    if c.rng.random() < 0.4:
        paragraphs[2], paragraphs[3] = paragraphs[3], paragraphs[2]
    d.blocks += [*paragraphs, p5]
    return d
