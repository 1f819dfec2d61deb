"""The page a citation link opens: the stored text around the cited passage, passage highlighted.

Document text is data: every piece of it is HTML-escaped, and the page's Content-Security-Policy
allows nothing but its own inline style and the one line of script that scrolls to the passage.
"""

from html import escape
from pathlib import Path

from app.core import SourceView

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_STYLE = """
body { font-family: 'IBM Plex Sans', ui-sans-serif, system-ui, sans-serif; margin: 0; color: #1e293b;
  background: #f8fafc; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #e2e8f0;
  padding: 14px 28px; }
header h1 { font-size: 1.2rem; margin: 0 0 4px; }
header .path { font-family: ui-monospace, monospace; font-size: 0.85rem; color: #475569;
  word-break: break-all; }
header .where { font-size: 0.9rem; color: #475569; margin-top: 4px; }
main { max-width: 860px; margin: 24px auto; padding: 0 28px 60vh; }
pre { white-space: pre-wrap; word-wrap: break-word; font-family: inherit; font-size: 1rem;
  line-height: 1.6; margin: 0; }
mark { background: #e0e7ff; border-radius: 3px; padding: 1px 0; }
mark strong { background: #fde68a; font-weight: inherit; }
.more { color: #94a3b8; font-size: 0.9rem; margin: 10px 0; }
.gone { max-width: 620px; margin: 80px auto; text-align: center; color: #475569; }
"""

_SCROLL = ("<script>document.getElementById('cited')"
           ".scrollIntoView({block: 'center'});</script>")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>")


WHERE = {
    "file": "as stored when it was learned",
    "conversation": "said by you in chat; Engram keeps it as knowledge (delete the conversation, or "
                    "`engram memory forget`, to remove it)",
    "recalled": "an earlier conversation, recalled as a source of the answer (delete the "
                "conversation to have it recalled no more)",
}


def render_source(view: SourceView) -> str:
    name = f"Conversation: {view.title}" if view.kind != "file" else Path(view.path).name
    where = WHERE[view.kind]
    more_before = "<p class='more'>… earlier text not shown</p>" if view.more_before else ""
    more_after = "<p class='more'>… later text not shown</p>" if view.more_after else ""
    quote = f"<strong>{escape(view.quote)}</strong>" if view.quote else ""
    text = (f"{escape(view.before)}<mark id='cited'>{escape(view.passage_start)}{quote}"
            f"{escape(view.passage_end)}</mark>{escape(view.after)}")
    body = (f"<header><h1>{escape(name)}</h1><div class='path'>{escape(view.path)}</div>"
            f"<div class='where'>Cited passage: {escape(view.position)} · {escape(where)}</div></header><main>{more_before}<pre>{text}</pre>{more_after}</main>{_SCROLL}")
    return _page(f"{name} ({view.position}) · Engram", body)


def render_missing(chunk_id: int) -> str:
    body = ("<div class='gone'><h1>This passage is no longer stored</h1><p>The file it came from "
            "was changed, forgotten or removed after the answer was given, so the exact passage "
            f"(#{chunk_id}) is gone. Ask again to get an answer from the current files.</p></div>")
    return _page("Passage not found · Engram", body)


def render_missing_conversation(conversation_id: int) -> str:
    body = ("<div class='gone'><h1>This conversation is no longer stored</h1><p>It was deleted after "
            f"the answer was given, so the exchange it cited (conversation {int(conversation_id)}) is "
            "gone.</p></div>")
    return _page("Conversation not found · Engram", body)
