import math

import numpy as np
import pytest

from tuner.analysis.pareto import hypervolume, pareto_mask, pick_winner, reference_point

MAX_MIN = ["maximize", "minimize"]


def test_pareto_mask_keeps_only_non_dominated_points():
    # throughput (max), latency (min)
    pts = np.array([[100, 10], [90, 5], [80, 20], [100, 12], [50, 1]])
    assert pareto_mask(pts, MAX_MIN).tolist() == [True, True, False, False, True]


def test_pareto_mask_drops_nan_rows_and_keeps_duplicates():
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [np.nan, 0.0]])
    assert pareto_mask(pts, ["minimize", "minimize"]).tolist() == [True, True, False]


def test_hypervolume_2d_matches_hand_computation():
    # minimise both; ref (4, 4); points (1,3) (2,2) (3,1) -> staircase area 3+2+1 = 6
    pts = np.array([[1, 3], [2, 2], [3, 1]])
    assert hypervolume(pts, ["minimize", "minimize"], [4, 4]) == pytest.approx(6.0)


def test_hypervolume_respects_maximize_and_ignores_points_beyond_reference():
    pts = np.array([[10.0, 1.0], [0.5, 0.5]])  # second point's throughput is below the ref
    hv = hypervolume(pts, MAX_MIN, [1.0, 3.0])
    assert hv == pytest.approx((10 - 1) * (3 - 1))


def test_hypervolume_3d_of_a_single_point_is_its_box():
    pts = np.array([[1.0, 2.0, 3.0]])
    assert hypervolume(pts, ["minimize"] * 3, [2, 4, 6]) == pytest.approx(1 * 2 * 3)


def test_hypervolume_3d_union_of_two_boxes():
    pts = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    # box A: 2*2*1 = 4; box B: 1*1*2 = 2; overlap 1*1*1 = 1 -> 5
    assert hypervolume(pts, ["minimize"] * 3, [2, 2, 2]) == pytest.approx(5.0)


def test_reference_point_is_worse_than_every_value():
    pts = np.array([[100, 10], [50, 20]])
    ref = reference_point(pts, MAX_MIN)
    assert ref[0] < 50 and ref[1] > 20


def test_winner_is_best_primary_with_ties_to_lower_latency():
    throughput = np.array([1000.0, 995.0, 900.0])
    latency = np.array([200.0, 100.0, 50.0])
    # 995 is within 1% of 1000, so the tie goes to its lower latency
    assert pick_winner(throughput, "maximize", latency, "minimize", 0.01) == 1
    assert pick_winner(throughput, "maximize", latency, "minimize", 0.0) == 0


def test_winner_none_when_nothing_eligible():
    assert pick_winner(np.array([math.nan]), "maximize", None) is None
