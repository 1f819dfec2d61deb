"""The meta-controller's contextual bandit: its update maths (importance weights, propensities,
off-policy value), that it learns to prefer the better arm on a run of its own code, that its
model survives a restart, and feedback -> reward -> update through the real store and queue."""

from __future__ import annotations

import numpy as np
import pytest

from app.chat import controller
from app.chat.bandit import ARMS, FEATURES, BanditPolicy, RewardWeights, load_bandit, reward
from app.chat.controller import Decision
from app.jobs.controller_reward import ControllerRewards, log_decision
from models.linear_bandit import MAX_WEIGHT, LinearBandit, importance_weight, ips_value, sample
from store.controller_decisions import ControllerDecisionStore
from store.conversations import ConversationStore
from store.database import Database
from store.jobs import CONTROLLER, JobQueue
from tests.helpers import open_engram


def test_importance_weights_and_ips_value():
    assert importance_weight(0.25) == 4.0 and importance_weight(1.0) == 1.0
    assert importance_weight(0.001) == MAX_WEIGHT  # clipped
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            importance_weight(bad)
    # Logged: rewards 1, 0, 1 with propensities 0.5, 0.25, 1.0; the target policy gives those arms 1, 0, 0.5.
    assert ips_value([1, 0, 1], [0.5, 0.25, 1.0], [1, 0, 0.5]) == pytest.approx((2 + 0 + 0.5) / 3)
    # Re-evaluating the logging policy itself gives the plain mean reward.
    assert ips_value([0.2, 0.8], [0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.5)


def test_policy_probabilities_sum_to_one_and_follow_the_rules_until_warm():
    bandit = LinearBandit(["a", "b", "c"], 2)
    probs = bandit.policy([1.0, 0.0], prior="b", min_samples=3, epsilon=0.3)
    assert probs.sum() == pytest.approx(1.0) and probs[1] == pytest.approx(0.7 + 0.1) and probs[0] == pytest.approx(0.1)
    for _ in range(3):
        bandit.update("a", [1.0, 0.0], 1.0, 0.5)  # "a" pays more, but the rules' arm has no data yet
    assert bandit.greedy([1.0, 0.0], "b", 3) == "b"
    for _ in range(3):
        bandit.update("b", [1.0, 0.0], 0.2, 1.0)
    assert bandit.greedy([1.0, 0.0], "b", 3) == "a"
    assert bandit.weight.tolist() == [6.0, 3.0, 0.0] and bandit.count.tolist() == [3, 3, 0]
    # Weighted ridge: A = I + w x x^T, b = w r x, so arm a's prediction at x is 6 / 7.
    assert bandit.predict([1.0, 0.0])[0] == pytest.approx(6 / 7)


def test_a_revised_reward_equals_learning_the_new_one_from_the_start():
    revised, fresh = LinearBandit(["a", "b"], 3), LinearBandit(["a", "b"], 3)
    x = [1.0, 0.5, -0.2]
    revised.update("b", x, 0.3, 0.25)
    revised.revise("b", x, 0.3, -0.4, 0.25)
    fresh.update("b", x, -0.4, 0.25)
    assert np.allclose(revised.a, fresh.a) and np.allclose(revised.b, fresh.b)
    assert np.allclose(LinearBandit.from_json(revised.to_json()).predict(x), fresh.predict(x))


def test_the_bandit_learns_the_better_arm_per_context_from_its_own_exploration():
    """Contexts of two kinds; in each a different arm pays best (with noise). The bandit starts from
    the rules' arm, explores with epsilon, learns from (x, arm, reward, propensity) and ends up
    choosing the better arm in both; its greedy policy's IPS value on the log beats the rules'."""
    rng = np.random.default_rng(0)
    store: dict = {"model": None}
    policy = BanditPolicy(lambda: store["model"], seed=1)
    pays = {0: {"exit": 0.9, "retrieve": 0.3, "retrieve_critic": 0.35, "routed": 0.4, "all": 0.2},
            1: {"exit": 0.1, "retrieve": 0.5, "retrieve_critic": 0.8, "routed": 0.6, "all": 0.55}}
    log = []
    for _ in range(400):
        kind = int(rng.integers(2))
        x = [1.0, 1.0 - kind, 1.0 - kind, 0.1 + 0.6 * kind + 0.05 * rng.standard_normal(), 0.0, 0.0,
             0.2 + 0.2 * kind, 0.0]
        choice = policy.choose(x, "routed", epsilon=0.3, warmup=5)
        assert sum(choice.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        assert choice.propensity == pytest.approx(choice.probabilities[choice.arm], abs=1e-4)
        r = pays[kind][choice.arm] + 0.1 * rng.standard_normal()
        bandit = load_bandit(store["model"])
        bandit.update(choice.arm, x, r, choice.propensity)
        store["model"] = bandit.to_json()
        log.append((x, kind, choice.arm, r, choice.propensity))
    bandit = load_bandit(store["model"])
    assert bandit.greedy(next(e[0] for e in log if e[1] == 0), "routed", 5) == "exit"
    assert bandit.greedy(next(e[0] for e in log if e[1] == 1), "routed", 5) == "retrieve_critic"
    greedy = [float(bandit.greedy(x, "routed", 5) == arm) for x, _, arm, _, _ in log]
    rules = [float(arm == "routed") for _, _, arm, _, _ in log]
    rewards, props = [e[3] for e in log], [e[4] for e in log]
    assert ips_value(rewards, props, greedy) > ips_value(rewards, props, rules) + 0.2


def test_sampling_is_seeded():
    probs = np.array([0.1, 0.2, 0.7])
    draws = [[sample(probs, g) for _ in range(20)] for g in (np.random.default_rng(3), np.random.default_rng(3))]
    assert draws[0] == draws[1]


def test_the_reward_follows_hmst():
    weights = RewardWeights(accuracy=1.0, latency=0.1, compute=0.5, calibration=0.2)
    value, parts = reward(accuracy=1.0, seconds=2.0, compute=0.4, confidence=0.5, weights=weights)
    assert value == pytest.approx(1.0 - 0.2 - 0.2 + 0.2 * 0.5) and parts["calibration"] == 0.5


def answered(conversations: ConversationStore, question: str, meta: dict) -> int:
    conversation = conversations.create(question).id
    conversations.add_question(conversation, question)
    return conversations.add_answer(conversation, "The ferry leaves at 06:40 from pier nine.", [], meta).id


def bandit_meta(arm: str, propensity: float) -> dict:
    x = [1.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.3, 0.0]
    decision = Decision(policy="bandit", consulted=["rag"], arm=arm, rules_arm="routed", propensity=propensity,
                        chosen_by="bandit: exploring", context=x, probabilities={arm: propensity}, critic=True)
    return {"controller": decision.model_dump(), "seconds": 1.5, "prompt_tokens": 300, "completion_tokens": 20,
            "critic": {"mode": "rules", "sentences": [{"sentence": "s", "supported": True}]}}


def run_jobs(db: Database, handler: ControllerRewards) -> int:
    queue, n = JobQueue(db), 0
    while jobs := queue.claim(CONTROLLER):
        handler(jobs[0], lambda f, m: None)
        queue.finish([jobs[0].id])
        n += 1
    return n


def test_feedback_becomes_a_reward_the_bandit_learns_and_the_model_survives_a_restart(tmp_path):
    db = Database(tmp_path / "store.db")
    conversations, queue = ConversationStore(db), JobQueue(db)
    weights = RewardWeights()
    handler = ControllerRewards(db, lambda question: ["The ferry leaves at 06:40 from pier nine."], lambda: weights)
    message = conversations.message(answered(conversations, "When does the ferry leave?", bandit_meta("retrieve", 0.25)))
    assert log_decision(db, queue, message) and run_jobs(db, handler) == 1
    logged = ControllerDecisionStore(db).for_message(message.id)
    assert logged.reward_source == "self" and logged.reward_parts["accuracy"] == 1.0  # the critic supported it
    assert logged.learned_reward == logged.reward == pytest.approx(1.0 - 0.05 * 1.5 - 0.1 * 0.32 + 0.2)
    first = load_bandit(ControllerDecisionStore(db).model())
    k = ARMS.index("retrieve")
    assert first.count[k] == 1 and first.weight[k] == 4.0  # 1 / propensity

    conversations.set_feedback(message.id, "down")  # what the app's feedback path stores, then queues
    from app.jobs.controller_reward import queue_reward
    queue_reward(queue, message.id)
    assert run_jobs(db, handler) == 1
    logged = ControllerDecisionStore(db).for_message(message.id)
    assert logged.reward_source == "feedback" and logged.reward_parts["accuracy"] == 0.0
    assert logged.learned_reward == logged.reward == pytest.approx(0.0 - 0.075 - 0.032 + 0.2 * 0.0)
    db.close()

    reopened = Database(tmp_path / "store.db")  # a restart: the model comes back from the store
    after = load_bandit(ControllerDecisionStore(reopened).model())
    x = logged.context
    assert after.count[k] == 1  # revised in place, not counted twice
    assert after.predict(x)[k] < first.predict(x)[k]
    expected = LinearBandit(ARMS, len(FEATURES))
    expected.update("retrieve", x, logged.reward, 0.25)
    assert np.allclose(after.predict(x), expected.predict(x))
    reopened.close()


def test_rules_and_off_decisions_are_logged_with_propensity_one(tmp_path):
    rules = controller.after(controller.before("thanks!", ["rag"], "rules"), [])
    off = controller.after(controller.before("thanks!", ["rag"], "off"), [])
    assert (rules.arm, rules.propensity, rules.memory) == ("exit", 1.0, False)
    assert (off.arm, off.propensity, off.memory, off.critic) == ("all", 1.0, True, True)
    db = Database(tmp_path / "store.db")
    conversations, queue = ConversationStore(db), JobQueue(db)
    for decision in (rules, off):
        meta = {"controller": decision.model_copy(update={"context": [1.0] + [0.0] * 7}).model_dump()}
        assert log_decision(db, queue, conversations.message(answered(conversations, "thanks!", meta)))
    logged = ControllerDecisionStore(db).all()
    assert [(d.policy, d.arm, d.propensity) for d in logged] == [("rules", "exit", 1.0), ("off", "all", 1.0)]
    db.close()


@pytest.mark.slow
def test_chat_under_the_bandit_says_who_chose_and_learns_in_the_worker(embedder, tmp_path, isolated_dirs):
    from ui.chat_tab import render_answer

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ferry.txt").write_text("The ferry to Oskel Isle leaves at 06:40 from pier nine.\n")
    engram = open_engram(embedder, answer_max_tokens=16, temperature=0, controller="bandit")
    try:
        engram.ingest([notes])
        engram.run_pending()
        message = engram.chat.answer("When does the ferry to Oskel Isle leave?").message
        decision = Decision.model_validate(message.meta["controller"])
        assert decision.policy == "bandit" and decision.arm in ARMS and decision.chosen_by.startswith("bandit")
        assert decision.propensity == pytest.approx(decision.probabilities[decision.arm], abs=1e-4)
        assert len(decision.context) == len(FEATURES) and decision.context[3] > 0.3  # the ferry passage's cosine
        assert f"(p={decision.propensity:.2f})" in render_answer(message.content, message.citations, message.meta)
        assert engram.decisions()[0].chosen_by == f"bandit: {decision.arm} (p={decision.propensity:.2f})"
        assert engram.queue.pending_count(CONTROLLER) == 1  # learning waits for the worker
        engram.chat.feedback(message.id, "up")
        engram.worker.drain(kinds=[CONTROLLER])
        logged = ControllerDecisionStore(engram.db).for_message(message.id)
        assert logged.reward_source == "feedback" and logged.reward_parts["accuracy"] == 1.0
        assert load_bandit(ControllerDecisionStore(engram.db).model()).count.sum() == 1
    finally:
        engram.close()
