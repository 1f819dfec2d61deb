"""Chat: conversations on the left; the answer streams in with its numbered sources, each a link
to the cited passage; thumbs on every answer, and a correction box after a thumbs-down."""

import re
from collections import Counter
from collections.abc import Callable, Iterator
from html import escape
from typing import Any
from urllib.parse import quote as url_quote

import gradio as gr

from app.core import Citation, Decision, Delta, Done, Engram, MessageRow, Revision, Sources, conversation_of
from ui.errors import friendly, readable
from ui.formatting import backend_title, local_time, plain_text, short_model
from ui.tab import Tab

FEEDBACK = {"up": "Like", "down": "Dislike"}
THINKING = "<span class='engram-muted'>Reading your documents…</span>"
PLACEHOLDER = (
    "<div class='engram-empty'><strong>Ask about your documents</strong><br>"
    "Engram answers from the files in your watched folders and cites the passages it used.<br>"
    "Add folders or drop files in the <strong>Library</strong> tab.</div>"
)
CUT_OFF = ("\n\n<div class='engram-warning engram-cut-off'><strong>Cut off:</strong> the answer reached "
           "its length limit. Ask for more with <em>Continue</em>.</div>")
NO_SOURCES = ("<div class='engram-sources engram-muted'>No passage from your documents matched: "
              "this answer does not come from your files.</div>")


# --- rendering ---------------------------------------------------------------------------------
def safe_markdown(text: str) -> str:
    """Model output and questions as markdown with no HTML of their own and no images (an image
    would make the browser fetch a URL that a document could have planted)."""
    return re.sub(r"!\[", r"!\\[", escape(text, quote=False))


def source_link(cite: Citation) -> str:
    """The page that shows the source: a stored passage by its chunk, an exchange recalled from an
    earlier conversation (no chunk) by the conversation and its turns."""
    conversation = conversation_of(cite.path)
    if not cite.chunk_id and conversation is not None:
        return (f"/conversation/{conversation}?first={int(cite.line_start)}&last={int(cite.line_end)}"
                f"&quote={url_quote(cite.quote)}")
    return f"/source/{int(cite.chunk_id)}?quote={url_quote(cite.quote)}"


def _source_item(cite: Citation, quoted: bool) -> str:
    quote = f"<q>{escape(plain_text(cite.quote))}</q>" if quoted and cite.quote else ""
    return (f"<li value='{cite.n}'><a href='{escape(source_link(cite))}' target='_blank' "
            f"rel='noopener'>{escape(cite.label)}</a> <span class='where'>· "
            f"{escape(cite.position)}</span>{quote}</li>")


def render_sources(citations: list[Citation], final: bool = True) -> str:
    """The numbered sources under an answer. Passages the answer drew on come first with the
    sentence quoted; the others it was shown are behind a "consulted, not cited" toggle. While the
    answer streams, which sentence to quote is not known yet, so no quote is shown."""
    if not citations:
        return NO_SOURCES
    if not final:
        items = "".join(_source_item(c, quoted=False) for c in citations)
        return (f"<div class='engram-sources'><strong>Sources</strong> <span class='engram-muted'>"
                f"(read for this answer; quotes follow when it is complete)</span><ol>{items}</ol></div>")
    cited = [c for c in citations if c.cited]
    consulted = [c for c in citations if not c.cited]
    parts = ["<div class='engram-sources'>"]
    if cited:
        parts.append(f"<strong>Sources</strong><ol>{''.join(_source_item(c, True) for c in cited)}</ol>")
    else:
        parts.append("<span class='engram-muted'>The answer does not draw on any passage it was shown.</span>")
    if consulted:
        parts.append(f"<details class='consulted'><summary>Consulted, not cited ({len(consulted)})</summary>"
                     f"<ol>{''.join(_source_item(c, True) for c in consulted)}</ol></details>")
    return "".join(parts) + "</div>"


def render_meta(meta: dict[str, Any]) -> str:
    if not meta:
        return ""
    parts = [short_model(str(meta.get("model", ""))), backend_title(str(meta.get("backend", "")))]
    if meta.get("completion_tokens") is not None:
        parts.append(f"{meta['completion_tokens']} tokens")
    if meta.get("seconds") is not None:
        parts.append(f"{float(meta['seconds']):.1f} s")
    if meta.get("stopped"):
        parts.append("stopped before the end")
    line = f"<span class='engram-meta'>Answered by {escape(' · '.join(p for p in parts if p))}</span>"
    return line + render_decision(meta)


def render_decision(meta: dict[str, Any]) -> str:
    """The meta-controller's decision under the answer: its line, and its reasons on hover."""
    if not meta.get("controller"):
        return ""
    decision = Decision.model_validate(meta["controller"])
    tip = escape("; ".join(decision.reasons) or "every memory this question could use", quote=True)
    return f"<span class='engram-decision' title=\"{tip}\">{escape(decision.summary())}</span>"


