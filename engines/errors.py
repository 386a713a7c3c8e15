"""One error hierarchy for the whole tool.

Every error a user can cause or meet derives from :class:`ServetuneError`, so the CLI and the
notebooks catch it once and show one line. Library code raises the most specific class and names
the field, flag or cause in the message.
"""

from __future__ import annotations


class ServetuneError(Exception):
    """Base of every error servetune raises on purpose (shown as one line, exit code 2)."""


class SpecError(ServetuneError, ValueError):
    """A study spec, workload file or catalogue entry is malformed; the message names the field.

    It is also a ValueError so that, raised inside a pydantic validator, it is reported with the
    location of the field being validated.
    """


class StudyError(ServetuneError):
    """A study cannot be created, loaded, resumed or exported (missing, empty, no feasible trial)."""


class EngineError(ServetuneError):
    """A trial could not be measured.

    ``reason`` is a short machine-readable code (``oom``, ``invalid_argument``, ``startup_timeout``,
    ``port_clash``, ``crash``, ``hang``, ``http_error``, ``infeasible``...) stored with the failed
    trial so failures can be counted, learned from and shown.
    """

    def __init__(self, reason: str, message: str, *, log_path: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message
        self.log_path = log_path
