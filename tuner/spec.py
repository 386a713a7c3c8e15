"""The study spec: one YAML file that says what to tune, for what, and how hard to look.

Validated with pydantic so every mistake is reported as ``field.path: problem (got value)``
in one line, before any trial runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines import engine_names
from engines.errors import SpecError
from engines.specs import HardwareSpec, ModelSpec
from engines.workload import WorkloadSpec
from tuner.objectives import DIRECTIONS

# Settings that change how hard a study looks, not what a trial measures: resuming a study
# with more trials or another sampler keeps its identity.
_NOT_HASHED = {"storage", "budget", "sampler", "warm_start", "baseline", "learn_failures"}
SAMPLERS = ("nsga2", "tpe", "random", "grid", "gp", "auto")
_STRICT = ConfigDict(extra="forbid")


class Objective(BaseModel):
    """One metric to optimise, in its natural direction unless told otherwise."""

    model_config = _STRICT

    metric: str
    direction: Literal["maximize", "minimize"]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"metric": data}
        elif isinstance(data, dict) and len(data) == 1 and "metric" not in data:
            ((metric, direction),) = data.items()
            data = {
                "metric": metric,
                "direction": {"max": "maximize", "min": "minimize"}.get(direction, direction),
            }
        if isinstance(data, dict) and data.get("metric") in DIRECTIONS:
            data = {"direction": DIRECTIONS[data["metric"]], **data}
        return data

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DIRECTIONS:
            raise ValueError(f"unknown metric {value!r}; known: {', '.join(DIRECTIONS)}")
        return value


class Budget(BaseModel):
    """When to stop: a number of trials, a wall-clock limit, or both (whichever comes first)."""

    model_config = _STRICT

    trials: int | None = Field(default=50, ge=1, le=100_000)
    minutes: float | None = Field(default=None, gt=0)
    trial_timeout_s: float = Field(default=1800, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.trials is None and self.minutes is None:
            raise ValueError("set trials, minutes or both")
        return self


class WinnerPolicy(BaseModel):
    """How the winner is chosen among feasible trials: best ``metric``, ties to ``tie_break``.

    Values within ``tolerance`` (relative) of the best count as ties.
    """

    model_config = _STRICT

    metric: str | None = None
    tie_break: str | None = None
    tolerance: float = Field(default=0.01, ge=0, lt=1)

    @field_validator("metric", "tie_break")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in DIRECTIONS:
            raise ValueError(f"unknown metric {value!r}")
        return value


class StudySpec(BaseModel):
    """A whole study. ``engines`` maps each engine to search onto overrides of its space."""

    model_config = _STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec
    hardware: HardwareSpec
    workload: WorkloadSpec = WorkloadSpec()
    runner: Literal["sim", "real"] = "sim"
    sim_profile: str | None = None
    engines: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"vllm": {}})
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="output_tokens_per_s", direction="maximize"),
            Objective(metric="ttft_p99_ms", direction="minimize"),
        ],
        min_length=1,
        max_length=4,
    )
    slos: dict[str, float] = Field(default_factory=dict)
    winner: WinnerPolicy = WinnerPolicy()
    budget: Budget = Budget()
    sampler: Literal["nsga2", "tpe", "random", "grid", "gp", "auto"] = "auto"
    storage: str | None = None
    seed: int = 0
    baseline: bool = Field(default=True, description="measure each engine's defaults first")
    learn_failures: bool = Field(
        default=True,
        description="veto configs the failure model (tuner.failures) expects to "
        "fail when they run; vetoed suggestions use no budget",
    )
    warm_start: dict[str, Any] | None = Field(
        default=None,
        description="{study, storage, top_k}: enqueue the best configs of another study",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="runner options (real servers)"
    )

    @field_validator("engines", mode="before")
    @classmethod
    def _engines(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = {name: {} for name in value}
        if not isinstance(value, dict) or not value:
            raise ValueError("give at least one engine, e.g. {vllm: {}}")
        unknown = [name for name in value if name not in engine_names()]
        if unknown:
            raise ValueError(f"unknown engine {unknown[0]!r}; known: {', '.join(engine_names())}")
        return {name: (overrides or {}) for name, overrides in value.items()}

    @field_validator("slos")
    @classmethod
    def _slos(cls, value: dict[str, float]) -> dict[str, float]:
        for metric in value:
            if metric not in DIRECTIONS:
                raise ValueError(f"unknown metric {metric!r}; known: {', '.join(DIRECTIONS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a metric: {names}")
        if self.sampler == "grid" and self.budget.trials is None:
            raise ValueError("budget.trials is required with sampler 'grid'")
        return self

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL (default: a SQLite file next to the studies)."""
        return self.storage or f"sqlite:///studies/{self.name}.db"

    @property
    def winner_metric(self) -> str:
        return self.winner.metric or self.objectives[0].metric

    def spec_hash(self) -> str:
        """Stable hash of everything that defines the study (not its storage)."""
        data = self.model_dump(mode="json", exclude=_NOT_HASHED)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def parse_spec(data: Any, source: str = "spec") -> StudySpec:
    """Validate a spec given as a mapping; errors become one-line :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: expected a mapping of study settings, got {type(data).__name__}"
        )
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_first_error(exc)}") from None


def load_spec(path: str | Path, **overrides: Any) -> StudySpec:
    """Read and validate a YAML spec; keyword ``overrides`` replace top-level fields."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}:{where} malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_spec(data, str(path))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    if len(shown) > 80:
        shown = shown[:77] + "...)"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"
