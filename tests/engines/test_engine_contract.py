"""Every registered engine, under every runner, against the one interface (as Optuna runs one
storage test suite against every storage): space, validate, plan, export, and for real runners
the served hooks. A new engine is checked here without a line of its own."""

from __future__ import annotations

import math

import pytest

from engines import (
    RUNNERS,
    HardwareSpec,
    Measurement,
    ModelSpec,
    RunContext,
    ServingPlan,
    WorkloadSpec,
    engine_names,
    get_engine,
)
from engines.base import Param
from engines.served import ServedEngine

MODEL = ModelSpec.model_validate("Llama-3.1-8B")
HARDWARE = HardwareSpec(gpu="H100-SXM", count=2)
WORKLOAD = WorkloadSpec(
    input_tokens=512,
    output_tokens=64,
    num_requests=64,
    arrival={"kind": "concurrency", "concurrency": 16},
)
CASES = [(name, runner) for name in engine_names() for runner in RUNNERS]


def _ctx() -> RunContext:
    return RunContext(model=MODEL, hardware=HARDWARE, workload=WORKLOAD)


def _default_in_space(param: Param) -> bool:
    if param.kind == "categorical":
        return param.default in param.choices
    return param.low <= param.default <= param.high


def _plans_tp_of(engine, name: str, ctx: RunContext) -> bool:
    """Whether option ``name`` is the tensor-parallel size (found through the plan, not by name)."""
    try:
        return engine.plan({**engine.defaults(MODEL, HARDWARE), name: 3}, ctx).tp == 3
    except (TypeError, ValueError, KeyError):
        return False


@pytest.fixture(params=CASES, ids=[f"{n}-{r}" for n, r in CASES])
def engine(request):
    name, runner = request.param
    found = get_engine(name, runner=runner)
    yield found
    found.close()


def test_space_names_are_unique_and_defaults_lie_inside(engine) -> None:
    space = engine.space(MODEL, HARDWARE)
    assert space, "an engine must search something"
    names = [p.search_name for p in space]
    assert len(names) == len(set(names)), f"duplicate search names in {engine.name}"
    outside = [p.name for p in space if p.default is not None and not _default_in_space(p)]
    assert not outside, f"defaults outside their own space: {outside}"
    assert engine.key_options, "the results table needs the engine's key options"
    assert set(engine.key_options) <= {p.name for p in space}


def test_defaults_validate_plan_and_export(engine) -> None:
    config, ctx = engine.defaults(MODEL, HARDWARE), _ctx()
    assert engine.validate(config, ctx) == []
    plan = engine.plan(config, ctx)
    assert isinstance(plan, ServingPlan)
    assert 1 <= plan.gpus <= HARDWARE.count
    bundle = engine.export(config, ctx)
    assert bundle.files and all(text.strip() for text in bundle.files.values())
    assert bundle.command and all(isinstance(word, str) for word in bundle.command)


def test_an_impossible_config_is_rejected_with_a_reason(engine) -> None:
    config, ctx = engine.defaults(MODEL, HARDWARE), _ctx()
    tp = next(p.name for p in engine.space(MODEL, HARDWARE) if _plans_tp_of(engine, p.name, ctx))
    config[tp] = 3  # divides neither the 32 heads nor the 2 GPUs
    reasons = engine.validate(config, ctx)
    assert reasons and all(isinstance(r, str) and r for r in reasons)


def test_real_engines_serve_through_the_shared_hooks(engine) -> None:
    if not isinstance(engine, ServedEngine):
        pytest.skip(f"{type(engine).__name__} is measured by the simulator, not a server")
    config = engine.defaults(MODEL, HARDWARE)
    argv = engine.serve_argv(config, _ctx(), "127.0.0.1", 18123)
    assert all(isinstance(word, str) for word in argv)
    assert "127.0.0.1" in argv and "18123" in argv
    assert engine.health_path.startswith("/")
    assert isinstance(engine.server_env(config, _ctx()), dict)


def test_simulated_engines_measure_the_defaults(engine) -> None:
    if isinstance(engine, ServedEngine):
        pytest.skip("a real server is measured in the engines' own stand-in tests")
    measured = engine.run(engine.defaults(MODEL, HARDWARE), _ctx())
    assert isinstance(measured, Measurement)
    metrics = measured.metrics()
    assert metrics["output_tokens_per_s"] > 0 and math.isfinite(metrics["ttft_p99_ms"])


def test_a_served_engine_without_serve_argv_fails_at_creation() -> None:
    class Incomplete(ServedEngine):
        name = "incomplete"
        label = "Incomplete"

        def space(self, model, hardware):
            return []

        def plan(self, config, ctx):
            raise NotImplementedError

        def engine_rules(self, config, ctx):
            return []

        def export(self, config, ctx):
            raise NotImplementedError

    with pytest.raises(TypeError, match="serve_argv"):
        Incomplete()
