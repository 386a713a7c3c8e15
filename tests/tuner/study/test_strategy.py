"""The default sampler's validity awareness, on a tiny TP x PP-like space with a known rule."""

from __future__ import annotations

import optuna
from optuna.trial import FixedTrial, TrialState

from engines.base import Param
from tuner.study.search import config_from_params, suggest_config
from tuner.study.strategy import (
    INVALID_REASON,
    STARTUP_TRIALS,
    ValidityAwareTPE,
    default_sampler,
    teach_validity,
)

SPACES = {
    "e": [
        Param("tp", "categorical", (1, 2, 4, 8)),
        Param("pp", "categorical", (1, 2, 4)),
        Param("seqs", "categorical", (32, 64, 128, 256)),
        Param("pinned", "categorical", ("x",)),
    ]
}


def _valid(engine, config) -> bool:
    return config["tp"] * config["pp"] <= 4


def _run(sampler: optuna.samplers.BaseSampler, asks: int) -> list[bool]:
    """Ask ``asks`` times like the study loop: invalid configs told as PRUNED (free), others
    completed with a score that favours large TP*PP (so the good region borders the invalid one).
    Returns whether each ask was valid."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    valid_asks = []
    for _ in range(asks):
        trial = study.ask()
        engine, config = suggest_config(trial, SPACES)
        trial.set_user_attr("config", config)
        valid_asks.append(_valid(engine, config))
        if not valid_asks[-1]:
            trial.set_user_attr("fail", {"reason": INVALID_REASON, "detail": ""})
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, config["tp"] * config["pp"] + config["seqs"] / 1000)
    return valid_asks


def test_config_from_params_inverts_suggest_config():
    params = {"e.tp": 4, "e.pp": 2, "e.seqs": 64}
    engine, config = suggest_config(FixedTrial(params), SPACES)
    assert config_from_params(engine, SPACES[engine], params) == config
    assert config_from_params("e", SPACES["e"], {"e.tp": 4}) is None  # cannot judge a part


def test_taught_sampler_proposes_only_valid_configs_after_its_start():
    sampler = default_sampler(0, 1)
    assert isinstance(sampler, ValidityAwareTPE)
    teach_validity(sampler, SPACES, _valid)
    taught = _run(sampler, 40)
    assert all(taught[2 * STARTUP_TRIALS :])  # past the random start (invalid asks included)
    untaught = _run(default_sampler(0, 1), 40)  # the same sampler without the check
    assert untaught[2 * STARTUP_TRIALS :].count(False) > 3


def test_teach_validity_leaves_other_samplers_alone():
    sampler = optuna.samplers.RandomSampler(seed=0)
    teach_validity(sampler, SPACES, _valid)  # no error, no effect
    assert _run(sampler, 30).count(False) > 0
