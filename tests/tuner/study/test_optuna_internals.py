"""servetune leans on a few private parts of Optuna, all in tuner/study/optuna_private.py (TPE's
inner sampling steps, heartbeat internals, trial creation in RDBStorage, writing to a trial no
live process holds). pyproject.toml bounds Optuna to the releases tested; these tests fail
loudly, naming the missing piece, the day a release moves one of them, and when any other module
reaches into Optuna's private names."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.study import optuna_private
from tuner.study.optuna_private import TPEHooks, TrialCreationHooks

ROOT = Path(__file__).resolve().parents[3]
PRIVATE_NAMES = re.compile(
    r"\._(storage|study_id|trial_id|backend|rng|n_startup_trials|get_trials|get_stale_trial_ids|"
    r"create_new_trial|build_parzen_estimator|compute_acquisition_func|sample)\b|storages\._"
)

PRIVATE_METHODS = [
    (optuna.samplers.TPESampler, "_sample", ["study", "trial", "search_space"]),
    (
        optuna.samplers.TPESampler,
        "_build_parzen_estimator",
        ["study", "search_space", "trials", "handle_below"],
    ),
    (
        optuna.samplers.TPESampler,
        "_compute_acquisition_func",
        ["samples", "mpe_below", "mpe_above"],
    ),
    (optuna.storages.RDBStorage, "_create_new_trial", ["study_id", "template_trial"]),
    (optuna.storages.RDBStorage, "_get_stale_trial_ids", ["study_id"]),
    (optuna.Study, "_get_trials", ["deepcopy", "states", "use_cache"]),
]


@pytest.mark.parametrize(
    ("owner", "name", "params"),
    PRIVATE_METHODS,
    ids=[f"{o.__name__}.{n}" for o, n, _ in PRIVATE_METHODS],
)
def test_the_private_methods_servetune_overrides_still_exist(owner, name, params) -> None:
    method = getattr(owner, name, None)
    assert method is not None, f"Optuna {optuna.__version__} has no {owner.__name__}.{name}"
    found = list(inspect.signature(method).parameters)
    assert found[1 : len(params) + 1] == params, f"{owner.__name__}.{name}{found} changed"


def test_the_private_attributes_servetune_reads_still_exist(tmp_path) -> None:
    assert callable(optuna.storages._heartbeat.is_heartbeat_enabled)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(study._study_id, int)
    assert isinstance(study._storage, optuna.storages.BaseStorage)
    sampler = optuna.samplers.TPESampler(seed=0)
    assert hasattr(sampler, "_n_startup_trials") and hasattr(sampler._rng, "rng")


def test_no_module_but_optuna_private_uses_optunas_private_names() -> None:
    found = []
    for folder in ("tuner", "engines", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "optuna_private.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if PRIVATE_NAMES.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "Optuna private names outside optuna_private.py:\n" + "\n".join(found)


class _Counting(TPEHooks):
    def __init__(self) -> None:
        super().__init__(seed=0, n_startup_trials=3, multivariate=True)
        self.densities = self.judged = 0
        self.spaces: list[set[str]] = []

    def density_trials(self, trials):
        self.densities += 1
        return trials

    def judge_candidates(self, samples, acq):
        self.judged += 1
        self.spaces.append(set(self.space_in_flight or {}))
        return acq


def test_tpe_calls_both_hooks_with_the_space_in_flight() -> None:
    sampler = _Counting()
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 4), n_trials=8)
    assert sampler.densities > 0, "TPE no longer builds its densities through the hook"
    assert sampler.judged > 0, "TPE no longer scores candidates through the hook"
    assert all(space == {"x", "n"} for space in sampler.spaces)
    assert sampler.space_in_flight is None and sampler.startup_trials == 3


class _Recording(TrialCreationHooks):
    created: list[int]

    def on_trial_created(self, trial) -> None:
        self.created.append(trial.number)


def test_storage_says_when_ask_creates_a_trial_and_a_dead_trial_can_be_failed(tmp_path) -> None:
    storage = _Recording(f"sqlite:///{tmp_path / 's.db'}")
    storage.created = []
    study = optuna.create_study(storage=storage)
    orphan = study.ask()  # its process "dies": nobody tells it
    assert storage.created == [orphan.number]
    frozen = study.get_trials(deepcopy=False)[-1]
    record = {"fail": {"reason": "worker_lost"}}
    assert optuna_private.finish_trial(study, optuna_private.id_of(frozen), record, TrialState.FAIL)
    done = study.get_trials(deepcopy=False)[-1]
    assert done.state == TrialState.FAIL and done.user_attrs["fail"]["reason"] == "worker_lost"
    assert not optuna_private.finish_trial(
        study, optuna_private.id_of(frozen), record, TrialState.FAIL
    )
    assert optuna_private.id_of_number(study, orphan.number) == optuna_private.id_of(frozen)
    assert isinstance(optuna_private.backend_of(study), _Recording)  # under the cache wrapper
