"""The accuracy run of one trial: settings, the run itself, and how it lands in a Measurement.

A study's ``accuracy:`` section is an :class:`AccuracySettings`. After the load run,
:func:`run_suite` measures the chosen metric on the same server and :meth:`AccuracyReport.apply`
adds it to the trial's measurement: flat metrics (``perplexity``, ``token_agreement``,
``kl_divergence``, ``accuracy``) under ``extra["accuracy"]["metrics"]`` (which
:meth:`Measurement.metrics` reads), how it was measured (metric, data, reference) and its cost.
A measured figure has ``accuracy_estimated=False``; the simulator's estimate keeps ``True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engines.accuracy._client import CompletionsClient
from engines.accuracy.agreement import collect_reference, measure_agreement, reference_prompts
from engines.accuracy.evalset import load_evalset, run_evalset
from engines.accuracy.harness import lm_eval_argv, run_lm_eval
from engines.accuracy.perplexity import DEFAULT_CORPUS, measure_perplexity, read_corpus
from engines.metrics import Measurement

# Which study metrics each accuracy metric reports.
PROVIDES: dict[str, tuple[str, ...]] = {
    "perplexity": ("perplexity",),
    "agreement": ("token_agreement", "kl_divergence", "accuracy"),
    "kl": ("token_agreement", "kl_divergence", "accuracy"),
    "evalset": ("accuracy",),
    "lm_eval": ("accuracy",),
}
# Study metrics only a measured accuracy run reports (the simulator estimates ``accuracy`` only).
MEASURED_ONLY = ("perplexity", "token_agreement", "kl_divergence")


class LmEvalSettings(BaseModel):
    """lm-evaluation-harness tasks to run through ``local-completions``."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(min_length=1)
    metric: str = "acc"
    limit: int | None = Field(default=None, ge=1)
    tokenizer: str | None = None
    num_concurrent: int = Field(default=8, ge=1)


class AccuracySettings(BaseModel):
    """A study's ``accuracy:`` section: what to measure after each trial's load run."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["perplexity", "agreement", "kl", "evalset", "lm_eval"] = "agreement"
    evalset: str | None = Field(default=None, description="JSONL eval set (default: the sample)")
    corpus: str | None = Field(default=None, description="text for perplexity and prompts")
    reference: Literal["defaults"] | dict[str, Any] = Field(
        default="defaults", description="config overrides of the engine defaults, or 'defaults'"
    )
    budget_tokens: int = Field(default=4096, ge=16, description="tokens per trial's run")
    chunk_tokens: int = Field(default=512, ge=16, description="perplexity chunk, in tokens")
    top_k: int = Field(default=5, ge=1, le=20)
    prompts: int = Field(default=8, ge=1, le=64, description="agreement prompts")
    prompt_words: int = Field(default=32, ge=4, le=1024)
    gen_tokens: int = Field(default=16, ge=1, le=512, description="reference continuation")
    lm_eval: LmEvalSettings | None = None
    lossless: Literal["enforce", "report"] = Field(
        default="enforce",
        description="a lossless option (speculative decoding) that changes greedy outputs: "
        "enforce fails the trial as lossy_output; report records how many continuations "
        "matched and keeps the trial (for engines whose kernels differ in the last bit)",
    )

    @field_validator("evalset")
    @classmethod
    def _evalset_readable(cls, value: str | None) -> str | None:
        if value is not None:
            load_evalset(value)  # a malformed file is a SpecError naming its line, now
        return value

    @property
    def needs_reference(self) -> bool:
        return self.metric in ("agreement", "kl")

    @property
    def provides(self) -> tuple[str, ...]:
        return PROVIDES[self.metric]


@dataclasses.dataclass(frozen=True)
class AccuracyReport:
    """One accuracy run's figures and provenance."""

    metric: str
    accuracy: float | None
    label: str
    metrics: Mapping[str, float]
    record: Mapping[str, Any]

    def apply(self, measurement: Measurement) -> Measurement:
        """``measurement`` with this run's accuracy (measured, never estimated)."""
        return dataclasses.replace(
            measurement,
            accuracy=self.accuracy,
            accuracy_metric=self.label,
            accuracy_estimated=False,
            extra={**measurement.extra, "accuracy": dict(self.record)},
        )


