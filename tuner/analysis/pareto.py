"""Pareto fronts, hypervolume and the winner policy: pure functions over arrays of metrics.

Directions are per column (``maximize``/``minimize``); internally everything is turned into
minimisation so one dominance rule serves all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=float) * signs


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n points x k objectives).

    Rows with NaN are never on the front. Duplicate points are all kept.
    """
    pts = _as_minimization(values, directions)
    n = pts.shape[0]
    mask = ~np.isnan(pts).any(axis=1) if n else np.zeros(0, dtype=bool)
    for i in np.flatnonzero(mask):
        others = pts[mask]
        dominated = np.all(others <= pts[i], axis=1) & np.any(others < pts[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


def hypervolume(values: np.ndarray, directions: Sequence[str], reference: Sequence[float]) -> float:
    """Volume dominated by ``values`` and bounded by ``reference`` (in the metrics' own units).

    The reference point must be worse than every point in each objective (lower throughput,
    higher latency); points not strictly better than it contribute nothing. Exact, by recursive
    slicing: fine for the few hundred points of a study.
    """
    pts = _as_minimization(values, directions)
    ref = _as_minimization(np.asarray(reference, dtype=float)[None, :], directions)[0]
    pts = pts[~np.isnan(pts).any(axis=1)]
    pts = pts[np.all(pts < ref, axis=1)]
    if pts.size == 0:
        return 0.0
    pts = pts[pareto_mask(pts, ["minimize"] * pts.shape[1])]
    return float(_hv(pts, ref))


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        order = pts[np.argsort(pts[:, 0])]
        volume, best_y = 0.0, ref[1]
        for x, y in order:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    order = pts[np.argsort(pts[:, -1])]
    volume = 0.0
    for i in range(len(order)):
        upper = order[i + 1, -1] if i + 1 < len(order) else ref[-1]
        depth = upper - order[i, -1]
        if depth > 0:
            volume += depth * _hv(order[: i + 1, :-1], ref[:-1])
    return volume


def reference_point(
    values: np.ndarray, directions: Sequence[str], margin: float = 0.1
) -> list[float]:
    """A reference point a little worse than the worst value of each objective."""
    ref = []
    for col, direction in zip(np.asarray(values, dtype=float).T, directions, strict=True):
        col = col[~np.isnan(col)]
        lo, hi = (float(col.min()), float(col.max())) if col.size else (0.0, 1.0)
        span = (hi - lo) or abs(hi) or 1.0
        ref.append(lo - margin * span if direction == "maximize" else hi + margin * span)
    return ref


def pick_winner(
    primary: np.ndarray,
    primary_direction: str,
    tie_break: np.ndarray | None,
    tie_direction: str = "minimize",
    tolerance: float = 0.01,
) -> int | None:
    """Index of the best row by ``primary``; rows within ``tolerance`` of it are ties decided by
    ``tie_break``. NaN rows never win; returns None when no row is eligible."""
    primary = np.asarray(primary, dtype=float)
    eligible = ~np.isnan(primary)
    if not eligible.any():
        return None
    signed = np.where(eligible, primary if primary_direction == "maximize" else -primary, -np.inf)
    best = signed.max()
    ties = eligible & (signed >= best - tolerance * abs(best))
    if tie_break is None or ties.sum() == 1:
        return int(np.argmax(signed))
    tb = np.asarray(tie_break, dtype=float)
    tb_signed = np.where(ties & ~np.isnan(tb), tb if tie_direction == "maximize" else -tb, -np.inf)
    if np.isneginf(tb_signed).all():
        return int(np.argmax(signed))
    return int(np.argmax(tb_signed))
