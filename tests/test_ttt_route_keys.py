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