def cut_off(meta: dict[str, Any]) -> bool:
    """The answer stopped at the token limit: the model had more to say."""
    return meta.get("finish_reason") == "length"


def render_answer(text: str, citations: list[Citation], meta: dict[str, Any] | None = None,
                  correction: str | None = None, final: bool = True) -> str:
    """An answer with its warnings, correction, sources and meta; ``final`` is False while it
    streams."""
    meta = meta or {}
    failed = meta.get("error")
    body = safe_markdown(text) if text else "" if failed else THINKING
    body, unsupported = mark_unsupported(body, meta) if text and final else (body, "")
    unsupported = revision_note(meta) + unsupported if final else unsupported
    cut = (f"\n\n<div class='engram-warning'><strong>The answer stopped:</strong> "
           f"{escape(str(failed))}</div>" if failed else CUT_OFF if cut_off(meta) else "")
    fixed = (f"\n\n<div class='engram-meta'><strong>Your correction:</strong> "
             f"{escape(correction)}</div>" if correction else "")
    return f"{body}{unsupported}{cut}{fixed}\n\n{render_sources(citations, final)}{render_meta(meta)}"


def mark_unsupported(body: str, meta: dict[str, Any]) -> tuple[str, str]:
    """The answer's body with each sentence the critic found in no source underlined (its reason
    in the tooltip), and the line that counts them ("" when every sentence is supported)."""
    critic = meta.get("critic") or {}
    flagged = [v for v in critic.get("sentences", []) if not v.get("supported", True)]
    if not flagged:
        return body, ""
    for verdict in flagged:
        shown = safe_markdown(verdict.get("sentence", ""))
        if shown and shown in body:
            tip = escape(f"no source says this: {verdict.get('reason', '')}", quote=True)
            body = body.replace(shown, f"<span class='engram-unsupported' title=\"{tip}\">{shown}</span>", 1)
    n = len(flagged)
    return body, (f"\n\n<div class='engram-warning engram-unsupported-note'>{n} sentence{'' if n == 1 else 's'} "
                  "not supported by your documents</div>")


def revision_note(meta: dict[str, Any]) -> str:
    """The line saying what the critic's flags changed (dropped or regenerated sentences), with
    the dropped sentences and the draft on hover; "" when nothing was changed."""
    if not meta.get("revision"):
        return ""
    revision = Revision.model_validate(meta["revision"])
    tip = "; ".join(f"dropped: {v.sentence} ({v.reason})" for v in revision.dropped)
    tip = escape(f"{tip}{'; ' if tip else ''}draft: {revision.draft}", quote=True)
    return (f"\n\n<div class='engram-warning engram-revision-note' title=\"{tip}\">"
            f"{escape(revision.line())}</div>")


def render_error(message: str) -> str:
    return f"<div class='engram-warning'><strong>No answer:</strong> {escape(message)}</div>"


def to_chat(messages: list[MessageRow]) -> tuple[list[dict[str, str]], list[int], list[str | None]]:
    """Stored messages -> chatbot messages, their ids, and the thumbs of each answer."""
    chat, ids, feedback = [], [], []
    for m in messages:
        if m.role == "user":
            chat.append({"role": "user", "content": safe_markdown(m.content)})
        else:
            chat.append({"role": "assistant",
                         "content": render_answer(m.content, m.citations, m.meta, m.correction)})
            feedback.append(FEEDBACK.get(m.feedback or ""))
        ids.append(m.id)
    return chat, ids, feedback


def last_cut_off(messages: list[MessageRow]) -> bool:
    """Whether the conversation ends with an answer that can be continued."""
    return bool(messages) and messages[-1].role == "assistant" and cut_off(messages[-1].meta)


def conversation_choices(engram: Engram) -> list[tuple[str, int]]:
    """Each conversation by its first question and when it began; the same question asked in
    several conversations is numbered (oldest first), so no two look alike."""
    rows = engram.conversations.list()
    repeats = Counter(c.title for c in rows)
    seen: Counter[str] = Counter()
    labels: dict[int, str] = {}
    for c in sorted(rows, key=lambda c: c.id):
        seen[c.title] += 1
        number = f" ({seen[c.title]})" if repeats[c.title] > 1 else ""
        labels[c.id] = f"{c.title}{number} · {local_time(c.created_at)}"
    return [(labels[c.id], c.id) for c in rows]


def model_line(engram: Engram) -> str:
    answering = engram.chat_model()
    return (f"<span class='engram-muted'>Answers come from <strong>{escape(short_model(answering.model))}</strong> "
            f"(run by {escape(backend_title(answering.backend))}) and your documents; change the model "
            "in the Models tab."
            "</span>")


