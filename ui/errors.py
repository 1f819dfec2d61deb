"""Errors the person can read: every handler's failure becomes a short message, never a traceback.

Expected failures (a bad path, an unknown setting, a model that will not load) carry messages
written for people; they are shown as they are. Anything else is logged with its traceback and
shown as one line that says where the details are.
"""

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from app.core import PromptTooLong, RuntimeUnavailable, SettingsError

log = logging.getLogger(__name__)

EXPECTED = (KeyError, ValueError, OSError, RuntimeUnavailable, PromptTooLong, SettingsError)


def readable(exc: BaseException) -> str:
    """The person-facing message of an exception."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, EXPECTED):
        return str(exc) or type(exc).__name__
    log.error("unexpected error in the UI", exc_info=exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). The details are in Engram's log."


def shown_error(exc: Exception) -> gr.Error:
    """The gradio error that shows ``exc`` to the person (and prints no traceback: a message
    for the person is not a fault; unexpected errors were logged by ``readable``)."""
    error = exc if isinstance(exc, gr.Error) else gr.Error(readable(exc))
    error.print_exception = False
    return error


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a gradio handler (plain or generator) so its errors show as readable messages."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise shown_error(exc) from exc
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise shown_error(exc) from exc
    return wrapper
