"""Product manuals: a specification table, numbered set-up steps, care and warranty terms and a
troubleshooting list for an invented appliance.
"""

from __future__ import annotations

from app.bench.natural.drafts import _a, _bullets, _Draft, _mentioning, _numbered, _para, _s
from app.bench.natural.values import _Ctx

# kind -> battery powered?, spec rows (label, unit, lo, hi, step, decimals)
_APPLIANCES: dict[str, tuple[bool, tuple[tuple[str, str, float, float, float, int], ...]]] = {
    "cordless drill": (True, (("Weight", "kg", 0.9, 2.6, 0.1, 1), ("Battery capacity", "mAh", 1500, 5000, 100, 0),
                              ("Maximum torque", "Nm", 20, 90, 1, 0), ("Charging time", "minutes", 30, 120, 5, 0),
                              ("Chuck size", "mm", 10, 13, 1, 0))),
    "coffee grinder": (False, (("Weight", "kg", 1.1, 4.8, 0.1, 1), ("Bean hopper", "g", 150, 450, 10, 0),
                               ("Motor power", "W", 120, 480, 10, 0), ("Noise level", "dB", 58, 82, 1, 0),
                               ("Cable length", "cm", 80, 180, 10, 0))),
    "dehumidifier": (False, (("Weight", "kg", 6, 18, 0.5, 1), ("Water tank", "ml", 1500, 4500, 100, 0),
                             ("Power draw", "W", 180, 650, 10, 0), ("Noise level", "dB", 34, 52, 1, 0),
                             ("Lowest working temperature", "°C", 1, 8, 1, 0))),
    "handheld GPS unit": (True, (("Weight", "g", 140, 320, 5, 0), ("Battery capacity", "mAh", 1800, 4200, 100, 0),
                                 ("Map storage", "MB", 256, 4096, 128, 0), ("Screen", "cm", 5, 9, 0.5, 1),
                                 ("Waterproof to", "m", 1, 10, 1, 0))),
    "label printer": (True, (("Weight", "g", 380, 900, 10, 0), ("Battery capacity", "mAh", 1200, 2600, 100, 0),
                             ("Print speed", "mm/s", 20, 60, 5, 0), ("Memory", "MB", 16, 256, 16, 0),
                             ("Tape width", "mm", 9, 24, 3, 0))),
}
_SPEC_ASKS: dict[str, tuple[str, ...]] = {
    "Weight": ("How heavy is the {m}?", "What does the {m} weigh?"),
    "Battery capacity": ("What's the battery capacity of the {m}?", "How big is the battery in the {m}?"),
    "Maximum torque": ("How much torque can the {m} deliver at most?",),
    "Charging time": ("How long does the {m} take to charge fully?",),
    "Chuck size": ("What's the largest bit the {m}'s chuck will hold?",),
    "Bean hopper": ("How much coffee fits in the {m} at once?", "What capacity does the {m}'s hopper have?"),
    "Motor power": ("How powerful is the motor of the {m}?",),
    "Noise level": ("How loud is the {m}?", "How much noise does the {m} make?"),
    "Cable length": ("What length of power lead does the {m} have?",),
    "Water tank": ("How much water can the {m} collect before it needs emptying?",),
    "Power draw": ("How many watts does the {m} use?",),
    "Lowest working temperature": ("Below what temperature does the {m} stop working?",),
    "Map storage": ("How much room for maps does the {m} have?",),
    "Screen": ("How large is the display on the {m}?",),
    "Waterproof to": ("How deep can the {m} go under water?",),
    "Print speed": ("How fast does the {m} print?",),
    "Memory": ("How much memory is built into the {m}?",),
    "Tape width": ("What's the widest tape the {m} takes?",),
}
_LIGHT_COLOURS = ("green", "white", "blue", "amber")
_PARTS = ("air filter", "dust tray", "vent grille", "rubber seal", "front cover")


