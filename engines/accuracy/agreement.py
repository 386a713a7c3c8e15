"""Agreement of a config with a full-precision reference, position by position.

The reference config (bf16, measured once per study) greedily continues a few fixed prompts;
each ``prompt + continuation`` text is then scored with echo and top-k logprobs, on the reference
and on every trial. Because both score the *same* text, every position has the same context on
both sides (teacher forcing), and two figures compare their next-token distributions:

* **token agreement**: the share of positions where the greedy (top-1) token is the same;
* **KL divergence** ``KL(reference || trial)``, averaged over positions, of the top-k
  distributions. A server only returns the top k, so this is an approximation: over the union of
  both top-k sets, a token one side did not list gets that side's smallest listed logprob (an
  upper bound on its real probability), then each side is renormalised over the union. It is 0
  for identical distributions and grows with disagreement on the likely tokens; it ignores the
  tail beyond the top k.

Positions are matched by (text offset, token), so a server that tokenizes differently only
shrinks the compared set (reported as ``positions``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engines.accuracy._client import CompletionsClient
from engines.errors import EngineError

Top = Mapping[str, float]


@dataclass(frozen=True)
class AgreementResult:
    """Greedy-token agreement and mean top-k KL over ``positions`` compared positions."""

    token_agreement: float
    kl_divergence: float
    positions: int


def greedy(top: Top) -> str:
    """The most likely token of a top-k map (ties to the smaller string, deterministically)."""
    return min(top.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def renormalised(top: Top, union: Sequence[str]) -> list[float]:
    """Probabilities over ``union``: unlisted tokens get the smallest listed logprob."""
    fill = min(top.values())
    weights = [math.exp(top.get(token, fill)) for token in union]
    total = sum(weights)
    return [w / total for w in weights]


def topk_kl(reference: Top, trial: Top) -> float:
    """``KL(reference || trial)`` over the union of both top-k sets, each renormalised."""
    union = sorted(set(reference) | set(trial))
    p = renormalised(reference, union)
    q = renormalised(trial, union)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def compare(
    reference: Sequence[Sequence[Any]], trial: Sequence[Sequence[Any]]
) -> tuple[int, float, int]:
    """Compare positions given as ``(offset, token, top)``: (matches, KL sum, positions)."""
    theirs = {(int(o), str(t)): top for o, t, top in trial if top}
    matches, kl_sum, count = 0, 0.0, 0
    for offset, token, top in reference:
        other = theirs.get((int(offset), str(token)))
        if not top or not other:
            continue
        count += 1
        matches += greedy(top) == greedy(other)
        kl_sum += topk_kl(top, other)
    return matches, kl_sum, count


def reference_prompts(text: str, count: int, words: int) -> list[str]:
    """``count`` snippets of ``words`` words, spread evenly over ``text`` (fixed, no RNG)."""
    tokens = text.split()
    if len(tokens) <= words:
        return [" ".join(tokens)]
    step = max(1, (len(tokens) - words) // max(1, count - 1))
    starts = sorted({min(i * step, len(tokens) - words) for i in range(count)})
    return [" ".join(tokens[s : s + words]) for s in starts]


def _positions(client: CompletionsClient, text: str, top_k: int) -> list[list[Any]]:
    return [
        [p.offset, p.token, {t: round(float(v), 5) for t, v in p.top.items()}]
        for p in client.score(text, top_k)
        if p.top
    ]


def collect_reference(
    client: CompletionsClient, prompts: Sequence[str], gen_tokens: int, top_k: int
) -> dict[str, Any]:
    """Run the reference once: greedy continuations, then top-k logprobs of every position.

    Returns a JSON-ready mapping (stored with the study and passed to every trial).
    """
    texts, positions = [], []
    for prompt in prompts:
        text = prompt + client.generate(prompt, gen_tokens)
        texts.append(text)
        positions.append(_positions(client, text, top_k))
    if not any(positions):
        raise EngineError("http_error", "the reference server returned no top-k logprobs")
    return {
        "prompts": list(prompts),  # a lossless option's greedy continuations are compared too
        "texts": texts,
        "positions": positions,
        "top_k": top_k,
        "gen_tokens": gen_tokens,
    }


def measure_agreement(client: CompletionsClient, reference: Mapping[str, Any]) -> AgreementResult:
    """Score the reference texts on this server and compare with the stored reference."""
    matches, kl_sum, count = 0, 0.0, 0
    top_k = int(reference["top_k"])
    for text, ref_positions in zip(reference["texts"], reference["positions"], strict=True):
        m, k, c = compare(ref_positions, _positions(client, text, top_k))
        matches, kl_sum, count = matches + m, kl_sum + k, count + c
    if count == 0:
        return AgreementResult(math.nan, math.nan, 0)
    return AgreementResult(matches / count, kl_sum / count, count)
