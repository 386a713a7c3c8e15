"""The tuning loop on the sim engine, against real SQLite storages."""

from __future__ import annotations

import math

import optuna
import pytest

from engines import EngineError
from engines.errors import StudyError
from engines.space import pinned_overrides
from engines.specs import HardwareSpec, ModelSpec
from engines.vllm import VllmEngine
from tuner.analysis.results import study_front, trial_records
from tuner.spec import parse_spec
from tuner.study.loop import (
    MAX_CONSECUTIVE_REJECTIONS,
    counted_trials,
    fail_reason,
    load_study,
    open_study,
    run_study,
)


def _spec(tmp_path, **changes):
    data = {
        "name": "t",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "workload": {"preset": "chat", "num_requests": 120},
        "engines": {"vllm": {"max_model_len": {"value": 8192}}},
        "slos": {"ttft_p99_ms": 5000},
        "budget": {"trials": 12},
        "storage": f"sqlite:///{tmp_path}/s.db",
        "seed": 3,
    }
    data.update(changes)
    return parse_spec(data)


def test_study_runs_records_measurements_and_opens_with_plain_optuna(tmp_path):
    spec = _spec(tmp_path)
    run_study(spec)
    study = optuna.load_study(study_name="t", storage=spec.storage_url)
    assert counted_trials(study) == 12
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done, "no trial completed"
    first = study.trials[0]
    assert first.user_attrs["baseline"] is True  # engine defaults measured first
    for t in done:
        assert t.user_attrs["result"]["estimated"] is True
        assert t.user_attrs["metrics"]["output_tokens_per_s"] == pytest.approx(t.values[0])
        assert set(t.user_attrs["config"]) >= {"max_num_seqs", "gpu_memory_utilization"}
        assert "sim_profile" in t.user_attrs["result"]["versions"]
    assert study.user_attrs["spec_hash"] == spec.spec_hash()
    assert study.metric_names == [o.metric for o in spec.objectives]  # optuna-dashboard's titles


def test_feasibility_follows_the_slos(tmp_path):
    spec = _spec(tmp_path, slos={"ttft_p99_ms": 1.0})  # impossible: nothing is feasible
    run_study(spec)
    records = [
        r for r in trial_records(load_study("t", spec.storage_url)[0]) if r.state == "COMPLETE"
    ]
    assert records and not any(r.feasible for r in records)
    front = study_front(load_study("t", spec.storage_url)[0])
    assert front.winner is None and front.front == []


def test_invalid_configs_are_pruned_with_a_reason_and_the_study_goes_on(tmp_path):
    # 70B in bf16 does not fit one H100: every config is rejected before it runs
    engines = {"vllm": {"max_model_len": {"value": 8192}, "quantization": {"value": None}}}
    spec = _spec(tmp_path, model="Llama-3.1-70B", budget={"trials": 5}, engines=engines)
    run_study(spec)
    study, _ = load_study("t", spec.storage_url)
    # rejected configs cost nothing and use no budget; a space of nothing but rejections stops
    assert [t.state.name for t in study.trials] == ["PRUNED"] * MAX_CONSECUTIVE_REJECTIONS
    assert counted_trials(study) == 0
    assert all(t.user_attrs["fail"]["reason"] == "invalid" for t in study.trials)
    details = [t.user_attrs["fail"]["detail"] for t in study.trials]
    assert all(details) and sum("does not fit" in d for d in details) > len(details) // 2


