"""Turns engines' search spaces into Optuna suggestions and samplers.

Engine choice is itself a parameter; each engine's options are suggested only for that engine
(define-by-run), under names ``<engine>.<option>`` so two engines never share a distribution.
"""

from __future__ import annotations

from typing import Any

import optuna

from engines.base import Param
from engines.errors import SpecError
from engines.space import on_step

ENGINE_PARAM = "engine"


def param_key(engine: str, option: str) -> str:
    """The Optuna parameter name of one engine option."""
    return f"{engine}.{option}"


def suggest_config(
    trial: optuna.Trial, spaces: dict[str, list[Param]]
) -> tuple[str, dict[str, Any]]:
    """Ask ``trial`` for an engine and its config; returns (engine name, config by real names)."""
    names = list(spaces)
    engine = names[0] if len(names) == 1 else trial.suggest_categorical(ENGINE_PARAM, names)
    config: dict[str, Any] = {}
    for param in spaces[engine]:
        if not param.applies(config):
            continue
        if param.kind == "categorical" and len(param.choices) == 1:
            config[param.name] = param.choices[0]  # pinned: nothing to search or store
        else:
            config[param.name] = _suggest(trial, param_key(engine, param.search_name), param)
    return engine, config


def config_from_params(
    engine: str, space: list[Param], params: dict[str, Any]
) -> dict[str, Any] | None:
    """The config that Optuna ``params`` stand for under ``engine`` (the inverse of the
    suggestions :func:`suggest_config` makes); None when an option it needs is not in ``params``.

    Lets a sampler judge a candidate before it becomes a trial (see :mod:`tuner.study.strategy`).
    """
    config: dict[str, Any] = {}
    for param in space:
        if not param.applies(config):
            continue
        if param.kind == "categorical" and len(param.choices) == 1:
            config[param.name] = param.choices[0]
            continue
        key = param_key(engine, param.search_name)
        if key not in params:
            return None
        value = params[key]
        config[param.name] = on_step(value, param.step) if param.kind == "float" else value
    return config


def _suggest(trial: optuna.Trial, key: str, param: Param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(key, list(param.choices))
    if param.kind == "int":
        step = int(param.step or 1)
        return trial.suggest_int(
            key,
            int(param.low),
            int(param.high),  # type: ignore[arg-type]
            step=1 if param.log else step,
            log=param.log,
        )
    value = trial.suggest_float(
        key,
        float(param.low),
        float(param.high),  # type: ignore[arg-type]
        step=None if param.log else param.step,
        log=param.log,
    )
    return on_step(value, None if param.log else param.step)


def config_params(
    engine: str, config: dict[str, Any], many_engines: bool, space: list[Param] | None = None
) -> dict[str, Any]:
    """Optuna params for enqueueing ``config`` (the inverse of :func:`suggest_config`)."""
    params = {param_key(engine, k): v for k, v in config.items()}  # pinned extras are ignored
    for param in space or ():
        if param.key and param.name in config and param.applies(config):
            params[param_key(engine, param.key)] = params.pop(param_key(engine, param.name))
    if many_engines:
        params[ENGINE_PARAM] = engine
    return params


def make_sampler(name: str, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """Build a sampler by name; ``auto`` is the measured default strategy
    (:func:`tuner.study.strategy.default_sampler`, see docs/search.md).

    SLOs reach the samplers as trial constraints (``Trial.set_constraint``), which NSGA-II, TPE
    and GP use to prefer feasible regions.
    """
    if name == "auto":
        from tuner.study.strategy import default_sampler

        return default_sampler(seed, n_objectives)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=8
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.BruteForceSampler(seed=seed)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler's dependency)
        except ImportError:
            raise SpecError("sampler: 'gp' needs PyTorch (pip install torch)") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise SpecError(f"sampler: unknown sampler {name!r}")
