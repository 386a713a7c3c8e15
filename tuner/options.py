"""A spec's ``options:`` (how the real runner starts and drives servers), typed and checked.

The options travel to engines as a plain mapping (``RunContext.options``); this model is their
one description: every key a user may set, its type and bounds. A spec is checked against it
when it is loaded, before any study exists, so ``startup_timeout_s: abc`` or a misspelt key
(``startup_timout_s``) is one line naming the key, with the closest real one, instead of a
traceback in the middle of the first trial or a silently ignored setting.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_STRICT = ConfigDict(extra="forbid")


class CapacityOptions(BaseModel):
    """``options.capacity``: the capacity search's probes (engines.serving.capacity)."""

    model_config = _STRICT
    min_duration_s: float | None = Field(default=None, gt=0)
    min_requests: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    rel_tol: float | None = Field(default=None, gt=0, le=1)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    settle_latencies: float | None = Field(default=None, gt=0)
    arrival: Any = None


class RunnerOptions(BaseModel):
    """``options``: every key the real runner and its engines read from a spec."""

    model_config = _STRICT
    server_command: list[str] | None = Field(default=None, min_length=1)
    vllm_server_command: list[str] | None = Field(default=None, min_length=1)
    trtllm_server_command: list[str] | None = Field(default=None, min_length=1)
    trtllm_serve_command: list[str] | None = Field(default=None, min_length=1)
    vllm_args: dict[str, Any] | None = None
    trtllm_args: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    host: str | None = None
    workdir: str | None = None
    cache_dir: str | None = None
    engine_cache_dir: str | None = None
    startup_timeout_s: float | None = Field(default=None, gt=0)
    stop_grace_s: float | None = Field(default=None, ge=0)
    request_timeout_s: float | None = Field(default=None, gt=0)
    heartbeat_s: float | None = Field(default=None, gt=0)
    loadgen_processes: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None
    endpoint: Literal["completions", "chat"] | None = None
    extra_body: dict[str, Any] | None = None
    save_requests: bool | None = None
    capacity: CapacityOptions | None = None


def check_options(options: dict[str, Any]) -> None:
    """Raise ValueError (one line, naming the key) unless ``options`` are all known and valid."""
    try:
        RunnerOptions.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(
            str(part)
            for part in error["loc"]
            if "[" not in str(part) and "-" not in str(part)  # pydantic's union branch names
        )
        if error["type"] == "extra_forbidden":
            raise ValueError(_unknown(where)) from None
        raise ValueError(f"{where}: {error['msg']} (got {error.get('input')!r})") from None


def _unknown(where: str) -> str:
    *parent, key = where.split(".")
    model = CapacityOptions if parent == ["capacity"] else RunnerOptions
    known = list(model.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return f"{where}: not an option{hint}"
