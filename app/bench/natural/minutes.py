"""Meeting minutes: a sales team's weekly meeting or a housing cooperative's general meeting,
with a header, numbered agenda items and action lists.
"""

from __future__ import annotations

import calendar
from datetime import timedelta

from app.bench.natural.drafts import _bullets, _Draft, _either, _mentioning, _numbered, _s
from app.bench.natural.values import _Ctx

_ROOMS = ("Birch room", "second-floor kitchen", "Harbour room", "library annex", "Room 4B")
_FAIR_KINDS = ("design", "garden", "hardware", "book", "food")


def _minutes(c: _Ctx) -> _Draft:
    return _either(c, _minutes_team, _minutes_coop)


def _minutes_team(c: _Ctx) -> _Draft:
    org = c.names.company()
    chair, b, cc, dd, leaver = (c.names.person() for _ in range(5))
    client, supplier, town = c.names.company(), c.names.company(), c.names.place()
    met = c.day(2017, 2024)
    met_val = c.date(met, "iso")
    spent, budget = c.num(41000, 98000, "crowns", step=500, group=True), c.rng.randint(100, 160) * 1000
    move = c.date(met + timedelta(days=c.rng.randint(20, 70)), "dmy")
    fair = f"{c.names.word()} {c.pick(_FAIR_KINDS)} fair"
    stand, fair_days = c.num(6000, 24000, "crowns", step=250, group=True), c.rng.randint(2, 5)
    van = c.num(6, 20, "m³")
    nxt = c.clock(8, 16)
    d = _Draft(title=c.pick((f"{org}: minutes of the sales team meeting", f"Minutes, {org} weekly sync")),
               entities=[org, chair.name, b.name, cc.name, dd.name, leaver.name, client, supplier, town, fair])
    if c.rng.random() < 0.5:
        header = (f"**Date:** {met_val}  \n**Place:** {c.pick(_ROOMS)}, {town}  \n"
                  f"**Present:** {chair.name} (chair), {b.name}, {cc.name}  \n**Apologies:** {dd.name}")
        date_line, present_line = f"**Date:** {met_val}", f"**Present:** {chair.name} (chair)"
    else:
        date_line = f"Held {met_val} in the {c.pick(_ROOMS)}, {town}."
        present_line = f"Present: {chair.name} (in the chair), {cc.name}, {b.name}; {dd.name} sent apologies."
        header = f"{date_line}  \n{present_line}"
    d.fact("met", "date", met_val, date_line, f"When did the {org} sales team hold this meeting?",
           f"Which day did {_s(org)} team get together?")
    d.fact("chair", "person", c.who(chair), present_line, f"Who chaired the {org} meeting?",
           f"Who was in the chair when {_s(org)} team met?", near=[b.name])
    budget_text = f"{budget:,} crowns"
    i1 = c.pick(((f"**Figures.** {b.name} reported spending of {spent} against a budget of {budget_text} "
                 f"for the half-year; {b.she} expects the gap to close once {supplier} sends its invoice."),
                 (f"**Figures.** Spending so far stands at {spent} of a half-year budget of {budget_text}, "
                 f"{b.name} said, and {supplier} has still not invoiced for the spring order.")))
    i2 = c.pick((
        (f"**{client} account.** Since {leaver.name} left in {calendar.month_name[met.month]}, the account "
        f"has passed to {cc.name}, who will visit the buyer there next month."),
        (f"**{client} account.** With {leaver.name} gone, {cc.name} now looks after {client} and will "
        f"introduce {cc.her}self to their buyer next month."),
    ))
    i3 = c.pick(((f"**Office move.** The team moves to the new floor on {move}; {dd.first} will hire a van, and "
                 f"the old rooms must be empty by the following Monday."),
                 (f"**Office move.** Moving day is {move}. {dd.first} is arranging transport, and the old rooms "
                 f"have to be cleared by the Monday after.")))
    i4 = c.pick(((f"**Trade fair.** {chair.first} proposed sending three people to the {fair}. The stand costs "
                 f"{stand} for {fair_days} days. Agreed."),
                 (f"**Trade fair.** Agreed to take a stand at the {fair} ({fair_days} days, {stand}); "
                 f"{chair.first} will choose who goes.")))
    items = [i1, i2, i3, i4]
    c.rng.shuffle(items)
    d.fact("spent", "money", spent, i1, f"How much had {org} spent by the time of the meeting, according to {b.name}?",
           f"What spending figure did {b.name} give?", skill="list")
    d.fact("account", "person", c.who(cc), i2, f"Who took over the {client} account after {leaver.name} left?",
           f"Who is {_s(org)} contact for {client} now?", skill="list", near=[leaver.name])
    d.fact("move", "date", move, i3, f"When does {_s(org)} team change offices?",
           f"What's the date of {_s(org)} office move?", skill="list")
    d.fact("stand", "money", stand, i4, f"How much will a stand at the {fair} cost {org}?",
           f"What does {_s(org)} stand at the {fair} cost?", skill="list")
    actions = [f"{cc.first}: send the revised quote to {client} by Friday.",
               f"{dd.first}: book the {van} van for the move.",
               f"{b.first}: chase {supplier} about the missing invoice."]
    c.rng.shuffle(actions)
    d.fact("van", "quantity", van, _mentioning(actions, van), f"How big a van is {dd.name} supposed to book for {org}?",
           f"What size of van did {org} ask {dd.name} to hire?", skill="list")
    weekday = c.pick(calendar.day_name[:5])
    closing = c.pick((f"Next meeting: same room, {weekday} at {nxt}.",
                      f"We meet again on {weekday}, starting {nxt}."))
    d.fact("next", "time", nxt, closing, f"At what time will {_s(org)} team meet next?",
           f"When does the following {org} meeting start?")
    d.blocks += [header, _numbered(items), "**Actions**\n\n" + _bullets(actions), closing]
    return d


