"""Fast single-process studies: search in memory, persist every finished trial at once.

Optuna's RDB storage commits on every suggestion and attribute and re-reads the trial table on
every sampling decision, which costs ~100 ms a trial: more than the simulator itself. For a
study that one process runs on the ``sim`` runner, the sampler works on an in-memory twin of
the stored study, and each finished trial is written to the real storage in a single
transaction (``Study.add_trial``). Completed trials are as safe as before (a crash loses only
the trial in flight, which a sim re-runs in milliseconds); the stored study is an ordinary
Optuna study, identical to one run directly.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState


def can_mirror(persistent: optuna.Study) -> bool:
    """Only when every stored trial is finished: nothing running elsewhere, nothing queued."""
    return all(t.state.is_finished() for t in persistent.get_trials(deepcopy=False))


def in_memory_twin(persistent: optuna.Study) -> optuna.Study:
    """A study in memory with the stored study's trials, attributes and sampler."""
    twin = optuna.create_study(
        study_name=persistent.study_name,
        directions=persistent.directions,
        sampler=persistent.sampler,
        storage=optuna.storages.InMemoryStorage(),
    )
    for key, value in persistent.user_attrs.items():
        twin.set_user_attr(key, value)
    twin.add_trials(persistent.get_trials(deepcopy=False))
    return twin


def persist_new(twin: optuna.Study, persistent: optuna.Study, stored: int) -> int:
    """Write the twin's finished trials after the first ``stored`` ones; returns the new count.

    Trials are written in order and stop at the first unfinished one, so trial numbers in the
    stored study match the twin's.
    """
    trials = twin.get_trials(deepcopy=False)
    while stored < len(trials) and trials[stored].state not in (
        TrialState.RUNNING,
        TrialState.WAITING,
    ):
        persistent.add_trial(trials[stored])
        stored += 1
    return stored