# --- the tab -----------------------------------------------------------------------------------
DECISION_HEADERS = ("When", "Question", "Memory consulted", "Learned weights", "Critic", "Chosen by",
                    "Answered by", "Time")


def build(engram: Engram, blocks: gr.Blocks, tab: gr.Tab) -> None:
    conversation = gr.State(None)  # id of the open conversation (None: a new one)
    message_ids = gr.State([])  # store id of each chatbot message, in order
    correcting = gr.State(None)  # id of the answer the correction box is for

    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            new_button = gr.Button("New conversation", variant="secondary", size="sm")
            delete_button = gr.Button("Delete conversation", variant="stop", size="sm",
                                      elem_id="engram-delete-conversation")
            conversations = gr.Radio(label="Conversations", choices=[], elem_id="engram-conversations")
            no_conversations = gr.HTML("<p class='engram-muted'>Your conversations will be listed here.</p>")
        with gr.Column(scale=4):
            model_info = gr.HTML()
            chatbot = gr.Chatbot(show_label=False, height=520, placeholder=PLACEHOLDER,
                                 feedback_options=("Like", "Dislike"), allow_tags=False,
                                 buttons=["copy"], elem_id="engram-chat", autoscroll=True)
            with gr.Row(equal_height=True):
                question = gr.Textbox(show_label=False, placeholder="Ask about your documents…",
                                      lines=1, max_lines=6, scale=8, autofocus=True, elem_id="engram-question",
                                      container=False, elem_classes="engram-input")
                ask_button = gr.Button("Ask", variant="primary", scale=1, min_width=90, size="md")
                continue_button = gr.Button("Continue", variant="secondary", scale=1, min_width=110,
                                            size="md", visible=False, elem_id="engram-continue")
            with gr.Accordion("How the last answers were made", open=False, elem_id="engram-decisions"):
                decisions = gr.Dataframe(headers=list(DECISION_HEADERS), interactive=False, wrap=True,
                                         column_widths=["12%", "26%", "12%", "12%", "8%", "12%", "10%", "8%"],
                                         elem_id="engram-decisions-table")
            with gr.Group(visible=False) as correction_box:
                correction_label = gr.HTML()
                correction = gr.Textbox(label="What should the answer have been?", lines=2,
                                        placeholder="Type the right answer; Engram learns from it.")
                with gr.Row():
                    save_correction = gr.Button("Save correction", variant="primary", size="sm")
                    close_correction = gr.Button("Not now", size="sm")

    def decision_table() -> list[list[Any]]:
        return [[local_time(r.when), r.question, r.memory, r.learned, r.critic, r.chosen_by, backend_title(r.answered_by),
                 "" if r.seconds is None else f"{r.seconds:.1f} s"] for r in engram.decisions()]

    def listing(selected: int | None) -> tuple[Any, Any]:
        choices = conversation_choices(engram)
        return (gr.update(choices=choices, value=selected),
                gr.update(visible=not choices))

    @friendly
    def on_load() -> tuple[Any, ...]:
        return (*listing(None), model_line(engram), decision_table())

    @friendly
    def new_conversation() -> tuple[Any, ...]:
        return None, [], [], gr.update(value=None), gr.update(visible=False), "", gr.update(visible=False)

    @friendly
    def delete_conversation(conversation_id: int | None) -> tuple[Any, ...]:
        """The open conversation goes, with the facts sleep learned from it."""
        if conversation_id is None:
            raise gr.Error("Open a conversation first.")
        engram.delete_conversation(int(conversation_id))
        gr.Info("Conversation deleted, with the facts Engram kept from it.")
        return (None, [], [], *listing(None), gr.update(visible=False), gr.update(visible=False))

    @friendly
    def open_conversation(conversation_id: int | None) -> tuple[Any, ...]:
        if conversation_id is None:
            return gr.skip()
        messages = engram.conversations.messages(int(conversation_id))
        chat, ids, feedback = to_chat(messages)
        return (int(conversation_id), gr.update(value=chat, feedback_value=feedback), ids,
                gr.update(visible=False), gr.update(visible=last_cut_off(messages)))

    def answer_stream(text: str, events: Callable[[int | None], Iterator[Any]], chat: list[dict[str, Any]],
                      conversation_id: int | None, ids: list[int | None]) -> Iterator[tuple[Any, ...]]:
        """Show ``text`` as the person's turn and stream ``events(conversation_id)`` as the answer
        (the outputs of ``ask_outputs``); the Continue button shows when it was cut off."""
        chat = [*chat, {"role": "user", "content": safe_markdown(text)},
                {"role": "assistant", "content": THINKING}]
        ids = [*ids, None, None]
        skip = gr.skip()
        hidden = gr.update(visible=False)
        yield chat, "", conversation_id, ids, skip, skip, hidden, hidden
        answer, citations, more = "", [], False
        try:
            for event in events(conversation_id):
                if isinstance(event, Sources):
                    conversation_id, ids[-2] = event.conversation_id, event.question_id
                    citations = event.citations
                elif isinstance(event, Delta):
                    answer += event.text
                elif isinstance(event, Done):
                    m = event.message
                    ids[-1], more = m.id, cut_off(m.meta)
                    chat[-1] = {"role": "assistant", "content": render_answer(m.content, m.citations, m.meta)}
                    continue
                chat[-1] = {"role": "assistant", "content": render_answer(answer, citations, final=False)}
                yield chat, skip, conversation_id, ids, skip, skip, skip, skip
        except Exception as exc:  # a model that will not load, Ollama down: said in the chat
            chat[-1] = {"role": "assistant", "content": render_error(readable(exc))}
        yield (chat, skip, conversation_id, ids, *listing(conversation_id), skip, gr.update(visible=more))

    @friendly
    def ask(text: str, chat: list[dict[str, Any]], conversation_id: int | None, ids: list[int | None]):
        text = (text or "").strip()
        if not text:
            gr.Warning("Type a question first.")
            return
        yield from answer_stream(text, lambda cid: engram.chat.ask(text, cid), chat, conversation_id, ids)

    @friendly
    def carry_on(chat: list[dict[str, Any]], conversation_id: int | None, ids: list[int | None]):
        if conversation_id is None:
            raise gr.Error("Open a conversation whose last answer was cut off first.")
        yield from answer_stream(engram.chat.continue_question, engram.chat.continue_answer, chat,
                                 conversation_id, ids)

    @friendly
    def on_feedback(data: gr.LikeData, ids: list[int | None]) -> tuple[Any, ...]:
        index = data.index if isinstance(data.index, int) else data.index[0]
        answer_id = ids[index] if 0 <= index < len(ids) else None
        if answer_id is None or data.liked not in (True, False):
            return gr.skip(), gr.skip(), gr.skip()
        engram.chat.feedback(answer_id, "up" if data.liked else "down")
        if data.liked:
            gr.Info("Thanks: noted as a good answer.")
            return None, gr.update(visible=False), gr.skip()
        shown = engram.conversations.message(answer_id)
        first = " ".join((shown.content if shown else "").split())[:90]
        label = (f"<span class='engram-muted'>Noted as a bad answer. Correct it so Engram learns: "
                 f"“{escape(first)}…”</span>")
        return answer_id, gr.update(visible=True), label

    @friendly
    def on_correction(text: str, answer_id: int | None, conversation_id: int | None) -> tuple[Any, ...]:
        if answer_id is None:
            raise gr.Error("Give an answer a thumbs-down first, then correct it.")
        if not (text or "").strip():
            raise gr.Error("Type the right answer first.")
        engram.chat.feedback(answer_id, None, text)
        gr.Info("Correction saved.")
        chat, ids, feedback = to_chat(engram.conversations.messages(int(conversation_id)))
        return gr.update(value=chat, feedback_value=feedback), ids, "", None, gr.update(visible=False)

    blocks.load(on_load, None, [conversations, no_conversations, model_info, decisions])
    new_button.click(new_conversation, None,
                     [conversation, chatbot, message_ids, conversations, correction_box, question, continue_button])
    delete_button.click(delete_conversation, conversation,
                        [conversation, chatbot, message_ids, conversations, no_conversations, correction_box,
                         continue_button]).then(friendly(decision_table), None, decisions)
    conversations.input(open_conversation, conversations,
                        [conversation, chatbot, message_ids, correction_box, continue_button])
    ask_outputs = [chatbot, question, conversation, message_ids, conversations, no_conversations, correction_box,
                   continue_button]
    asking = [(ask, question.submit, [question, chatbot, conversation, message_ids]),
              (ask, ask_button.click, [question, chatbot, conversation, message_ids]),
              (carry_on, continue_button.click, [chatbot, conversation, message_ids])]
    for handler, trigger, inputs in asking:
        trigger(handler, inputs, ask_outputs, concurrency_limit=1, concurrency_id="engram-chat").then(
            friendly(lambda: (model_line(engram), decision_table())), None, [model_info, decisions])
    chatbot.like(on_feedback, message_ids, [correcting, correction_box, correction_label])
    save_correction.click(on_correction, [correction, correcting, conversation],
                          [chatbot, message_ids, correction, correcting, correction_box])
    close_correction.click(lambda: (None, gr.update(visible=False)), None, [correcting, correction_box])


TAB = Tab("Chat", build)
