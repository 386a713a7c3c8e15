"""Issue 25's targets, judged only where the runs' own spread allows it (hand-made numbers)."""

from __future__ import annotations

import math

import pytest

from tuner.calibration.targets import (
    judge_error,
    judge_spearman,
    judge_targets,
    shape_spreads,
    spearman_limit,
    target_names,
)


def test_shape_spreads_per_metric_from_repeated_configs():
    repeats = {
        "chat": {
            "a": [
                {"output_tokens_per_s": 100.0, "ttft_p50_ms": 10.0},
                {"output_tokens_per_s": 104.0},
            ],
            "b": [{"output_tokens_per_s": 50.0}, {"output_tokens_per_s": 51.0}],
            "c": [{"output_tokens_per_s": 70.0}],
        },
        "long": {"a": [{"output_tokens_per_s": 10.0}]},
    }
    spreads = shape_spreads(repeats)
    assert spreads["chat"]["output_tokens_per_s"] == pytest.approx(4 / 102 * 100)  # a's, not b's 2%
    assert spreads["chat"]["ttft_p50_ms"] is None  # measured once: unknown
    assert all(v is None for v in spreads["long"].values())


def test_judge_error_leaves_out_shapes_too_noisy_for_the_limit():
    apes = {"quiet": [1.0, 2.0, 3.0], "noisy": [10.0, 20.0], "unknown": [2.5]}
    spreads = {"quiet": 1.0, "noisy": 5.0, "unknown": None}
    got = judge_error(apes, spreads, limit=3.0, exclude_above=3.0)
    assert got["value"] == pytest.approx(2.25) and got["n"] == 4 and got["met"] is True
    assert [(e["shape"], e["spread_pct"]) for e in got["excluded"]] == [("noisy", 5.0)]
    assert "5.0% > 3%" in got["excluded"][0]["why"]
    worst = judge_error(apes, spreads, limit=2.9, exclude_above=3.0, stat="worst")
    assert worst["value"] == 3.0 and worst["met"] is False
    # every shape too noisy: no judgement, not a pass
    none = judge_error({"noisy": [0.1]}, spreads, limit=3.0, exclude_above=3.0)
    assert none["value"] is None and none["met"] is None and none["n"] == 0


def test_judge_spearman_averages_the_shapes_where_it_is_defined():
    by_shape = {
        # spread 2%: the chain is 100, 90, 80 (99 is inside the noise); predicted in order
        "a": [("p1", 5.0, 100.0), ("p2", 6.0, 99.0), ("p3", 4.0, 90.0), ("p4", 3.0, 80.0)],
        # the chain 100, 90, 80 predicted in reverse
        "b": [("q1", 1.0, 100.0), ("q2", 2.0, 90.0), ("q3", 3.0, 80.0)],
        "c": [("r1", 1.0, 100.0), ("r2", 2.0, 99.5), ("r3", 3.0, 99.0)],  # one config apart
        "d": [("s1", 1.0, 100.0), ("s2", 2.0, 50.0), ("s3", 3.0, 10.0)],  # spread unknown
    }
    got = judge_spearman(by_shape, {"a": 2.0, "b": 2.0, "c": 2.0, "d": None}, limit=0.9)
    assert got["value"] == pytest.approx(0.0) and got["n"] == 2 and got["met"] is False
    per = {e["shape"]: e for e in got["by_shape"]}
    assert per["a"]["chain"] == ["p1", "p3", "p4"] and per["a"]["spearman"] == pytest.approx(1.0)
    assert per["c"]["spearman"] is None and "3 needed" in per["c"]["why"]
    assert per["d"]["spearman"] is None and "measured twice" in per["d"]["why"]
    assert judge_spearman({"d": by_shape["d"]}, {"d": None}, 0.9)["met"] is None


def _rows(shape, metric, apes):
    return [{"shape": shape, "metric": metric, "ape_pct": a, "set_aside": ""} for a in apes]


def test_judge_targets_with_exclusions_and_the_shipped_allowance():
    rows = (
        _rows("quiet", "output_tokens_per_s", [1.0, 2.0, 2.5])
        + _rows("noisy", "output_tokens_per_s", [20.0, 30.0])  # spread 4%: > 3%, <= 6%
        + _rows("quiet", "tpot_p50_ms", [5.0, 7.0, 8.0])
        + _rows("quiet", "ttft_p99_ms", [math.nan])
        + [{"shape": "quiet", "metric": "ttft_p50_ms", "ape_pct": 1.0, "set_aside": "protocol"}]
    )
    spreads = {
        "quiet": {"output_tokens_per_s": 1.0, "tpot_p50_ms": 1.0},
        "noisy": {"output_tokens_per_s": 4.0},
    }
    by_shape = {"quiet": [("a", 3.0, 300.0), ("b", 2.0, 200.0), ("c", 1.0, 100.0)]}
    held_out = judge_targets(rows, by_shape, spreads)
    assert set(held_out) == set(target_names())
    tput = held_out["output_tokens_per_s median"]
    assert tput["value"] == 2.0 and tput["met"] is True  # the noisy shape is left out...
    assert [e["shape"] for e in tput["excluded"]] == ["noisy"]
    worst = held_out["output_tokens_per_s worst"]
    assert worst["value"] == 2.5 and worst["met"] is True  # ...of the worst too
    assert held_out["tpot_p50_ms median"]["met"] is False  # 7% > 6%
    assert held_out["ttft_p99_ms median"]["met"] is None  # no finite error
    assert held_out["ttft_p50_ms median"]["met"] is None  # set aside: not compared
    assert held_out["separated Spearman"]["value"] == pytest.approx(1.0)
    shipped = judge_targets(rows, by_shape, spreads, allowance=2.0)
    tput = shipped["output_tokens_per_s median"]
    assert tput["limit"] == 6.0 and tput["excluded"] == []  # 4% spread allows judging at 6%
    assert tput["value"] == 2.5 and tput["met"] is True  # median of 1, 2, 2.5, 20, 30
    assert shipped["output_tokens_per_s worst"]["limit"] == 30.0
    assert shipped["tpot_p50_ms median"]["met"] is True  # 7% <= 12%
    assert shipped["separated Spearman"]["limit"] == 0.8


def test_spearman_limit_doubles_the_shortfall():
    assert spearman_limit() == 0.9 and spearman_limit(2.0) == 0.8
    assert target_names()["output_tokens_per_s median"] == "median APE <= 3%"
    assert target_names(2.0)["output_tokens_per_s worst"] == "worst APE <= 30%"