def reference_config(settings: AccuracySettings, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The reference config: the engine's defaults with the settings' overrides."""
    overrides = {} if settings.reference == "defaults" else dict(settings.reference)
    return {**defaults, **overrides}


def collect_reference_outputs(
    base_url: str, model: str, settings: AccuracySettings, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Run the reference config's part once: greedy continuations and top-k logprobs."""
    prompts = reference_prompts(
        read_corpus(settings.corpus), settings.prompts, settings.prompt_words
    )
    with CompletionsClient(base_url, model, timeout_s) as client:
        data = collect_reference(client, prompts, settings.gen_tokens, settings.top_k)
        data["cost"] = client.cost.as_dict()
    data["fingerprint"] = fingerprint(data["texts"])
    return data


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def run_suite(
    base_url: str,
    model: str,
    settings: AccuracySettings,
    *,
    context_tokens: int,
    reference: Mapping[str, Any] | None = None,
    workdir: str | Path = ".",
    timeout_s: float = 120.0,
) -> AccuracyReport:
    """Measure ``settings.metric`` on the server at ``base_url`` within the token budget."""
    started = time.monotonic()
    with CompletionsClient(base_url, model, timeout_s) as client:
        if settings.metric == "perplexity":
            metrics, accuracy, label, data = _perplexity(client, settings, context_tokens)
        elif settings.metric in ("agreement", "kl"):
            metrics, accuracy, label, data = _agreement(client, settings, reference)
        elif settings.metric == "evalset":
            metrics, accuracy, label, data = _evalset(client, settings)
        else:
            metrics, accuracy, label, data = _lm_eval(base_url, model, settings, workdir)
        cost = client.cost.as_dict()
    cost["seconds"] = round(time.monotonic() - started, 4)
    record = {"metric": settings.metric, "metrics": metrics, "data": data, "cost": cost}
    if settings.needs_reference and reference is not None:
        record["reference"] = {
            k: reference.get(k) for k in ("trial", "engine", "config", "fingerprint")
        }
    return AccuracyReport(settings.metric, accuracy, label, metrics, record)


def _perplexity(client: CompletionsClient, settings: AccuracySettings, context_tokens: int):
    chunk = min(settings.chunk_tokens, max(16, context_tokens - 8))
    result = measure_perplexity(client, read_corpus(settings.corpus), chunk, settings.budget_tokens)
    corpus = settings.corpus or f"engines/data/corpus/{DEFAULT_CORPUS}"
    data = {
        "corpus": corpus,
        "tokens": result.tokens,
        "chunks": result.chunks,
        "chunk_tokens": chunk,
    }
    label = f"perplexity on {Path(corpus).name} ({result.tokens} tokens)"
    return {"perplexity": result.perplexity}, None, label, data


def _agreement(client: CompletionsClient, settings: AccuracySettings, reference):
    if not reference:
        raise ValueError("accuracy metric agreement/kl needs the reference outputs")
    result = measure_agreement(client, reference)
    metrics = {"token_agreement": result.token_agreement, "kl_divergence": result.kl_divergence}
    data = {
        "prompts": len(reference["texts"]),
        "positions": result.positions,
        "top_k": reference["top_k"],
    }
    name = "greedy-token agreement" if settings.metric == "agreement" else "top-k KL"
    label = f"{name} vs {reference.get('trial', 'reference')} ({result.positions} positions)"
    return {**metrics, "accuracy": result.token_agreement}, result.token_agreement, label, data


def _evalset(client: CompletionsClient, settings: AccuracySettings):
    items = load_evalset(settings.evalset)
    result = run_evalset(client, items, settings.budget_tokens)
    source = settings.evalset or "engines/data/evals/sample.jsonl"
    data = {
        "evalset": source,
        "items": result.items,
        "correct": result.correct,
        "total": result.total,
    }
    label = f"evalset {Path(source).name} ({result.items}/{result.total} items)"
    return {"accuracy": result.accuracy}, result.accuracy, label, data


def _lm_eval(base_url: str, model: str, settings: AccuracySettings, workdir: str | Path):
    cfg = settings.lm_eval
    if cfg is None:
        raise ValueError("accuracy metric lm_eval needs an lm_eval: {tasks: [...]} section")
    out = Path(workdir) / "lm_eval" / fingerprint([base_url, time.time()])
    argv = lm_eval_argv(
        base_url,
        model,
        cfg.tasks,
        out,
        tokenizer=cfg.tokenizer,
        num_concurrent=cfg.num_concurrent,
        limit=cfg.limit,
    )
    result = run_lm_eval(argv)
    value = result.mean(cfg.metric)
    data = {
        "argv": argv,
        "results": result.path,
        "tasks": {k: dict(v) for k, v in result.tasks.items()},
    }
    label = f"lm-eval {cfg.metric} on {','.join(cfg.tasks)}"
    return {"accuracy": value}, value, label, data
