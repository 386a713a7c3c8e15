"""Secrets out of everything servetune writes: storage URLs, stored specs, errors and logs.

A storage URL can carry a password in its user info (``user:pw@host``, percent-encoded or not)
or in its query (``?password=pw``); ``options.env`` holds tokens for the server
(``HF_TOKEN``). Whatever is written down (a study attribute, manifest.json, a log line, a worker
banner, an error from SQLAlchemy or a driver) goes through :func:`redact_url`,
:func:`redact_spec` or :func:`scrub` first. Redaction errs on the side of hiding: a malformed URL
loses more than its password, never less.

Every secret seen by :func:`remember` (the CLI registers the spec's URLs and env values as it
loads them) is also scrubbed from texts that do not carry the URL itself, such as a driver's
error message or a traceback's last line.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, unquote_plus

REDACTED = "***"
# Query parameters whose values are secrets (matched on the decoded name, case-insensitively).
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.I)
# Something that looks like a URL inside free text (an error message, a log line).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*[^\s'\"<>:;,.)\]]")
_known: set[str] = set()


def _split(url: str) -> tuple[str, str, str]:
    """``(scheme://, user info, rest)``; user info is everything up to the last ``@`` (a
    password may hold an unencoded ``@``, ``/`` or ``?``), empty when there is no ``@``."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    else:
        head += sep
    at = rest.rfind("@")
    if at < 0:
        return head, "", rest
    return head, rest[:at], rest[at + 1 :]


def _query_secrets(url: str) -> list[tuple[str, str]]:
    """``(name=value, value)`` of each secret-looking query parameter of ``url``."""
    _, _, query = url.partition("?")
    found = []
    for part in re.split(r"[&;]", query.split("#", 1)[0]):
        name, eq, value = part.partition("=")
        if eq and value and _SECRET_KEY.search(unquote_plus(name)):
            found.append((part, value))
    return found


def url_secrets(url: str) -> list[str]:
    """The secrets ``url`` carries (password, secret query values), raw and decoded."""
    _, userinfo, _ = _split(url)
    raw = []
    if ":" in userinfo:
        raw.append(userinfo.split(":", 1)[1])
    raw += [value for _, value in _query_secrets(url)]
    out = {form for value in raw for form in (value, unquote(value), unquote_plus(value))}
    return sorted((s for s in out if s), key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***``."""
    head, userinfo, rest = _split(url)
    if ":" in userinfo:
        url = f"{head}{userinfo.split(':', 1)[0]}:{REDACTED}@{rest}"
    for part, value in _query_secrets(url):
        url = url.replace(part, part[: len(part) - len(value)] + REDACTED, 1)
    return url


def remember(secrets: Iterable[str]) -> None:
    """Register secrets that :func:`scrub` removes from any text from now on."""
    _known.update(s for s in secrets if s)


def scrub(text: str, urls: Iterable[str] = ()) -> str:
    """``text`` with the secrets of ``urls``, every remembered secret and the passwords of any
    URL written in it replaced by ``***``."""
    found = [*urls, *_URL_IN_TEXT.findall(text)]
    secrets = {s for url in found for s in url_secrets(url)} | _known
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:  # "a" or "pw" would shred ordinary words
            text = text.replace(secret, REDACTED)
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_spec(data: dict[str, Any]) -> dict[str, Any]:
    """A spec mapping (``StudySpec.model_dump``) safe to store: ``options.env`` values become
    ``***`` and every URL-like string (``storage``, ``warm_start.storage``) loses its secrets."""
    out = _redact_strings(copy.deepcopy(data))
    env = (out.get("options") or {}).get("env")
    if isinstance(env, dict):
        out["options"]["env"] = {key: REDACTED for key in env}
    return out


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value) if "@" in value or "=" in value else value
    if isinstance(value, dict):
        return {key: _redact_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_strings(item) for item in value]
    return value


def spec_secrets(data: Any) -> list[str]:
    """The secrets a raw spec mapping holds: its URLs' passwords and the values of
    ``options.env`` keys that name a secret (``HF_TOKEN``, ``WANDB_API_KEY``)."""
    if not isinstance(data, dict):
        return []
    warm = data.get("warm_start")
    found: list[str] = []
    for url in (data.get("storage"), warm.get("storage") if isinstance(warm, dict) else None):
        if isinstance(url, str):
            found += url_secrets(url)
    options = data.get("options")
    env = options.get("env") if isinstance(options, dict) else None
    if isinstance(env, dict):
        found += [str(v) for k, v in env.items() if _SECRET_KEY.search(str(k)) and v is not None]
    return found


class ScrubbingFilter(logging.Filter):
    """A handler filter that writes every record :func:`scrub`-bed (message and traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
