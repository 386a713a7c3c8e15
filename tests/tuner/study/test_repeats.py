"""No sampler spends a trial on a config the study already measured (unless asked to)."""

from __future__ import annotations

import random

import optuna
import pytest

from engines.base import Param
from engines.space import pinned_overrides
from engines.specs import HardwareSpec, ModelSpec
from engines.vllm import VllmEngine
from tuner.spec import parse_spec
from tuner.study.loop import counted_trials, fail_reason, run_study, search_exhausted
from tuner.study.repeats import random_config

FREE = {
    "max_model_len": {"value": 8192},
    "max_num_seqs": {"choices": [64, 256]},
    "quantization": {"choices": [None, "fp8"]},
    "kv_cache_dtype": {"choices": ["auto", "fp8"]},
}  # 8 configs


def _spec(tmp_path, sampler, trials, **changes):
    space = VllmEngine().space(
        ModelSpec.model_validate("Llama-3.1-8B"), HardwareSpec(gpu="H100-SXM")
    )
    data = {
        "name": "r",
        "model": "Llama-3.1-8B",
        "hardware": {"gpu": "H100-SXM"},
        "workload": {"preset": "chat", "num_requests": 60},
        "engines": {"vllm": pinned_overrides(space, FREE)},
        "budget": {"trials": trials},
        "storage": f"sqlite:///{tmp_path}/r.db",
        "sampler": sampler,
        "baseline": False,
        "seed": 1,
    }
    data.update(changes)
    return parse_spec(data)


def _measured(study: optuna.Study) -> list[tuple]:
    return [
        (t.user_attrs.get("load"), tuple(sorted(t.user_attrs["config"].items(), key=str)))
        for t in study.trials
        if "result" in t.user_attrs
    ]


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random", "auto"])
def test_no_sampler_measures_a_config_twice_across_a_resume(tmp_path, sampler):
    run_study(_spec(tmp_path, sampler, 5))
    study = run_study(_spec(tmp_path, sampler, 12))  # more than the 8 configs there are
    measured = _measured(study)
    assert len(measured) == len(set(measured)), "a config was measured twice"
    assert len(measured) == 8  # every config once, then the search ends as exhausted
    assert search_exhausted(study)
    assert any(fail_reason(t) == "duplicate" for t in study.trials)


def test_repeats_run_when_the_spec_allows_them(tmp_path):
    study = run_study(_spec(tmp_path, "random", 14, allow_repeats=True))
    measured = _measured(study)
    assert counted_trials(study) == 14
    assert len(set(measured)) < len(measured)


def test_a_config_at_another_load_level_is_not_a_repeat(tmp_path):
    workload = {"preset": "chat", "num_requests": 40, "sweep": [4, 16]}
    study = run_study(_spec(tmp_path, "nsga2", 20, workload=workload, slos={}))
    measured = _measured(study)
    assert len(measured) == len(set(measured)) == 16  # 8 configs x 2 levels
    assert {load for load, _ in measured} == {4, 16}


def test_random_configs_stay_inside_the_space_on_its_steps():
    space = [
        Param("n", "int", low=8, high=1024, log=True),
        Param("f", "float", low=0.5, high=0.95, step=0.05),
        Param("c", "categorical", choices=("a", "b")),
        Param("only_b", "int", low=1, high=4, when={"c": ("b",)}),
    ]
    rng = random.Random(0)
    for _ in range(300):
        config = random_config(space, rng)
        assert 8 <= config["n"] <= 1024 and isinstance(config["n"], int)
        assert 0.5 <= config["f"] <= 0.95
        assert abs(round((config["f"] - 0.5) / 0.05) * 0.05 + 0.5 - config["f"]) < 1e-9
        assert ("only_b" in config) == (config["c"] == "b")
