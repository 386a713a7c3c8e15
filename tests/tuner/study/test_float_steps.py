"""Stepped floats reach configs, exports and tables on their step, without binary noise."""

from __future__ import annotations

import optuna

from engines.space import on_step
from tuner.analysis.export import export_trial
from tuner.analysis.results import trial_records
from tuner.spec import parse_spec
from tuner.study.loop import run_study


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def test_suggested_floats_sit_on_their_step_in_configs_and_exports(tmp_path):
    spec = parse_spec(
        {
            "name": "f",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"preset": "chat", "num_requests": 60},
            "engines": {"vllm": {"max_model_len": {"value": 8192}}},
            "budget": {"trials": 30},
            "sampler": "random",  # draws gpu_memory_utilization in [0.80, 0.95] step 0.01
            "storage": f"sqlite:///{tmp_path}/f.db",
            "seed": 4,
        }
    )
    study = run_study(spec)
    utilisations = [
        t.user_attrs["config"]["gpu_memory_utilization"]
        for t in study.trials
        if "config" in t.user_attrs
    ]
    noisy_params = [
        v
        for t in study.trials
        for v in t.params.values()
        if isinstance(v, float) and _decimals(v) > 2
    ]
    assert noisy_params, "Optuna's own stepped floats carry no noise: the rounding is not needed"
    assert len(set(utilisations)) > 5 and all(_decimals(u) <= 2 for u in utilisations)
    done = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    for number in done[:10]:
        export_trial(study, spec, tmp_path / str(number), number)
        text = (tmp_path / str(number) / "vllm_config.yaml").read_text()
        assert "0000000" not in text and "9999999" not in text, text


def test_configs_stored_with_noise_read_back_tidy(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db")
    trial = study.ask()
    trial.set_user_attr("engine", "vllm")
    trial.set_user_attr(
        "config", {"gpu_memory_utilization": 0.8700000000000001, "max_num_seqs": 64}
    )
    study.tell(trial, 1.0)
    (record,) = trial_records(study)
    assert record.config == {"gpu_memory_utilization": 0.87, "max_num_seqs": 64}


def test_on_step_keeps_the_steps_decimals():
    assert on_step(0.8700000000000001, 0.01) == 0.87
    assert on_step(0.30000000000000004, 0.05) == 0.3
    assert on_step(1234.5678, 0.5) == 1234.6  # decimals of the step, not a snap to it
    assert on_step(0.1 + 0.2, None) == 0.3
