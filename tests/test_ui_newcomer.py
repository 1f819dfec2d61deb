"""What a newcomer meets in the desktop app, in a real headless chromium: type drawn in one font,
sources that say why they are listed, plain words, buttons that are usable only when they can act,
conversations told apart, and a layout that holds at 1024 px."""

from __future__ import annotations

import pytest

from app.chat.service import citations_for
from tests.helpers import wait_for
from tests.browser import App, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HARBOUR = ("# Quell harbour\n\nThe harbour master of Quell is **Ines Varo**.\n\n"
           "## Ferries\n\nThe ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
TIDES = "# Tides\n\nSpring tides in Quell reach four metres in March.\n"

# Marks each visible element drawn bold whose own text is plain letters (symbols such as ▼ are
# drawn from another font on purpose), so the page's fonts can be asked about it over CDP.
MARK_BOLD = """() => {
  document.querySelectorAll('[data-bold-probe]').forEach(el => el.removeAttribute('data-bold-probe'));
  let n = 0;
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].filter(c => c.nodeType === 3).map(c => c.textContent).join('').trim();
    if (!/^[A-Za-z][A-Za-z .,'-]{2,}$/.test(own) || !el.offsetParent) continue;
    if (parseInt(getComputedStyle(el).fontWeight) < 600) continue;
    el.setAttribute('data-bold-probe', String(n++));
  }
  return n;
}"""

# The documents table's headers whose words are drawn on more than one line.
HEADERS_WRAPPED = """() => [...document.querySelectorAll('#engram-documents thead th')].filter(th => {
  const walk = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  for (let t = walk.nextNode(); t; t = walk.nextNode()) {
    if (!t.textContent.trim()) continue;
    const r = document.createRange(); r.selectNodeContents(t);
    if (new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1) return true;
  }
  return false;
}).map(th => th.innerText)"""


def bold_font_families(page) -> dict[str, list[str]]:
    """The font families chromium really drew each bold label with (not the CSS stack it asked
    for): a face missing letters shows up as a second family."""
    assert page.evaluate(MARK_BOLD) > 0
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    drawn = {}
    for node in cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": "[data-bold-probe]"})["nodeIds"]:
        text = cdp.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"][:80]
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        drawn[text] = sorted({f["familyName"] for f in fonts})
    cdp.detach()
    return drawn


def test_bold_labels_use_one_font_on_every_tab(page, embedder, llama) -> None:
    app = App(embedder, llama)
    try:
        page.set_viewport_size({"width": 1024, "height": 900})
        page.goto(app.url)
        page.locator("#engram-chat").wait_for()
        for tab in ("Chat", "Library", "Playbook", "Weights", "Memory", "Models", "Settings"):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(500)
            page.evaluate("document.fonts.ready.then(() => true)")
            mixed = {label: families for label, families in bold_font_families(page).items()
                     if len(families) != 1}
            assert not mixed, f"{tab}: bold text drawn in several fonts: {mixed}"
    finally:
        app.close()


def test_sources_conversations_buttons_and_words(page, embedder, llama, tmp_path) -> None:
    from playwright.sync_api import expect

    app = App(embedder, llama)
    drop = app.engram.settings.effective_drop_folder
    (drop / "harbour.md").write_text(HARBOUR)
    (drop / "tides.md").write_text(TIDES)
    engram = app.engram
    wait_for(lambda: engram.status().indexed >= 2, timeout=60)
    # Two conversations asking the same thing; the answer cites the harbour file only.
    question = "Who is the harbour master of Quell?"
    answer = "The harbour master of Quell is Ines Varo."
    passages = engram.search(question, k=2)
    assert {p.path.rsplit("/", 1)[-1] for p in passages} == {"harbour.md", "tides.md"}
    for _ in range(2):
        conversation = engram.conversations.create(question)
        engram.conversations.add_question(conversation.id, question)
        engram.conversations.add_answer(conversation.id, answer, citations_for(passages, answer),
                                        {"backend": "llamacpp", "model": "embedded"})
    try:
        page.set_viewport_size({"width": 1024, "height": 900})
        page.goto(app.url)

        # The model by its name; conversations told apart by number and date.
        expect(page.locator("#engram-chat").locator("xpath=..")).to_be_visible()
        expect(page.get_by_text("Answers come from SmolLM2-135M (built in)")).to_be_visible()
        labels = page.locator("#engram-conversations label")
        expect(labels).to_have_count(2)
        texts = labels.all_inner_texts()
        assert len(set(texts)) == 2 and all(question in t and " · 20" in t for t in texts), texts

        # Sources: the cited file quoted in plain words, the other behind "consulted, not cited".
        labels.first.click()
        shown = page.locator("#engram-chat [data-testid='bot']").last
        sources = shown.locator(".engram-sources")
        expect(sources.locator("ol").first).to_contain_text("harbour.md")
        expect(sources.locator("q").first).to_have_text("The harbour master of Quell is Ines Varo.")
        consulted = sources.locator("details")
        expect(consulted.locator("summary")).to_have_text("Consulted, not cited (1)")
        expect(consulted.locator("a")).to_be_hidden()
        consulted.locator("summary").click()
        expect(consulted.locator("a")).to_have_text("tides.md")
        assert "**" not in sources.inner_text() and "#" not in sources.inner_text()
        shot(page, "ui-sources.png")

        # Library: nothing to remove or page through yet, so those buttons cannot be pressed;
        # no header of the documents table wraps at 1024 px.
        page.get_by_role("tab", name="Library").click()
        expect(page.locator("#engram-documents [role=row]", has_text="tides.md")).to_contain_text("learned")
        for name in ("Remove…", "◀ Previous", "Next ▶", "Re-index", "Forget"):
            expect(page.get_by_role("button", name=name)).to_be_disabled()
        wrapped = page.evaluate(HEADERS_WRAPPED)
        assert wrapped == [], f"headers wrapped at 1024 px: {wrapped}"
        extra = tmp_path / "extra"
        extra.mkdir()
        page.locator("#engram-folder-path textarea").fill(str(extra))
        page.get_by_role("button", name="Watch folder").click()
        page.locator("#engram-remove-folder input").click()
        page.get_by_role("option", name=str(extra)).click()
        expect(page.get_by_role("button", name="Remove…")).to_be_enabled()

        # Playbook: no contradiction between the name and an empty playbook; edit and delete
        # wait for a picked bullet; the feature is explained where it is switched on.
        page.get_by_role("tab", name="Playbook").click()
        expect(page.get_by_text("Empty: it is saved with its first bullet.")).to_be_visible()
        expect(page.get_by_text("No playbook named")).to_have_count(0)
        expect(page.get_by_text("turns your ratings and corrections into short rules")).to_be_visible()
        expect(page.get_by_role("button", name="Save edit")).to_be_disabled()
        expect(page.get_by_role("button", name="Delete bullet…")).to_be_disabled()
        page.locator("#engram-bullet-text textarea").fill("Name the person who holds a post.")
        page.get_by_role("button", name="Add as a new bullet").click()
        bullets = page.locator("#engram-bullets")
        expect(bullets).to_contain_text("Name the person")
        bullets.locator("[role=row]", has_text="Name the person").get_by_role("gridcell").nth(2).click()
        expect(page.get_by_role("button", name="Save edit")).to_be_enabled()
        expect(page.get_by_role("button", name="Delete bullet…")).to_be_enabled()

        # Models: the Ollama notice says its reason once.
        page.get_by_role("tab", name="Models").click()
        expect(page.locator("#engram-models [role=row]", has_text="SmolLM2-135M")).to_contain_text("llama.cpp")
        page.get_by_text("Ollama server").click()
        notice = page.get_by_text("Cannot reach Ollama")
        expect(notice).to_have_count(1)
        assert notice.inner_text().count("Cannot reach Ollama") == 1
        assert "is not reachable" not in notice.inner_text()
    finally:
        app.close()
