"""Grounded chat: question -> engines' contributions -> prompt -> streamed answer -> stored turn.

``ChatService.ask`` is a generator of events so the CLI and the UI can show the sources at once,
the answer as it streams, and the stored message at the end. The question is stored once it can
be answered (the model is there and the prompt fits: a refused question leaves nothing behind),
the answer when it is complete, or, when the caller stops reading early, as far as it got
(marked ``stopped``): nothing the person saw is lost.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from app.chat import controller
from app.chat.prompt import PromptPlan, build_prompt, learned_system
from app.memory.episodic import EpisodicMemory, RecalledExchange
from app.runtimes.active import ActiveRuntime
from app.settings import Settings
from engines.base import Contribution, Draft, Engine, Passage, Query, contribute_all
from engines.generation import ChatMessage, GenerationRequest, LoraUse, Runtime, RuntimeCrashed
from store.conversations import Citation, ClientAnswer, ConversationStore, MessageRow, Rating


if TYPE_CHECKING:
    from app.chat.bandit import BanditPolicy
    from app.chat.critic import CriticReport

log = logging.getLogger(__name__)

QUOTE_CHARS = 280
MAX_BIAS_TOKENS = 400
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")
_LIST_ITEM = re.compile(r"^\s*\d{1,3}[.)]\s+")
_ENDS = (".", "!", "?", ":", ";", ")")  # a line ending so lets a numbered list's item begin below it
_CITE_MARK = re.compile(r"\[(\d{1,2})\]")
CONTINUE_QUESTION = "Please continue your last answer from where it stopped."
"""The follow-up that asks for the rest of an answer cut off at the token limit."""
MATCH_RECENT = 20
"""Recent conversations searched for the one a client's message list continues."""


class Sources(BaseModel):
    kind: Literal["sources"] = "sources"
    conversation_id: int
    question_id: int
    citations: list[Citation]
    notes: list[str] = Field(default_factory=list)
    consulted: bool = Field(True, description="False: the controller answered without any memory "
                            "(small talk), so no passage was looked for.")


class Delta(BaseModel):
    kind: Literal["delta"] = "delta"
    text: str


class Done(BaseModel):
    kind: Literal["done"] = "done"
    message: MessageRow


ChatEvent = Sources | Delta | Done


class Grounding(BaseModel):
    """How retrieved passages shape a prompt. The retrieval engine's settings own these values;
    the service is handed them when it is built, so it depends on no engine's settings model."""

    context_share: float = Field(gt=0.0, le=1.0, description="Share of free prompt tokens for passages.")
    logit_bias_strength: float = Field(ge=0.0, description="Logit added to each passage token.")


def content_words(text: str) -> set[str]:
    """The words that say something (longer than three letters, or a number), lower-cased: what
    an answer and a passage are compared by."""
    return {w.lower() for w in _WORD.findall(text) if len(w) > 3 or w.isdigit()}


def sentences_of(passage: str) -> list[str]:
    """The sentences of a passage. A blank line, a Markdown heading or a numbered list's item ends
    one too, so a title is never quoted as the start of the sentence below it (an item's number is
    left out); lines wrapped inside a paragraph are not."""
    blocks: list[list[str]] = [[]]
    previous: str | None = None
    for line in passage.splitlines():
        heading = _HEADING.match(line) is not None
        if heading or not line.strip():
            blocks.append([line] if heading else [])
            blocks.append([])
        elif item := list_item(line, previous):
            blocks.append([line[item.end():]])  # "1. Mix." is one sentence, "Mix.", not "1." and "Mix."
        else:
            blocks[-1].append(line)
        previous = line
    return [s.strip() for block in blocks for s in _SENTENCE.split(" ".join(" ".join(block).split()))
            if s.strip()]


