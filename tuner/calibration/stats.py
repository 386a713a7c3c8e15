"""The pure math of a fidelity report: errors, rank correlation, and run-to-run spread.

Plain functions of numbers, tested on hand-made ones; :mod:`tuner.calibration.fidelity` and
:mod:`tuner.calibration.targets` apply them to real points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def ape(predicted: float, measured: float) -> float:
    """Absolute percentage error of ``predicted`` against ``measured`` (NaN if undefined)."""
    if not (math.isfinite(predicted) and math.isfinite(measured)) or measured == 0:
        return math.nan
    return abs(predicted - measured) / abs(measured) * 100.0


def error_stats(errors: Sequence[float]) -> dict[str, float | int]:
    """Median and worst of some APEs (NaNs ignored), and how many there were."""
    finite = [e for e in errors if math.isfinite(e)]
    if not finite:
        return {"n": 0, "median": math.nan, "worst": math.nan}
    return {"n": len(finite), "median": float(np.median(finite)), "worst": float(max(finite))}


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    arr = np.asarray(values, float)
    order = np.argsort(arr, kind="mergesort")
    ranks = np.empty(arr.size)
    ranks[order] = np.arange(1, arr.size + 1)
    for value in np.unique(arr):
        tied = arr == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(predicted: Sequence[float], measured: Sequence[float]) -> float | None:
    """Spearman rank correlation; ``None`` below 3 points or when either side is constant."""
    if len(predicted) != len(measured):
        raise ValueError("spearman: predicted and measured differ in length")
    if len(predicted) < 3:
        return None
    a, b = _ranks(predicted), _ranks(measured)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def best_in_top_k(predicted: Sequence[float], measured: Sequence[float], k: int = 3) -> bool | None:
    """Whether the measured best (highest) is among the ``k`` highest predictions."""
    if not measured:
        return None
    best = int(np.nanargmax(measured))
    top = np.argsort(-np.asarray(predicted, float), kind="mergesort")[:k]
    return best in top.tolist()


def relative_range(values: Sequence[float]) -> float:
    """(max - min) / mean of some measurements of one thing, in percent."""
    mean = float(np.mean(values))
    return (max(values) - min(values)) / abs(mean) * 100.0 if mean else math.nan


def run_spread(repeats: Iterable[Sequence[float]]) -> float | None:
    """Run-to-run spread (%) from repeat measurements: the largest relative range over the
    configs measured at least twice (one list of values per config); ``None`` when none was."""
    ranges = [relative_range(values) for values in repeats if len(values) >= 2]
    ranges = [r for r in ranges if math.isfinite(r)]
    return max(ranges) if ranges else None


def separated_chain(measured: Sequence[float], spread_pct: float) -> list[int]:
    """Indices of configs whose measured differences exceed twice the run-to-run spread.

    Greedy from the top: the highest is kept, then each next lower one whose difference to the
    last kept one, relative to the pair's mean (how :func:`relative_range` reads a spread), is
    more than ``2 * spread_pct``. NaNs are skipped. The kept indices come highest first.
    """
    order = sorted(
        (i for i, v in enumerate(measured) if math.isfinite(v)), key=lambda i: -measured[i]
    )
    chain: list[int] = []
    for i in order:
        if not chain or relative_range([measured[chain[-1]], measured[i]]) > 2 * spread_pct:
            chain.append(i)
    return chain


def separated_spearman(
    predicted: Sequence[float], measured: Sequence[float], spread_pct: float
) -> tuple[float | None, list[int]]:
    """Spearman of ``predicted`` vs ``measured`` over :func:`separated_chain` (``None`` below
    3 configs in the chain), and the chain's indices."""
    chain = separated_chain(measured, spread_pct)
    if len(chain) < 3:
        return None, chain
    return spearman([predicted[i] for i in chain], [measured[i] for i in chain]), chain
