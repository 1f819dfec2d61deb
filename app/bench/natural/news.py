"""News items: a repaired bridge reopening or a factory opening, with a dateline, quoted
officials, money and distances, and answers set mid-sentence.
"""

from __future__ import annotations

import calendar
from datetime import timedelta

from app.bench.natural.drafts import _Draft, _either, _para, _s
from app.bench.natural.values import _Ctx, _date_text


def _news(c: _Ctx) -> _Draft:
    return _either(c, _news_bridge, _news_factory)


def _news_bridge(c: _Ctx) -> _Draft:
    town, detour_town = c.names.place(), c.names.place()
    bridge, river = f"{c.names.word()} Bridge", f"{c.names.word()} River"
    chair = c.names.person()
    contractor = c.named(c.names.company(c.pick(("Construction", "Engineering", "Metalworks"))), c.names.company)
    months, late = c.num(5, 22, "months"), c.num(3, 40, "days")
    cost = c.num(4, 90, "million crowns", step=0.5, decimals=1)
    span, limit = c.num(60, 340, "metres", step=5), c.num(18, 44, "tonnes")
    old_limit = c.rng.randint(5, 16)
    traffic, detour = c.num(1200, 9800, step=50, group=True), c.num(6, 38, "km")
    opened = c.day(2015, 2023)
    closed = opened - timedelta(days=int(months.text.split()[0]) * 30)
    weekday = calendar.day_name[opened.weekday()]
    d = _Draft(title=c.pick((f"{bridge} reopens after repairs", f"Traffic returns to {bridge}",
                             f"{_s(town)} {bridge} open again, {late} late")),
               entities=[town, detour_town, bridge, river, chair.name, contractor.text])
    dateline = f"{town}, {_date_text(opened, 'md')} —"
    s1 = c.pick((
        (f"{dateline} The {bridge} over the {river} reopened to traffic on {weekday}, {months} after it "
        f"was closed for repairs and {late} later than the council had promised."),
        (f"{dateline} After {months} behind fences, the {bridge} across the {river} carried its first cars "
        f"again on {weekday}, {late} behind the schedule the council had promised."),
    ))
    d.fact("closed_for", "duration", months, s1, f"How long was the {bridge} in {town} shut?",
           f"For how many months could nobody drive over the {bridge}?")
    d.fact("late_by", "duration", late, s1, f"By how many days did the {bridge} miss its reopening date?",
           f"How far behind schedule was the reopening of the {bridge}?")
    s2 = c.pick((f"The work, carried out by {contractor}, cost {cost}, about a third more than the original estimate.",
                 (f"{contractor}, which won the contract in {closed.year}, billed the town {cost} for the job, "
                 f"roughly a third above the estimate.")))
    d.fact("contractor", "company", contractor, s2, f"Which company repaired the {bridge}?",
           f"Who was the contractor on the {bridge} job?")
    d.fact("cost", "money", cost, s2, f"What did the repairs to the {bridge} cost?",
           f"How much money went into fixing the {bridge}?")
    s3 = c.pick(((f"“We found far more corrosion than the surveys suggested,” said {chair.name}, who chairs the "
                 f"council's transport committee."),
                 (f"{chair.name}, chair of the council's transport committee, said the engineers had found "
                 f"“far more rust than anyone expected”.")))
    s4 = c.pick(((f"{chair.She} added that the span, {span} from bank to bank, can now take vehicles of up to "
                 f"{limit}, against {old_limit} before the closure."),
                 (f"Thanks to the new steelwork, {chair.she} said, the span ({span} from end to end) now takes "
                 f"vehicles of up to {limit}, where the old limit was {old_limit}.")))
    d.fact("chair", "person", c.who(chair), s3, f"Who heads the transport committee in {town}?",
           f"Which councillor in {town} leads on transport?")
    d.fact("span", "quantity", span, s4, f"What length, in metres, is the {bridge}?",
           f"What length is the {bridge} from one bank to the other?", skill="reference")
    d.fact("limit", "quantity", limit, s4, f"What's the weight limit on the {bridge} now?",
           f"How heavy a vehicle may cross the repaired {bridge}?", skill="reference")
    shut = f"{calendar.month_name[closed.month]} {closed.year}"
    s5 = c.pick((f"Before it shut in {shut}, the bridge carried about {traffic} vehicles a day.",
                 f"About {traffic} vehicles a day used the bridge until it shut in {shut}."))
    s6 = c.pick(((f"While it was closed, drivers faced a detour of {detour} through {detour_town}, which "
                 f"shopkeepers there say was good for business."),
                 (f"Drivers meanwhile had to go the long way round through {detour_town}, a detour of {detour}; "
                 f"traders there admit they will miss the extra custom.")))
    d.fact("traffic", "count", traffic, s5, f"How many vehicles crossed the {bridge} daily before the closure?",
           f"What was the daily traffic over the {bridge} before the works?", skill="reference")
    d.fact("detour", "quantity", detour, s6, f"How long a diversion did drivers have while the {bridge} was shut?",
           f"How many extra kilometres did the {bridge} closure add for drivers?", skill="reference")
    d.fact("detour_town", "place", c.named(detour_town, c.names.place), s6,
           f"Through what town were drivers sent while the {bridge} was out of use?", skill="reference")
    built = c.year(1880, 1975)
    mayor = c.names.person()
    ceremony = c.date(opened + timedelta(days=c.rng.randint(5, 40)), "md")
    d.entities.append(mayor.name)
    s7 = c.pick((f"The bridge first opened in {built}, and this was the biggest repair in its history.",
                 f"Built in {built}, it had never before been closed for more than a weekend."))
    s8 = c.pick((f"A ceremony with the mayor, {mayor.name}, is planned for {ceremony}, weather permitting.",
                 f"{mayor.name}, the mayor, will mark the reopening with a brass band on {ceremony}."))
    d.fact("built", "year", built, s7, f"When was the {bridge} originally built?",
           f"In which year did the {bridge} first carry traffic?", skill="reference")
    d.fact("mayor", "person", c.who(mayor), s8, f"Who is {_s(town)} mayor?",
           f"Who holds the office of mayor in {town}?")
    d.fact("ceremony", "date", ceremony, s8, f"On what date will {town} celebrate the {bridge} reopening?")
    if c.rng.random() < 0.5:
        d.blocks += [s1, _para(s2, s3, s4), _para(s5, s6), _para(s7, s8)]
    else:
        d.blocks += [_para(s1, s7, s5), _para(s3, s4), _para(s2, s6), s8]
    return d


