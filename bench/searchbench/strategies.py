"""The strategies under test, each a function (scenario context, seed, budget) -> Run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import optuna
from searchbench.grid import Grid, config_key, load_grid
from searchbench.runner import (
    Objective,
    Run,
    grid_measure,
    run_optuna,
    run_shuffled_grid,
    study_spaces,
)
from searchbench.scenarios import reality_scenario, scenarios

from tuner.study.strategy import default_sampler, pre_run_veto, teach_validity


@dataclass
class Case:
    """One scenario under one objective, with its grid and spaces."""

    name: str
    grid: Grid
    spaces: dict[str, list]
    objective: Objective
    fails: Callable[[dict[str, Any]], bool] | None = None


@cache
def _grid(name: str) -> tuple[Grid, dict[str, list], dict[str, float]]:
    spec = reality_scenario() if name.endswith("-reality") else scenarios()[name]
    return load_grid(name, spec), study_spaces(spec), dict(spec.slos)


def case(name: str, kind: str, fails: Callable[[dict[str, Any]], bool] | None = None) -> Case:
    grid, spaces, slos = _grid(name)
    return Case(name, grid, spaces, Objective(kind, slos), fails)


def _stock(make: Callable[[int, int], optuna.samplers.BaseSampler]):
    def run(c: Case, seed: int, budget: int) -> Run:
        sampler = make(seed, len(c.objective.metrics))
        return run_optuna(sampler, c.spaces, c.objective, grid_measure(c.grid, c.fails), budget)

    return run


def _gp(seed: int, n: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=6)


def run_default(
    c: Case, seed: int, budget: int, learn_failures: bool = False, enqueue: list = ()
) -> Run:
    """The tool's default strategy, with the same pre-run checks as the study loop."""

    def veto(study, engine, config):
        found = pre_run_veto(
            study, c.spaces, engine, config, skip_duplicates=True, learn_failures=learn_failures
        )
        return found[0] if found else None

    def valid(engine, config):  # what Engine.validate says, as the grid recorded it
        point = c.grid.points.get(config_key(engine, dict(config)))
        return point is None or point["status"] != "invalid"

    sampler = default_sampler(seed, len(c.objective.metrics))
    teach_validity(sampler, c.spaces, valid)
    return run_optuna(
        sampler,
        c.spaces,
        c.objective,
        grid_measure(c.grid, c.fails),
        budget,
        veto=veto,
        enqueue=list(enqueue),
    )


STRATEGIES: dict[str, Callable[[Case, int, int], Run]] = {
    "random": _stock(lambda s, n: optuna.samplers.RandomSampler(seed=s)),
    "grid-shuffled": lambda c, s, b: run_shuffled_grid(c.grid, b, s, grid_measure(c.grid, c.fails)),
    "tpe": _stock(lambda s, n: optuna.samplers.TPESampler(seed=s)),
    "nsga2": _stock(lambda s, n: optuna.samplers.NSGAIISampler(seed=s, population_size=20)),
    "gp": _stock(_gp),
    "default": run_default,
}
