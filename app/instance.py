"""The running Engram, for the command line: ``engram run`` announces where its /v1 API listens
(``store/running.py``), and ``engram search`` asks it there instead of loading torch and the
embedding model again (about 5 s on 2 cores against a few milliseconds).

A client connects only to a loopback address recorded in its own data folder by a process that
is still alive (same pid, same start time); a record whose process is gone is removed. Anything
else, a refused connection, a timeout, a 401, settings that would rank differently, answers
``None`` with a debug log, and the caller searches locally. This module imports nothing heavy:
no torch, numpy, faiss, httpx or gradio, so the fast path stays fast.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.settings import FIELDS, Settings
from store.running import RunningRecord, read_running, remove_running, write_running

log = logging.getLogger(__name__)

TIMEOUT_S = 4.0
"""Longest wait for the running Engram's answer before searching locally: a refused connection
fails at once; a search there takes milliseconds, or a second or two beside a busy worker."""
SEARCH_PREFIXES = ("rag.", "embed")
"""The settings that change what a search returns (its ranking and its vectors)."""
SERVING = frozenset({"ui_host", "ui_port", "open_browser", "ui_password", "api_host", "api_port",
                     "api_key", "api_allowed_origins", "log_level"})
"""The settings that say where and how a process serves, not what it answers."""
REFUSED = "engram_refused"
"""The error code of a request the running Engram refused as this process would have (an unknown
conversation, a prompt too long, a model that will not load): said, not retried here."""


def search_settings(settings: Settings) -> dict[str, Any]:
    """The settings a search depends on, as JSON values: a running Engram started with others
    (a flag, or the config file changed since) would answer differently, so the CLI searches
    locally then."""
    dumped = settings.model_dump(mode="json")
    values: dict[str, Any] = {}
    for name in FIELDS:
        if name.startswith(SEARCH_PREFIXES):
            value: Any = dumped
            for part in name.split("."):
                value = value[part]
            values[name] = value
    return values


def answer_settings(settings: Settings) -> dict[str, Any]:
    """Every setting an answer can depend on, as JSON values (all but ``SERVING``): ``engram
    ask`` asks a running Engram only when it runs with exactly these."""
    return settings.model_dump(mode="json", exclude=set(SERVING))


# --- the server's side ---------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_url(url: str) -> str | None:
    """``url`` as this computer reaches it: a wildcard address (0.0.0.0, ::) becomes loopback;
    None for an address beyond this computer (the CLI never connects there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if not is_loopback(host):
        return None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def announce(root: Path, api_url: str) -> bool:
    """Record that this process serves /v1 at ``api_url`` for data folder ``root``; False (and
    nothing recorded) when the address is beyond this computer."""
    url = loopback_url(api_url)
    if url is None:
        log.debug("not recording %s for the CLI: not reachable on loopback", api_url)
        return False
    pid = os.getpid()
    write_running(root, RunningRecord(pid=pid, pid_started=process_started(pid) or 0.0, url=url,
                                      data_dir=str(root),
                                      started=datetime.now(UTC).isoformat(timespec="seconds")))
    return True


def withdraw(root: Path) -> None:
    """This process stops serving: remove its record (not another process's)."""
    remove_running(root, os.getpid())


# --- the client's side ---------------------------------------------------------------------------
def running_instance(root: Path) -> RunningRecord | None:
    """The Engram serving data folder ``root`` now, or None; a record left by a process that is
    gone (or a pid since reused) is removed."""
    record = read_running(root)
    if record is None:
        return None
    if os.path.realpath(record.data_dir) != os.path.realpath(root):
        log.debug("running.json names another data folder (%s); ignored", record.data_dir)
        return None
    if loopback_url(record.url) != record.url:
        log.debug("running.json names %s, not a loopback address; ignored", record.url)
        return None
    started = process_started(record.pid)
    if started is None or abs(started - record.pid_started) > 1.0:
        log.debug("running.json names process %d, which is gone; removed", record.pid)
        remove_running(root, record.pid)
        return None
    return record


class NotAnswered(Exception):
    """The running Engram did not answer this request (the caller works locally)."""


class Refused(Exception):
    """The running Engram refused the request as this process would have; the words say why."""


class Broken(Exception):
    """The running Engram stopped answering part way (the request may have had effects there)."""


def open_request(record: RunningRecord, route: str, body: dict[str, Any], key: str | None,
                 timeout: float = TIMEOUT_S) -> http.client.HTTPResponse:
    """POST ``body`` as JSON to the running Engram's ``/v1{route}``: the open response."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(record.url + route, data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:2000].decode(errors="replace")
        try:
            error = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            error = {}
        if isinstance(error, dict) and error.get("code") == REFUSED:
            raise Refused(str(error.get("message"))) from None
        raise NotAnswered(f"{exc.code} from {record.url}{route}: {detail[:300]}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out, cut
        raise NotAnswered(f"{record.url}{route}: {exc}") from None


def post(record: RunningRecord, route: str, body: dict[str, Any], key: str | None,
         timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """POST ``body`` to the running Engram's ``/v1{route}`` as JSON; its JSON answer."""
    try:
        with open_request(record, route, body, key, timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException) as exc:  # cut or not JSON
        raise NotAnswered(f"{record.url}{route}: {exc}") from None


def _key(settings: Settings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key is not None else None


def ask_running(settings: Settings, route: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The running Engram's answer to ``body`` at ``/v1{route}``, or None (logged at debug level)
    when none runs for this data folder or it does not answer."""
    record = running_instance(settings.data_dir)
    if record is None:
        return None
    try:
        return post(record, route, body, _key(settings))
    except NotAnswered as exc:
        log.debug("the running Engram did not answer, working locally: %s", exc)
        return None


def stream_running(settings: Settings, route: str, body: dict[str, Any],
                   timeout: float) -> Iterator[dict[str, Any]] | None:
    """The running Engram's answer at ``/v1{route}`` as JSON lines, or None when none runs or it
    did not take the request (nothing happened there: the caller works locally). Once it took it,
    its refusal is ``Refused`` and a stream cut short is ``Broken``: never done twice.
    ``timeout``: the longest silence between two lines."""
    record = running_instance(settings.data_dir)
    if record is None:
        return None
    try:
        response = open_request(record, route, body, _key(settings), timeout)
    except NotAnswered as exc:
        log.debug("the running Engram did not answer, working locally: %s", exc)
        return None
    return _lines(response, record.url + route)


def _lines(response: http.client.HTTPResponse, where: str) -> Iterator[dict[str, Any]]:
    with response:
        try:
            for line in response:
                if line.strip():
                    yield json.loads(line)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise Broken(f"the running Engram ({where}) stopped answering: {exc}") from None