def list_item(line: str, previous: str | None) -> re.Match[str] | None:
    """The mark of a numbered list's item that starts ``line`` ("1. ", "2) "), where the line above
    (``previous``; None at the start) is blank or a heading or ends a sentence: in "The fee was\n5.
    Then ..." the 5 ends a wrapped sentence."""
    item = _LIST_ITEM.match(line)
    if item is None or previous is None or not previous.strip() or _HEADING.match(previous):
        return item
    return item if previous.rstrip().endswith(_ENDS) else None


def best_quote(passage: str, answer: str) -> str:
    """The sentence of ``passage`` sharing most words with ``answer`` (its start when none does)."""
    sentences = sentences_of(passage)
    if not sentences:
        return ""
    said = content_words(answer)
    best = max(sentences, key=lambda s: len(content_words(s) & said))
    if not content_words(best) & said:
        best = sentences[0]
    return best if len(best) <= QUOTE_CHARS else best[: QUOTE_CHARS - 1].rstrip() + "…"


def citations_for(passages: list[Passage], answer: str, question: str = "") -> list[Citation]:
    """The passages as numbered sources; one is cited when the answer marks it ([n]) or repeats
    two of its words that the question did not already say (echoing the question's words shows
    nothing about which passage the answer used)."""
    marked = {int(m) for m in _CITE_MARK.findall(answer)}
    said = content_words(answer) - content_words(question)
    out = []
    for n, p in enumerate(passages, 1):
        shared = content_words(p.text) & said
        out.append(Citation(
            n=n, chunk_id=p.chunk_id, document_id=p.document_id, path=p.path, page=p.page,
            line_start=p.line_start, line_end=p.line_end, score=round(p.score, 4), title=p.title,
            said_at=p.said_at, quote=best_quote(p.text, answer), cited=n in marked or len(shared) >= 2,
        ))
    return out


def sources_in_order(question: str, documents: list[Passage], recalled: Sequence[Passage]) -> list[Passage]:
    """The prompt's sources, best first, so a short budget drops the last: the exchanges recalled
    from earlier conversations first when the question refers back to one (they are what it asks
    about), after the documents otherwise (with the controller off every question recalls, and
    Engram's own earlier answers must not push the person's documents out)."""
    if controller.refers_back(question):
        return [*recalled, *documents]
    return [*documents, *recalled]


def logit_bias(runtime: Runtime, texts: list[str], strength: float) -> dict[int, float] | None:
    """+``strength`` on the tokens of ``texts`` (the JitRL MVP); None where unsupported."""
    if not texts or strength == 0 or not runtime.supports_logit_bias:
        return None
    ids: dict[int, float] = {}
    for text in texts:
        for token in runtime.token_ids(text):
            ids.setdefault(int(token), strength)
            if len(ids) >= MAX_BIAS_TOKENS:
                return ids
    return ids


def with_rewards(runtime: Runtime, bias: dict[int, float] | None, contributions: list[Contribution],
                 notes: list[str]) -> dict[int, float] | None:
    """``bias`` plus the engines' token rewards (the hidden-state tier's), added where the runtime
    biases tokens and speaks the vocabulary they were computed in; a note says why when not."""
    for c in contributions:
        if not c.logit_bias:
            continue
        if not runtime.supports_logit_bias or runtime.model_name != c.bias_model:
            notes.append(f"{c.engine}: its token rewards are for {c.bias_model}, the answer comes from "
                         f"{runtime.model_name} on {runtime.name}; answered without them")
            continue
        bias = dict(bias or {})
        for token, value in c.logit_bias.items():
            bias[token] = bias.get(token, 0.0) + value
    return bias