class _Exploding:
    """Wraps an engine so that every other run fails like a crashed server."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name = inner.name

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def run(self, config, ctx):
        self.calls += 1
        if self.calls % 2 == 0:
            raise EngineError("oom", "CUDA out of memory (injected)")
        if self.calls == 3:
            raise RuntimeError("engine bug (injected)")
        return self.inner.run(config, ctx)


def test_failing_trials_are_recorded_with_reasons_and_the_study_completes(tmp_path):
    from tuner.study.loop import build_engines

    spec = _spec(tmp_path, budget={"trials": 8})
    engines = {k: _Exploding(v) for k, v in build_engines(spec).items()}
    run_study(spec, engines=engines)
    study, _ = load_study("t", spec.storage_url)
    reasons = [fail_reason(t) for t in study.trials if t.state.name == "FAIL"]
    assert "oom" in reasons and "error" in reasons
    assert counted_trials(study) == 8
    assert any(t.state.name == "COMPLETE" for t in study.trials)


def test_resume_continues_to_the_budget_without_losing_trials(tmp_path):
    spec = _spec(tmp_path, budget={"trials": 6})
    run_study(spec)
    first = {t.number: t.values for t in load_study("t", spec.storage_url)[0].trials}
    bigger = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": 10})})
    run_study(bigger)
    study, _ = load_study("t", spec.storage_url)
    assert counted_trials(study) == 10
    assert {t.number: t.values for t in study.trials if t.number in first} == first


def test_interrupted_trial_is_failed_not_counted_and_resume_finishes(tmp_path):
    from tuner.study.loop import build_engines

    spec = _spec(tmp_path, budget={"trials": 5})
    engines = build_engines(spec)
    inner = engines["vllm"]

    class Interrupting(_Exploding):
        def run(self, config, ctx):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.inner.run(config, ctx)

    with pytest.raises(KeyboardInterrupt):
        run_study(spec, engines={"vllm": Interrupting(inner)})
    study, _ = load_study("t", spec.storage_url)
    assert [fail_reason(t) for t in study.trials][-1] == "interrupted"
    assert counted_trials(study) == sum(1 for t in study.trials if fail_reason(t) is None)
    run_study(spec)
    study, _ = load_study("t", spec.storage_url)
    assert counted_trials(study) == 5
    assert [fail_reason(t) for t in study.trials].count("interrupted") == 1
    assert sum(1 for t in study.trials if t.state.name == "COMPLETE") == 5


def test_changed_spec_under_the_same_name_is_refused(tmp_path):
    spec = _spec(tmp_path, budget={"trials": 2})
    run_study(spec)
    other = _spec(tmp_path, workload="summarization", budget={"trials": 2})
    with pytest.raises(StudyError, match="different spec"):
        open_study(other)


def test_loading_a_missing_study_names_it(tmp_path):
    with pytest.raises(StudyError, match="no study named 'ghost'"):
        load_study("ghost", f"sqlite:///{tmp_path}/s.db")


def test_unwritable_storage_is_a_study_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    spec = _spec(tmp_path, storage=f"sqlite:///{blocker}/sub/s.db")
    with pytest.raises(StudyError, match="storage: cannot"):
        run_study(spec)


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
def test_every_sampler_runs(tmp_path, sampler):
    space = VllmEngine().space(
        ModelSpec.model_validate("Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM")
    )
    free = {
        "max_model_len": {"value": 8192},
        "max_num_seqs": {"choices": [64, 256]},
        "quantization": {"choices": [None, "fp8"]},
        "kv_cache_dtype": {"choices": ["auto", "fp8"]},
    }
    engines = {"vllm": pinned_overrides(space, free)}
    spec = _spec(tmp_path, sampler=sampler, engines=engines, budget={"trials": 6}, baseline=False)
    run_study(spec)
    study, _ = load_study("t", spec.storage_url)
    values = [t.values[0] for t in study.trials if t.state.name == "COMPLETE"]
    assert values and all(math.isfinite(v) and v > 0 for v in values)
    if sampler == "grid":  # 2 seqs x 2 quantization x 2 kv dtypes = 8 > 6: no repeats
        configs = [tuple(sorted(t.params.items())) for t in study.trials]
        assert len(set(configs)) == len(configs)


def test_workload_sweep_searches_the_load_level(tmp_path):
    workload = {"preset": "chat", "num_requests": 80, "sweep": [4, 64]}
    spec = _spec(tmp_path, workload=workload, budget={"trials": 10}, slos={})
    run_study(spec)
    study, _ = load_study("t", spec.storage_url)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    loads = {t.user_attrs["load"] for t in done}
    assert loads == {4, 64}
    by_load = {}
    for t in done:
        by_load.setdefault(t.user_attrs["load"], []).append(t.values[0])
    assert max(by_load[64]) > max(by_load[4])  # 16x the users, more tokens/s
    assert all(t.params["load"] == t.user_attrs["load"] for t in done)


def test_an_overloaded_trial_is_not_counted_as_a_rejection():
    from tuner.study.loop import OVERLOADED, TrialOutcome

    def outcome(state, reason):
        return TrialOutcome(0, "vllm", state, None, False, reason, {})

    assert outcome("PRUNED", "duplicate: already measured as trial 3").rejected
    assert not outcome("PRUNED", f"{OVERLOADED}: queue_growing: 1.0 -> 3.0 -> 6.0").rejected
    assert not outcome("FAIL", "oom: ...").rejected


def test_a_config_stopped_as_overloaded_counts_as_measured_for_duplicates():
    from optuna.trial import TrialState

    from tuner.study.strategy import duplicate_of

    study = optuna.create_study()
    for state, attrs in (
        (TrialState.PRUNED, {"fail": {"reason": "invalid"}}),  # rejected before it ran
        (TrialState.PRUNED, {"fail": {"reason": "overloaded"}, "result": {"feasible": False}}),
    ):
        trial = study.ask()
        config = {"max_num_seqs": 64 if "result" in attrs else 32}
        for key, value in {**attrs, "engine": "vllm", "config": config}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=state)
    assert duplicate_of(study, "vllm", {"max_num_seqs": 32}) is None
    assert duplicate_of(study, "vllm", {"max_num_seqs": 64}) == 1


def test_a_named_baseline_is_measured_first_with_the_rest_at_defaults(tmp_path):
    """``baseline: {vllm: {...}}`` measures the user's own config first (e.g. today's production
    one) instead of the engine's defaults; every ratio to the baseline is then a ratio to it."""
    from tuner.study.finalists import study_baseline_ratios

    named = {"max_num_seqs": 64, "kv_cache_dtype": "fp8"}
    spec = _spec(tmp_path, baseline={"vllm": named}, budget={"trials": 4})
    study = run_study(spec)
    first = study.trials[0]
    defaults = VllmEngine().defaults(spec.model, spec.hardware)
    assert first.user_attrs["baseline"] is True
    config = first.user_attrs["config"]
    assert {k: config[k] for k in named} == named
    assert config["gpu_memory_utilization"] == defaults["gpu_memory_utilization"]
    assert defaults["max_num_seqs"] != 64
    ratios = study_baseline_ratios(study)
    assert ratios[0]["output_tokens_per_s"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"trtllm": {"max_batch_size": 8}}, "baseline names engine 'trtllm'"),
        ({"vllm": {"max_num_sequences": 8}}, "baseline.vllm.max_num_sequences: not an option"),
        ({"vllm": {"max_num_seqs": 100000}}, "baseline.vllm.max_num_seqs: 100000 is outside"),
        ({"vllm": {"kv_cache_dtype": "int3"}}, "baseline.vllm.kv_cache_dtype: 'int3' is outside"),
    ],
)
def test_a_named_baseline_outside_the_space_is_a_one_line_error(tmp_path, baseline, message):
    from engines.errors import SpecError

    with pytest.raises((SpecError, ValueError)) as caught:
        run_study(_spec(tmp_path, baseline=baseline, budget={"trials": 2}))
    assert message in str(caught.value)
    assert not (tmp_path / "s.db").exists(), "rejected before a study was opened"


