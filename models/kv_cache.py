"""The name a transformers forward takes, and its output returns, the key/value cache under.

transformers 5 renamed ``past_key_values`` to ``cache`` and warns on the old name; the project
supports both (``transformers>=4.46``), so callers ask the forward they are about to call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def with_cache(forward: Callable[..., Any], cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for ``forward`` (a model's or decoder's ``forward``)."""
    parameters = inspect.signature(forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache}


def returned_cache(output: Mapping[str, Any]) -> Any:
    """The cache a forward with ``use_cache=True`` returned (a ``ModelOutput``)."""
    return output["cache"] if "cache" in output else output["past_key_values"]
