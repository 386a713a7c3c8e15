"""The requests a trial sends, and fresh prompts of the same lengths for every later run.

A server with prefix caching (vLLM's default) keeps the KV cache of prompts it has seen. When a
repeat run, a capacity probe or the next load level of a sweep sends the very same prompts again,
the server skips their prefill and the numbers describe another workload: on an H200
(studies/real/h200/finalize) the defaults' repeats read up to 33% more tokens/s than the first
run, at a prefix-cache hit rate of up to 65%, and the fp8-KV winner's read 14,500 against 8,500
tok/s at 98%. So every run draws new prompt text for the same planned lengths (common random
numbers: configs and runs still see identical lengths and arrivals), from a seed that also
differs per trial, because a sweep's trials share one running server.

A dataset's own prompts (JSONL with text, ShareGPT) cannot be redrawn: they repeat, and a server
with prefix caching serves their repeats from cache, as it would in production.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from engines.base import RunContext
from engines.datasets import is_sharegpt, read_sharegpt
from engines.serving.loadgen import LoadRequest
from engines.serving.prompts import PromptMaker, load_tokenizer
from engines.workload import RequestPlan, plan_requests


def prompt_seed(seed: int, trial: int | None) -> int:
    """The prompt text's seed: the study's seed, mixed with the trial number."""
    state = np.random.SeedSequence([seed, 0 if trial is None else trial + 1]).generate_state(1)
    return int(state[0])


@dataclasses.dataclass
class RequestSource:
    """One trial's planned requests; :meth:`redraw` and :meth:`sample` give unseen prompts."""

    requests: list[LoadRequest]
    plan: RequestPlan
    maker: PromptMaker
    synthetic: bool  # prompt text made here (False: a dataset's own text)

    @property
    def measured(self) -> list[LoadRequest]:
        """The requests after the warmup."""
        return self.requests[self.plan.warmup :]

    def redraw(self) -> list[LoadRequest]:
        """The measured requests again, in order, with new prompt text of the same lengths."""
        return self.sample(len(self.measured))

    def sample(self, count: int) -> list[LoadRequest]:
        """``count`` requests with the measured requests' lengths (cycled), in new prompt text."""
        measured = self.measured or self.requests
        chosen = [measured[i % len(measured)] for i in range(count)]
        if not self.synthetic:
            return chosen
        prompts = self.maker.make([r.input_tokens for r in chosen], self.plan.shared_prefix_tokens)
        return [dataclasses.replace(r, prompt=p) for r, p in zip(chosen, prompts, strict=True)]


def request_source(ctx: RunContext) -> RequestSource:
    """Concrete requests for the trial: lengths and arrivals from the study's seed, prompt text
    from :func:`prompt_seed`."""
    workload = ctx.workload
    path = ctx.model.path
    tokenizer = load_tokenizer(path if path and Path(path).is_dir() else None)
    maker = PromptMaker(tokenizer, prompt_seed(ctx.seed, ctx.trial_number))
    synthetic = False
    if workload.dataset and is_sharegpt(workload.dataset):
        plan, prompts = _sharegpt_plan(ctx, maker)
    else:
        plan = plan_requests(workload, ctx.seed)
        if plan.prompts is not None:
            prompts = list(plan.prompts)
            plan = dataclasses.replace(
                plan, input_tokens=np.array([maker.count(p) for p in prompts])
            )
        else:
            prompts = maker.make(plan.input_tokens, plan.shared_prefix_tokens)
            synthetic = True
    requests = [
        LoadRequest(p, int(i), int(o))
        for p, i, o in zip(prompts, plan.input_tokens, plan.output_tokens, strict=True)
    ]
    return RequestSource(requests, plan, maker, synthetic)


def _sharegpt_plan(ctx: RunContext, maker: PromptMaker) -> tuple[RequestPlan, list[str]]:
    """Arrivals from the workload, lengths and prompts sampled from a ShareGPT file."""
    pairs = read_sharegpt(ctx.workload.dataset)  # type: ignore[arg-type]
    plan = plan_requests(ctx.workload.model_copy(update={"dataset": None}), ctx.seed)
    idx = np.random.default_rng(ctx.seed).integers(0, len(pairs), size=plan.count)
    prompts = [pairs[i][0] for i in idx]
    outputs = np.array([max(1, maker.count(pairs[i][1]) - maker.special_tokens) for i in idx])
    inputs = np.array([maker.count(p) for p in prompts])
    return dataclasses.replace(
        plan, input_tokens=inputs, output_tokens=outputs, shared_prefix_tokens=0
    ), prompts
