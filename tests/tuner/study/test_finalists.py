"""Finalists: who is re-measured, interleaving with the baseline, winners beyond the noise."""

from __future__ import annotations

import math

from engines.errors import EngineError
from tuner.analysis.results import TrialRecord
from tuner.spec import parse_spec
from tuner.study.finalists import (
    Remeasured,
    baseline_ratios,
    choose_winner,
    remeasure,
    remeasure_study,
    select_finalists,
    study_baseline_ratios,
)
from tuner.study.loop import run_study


def _record(number, tps, ttft, baseline=False, feasible=True) -> TrialRecord:
    return TrialRecord(
        number,
        "COMPLETE",
        "vllm",
        {"n": number},
        {"output_tokens_per_s": tps, "ttft_p99_ms": ttft},
        feasible,
        True,
        None,
        1,
        None,
        None,
        baseline,
    )


def test_finalists_are_the_front_then_the_next_layer_without_the_baseline() -> None:
    records = [
        _record(0, 500, 100, baseline=True),
        _record(1, 1000, 300),  # front
        _record(2, 800, 150),  # front
        _record(3, 700, 200),  # second layer
        _record(4, 2000, 50, feasible=False),
    ]
    picked = select_finalists(records, ["output_tokens_per_s", "ttft_p99_ms"], 3)
    assert [r.number for r in picked] == [1, 2, 3]


def _remeasured(trial, point, low, high, baseline=False, feasible=True) -> Remeasured:
    return Remeasured(
        trial,
        "vllm",
        {},
        baseline,
        {"output_tokens_per_s": point},
        {"output_tokens_per_s": (low, high)},
        3,
        feasible,
    )


def test_outside_noise_keeps_the_baseline_unless_a_win_clears_its_interval() -> None:
    base = _remeasured(0, 100, 95, 105, baseline=True)
    noisy = _remeasured(1, 110, 101, 119)  # better point, overlapping interval
    clear = _remeasured(2, 108, 106, 110)
    metric = "output_tokens_per_s"
    assert choose_winner([base, noisy], metric, outside_noise=True).trial == 0
    assert choose_winner([base, noisy, clear], metric, outside_noise=True).trial == 2
    assert choose_winner([base, noisy, clear], metric).trial == 1


def test_ratios_to_the_baseline() -> None:
    ratios = baseline_ratios({"a": 30.0, "b": 1.0, "c": 5.0}, {"a": 10.0, "b": 0.0})
    assert ratios == {"a": 3.0}


class _Recorder:
    """A fake engine that logs the order configs are measured in."""

    def __init__(self) -> None:
        self.order: list[int] = []

    def run(self, config, ctx):
        from engines.metrics import LatencyStats, Measurement

        self.order.append(config["n"])
        if config["n"] == 9:
            raise EngineError("crash", "boom")
        stats = LatencyStats(1.0, 1.0, 1.0, 1.0)
        return Measurement(
            10,
            10,
            1.0,
            100.0 + config["n"] + len(self.order),
            0,
            10,
            10,
            stats,
            stats,
            stats,
            stats,
        )


def test_remeasure_interleaves_rounds_with_the_baseline_first() -> None:
    engine = _Recorder()
    entries = [_record(0, 1, 1, baseline=True), _record(1, 1, 1), _record(9, 1, 1)]
    results = remeasure(entries, {"vllm": engine}, lambda n: None, {}, rounds=2)
    assert engine.order == [0, 1, 9, 0, 1, 9]
    assert results[1].rounds == 2 and "output_tokens_per_s" in results[1].intervals
    assert not results[2].feasible and results[2].failures


def test_remeasure_a_sim_study_end_to_end(tmp_path) -> None:
    spec = parse_spec(
        {
            "name": "fin",
            "model": "Llama-3.1-8B",
            "hardware": {"gpu": "H100-SXM"},
            "workload": {"num_requests": 60, "arrival": {"kind": "concurrency", "concurrency": 16}},
            "storage": f"sqlite:///{tmp_path}/fin.db",
            "budget": {"trials": 4},
            "finalists": {"count": 2, "rounds": 2},
            "winner": {"outside_noise": True},
        }
    )
    study = run_study(spec)
    outcome = remeasure_study(study, spec)
    assert any(r.baseline for r in outcome.results) and len(outcome.results) <= 3
    assert study.user_attrs["finalists"] and outcome.winner is not None
    ratios = study_baseline_ratios(study)
    base = next(r for r in outcome.results if r.baseline)
    assert math.isclose(ratios[base.trial]["output_tokens_per_s"], 1.0)
