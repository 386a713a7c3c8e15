"""The small interface every engine implements, and the records it exchanges with the tuner.

An engine owns its option names (the real ones of ``vllm serve`` or ``trtllm-serve``), its search
space, its validity rules and its export format. It also maps a config onto a
:class:`ServingPlan`, the engine-neutral description that the simulator and the memory rules read,
so nothing outside ``engines/`` ever branches on an engine's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from engines.metrics import Measurement, RequestSLO
from engines.specs import HardwareSpec, ModelSpec
from engines.workload import WorkloadSpec

Config = dict[str, Any]


@dataclass(frozen=True)
class Param:
    """One searchable option, named as the engine names it.

    ``when`` makes the option conditional (define-by-run): it is only suggested when every named
    option already chosen has one of the listed values. ``restart`` is False for options a running
    server can take without restarting (load parameters); real engines reuse servers across them.
    """

    name: str
    kind: Literal["categorical", "int", "float"]
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    default: Any = None
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    restart: bool = True
    help: str = ""
    key: str = ""

    @property
    def search_name(self) -> str:
        """The name the search stores it under: ``key`` when one option appears twice in a
        space with different choices under different conditions, else the option's name."""
        return self.key or self.name

    def applies(self, chosen: Mapping[str, Any]) -> bool:
        """Whether this option is active given the options chosen before it."""
        return all(chosen.get(key) in values for key, values in self.when.items())


@dataclass(frozen=True)
class ServingPlan:
    """What a config means physically, in engine-neutral terms.

    ``weight_dtype``/``compute_dtype``: how weights are stored and which tensor-core rate the
    matmuls run at (W4A16 AWQ stores int4 but computes in bf16). ``memory_rule`` says how
    ``memory_fraction`` is read: vLLM's ``gpu_memory_utilization`` is a share of the whole GPU,
    TensorRT-LLM's ``free_gpu_memory_fraction`` a share of what is free after the weights.
    """

    weight_dtype: str
    compute_dtype: str
    kv_dtype: str
    tp: int
    pp: int
    max_seqs: int
    max_batched_tokens: int
    max_model_len: int
    memory_fraction: float
    memory_rule: Literal["total", "free_after_weights"]
    prefix_caching: bool
    chunked_prefill: bool
    cuda_graphs: bool
    block_size: int = 16
    # API server processes in front of the engine (vLLM's --api-server-count): each streams its
    # share of the requests' tokens, so more of them lift the host's cap on tokens per second
    api_servers: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def precision(self) -> str:
        """Short label used for accuracy estimates, filters and plots: the weights and compute
        part (``bf16``, ``fp8``, ``wint4abf16`` for W4A16) plus ``/kv-<dtype>`` when the KV cache
        is stored in a narrower type than the activations (``fp8/kv-fp8``, ``bf16/kv-fp8``)."""
        label = (
            self.weight_dtype
            if self.weight_dtype == self.compute_dtype
            else (f"w{self.weight_dtype}a{self.compute_dtype}")
        )
        wide = ("bf16", "fp16", "fp32", "auto")
        return label if self.kv_dtype in wide else f"{label}/kv-{self.kv_dtype}"


@dataclass
class RunContext:
    """Everything a trial needs besides its config."""

    model: ModelSpec
    hardware: HardwareSpec
    workload: WorkloadSpec
    slo: RequestSLO = field(default_factory=RequestSLO)
    seed: int = 0
    workdir: Path = field(default_factory=lambda: Path("studies/runs"))
    trial_number: int | None = None
    timeout_s: float = 1800.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportBundle:
    """Files an engine takes as they are, plus the command that uses them.

    ``full_command`` is the same server as one command line with every option spelled out (for
    the manifest; no benchmark-only arguments), empty when ``command`` is that already."""

    files: Mapping[str, str]
    command: list[str]
    notes: str = ""
    # Commands serve.sh runs before ``command`` (a TensorRT engine's build, which returns at once
    # when the engine folder already holds this build).
    setup: tuple[tuple[str, ...], ...] = ()
    full_command: list[str] = field(default_factory=list)


class Engine(ABC):
    """One serving engine: space, validation, measurement and export."""

    name: ClassVar[str]
    label: ClassVar[str]
    # The options a results table shows beside the metrics (batch limits, parallelism), under
    # this engine's own names: the tuner prints them without knowing any engine.
    key_options: ClassVar[tuple[str, ...]] = ()
    # Keys of a spec's ``engines.<name>`` block that configure the engine itself (passed to
    # its constructor, e.g. vLLM's ``version``) rather than override an option of its space.
    settings: ClassVar[tuple[str, ...]] = ()
    # Options that must never change greedy outputs (speculative decoding), and the options that
    # may (precision): a config that differs from the accuracy reference only in the former must
    # agree with it token for token (engines.accuracy.lossless).
    # The option that sets the longest sequence a server accepts (vLLM's max_model_len): a spec
    # that pins it past the model's context is refused before a study starts.
    context_option: ClassVar[str | None] = None
    lossless_options: ClassVar[tuple[str, ...]] = ()
    numerics_options: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def space(self, model: ModelSpec, hardware: HardwareSpec) -> list[Param]:
        """The default search space for this model on this hardware."""

    @abstractmethod
    def plan(self, config: Config, ctx: RunContext) -> ServingPlan:
        """Read a config as an engine-neutral :class:`ServingPlan`."""

    @abstractmethod
    def engine_rules(self, config: Config, ctx: RunContext) -> list[str]:
        """Reasons specific to this engine why ``config`` cannot run (empty when it can)."""

    def validate(self, config: Config, ctx: RunContext) -> list[str]:
        """All reasons ``config`` cannot run: this engine's rules, then the shared physical ones."""
        from engines.rules import physical_rules

        reasons = self.engine_rules(config, ctx)
        if reasons:
            return reasons
        return physical_rules(self.plan(config, ctx), ctx)

    @abstractmethod
    def run(self, config: Config, ctx: RunContext) -> Measurement:
        """Measure ``config`` under ``ctx.workload``; raise EngineError with a reason on failure."""

    @abstractmethod
    def export(self, config: Config, ctx: RunContext) -> ExportBundle:
        """The files and command that serve ``config`` with this engine."""

    def defaults(self, model: ModelSpec, hardware: HardwareSpec) -> Config:
        """The engine's own defaults for every option in its space (the baseline config)."""
        chosen: Config = {}
        for param in self.space(model, hardware):
            if param.applies(chosen):
                chosen[param.name] = param.default
        return chosen

    def unknown_option(self, name: str, known: list[str]) -> str:
        """Why ``name`` is not in the space, for a spec error: the closest name it has."""
        import difflib

        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f"not an option of {self.label}" + (f"; did you mean {close[0]!r}?" if close else "")

    def check_space(self, space: list[Param], where: str) -> None:  # noqa: B027 (optional)
        """Raise SpecError where a (possibly overridden) space offers a value the engine's
        release does not take; engines with an option table check against it."""

    def versions(self) -> dict[str, str]:
        """Versions worth recording with every trial (engine release the options follow...)."""
        return {}

    def close(self) -> None:  # noqa: B027  (optional hook: most engines hold nothing)
        """Release anything held between trials (a running server); safe to call twice."""
