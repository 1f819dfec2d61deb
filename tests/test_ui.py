"""The desktop app in a real headless chromium, over the real store, index, embeddings and model.

The flow a person goes through: watch a folder, drop a file in it, see it learned, ask, watch the
answer stream with a citation, open the cited passage, give a thumbs-down and a correction,
restart Engram and find the conversation again. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser import App, no_error_badge, shot, usable
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FERRY = "The ferry to Oskel Isle leaves at 06:40 from pier nine. Tickets cost 14 crowns.\n"
QUESTION = "When does the ferry to Oskel Isle leave?"

# Records the length of the answer's text each time the chat changes, to see it stream.
WATCH_ANSWER = """() => {
  window.engramLengths = [];
  const chat = document.querySelector('#engram-chat');
  new MutationObserver(() => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    if (bots.length) window.engramLengths.push(bots[bots.length - 1].innerText.length);
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def test_watch_drop_learn_ask_cite_correct_restart(page, embedder, llama, tmp_path) -> None:
    from playwright.sync_api import expect

    folder = tmp_path / "notes"
    folder.mkdir()
    app = App(embedder, llama)
    try:
        page.goto(app.url)
        expect(page.locator("#engram-chat")).to_contain_text("Ask about your documents")

        # Library: the empty state says what to do; watch a folder; drop a file; see it learned.
        page.get_by_role("tab", name="Library").click()
        expect(page.locator("#engram-library-empty")).to_contain_text(str(app.engram.settings.effective_drop_folder))
        page.locator("#engram-folder-path textarea").fill(str(folder))
        page.get_by_role("button", name="Watch folder").click()
        expect(page.locator(".engram-folders")).to_contain_text(str(folder))
        (folder / "ferry.txt").write_text(FERRY)
        row = page.locator("#engram-documents [role=row]", has_text="ferry.txt")
        expect(row).to_contain_text("learned")
        expect(page.locator("#engram-progress")).to_contain_text("Up to date")
        shot(page, "ui-library.png")

        # Chat: the answer streams in, with a numbered citation linking to the file.
        page.get_by_role("tab", name="Chat").click()
        page.evaluate(WATCH_ANSWER)
        page.locator("#engram-question textarea").fill(QUESTION)
        page.get_by_role("button", name="Ask").click()
        answer = page.locator("#engram-chat [data-testid='bot']").last
        expect(answer.locator(".engram-meta")).to_contain_text("Answered by SmolLM2-135M (built in) · llama.cpp", timeout=90_000)
        assert "06:40" in answer.inner_text()
        lengths = page.evaluate("window.engramLengths")
        assert len(set(lengths)) >= 4, lengths  # it grew piece by piece, not all at once
        link = answer.locator(".engram-sources a").first
        expect(link).to_have_text("ferry.txt")
        expect(answer.locator(".engram-sources li").first).to_contain_text("line 1")
        expect(page.locator("#engram-conversations")).to_contain_text(QUESTION)
        expect(answer.locator(".engram-decision")).to_have_text("memory: rag")
        page.locator("#engram-decisions").get_by_text("How the last answers were made").click()
        decision = page.locator("#engram-decisions-table tbody tr").first
        expect(decision).to_contain_text(QUESTION)
        expect(decision).to_contain_text("llama.cpp")

        # The citation opens the stored text with the quoted passage highlighted.
        with page.context.expect_page() as opened:
            link.click()
        source = opened.value
        source.wait_for_load_state()
        expect(source.locator("mark#cited strong")).to_contain_text("06:40")
        expect(source.locator("header")).to_contain_text(str(folder / "ferry.txt"))
        source.close()

        # Thumbs-down, then a correction.
        answer.hover()
        answer_row = page.locator("#engram-chat .bot-row").last
        page.locator("#engram-chat button[aria-label='Dislike']").last.click()
        page.get_by_label("What should the answer have been?").fill("At 06:40, from pier nine.")
        page.get_by_role("button", name="Save correction").click()
        expect(answer_row).to_contain_text("Your correction: At 06:40, from pier nine.")
        stored = wait_for(lambda: [m for m in app.engram.conversations.messages(1)
                                   if m.role == "assistant" and m.correction], timeout=10)
        assert stored[0].feedback == "down"
        shot(page, "ui-chat.png")
    finally:
        app.close()

    # Restart on the same data: the conversation, its sources, rating and correction are back.
    app = App(embedder, llama)
    try:
        page.goto(app.url)
        page.locator("#engram-conversations label", has_text=QUESTION).click()
        answer = page.locator("#engram-chat [data-testid='bot']").last
        expect(answer).to_contain_text("06:40")
        expect(answer.locator(".engram-sources a").first).to_have_text("ferry.txt")
        expect(answer).to_contain_text("Your correction: At 06:40, from pier nine.")
        expect(page.locator("#engram-chat [data-testid='user']").first).to_contain_text(QUESTION)
        shot(page, "ui-history-after-restart.png")

        # Deleting the open conversation takes it (and what sleep learned from it) away.
        page.get_by_role("button", name="Delete conversation").click()
        expect(page.locator("#engram-conversations")).not_to_contain_text(QUESTION)
        assert wait_for(lambda: app.engram.conversation_list() == [], timeout=10)
    finally:
        app.close()
    assert page.external == []  # the app fetched nothing from outside this computer


def test_library_actions_and_readable_errors(page, embedder, llama, tmp_path) -> None:
    from playwright.sync_api import expect

    from app.runtimes.ollama_runtime import OllamaRuntime

    app = App(embedder, llama)
    drop = app.engram.settings.effective_drop_folder
    shutil.copyfile(Path(__file__), drop / "not-a-document.py")
    (drop / "broken.txt").write_bytes(b"\x00\x01\x02 binary")
    (drop / "ferry.txt").write_text(FERRY)
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Library").click()
        documents = page.locator("#engram-documents")
        ferry = documents.locator("[role=row]", has_text="ferry.txt")
        expect(documents.locator("[role=row]", has_text="broken.txt")).to_contain_text("binary")
        expect(ferry).to_contain_text("learned")
        expect(documents).not_to_contain_text("not-a-document.py")

        # Pause and resume: the state is shown and kept by the worker.
        page.get_by_role("button", name="Pause learning").click()
        expect(page.locator("#engram-progress")).to_contain_text("Paused")
        assert app.engram.worker.paused
        page.get_by_role("button", name="Resume learning").click()
        expect(page.locator("#engram-progress")).to_contain_text("Up to date")

        # Forget a document: it leaves the index and stays out until learned again.
        ferry.get_by_role("gridcell").first.click()
        page.get_by_role("button", name="Forget").click()
        expect(ferry).to_contain_text("forgotten")
        assert not app.engram.search("ferry Oskel Isle")
        page.get_by_role("button", name="Learn again").click()
        expect(ferry).to_contain_text("learned")

        # Add files: copied into the drop folder and learned; an unreadable type is refused.
        upload = tmp_path / "upload"
        upload.mkdir()
        (upload / "harbour.md").write_text("# Quell\n\nThe harbour master of Quell is Ines Varo.\n")
        (upload / "photo.png").write_bytes(b"\x89PNG")
        page.locator("#engram-add-files").locator("xpath=..").locator("input[type=file]").set_input_files(
            [str(upload / "harbour.md"), str(upload / "photo.png")])
        expect(page.get_by_text("Skipped photo.png")).to_be_visible()
        expect(documents.locator("[role=row]", has_text="harbour.md")).to_contain_text("learned")
        assert (drop / "harbour.md").is_file() and not (drop / "photo.png").exists()

        # Stop watching a folder, after a confirmation: its documents go, its files stay.
        extra = tmp_path / "extra"
        extra.mkdir()
        (extra / "lab.md").write_text("The Quellbrook lab builds the Tessaline crawler.\n")
        page.locator("#engram-folder-path textarea").fill(str(extra))
        page.get_by_role("button", name="Watch folder").click()
        expect(documents.locator("[role=row]", has_text="lab.md")).to_contain_text("learned")
        page.locator("#engram-remove-folder input").click()
        page.get_by_role("option", name=str(extra)).click()
        page.get_by_role("button", name="Remove…").click()
        expect(page.get_by_text("and forget its 1 document?")).to_be_visible()
        page.get_by_role("button", name="Yes, stop watching and forget").click()
        expect(documents).not_to_contain_text("lab.md")
        assert (extra / "lab.md").exists() and app.engram.folders.get(str(extra)) is None

        # A bad folder path, a relative one: a message beside the controls, no error badge, the
        # form stays usable and the message goes with the next action. "Remove…" with nothing
        # picked cannot be pressed.
        note = page.locator("#engram-folder-note")
        watch = page.get_by_role("button", name="Watch folder")
        page.locator("#engram-folder-path textarea").fill(str(tmp_path / "missing"))
        watch.click()
        expect(note).to_contain_text(f"There is no folder at {tmp_path / 'missing'}")
        page.locator("#engram-folder-path textarea").fill("notes")
        watch.click()
        expect(note).to_contain_text("Give the full path (starting with / or ~), not 'notes'.")
        expect(page.get_by_role("button", name="Remove…")).to_be_disabled()
        no_error_badge(page)
        usable(watch)
        expect(page.locator("#engram-folder-path textarea")).to_be_editable()
        shot(page, "ui-library-refusal.png")
        page.locator("#engram-folder-path textarea").fill(str(extra))
        watch.click()
        expect(page.locator(".engram-folders")).to_contain_text(str(extra))
        expect(note).not_to_contain_text("Give the full path")
        expect(documents.locator("[role=row]", has_text="lab.md")).to_contain_text("learned")
        no_error_badge(page)
        page.get_by_role("tab", name="Models").click()
        page.get_by_text("Another model").click()
        page.get_by_label("Model (path or Ollama tag)").fill(str(tmp_path / "nothing.gguf"))
        page.get_by_role("button", name="Load and use").click()
        expect(page.get_by_text("No GGUF model file at")).to_be_visible()
        expect(page.locator("#engram-models [role=row]", has_text="SmolLM2-135M")).to_contain_text("●")
        page.get_by_role("button", name="Use this model").click()
        expect(page.get_by_text("Now answering with SmolLM2-135M (built in)")).to_be_visible()
        assert 'chat_model = "embedded"' in app.engram.loaded.config_file.read_text()

        # A setting with a value its type refuses: said plainly beside the control, nothing
        # saved, the table stays; picking another setting clears the message.
        page.get_by_role("tab", name="Settings").click()
        settings_table = page.locator("#engram-settings")
        pick_setting(page, "search_k")
        expect(page.get_by_label("New value")).to_have_value("5")
        page.get_by_label("New value").fill("0")
        page.get_by_role("button", name="Save").click()
        refusal = page.locator(".engram-note")
        expect(refusal).to_have_text("search_k must be a whole number from 1 to 100, not '0'")
        pick_setting(page, "temperature")
        expect(refusal).to_have_count(0)
        page.get_by_label("New value").fill("hot")
        page.get_by_role("button", name="Save").click()
        expect(refusal).to_have_text("temperature must be a number from 0 to 2, not 'hot'")
        expect(settings_table).to_contain_text("chunk_tokens")
        no_error_badge(page)
        shot(page, "ui-settings-refusal.png")
        pick_setting(page, "data_dir")
        expect(refusal).to_have_count(0)
        page.get_by_label("New value").fill("hot")
        page.get_by_role("button", name="Save").click()
        expect(refusal).to_contain_text("data_dir: 'hot' is not a full path")
        usable(page.get_by_role("button", name="Save"))
        pick_setting(page, "search_k")
        page.get_by_label("New value").fill("7")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Saved search_k. Restart Engram to use it.")).to_be_visible()
        expect(refusal).to_have_count(0)
        expect(settings_table).to_contain_text("7 after restart")
        no_error_badge(page)
        saved = app.engram.loaded.config_file.read_text()
        assert "search_k = 7" in saved and "temperature" not in saved and "data_dir" not in saved

        # Ollama down while answering: the chat says so in words, no traceback.
        app.engram.runtime.adopt(OllamaRuntime("llama3.2", host="http://127.0.0.1:9", connect_timeout_s=0.5))
        page.get_by_role("tab", name="Chat").click()
        page.locator("#engram-question textarea").fill(QUESTION)
        page.get_by_role("button", name="Ask").click()
        answer = page.locator("#engram-chat [data-testid='bot']").last
        expect(answer).to_contain_text("No answer:", timeout=60_000)
        expect(answer).to_contain_text("Ollama")
        assert "Traceback" not in page.content()
        shot(page, "ui-error.png")
    finally:
        app.close()


def pick_setting(page, name: str) -> None:
    """Pick a setting and wait until its value is in the box (typing earlier would be overwritten)."""
    from playwright.sync_api import expect

    page.get_by_label("Setting").fill(name)
    page.get_by_role("option", name=name, exact=True).click()
    expect(page.locator("p.engram-muted > strong").get_by_text(name, exact=True)).to_be_visible()


def test_an_answer_cut_off_at_the_token_limit_is_marked_and_continues(page, embedder, llama, tmp_path) -> None:
    from playwright.sync_api import expect

    app = App(embedder, llama, answer_max_tokens=16)
    drop = app.engram.settings.effective_drop_folder
    (drop / "ferry.txt").write_text(FERRY)
    try:
        app.engram.ingest([drop])  # queued at once, not only when the watcher sees the file
        wait_for(lambda: app.engram.search("ferry Oskel Isle"), timeout=60)
        page.goto(app.url)
        continue_button = page.locator("#engram-continue")
        expect(continue_button).to_be_hidden()
        page.locator("#engram-question textarea").fill("Tell me everything about the ferry to Oskel Isle.")
        page.get_by_role("button", name="Ask").click()
        answer = page.locator("#engram-chat [data-testid='bot']").last
        expect(answer.locator(".engram-meta")).to_contain_text("16 tokens", timeout=90_000)
        expect(answer.locator(".engram-cut-off")).to_contain_text("Cut off:")
        expect(continue_button).to_be_visible()
        shot(page, "ui-chat-cut-off.png")

        # Continue: a follow-up turn asking for the rest; the button goes while it answers.
        continue_button.click()
        expect(page.locator("#engram-chat [data-testid='user']").last).to_contain_text(
            app.engram.chat.continue_question)
        expect(page.locator("#engram-chat [data-testid='bot']")).to_have_count(2)
        expect(page.locator("#engram-chat [data-testid='bot']").last.locator(".engram-meta")).to_contain_text(
            "Answered by SmolLM2-135M", timeout=90_000)
        stored = app.engram.conversations.messages(1)
        assert [m.role for m in stored] == ["user", "assistant"] * 2
        assert stored[-1].meta["history_messages"] >= 2
        expect(continue_button).to_be_visible(visible=stored[-1].meta["finish_reason"] == "length")

        # Reopened later, the mark is still there; a new conversation hides the button.
        page.get_by_role("button", name="New conversation").click()
        expect(continue_button).to_be_hidden(timeout=30_000)  # a loaded machine answers the click late
        page.locator("#engram-conversations label").first.click()
        expect(page.locator("#engram-chat .engram-cut-off").first).to_be_visible()
        no_error_badge(page)
    finally:
        app.close()


def test_playbook_tab_view_edit_delete_restore_download_upload(page, embedder, llama, tmp_path) -> None:
    from playwright.sync_api import expect

    app = App(embedder, llama)
    service = app.engram.playbooks
    name = app.engram.settings.ace.playbook
    service.add_bullet(name, "State the unit of every price you give.")
    service.add_bullet(name, "Quote the sentence that holds the date.")
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Playbook").click()
        bullets = page.locator("#engram-bullets")
        expect(bullets).to_contain_text("State the unit of every price")
        expect(page.get_by_text("Version 2 · 2 bullets")).to_be_visible()

        # Pick a bullet in the table, edit it, save: a new version with the new text.
        bullets.locator("[role=row]", has_text="State the unit").get_by_role("gridcell").nth(2).click()
        expect(page.locator("#engram-bullet-text textarea")).to_have_value("State the unit of every price you give.")
        page.locator("#engram-bullet-text textarea").fill("Give every price with its currency unit.")
        page.get_by_role("button", name="Save edit").click()
        expect(bullets).to_contain_text("Give every price with its currency unit.")
        assert service.show(name).get(1).content == "Give every price with its currency unit."

        # Delete needs a confirmation; then restoring the version before brings the bullet back.
        bullets.locator("[role=row]", has_text="Quote the sentence").get_by_role("gridcell").nth(2).click()
        expect(page.locator("#engram-bullet-id input")).to_have_value("2")
        page.get_by_role("button", name="Delete bullet…").click()
        expect(page.get_by_text("Delete bullet 2")).to_be_visible()
        page.locator("#engram-playbook-confirm").click()
        expect(bullets).not_to_contain_text("Quote the sentence")
        page.get_by_text("Versions and history").click()
        page.locator("#engram-playbook-version input").click()
        page.get_by_role("option", name="v3", exact=False).first.click()
        page.get_by_role("button", name="Restore this version…").click()
        page.locator("#engram-playbook-confirm").click()
        expect(bullets).to_contain_text("Quote the sentence")
        assert service.show(name).version == 5

        # Download the playbook file; upload a malicious one: a clear message, nothing changed.
        page.get_by_text("Export and import").click()
        with page.expect_download() as download:
            page.locator("#engram-playbook-download").click()
        saved = tmp_path / "saved.json"
        download.value.save_as(saved)
        assert "Quote the sentence" in saved.read_text()
        bad = tmp_path / "bad.json"
        bad.write_text('{"format": "engram-playbook", "format_version": 1, "name": "../../etc/x", "version": 1, "bullets": []}')
        page.locator("#engram-playbook-upload").locator("xpath=..").locator("input[type=file]").set_input_files(str(bad))
        expect(page.get_by_text("bad.json is not a valid playbook file: name")).to_be_visible()
        assert [p.name for p in service.list()] == [name]

        # A good file under a new name: imported and shown.
        page.get_by_label("Import under the name").fill("copy")
        page.locator("#engram-playbook-upload").locator("xpath=..").locator("input[type=file]").set_input_files(str(saved))
        expect(page.get_by_text("Imported 2 bullets into copy")).to_be_visible()
        assert service.show("copy").bullets[1].content == "Quote the sentence that holds the date."
        assert "Traceback" not in page.content()
        shot(page, "ui-playbook.png")
    finally:
        app.close()


def test_bench_and_weights_tabs(page, embedder, llama) -> None:
    from playwright.sync_api import expect

    from app.bench.learn import EngineRun, Forgot, LearnBenchReport, Learned, save_report

    app = App(embedder, llama)
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Bench").click()
        expect(page.get_by_text("No learning benchmark has run on this computer yet")).to_be_visible()

        # A report as `engram bench learn` writes it: its table and plot show.
        def run(label: str, kind: str, after: float, drift: float) -> EngineRun:
            return EngineRun(label=label, kind=kind, before=Learned(choice_accuracy=0.3),
                             after=Learned(choice_accuracy=after),
                             forgot=Forgot(perplexity=14.0, perplexity_drift=drift, general_accuracy=1.0,
                                           forgetting_ratio=0.0))
        report = LearnBenchReport(created_at="2026-11-23 12:00:00", size="tiny", seed=0, documents=4,
                                  questions=16, general_questions=10, general_known=8, heldout_tokens=900,
                                  model="SmolLM2-135M", device="cpu", torch_threads=2, cpu_count=2,
                                  load_before=[0.1], runs=[run("base model", "base", 0.3, 0.0),
                                                           run("ttt gated", "weights", 0.62, 0.004)])
        report.runs[1].forgot.unrouted = Forgot(perplexity=15.0, perplexity_drift=-0.0271, general_accuracy=0.9,
                                                forgetting_ratio=0.094, heldout_forgetting_ratio=0.081)
        save_report(report, app.engram.paths.bench)
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("tab", name="Bench").click()
        expect(page.locator("#engram-bench-runs")).to_contain_text("ttt gated")
        expect(page.locator("#engram-bench-runs")).to_contain_text("+0.40%")
        expect(page.locator("#engram-bench-runs")).to_contain_text("-2.71% / 0.094 (held-out 0.081)")
        expect(page.locator("#engram-bench-plot img")).to_be_visible()

        # Weights: learning into weights is off, so nothing learned and saving says what to do.
        page.get_by_role("tab", name="Weights").click()
        expect(page.locator("#engram-weights-state")).to_contain_text("nothing is learned into its weights yet")
        page.locator("#engram-checkpoint-name textarea").fill("before-trip")
        page.get_by_role("button", name="Save current weights").click()
        expect(page.get_by_text("learning into weights is off")).to_be_visible()

        # Sleep: none yet; the button queues one, which the worker runs (retrieval: at once).
        expect(page.locator("#engram-sleep-state")).to_contain_text("has not slept yet")
        expect(page.locator("#engram-sleep-state")).to_contain_text("after 10 idle minutes")
        page.get_by_role("button", name="Sleep now").click()
        expect(page.get_by_text("Sleep queued")).to_be_visible()
        wait_for(lambda: app.engram.sleeper.status().last is not None)
        page.get_by_role("tab", name="Chat").click()
        page.get_by_role("tab", name="Weights").click()
        expect(page.locator("#engram-sleep-state")).to_contain_text("(by hand, done, nothing changed)")
        assert "Traceback" not in page.content()
        shot(page, "ui-bench.png")
    finally:
        app.close()
