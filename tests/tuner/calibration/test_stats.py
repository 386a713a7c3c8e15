"""Run-to-run spread and the ranking among separable configs, on hand-made numbers."""

from __future__ import annotations

import math

import pytest

from tuner.calibration.stats import (
    relative_range,
    run_spread,
    separated_chain,
    separated_spearman,
    spearman,
)


def test_relative_range_is_range_over_mean():
    assert relative_range([95.0, 105.0]) == pytest.approx(10.0)
    assert relative_range([100.0, 90.0, 110.0]) == pytest.approx(20.0)
    assert relative_range([7.0]) == 0.0


def test_run_spread_is_the_widest_repeated_config():
    # config a: 10 / 105 = 9.52%; config b: measured once, no spread; config c: 20 / 200 = 10%
    assert run_spread([[100.0, 110.0], [50.0], [200.0, 190.0, 210.0]]) == pytest.approx(10.0)
    assert run_spread([[100.0], [50.0]]) is None  # nothing measured twice: unknown, not zero
    assert run_spread([]) is None
    assert run_spread([[100.0, 100.0]]) == 0.0


def test_separated_chain_keeps_configs_more_than_twice_the_spread_apart():
    measured = [100.0, 99.0, 95.0, 90.0, 80.0, 79.0]
    # spread 2%: a kept config must be > 4% (of the pair's mean) below the last kept one.
    # 99 vs 100: 1.0%, dropped; 95 vs 100: 5.1%, kept; 90 vs 95: 5.4%; 80 vs 90: 11.8%;
    # 79 vs 80: 1.3%, dropped
    assert separated_chain(measured, 2.0) == [0, 2, 3, 4]
    assert separated_chain(measured, 0.0) == [0, 1, 2, 3, 4, 5]  # no noise: every config
    assert separated_chain(measured, 50.0) == [0]
    # order of the input does not matter, indices come highest first; NaNs are skipped
    assert separated_chain([80.0, math.nan, 100.0, 90.0], 2.0) == [2, 3, 0]


def test_separated_spearman_ignores_order_inside_the_noise():
    measured = [100.0, 99.0, 95.0, 90.0, 80.0, 79.0]
    # the sim swaps 100 / 99 and 80 / 79 (within the noise) but orders the rest right
    predicted = [10.0, 11.0, 9.0, 8.0, 6.0, 7.0]
    assert spearman(predicted, measured) < 0.9
    rho, chain = separated_spearman(predicted, measured, 2.0)
    assert chain == [0, 2, 3, 4] and rho == pytest.approx(1.0)
    # and a real inversion among separable configs still counts: 95 predicted above 100
    rho, _ = separated_spearman([10.0, 11.0, 12.0, 8.0, 6.0, 7.0], measured, 2.0)
    assert rho == pytest.approx(0.8)  # one swap among 4


def test_separated_spearman_needs_three_configs_in_the_chain():
    rho, chain = separated_spearman([1.0, 2.0, 3.0], [100.0, 99.0, 50.0], 2.0)
    assert rho is None and chain == [0, 2]
