"""Speculative decoding must not change what the model says.

vLLM verifies draft tokens against the target model, so greedy outputs with n-gram or draft-model
speculation are the target model's own; a config whose only differences from the accuracy
reference are such options (``Engine.lossless_options``), at the reference's precision
(``Engine.numerics_options``), must agree with it on every greedy token. Anything less is a bug
or an unsupported combination in that engine release, and the trial fails with ``lossy_output``
instead of being ranked by its speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engines.accuracy._client import CompletionsClient
from engines.errors import EngineError


def must_match_reference(
    lossless: tuple[str, ...],
    numerics: tuple[str, ...],
    config: Mapping[str, Any],
    reference_config: Mapping[str, Any] | None,
) -> list[str]:
    """The lossless options by which ``config`` departs from the reference, when it has the
    reference's precision; [] when no such check applies."""
    if not reference_config or not lossless:
        return []
    if any(config.get(k) != reference_config.get(k) for k in numerics):
        return []
    return [k for k in lossless if config.get(k) != reference_config.get(k)]


def check_lossless(
    changed: list[str],
    client: CompletionsClient,
    reference: Mapping[str, Any],
    enforce: bool = True,
) -> dict[str, Any] | None:
    """Greedily continue the reference's prompts on this server and compare the continuations
    with the reference's, text for text; raise ``lossy_output`` on any difference (unless not
    ``enforce``: then the difference is only recorded). Returns the comparison (None when no
    check applies or the stored reference predates its prompts)."""
    prompts = reference.get("prompts")
    if not changed or not prompts:
        return None
    same = 0
    for prompt, text in zip(prompts, reference["texts"], strict=True):
        same += prompt + client.generate(prompt, int(reference["gen_tokens"])) == text
    if same < len(prompts) and enforce:
        raise EngineError(
            "lossy_output",
            f"{', '.join(changed)} changed greedy outputs: {same} of {len(prompts)} continuations "
            "match the reference at the same precision (all must)",
        )
    return {
        "options": changed,
        "continuations": len(prompts),
        "identical": same,
        "lossy": same < len(prompts),
    }