def test_a_grid_smaller_than_the_budget_ends_when_every_config_was_tried(tmp_path):
    """Optuna's grid sampler calls ``study.stop()`` once the grid is done, which raised out of
    servetune's ask-and-tell loop and ended the study with a traceback; now the last trial is
    kept, the study is marked exhausted, and running it again adds nothing."""
    from tuner.study.loop import search_exhausted

    engines = {
        "vllm": pinned_overrides(
            VllmEngine().space(ModelSpec(name="Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM")),
            {"max_num_seqs": {"choices": [64, 128, 256]}},
        )
    }
    spec = _spec(tmp_path, sampler="grid", engines=engines, budget={"trials": 10}, baseline=False)
    study = run_study(spec)
    seqs = sorted(t.user_attrs["config"]["max_num_seqs"] for t in study.trials)
    assert seqs == [64, 128, 256]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert search_exhausted(study)
    again = run_study(spec)
    assert len(again.trials) == 3


@pytest.mark.parametrize("where", ["validate", "plan", "run", "metrics"])
def test_an_exception_anywhere_in_a_trial_fails_it_and_the_study_goes_on(tmp_path, where):
    from tuner.study.loop import build_engines

    spec = _spec(tmp_path, budget={"trials": 8}, baseline=False, sampler="random")
    inner = build_engines(spec)["vllm"]

    class Broken(type(inner)):  # the sim engine with a bug in one step, for half the configs
        def _maybe_raise(self, step, config):
            if step == where and config["enable_prefix_caching"]:
                raise ZeroDivisionError(f"bug in {step}")

        def validate(self, config, ctx):
            self._maybe_raise("validate", config)
            return super().validate(config, ctx)

        def plan(self, config, ctx):
            self._maybe_raise("plan", config)
            return super().plan(config, ctx)

        def run(self, config, ctx):
            self._maybe_raise("run", config)
            measured = super().run(config, ctx)
            self._maybe_raise("metrics", config)
            return measured

    broken = Broken.__new__(Broken)
    broken.__dict__.update(inner.__dict__)
    study = run_study(spec, engines={"vllm": broken})
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(fail_reason(t) == "error" for t in failed)
    assert all("ZeroDivisionError: bug in" in t.user_attrs["fail"]["detail"] for t in failed)
    assert all(t.user_attrs["config"]["enable_prefix_caching"] for t in failed)
    assert counted_trials(study) == 8 and "COMPLETE" in states
