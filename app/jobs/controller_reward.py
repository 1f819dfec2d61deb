"""Controller jobs: the reward of each answer, learned by the meta-controller's bandit.

Every answer's decision is logged with its propensity when the answer is stored
(``log_decision``), and a ``controller`` job is queued; feedback on the answer queues it again.
The job runs in the worker, never in the answer's path: it scores the answer (accuracy from the
person's feedback when there is some, else self-evaluation: the share of the answer's sentences
the rules critic finds supported by the passages retrieved for the question), turns it into the
HMST reward (``app.chat.bandit.reward``) and updates the bandit, weighted by 1 / propensity. A
reward that changes later (feedback after self-evaluation) revises the sample in place, so each
answer counts once, with its latest reward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.chat.bandit import RewardWeights, load_bandit, reward
from app.chat.controller import Decision
from app.chat.critic import critique
from engines.feedback import FeedbackInput, read_feedback
from store.controller_decisions import ControllerDecisionStore
from store.conversations import MessageRow
from store.database import Database
from store.jobs import CONTROLLER, Job, JobQueue

log = logging.getLogger(__name__)
Search = Callable[[str], list[str]]


def log_decision(db: Database, queue: JobQueue, message: MessageRow) -> bool:
    """Log the decision stored with a finished answer and queue its reward; False for answers
    with no decision (before the controller) or cut short (an error, stopped)."""
    raw = message.meta.get("controller")
    if not raw or message.meta.get("error") or message.meta.get("stopped"):
        return False
    decision = Decision.model_validate(raw)
    ControllerDecisionStore(db).log(message.id, decision.policy, decision.arm or decision.rules_arm,
                                    decision.rules_arm or decision.arm, decision.propensity, decision.context,
                                    decision.probabilities)
    queue_reward(queue, message.id)
    return True


def queue_reward(queue: JobQueue, message_id: int) -> None:
    queue.enqueue(CONTROLLER, str(message_id), {"message_id": message_id})


def supported_share(report_sentences: list[dict]) -> float | None:
    """Share of sentences the critic supported; None when it checked none."""
    if not report_sentences:
        return None
    return sum(bool(s.get("supported", True)) for s in report_sentences) / len(report_sentences)


def confidence_shown(meta: dict) -> float:
    """How much the answer, as shown, claims to be right: the critic's supported share when it
    checked sentences; an unchecked answer is shown unqualified (1)."""
    share = supported_share((meta.get("critic") or {}).get("sentences", []))
    return 1.0 if share is None else share


def accuracy_of(answer: FeedbackInput, search: Search) -> tuple[float, str]:
    """(accuracy, where from): the person's feedback (a correction or thumbs down: 0, thumbs up: 1),
    else self-evaluation: the rules critic's supported share against the passages the question
    retrieves now (the answer's own check where it had one); 1 when nothing checkable was said."""
    if answer.correction or answer.rating == "down":
        return 0.0, "feedback"
    if answer.rating == "up":
        return 1.0, "feedback"
    share = supported_share((answer.meta.get("critic") or {}).get("sentences", []))
    if share is None:
        report = critique(answer.answer, search(answer.question), answer.question, "rules")
        share = supported_share([v.model_dump() for v in report.sentences])
    return (1.0 if share is None else share), "self"


class ControllerRewards:
    """The worker's handler for ``controller`` jobs."""

    def __init__(self, db: Database, search: Search, weights: Callable[[], RewardWeights]) -> None:
        self.db = db
        self.search = search
        self.weights = weights

    def __call__(self, job: Job, progress: Callable[[float, str], None]) -> None:
        message_id = int(job.payload["message_id"])
        decisions = ControllerDecisionStore(self.db)
        logged = decisions.for_message(message_id)
        answer = read_feedback(self.db, message_id)
        if logged is None or answer is None:
            progress(1.0, "skipped: no decision logged for this answer, or it was deleted")
            return
        accuracy, source = accuracy_of(answer, self.search)
        meta = answer.meta
        tokens = (int(meta.get("prompt_tokens") or 0) + int(meta.get("completion_tokens") or 0)) / 1000
        value, parts = reward(accuracy, float(meta.get("seconds") or 0.0), tokens, confidence_shown(meta),
                              self.weights())
        bandit = load_bandit(decisions.model())
        if logged.learned_reward is None:
            bandit.update(logged.arm, logged.context, value, logged.propensity) if logged.context else None
        else:
            bandit.revise(logged.arm, logged.context, logged.learned_reward, value, logged.propensity)
        decisions.record_reward(logged.id, value, parts, source, bandit.to_json() if logged.context else None)
        progress(1.0, f"reward {value:.3f} ({source}) for arm '{logged.arm}'")
        log.info("controller: answer %d, arm %s, reward %.3f (%s)", message_id, logged.arm, value, source)
