"""The default search strategy (``sampler: auto``) and the checks made before a trial runs.

Measured on exactly enumerated sim spaces (``bench/search_efficiency.py``, see docs/search.md):
multivariate TPE with a short random start that tries every engine, and that judges its
candidates with the engines' ``validate`` (:class:`ValidityAwareTPE`), reaches 97% of the grid
optimum in 10-20 trials on the 8B scenarios and 20-50 on the 70B TP x PP space, one objective or
two, ahead of random search, a shuffled grid, stock TPE and NSGA-II (whose generations of 20 need
more trials than a real study has) at every budget: see the docs for the numbers.
Two checks before each trial make the budget go further:

* a config the study already measured is not run again (``duplicate``): categorical spaces make
  TPE re-propose its best point; the re-ask is free and the sampler sees it as a poor trial, so
  it moves to a neighbour;
* a config the failure model (:mod:`tuner.study.vetoes`) expects to fail is not run
  (``predicted_failure``).

Both are told to Optuna as PRUNED and do not use up budget (``tuner.study.loop.NOT_COUNTED``); both
are capped so the loop always ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from engines.base import Param
from tuner.study.attrs import CONFIG_ATTR, ENGINE_ATTR, LOAD_ATTR, RESULT_ATTR, fail_reason
from tuner.study.optuna_private import TPEHooks, asked_trials
from tuner.study.search import ENGINE_PARAM, config_from_params

DUPLICATE_REASON = "duplicate"
MAX_DUPLICATES_IN_A_ROW = 10
STARTUP_TRIALS = 6
INVALID_REASON = "invalid"
# (engine, config) -> whether the engine can run it; cheap and pure (``Engine.validate``).
Validity = Callable[[str, Mapping[str, Any]], bool]


def default_sampler(seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """The sampler ``auto`` builds: multivariate TPE (grouped for conditional spaces), constant
    liar for parallel workers, a short random start that spreads over the engines; MOTPE for
    several objectives. Candidates are judged with the engines' checks once the study loop (or
    the benchmark) calls :func:`teach_validity`.

    Tried and measured worse on the 70B scenario (20 seeds, see docs/search.md): a random start
    counted in measured trials only, 10 startup trials, a start balanced over every categorical
    option, fewer EI candidates, a larger gamma, independent TPE, and a random or balanced trial
    every 3rd measured trial (better 70B multi at 50 trials, worse 8B at 10).
    """
    return ValidityAwareTPE(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        n_startup_trials=STARTUP_TRIALS,
    )


class EngineBalancedTPE(TPEHooks):
    """TPE whose random start picks the least-tried engine (ties at random).

    With two engines a plain random start of 6 trials (some of them rejected as invalid) often
    tries only one engine, and TPE then stays there: on the both-engines scenario this cost
    5-8 points at 10-20 trials. Counting every asked trial, invalid ones included, keeps an
    engine whose configs are all invalid from being asked forever. Other options stay uniform:
    balancing them all cost 4-10 points on the 70B TP x PP scenario at 10-20 trials.
    """

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name != ENGINE_PARAM or not isinstance(
            param_distribution, CategoricalDistribution
        ):
            return super().sample_independent(study, trial, param_name, param_distribution)
        asked = asked_trials(study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if len([t for t in asked if t.state != TrialState.FAIL]) >= self.startup_trials:
            return super().sample_independent(study, trial, param_name, param_distribution)
        counts = np.zeros(len(param_distribution.choices))
        for t in asked:
            if param_name in t.params:
                counts[param_distribution.to_internal_repr(t.params[param_name])] += 1
        least = np.flatnonzero(counts == counts.min())
        return param_distribution.choices[int(self.rng.choice(least))]


class ValidityAwareTPE(EngineBalancedTPE):
    """TPE that picks its best *valid* candidate and learns nothing from invalid configs.

    Told of an invalid config (rejected before it ran), stock TPE counts it as a bad trial, so
    its valid neighbours look bad too. On the 70B TP x PP space half the configs are invalid
    (TP*PP above the GPU count, weights that do not fit): TP=8 is valid only with PP=1, TPE drew
    TP=8 with the PP of its best trials (PP=2), got it rejected, and stopped trying TP=8, the
    throughput end of the Pareto front; the multi-objective runs fell behind random search at
    20-50 trials. So, once :func:`teach_validity` has given it the engines' cheap checks:

    * each of TPE's candidates (drawn from the good trials' density) that the engine would reject
      is dropped before the best by l(x)/g(x) is chosen (if all are invalid, as before);
    * trials rejected as invalid stay out of the densities l(x) and g(x).

    Without a check (``teach_validity`` never called) it is :class:`EngineBalancedTPE`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._spaces: Mapping[str, Sequence[Param]] = {}
        self._valid: Validity | None = None
        self._known: dict[str, bool] = {}

    def teach(self, spaces: Mapping[str, Sequence[Param]], valid: Validity) -> None:
        """Use ``valid`` to judge candidates of ``spaces`` (see :func:`teach_validity`)."""
        if self._spaces is not spaces:  # the study loop passes the same spaces every trial
            self._spaces, self._known = spaces, {}
        self._valid = valid

    def density_trials(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        if self._valid is None:
            return trials
        return [t for t in trials if _reason(t) != INVALID_REASON]

    def judge_candidates(self, samples: dict[str, np.ndarray], acq: np.ndarray) -> np.ndarray:
        if self._valid is None or not self.space_in_flight:
            return acq
        valid = np.array([self._candidate_valid(samples, i) for i in range(len(acq))])
        return np.where(valid, acq, -np.inf) if valid.any() else acq

    def _candidate_valid(self, samples: dict[str, np.ndarray], i: int) -> bool:
        space = self.space_in_flight or {}
        params = {k: space[k].to_external_repr(v[i]) for k, v in samples.items() if k in space}
        for engine in {k.split(".", 1)[0] for k in params} & set(self._spaces):
            config = config_from_params(engine, list(self._spaces[engine]), params)
            if config is None:  # options of another group: cannot judge here
                continue
            key = _key(engine, config)
            if key not in self._known:
                self._known[key] = bool(self._valid(engine, config))  # type: ignore[misc]
            if not self._known[key]:
                return False
        return True


def teach_validity(
    sampler: optuna.samplers.BaseSampler, spaces: Mapping[str, Sequence[Param]], valid: Validity
) -> None:
    """Give the default sampler the engines' checks (no-op for other samplers); call before
    asking. The study loop passes ``Engine.validate``; results are cached per config."""
    if isinstance(sampler, ValidityAwareTPE):
        sampler.teach(spaces, valid)


def _reason(trial: FrozenTrial) -> str | None:
    return fail_reason(trial)


def _key(engine: str, config: Mapping[str, Any]) -> str:
    return engine + json.dumps(sorted(config.items()), default=str)


def _in_a_row(study: optuna.Study, reason: str) -> int:
    count = 0
    for t in reversed(study.get_trials(deepcopy=False)):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        if fail_reason(t) != reason:
            break
        count += 1
    return count


def duplicate_of(
    study: optuna.Study, engine: str, config: Mapping[str, Any], load: float | None = None
) -> int | None:
    """Number of the finished trial that already measured ``config`` (at load level ``load``,
    when the study sweeps one) or None: one that completed, failed, or was stopped early as
    overloaded (PRUNED after it ran)."""
    key = _key(engine, config)
    for t in study.get_trials(deepcopy=False):
        ran = t.state in (TrialState.COMPLETE, TrialState.FAIL) or (
            t.state == TrialState.PRUNED and RESULT_ATTR in t.user_attrs
        )
        if (
            ran
            and t.user_attrs.get(ENGINE_ATTR) == engine
            and t.user_attrs.get(LOAD_ATTR) == load
            and _key(engine, t.user_attrs.get(CONFIG_ATTR, {})) == key
        ):
            return t.number
    return None


def duplicates_in_a_row(study: optuna.Study) -> int:
    """How many of the study's latest finished trials in a row were re-proposals."""
    return _in_a_row(study, DUPLICATE_REASON)


def pre_run_veto(
    study: optuna.Study,
    spaces: Mapping[str, Sequence[Param]],
    engine: str,
    config: Mapping[str, Any],
    skip_duplicates: bool,
    learn_failures: bool,
    load: float | None = None,
) -> tuple[str, str] | None:
    """(reason, detail) why this suggestion should not run, or None to run it.

    Past ``MAX_DUPLICATES_IN_A_ROW`` re-proposals a duplicate runs (the loop ends either way); the
    study loop keeps that from happening by queueing an unmeasured config first
    (:mod:`tuner.study.repeats`)."""
    if skip_duplicates and _in_a_row(study, DUPLICATE_REASON) < MAX_DUPLICATES_IN_A_ROW:
        number = duplicate_of(study, engine, config, load)
        if number is not None:
            return DUPLICATE_REASON, f"already measured as trial {number}"
    if learn_failures:
        from tuner.study.vetoes import VETO_REASON, veto_reason

        detail = veto_reason(study, spaces, engine, config)
        if detail:
            return VETO_REASON, detail
    return None