_PRODUCTS_MADE = (("kettle", "kettles"), ("bicycle frame", "bicycle frames"), ("heat pump", "heat pumps"),
                  ("window", "windows"), ("ferry seat", "ferry seats"), ("wooden toy", "wooden toys"))


def _news_factory(c: _Ctx) -> _Draft:
    company = c.names.company(c.pick(("Manufacturing", "Industries", "Group")))
    town, home_town = c.names.place(), c.names.place()
    boss = c.names.person()
    one, many = c.pick(_PRODUCTS_MADE)
    opened = c.day(2016, 2024)
    open_val = c.date(opened, c.pick(("dmy", "mdy")))
    jobs, more = c.num(40, 380), c.num(15, 120)
    mill = c.year(1979, 2009)
    cost = c.num(35, 420, "million crowns")
    area = c.num(4000, 26000, "square metres", step=500, group=True)
    output = c.num(300, 9000, step=100, group=True)
    sites = c.num(3, 14)
    start = c.date(opened + timedelta(days=c.rng.randint(10, 60)), "md")
    d = _Draft(title=c.pick((f"{company} opens {one} plant in {town}", f"New {one} factory for {town}",
                             f"{town} gains {jobs} jobs as {company} opens plant")),
               entities=[company, town, home_town, boss.name])
    s1 = c.pick((
        (f"{company} opened its new {one} factory on the edge of {town} on {open_val}, bringing {jobs} "
        f"jobs to a district that lost its last sawmill in {mill}."),
        (f"On {open_val} {company} cut the ribbon on a {one} factory outside {town}; the plant employs "
        f"{jobs} people in an area whose last sawmill closed in {mill}."),
    ))
    d.fact("opened", "date", open_val, s1, f"When did {_s(company)} plant in {town} open?",
           f"On what date did {company} start its {town} site?")
    d.fact("jobs", "count", jobs, s1, f"How many jobs does the {company} factory bring to {town}?",
           f"How many people will the new {company} plant employ?")
    d.fact("sawmill", "year", mill, s1, f"When did the last sawmill around {town} shut down?")
    if c.rng.random() < 0.5:
        s2 = (f"The plant, which cost {cost} to build, covers {area} and will turn out about {output} "
              f"{many} a week once it runs at full speed.")
        on_cost = on_size = s2
    else:
        on_cost = f"Building it cost {cost}."
        on_size = (f"The hall covers {area}, and at full speed its lines are meant to produce around {output} "
                   f"{many} every week.")
        s2 = _para(on_cost, on_size)
    d.fact("cost", "money", cost, on_cost, f"How much did {company} spend on building its {town} plant?",
           f"What was the construction bill for the {company} site in {town}?", skill="reference")
    d.fact("area", "quantity", area, on_size, f"How big is {_s(company)} {town} factory?",
           f"What floor area does the {company} plant in {town} have?", skill="reference")
    d.fact("output", "count", output, on_size, f"How many {many} will {company} make in {town} each week?",
           f"What weekly output is {company} planning in {town}?", skill="reference")
    s3 = c.pick((f"Its managing director, {boss.name}, is a native of {home_town}.",
                 f"The firm is run by {boss.name}, originally from {home_town}."))
    s4 = c.pick(((f"{boss.She} told reporters that the company had looked at {sites} possible sites before "
                  f"choosing {town}."),
                 f"According to {boss.her}, the firm weighed up {sites} places before it picked {town}."))
    d.fact("boss", "person", c.who(boss), s3, f"Who runs {company}?",
           f"Who's the managing director at {company}?", skill="reference")
    d.fact("sites", "count", sites, s4, f"How many locations did {company} consider before settling on {town}?",
           skill="reference")
    s5 = c.pick(((f"Production starts on {start}, and the company expects to hire another {more} people within "
                  "two years."),
                 (f"The first {many} should leave the line on {start}; {more} further staff are to be taken on over "
                 f"the next two years.")))
    d.fact("start", "date", start, s5, f"When does production begin at {company} in {town}?",
           f"On what day do the {town} production lines of {company} start?", skill="reference")
    d.fact("more", "count", more, s5, f"How many more workers does {company} plan to take on in {town}?",
           skill="reference")
    objector, street = c.names.person(), f"{c.names.word()} {c.pick(('Road', 'Lane', 'Street'))}"
    trucks, names_signed = c.num(20, 160, step=5), c.num(80, 1400, step=10, group=True)
    d.entities += [objector.name, street]
    s6 = c.pick(((f"Not everyone is pleased: residents of {street} say lorries will pass their houses {trucks} "
                  "times a day."),
                 f"People living on {street} expect about {trucks} lorry trips a day past their windows."))
    s7 = c.pick(((f"{objector.name}, who lives opposite the gates, has collected {names_signed} signatures "
                  "against a night shift."),
                 f"A petition against night work, started by {objector.name}, has {names_signed} signatures so far."))
    d.fact("trucks", "count", trucks, s6, f"How many lorries a day are expected on {street}?",
           f"How much daily lorry traffic will {street} get from the new plant?")
    d.fact("objector", "person", c.who(objector), s7, f"Who organised the signatures against night work at {company}?",
           f"Who is leading the protest against a night shift at the {town} plant?")
    d.fact("petition", "count", names_signed, s7, f"How many people have signed against night shifts at {company}?")
    d.blocks += [s1, _para(s2, s3, s4), _para(s6, s7), s5]
    return d
