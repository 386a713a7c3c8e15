"""An engine that fails by a memory rule its ``validate`` does not know, like a real server that
passes every check and then runs out of memory while starting."""

from __future__ import annotations

from typing import Any

from engines import Engine, EngineError
from engines.base import Config, RunContext


def hidden_oom(config: Config) -> bool:
    """The injected rule: a large batch of sequences with a high memory share OOMs at start."""
    seqs = config.get("max_num_seqs", config.get("max_batch_size", 0))
    share = config.get("gpu_memory_utilization", config.get("kv_cache_free_gpu_memory_fraction", 0))
    return seqs * config.get("max_num_batched_tokens", 0) >= 256 * 8192 and share >= 0.9


class FaultyEngine:
    """Delegates everything to ``inner`` but raises EngineError('oom') on :func:`hidden_oom`."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def run(self, config: Config, ctx: RunContext) -> Any:
        if hidden_oom(config):
            raise EngineError("oom", "CUDA out of memory while allocating activations (injected)")
        return self.inner.run(config, ctx)


def wrap(engine: Engine, kind: str) -> Any:
    if kind != "hidden_oom":
        raise ValueError(f"unknown failure injection {kind!r}")
    return FaultyEngine(engine)
