"""The meta-controller: which memories a question needs, decided per question (rules for now).

Without it every question pays for every memory: the engines are all consulted, and once anything
is learned into weights the torch model answers every question, several times slower than
llama.cpp, even one the learned weights are routed nothing for (then it answers exactly as the
original model would). The controller decides, and the decision is stored with the answer
(``meta["controller"]``) and shown under it:

- **early exit**: small talk ("thanks!", "good morning") is answered from the conversation alone,
  without consulting retrieval, the playbook or learned weights;
- **learned states**: an engine's learned weights are activated only where that engine routes
  the question to them (``Contribution.meta["routed_share"]`` above 0); otherwise the chat runtime
  answers;
- **critic**: it runs where the prompt held passages to check the answer against;
- **episodic recall**: only a question that refers back to an earlier conversation ("as I told
  you", "last time", "we talked about") has earlier conversations searched (``app/memory``).

``controller = "off"`` consults everything, always, as before.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from engines.base import Contribution
from store.conversations import ConversationStore

Policy = Literal["rules", "off"]

SMALL_TALK = frozenset("""
hi hello hey hiya howdy yo greetings good morning afternoon evening night day
thanks thank you thx ty cheers much very so lot a many great nice cool awesome perfect
ok okay k alright fine sure yes yeah yep no nope got it understood
bye goodbye later see you ciao
""".split())
"""Words a greeting, a thank-you, an acknowledgement or a farewell is made of."""

SMALL_TALK_WORDS = 6
_WORD = re.compile(r"[a-z']+")


_REFERS_BACK = re.compile(
    r"\b(earlier|last time|previous(ly)?|the other day|yesterday|last week|remember|"
    r"i (told|tell|said|say|mentioned|mention|asked|gave)|i've (told|said|mentioned)|you (said|say|told|tell|answered|suggested|mentioned)|"
    r"we (talked|discussed|spoke|chatted|said)|our (last|previous|earlier) (chat|conversation|talk))\b")


def refers_back(question: str) -> bool:
    """The question points at an earlier conversation ("what did I tell you about ...")."""
    return _REFERS_BACK.search(question.lower()) is not None


def is_small_talk(question: str) -> bool:
    """A short message made only of greeting, thanks, acknowledgement or farewell words."""
    words = _WORD.findall(question.lower())
    return 0 < len(words) <= SMALL_TALK_WORDS and "?" not in question and all(w in SMALL_TALK for w in words)


class Decision(BaseModel):
    """What one question was given, and why (stored with the answer)."""

    policy: Policy
    memory: bool = Field(True, description="False: early exit, no memory consulted.")
    consulted: list[str] = Field(default_factory=list, description="Engines asked to contribute.")
    learned: list[str] = Field(default_factory=list, description="Learned states activated.")
    skipped_learned: list[str] = Field(default_factory=list,
                                       description="Learned states the question was routed nothing of.")
    critic: bool = False
    episodic: bool = Field(False, description="Earlier conversations were searched for the question.")
    reasons: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        """One line for under the answer."""
        if not self.memory:
            return "memory: none needed (small talk)"
        parts = [f"memory: {', '.join([*self.consulted, *(['earlier conversations'] if self.episodic else [])]) or 'none'}"]
        if self.learned:
            parts.append(f"learned weights: {', '.join(self.learned)}")
        elif self.skipped_learned:
            parts.append("learned weights: not needed")
        return " · ".join(parts)


def before(question: str, engines: list[str], policy: Policy, episodic: bool = False) -> Decision:
    """The decision before any engine runs: consult them, or exit early; ``episodic``: the
    episodic tier is on, searched for questions that refer back (always, with the policy off)."""
    if policy == "rules" and is_small_talk(question):
        return Decision(policy=policy, memory=False,
                        reasons=["small talk: answered from the conversation alone"])
    recall = episodic and (policy == "off" or refers_back(question))
    reasons = ["refers back to an earlier conversation: searched them"] if recall and policy == "rules" else []
    return Decision(policy=policy, consulted=list(engines), episodic=recall, reasons=reasons)


def after(decision: Decision, contributions: list[Contribution]) -> Decision:
    """The decision once the engines contributed: which learned states answer, and the critic."""
    learned, skipped, reasons = [], [], list(decision.reasons)
    for c in contributions:
        if not c.learned_states:
            continue
        share = c.meta.get("routed_share")
        if decision.policy == "rules" and share is not None and float(share) <= 0.0:
            skipped += c.learned_states
            reasons.append(f"{c.engine}: the question is about nothing it learned (routed 0%), "
                           "so the original model answers on the chat runtime")
        else:
            learned += c.learned_states
    critic = decision.policy == "off" or any(c.passages for c in contributions)
    return decision.model_copy(update={"learned": learned, "skipped_learned": skipped, "critic": critic,
                                       "reasons": reasons})


def active(contributions: list[Contribution], decision: Decision) -> list[Contribution]:
    """The contributions as the answer uses them: a learned state left inactive takes its notes
    (which describe it) along."""
    kept = set(decision.learned)
    return [c.model_copy(update={"learned_states": [], "notes": [], "adapters": []})
            if c.learned_states and not kept.intersection(c.learned_states) else c for c in contributions]


class DecisionRow(BaseModel):
    """One answer in the app's table of decisions."""

    when: str
    question: str
    memory: str
    learned: str
    critic: str
    answered_by: str
    seconds: float | None


def decision_rows(conversations: ConversationStore, limit: int = 20) -> list[DecisionRow]:
    """The controller's decisions for the newest answers, newest first (answers from before the
    controller existed say so)."""
    rows = []
    for question, message in conversations.recent_answers(limit):
        meta = message.meta
        raw = meta.get("controller")
        decision = Decision.model_validate(raw) if raw else None
        if decision is None:
            memory, learned, critic = "(before the controller)", "", ""
        elif not decision.memory:
            memory, learned, critic = "none (small talk)", "", "off"
        else:
            memory = ", ".join([*decision.consulted, *(["earlier conversations"] if decision.episodic else [])]) or "none"
            learned = ", ".join(decision.learned) or ("not needed" if decision.skipped_learned else "")
            critic = "on" if decision.critic else "off (no sources)"
        rows.append(DecisionRow(when=message.created_at, question=question, memory=memory, learned=learned,
                                critic=critic, answered_by=str(meta.get("backend", "")),
                                seconds=meta.get("seconds")))
    return rows
