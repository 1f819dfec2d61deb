"""What a learned document is routed by: its prose sentences (hard-wrapped lines joined), its list
items and key: value lines one by one, never its headings or fragments."""

from __future__ import annotations

from engines.ttt.route_keys import passages


def test_hard_wrapped_prose_gives_whole_sentences() -> None:
    text = ("Mirelle Daskoth was born in 1958 in the small town of\nPahounund, where her father kept bees.\n"
            "She later moved to the capital.")
    assert passages(text) == ["Mirelle Daskoth was born in 1958 in the small town of Pahounund, where her "
                              "father kept bees.", "She later moved to the capital."]


def test_lists_and_key_value_lines_are_passages_and_headings_are_not() -> None:
    text = ("About Mirelle Daskoth\n\n- born in 1958 in Pahounund\n* keeps bees at the mill\n"
            "Town: Pahounund, small and old\n\n1) moved to the capital in 1990\n2) works as a beekeeper\n\n"
            "Short line.\n\nA fragment of four words")
    assert passages(text) == ["- born in 1958 in Pahounund", "* keeps bees at the mill",
                              "Town: Pahounund, small and old", "1) moved to the capital in 1990",
                              "2) works as a beekeeper"]


def test_a_long_passage_is_cut_to_what_the_embedder_reads() -> None:
    found = passages("word " * 600 + "end.")
    assert len(found) == 1 and len(found[0]) == 1000


def test_keys_of_another_embedding_model_are_embedded_again(embedder, tmp_path, isolated_dirs) -> None:
    """A model switch (or a checkpoint from elsewhere) leaves keys of another model: the probe
    sentence tells, and the keys are made again from the stored text before any question is
    compared with them; fp32 and bf16 of one model count as the same."""
    import numpy as np
    import torch

    from engines.ttt import route_keys
    from models.delta_router import DeltaRouter

    fp32 = route_keys.probe(embedder.embed)
    assert route_keys.same_embedder(None, fp32) and route_keys.same_embedder(fp32, fp32)
    other = torch.from_numpy(np.random.default_rng(0).standard_normal(fp32.shape[0]).astype(np.float32))
    assert not route_keys.same_embedder(other / other.norm(), fp32)
    assert not route_keys.same_embedder(fp32[:100], fp32)

    router = DeltaRouter(0.5, 0.7)
    router.add(7, route_keys.embedded_keys(embedder.embed, "Ada Quill was born in Mirvale in 1931."))
    router.probe = fp32
    state = router.state()
    assert set(state) == {"keys", "owners", "probe"}
    again = DeltaRouter(0.5, 0.7)
    again.load(state)
    assert torch.equal(again.probe, fp32)
    again.load({"keys": state["keys"], "owners": state["owners"]})  # saved before probes existed
    assert again.probe is None
