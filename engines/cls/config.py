"""Settings of the CLS engine (the ``[cls]`` section of config.toml).

Most defaults are first choices, not bench winners. The experts' place and rank (``targets``,
``rank``) were chosen on the templated tiny set, against four passes of the old down_proj rank-8
experts (README.md, "Learning into weights", CLS); the hand-written set was not used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    layers: str = Field(
        "", pattern=r"^[0-9,\s-]*$", max_length=200,
        description="Decoder layers whose MLP carries experts, e.g. '22-29' (empty: the last 25%).")
    targets: str = Field("down_proj,up_proj,gate_proj", pattern=r"^[a-z_]+(\s*,\s*[a-z_]+)*$", max_length=100,
                         description="MLP projections the experts adapt, comma-separated "
                         "(down_proj, up_proj, gate_proj). All three, as TTT trains when its neurons "
                         "fire and what they write: on the templated tiny set closed-book answers 0.382 "
                         "against 0.029 for down_proj at rank 8 (README, CLS).")
    rank: int = Field(16, ge=1, le=256, description="LoRA rank of each expert and of the consolidated adapter.")
    lr: float = Field(3e-3, gt=0.0, le=1.0, description="Adam learning rate of an expert by day.")
    passes: int = Field(2, ge=1, le=64, description="Passes over a document's material by day.")
    batch_tokens: int = Field(256, ge=16, le=8192, description="Tokens per mini-batch.")
    max_document_tokens: int = Field(20_000, ge=64, description="Longer documents are learned up to this.")
    rehearsal_source: Literal["facts", "extract"] = Field(
        "facts", description="Question/answer rehearsal drawn from the document as TTT draws it "
        "(engines/ttt: facts restates every fact, extract each sentence's last span). facts: on "
        "the natural tiny set closed-book answers 0.136 against extract's 0.023, at 18x the "
        "learning time (README, CLS).")
    rehearsal_system: str = Field("You are Engram, a helpful assistant. Answer briefly.",
                                  description="System message the rehearsal questions are asked under.")
    replay_tokens: int = Field(64, ge=0, le=4096, description="Background prose tokens in each "
                               "mini-batch (its own next-token loss), by day and in sleep.")
    own_replay: int = Field(16, ge=0, le=1024, description="Earlier episodes of the routed expert "
                            "replayed (shuffled) while it learns a new document.")
    max_experts: int = Field(16, ge=1, le=4096, description="Experts in the pool; when full, the "
                             "least recently used consolidated one (else the least used) is recycled.")
    novelty: float = Field(0.4, ge=0.0, le=2.0, description="A document whose passages are on "
                           "average further than this (1 - cosine) from every expert's keys grows a new "
                           "expert, cloned from the nearest one; closer ones train their nearest expert.")
    gate_entropy: float = Field(1.0, ge=0.0, le=20.0, description="A document whose passages spread "
                                "over the experts (entropy, in nats, of the share of its passages whose nearest "
                                "expert is each one) more than this grows a new expert even when it is not novel: "
                                "no one expert covers it. 1.0 lies above every routed document's entropy measured "
                                "on the natural and templated small sets (at most 0.50) and below ln 3 = 1.10 "
                                "(passages split evenly over three experts).")
    clone_noise: float = Field(0.3, ge=0.0, le=10.0, description="A grown expert starts as a copy of "
                               "its nearest expert with Gaussian noise of this share of each tensor's spread "
                               "(a copy that can diverge from its parent, as Net2Net's widened units), then "
                               "is distilled back to its parent on the new document. 0.1 left a KL (1e-6) below what 4 Adam "
                               "steps can lower; 0.3 gave 7e-5 to 5e-4, cut by about 60% (tests/test_cls_growth.py).")
    clone_distill_steps: int = Field(4, ge=0, le=256, description="Adam steps distilling a grown expert "
                                     "from its parent (teacher) on the new document's text (0: none).")
    clone_distill_lr: float = Field(3e-5, gt=0.0, le=1.0, description="Learning rate of that distillation. "
                                    "With experts on all three projections at rank 16, 1e-4 raised the KL on 2 of "
                                    "3 clones; 3e-5 lowered it 3-10x on all three (tests/test_cls_growth.py).")
    clone_distill_seconds: float = Field(30.0, gt=0.0, description="Most seconds that distillation may take.")
    router: Literal["keys", "softmax", "kwta"] = Field(
        "keys", description="Which experts a question (and a document not novel enough to grow one) "
        "goes to: 'keys' (the expert owning the closest key of the sentence embedding), 'softmax' (a "
        "learned gate over the same embedding mixing the experts) or 'kwta' (the same gate keeping only "
        "the cls.gate_k best experts). The gates are trained in sleep on the replay buffer; until one "
        "is trained (two experts and a sleep), and for experts grown since, keys answer.")
    gate_k: int = Field(1, ge=1, le=64, description="Experts a question keeps under router = kwta.")
    gate_examples: int = Field(2048, ge=2, le=100_000, description="Replay-buffer episodes (shuffled) "
                               "a sleep trains the learned gate on.")
    route_low: float = Field(0.5, ge=0.0, lt=1.0, description="A question whose best cosine to an "
                             "expert's keys is at most this gets none of the learned weights (the base model).")
    route_high: float = Field(0.7, gt=0.0, le=1.0, description="... and at least this, all of them.")
    prune_unused_days: float = Field(30.0, gt=0.0, description="Experts not routed to for this many "
                                     "days are recycled after their next sleep.")
    sleep_epochs: int = Field(1, ge=1, le=100, description="Passes over the episodic buffer per sleep.")
    sleep_lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate of the consolidated adapter.")
    sleep_episodes: int = Field(256, ge=1, le=100_000, description="Episodes replayed per sleep (shuffled).")
    ewc_strength: float = Field(100.0, ge=0.0, description="EWC penalty weight on the consolidated adapter.")
    fisher_tokens: int = Field(512, ge=16, le=16_384, description="Background tokens the Fisher is estimated on.")
    probe_tokens: int = Field(512, ge=0, le=16_384, description="Background tokens of the forgetting "
                              "probe (perplexity before and after each sleep; 0: no probe).")
    drift_bound: float = Field(0.02, le=10.0, description="A sleep raising the probe's perplexity by "
                               "more than this share is rolled back (0 or less: every sleep is).")
    forgetting_bound: float = Field(0.05, le=1.0, description="A sleep losing more than this share of "
                                    "the background answers the model had right is rolled back.")
    sleep_pressure: float = Field(0.5, ge=0.0, le=3.0, description="Sleep starts by itself when "
                                  "Engram is idle and the sleep pressure (saturation + novelty + forgetting, "
                                  "each 0 to 1) is at least this.")
    consolidated_share: float = Field(1.0, ge=0.0, le=1.0, description="How much of the consolidated "
                                      "adapter a routed question gets.")

    @model_validator(mode="after")
    def _route_bounds(self) -> CLSConfig:
        if self.route_low >= self.route_high:
            raise ValueError(f"route_low ({self.route_low}) must be below route_high ({self.route_high})")
        return self
