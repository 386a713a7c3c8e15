"""Learned failure constraints: predict from a study's history which configs will fail when they
run (OOM at start, a start that never finishes) although ``validate`` passed, and veto them.

The model is deliberately small and numpy-only: each config becomes a point in a normalised
param space (numeric options on [0, 1], log-scaled where the space is, categorical ones one-hot),
and the failure probability of a candidate is the mean of an L2-regularised logistic regression
(which learns *which* options matter: memory failures grow with batch size and memory share) and
a kernel nearest-neighbour estimate (which keeps the veto local to where failures were seen).
A vetoed suggestion is told to Optuna as PRUNED with reason ``predicted_failure`` and does not
use up budget; the veto is capped so the search can never loop on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from engines.base import Param
from tuner.study.attrs import CONFIG_ATTR, ENGINE_ATTR, fail_reason

# Run-time failures that follow from the config (learnable); others (port clash, interrupted,
# worker lost, http errors) say nothing about the config and are ignored.
LEARNED_REASONS = frozenset({"oom", "startup_timeout", "crash", "hang", "infeasible"})
VETO_REASON = "predicted_failure"
THRESHOLD = 0.4
MIN_FAILURES = 1  # no veto before this many learnable failures
MAX_VETOES_IN_A_ROW = 8  # then the next suggestion runs whatever the model says
_KERNEL_WIDTH = 0.4
_L2 = 0.1


@dataclass
class _Encoder:
    """Maps (engine, config) to a fixed-length vector over every engine's options."""

    spaces: Mapping[str, Sequence[Param]]
    columns: list[tuple[str, str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        many = len(self.spaces) > 1
        for engine, space in self.spaces.items():
            if many:
                self.columns.append(("engine", engine, None))
            for p in space:
                if p.kind == "categorical" and len(p.choices) <= 1:
                    continue
                if _numeric(p):
                    self.columns.append(("num", f"{engine}.{p.name}", _scale(p)))
                else:
                    self.columns += [("cat", f"{engine}.{p.name}", c) for c in p.choices]

    def encode(self, engine: str, config: Mapping[str, Any]) -> np.ndarray:
        out = np.zeros(len(self.columns))
        for i, (kind, key, extra) in enumerate(self.columns):
            if kind == "engine":
                out[i] = float(engine == key)
                continue
            owner, name = key.split(".", 1)
            if owner != engine or name not in config:
                continue
            value = config[name]
            if kind == "num":
                out[i] = extra(value)
            else:
                out[i] = 0.7 * float(value == extra)  # a flip moves ~1 in distance
        return out


def _numeric(p: Param) -> bool:
    if p.kind != "categorical":
        return True
    return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.choices)


def _scale(p: Param):
    values = [float(c) for c in p.choices] if p.kind == "categorical" else [p.low, p.high]
    lo, hi = min(values), max(values)
    log = lo > 0 and (p.log or hi / lo >= 8)
    if log:
        lo, hi = math.log(lo), math.log(hi)
    span = (hi - lo) or 1.0
    return lambda v: ((math.log(float(v)) if log else float(v)) - lo) / span


def _logistic(x: np.ndarray, y: np.ndarray, steps: int = 25) -> np.ndarray:
    """Weights (bias last) of an L2-regularised logistic regression, by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], _L2)
    reg[-1] = 1e-6
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg)
        w -= np.linalg.solve(hess, grad)
    return w


class FailureModel:
    """Failure probability of configs, fitted on (engine, config, failed) observations."""

    def __init__(self, spaces: Mapping[str, Sequence[Param]]) -> None:
        self.encoder = _Encoder(spaces)
        self.x = np.zeros((0, len(self.encoder.columns)))
        self.y = np.zeros(0)
        self.weights: np.ndarray | None = None

    def fit(self, history: Sequence[tuple[str, Mapping[str, Any], bool]]) -> FailureModel:
        if history:
            self.x = np.array([self.encoder.encode(e, c) for e, c, _ in history])
            self.y = np.array([float(f) for _, _, f in history])
        self.weights = _logistic(self.x, self.y) if 0 < self.y.sum() < len(self.y) else None
        return self

    @property
    def failures(self) -> int:
        return int(self.y.sum())

    def probability(self, engine: str, config: Mapping[str, Any]) -> float:
        """Predicted chance that ``config`` fails when it runs (0 with no failure seen)."""
        if not self.failures:
            return 0.0
        x = self.encoder.encode(engine, config)
        d2 = ((self.x - x) ** 2).sum(axis=1)
        w = np.exp(-d2 / (2 * _KERNEL_WIDTH**2))
        prior = self.y.mean()
        knn = float((w @ self.y + 0.3 * prior) / (w.sum() + 0.3))
        if self.weights is None:
            return knn
        lr = float(1 / (1 + math.exp(-float(np.clip(np.append(x, 1.0) @ self.weights, -30, 30)))))
        return 0.5 * (lr + knn)


def study_history(study: optuna.Study) -> list[tuple[str, dict[str, Any], bool]]:
    """(engine, config, failed) of every trial that ran: completed, or failed for a learnable
    reason."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        config, engine = t.user_attrs.get(CONFIG_ATTR), t.user_attrs.get(ENGINE_ATTR)
        if config is None or engine is None:
            continue
        reason = fail_reason(t)
        if t.state == TrialState.FAIL and reason not in LEARNED_REASONS:
            continue
        out.append((engine, config, t.state == TrialState.FAIL))
    return out


def vetoes_in_a_row(study: optuna.Study) -> int:
    """How many of the latest finished trials were vetoed, back to the last one that was not."""
    count = 0
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if fail_reason(t) != VETO_REASON:
            break
        count += 1
    return count


def veto_reason(
    study: optuna.Study,
    spaces: Mapping[str, Sequence[Param]],
    engine: str,
    config: Mapping[str, Any],
    threshold: float | None = None,
) -> str | None:
    """Why ``config`` should not run (a one-line detail), or None to run it."""
    threshold = THRESHOLD if threshold is None else threshold
    history = study_history(study)
    if sum(f for *_, f in history) < MIN_FAILURES or vetoes_in_a_row(study) >= MAX_VETOES_IN_A_ROW:
        return None
    p = FailureModel(spaces).fit(history).probability(engine, config)
    if p < threshold:
        return None
    return f"predicted failure probability {p:.2f} from {len(history)} trials"
