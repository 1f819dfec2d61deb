"""Email threads: a late delivery chased and answered over two to four messages, with headers,
greetings and facts spread across the replies.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from app.bench.natural.drafts import _Draft, _para, _s
from app.bench.natural.names import _Person
from app.bench.natural.values import _Ctx

_SHIPPED = (("folding chairs", 40, 400), ("ceramic mugs", 200, 2400), ("shelving units", 10, 80),
            ("rolls of linen", 20, 150), ("desk lamps", 30, 300))


def _address(person: _Person, company: str) -> str:
    return f"{person.first.lower()}.{person.last.lower()}@{company.split()[0].lower()}.com"


def _header(c: _Ctx, person: _Person, company: str, when: date, subject: str) -> str:
    stamp = c.pick((f"{calendar.day_abbr[when.weekday()]}, {when.day} {calendar.month_abbr[when.month]} {when.year}",
                    when.isoformat()))
    return (f"From: {person.name} <{_address(person, company)}>  \nDate: {stamp}, {c.clock(8, 17)}  \n"
            f"Subject: {subject}")


def _email(c: _Ctx) -> _Draft:
    buyer, seller, helper = c.names.person(), c.names.person(), c.names.person()
    buyer_co, seller_co = c.names.company(), c.names.company()
    carrier = c.invent(lambda: c.names.company("Freight"))
    town, depot = c.names.place(), c.names.place()
    goods, lo, hi = c.pick(_SHIPPED)
    order = c.invent(lambda: f"PO-{c.rng.randint(10000, 99999)}")
    count = c.num(lo, hi, step=10, group=True)
    sent = c.day(2018, 2024)
    due = c.date(sent - timedelta(days=c.rng.randint(2, 9)), "md")
    opening = c.date(sent + timedelta(days=c.rng.randint(9, 30)), c.pick(("dmy", "mdy")))
    left = c.date(sent - timedelta(days=c.rng.randint(10, 20)), "md")
    arrive = c.date(sent + timedelta(days=c.rng.randint(2, 8)), c.pick(("dmy", "iso")))
    discount = c.num(5, 25, "%", space=False)
    start = c.clock(6, 9)
    yard = c.num(3, 7, "m", step=0.5, decimals=1)
    subject = c.pick((f"Order {order}: still not delivered", f"Where is {order}?", f"{order} delivery"))
    d = _Draft(title=subject, entities=[order.text, buyer.name, seller.name, helper.name, buyer_co, seller_co,
                                        carrier.text, town, depot])
    m1a = c.pick((f"Our order {order} for {count} {goods} was due on {due} and still hasn't arrived.",
                  f"We still haven't received {order} ({count} {goods}), which should have been here on {due}."))
    m1b = c.pick(((f"We open the new shop in {town} on {opening}, so the timing is getting tight. Could you find "
                   "out where it is?"),
                  (f"Our {town} branch opens on {opening} and we were counting on these for the first week. "
                  f"Can you chase it, please?")))
    d.fact("count", "count", count, m1a, f"How many {goods} are in order {order}?",
           f"What quantity did {buyer_co} order under {order}?")
    d.fact("due", "date", due, m1a, f"When was order {order} supposed to arrive?",
           f"What was the original delivery date for {order}?")
    d.fact("opening", "date", opening, m1b, f"On what date is {buyer_co} opening in {town}?",
           f"When does {_s(buyer_co)} {town} shop open its doors?")
    hello, bye = c.pick(("Hi", "Hello", "Dear")), c.pick(("Thanks,", "Best,", "Kind regards,"))
    m1 = (f"{_header(c, buyer, buyer_co, sent, subject)}\n\n{hello} {seller.first},\n\n{_para(m1a, m1b)}\n\n"
          f"{bye}\n{buyer.name}\n{buyer_co}")
    m2a = c.pick(((f"I'm sorry about this. I checked with {carrier}: the pallet left our warehouse "
                  f"in {depot} on {left}, but it was stopped at the border because a customs form was missing."),
                  (f"Apologies for the wait. According to {carrier} the pallet went out from {depot} on {left} "
                  f"and has been sitting at customs since, waiting for a form we forgot to include.")))
    m2b = c.pick((f"It has now been cleared and should reach you by {arrive}.",
                  f"The form has been sent, and they expect it with you by {arrive}."))
    m2c = c.pick((f"To make up for the trouble we will take {discount} off the invoice.",
                  f"We will also credit {discount} of the invoice for the inconvenience."))
    d.fact("carrier", "company", carrier, m2a, f"Which haulier is moving order {order}?",
           f"What transport company has {order}?", skill="reference")
    d.fact("depot", "place", c.named(depot, c.names.place), m2a, f"Where did {order} ship from?",
           f"Where did {seller_co} dispatch {order} from?", skill="reference")
    d.fact("arrive", "date", arrive, m2b, f"When is order {order} now expected?",
           f"What's the new delivery date for {order}?", skill="reference")
    d.fact("discount", "percentage", discount, m2c, f"What discount did {seller_co} offer for the late {order}?",
           f"How much is {seller_co} knocking off the bill for {order}?", skill="reference")
    reply = f"{_header(c, seller, seller_co, sent + timedelta(days=1), 'Re: ' + subject)}\n\n{hello} {buyer.first},\n\n"
    sign_off = c.pick(("Best regards,", "All the best,", "Regards,"))
    m2 = reply + _para(m2a, m2b, m2c) + f"\n\n{sign_off}\n{seller.name}\n{seller_co}"
    messages = [m1, m2]
    if c.rng.random() < 0.7:
        m3a = c.pick((f"{helper.name} will take the delivery at the back entrance.",
                      f"Please ask the driver for {helper.name}, who looks after our stockroom."))
        m3b = c.pick((f"{helper.She} is there from {start} and can be reached on the shop phone.",
                      f"{helper.She} starts at {start}, so any time after that is fine."))
        m3c = c.pick((f"The yard is only {yard} wide, so a small truck would be better.",
                      f"Our yard is just {yard} across, which rules out the big lorries."))
        d.fact("helper", "person", c.who(helper), m3a, f"Who will receive {order} in {town}?",
               f"Who should the driver bringing {order} ask for?", near=[buyer.name])
        d.fact("start", "time", start, m3b, f"From what time is {helper.name} around to sign for the pallet?",
               skill="reference")
        d.fact("yard", "quantity", yard, m3c, f"How wide is the yard at {_s(buyer_co)} {town} shop?")
        later = sent + timedelta(days=2)
        messages.append(f"{_header(c, buyer, buyer_co, later, 'Re: ' + subject)}\n\nThanks, {seller.first}, "
                        f"that still works.\n\n{_para(m3a, m3b, m3c)}\n\n{buyer.first}")
        if c.rng.random() < 0.5:
            messages.append(f"{_header(c, seller, seller_co, later, 'Re: ' + subject)}\n\nNoted, I have passed "
                            f"this on to the driver. He will ring {helper.first} about half an hour before "
                            f"he arrives.\n\n{seller.first}")
    d.blocks += ["\n\n---\n\n".join(messages)]
    return d
