"""Text fields for the roles' JSON output, and the token budget that output can never exceed.

Role outputs are generated under a JSON-schema grammar (llama.cpp) or ``format`` (Ollama). Their
text fields are patterns of plain characters with a length range: no quote, backslash or control
character, so no escape sequence can make the output longer than the schema says, and the
worst-case length of a whole output follows from the schema. A role asks for that many tokens
(a token is at least one character), so its output is never cut off mid-string and always parses.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

_PLAIN = r'[^"\\\x00-\x1f]'
_PLAIN_NO_DIGITS = r'[^"\\\x00-\x1f0-9]'
_RANGE = re.compile(r"\{(\d+),(\d+)\}\$$")
STRUCTURE_SLACK = 8  # a safety margin over the count below (which includes every optional space)


def text_pattern(min_chars: int, max_chars: int, digits: bool = True) -> str:
    """A JSON-schema pattern for plain text of ``min_chars`` to ``max_chars`` characters."""
    return f"^{_PLAIN if digits else _PLAIN_NO_DIGITS}{{{min_chars},{max_chars}}}$"


def _max_chars(schema: dict[str, Any], defs: dict[str, Any]) -> int:
    if "$ref" in schema:
        return _max_chars(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"]) + 1
    if "const" in schema:
        return len(json.dumps(schema["const"])) + 1
    if "anyOf" in schema:
        return max(_max_chars(s, defs) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "string":
        found = _RANGE.search(schema.get("pattern", ""))
        if found is None:
            raise ValueError("role output strings need a pattern with a length range (text_pattern)")
        return int(found.group(2)) + 3
    if kind == "array":
        if "maxItems" not in schema:
            raise ValueError("role output arrays need maxItems")
        return 3 + schema["maxItems"] * (_max_chars(schema["items"], defs) + 2)
    if kind == "object":
        return 3 + sum(len(json.dumps(k)) + 4 + _max_chars(v, defs)
                       for k, v in schema.get("properties", {}).items())
    if kind == "boolean":
        return 5
    if kind == "integer":
        return 20
    raise ValueError(f"cannot bound the length of schema type {kind!r}")


def max_output_tokens(model: type[BaseModel]) -> int:
    """Most tokens an output of ``model`` can take (every token is at least one character)."""
    schema = model.model_json_schema()
    return _max_chars(schema, schema.get("$defs", {})) + STRUCTURE_SLACK