def _manual(c: _Ctx) -> _Draft:
    kind = c.pick(tuple(_APPLIANCES))
    battery, rows = _APPLIANCES[kind]
    maker = c.names.company(c.pick(("Electric", "Systems", "Devices", "Tools")))
    model = f"{c.names.word()} {c.pick('KRTVX')}{c.rng.randint(2, 90)}"
    app = c.invent(lambda: f"{c.names.word()} {c.pick(('Home', 'Link', 'Go'))}")
    d = _Draft(title=c.pick((f"{model} user guide", f"Getting started with the {model}",
                             f"{maker} {model}: quick start")),
               entities=[model, maker, app.text])
    intro = c.pick(((f"Thank you for choosing the {model}, a {kind} from {maker}. Please read this guide before "
                    f"first use and keep it somewhere handy."),
                    (f"The {model} is a {kind} designed and tested by {maker}. This guide explains set-up, "
                    f"cleaning and the warranty terms.")))
    d.blocks.append(intro)
    table = ["| Specification | Value |", "|---|---|"]
    for label, unit, lo, hi, step, decimals in c.rng.sample(rows, 4):
        value = c.num(lo, hi, unit, step=step, decimals=decimals, group=True)
        row = f"| {label} | {value} |"
        table.append(row)
        d.fact(f"spec:{kind}:{label}", "quantity", value, row,
               *(a.format(m=model) for a in _SPEC_ASKS[label]), skill="table")
    d.blocks += ["## Specifications", "\n".join(table)]
    seconds = c.num(2, 8, "seconds")
    hours = c.num(2, 9, "hours")
    colour = c.named(c.pick(_LIGHT_COLOURS), lambda: c.pick(_LIGHT_COLOURS + ("red", "orange")))
    if battery:
        power = (f"Charge the battery for at least {hours} before you use it for the first time; the "
                 f"status light turns {colour} when charging is complete.")
        d.fact("charge", "duration", hours, power, f"How long should a new {model} be charged before its first job?",
               skill="list")
        d.fact("light", "colour", colour, power,
               f"What colour does the {_s(model)} light show when the battery is done charging?",
               skill="list")
    else:
        power = (f"If the {kind} has been in a cold car or shed, let it stand indoors for {hours} before "
                 f"plugging it in.")
        d.fact("stand", "duration", hours, power,
               f"How long should a cold {model} sit indoors before you switch it on?",
               skill="list")
    steps = [
        c.pick((f"Unpack everything and keep the box: you will need it if the {kind} ever goes back for service.",
                "Remove all packing tape and check that the box holds everything on the list printed on the lid.")),
        power,
        c.pick((f"Hold the round button down for {seconds} until you hear a short beep.",
                f"To switch on, press and keep pressing the side button; after {seconds} the display lights up.")),
        c.pick((f"Install the {app} app on your phone and pair it with the {kind} by following the on-screen steps.",
                f"Pairing with a phone goes through the {app} app, which walks you through it.")),
    ]
    d.fact("button", "duration", seconds, steps[2], f"How long do you press the {_s(model)} power key to turn it on?",
           skill="list")
    d.fact("app", "product", app, steps[3], f"Which phone app does the {model} work with?",
           f"What app do you need to connect the {model} to a phone?", skill="list")
    d.blocks += [c.pick(("## First use", "## Setting up")), _numbered(steps)]
    part, weeks = c.pick(_PARTS), c.num(2, 12, "weeks")
    years, days = c.num(2, 6, "years"), c.num(14, 90, "days")
    care = c.pick((f"Clean the {part} every {weeks} with a dry cloth; never rinse it under the tap.",
                   f"Every {weeks} or so, take out the {part} and brush off the dust."))
    warranty = c.pick(((f"{maker} guarantees the {model} for {years} from the date of purchase, provided you register "
                       f"it within {days} on the {maker.split()[0]} website."),
                       (f"The guarantee runs for {years} after purchase, but only if the {kind} is registered "
                       f"within {days}; keep your receipt with this guide.")))
    d.fact("care", "duration", weeks, care, f"How often does the {part} on the {model} need cleaning?")
    d.fact("warranty", "duration", years, warranty, f"What warranty period does the {model} come with?",
           f"For how many years does {maker} cover the {model}?")
    d.fact("register", "duration", days, warranty, f"How soon after buying {_a(model)} must it be registered?",
           f"What's the deadline for registering the {model} to keep the guarantee?")
    d.blocks += ["## Care and warranty", _para(care, warranty)]
    if c.rng.random() < 0.6:
        _troubleshooting(c, d, model, colour.text)
    return d


def _troubleshooting(c: _Ctx, d: _Draft, model: str, charged: str) -> None:
    warning = c.pick([x for x in ("red", "orange", "violet") if x != charged])
    part = c.named(c.pick(_PARTS), lambda: c.pick(_PARTS + ("battery latch", "water sensor")))
    items = [f"Light flashes {warning}: the {part} is not seated properly.",
             "Strange smell during the first hours of use: this is normal and soon fades.",
             c.pick(("Nothing happens when switched on: check the plug or battery first.",
                     "Display stays dark: leave it charging for an hour, then try again."))]
    c.rng.shuffle(items)
    d.fact("warning", "part", part, _mentioning(items, warning),
           f"What is wrong when the {_s(model)} light blinks {warning}?",
           f"Which part should you check if the {model} shows a flashing {warning} light?", skill="list")
    d.blocks += [c.pick(("## Troubleshooting", "## If something goes wrong")), _bullets(items)]
