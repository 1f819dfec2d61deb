"""How an answer's sources read: cited passages quoted as plain text, the others behind a toggle
that says why they are there, and no quote while the answer is still streaming."""

from __future__ import annotations

from app.core import Citation
from ui.chat_tab import render_answer, render_sources
from ui.formatting import plain_text


def cite(n: int, quote: str, cited: bool) -> Citation:
    return Citation(n=n, chunk_id=n, document_id=n, path=f"/notes/doc{n}.md", line_start=1,
                    line_end=3, score=0.5, quote=quote, cited=cited)


def test_markdown_quotes_read_as_plain_text() -> None:
    assert plain_text("# Quillmark Foods makes **jam** in [Oslo](http://x.example).") == \
        "Quillmark Foods makes jam in Oslo."
    assert plain_text("- a `code` item") == "a code item"
    assert plain_text("a <b>tag</b> stays text") == "a <b>tag</b> stays text"


def test_cited_passages_first_and_the_rest_marked_consulted_not_cited() -> None:
    html = render_sources([cite(1, "# Ferry times", False), cite(2, "The **ferry** leaves at 06:40.", True)])
    shown, _, hidden = html.partition("<details")
    assert "doc2.md" in shown and "The ferry leaves at 06:40." in shown and "**" not in html
    assert "Consulted, not cited (1)" in hidden and "doc1.md" in hidden and "Ferry times" in hidden
    assert "#" not in hidden.replace("&#x27;", "")
    assert "<li value='2'>" in shown and "<li value='1'>" in hidden  # numbers stay the answer's


def test_no_quote_while_the_answer_streams() -> None:
    streaming = render_answer("The ferry", [cite(1, "The ferry leaves at 06:40.", False)], final=False)
    assert "doc1.md" in streaming and "06:40" not in streaming and "quotes follow" in streaming
    done = render_answer("The ferry leaves at 06:40.", [cite(1, "The ferry leaves at 06:40.", True)])
    assert "<q>The ferry leaves at 06:40.</q>" in done and "quotes follow" not in done


def test_an_answer_drawing_on_nothing_says_so() -> None:
    html = render_sources([cite(1, "Tickets cost 14 crowns.", False)])
    assert "does not draw on any passage" in html and "Consulted, not cited (1)" in html


def test_a_heading_is_never_quoted_as_the_start_of_the_sentence_below() -> None:
    from app.chat.service import best_quote

    passage = "# Quell harbour\n\nThe harbour master of Quell is **Ines Varo**. She\nwas born there.\n"
    assert best_quote(passage, "Ines Varo is the harbour master.") == \
        "The harbour master of Quell is **Ines Varo**."
    assert best_quote(passage, "born there") == "She was born there."  # a wrapped line is not an end


def test_an_exchange_recalled_from_an_earlier_conversation_is_named_and_linked_to_it() -> None:
    recalled = Citation(n=1, chunk_id=0, document_id=0, path="conversation:3", line_start=1, line_end=2,
                        score=0.7, quote="User: My locker code is 4471.", cited=True,
                        title="My locker <code>", said_at="2026-11-30T09:15:00.000")
    html = render_sources([recalled])
    assert "conversation:3 “My locker &lt;code&gt;” of 2026-11-30" in html and "turns 1-2" in html
    assert "href='/conversation/3?first=1&amp;last=2&amp;quote=User%3A%20My%20locker" in html
