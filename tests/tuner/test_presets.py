"""Presets fill objectives, SLOs, winner and measurement; explicit spec fields win."""

from __future__ import annotations

import pytest

from engines.errors import SpecError
from tuner.presets import PRESETS, preset_overrides
from tuner.spec import parse_spec

BASE = {"name": "p", "model": "Llama-3.1-8B", "hardware": {"gpu": "H100-SXM"}}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_makes_a_valid_spec(name: str) -> None:
    spec = parse_spec({**BASE, "preset": name})
    assert [o.metric for o in spec.objectives] == [o["metric"] for o in PRESETS[name]["objectives"]]
    assert spec.slos == PRESETS[name]["slos"]
    assert spec.winner_metric == PRESETS[name]["winner"]["metric"]


def test_explicit_fields_win_and_maps_merge_key_by_key() -> None:
    spec = parse_spec(
        {
            **BASE,
            "preset": "latency",
            "objectives": ["output_tokens_per_s"],
            "slos": {"ttft_p99_ms": 900},
            "winner": {"outside_noise": False},
            "measurement": {"repeats": 5},
        }
    )
    assert [o.metric for o in spec.objectives] == ["output_tokens_per_s"]
    assert spec.slos == {"ttft_p99_ms": 900, "tpot_p99_ms": 40.0, "error_rate": 0.01}
    assert spec.winner.metric == "ttft_p99_ms" and spec.winner.outside_noise is False
    assert spec.measurement.repeats == 5


def test_balanced_searches_capacity_and_others_do_not() -> None:
    assert parse_spec({**BASE, "preset": "balanced"}).measure_options()["capacity"] is True
    assert parse_spec({**BASE, "preset": "cost"}).measure_options()["capacity"] is False


def test_unknown_preset_is_one_clear_error() -> None:
    with pytest.raises(SpecError, match="unknown preset 'fast'"):
        parse_spec({**BASE, "preset": "fast"})


def test_the_fields_that_win_over_a_preset_are_named() -> None:
    spec = parse_spec(
        {
            **BASE,
            "preset": "latency",
            "slos": {"ttft_p99_ms": 900},
            "winner": {"metric": "tpot_p99_ms"},
        }
    )
    assert preset_overrides(spec) == ["slos.ttft_p99_ms", "winner.metric"]
    assert preset_overrides(parse_spec({**BASE, "preset": "latency"})) == []
    own = [{"metric": "output_tokens_per_s", "direction": "maximize"}]
    assert preset_overrides(parse_spec({**BASE, "preset": "cost", "objectives": own})) == [
        "objectives"
    ]
