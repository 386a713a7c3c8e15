"""Every use of Optuna's private API in servetune, in one place.

Optuna has no public call for a few things servetune needs: writing to a trial that no live
process holds (a dead worker's, a cut-off call's), reading which trials lost their heartbeat,
learning when the storage creates a trial, and changing how TPE builds and judges its candidates.
They are reached here only, behind public names, so the rest of servetune uses none of Optuna's
underscored names; ``tests/tuner/study/test_optuna_internals.py`` fails loudly, naming the piece,
the day an Optuna release moves one, and ``pyproject.toml`` bounds Optuna to the releases tested.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState


# ---------------------------------------------------------------- a study's storage
def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage the study writes through (Optuna's cache wrapper included)."""
    return study._storage  # noqa: SLF001


def backend_of(study: optuna.Study) -> BaseStorage:
    """The storage under Optuna's cache wrapper: where servetune's own storage classes sit."""
    storage = storage_of(study)
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id  # noqa: SLF001


def id_of(trial: FrozenTrial) -> int:
    """The storage's id of a trial (its number counts within the study, the id across all)."""
    return trial._trial_id  # noqa: SLF001


def id_of_number(study: optuna.Study, number: int) -> int:
    return storage_of(study).get_trial_id_from_study_id_trial_number(study_id(study), number)


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes (Optuna dropped the public getter)."""
    return storage_of(study).get_study_system_attrs(study_id(study))


def write_trial_attr(study: optuna.Study, trial: int, key: str, value: Any) -> None:
    """Set a user attribute on trial id ``trial``, which need not be held by this process."""
    storage_of(study).set_trial_user_attr(trial, key, value)


def finish_trial(study: optuna.Study, trial: int, attrs: dict[str, Any], state: TrialState) -> bool:
    """Write ``attrs`` to trial id ``trial`` and move it to ``state``, for a trial whose own
    process is gone; False when another process finished it first."""
    storage = storage_of(study)
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial, key, value)
        return bool(storage.set_trial_state_values(trial, state=state))
    except UpdateFinishedTrialError:
        return False


# ---------------------------------------------------------------- heartbeats
def heartbeat_enabled(study: optuna.Study) -> bool:
    return bool(optuna.storages._heartbeat.is_heartbeat_enabled(storage_of(study)))  # noqa: SLF001


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Ids of RUNNING trials whose heartbeat is older than the storage's grace period."""
    return list(storage_of(study)._get_stale_trial_ids(study_id(study)))  # noqa: SLF001


class TrialCreationHooks(RDBStorage):
    """An RDB storage that says when it creates a trial (:meth:`on_trial_created`): a worker's
    heartbeat must cover a trial from the moment ``ask()`` makes it RUNNING."""

    def on_trial_created(self, trial: FrozenTrial) -> None:
        """Called with every trial this storage creates; a no-op here."""

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None):
        frozen = super()._create_new_trial(study_id, template_trial)
        self.on_trial_created(frozen)
        return frozen


# ---------------------------------------------------------------- TPE's inner steps
def asked_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    """The study's trials in ``states`` from Optuna's per-ask cache (what samplers read)."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)  # noqa: SLF001


class TPEHooks(optuna.samplers.TPESampler):
    """TPE with two public hooks into its inner steps, which Optuna keeps private:

    * :meth:`density_trials` chooses the trials TPE's densities l(x) and g(x) are built from;
    * :meth:`judge_candidates` may rescore the candidates TPE drew (their acquisition values),
      seeing the search space of the ask in flight as ``self.space_in_flight``.

    Both default to TPE's own behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.space_in_flight: dict[str, BaseDistribution] | None = None

    @property
    def startup_trials(self) -> int:
        return int(self._n_startup_trials)  # noqa: SLF001

    @property
    def rng(self) -> np.random.RandomState:
        return self._rng.rng  # noqa: SLF001

    def density_trials(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return trials

    def judge_candidates(self, samples: dict[str, np.ndarray], acq: np.ndarray) -> np.ndarray:
        return acq

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self.space_in_flight = search_space  # read by judge_candidates during this call
        try:
            return super()._sample(study, trial, search_space)
        finally:
            self.space_in_flight = None

    def _build_parzen_estimator(
        self,
        study: optuna.Study,
        search_space: dict[str, BaseDistribution],
        trials: list[FrozenTrial],
        handle_below: bool,
    ) -> Any:
        chosen = self.density_trials(trials)
        return super()._build_parzen_estimator(study, search_space, chosen, handle_below)

    def _compute_acquisition_func(
        self, samples: dict[str, np.ndarray], mpe_below: Any, mpe_above: Any
    ) -> np.ndarray:
        acq = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        return self.judge_candidates(samples, acq)
