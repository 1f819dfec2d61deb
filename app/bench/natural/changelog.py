"""Software changelogs: releases newest first, each a dated heading over a list of changes, so
some answers are a version number that only the heading above the line gives.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from app.bench.natural.drafts import _bullets, _Draft, _s
from app.bench.natural.values import _Ctx, _Val

_PURPOSES = ("keeps photo folders in step between two computers", "turns spreadsheets into printable invoices",
             "backs up notes to a home server", "plans watering rotas for allotments",
             "renames scanned letters by the date printed on them")
_TOOL_ENDINGS = ("sync", "note", "grid", "pack", "view", "shelf")
_LANGUAGES = ("Welsh", "Estonian", "Basque", "Icelandic", "Slovene", "Maltese")


def _changelog(c: _Ctx) -> _Draft:
    tool = c.names.word() + c.pick(_TOOL_ENDINGS)
    major, minor = c.rng.randint(1, 4), c.rng.randint(4, 9)
    versions = [f"{major}.{minor - i}.{c.pick((0, 0, 1, 2))}" for i in range(c.rng.randint(3, 4))]
    released = [c.day(2019, 2024)]
    for _ in versions[1:]:
        released.append(released[-1] - timedelta(days=c.rng.randint(20, 90)))
    style = c.pick(("iso", "dmy"))
    heading = c.pick(("## [{v}] - {d}", "## {v} ({d})", "## Version {v}, released {d}"))
    d = _Draft(title=f"{tool} changelog", entities=[tool])
    d.blocks.append(c.pick((f"{tool} {c.pick(_PURPOSES)}. Notable changes are listed below, newest first.",
                            (f"What changed in {tool}, the little program that {c.pick(_PURPOSES)}. "
                            "Newest release at the top."),
                            (f"Release notes for {tool}, a hobby project that {c.pick(_PURPOSES)}. Bug reports "
                            "are welcome on the project page."))))
    if c.rng.random() < 0.4:
        d.blocks.append("## Unreleased\n\n" + _bullets([c.pick(("Work on a dark theme has started.",
                                                                   "The settings window is being redrawn."))]))
    maintainer, since = c.names.person(), c.year(2009, released[-1].year - 1)
    d.entities.append(maintainer.name)
    if c.rng.random() < 0.5:
        credit = f"{maintainer.name} has looked after the project since {since}."
        since_asks = (f"Since when has {maintainer.name} been looking after {tool}?",
                      f"In which year did {maintainer.name} take charge of {tool}?")
    else:
        credit = f"Maintained by {maintainer.name}; the first public version came out in {since}."
        since_asks = (f"When did {tool} first come out publicly?", f"Which year saw {_s(tool)} first release?")
    d.blocks[0] += " " + credit
    d.fact("maintainer", "person", c.who(maintainer), credit, f"Who maintains {tool}?",
           f"Who is in charge of {_s(tool)} development?")
    d.fact("since", "year", since, credit, *since_asks)
    makers = _changelog_items(c, tool)
    c.rng.shuffle(makers)
    per_release = [c.rng.randint(2, 3) for _ in versions]
    cuts = [sum(per_release[:i]) for i in range(len(versions) + 1)]
    whens = [c.date(day, style) for day in released]
    for i, (version, when) in enumerate(zip(versions, whens)):
        head = heading.format(v=version, d=when)
        d.fact(f"released:{style}", "date", when, head, f"When did {tool} {version} come out?",
               f"What was the release date of version {version} of {tool}?",
               near=[w.text for w in whens if w is not when])
        items = [make(version) for make in makers[cuts[i]:cuts[i + 1]]] or [("Small fixes to the help text.", [])]
        lines = [text for text, _ in items]
        if i == 1 and c.rng.random() < 0.6:
            earlier = versions[i + 1] if i + 1 < len(versions) else "the last release"
            lines.append(f"Thanks to everyone who sent log files after {earlier}.")
        block = head + "\n\n" + _bullets(lines)
        for line, facts in items:
            span = block[:block.index(line) + len(line)]
            for slot, kind, value, asks, whole in facts:
                near = [v for v in versions if v != value.text] if kind == "version" else []
                d.fact(slot, kind, value, span if whole else line, *asks, skill="list", near=near)
        d.blocks.append(block)
    return d


_Item = tuple[str, list[tuple[str, str, _Val, tuple[str, ...], bool]]]


def _changelog_items(c: _Ctx, tool: str) -> list[Callable[[str], _Item]]:
    """Release notes, each a function of the version it lands in; a fact marked ``True`` needs
    the release heading above its line as evidence (the question asks which version)."""
    flag = c.pick(("skip-old", "since", "max-age", "fresh-only"))
    days = c.num(7, 90, "days")
    size = c.num(2, 16, "GB")
    handle = c.names.handle()
    new_every, old_every = c.num(5, 30, "minutes", step=5), c.rng.randint(35, 60)
    cache, faster = c.num(32, 512, "MB", step=32), c.num(10, 60, "%", space=False)
    translator, language = c.names.person(), c.pick(_LANGUAGES)
    limit = c.num(10, 60, step=5)

    def version_val(v: str) -> _Val:
        major = v.split(".")[0]
        return c.named(v, lambda: f"{major}.{c.rng.randint(0, 12)}.{c.rng.randint(0, 3)}")

    def flag_note(v: str) -> _Item:
        text = c.pick((f"Added a `--{flag}` option that leaves out files older than {days}.",
                       f"New: `--{flag}` ignores anything left untouched for {days}."))
        asks = (f"Which {tool} release introduced --{flag}?", f"In what version of {tool} did --{flag} appear?")
        return text, [("flag_version", "version", version_val(v), asks, True),
                      ("flag_days", "duration", days,
                       (f"From what age are files ignored by {_s(tool)} --{flag} switch?",), False)]

    def crash_note(v: str) -> _Item:
        text = c.pick((f"Fixed a crash when importing archives larger than {size} (reported by @{handle}).",
                       (f"Importing an archive over {size} no longer brings the program down; thanks @{handle} "
                       "for the report.")))
        who = c.named(handle, c.names.handle, "@" + handle)
        asks = (f"Who reported the {tool} crash with big archives?",
                f"Which user told the {tool} developers about the import crash?")
        return text, [("reporter", "username", who, asks, False),
                      ("crash_size", "quantity", size,
                       (f"Above what size did archives make {tool} crash before {v}?",), False)]

    def interval_note(v: str) -> _Item:
        text = c.pick((f"The sync interval now defaults to {new_every} instead of {old_every}.",
                       f"Default sync interval changed from {old_every} to {new_every}."))
        asks = (f"How often does {tool} sync by default since {v}?",
                f"What is {_s(tool)} default time between syncs in {v}?")
        return text, [("interval", "duration", new_every, asks, False)]

    def cache_note(v: str) -> _Item:
        text = c.pick(((f"Thumbnails now live in a {cache} cache, which cut start-up time by about {faster} on "
                        "our test laptop."),
                       f"Start-up is roughly {faster} quicker, mostly thanks to a {cache} thumbnail cache."))
        return text, [("cache", "quantity", cache, (f"How large is the thumbnail cache in {tool} {v}?",), False),
                      ("faster", "percentage", faster, (f"By how much did {tool} {v} speed up start-up?",), False)]

    def translation_note(v: str) -> _Item:
        text = c.pick((f"New {language} translation, contributed by {translator.name}.",
                       f"{translator.name} translated the whole interface into {language}."))
        return text, [("translator", "person", c.who(translator), (f"Who translated {tool} into {language}?",), False)]

    def limit_note(v: str) -> _Item:
        text = c.pick((f"You can now keep up to {limit} projects open at once.",
                       f"Raised the cap on open projects to {limit}."))
        return text, [("limit", "count", limit, (f"How many projects can be open together in {tool} {v}?",), False),
                      ("limit_version", "version", version_val(v),
                       (f"Which version of {tool} raised the cap on open projects?",), True)]

    memory_old, memory_new = c.rng.randint(400, 900), c.num(90, 380, "MB", step=10)
    port = c.invent(lambda: str(c.rng.randint(5000, 9900)))
    command = c.pick(("import-all", "scan", "rebuild", "tidy"))

    def memory_note(v: str) -> _Item:
        text = f"Scanning a big folder now needs about {memory_new} of memory, down from {memory_old} MB."
        asks = (f"How much memory does {tool} {v} use to scan a large folder?",)
        return text, [("memory", "quantity", memory_new, asks, False)]

    def port_note(v: str) -> _Item:
        text = c.pick((f"The built-in web view listens on port {port} unless told otherwise.",
                       f"Moved the web view to port {port}, because the old one clashed with printer software."))
        return text, [("port", "code", port, (f"Which port does the {tool} web view use by default?",), False)]

    def removal_note(v: str) -> _Item:
        return f"Removed the old `{command}` command, which had been deprecated for two releases.", []

    def docs_note(v: str) -> _Item:
        return c.pick(("The manual has a new chapter on backups.",
                       "Error messages now say which file caused them.")), []

    return [flag_note, crash_note, interval_note, cache_note, translation_note, limit_note, memory_note,
            port_note, removal_note, docs_note]
