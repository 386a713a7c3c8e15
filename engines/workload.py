"""Traffic a trial is measured under: request lengths, shared prefixes and arrivals.

A workload is data (guidellm's lesson): one record describes lengths and an arrival profile, and
:func:`plan_requests` turns it into concrete per-request numbers for a seed. The simulator and the
real load generator consume the same plan, so a sim trial and a real trial see the same traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.catalog import load_data
from engines.datasets import dataset_requests

_STRICT = ConfigDict(extra="forbid", frozen=True)


class LengthDist(BaseModel):
    """A token-length distribution; samples are clipped to [min, max] and rounded."""

    model_config = _STRICT

    kind: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    value: int | None = Field(default=None, ge=1)
    mean: float | None = Field(default=None, gt=0)
    std: float | None = Field(default=None, ge=0)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    min: int = Field(default=1, ge=1)
    max: int = Field(default=1_000_000, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"kind": "fixed", "value": data} if isinstance(data, int) else data

    @model_validator(mode="after")
    def _check(self) -> LengthDist:
        need = {
            "fixed": ("value",),
            "uniform": ("low", "high"),
            "normal": ("mean", "std"),
            "lognormal": ("mean", "std"),
        }[self.kind]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"kind {self.kind!r} needs {', '.join(missing)}")
        if self.kind == "uniform" and self.low > self.high:  # type: ignore[operator]
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` integer lengths."""
        if self.kind == "fixed":
            raw = np.full(n, float(self.value))  # type: ignore[arg-type]
        elif self.kind == "uniform":
            raw = rng.integers(self.low, self.high + 1, size=n).astype(float)  # type: ignore[operator]
        elif self.kind == "normal":
            raw = rng.normal(self.mean, self.std, size=n)
        else:  # lognormal parameterised by the mean and std of the lengths themselves
            mean, std = float(self.mean), float(self.std)  # type: ignore[arg-type]
            sigma2 = np.log1p((std / mean) ** 2)
            raw = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), size=n)
        return np.clip(np.rint(raw), self.min, self.max).astype(np.int64)

    @property
    def upper_bound(self) -> int:
        """The longest length this distribution can produce (for max-model-len checks)."""
        if self.kind == "fixed":
            return min(int(self.value), self.max)  # type: ignore[arg-type]
        if self.kind == "uniform":
            return min(int(self.high), self.max)  # type: ignore[arg-type]
        return self.max if self.max < 1_000_000 else int(self.mean * 4)  # type: ignore[operator]


class Arrival(BaseModel):
    """How requests arrive: closed-loop concurrency, Poisson rate, or bursty gamma arrivals."""

    model_config = _STRICT

    kind: Literal["concurrency", "poisson", "gamma"] = "concurrency"
    concurrency: int | None = Field(default=None, ge=1)
    rate: float | None = Field(default=None, gt=0, description="requests per second")
    burstiness: float = Field(default=1.0, gt=0, description="gamma shape; <1 is burstier")
    max_concurrency: int | None = Field(default=None, ge=1, description="cap for open-loop")

    @model_validator(mode="after")
    def _check(self) -> Arrival:
        if self.kind == "concurrency" and self.concurrency is None:
            raise ValueError("kind 'concurrency' needs concurrency")
        if self.kind in ("poisson", "gamma") and self.rate is None:
            raise ValueError(f"kind {self.kind!r} needs rate")
        return self


