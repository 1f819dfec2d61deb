"""Errors the person can read: every handler's failure becomes a short message, never a traceback.

Expected failures (a bad path, an unknown setting, a model that will not load) carry messages
written for people; they are shown as they are. Anything else is logged with its traceback and
shown as one line that says where the details are.

A failed handler never raises into gradio: a raised error puts gradio's red "Error" badge over
every output of the event, where it stays until the page is reloaded. Instead the message shows
as a notice (``friendly``) or beside the control (``noted``), the outputs keep their values and
the form stays usable. Handlers still say "no" by raising (``gr.Error("Pick a setting first.")``).
"""

import functools
import inspect
import logging
from collections.abc import Callable
from html import escape
from typing import Any

import gradio as gr

from app.core import PromptTooLong, RuntimeUnavailable, SettingsError

log = logging.getLogger(__name__)

EXPECTED = (KeyError, ValueError, OSError, RuntimeUnavailable, PromptTooLong, SettingsError)
Handler = Callable[..., Any]


def readable(exc: BaseException) -> str:
    """The person-facing message of an exception."""
    if isinstance(exc, gr.Error):
        return exc.message
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, EXPECTED):
        return str(exc) or type(exc).__name__
    log.error("unexpected error in the UI", exc_info=exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). The details are in Engram's log."


def note_html(message: str) -> str:
    """A refusal shown beside the control it is about."""
    return f"<div class='engram-warning engram-note' role='alert'>{escape(message)}</div>"


def _guarded(fn: Handler, instead: Callable[[Exception], Any]) -> Handler:
    """``fn`` (plain or generator) with its errors turned into ``instead(exc)``, its last output."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                yield instead(exc)
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            return instead(exc)
    return wrapper


def _notice(exc: Exception) -> Any:
    gr.Warning(readable(exc))
    return gr.skip()


def friendly(fn: Handler) -> Handler:
    """Wrap a gradio handler so an error shows as a notice and leaves every output as it was."""
    return _guarded(fn, _notice)


def noted(at: int, outputs: int) -> Callable[[Handler], Handler]:
    """Like ``friendly``, but the message goes into output ``at`` of ``outputs`` (an HTML beside
    the control); the handler clears it by returning "" there when it succeeds."""
    def decorate(fn: Handler) -> Handler:
        def instead(exc: Exception) -> tuple[Any, ...]:
            message = note_html(readable(exc))
            return tuple(message if i == at else gr.skip() for i in range(outputs))
        return _guarded(fn, instead)
    return decorate