def _minutes_coop(c: _Ctx) -> _Draft:
    coop = f"{c.names.word()} {c.pick(('Housing Cooperative', 'Tenants Association', 'Co-op'))}"
    chair, sec, treasurer, gardener = (c.names.person() for _ in range(4))
    roofer = c.named(c.names.company(c.pick(("Roofing", "Building"))), c.names.company)
    held = c.day(2016, 2024)
    held_val = c.date(held, c.pick(("dmy", "iso")))
    homes = c.num(14, 62)
    price = c.num(180000, 640000, "crowns", step=5000, group=True)
    guarantee = c.num(5, 15, "years")
    old_fee = c.rng.randint(18, 34) * 100
    new_fee = c.num(old_fee + 100, old_fee + 500, "crowns", step=50, group=True)
    heating = c.num(8, 31, "%", space=False)
    garden = c.date(held + timedelta(days=c.rng.randint(14, 50)), "md")
    compost = c.num(200, 900, "kg", step=50)
    machine_age = c.num(9, 21, "years")
    nxt = c.clock(17, 20)
    d = _Draft(title=c.pick((f"{coop}: minutes of the general meeting", f"Minutes — {coop} annual meeting")),
               entities=[coop, chair.name, sec.name, treasurer.name, gardener.name, roofer.text])
    s1 = c.pick(((f"Held on {held_val} in the laundry room, where {homes} households were represented; "
                 f"{chair.name} chaired and {sec.name} took the minutes."),
                 (f"{chair.name} opened the meeting in the bicycle cellar on {held_val}. {homes} households "
                 f"were represented, and {sec.name} wrote these minutes.")))
    d.fact("held", "date", held_val, s1, f"When did the members of {coop} meet?",
           f"What was the date of the {coop} general meeting?")
    d.fact("homes", "count", homes, s1, f"How many households took part in the {coop} meeting?",
           f"How many homes had someone at the {coop} meeting?")
    d.fact("chair", "person", c.who(chair), s1, f"Who led the {coop} meeting?",
           f"Who ran the meeting of {coop}?", near=[sec.name])
    i1 = c.pick(((f"**Roof.** Three quotes came in for the north roof. The board recommended {roofer}, whose price "
                 f"of {price} was not the lowest but included a guarantee of {guarantee}; agreed."),
                 (f"**Roof.** Of the three quotes for the north roof the board chose {roofer}: at {price} it "
                 f"was not the cheapest, but its work comes with a guarantee of {guarantee}. Agreed.")))
    month = calendar.month_name[c.rng.randint(1, 12)]
    i2 = c.pick(((f"**Monthly fee.** From {month} the fee goes from {old_fee:,} to {new_fee} per flat. "
                 f"{treasurer.name} explained that heating cost {heating} more last winter."),
                 (f"**Monthly fee.** Because heating cost {heating} more last winter, {treasurer.name} "
                 f"proposed raising the fee per flat from {old_fee:,} to {new_fee} in {month}; carried.")))
    i3 = c.pick(((f"**Garden day.** The spring garden day is on {garden}. {gardener.name} will order {compost} of "
                 f"compost; anyone who can lend a wheelbarrow should tell {gardener.her}."),
                 (f"**Garden day.** {gardener.name} is ordering {compost} of compost for the garden day on "
                 f"{garden}, and asks for the loan of a wheelbarrow or two.")))
    pronoun = c.rng.random() < 0.6
    i4 = ("**Laundry.** The second washing machine has broken down again. "
          f"It is {machine_age} old, so the board will get quotes for a replacement rather than repair it."
          if pronoun else
          f"**Laundry.** The older washing machine, now {machine_age} old, has failed again; "
          "the board will look at replacing it.")
    items = [i1, i2, i3, i4]
    c.rng.shuffle(items)
    d.fact("roofer", "company", roofer, i1, f"Which firm will fix the roof for {coop}?",
           f"Who got the roofing job at {coop}?", skill="list")
    d.fact("roof_price", "money", price, i1, f"What will the roof repair cost {coop}?",
           f"How much is {coop} paying for the north roof?", skill="list")
    d.fact("guarantee", "duration", guarantee, i1, f"For how many years is {_s(coop)} roof work guaranteed?",
           skill="list")
    d.fact("fee", "money", new_fee, i2, f"What will the monthly fee at {coop} be after the rise?",
           f"How much will a flat in {coop} pay each month once the increase applies?", skill="list")
    d.fact("heating", "percentage", heating, i2, f"By how much did heating costs go up at {coop}?",
           skill="list")
    d.fact("garden", "date", garden, i3, f"When is the garden day at {coop}?",
           f"On what date will {coop} hold its spring garden day?", skill="list")
    d.fact("compost", "quantity", compost, i3, f"How much compost is {gardener.name} ordering?",
           f"What quantity of compost will {coop} get?", skill="list")
    d.fact("machine_age", "duration", machine_age, i4[i4.index("It is"):] if pronoun else i4,
           f"How old is the washing machine that keeps failing at {coop}?", skill="reference" if pronoun else "")
    closing = c.pick((f"The meeting closed at {nxt}.", f"Closed {nxt}, with thanks to the cake bakers."))
    d.fact("closed", "time", nxt, closing, f"What time did the {coop} meeting end?")
    d.blocks += [s1, _numbered(items), closing]
    return d