class WorkloadSpec(BaseModel):
    """A complete traffic description; ``preset`` starts from a named workload in the catalogue."""

    model_config = _STRICT

    name: str = "custom"
    input_tokens: LengthDist = LengthDist(kind="fixed", value=1024)
    output_tokens: LengthDist = LengthDist(kind="fixed", value=256)
    dataset: str | None = Field(
        default=None, description="JSONL with prompt/input_tokens, output_tokens"
    )
    shared_prefix_fraction: float = Field(default=0.0, ge=0, le=1)
    arrival: Arrival = Arrival(kind="concurrency", concurrency=64)
    num_requests: int = Field(default=500, ge=1, le=1_000_000)
    warmup_requests: int = Field(default=0, ge=0)
    sweep: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] | None = Field(
        default=None,
        min_length=1,
        description="load levels searched as a parameter: concurrencies (closed loop) or "
        "requests/s (open loop); real servers are reused across levels",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"preset": data}
        if isinstance(data, dict) and "preset" in data:
            data = dict(data)
            preset = data.pop("preset")
            presets = load_data("workloads")["workloads"]
            if preset not in presets:
                raise ValueError(f"unknown preset {preset!r}; known: {', '.join(sorted(presets))}")
            data = {**presets[preset], "name": preset, **data}
        return data

    def at_load(self, level: float) -> WorkloadSpec:
        """This workload at another load level: the concurrency of a closed loop, else the
        arrival rate (requests/s)."""
        if self.arrival.kind == "concurrency":
            arrival = self.arrival.model_copy(update={"concurrency": max(1, int(level))})
        else:
            arrival = self.arrival.model_copy(update={"rate": float(level)})
        return self.model_copy(update={"arrival": arrival})

    @property
    def max_sequence_tokens(self) -> int:
        """Longest prompt plus output this workload can send (dataset: its longest line)."""
        if self.dataset:
            plan = _dataset_lengths(Path(self.dataset))
            return int((plan[0] + plan[1]).max())
        return self.input_tokens.upper_bound + self.output_tokens.upper_bound


@dataclass(frozen=True)
class RequestPlan:
    """Concrete requests for one run: lengths, arrival offsets (open loop) and shared prefix."""

    input_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray | None  # None for closed-loop concurrency
    concurrency: int | None
    shared_prefix_tokens: int
    warmup: int
    prompts: tuple[str, ...] | None = None  # from a dataset, when it has text

    @property
    def count(self) -> int:
        return int(self.input_tokens.size)


def plan_requests(workload: WorkloadSpec, seed: int) -> RequestPlan:
    """Turn a workload into concrete requests, deterministically for ``seed``."""
    rng = np.random.default_rng(seed)
    n = workload.num_requests + workload.warmup_requests
    prompts: tuple[str, ...] | None = None
    if workload.dataset:
        ins, outs, texts = _dataset_lengths(Path(workload.dataset))
        idx = rng.integers(0, ins.size, size=n)
        inputs, outputs = ins[idx], outs[idx]
        prompts = tuple(texts[i] for i in idx) if all(texts) else None
    else:
        inputs = workload.input_tokens.sample(n, rng)
        outputs = workload.output_tokens.sample(n, rng)
    arrival = workload.arrival
    arrivals = None
    if arrival.kind != "concurrency":
        shape = 1.0 if arrival.kind == "poisson" else arrival.burstiness
        gaps = rng.gamma(shape, 1.0 / (arrival.rate * shape), size=n)  # type: ignore[operator]
        arrivals = np.cumsum(gaps) - gaps[0]
    prefix = int(round(workload.shared_prefix_fraction * float(np.median(inputs))))
    return RequestPlan(
        input_tokens=inputs,
        output_tokens=outputs,
        arrival_s=arrivals,
        concurrency=arrival.concurrency
        if arrival.kind == "concurrency"
        else arrival.max_concurrency,
        shared_prefix_tokens=prefix,
        warmup=workload.warmup_requests,
        prompts=prompts,
    )


def _dataset_lengths(path: Path) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Input and output lengths and prompts of a dataset (engines.datasets: either form)."""
    rows = dataset_requests(path)
    ins = np.array([r[0] for r in rows], dtype=np.int64)
    outs = np.array([r[1] for r in rows], dtype=np.int64)
    return ins, outs, [r[2] for r in rows]


def measured_window(plan: RequestPlan) -> RequestPlan:
    """The plan's measured requests alone, as a real run sends them.

    The load generator runs the warmup as a phase of its own and starts the measured requests
    after it (as ``vllm bench serve`` does): a closed loop then begins as one burst on a warm,
    idle server. Simulating the warmup inside the loop instead staggers the measured start, which
    moved median TTFT by 2x on the H100 (studies/real/protocols.yaml).
    """
    w = min(plan.warmup, plan.count)
    if not w:
        return plan
    arrivals = None if plan.arrival_s is None else plan.arrival_s[w:] - plan.arrival_s[w]
    return replace(
        plan,
        input_tokens=plan.input_tokens[w:],
        output_tokens=plan.output_tokens[w:],
        arrival_s=arrivals,
        warmup=0,
        prompts=None if plan.prompts is None else plan.prompts[w:],
    )
