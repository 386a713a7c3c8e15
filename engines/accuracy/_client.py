"""The HTTP edge of the accuracy suite: ``/v1/completions`` calls and their logprobs, parsed.

Every metric is read from the legacy completions ``logprobs`` block (``tokens``,
``token_logprobs``, ``top_logprobs``, ``text_offset``) that vLLM, TensorRT-LLM's server and the
stand-in return, so the suite needs nothing engine-specific. The client counts what it spends
(requests, tokens, seconds) so a trial can report the cost of its accuracy run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from engines.errors import EngineError


@dataclass(frozen=True)
class Position:
    """One token of a scored text: its logprob (None for the first), top-k and offset."""

    token: str
    logprob: float | None
    top: Mapping[str, float] | None
    offset: int


@dataclass
class Cost:
    """What an accuracy run spent on the server."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 4),
        }


class CompletionsClient:
    """Blocking ``/v1/completions`` calls against one served model (greedy, logprobs)."""

    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.cost = Cost()
        self._http = httpx.Client(timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CompletionsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def complete(self, prompt: str, **params: Any) -> dict[str, Any]:
        """One completion (temperature 0 unless given); the first choice, with ``usage``."""
        body = {"model": self.model, "prompt": prompt, "temperature": 0.0, **params}
        started = time.monotonic()
        try:
            reply = self._http.post(self.base_url + "/v1/completions", json=body)
        except httpx.HTTPError as exc:
            raise EngineError("http_error", f"accuracy request failed: {exc}") from None
        finally:
            self.cost.seconds += time.monotonic() - started
        if reply.status_code != 200:
            raise EngineError(
                "http_error",
                f"accuracy request got HTTP {reply.status_code}: {reply.text[:200]}",
            )
        data = reply.json()
        usage = data.get("usage") or {}
        self.cost.requests += 1
        self.cost.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.cost.completion_tokens += int(usage.get("completion_tokens") or 0)
        return {**data["choices"][0], "usage": usage}

    def score(self, text: str, top_k: int = 1) -> list[Position]:
        """Logprobs of every prompt token of ``text`` (echo, one generated token dropped).

        ``max_tokens=1`` rather than 0: some servers refuse 0. The generated token is cut off
        using ``usage.prompt_tokens``.
        """
        choice = self.complete(text, echo=True, logprobs=top_k, max_tokens=1)
        positions = parse_logprobs(choice.get("logprobs"))
        n_prompt = int(choice["usage"].get("prompt_tokens") or len(positions))
        return positions[:n_prompt]

    def generate(self, prompt: str, max_tokens: int, **params: Any) -> str:
        """Greedy continuation text of ``prompt``."""
        return str(self.complete(prompt, max_tokens=max_tokens, **params).get("text", ""))


def parse_logprobs(block: Mapping[str, Any] | None) -> list[Position]:
    """Read a legacy completions ``logprobs`` block; a missing one is a server error."""
    if not block or "token_logprobs" not in block:
        raise EngineError("http_error", "the server returned no logprobs (echo + logprobs)")
    tokens = block.get("tokens") or []
    values = block["token_logprobs"]
    tops = block.get("top_logprobs") or [None] * len(values)
    offsets = block.get("text_offset") or [-1] * len(values)
    return [
        Position(str(t), None if v is None else float(v), top, int(o))
        for t, v, top, o in zip(tokens, values, tops, offsets, strict=False)
    ]
