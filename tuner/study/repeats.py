"""No trial spent on a config the study already measured, whatever the sampler.

The duplicate check (:func:`tuner.study.strategy.pre_run_veto`) turns a re-proposal into a free
PRUNED trial, and samplers usually move on. Some do not: NSGA-II on a resumed study re-proposed
measured configs 20 times in 20 trials (``servetune run studies/quickstart.yaml --trials 80``
after 60), and past ``MAX_DUPLICATES_IN_A_ROW`` re-proposals the check lets a repeat run so the
loop can end. Before that happens the loop queues a config drawn at random among those not yet
measured (and valid), so the next trial measures something new; when none is found in
``DRAWS`` draws the space is taken as exhausted and the study stops.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from engines.base import Param
from engines.space import on_step
from tuner.study.attrs import UNMEASURED_DRAW_ATTR
from tuner.study.search import config_params
from tuner.study.strategy import (
    MAX_DUPLICATES_IN_A_ROW,
    Validity,
    duplicate_of,
    duplicates_in_a_row,
)

log = logging.getLogger(__name__)
DRAWS = 500


def stuck_on_repeats(study: optuna.Study) -> bool:
    """Whether the next re-proposal would be let through as a repeat."""
    return duplicates_in_a_row(study) >= MAX_DUPLICATES_IN_A_ROW - 1


def queue_unmeasured(
    study: optuna.Study,
    spaces: Mapping[str, Sequence[Param]],
    valid: Validity,
    loads: Sequence[float] | None = None,
    seed: int | None = None,
) -> dict[str, Any] | None:
    """Enqueue one valid config the study has not measured and return its params, or None
    when ``DRAWS`` random draws found none."""
    rng = random.Random(seed if seed is not None else len(study.trials))
    for _ in range(DRAWS):
        engine = rng.choice(list(spaces))
        config = random_config(spaces[engine], rng)
        load = rng.choice(list(loads)) if loads else None
        if not valid(engine, config) or duplicate_of(study, engine, config, load) is not None:
            continue
        params = config_params(engine, config, len(spaces) > 1, list(spaces[engine]))
        if load is not None:
            params["load"] = load
        study.enqueue_trial(params, user_attrs={UNMEASURED_DRAW_ATTR: True})
        log.info("the sampler kept re-proposing measured configs; queued an unmeasured one")
        return params
    return None


def random_config(space: Sequence[Param], rng: random.Random) -> dict[str, Any]:
    """A config drawn uniformly per option (log-uniformly where the option is log-scaled),
    honouring each option's ``when``."""
    config: dict[str, Any] = {}
    for param in space:
        if param.applies(config):
            config[param.name] = _draw(param, rng)
    return config


def _draw(param: Param, rng: random.Random) -> Any:
    if param.kind == "categorical":
        return rng.choice(list(param.choices))
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if param.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    elif param.step:
        value = low + param.step * rng.randint(0, int(round((high - low) / param.step)))
    else:
        value = rng.uniform(low, high)
    if param.kind == "int":
        return min(int(high), max(int(low), int(round(value))))
    return on_step(value, None if param.log else param.step)