class ChatService:
    """Answers questions from the engines' contributions and keeps every turn."""

    continue_question = CONTINUE_QUESTION

    def __init__(self, settings: Settings, conversations: ConversationStore, engines: list[Engine],
                 runtime: ActiveRuntime, grounding: Grounding,
                 on_feedback: Callable[[MessageRow], None] | None = None,
                 neocortex: Callable[[], Runtime] | None = None,
                 episodic: EpisodicMemory | None = None,
                 on_answer: Callable[[MessageRow], None] | None = None,
                 bandit: BanditPolicy | None = None) -> None:
        self.settings = settings
        self.episodic = episodic  # None: earlier conversations are never recalled
        self.grounding = grounding
        self.conversations = conversations
        self.engines = engines
        self.runtime = runtime
        self.on_feedback = on_feedback
        self.neocortex = neocortex
        self.on_answer = on_answer  # a finished answer was stored (its decision is logged, its reward queued)
        self.bandit = bandit

    def answering_runtime(self, contributions: list[Contribution]) -> tuple[Runtime, list[str], list[LoraUse]]:
        """The chat runtime, or the neocortex when an engine's learned weights must answer; the
        chat runtime still answers when every learned state comes as LoRA adapters it applies
        (llama.cpp on the model they were written for), with those adapters."""
        learned = [s for c in contributions for s in c.learned_states]
        if not learned:
            return self.runtime.get(), [], []
        uses = [a for c in contributions for a in c.adapters]
        if all(c.adapters for c in contributions if c.learned_states):  # else only torch can answer
            chat = self.runtime.get()
            if chat.supports_lora and all(a.base_model == chat.model_name for a in uses):
                return chat, learned, uses
        if self.neocortex is not None:
            return self.neocortex(), learned, []
        return self.runtime.get(), [], []

    def history(self, conversation_id: int | None, turns: int | None = None,
                earlier: Sequence[ChatMessage] = ()) -> list[ChatMessage]:
        """The last ``turns`` turns (default: the setting) of the stored conversation, or of
        ``earlier`` (a client's, not stored yet) when there is none, leaving out answers a crashed
        model cut short (and their questions)."""
        turns = self.settings.history_turns if turns is None else turns
        if turns <= 0:
            return []
        if conversation_id is None:
            return [ChatMessage(role=m.role, content=m.content) for m in earlier[-2 * turns:]]
        recent = self.conversations.messages(conversation_id)[-2 * turns:]
        failed = {i for i, m in enumerate(recent) if m.meta.get("error")}
        kept = [m for i, m in enumerate(recent) if i not in failed and i + 1 not in failed]
        return [ChatMessage(role=m.role, content=m.content) for m in kept]

    def contributions(self, query: Query) -> list[Contribution]:
        return contribute_all(self.engines, query)

    def prompt(self, question: str, contributions: list[Contribution], runtime: Runtime,
               history: list[ChatMessage], extra_bullets: Sequence[str] = (),
               answer_tokens: int | None = None, recalled: Sequence[Passage] = (), learned: bool = False
               ) -> tuple[PromptPlan, dict[int, float] | None, list[str]]:
        """The one prompt ``ask`` and ``draft`` send: (plan, logit bias, notes for the person);
        ``answer_tokens``: room kept for the answer (default: answer_max_tokens); ``recalled``:
        earlier conversations' exchanges, sources beside the engines' passages; ``learned``: an
        engine's learned weights answer (asked under the system message they learned under)."""
        passages = sources_in_order(question, [p for c in contributions for p in c.passages], recalled)
        bullets = [b for c in contributions for b in c.bullets] + list(extra_bullets)
        plan = build_prompt(question, passages, bullets, history, runtime.count_tokens,
                            runtime.context_window, answer_tokens or self.settings.answer_max_tokens,
                            self.grounding.context_share, learned_system(contributions) if learned else "")
        notes = [n for c in contributions for n in c.notes]
        if plan.dropped_passages:
            notes.append(f"{plan.dropped_passages} passage(s) did not fit the context window")
        bias = logit_bias(runtime, [t for c in contributions for t in c.bias_text],
                          self.grounding.logit_bias_strength)
        if any(c.bias_text for c in contributions) and bias is None:
            notes.append(f"the {runtime.name} backend cannot bias tokens; answered without it")
        bias = with_rewards(runtime, bias, contributions, notes)
        return plan, bias, notes

    def ask(self, question: str, conversation_id: int | None = None, turns: int | None = None,
            max_tokens: int | None = None, temperature: float | None = None,
            earlier: Sequence[ChatMessage] = ()) -> Iterator[ChatEvent]:
        """Stream the answer to ``question`` in a conversation (a new one when None); ``turns``:
        earlier turns kept in the prompt; ``max_tokens`` (at most answer_max_tokens, the person's
        ceiling) and ``temperature``: for this answer only (default: the settings); ``earlier``:
        the turns before the question of a conversation not stored yet (an API client's), stored
        with it in the new conversation. Nothing is stored until the question can be answered:
        a refusal (PromptTooLong, RuntimeUnavailable, KeyError) leaves the store as it was."""
        limit = self.settings.answer_max_tokens
        max_tokens = limit if max_tokens is None else max(1, min(max_tokens, limit))
        temperature = self.settings.temperature if temperature is None else temperature
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        if any(t.role not in ("user", "assistant") for t in earlier):
            raise ValueError("a conversation holds only questions (user) and answers (assistant)")
        if conversation_id is not None and self.conversations.get(conversation_id) is None:
            raise KeyError(f"no conversation with id {conversation_id}")
        history = self.history(conversation_id, turns, earlier)
        started = time.perf_counter()
        decision = controller.before(question, [e.name for e in self.engines], self.settings.controller,
                                     episodic=self.episodic is not None)
        recalled = self.recall(question, conversation_id) if decision.episodic else []
        contributions = self.contributions(Query(text=question, history=history)) if decision.memory else []
        decision = self.decide(question, decision, contributions, bool(history))
        recalled = recalled if decision.episodic else []  # the bandit chose to answer without memory
        decision = controller.after(decision, contributions, recalled=bool(recalled))
        contributions = controller.active(contributions, decision)
        runtime, learned, adapters = self.answering_runtime(contributions)
        plan, bias, notes = self.prompt(question, contributions, runtime, history, answer_tokens=max_tokens,
                                        recalled=[r.passage() for r in recalled], learned=bool(learned))
        if decision.episodic:
            notes.append(f"recalled {len(recalled)} exchange(s) from earlier conversations")
        asked = self.conversations.start_question(conversation_id, question,
                                                  [(t.role, t.content) for t in earlier])
        conversation_id = asked.conversation_id
        yield Sources(conversation_id=conversation_id, question_id=asked.id,
                      citations=citations_for(plan.passages, ""), notes=notes, consulted=decision.memory)
        request = GenerationRequest(messages=plan.messages, max_tokens=max_tokens,
                                    temperature=temperature, logit_bias=bias, adapters=adapters)
        pieces: list[str] = []
        finished = False
        failure: RuntimeCrashed | None = None
        stream = runtime.stream(request)
        try:
            for piece in stream:
                pieces.append(piece)
                yield Delta(text=piece)
            finished = True
        except RuntimeCrashed as exc:  # the model's process died: keep what it said, say why
            failure, finished = exc, True
        finally:
            stream.close()
            answer = "".join(pieces).strip()
            if answer or finished:
                meta = {"backend": runtime.name, "model": runtime.model_name,
                        "seconds": round(time.perf_counter() - started, 3),
                        "logit_bias": bias is not None, "notes": notes,
                        "history_messages": plan.history_messages, "learned_states": learned,
                        "adapters": len(adapters),
                        "controller": decision.model_dump(), **engine_meta(contributions)}
                if recalled:
                    meta["recalled"] = [r.model_dump(include={"conversation_id", "question_id", "answer_id",
                                                              "stretch_id", "similarity", "recency", "score"})
                                        for r in recalled]
                if failure is not None:
                    meta.update(error=str(failure), finish_reason="error")
                elif finished:
                    result = stream.result
                    meta.update(prompt_tokens=result.prompt_tokens,
                                completion_tokens=result.completion_tokens,
                                first_piece_seconds=result.first_piece_seconds,
                                finish_reason=result.finish_reason)
                else:
                    meta["stopped"] = True
                if finished and failure is None and answer and decision.critic:
                    answer, checked = self.check(answer, [p.text for p in plan.passages], question, runtime,
                                                 request, [p.support for p in plan.passages])
                    meta.update(checked, seconds=round(time.perf_counter() - started, 3))
                cites = citations_for(plan.passages, answer, question)
                stored = self.conversations.add_answer(conversation_id, answer, cites, meta)
                if self.on_answer is not None:
                    try:
                        self.on_answer(stored)
                    except Exception as exc:  # noqa: BLE001 - logging the decision must not cost the answer
                        log.warning("the controller's decision was not logged: %s", exc)
        if finished:
            yield Done(message=stored)

    def recall(self, question: str, conversation_id: int | None) -> list[RecalledExchange]:
        """Earlier conversations' exchanges for a question that refers back to them; a recall
        that fails costs the answer nothing but the recall."""
        assert self.episodic is not None
        try:
            return self.episodic.recall(question, exclude_conversation=conversation_id)
        except Exception as exc:  # noqa: BLE001 - an answer without recall beats no answer
            log.warning("recalling earlier conversations failed: %s", exc)
            return []

    def decide(self, question: str, decision: controller.Decision, contributions: list[Contribution],
               follow_up: bool) -> controller.Decision:
        """The decision with its context (what the bandit learns from, logged for every policy);
        under the bandit policy, its arm too."""
        from app.chat.bandit import context as bandit_context  # numpy, loaded with the first answer

        x = bandit_context(question, contributions, follow_up, controller.SMALL_TALK,
                           controller.is_small_talk(question))
        if decision.policy != "bandit" or self.bandit is None:
            return decision.model_copy(update={"context": x})
        choice = self.bandit.choose(x, decision.rules_arm, self.settings.controller_explore,
                                    self.settings.controller_warmup)
        return controller.choose(decision, choice, x)

    def criticise(self, answer: str, passages: list[str], question: str) -> dict[str, Any]:
        """The critic's verdicts for the answer's meta (``critic``: its report, ``unsupported``:
        how many sentences no source supports); nothing when the setting is off. A critic that
        fails leaves the answer unchecked and says why: it never costs the answer."""
        mode = self.settings.critic
        if mode == "off":
            return {}
        try:
            report = self.critic_report(answer, passages, question)
        except Exception as exc:  # noqa: BLE001 - a broken check must not lose the answer
            log.warning("the critic failed: %s", exc)
            return {"critic": {"mode": mode, "note": f"the critic failed: {exc}"}}
        return {"critic": report.model_dump(), "unsupported": report.unsupported}

    def critic_report(self, answer: str, passages: list[str], question: str) -> CriticReport:
        from app.chat.critic import ModelJudge, critique

        mode = self.settings.critic
        judge = ModelJudge(self.runtime.get()) if mode == "model" and passages else None
        return critique(answer, passages, question, mode, judge)

    def check(self, answer: str, passages: list[str], question: str, runtime: Runtime,
              request: GenerationRequest, evidence: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """(the answer delivered, the critic's part of its meta). With ``critic_regenerate`` on,
        an answer the critic flagged loses its unsupported sentences or is regenerated once from
        the supported content (``app.chat.revision``); ``meta["revision"]`` says what changed. A
        regeneration that fails delivers the draft, flagged, and says why. ``passages``: the
        sources as the prompt held them; ``evidence``: what of each the critic counts as support
        (``Passage.support``; default: all of it)."""
        from app.chat.critic import CriticReport
        from app.chat.revision import revise

        evidence = passages if evidence is None else evidence
        checked = self.criticise(answer, evidence, question)
        mode = self.settings.critic_regenerate
        if mode == "off" or not checked.get("unsupported"):
            return answer, checked

        def generate(messages: list[ChatMessage]) -> str:
            again = request.model_copy(update={"messages": messages, "temperature": 0.0, "seed": 0})
            return runtime.generate(again).text

        try:
            final, report, revision = revise(answer, CriticReport.model_validate(checked["critic"]), question,
                                             passages, mode, generate,
                                             lambda text: self.critic_report(text, evidence, question))
        except Exception as exc:  # noqa: BLE001 - the draft, flagged, beats no answer
            log.warning("revising the answer failed: %s", exc)
            checked["critic"]["note"] = f"revising the answer failed: {exc}"
            return answer, checked
        meta: dict[str, Any] = {"critic": report.model_dump(), "unsupported": report.unsupported}
        if revision is not None:
            meta["revision"] = revision.model_dump()
        return final, meta

    def conversation_for(self, turns: Sequence[ChatMessage]) -> int | None:
        """The conversation a client continues when it sends the whole exchange so far (as
        OpenAI-style clients do): the most recent stored one whose messages are exactly
        ``turns``, so that the history of the next question comes from the store, as in the app.
        None when there are no turns or none matches: ``ask(..., earlier=turns)`` then stores
        them (answers marked ``written_by: client``) with the question, once it is answered."""
        if not turns:
            return None
        wanted = [(t.role, t.content.strip()) for t in turns]
        for row in self.conversations.list(MATCH_RECENT):
            if row.messages == len(wanted) and wanted == [
                    (m.role, m.content.strip()) for m in self.conversations.messages(row.id)]:
                return row.id
        return None

    def continue_answer(self, conversation_id: int) -> Iterator[ChatEvent]:
        """Ask for the rest of the conversation's last answer (one that stopped at the token
        limit): a follow-up turn, with at least that answer in the prompt so the model goes on
        from it even when no history is kept otherwise."""
        return self.ask(CONTINUE_QUESTION, conversation_id, max(1, self.settings.history_turns))

    def answer(self, question: str, conversation_id: int | None = None) -> Done:
        """``ask`` without streaming: the stored answer."""
        done = None
        for event in self.ask(question, conversation_id):
            if isinstance(event, Done):
                done = event
        assert done is not None
        return done

    def draft(self, question: str, bullets: list[str], skip: frozenset[str] = frozenset(),
              max_tokens: int | None = None) -> Draft:
        """The answer ``ask`` would give to ``question`` alone (greedy), with ``bullets`` added to
        the playbook strategies and the engines named in ``skip`` left out; nothing is stored.
        Playbook replays and offline training answer through this, exactly like chat."""
        contributions = contribute_all([e for e in self.engines if e.name not in skip], Query(text=question))
        runtime = self.runtime.get()
        plan, bias, _ = self.prompt(question, contributions, runtime, [], bullets)
        request = GenerationRequest(messages=plan.messages, temperature=0.0, seed=0, logit_bias=bias,
                                    max_tokens=max_tokens or self.settings.answer_max_tokens)
        return Draft(text=runtime.generate(request).text.strip(), passages=plan.passages)

    def feedback(self, message_id: int, rating: Rating | None,
                 correction: str | None = None) -> MessageRow:
        """Record feedback; engines that learn from it are told (they queue background work).
        KeyError: no answer ``message_id``; ClientAnswer: an API client wrote it, not Engram."""
        shown = self.conversations.message(message_id)
        if shown is not None and shown.written_by_client:
            raise ClientAnswer(f"answer {message_id} was written by the API client that sent it as an "
                               "earlier turn, not by Engram: only Engram's own answers can be rated")
        message = self.conversations.set_feedback(message_id, rating, correction)
        if self.on_feedback is not None:
            self.on_feedback(message)
        return message


def engine_meta(contributions: list[Contribution]) -> dict[str, Any]:
    """What engines asked to keep with the answer, by engine (``meta["engines"]``)."""
    kept = {c.engine: c.meta for c in contributions if c.meta}
    return {"engines": kept} if kept else {}
