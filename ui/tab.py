"""What a tab of the desktop app is: a title and a function that builds it inside the Blocks."""

from collections.abc import Callable
from typing import NamedTuple

import gradio as gr

from app.core import Engram


class Tab(NamedTuple):
    title: str
    build: Callable[[Engram, gr.Blocks, gr.Tab], None]
    """Lay out the tab's components and wire its events: ``blocks.load`` fills them on page load,
    ``tab.select`` when the person opens the tab."""
