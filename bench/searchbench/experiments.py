"""The three measurements: strategy efficiency, learned failures, sim-first warm start."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from searchbench.faulty import hidden_oom
from searchbench.runner import Run
from searchbench.strategies import STRATEGIES, Case, case, run_default

THRESHOLDS = (0.95, 0.97)


def spread(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(v)),
        "p10": float(np.percentile(v, 10)),
        "p90": float(np.percentile(v, 90)),
    }


def truth(c: Case) -> float:
    """The grid's optimum (single) or true-front hypervolume (multi); failing points excluded."""
    points = [p for p in c.grid.points.values() if not (c.fails and c.fails(p["config"]))]
    return c.objective.score(points)


def trials_to(curve: Sequence[float], target: float) -> int | None:
    """Counted trials until ``curve`` first reaches ``target`` (None: not within the run)."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-9), None)


def _needed(values: list[int | None], budget: int) -> dict[str, Any]:
    """Spread of trials-to-target; runs that never got there count as budget + 1 ('> budget')."""
    filled = [v if v is not None else budget + 1 for v in values]
    return {**spread(filled), "reached": sum(v is not None for v in values), "runs": len(values)}


def efficiency(
    name: str, kind: str, strategy: str, seeds: Sequence[int], budgets: Sequence[int]
) -> dict[str, Any]:
    """Share of the optimum per budget and trials needed per threshold, over seeds."""
    c = case(name, kind)
    best, top = truth(c), max(budgets)
    curves = []
    for seed in seeds:
        curve = STRATEGIES[strategy](c, seed, top).curve(c.objective)
        curves.append(
            [v / best for v in curve] + [curve[-1] / best if curve else 0.0] * (top - len(curve))
        )
    out: dict[str, Any] = {
        "scenario": name,
        "objective": kind,
        "strategy": strategy,
        "seeds": len(seeds),
        "max_budget": top,
    }
    out["share"] = {b: spread([cv[b - 1] for cv in curves]) for b in budgets}
    out["trials_to"] = {
        f"{t:.0%}": _needed([trials_to(cv, t) for cv in curves], top) for t in THRESHOLDS
    }
    out["median_curve"] = [round(float(v), 4) for v in np.median(np.array(curves), axis=0)]
    return out


def failures(seeds: Sequence[int], budget: int) -> dict[str, Any]:
    """Default strategy on the 8B chat scenario with hidden OOMs, with and without learning."""
    c = case("8b-chat-h100", "single", fails=hidden_oom)
    best = truth(c)
    region = sum(hidden_oom(p["config"]) for p in c.grid.valid) / len(c.grid.valid)
    out: dict[str, Any] = {
        "scenario": c.name,
        "rule": "max_num_seqs*max_num_batched_tokens >= "
        "256*8192 and gpu_memory_utilization >= 0.9 -> oom at start",
        "failing_share_of_valid_grid": round(region, 3),
        "budget": budget,
    }
    for learn in (False, True):
        runs = [run_default(c, s, budget, learn_failures=learn) for s in seeds]
        out["with_learning" if learn else "without_learning"] = {
            "failed_share_of_budget": spread([_failed(r) / max(1, len(r.points)) for r in runs]),
            "share_of_optimum": spread([r.curve(c.objective)[-1] / best for r in runs]),
            "vetoed_free": spread([r.free.get("predicted_failure", 0) for r in runs]),
        }
    return out


def _failed(run: Run) -> int:
    return sum(p["status"] == "failed" for p in run.points)


def warm_start(seeds: Sequence[int], budget: int, top_k: int) -> dict[str, Any]:
    """'Real' trials to 97% of reality's optimum, cold vs seeded with the sim study's top K."""
    sim, real = case("8b-chat-h100", "single"), case("8b-chat-h100-reality", "single")
    best = truth(real)
    cold, warm, sim_best_share = [], [], []
    for seed in seeds:
        cold.append(trials_to(run_default(real, seed, budget).curve(real.objective), 0.97 * best))
        sim_run = run_default(sim, seed + 1000, 50)
        ok = sorted(
            (p for p in sim_run.points if sim.objective.feasible(p)),
            key=lambda p: -p["metrics"]["output_tokens_per_s"],
        )[:top_k]
        seeded = run_default(real, seed, budget, enqueue=[(p["engine"], p["config"]) for p in ok])
        warm.append(trials_to(seeded.curve(real.objective), 0.97 * best))
        first = real.grid.lookup(ok[0]["engine"], ok[0]["config"]) if ok else None
        sim_best_share.append(real.objective.score([first]) / best if first else 0.0)
    return {
        "sim": sim.name,
        "reality_profile": "bench/searchbench/reality_profile.yaml",
        "sim_trials": 50,
        "top_k": top_k,
        "budget": budget,
        "reality_optimum": round(best, 1),
        "sim_winner_share_of_reality_optimum": spread(sim_best_share),
        "trials_to_97%_cold": _needed(cold, budget),
        "trials_to_97%_warm": _needed(warm, budget),
    }


Job = Callable[[], Any]
