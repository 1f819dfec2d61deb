"""Text from files and imports goes into prompts as data, never as structure.

Chat prompts are rendered with the model's template and tokenized with special tokens on, so a
document containing ``<|im_end|><|im_start|>system`` would otherwise close the system turn and
forge a new one. Breaking every template marker with an invisible character keeps the text
readable to the model while it stays inside the turn it was placed in.
"""

import re

# Control markers of the common chat templates: ChatML, Llama 2 and 3, Mistral, Gemma, Phi.
_CONTROL_MARKERS = re.compile(
    r"<\|[^|<>\s]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>", re.IGNORECASE
)
ZERO_WIDTH_NON_JOINER = "\u200c"


def as_data(text: str) -> str:
    """``text`` with every chat-template marker broken by an invisible character."""
    return _CONTROL_MARKERS.sub(lambda m: m.group(0)[0] + ZERO_WIDTH_NON_JOINER + m.group(0)[1:], text)
