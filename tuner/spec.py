"""The study spec: one YAML file that says what to tune, for what, and how hard to look.

Validated with pydantic so every mistake is reported as ``field.path: problem (got value)``
in one line, before any trial runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines import engine_names
from engines.accuracy import MEASURED_ONLY, AccuracySettings
from engines.errors import SpecError
from engines.specs import HardwareSpec, ModelSpec
from engines.workload import WorkloadSpec
from tuner.objectives import DIRECTIONS, with_error_limit
from tuner.redaction import redact_url, remember, spec_secrets

# Settings that change how hard a study looks, not what a trial measures: resuming a study
# with more trials or another sampler keeps its identity.
_NOT_HASHED = {
    "storage",
    "budget",
    "sampler",
    "warm_start",
    "baseline",
    "learn_failures",
    "allow_repeats",
    "finalists",
}
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
    outside_noise: bool = Field(
        default=False,
        description="a candidate beats the incumbent (first the baseline) only when its CI "
        "clears the incumbent's CI (its point value when it has none); see tuner.study.finalists",
    )

    @field_validator("metric", "tie_break")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in DIRECTIONS:
            raise ValueError(f"unknown metric {value!r}")
        return value


class MeasurementSpec(BaseModel):
    """How each trial measures its workload (see engines.uncertainty.MeasureSettings)."""

    model_config = _STRICT

    repeats: int = Field(default=1, ge=1, le=50, description="runs of the workload per trial")
    warmup_requests: int | None = Field(
        default=None, ge=0, description="before the first run (default: the workload's)"
    )
    min_duration_s: float = Field(default=0.0, ge=0, description="each run at least this long")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="CI level")
    capacity: bool | None = Field(
        default=None,
        description="search capacity_rps per trial (default: when it is an objective, SLO or "
        "winner metric)",
    )
    stop_overloaded: bool = Field(
        default=False,
        description="end an open-loop run once it is overloaded (requests in flight keep "
        "growing, or TTFT keeps rising past its SLO); the trial is then PRUNED, reason "
        "'overloaded'",
    )


class FinalistsSpec(BaseModel):
    """Re-measure the best configs after the search, interleaved with the baseline."""

    model_config = _STRICT

    count: int = Field(default=0, ge=0, le=20, description="finalists (0: no re-measurement)")
    rounds: int = Field(default=3, ge=1, le=20, description="measurements of each, interleaved")


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
    preset: Literal["latency", "throughput", "balanced", "cost"] | None = Field(
        default=None, description="fills objectives, SLOs, winner and measurement (tuner.presets)"
    )
    measurement: MeasurementSpec = MeasurementSpec()
    finalists: FinalistsSpec = FinalistsSpec()
    budget: Budget = Budget()
    sampler: Literal["nsga2", "tpe", "random", "grid", "gp", "auto"] = "auto"
    storage: str | None = None
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="the samplers' seed")
    baseline: bool | dict[str, dict[str, Any]] = Field(
        default=True,
        description="measure each engine's defaults first; or name the baseline per engine "
        "({vllm: {max_num_seqs: 256}}: those options, the rest at their defaults)",
    )
    learn_failures: bool = Field(
        default=True,
        description="veto configs the failure model (tuner.study.vetoes) expects to "
        "fail when they run; vetoed suggestions use no budget",
    )
    allow_repeats: bool = Field(
        default=False,
        description="let a sampler measure a config the study already measured (to see run-to-"
        "run noise); off, no sampler spends a trial on a repeat",
    )
    warm_start: dict[str, Any] | None = Field(
        default=None,
        description="{study, storage, top_k}: enqueue the best configs of another study",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="runner options (real servers)"
    )
    accuracy: AccuracySettings | None = Field(
        default=None,
        description="measure accuracy after each trial's load run (engines.accuracy; real runner)",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset"):
            from tuner.presets import apply_preset

            data = apply_preset(data["preset"], data)
        return data

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
        for metric, limit in value.items():
            if metric != "error_rate" and (not math.isfinite(limit) or limit < 0):
                raise ValueError(f"{metric}: a limit is a finite number >= 0 (got {limit})")
        rate = value.get("error_rate")
        if rate is not None and not (math.isfinite(rate) and 0 <= rate <= 1):
            raise ValueError(f"error_rate is a share of requests, 0 to 1 (got {rate})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        names = [o.metric for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives repeat a metric: {names}")
        if self.sampler == "grid" and self.budget.trials is None:
            raise ValueError("budget.trials is required with sampler 'grid'")
        return self

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        from tuner.options import check_options

        check_options(value)
        return value

    @model_validator(mode="after")
    def _dataset_readable(self) -> StudySpec:
        """A dataset is read and checked now, line by line (engines.datasets), so a bad line
        is a spec error and not a failure of every trial."""
        if self.workload.dataset:
            from engines.datasets import dataset_requests

            dataset_requests(self.workload.dataset)
        return self

    @model_validator(mode="after")
    def _servetune_binds(self) -> StudySpec:
        """Host and port are servetune's: extra server arguments cannot rebind a server
        (engines.serving.binding); ``options.host`` is the one way past loopback."""
        if any(str(key).endswith("_args") for key in self.options):
            from engines.serving.binding import reserved_args

            reserved = reserved_args(self.options)
            if reserved:
                raise ValueError(
                    f"{reserved[0]}: host and port are servetune's (each server gets 127.0.0.1 "
                    "and a free port); set options.host to bind beyond loopback"
                )
        host = self.options.get("host")
        if host is not None and (not isinstance(host, str) or not host.strip()):
            raise ValueError(f"options.host: an address to bind, e.g. 0.0.0.0 (got {host!r})")
        return self

    @model_validator(mode="after")
    def _baseline_engines(self) -> StudySpec:
        if isinstance(self.baseline, dict):
            stray = [name for name in self.baseline if name not in self.engines]
            if stray:
                raise ValueError(
                    f"baseline names engine {stray[0]!r}, which the study does not search "
                    f"(engines: {', '.join(self.engines)})"
                )
        return self

    @model_validator(mode="after")
    def _accuracy_reported(self) -> StudySpec:
        """Every accuracy metric the study uses is one its ``accuracy:`` run reports."""
        used = {o.metric for o in self.objectives} | set(self.slos) | {self.winner_metric}
        wanted = sorted(used & {*MEASURED_ONLY, "accuracy"})
        if self.accuracy is None:
            measured = [m for m in wanted if m in MEASURED_ONLY]
            if measured:
                raise ValueError(
                    f"{measured[0]} comes from an accuracy run: add accuracy: {{metric: ...}}"
                )
            if wanted and self.runner == "real":
                raise ValueError(
                    "accuracy with runner real needs an accuracy: section "
                    "(metric: agreement, kl, evalset or lm_eval)"
                )
            return self
        if self.runner != "real":
            raise ValueError(
                "accuracy: is measured on a real server (runner: real); the sim only "
                "estimates `accuracy` from published quantisation results"
            )
        missing = [m for m in wanted if m not in self.accuracy.provides]
        if missing:
            raise ValueError(
                f"accuracy.metric {self.accuracy.metric} does not report {missing[0]} "
                f"(it reports {', '.join(self.accuracy.provides)})"
            )
        return self

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL (default: a SQLite file next to the studies)."""
        return self.storage or f"sqlite:///studies/{self.name}.db"

    @property
    def feasibility_slos(self) -> dict[str, float]:
        """The limits a trial must meet to be feasible: ``slos`` plus the error-rate limit
        (1% unless ``slos.error_rate`` says otherwise; tuner.objectives.with_error_limit).
        Kept apart from ``slos`` so that the spec hash of existing studies does not change."""
        return with_error_limit(self.slos)

    @property
    def winner_metric(self) -> str:
        return self.winner.metric or self.objectives[0].metric

    @property
    def wants_capacity(self) -> bool:
        """Whether trials search ``capacity_rps`` (explicitly, or because something uses it)."""
        if self.measurement.capacity is not None:
            return self.measurement.capacity
        used = {o.metric for o in self.objectives} | set(self.slos) | {self.winner_metric}
        return "capacity_rps" in used or self.winner.tie_break == "capacity_rps"

    def measure_options(self) -> dict[str, Any]:
        """``ctx.options['measurement']`` for engines (engines.uncertainty.MeasureSettings)."""
        m = self.measurement
        return {
            "repeats": m.repeats,
            "warmup_requests": m.warmup_requests,
            "min_duration_s": m.min_duration_s,
            "level": m.confidence,
            "capacity": self.wants_capacity,
            "stop_overloaded": m.stop_overloaded,
        }

    def spec_hash(self) -> str:
        """Stable hash of everything that defines the study (not its storage)."""
        data = self.model_dump(mode="json", exclude=_NOT_HASHED)
        if not self.measurement.stop_overloaded:  # added later: studies made before keep theirs
            del data["measurement"]["stop_overloaded"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def parse_spec(data: Any, source: str = "spec") -> StudySpec:
    """Validate a spec given as a mapping; errors become one-line :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: expected a mapping of study settings, got {type(data).__name__}"
        )
    remember(spec_secrets(data))  # scrubbed from every error and log line from now on
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_first_error(exc)}") from None


def load_spec(path: str | Path, **overrides: Any) -> StudySpec:
    """Read and validate a YAML spec; keyword ``overrides`` replace top-level fields."""
    from tuner.yaml_strict import read_yaml

    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_spec(data, str(path))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, str):
        value = redact_url(value)
    secret = "env" in err["loc"] or "storage" in err["loc"]
    shown = (
        f" (got {value!r})"
        if value is not None and not isinstance(value, dict) and not secret
        else ""
    )
    if len(shown) > 80:
        shown = shown[:77] + "...)"
    if loc and re.match(rf"{re.escape(loc)}[.:]", msg):  # the message names the field itself
        return msg
    if loc == "options" and re.match(r"[\w.]+: ", msg):  # a key inside options: options.KEY
        return f"options.{msg}"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"
