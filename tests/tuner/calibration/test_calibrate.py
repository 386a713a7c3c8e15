"""Calibration recovers constants the sim itself was run with, and writes loadable profiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from engines.sim.profiles import load_profile
from tuner.calibration.calibrate import (
    RealPoint,
    _ProfileFiles,
    calibrate,
    fit_constants,
    predict,
    split_points,
    with_constants,
    write_profile,
)
from tuner.spec import parse_spec
from tuner.study.loop import make_context

SPEC = {
    "name": "synthetic-real",
    "model": "Llama-3.1-8B",
    "hardware": {"gpu": "H100-SXM"},
    "workload": {
        "input_tokens": 512,
        "output_tokens": 128,
        "arrival": {"kind": "concurrency", "concurrency": 64},
        "num_requests": 200,
    },
    "engines": {"vllm": {"max_model_len": {"value": 4096}}},
    "runner": "real",
    "budget": {"trials": 4},
}
TRUTH = {"prefill_mfu": 0.48, "decode_bw_efficiency": 0.66}  # shipped: 0.6, 0.78


def _config(**overrides):
    base = {
        "dtype": "bfloat16",
        "quantization": None,
        "kv_cache_dtype": "auto",
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 8192,
        "max_model_len": 4096,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "enable_prefix_caching": False,
        "enable_chunked_prefill": True,
        "enforce_eager": False,
        "block_size": 16,
    }
    return {**base, **overrides}


def _points(truth_path: str, configs) -> list[RealPoint]:
    spec = parse_spec(SPEC, "test")
    ctx = make_context(spec)
    points = []
    for i, config in enumerate(configs):
        stub = RealPoint("synthetic", i, "vllm", config, ctx, {}, "sim with known constants")
        points.append(
            RealPoint("synthetic", i, "vllm", config, ctx, predict(stub, truth_path), "sim")
        )
    return points


@pytest.fixture(scope="module")
def synthetic_points():
    base = load_profile("vllm")
    files = _ProfileFiles("vllm")
    truth = files.write(with_constants(base, TRUTH))
    configs = [
        _config(max_num_batched_tokens=t, max_num_seqs=s)
        for t, s in [(2048, 64), (8192, 256), (512, 32), (4096, 16)]
    ]
    yield _points(truth, configs)


def test_fit_recovers_the_constants_the_data_was_made_with(synthetic_points):
    base = load_profile("vllm")
    fitted, dropped = fit_constants(
        synthetic_points, base, ["prefill_mfu", "decode_bw_efficiency"], prior_weight=0.01
    )
    assert not dropped
    for name, true in TRUTH.items():
        assert fitted[name] == pytest.approx(true, rel=0.03), (name, fitted)
        assert abs(getattr(base, name) - true) / true > 0.15  # the prior alone would fail


def test_unexercised_constants_are_not_identified(synthetic_points):
    base = load_profile("vllm")
    fitted, dropped = fit_constants(
        synthetic_points[:1], base, ["compute_efficiency.fp8", "allreduce_efficiency"]
    )
    assert fitted == {} and set(dropped) == {"compute_efficiency.fp8", "allreduce_efficiency"}


def test_split_keeps_one_config_for_training(synthetic_points):
    train, test = split_points(synthetic_points[:1], 0.5, 0)
    assert len(train) == 1 and test == []
    train, test = split_points(synthetic_points, 0.5, 0)
    assert len(train) == 2 and len(test) == 2
    assert {p.key for p in train}.isdisjoint({p.key for p in test})


def test_a_config_measured_at_two_loads_is_held_out_at_both(synthetic_points, monkeypatch):
    """A sweep measures one config at several loads: holding out one load while training on the
    other would let the fit learn the held-out config. Each config here is measured at its own
    load and at concurrency 8; every split and every leave-one-config-out fit keeps the pair together."""
    import dataclasses

    import tuner.calibration.holdout
    from engines.workload import Arrival

    light = []
    for p in synthetic_points:
        arrival = Arrival(kind="concurrency", concurrency=8)
        workload = p.ctx.workload.model_copy(update={"arrival": arrival})
        ctx = dataclasses.replace(p.ctx, workload=workload)
        light.append(dataclasses.replace(p, trial=p.trial + 100, ctx=ctx))
    points = [*synthetic_points, *light]
    assert len({p.key for p in points}) == 8 and len({p.config_key for p in points}) == 4
    for seed in range(5):
        train, test = split_points(points, 0.5, seed)
        assert {p.config_key for p in train}.isdisjoint({p.config_key for p in test})
        assert len(test) == 4
    trained_on = []
    real_fit = tuner.calibration.holdout.fit_constants

    def fit(rest, *args, **kwargs):
        trained_on.append({p.config_key for p in rest})
        return real_fit(rest, *args, **kwargs)

    monkeypatch.setattr(tuner.calibration.holdout, "fit_constants", fit)
    predicted = tuner.calibration.holdout.leave_one_out(points[:2] + light[:2])
    assert len(predicted) == 4 and len(trained_on) == 2  # one fit per config, both loads out
    assert all(len(keys) == 1 for keys in trained_on)


def test_written_profile_loads_by_path_and_records_its_data(synthetic_points, tmp_path):
    cal = calibrate(
        synthetic_points,
        "synthetic-fit",
        holdout=0.25,
        seed=1,
        names=["prefill_mfu", "decode_bw_efficiency"],
    )
    path = write_profile(cal, tmp_path / "synthetic-fit.yaml")
    loaded = load_profile("vllm", str(path))
    assert loaded.name == "synthetic-fit"
    assert loaded.prefill_mfu == pytest.approx(cal.fitted["prefill_mfu"], rel=1e-4)
    assert loaded.compute_efficiency["fp8"] == load_profile("vllm").compute_efficiency["fp8"]
    doc = yaml.safe_load(path.read_text())
    assert len(doc["source"]["train"]) == 3 and len(doc["source"]["holdout"]) == 1
    assert set(doc["source"]["fit_errors_median_ape_pct"]) == {"train", "holdout"}


def _fake_real_study(tmp_path: Path, truth_path: str) -> str:
    """A tiny study that looks like a real one: runner real, trials measured by the sim."""
    from tuner.study.loop import open_study

    url = f"sqlite:///{tmp_path}/real.db"
    spec = parse_spec({**SPEC, "storage": url}, "test")
    study = open_study(spec)
    ctx = make_context(spec)
    for i, config in enumerate([_config(max_num_batched_tokens=t) for t in (1024, 4096, 8192)]):
        stub = RealPoint("s", i, "vllm", config, ctx, {}, "sim")
        metrics = predict(stub, truth_path)
        trial = study.ask()
        trial.set_user_attr("engine", "vllm")
        trial.set_user_attr("config", config)
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("result", {"feasible": True, "estimated": False})
        study.tell(trial, [metrics["output_tokens_per_s"], metrics["ttft_p99_ms"]])
    return url


def test_cli_calibrate_and_fidelity_round_trip(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    files = _ProfileFiles("vllm")
    truth = files.write(with_constants(load_profile("vllm"), TRUTH))
    url = _fake_real_study(tmp_path, truth)
    out = tmp_path / "fit.yaml"
    cli = [sys.executable, "-m", "tuner"]
    done = subprocess.run(
        [*cli, "calibrate", "synthetic-real", "--storage", url, "--name", "fit", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and out.is_file()
    assert load_profile("vllm", str(out)).name == "fit"
    report = tmp_path / "fidelity.json"
    done = subprocess.run(
        [*cli, "fidelity", "synthetic-real", "--storage", url, "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "leave-one-config-out" in done.stdout and report.is_file()
