"""servetune leans on a few private parts of Optuna (tuner/study/strategy.py overrides TPE's
internal sampling steps; tuner/study/workers.py reads heartbeat internals and creates trials
through RDBStorage). pyproject.toml bounds Optuna to the releases tested; this test fails loudly,
naming the missing piece, the day a release moves one of them."""

from __future__ import annotations

import inspect

import optuna
import pytest

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
