"""Perplexity of the served model on a text, from the server's prompt logprobs.

``perplexity = exp(-mean log p(token | tokens before it))`` over every scored token. The text is
cut into non-overlapping chunks that fit the model's context (each chunk is scored from its own
start, so its first tokens see little context: the figure is a little higher than a sliding-window
perplexity, but the same for every config, which is what a comparison needs). The first token
of each chunk has no logprob and is skipped, as vLLM returns ``null`` for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engines.accuracy._client import CompletionsClient

# English BPE tokenizers spend 1.3-1.5 tokens a word; two per word keeps a chunk in the context.
TOKENS_PER_WORD = 2.0
DEFAULT_CORPUS = "us-founding-documents.txt"


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity over ``tokens`` scored tokens in ``chunks`` chunks."""

    perplexity: float
    tokens: int
    chunks: int
    mean_logprob: float


def perplexity(logprobs: Iterable[float | None]) -> float:
    """``exp(-mean)`` of the logprobs, skipping None (the first token of a sequence)."""
    values = [v for v in logprobs if v is not None]
    if not values:
        return math.nan
    return math.exp(-sum(values) / len(values))


def read_corpus(path: str | Path | None = None) -> str:
    """A corpus text (the bundled one by default); lines starting with ``#`` are comments."""
    if path is None:
        text = (
            resources.files("engines")
            .joinpath("data", "corpus", DEFAULT_CORPUS)
            .read_text(encoding="utf-8")
        )
    else:
        text = Path(path).read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()


def chunk_words(text: str, context_tokens: int) -> list[str]:
    """Cut ``text`` into whitespace-joined chunks of at most ``context_tokens / 2`` words."""
    words = text.split()
    size = max(8, int(context_tokens / TOKENS_PER_WORD))
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def measure_perplexity(
    client: CompletionsClient, text: str, context_tokens: int, budget_tokens: int
) -> PerplexityResult:
    """Score chunks of ``text`` in order until ``budget_tokens`` prompt tokens are spent."""
    logprobs: list[float | None] = []
    chunks = 0
    spent = 0
    for chunk in chunk_words(text, context_tokens):
        if spent >= budget_tokens:
            break
        positions = client.score(chunk)
        spent += len(positions)
        chunks += 1
        logprobs.extend([None, *(p.logprob for p in positions[1:])])
    scored = [v for v in logprobs if v is not None]
    return PerplexityResult(
        perplexity=perplexity(scored),
        tokens=len(scored),
        chunks=chunks,
        mean_logprob=sum(scored) / len(scored) if scored else math.nan,
    )
