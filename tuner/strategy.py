"""The default search strategy (``sampler: auto``) and the checks made before a trial runs.

Measured on exactly enumerated sim spaces (``bench/search_efficiency.py``, see docs/search.md):
multivariate TPE with a short random start reaches 97% of the grid optimum in 10-20 trials on the
8B scenarios, one objective or two, ahead of random search, a shuffled grid, stock TPE and
NSGA-II (whose generations of 20 need more trials than a real study has). On a 70B space that is
mostly invalid it trails random search at 10-20 trials: see the docs for the numbers.
Two checks before each trial make the budget go further:

* a config the study already measured is not run again (``duplicate``): categorical spaces make
  TPE re-propose its best point; the re-ask is free and the sampler sees it as a poor trial, so
  it moves to a neighbour;
* a config the failure model (:mod:`tuner.failures`) expects to fail is not run
  (``predicted_failure``).

Both are told to Optuna as PRUNED and do not use up budget (``tuner.study.NOT_COUNTED``); both
are capped so the loop always ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from engines.base import Param

DUPLICATE_REASON = "duplicate"
MAX_DUPLICATES_IN_A_ROW = 10
STARTUP_TRIALS = 6


def default_sampler(seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """The sampler ``auto`` builds: multivariate TPE (grouped for conditional spaces), constant
    liar for parallel workers, a short random start; MOTPE for several objectives.

    Tried and measured worse on the 70B scenario: a random start counted in measured trials only
    (8 then TPE), and 10 startup trials.
    """
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        n_startup_trials=STARTUP_TRIALS,
    )


def _key(engine: str, config: Mapping[str, Any]) -> str:
    return engine + json.dumps(sorted(config.items()), default=str)


def _in_a_row(study: optuna.Study, reason: str) -> int:
    count = 0
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if (t.user_attrs.get("fail") or {}).get("reason") != reason:
            break
        count += 1
    return count


def duplicate_of(study: optuna.Study, engine: str, config: Mapping[str, Any]) -> int | None:
    """Number of the finished trial that already measured ``config`` (None if none did)."""
    key = _key(engine, config)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if (
            t.user_attrs.get("engine") == engine
            and _key(engine, t.user_attrs.get("config", {})) == key
        ):
            return t.number
    return None


def pre_run_veto(
    study: optuna.Study,
    spaces: Mapping[str, Sequence[Param]],
    engine: str,
    config: Mapping[str, Any],
    skip_duplicates: bool,
    learn_failures: bool,
) -> tuple[str, str] | None:
    """(reason, detail) why this suggestion should not run, or None to run it."""
    if skip_duplicates and _in_a_row(study, DUPLICATE_REASON) < MAX_DUPLICATES_IN_A_ROW:
        number = duplicate_of(study, engine, config)
        if number is not None:
            return DUPLICATE_REASON, f"already measured as trial {number}"
    if learn_failures:
        from tuner.failures import VETO_REASON, veto_reason

        detail = veto_reason(study, spaces, engine, config)
        if detail:
            return VETO_REASON, detail
    return None
