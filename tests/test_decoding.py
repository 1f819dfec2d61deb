"""Shared decoding with the real models: both runtimes honour the request's fields and do not loop."""

from __future__ import annotations

import pytest

from app.bench.decoding import answer_set, general_prompts, grounded_prompts
from app.runtimes.llamacpp import LlamaCppRuntime
from app.runtimes.torch_runtime import TorchRuntime, WindowedRepetitionPenalty, decoding_processors
from engines.generation import ChatMessage, GenerationRequest, Runtime, penalized
from engines.loop_guard import has_loop
from engines.ttt.config import TTTConfig

MAX_TOKENS = 96


def test_penalty_looks_at_the_last_generated_tokens_only() -> None:
    import torch

    # prompt: tokens 0 1 2; generated: 3 4 3 5; window of 2 -> tokens 3 and 5
    penalty = WindowedRepetitionPenalty(2.0, last_n=2, prompt_len=3)
    ids = torch.tensor([[0, 1, 2, 3, 4, 3, 5]])
    scores = torch.tensor([[1.0, 1.0, 1.0, 4.0, 4.0, -2.0, 0.5]])
    assert penalty(ids, scores).tolist() == [[1.0, 1.0, 1.0, 2.0, 4.0, -4.0, 0.5]]
    # a window larger than the answer never reaches into the prompt
    wide = WindowedRepetitionPenalty(2.0, last_n=64, prompt_len=3)
    assert wide(ids, scores).tolist() == [[1.0, 1.0, 1.0, 2.0, 2.0, -4.0, 0.5]]
    assert wide(ids[:, :3], scores).tolist() == scores.tolist()  # nothing generated yet
    # tokens without a letter (here 5: a digit, say) are spared
    spared = torch.tensor([True, True, True, True, True, False, True])
    sparing = WindowedRepetitionPenalty(2.0, last_n=64, prompt_len=3, penalized_ids=spared)
    assert sparing(ids, scores).tolist() == [[1.0, 1.0, 1.0, 2.0, 2.0, -2.0, 0.5]]


def test_only_tokens_with_letters_are_penalized() -> None:
    assert penalized(" the") and penalized("Paris") and penalized("é")
    assert not any(penalized(t) for t in ("5", " ", "\n", ",", ".", "[", "²", ""))


def test_processors_run_in_llama_cpp_order() -> None:
    ask = [ChatMessage(role="user", content="hi")]
    sampled = decoding_processors(GenerationRequest(messages=ask, temperature=0.7), prompt_len=5)
    assert [type(p).__name__ for p in sampled] == [
        "WindowedRepetitionPenalty", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper",
        "TemperatureLogitsWarper"]
    greedy_only = decoding_processors(GenerationRequest(messages=ask, temperature=0.0), 5)
    assert [type(p).__name__ for p in greedy_only] == ["WindowedRepetitionPenalty"]
    off = GenerationRequest(messages=ask, temperature=0.0, repeat_penalty=1.0)
    assert decoding_processors(off, 5) == []


slow = pytest.mark.slow


def greedy(runtime: Runtime, question: str, **fields) -> str:
    """``question`` asked under the learned weights' no-sources message, the one under which the
    135M model loops on some general questions (chat's own no-sources message no longer does)."""
    learned = TTTConfig().rehearsal_system
    messages = [ChatMessage(role="system", content=learned), ChatMessage(role="user", content=question)]
    request = GenerationRequest(messages=messages, **{
        "max_tokens": 48, "temperature": 0.0, "loop_guard": False, **fields})
    return runtime.generate(request).text


@pytest.fixture(params=["llama", "neocortex"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    return request.getfixturevalue(request.param)


@slow
def test_no_looping_answers_on_general_and_grounded_questions(runtime: Runtime) -> None:
    name = "llamacpp" if isinstance(runtime, LlamaCppRuntime) else "torch"
    for questions in (general_prompts(5, runtime, MAX_TOKENS), grounded_prompts(5, runtime, MAX_TOKENS)):
        _, guarded = answer_set(runtime, name, questions, GenerationRequest.model_fields[
            "repeat_penalty"].default, max_tokens=MAX_TOKENS)
        assert guarded.loops == 0, [a.answer for a in guarded.answers if a.loops]
        if questions[0].set == "grounded":  # the answer is in the one source given
            assert guarded.contains_rate >= 0.6, [a.answer for a in guarded.answers]
    # and through the runtime itself, guard on, with the shared defaults
    asked = general_prompts(1, runtime)[0]
    result = runtime.generate(GenerationRequest(messages=asked.messages, max_tokens=MAX_TOKENS,
                                                temperature=0.0))
    assert not has_loop(result.text) and result.finish_reason in ("stop", "length", "repetition")


@slow
def test_repeat_penalty_and_its_window_are_honoured(runtime: Runtime) -> None:
    # Without a penalty the 135M model loops on this question ("La femme au France, ...").
    question = "What is the capital of France?"
    plain = greedy(runtime, question, repeat_penalty=1.0)
    assert greedy(runtime, question, repeat_penalty=1.3) != plain
    assert greedy(runtime, question, repeat_penalty=1.3, repeat_last_n=0) == plain


@slow
def test_sampling_filters_are_honoured(runtime: Runtime) -> None:
    # A question the model answers with confidence: on a rambling answer (the 135M model on
    # general questions) near-tied logits flip between two identical llama.cpp calls, as the
    # prompt cache changes how the prompt is batched.
    asked = grounded_prompts(1, runtime)[0]

    def answer(**fields) -> str:
        request = GenerationRequest(messages=asked.messages, **{
            "max_tokens": 24, "temperature": 0.0, "loop_guard": False, **fields})
        return runtime.generate(request).text

    best = answer()
    # top_k=1 leaves one candidate: sampling at any temperature gives the greedy answer.
    assert answer(temperature=1.5, top_k=1, seed=3) == best
    # min_p close to 1 keeps only the likeliest token as well.
    assert answer(temperature=1.5, top_k=0, min_p=0.99, seed=3) == best
    # ... while plain sampling at a high temperature wanders off it.
    assert any(answer(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0, seed=s) != best for s in range(3))


@slow
def test_runtimes_agree_on_greedy_starts(llama: LlamaCppRuntime, neocortex: TorchRuntime) -> None:
    """Same weights (Q4_1 in llama.cpp, dequantized in torch), same penalty: mostly the same start."""
    agree = 0
    questions = grounded_prompts(4, llama, MAX_TOKENS)
    for q in questions:
        request = GenerationRequest(messages=q.messages, max_tokens=8, temperature=0.0)
        a = llama.token_ids(llama.generate(request).text)[:4]
        b = llama.token_ids(neocortex.generate(request).text)[:4]
        agree += a == b
    assert agree >= len(questions) // 2
