"""The meta-controller: which memories a question needs, decided per question.

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
- **critic**: it runs where the prompt held passages (or recalled exchanges) to check the answer against;
- **episodic recall**: only a question that refers back to an earlier conversation ("as I told
  you", "last time", "we talked about") has earlier conversations searched (``app/memory``).

Each decision is one of the arms in ``app.chat.bandit`` (``exit`` for small talk, ``routed``
otherwise). ``controller = "bandit"`` consults the engines, then lets a contextual bandit choose
the arm from what they found, starting from the rules' choice and exploring a little; its
propensity is stored with the decision (``app.jobs.controller_reward`` learns from the rewards).
``controller = "off"`` consults everything, always, as before (the arm ``all``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from engines.base import Contribution
from store.conversations import ConversationStore

if TYPE_CHECKING:
    from app.chat.bandit import Choice  # numpy: not imported where only the rules run

Policy = Literal["rules", "bandit", "off"]

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
    arm: str = Field("", description="The arm taken (app.chat.bandit.ARMS; empty before the bandit).")
    rules_arm: str = Field("", description="The arm the rules would take.")
    propensity: float = Field(1.0, description="The arm's probability under the choosing policy.")
    chosen_by: str = Field("", description="Which policy chose, and how.")
    context: list[float] = Field(default_factory=list, description="The bandit's features (FEATURES).")
    probabilities: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        """One line for under the answer."""
        chooser = f" · {self.chosen_by} (p={self.propensity:.2f})" if self.policy == "bandit" else ""
        if not self.memory:
            return ("memory: none needed (small talk)" if self.policy == "rules"
                    else f"memory: none ({self.arm})") + chooser
        parts = [f"memory: {', '.join([*self.consulted, *(['earlier conversations'] if self.episodic else [])]) or 'none'}"]
        if self.learned:
            parts.append(f"learned weights: {', '.join(self.learned)}")
        elif self.skipped_learned:
            parts.append("learned weights: not needed")
        if self.policy == "bandit" and not self.critic:
            parts.append("critic: off")
        return " · ".join(parts) + chooser


def rules_arm(question: str) -> str:
    """The arm the rules take: ``exit`` for small talk, ``routed`` otherwise."""
    return "exit" if is_small_talk(question) else "routed"


def before(question: str, engines: list[str], policy: Policy, episodic: bool = False) -> Decision:
    """The decision before any engine runs: consult them, or (rules) exit early; ``episodic``:
    the episodic tier is on, searched for questions that refer back (always, with the policy off)."""
    prior = rules_arm(question)
    if policy == "rules" and prior == "exit":
        return Decision(policy=policy, memory=False, arm="exit", rules_arm=prior, chosen_by="rules",
                        reasons=["small talk: answered from the conversation alone"])
    recall = episodic and (policy == "off" or refers_back(question))
    reasons = ["refers back to an earlier conversation: searched them"] if recall and policy == "rules" else []
    arm = {"rules": "routed", "off": "all"}.get(policy, "")
    return Decision(policy=policy, consulted=list(engines), episodic=recall, reasons=reasons, arm=arm,
                    rules_arm=prior, chosen_by="" if policy == "bandit" else policy)


def choose(decision: Decision, choice: Choice, x: list[float]) -> Decision:
    """The bandit's arm, its propensity and the context it chose from, in the decision."""
    reasons = list(decision.reasons) + [f"bandit chose '{choice.arm}' (the rules: '{decision.rules_arm}'), "
                                        f"{choice.chosen_by.removeprefix('bandit: ')}"]
    exits = choice.arm == "exit"
    return decision.model_copy(update={"arm": choice.arm, "propensity": choice.propensity, "context": x,
                                       "chosen_by": choice.chosen_by, "probabilities": choice.probabilities,
                                       "memory": not exits, "reasons": reasons,
                                       "consulted": [] if exits else decision.consulted,
                                       "episodic": False if exits else decision.episodic})


def after(decision: Decision, contributions: list[Contribution], recalled: bool = False) -> Decision:
    """The decision once the engines contributed, following its arm: which learned states answer,
    and the critic (``recalled``: earlier exchanges are sources too, checked like passages)."""
    arm = decision.arm
    if arm == "exit":
        return decision.model_copy(update={"critic": False})
    learned, skipped, reasons = [], [], list(decision.reasons)
    for c in contributions:
        if not c.learned_states:
            continue
        share = c.meta.get("routed_share")
        if arm in ("retrieve", "retrieve_critic"):
            skipped += c.learned_states
        elif arm == "routed" and share is not None and float(share) <= 0.0:
            skipped += c.learned_states
            reasons.append(f"{c.engine}: the question is about nothing it learned (routed 0%), "
                           "so the original model answers on the chat runtime")
        else:
            learned += c.learned_states
    passages = recalled or any(c.passages for c in contributions)
    critic = arm == "all" or (arm in ("routed", "retrieve_critic") and passages)
    return decision.model_copy(update={"learned": learned, "skipped_learned": skipped, "critic": critic,
                                       "reasons": reasons})


def active(contributions: list[Contribution], decision: Decision) -> list[Contribution]:
    """The contributions as the answer uses them: none after an early exit; a learned state left
    inactive takes its notes (which describe it) along."""
    if not decision.memory:
        return []
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
    chosen_by: str
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
        chosen_by = "" if decision is None else decision.policy if decision.policy != "bandit" else (
            f"bandit: {decision.arm} (p={decision.propensity:.2f})")
        if decision is None:
            memory, learned, critic = "(before the controller)", "", ""
        elif not decision.memory:
            memory, learned, critic = "none (small talk)" if decision.policy == "rules" else "none", "", "off"
        else:
            memory = ", ".join([*decision.consulted, *(["earlier conversations"] if decision.episodic else [])]) or "none"
            learned = ", ".join(decision.learned) or ("not needed" if decision.skipped_learned else "")
            critic = "on" if decision.critic else "off (no sources)"
        rows.append(DecisionRow(when=message.created_at, question=question, memory=memory, learned=learned,
                                critic=critic, chosen_by=chosen_by, answered_by=str(meta.get("backend", "")),
                                seconds=meta.get("seconds")))
    return rows
