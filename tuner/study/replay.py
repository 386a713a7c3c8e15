"""Measure another study's configs again: on new hardware, another engine version, more loads.

A study's trials are the configs worth knowing about; re-measuring exactly those elsewhere (the
H100 study's configs on an H200, say) gives like-for-like data for calibration and a baseline
ratio on the new machine, at a fraction of a new search's GPU time. The configs are enqueued in
the given order, each at every load level of the spec's sweep one after the other, so a real
server is started once per config and reused across its loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from engines.errors import SpecError, StudyError
from tuner.spec import StudySpec
from tuner.study.attrs import (
    BASELINE_ATTR,
    CONFIG_ATTR,
    ENGINE_ATTR,
    REPLAY_ATTR,
    REPLAY_ENQUEUED_ATTR,
    STARTS_ENQUEUED_ATTR,
)
from tuner.study.loop import LOAD_PARAM, build_engines, open_study, search_spaces
from tuner.study.search import config_params

EngineConfig = tuple[str, dict[str, Any]]


def trial_configs(study: optuna.Study, trials: Sequence[int]) -> list[EngineConfig]:
    """``(engine, config)`` of the given trial numbers of ``study``, in that order."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    out = []
    for number in trials:
        trial = by_number.get(number)
        if trial is None or CONFIG_ATTR not in trial.user_attrs:
            raise SpecError(
                f"--trials: study {study.study_name!r} has no trial {number} with a config"
            )
        out.append(
            (str(trial.user_attrs.get(ENGINE_ATTR, "vllm")), dict(trial.user_attrs[CONFIG_ATTR]))
        )
    return out


def parse_trials(text: str) -> list[int]:
    """``"0,3,7"`` -> ``[0, 3, 7]``; anything else is a one-line error naming the flag."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(n < 0 for n in numbers):
        raise SpecError(f"--trials: expected trial numbers separated by commas, got {text!r}")
    return numbers


def enqueue_configs(
    spec: StudySpec, configs: Sequence[EngineConfig], baseline: int | None = 0
) -> int:
    """Queue ``configs`` in ``spec``'s study (once: a resumed study is left as it is) and return
    how many trials were queued. ``configs[baseline]`` at the spec's first load level is marked
    as the study's baseline, the trial every result is read against."""
    engines = build_engines(spec)
    spaces = search_spaces(spec, engines)
    study = open_study(spec)
    if study.user_attrs.get(REPLAY_ENQUEUED_ATTR):
        return 0
    unknown = sorted({name for name, _ in configs} - set(engines))
    if unknown:
        raise SpecError(f"engines: the spec has no engine {', '.join(unknown)}")
    loads: list[float | None] = list(spec.workload.sweep or [None])
    queued = 0
    for index, (name, config) in enumerate(configs):
        base = config_params(name, config, len(engines) > 1, spaces[name])
        for level, load in enumerate(loads):
            params = base if load is None else {**base, LOAD_PARAM: load}
            marked = index == baseline and level == 0
            study.enqueue_trial(
                params, user_attrs={BASELINE_ATTR: True} if marked else {REPLAY_ATTR: True}
            )
            queued += 1
    study.set_user_attr(REPLAY_ENQUEUED_ATTR, True)
    study.set_user_attr(STARTS_ENQUEUED_ATTR, True)  # the replayed configs are the starts
    return queued


def replay_budget(spec: StudySpec) -> int | None:
    """The trial budget that measures exactly what a replay queued in ``spec``'s study (the
    trials counted so far plus those still queued), or None when it holds no replay: after
    ``servetune replay``, ``servetune run`` measures the replayed configs, not a new search."""
    from tuner.study.loop import counted_trials, load_study
    from tuner.study.storage import storage_exists

    if not storage_exists(spec.storage_url):  # nothing to resume: create nothing to find out
        return None
    try:
        study, _ = load_study(spec.name, spec.storage_url)
    except StudyError:
        return None
    if not study.user_attrs.get(REPLAY_ENQUEUED_ATTR):
        return None
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return counted_trials(study) + len(waiting)
