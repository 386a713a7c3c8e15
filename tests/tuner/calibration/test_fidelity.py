"""The fidelity math on hand-made numbers."""

from __future__ import annotations

import math

import pytest

from tuner.calibration.fidelity import ape, best_in_top_k, error_stats, ranking, spearman


def test_ape():
    assert ape(110, 100) == pytest.approx(10.0)
    assert ape(90, 100) == pytest.approx(10.0)
    assert math.isnan(ape(1, 0)) and math.isnan(ape(math.nan, 1))


def test_error_stats_median_and_worst():
    stats = error_stats([5.0, 1.0, 30.0, math.nan])
    assert stats == {"n": 3, "median": 5.0, "worst": 30.0}
    assert error_stats([])["n"] == 0


def test_spearman_on_hand_made_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # one swap among 4: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254)  # ties share ranks
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_best_in_top_k():
    measured = [100, 300, 200, 50, 250]
    assert best_in_top_k([5, 4, 3, 2, 1], measured, 3) is True  # best (index 1) predicted 2nd
    assert best_in_top_k([5, 1, 3, 2, 4], measured, 3) is False  # predicted last
    assert best_in_top_k([], [], 3) is None


def test_ranking_flags_too_few_configs():
    few = ranking([1, 2], [2, 1])
    assert few["spearman"] is None and few["best_in_top3"] is None and "too few" in few["note"]
    many = ranking([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert many["spearman"] == pytest.approx(0.9) and many["best_in_top3"] is True
    assert "note" not in many


def _ranked_point(label, key, tok_s, load, gpu="H100-SXM"):
    """A stand-in point: what config_ranking reads (label, key, throughput, GPU, workload)."""
    from types import SimpleNamespace

    from engines.workload import Arrival, WorkloadSpec

    arrival = Arrival(kind="concurrency", concurrency=load)
    workload = WorkloadSpec(input_tokens=1024, output_tokens=256, arrival=arrival)
    ctx = SimpleNamespace(workload=workload, hardware=SimpleNamespace(gpu=gpu, count=1))
    return SimpleNamespace(label=label, key=key, measured={"output_tokens_per_s": tok_s}, ctx=ctx)


def test_configs_are_ranked_within_each_load_not_across_loads():
    """A sweep measures each config at two loads. A predictor that orders the configs right at
    each load is a perfect ranker even if it gets the load's effect backwards (here it predicts
    the light load faster): ranking across loads would punish it for the wrong thing."""
    from tuner.calibration.fidelity import config_ranking

    points, preds = [], {}
    for load, scale, predicted_scale in ((256, 2.0, 1.0), (64, 1.0, 3.0)):
        for i, tok_s in enumerate((100.0, 200.0, 300.0, 400.0, 500.0)):
            label = f"c{i}@{load}"
            points.append(_ranked_point(label, label, tok_s * scale, load))
            preds[label] = {"output_tokens_per_s": tok_s * predicted_scale}
    ranked = config_ranking(points, preds)
    assert ranked["spearman"] == pytest.approx(1.0) and ranked["best_in_top3"] is True
    assert [(r["load"], r["configs"]) for r in ranked["by_workload"]] == [
        ("concurrency 256", 5),
        ("concurrency 64", 5),
    ]
    # one load alone: its own ranking, no wrapper
    alone = config_ranking(points[:5], preds)
    assert alone["spearman"] == pytest.approx(1.0) and "by_workload" not in alone


def test_one_config_on_two_gpus_is_two_configs_ranked_apart():
    """RealPoint.key names a config and workload, not the GPU: the same five configs measured on
    an H100 and an H200 must not be averaged into five, nor ranked against each other."""
    from tuner.calibration.fidelity import config_ranking

    points, preds = [], {}
    for gpu, scale in (("H100-SXM", 1.0), ("H200", 10.0)):
        for i, tok_s in enumerate((100.0, 200.0, 300.0, 400.0, 500.0)):
            label = f"c{i}@{gpu}"
            points.append(_ranked_point(label, f"c{i}", tok_s * scale, 256, gpu))
            preds[label] = {"output_tokens_per_s": -tok_s if gpu == "H200" else tok_s}
    ranked = config_ranking(points, preds)
    assert [(r["shape"], r["configs"]) for r in ranked["by_workload"]] == [
        ("H100-SXM: 1024 in / 256 out, concurrency 256", 5),
        ("H200: 1024 in / 256 out, concurrency 256", 5),
    ]
    assert [r["spearman"] for r in ranked["by_workload"]] == pytest.approx([1.0, -1.0])
