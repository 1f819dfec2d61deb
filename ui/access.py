"""Who may open the desktop app: this computer only, unless the person says otherwise.

By default the UI listens on a loopback address and needs no password. Listening anywhere else
is an explicit setting (``ui_host``) and then needs ``ui_password``: every request, the Gradio app,
its API and the source pages alike, must carry it (HTTP Basic, user ``engram``), checked in
constant time. One middleware guards the whole server, so no route can be forgotten.

The OpenAI-compatible ``/v1`` API follows the same rule with its own secret, because its clients
send a bearer key, not a browser's Basic password: beyond this computer it needs ``api_key``, and
once ``api_key`` is set every request must carry it (``Authorization: Bearer ...``).
"""

import base64
import binascii
import secrets

from pydantic import SecretStr
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from app.core import is_loopback

USER = "engram"
REALM = 'Basic realm="Engram", charset="UTF-8"'


class ExposedWithoutPassword(ValueError):
    """The UI would listen beyond this computer with no password."""


class ExposedWithoutKey(ExposedWithoutPassword):
    """The /v1 API would listen beyond this computer with no key."""


def require_password_when_exposed(host: str, password: SecretStr | None) -> None:
    if not is_loopback(host) and not (password and password.get_secret_value()):
        raise ExposedWithoutPassword(
            f"ui_host is {host}, which lets other computers open Engram: set ui_password "
            "(e.g. ENGRAM_UI_PASSWORD=...) or set ui_host back to 127.0.0.1"
        )


def require_key_when_exposed(host: str, key: SecretStr | None) -> None:
    if not is_loopback(host) and not (key and key.get_secret_value()):
        raise ExposedWithoutKey(
            f"api_host is {host}, which lets other computers use Engram's /v1 API: set api_key "
            "(e.g. ENGRAM_API_KEY=...) or set api_host back to 127.0.0.1"
        )


def bearer_matches(header: str | None, key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    if not header or not header[:7].lower() == "bearer ":
        return False
    return secrets.compare_digest(header[7:].strip().encode(), key.encode())


def credentials_match(header: str | None, password: str) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, _, given = decoded.partition(":")
    user_ok = secrets.compare_digest(user.encode(), USER.encode())
    return secrets.compare_digest(given.encode(), password.encode()) and user_ok


class PasswordMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, password: str, own_keys: tuple[str, ...] = ()) -> None:
        """``own_keys``: path prefixes (``/v1``) whose app checks a key of its own instead."""
        super().__init__(app)
        self.password = password
        self.own_keys = own_keys

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if any(path.startswith(p + "/") for p in self.own_keys):  # what the mount at p serves
            return await call_next(request)
        if credentials_match(request.headers.get("authorization"), self.password):
            return await call_next(request)
        return PlainTextResponse("Engram needs its password.", status_code=401,
                                 headers={"WWW-Authenticate": REALM})
