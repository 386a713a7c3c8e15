"""The tuning loop: an Optuna study whose trials pick an engine config, validate it, measure it
and record everything needed to trust, compare and export the result.

The ask/tell interface keeps control here: a rejected config is recorded as PRUNED with its
reason, a failed measurement as FAIL with its reason, and Ctrl-C ends the trial in flight as FAIL
("interrupted") so the study resumes with nothing lost. A measurement the engine stopped early
because its run was overloaded (``extra['stopped']``, spec ``measurement.stop_overloaded``) is
Optuna's pruning case: PRUNED with reason ``overloaded`` and the symptom as detail, its partial
metrics kept; unlike a rejection it ran, so it uses up budget and counts as measured.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from engines import Engine, EngineError, RunContext, get_engine, split_settings
from engines.errors import SpecError, StudyError
from engines.metrics import Measurement
from engines.progress import progress_log
from engines.space import apply_overrides, named_config, space_defaults
from tuner.objectives import constraint_values, request_slo
from tuner.redaction import redact_spec
from tuner.spec import StudySpec, parse_spec
from tuner.study.attrs import (  # noqa: F401 - re-exported
    ACCURACY_REFERENCE_ATTR,
    BASELINE_ATTR,
    CONFIG_ATTR,
    ENGINE_ATTR,
    FAIL_ATTR,
    METRICS_ATTR,
    OBJECTIVES_ATTR,
    OWNER_ATTR,
    RESULT_ATTR,
    SEARCH_EXHAUSTED,
    SLOS_ATTR,
    SPEC_ATTR,
    SPEC_HASH_ATTR,
    STARTS_ENQUEUED_ATTR,
    VERSIONS_ATTR,
    WARM_START_ATTR,
    fail_reason,
    fail_record,
)
from tuner.study.liveness import fail_dead_owners, owner_record
from tuner.study.mirror import can_mirror, in_memory_twin, persist_new
from tuner.study.repeats import DRAWS as REPEAT_DRAWS
from tuner.study.repeats import queue_unmeasured, stuck_on_repeats
from tuner.study.search import config_params, make_sampler, suggest_config
from tuner.study.storage import open_storage, redact, storage_exists
from tuner.study.strategy import DUPLICATE_REASON, pre_run_veto, teach_validity
from tuner.versions import tool_versions

log = logging.getLogger(__name__)
# Trials that do not use up the budget: rejected before anything ran (free), or ended through
# no fault of their config.
NOT_COUNTED = (
    "invalid",
    "duplicate",
    "predicted_failure",
    "interrupted",
    "worker_lost",
    "over_budget",
)
# Failures that no config can avoid (the engine is not there): recorded, then the study stops.
STOPS_THE_STUDY = ("not_installed",)
# The Optuna parameter (and trial attribute) of a workload sweep's load level.
LOAD_PARAM = "load"
# A space whose suggestions keep being rejected ends the study instead of looping.
MAX_CONSECUTIVE_REJECTIONS = 50
# The fail reason of a trial whose run was stopped early as overloaded (told PRUNED).
OVERLOADED = "overloaded"


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial ended as, for progress displays."""

    number: int
    engine: str
    state: str
    values: list[float] | None
    feasible: bool
    reason: str | None
    config: dict[str, Any]

    @property
    def rejected(self) -> bool:
        """Told PRUNED before it ran (not a run stopped early as overloaded)."""
        return self.state == "PRUNED" and not (self.reason or "").startswith(f"{OVERLOADED}:")


ProgressCallback = Callable[[TrialOutcome, int, int | None], None]


def open_study(spec: StudySpec, create: bool = True) -> optuna.Study:
    """Create or load the study named by ``spec`` (same name and storage = resume)."""
    storage = open_storage(spec.storage_url, heartbeat_s=spec.options.get("heartbeat_s"))
    directions = [o.direction for o in spec.objectives]
    sampler = make_sampler(spec.sampler, spec.seed, len(directions))
    try:
        existing = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get(SPEC_HASH_ATTR)
        if stored and stored != spec.spec_hash():
            raise StudyError(
                f"study {spec.name!r} in {redact(spec.storage_url)} was made from a different spec "
                f"(hash {stored}, now {spec.spec_hash()}); give the study a new name"
            )
        return existing
    if not create:
        raise StudyError(f"no study named {spec.name!r} in {redact(spec.storage_url)}")
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )
    study.set_user_attr(SPEC_ATTR, redact_spec(spec.model_dump(mode="json", exclude={"storage"})))
    study.set_user_attr(SPEC_HASH_ATTR, spec.spec_hash())
    study.set_user_attr(OBJECTIVES_ATTR, [o.metric for o in spec.objectives])
    study.set_metric_names([o.metric for o in spec.objectives])  # optuna-dashboard's axis titles
    study.set_user_attr(SLOS_ATTR, spec.feasibility_slos)
    study.set_user_attr(VERSIONS_ATTR, tool_versions())
    return study


def load_study(name: str, storage: str) -> tuple[optuna.Study, StudySpec]:
    """Load an existing study and the spec it was made from (creating nothing when it is not
    there: no folder, no database file, no schema)."""
    if not storage_exists(storage):
        raise StudyError(f"no study named {name!r} in {redact(storage)} (no such storage)")
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise StudyError(f"no study named {name!r} in {redact(storage)}") from None
    data = study.user_attrs.get(SPEC_ATTR)
    if not data:
        raise StudyError(f"study {name!r} was not made by servetune (no spec attached)")
    return study, parse_spec({**data, "storage": storage}, f"study {name}")


def make_context(
    spec: StudySpec,
    trial_number: int | None = None,
    accuracy_reference: dict | None = None,
    load: float | None = None,
) -> RunContext:
    """The run context every engine gets for this study (with its accuracy settings, if any,
    the reference outputs they are compared with, and the trial's load level of a sweep)."""
    workdir = Path(spec.options.get("workdir", f"studies/runs/{spec.name}"))
    return RunContext(
        model=spec.model,
        hardware=spec.hardware,
        workload=spec.workload if load is None else spec.workload.at_load(load),
        slo=request_slo(spec.slos),
        seed=spec.seed,
        workdir=workdir,
        trial_number=trial_number,
        timeout_s=spec.budget.trial_timeout_s,
        options={
            "measurement": spec.measure_options(),
            **spec.options,
            **_accuracy_options(spec, accuracy_reference),
        },
    )


def _accuracy_options(spec: StudySpec, reference: dict | None) -> dict[str, Any]:
    if spec.accuracy is None:
        return {}
    return {"accuracy": spec.accuracy.model_dump(mode="json"), "accuracy_reference": reference}


def accuracy_reference(
    study: optuna.Study, spec: StudySpec, engines: dict[str, Engine], spaces: dict[str, list]
) -> dict | None:
    """The reference outputs accuracy is compared with: measured once per study, on the first
    engine's defaults (plus ``accuracy.reference`` overrides), stored in the study's user attrs
    and reused by every trial and worker (a resumed study does not measure it again)."""
    if spec.accuracy is None or not spec.accuracy.needs_reference:
        return None
    stored = study.user_attrs.get(ACCURACY_REFERENCE_ATTR)
    if stored:
        return stored
    from engines.accuracy import reference_config
    from engines.serving.measure import measure_reference

    name = next(iter(engines))
    config = reference_config(spec.accuracy, space_defaults(spaces[name]))
    started = time.monotonic()
    try:
        data = measure_reference(engines[name], config, make_context(spec))
    except EngineError as exc:
        raise StudyError(f"the accuracy reference ({name} {config}) failed: {exc}") from None
    overrides = "" if spec.accuracy.reference == "defaults" else " + accuracy.reference"
    data["trial"] = f"reference ({name} defaults{overrides})"
    data["config"] = config  # what a lossless option's trial must agree with token for token
    data["measured_s"] = round(time.monotonic() - started, 3)
    latest = study.user_attrs.get(ACCURACY_REFERENCE_ATTR)  # another worker may have won
    if latest:
        return latest
    study.set_user_attr(ACCURACY_REFERENCE_ATTR, data)
    log.info("accuracy reference measured in %.1f s: %s", data["measured_s"], data["trial"])
    return data


def build_engines(spec: StudySpec) -> dict[str, Engine]:
    """Each engine the spec searches, ready to measure with the spec's runner."""
    return {
        name: get_engine(name, spec.runner, spec.sim_profile, split_settings(name, block)[0])
        for name, block in spec.engines.items()
    }


def search_spaces(spec: StudySpec, engines: dict[str, Engine]) -> dict[str, list]:
    """Each engine's space with the spec's overrides applied; a baseline the spec names is
    checked against it here, before a study is opened."""
    spaces = {
        name: apply_overrides(
            engine.space(spec.model, spec.hardware),
            split_settings(name, spec.engines[name])[1],
            f"engines.{name}",
            engine.unknown_option,
        )
        for name, engine in engines.items()
    }
    for name, engine in engines.items():
        engine.check_space(spaces[name], f"engines.{name}")
        _check_context(spec, name, engine, spaces[name])
    baseline_configs(spec, spaces, engines)
    return spaces


def _check_context(spec: StudySpec, name: str, engine: Engine, space: list) -> None:
    """Refuse a space whose every sequence length is past the model's context: each of its
    trials would be rejected, and the study would end with nothing measured and exit 0."""
    option = engine.context_option
    param = next((p for p in space if p.name == option), None)
    if param is None:
        return
    values = param.choices if param.kind == "categorical" else (param.low,)
    limit = spec.model.max_context
    if values and all(isinstance(v, (int, float)) and v > limit for v in values):
        raise SpecError(
            f"engines.{name}.{option}: {values[0]:,} is past {spec.model.name}'s context of "
            f"{limit:,} tokens; give at most {limit}"
        )


def baseline_configs(
    spec: StudySpec, spaces: dict[str, list], engines: dict[str, Engine] | None = None
) -> dict[str, dict[str, Any]]:
    """The baseline trial's config per engine: the one ``spec.baseline`` names, else the
    engine's defaults; {} when the spec asks for no baseline."""
    if not spec.baseline:
        return {}
    named = spec.baseline if isinstance(spec.baseline, dict) else {}
    return {
        name: named_config(
            space,
            named[name],
            f"baseline.{name}",
            engines[name].unknown_option if engines else None,
        )
        if name in named
        else space_defaults(space)
        for name, space in spaces.items()
    }


def holds_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial uses up (or, queued or running, will use up) part of the budget: every
    trial but those that failed or were rejected for a reason in ``NOT_COUNTED``."""
    if trial.state in (TrialState.FAIL, TrialState.PRUNED):
        return fail_reason(trial) not in NOT_COUNTED
    return True


def counted_trials(study: optuna.Study) -> int:
    """Trials that used up budget: finished, or still running (possibly in another worker)."""
    return sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if trial.state != TrialState.WAITING and holds_budget(trial)
    )


def run_study(
    spec: StudySpec,
    progress: ProgressCallback | None = None,
    engines: dict[str, Engine] | None = None,
) -> optuna.Study:
    """Run (or resume) the study until its budget is used up; returns the Optuna study."""
    engines = engines or build_engines(spec)
    spaces = search_spaces(spec, engines)
    persistent = open_study(spec)
    fail_dead_owners(persistent)  # trials of a killed earlier run: not left RUNNING
    mirrored = spec.runner == "sim" and can_mirror(persistent)
    study = in_memory_twin(persistent) if mirrored else persistent
    stored = len(study.trials)
    _enqueue_starts(study, spec, engines, spaces)

    def persist() -> None:
        nonlocal stored
        if mirrored:
            stored = persist_new(study, persistent, stored)

    try:
        accuracy_reference(study, spec, engines, spaces)  # before any trial: fails early
        trial_loop(
            study,
            spec,
            LoopHooks(
                run_trial=lambda: run_one_trial(study, spec, engines, spaces),
                after_trial=persist,
            ),
            progress,
        )
    finally:
        if mirrored:  # the trial an interrupt ended (FAIL "interrupted") is kept too
            persist_new(study, persistent, stored)
            if search_exhausted(study):
                persistent.set_user_attr(SEARCH_EXHAUSTED, True)
        for engine in engines.values():
            engine.close()
    return persistent


@dataclass
class LoopHooks:
    """What differs between one process running a study and a worker sharing one: how a trial
    is run (None: it was given up by another worker meanwhile), what is tidied before each
    (a worker fails lost trials), how many trials count as done and how many run elsewhere
    (``budget_used``; default: the counted trials, none elsewhere), what follows each trial (a
    mirrored sim study persists it) and how to wait while the rest of the budget runs
    elsewhere."""

    run_trial: Callable[[], TrialOutcome | None]
    before_trial: Callable[[], None] = lambda: None
    budget_used: Callable[[], tuple[int, int]] | None = None
    after_trial: Callable[[], None] = lambda: None
    wait: Callable[[], None] = lambda: None


def trial_loop(
    study: optuna.Study,
    spec: StudySpec,
    hooks: LoopHooks,
    progress: ProgressCallback | None = None,
) -> None:
    """The one loop of ``run_study`` and ``run_worker``: trials until the budget (trials or
    minutes) is used, the search is exhausted, or too many suggestions in a row were rejected
    before running (a space mostly invalid for the model and GPU)."""
    deadline = time.monotonic() + spec.budget.minutes * 60 if spec.budget.minutes else math.inf
    total = spec.budget.trials
    used = hooks.budget_used or (lambda: (counted_trials(study), 0))
    rejected_in_a_row = 0
    while time.monotonic() < deadline:
        hooks.before_trial()
        done, elsewhere = used()
        if total is not None and done >= total:
            break
        if search_exhausted(study):  # this run (or a worker) told the grid's last trial
            log.info("every config the search can offer was measured; stopping")
            break
        if total is not None and done + elsewhere >= total:
            hooks.wait()  # the rest of the budget is running in other workers
            continue
        outcome = hooks.run_trial()
        hooks.after_trial()
        if outcome is None:
            continue
        if progress:
            progress(outcome, counted_trials(study), total)
        rejected_in_a_row = rejected_in_a_row + 1 if outcome.rejected else 0
        if rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
            log.warning(
                "%d suggestions in a row were rejected before running; stopping "
                "(is the search space mostly invalid for this model and GPU?): %s",
                rejected_in_a_row,
                outcome.reason,
            )
            break


def short_config(config: dict[str, Any], space: list) -> str:
    """The options of ``config`` that differ from the engine's defaults, as ``k=v`` (one line)."""
    defaults = space_defaults(space)
    changed = [f"{k}={v}" for k, v in config.items() if k in defaults and defaults[k] != v]
    return ", ".join(changed) or "the engine's defaults"


def run_one_trial(
    study: optuna.Study, spec: StudySpec, engines: dict[str, Engine], spaces: dict[str, list]
) -> TrialOutcome:
    """Ask for one config, validate and measure it, and tell the study how it went.

    Whatever happens after the ask, the trial is told: an interrupt (Ctrl-C, SIGTERM, SIGHUP)
    fails it as ``interrupted`` and propagates; any other exception (a bug in an engine's rules,
    plan or run, a storage hiccup while recording) fails it as ``error`` with its message and
    the study goes on. No trial is left RUNNING by a live process."""
    teach_validity(study.sampler, spaces, _validity(spec, engines))
    trial = study.ask()
    try:
        trial.set_user_attr(OWNER_ATTR, owner_record())
        return _run_asked(study, trial, spec, engines, spaces)
    except KeyboardInterrupt:
        _fail_unless_told(study, trial, "interrupted", "stopped by the user or a signal")
        raise
    except StudyError:
        raise  # the trial was told first (STOPS_THE_STUDY)
    except optuna.exceptions.UpdateFinishedTrialError:
        raise  # another worker gave this trial up as lost meanwhile (tuner.study.workers)
    except Exception as exc:  # noqa: BLE001 - the study outlives any one trial's bug
        log.exception("trial %d failed unexpectedly", trial.number)
        _fail_unless_told(study, trial, "error", f"{type(exc).__name__}: {exc}")
        engine = trial.user_attrs.get(ENGINE_ATTR, "?")
        return TrialOutcome(
            trial.number,
            engine,
            "FAIL",
            None,
            False,
            f"error: {exc}",
            trial.user_attrs.get(CONFIG_ATTR, {}),
        )


def _fail_unless_told(study: optuna.Study, trial: optuna.Trial, reason: str, detail: str) -> None:
    """Fail ``trial`` unless it was already told (an exception after its tell changes nothing)."""
    with contextlib.suppress(RuntimeError, ValueError):  # UpdateFinishedTrialError: told
        _fail(study, trial, reason, detail)


def _run_asked(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    engines: dict[str, Engine],
    spaces: dict[str, list],
) -> TrialOutcome:
    engine_name, config = suggest_config(trial, spaces)
    engine = engines[engine_name]
    load = None
    if spec.workload.sweep:  # the load level is searched too; a server takes it without restart
        load = trial.suggest_categorical(LOAD_PARAM, list(spec.workload.sweep))
        trial.set_user_attr(LOAD_PARAM, load)
    ctx = make_context(spec, trial.number, accuracy_reference(study, spec, engines, spaces), load)
    trial.set_user_attr(ENGINE_ATTR, engine_name)
    trial.set_user_attr(CONFIG_ATTR, config)
    veto = pre_run_veto(
        study,
        spaces,
        engine_name,
        config,
        skip_duplicates=not spec.allow_repeats,
        learn_failures=spec.learn_failures,
        load=load,
    )
    if veto:  # free: told as PRUNED, not counted (NOT_COUNTED), capped in tuner.study.strategy
        trial.set_user_attr(FAIL_ATTR, fail_record(veto[0], veto[1]))
        _set_constraints(trial, spec, [1.0] * len(spec.feasibility_slos))
        _tell(study, trial, state=TrialState.PRUNED)
        if veto[0] == DUPLICATE_REASON and not spec.allow_repeats and stuck_on_repeats(study):
            _queue_unmeasured_or_stop(study, spec, engines, spaces)
        return TrialOutcome(
            trial.number, engine_name, "PRUNED", None, False, f"{veto[0]}: {veto[1]}", config
        )
    progress_log.info(
        "trial %d (%s): %s", trial.number, engine_name, short_config(config, spaces[engine_name])
    )
    return _measure(study, trial, spec, engine, config, ctx)


def _queue_unmeasured_or_stop(
    study: optuna.Study, spec: StudySpec, engines: dict[str, Engine], spaces: dict[str, list]
) -> None:
    """The sampler only re-proposes measured configs: queue an unmeasured one for the next
    trial, or mark the search exhausted when none is left (:mod:`tuner.study.repeats`)."""
    loads = list(spec.workload.sweep) if spec.workload.sweep else None
    if queue_unmeasured(study, spaces, _validity(spec, engines), loads) is None:
        log.info("no unmeasured valid config found in %d random draws", REPEAT_DRAWS)
        study.set_user_attr(SEARCH_EXHAUSTED, True)


def _validity(spec: StudySpec, engines: dict[str, Engine]) -> Callable[[str, Any], bool]:
    """Whether an engine would accept a config: its cheap ``validate`` (the default sampler
    judges candidates with it, see :class:`tuner.study.strategy.ValidityAwareTPE`)."""
    ctx = make_context(spec)

    def valid(name: str, config: Any) -> bool:
        try:
            return not engines[name].validate(dict(config), ctx)
        except Exception:  # noqa: BLE001 - unsure: let the trial find out, as without the check
            return True

    return valid


def _measure(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    engine: Engine,
    config: dict[str, Any],
    ctx: RunContext,
) -> TrialOutcome:
    def outcome(state: str, values=None, feasible=False, reason=None) -> TrialOutcome:
        return TrialOutcome(trial.number, engine.name, state, values, feasible, reason, config)

    reasons = engine.validate(config, ctx)
    plan = engine.plan(config, ctx)
    trial.set_user_attr(
        "plan", {"runner": spec.runner, "precision": plan.precision, "gpus": plan.gpus}
    )
    if reasons:
        trial.set_user_attr(FAIL_ATTR, fail_record("invalid", "; ".join(reasons)))
        _set_constraints(trial, spec, [1.0] * len(spec.feasibility_slos))
        _tell(study, trial, state=TrialState.PRUNED)
        return outcome("PRUNED", reason="invalid: " + reasons[0])
    started = time.monotonic()
    try:
        measurement = engine.run(config, ctx)
    except EngineError as exc:
        _fail(study, trial, exc.reason, exc.detail, exc.log_path)
        if exc.reason in STOPS_THE_STUDY:  # no other config can do better: say so once
            raise StudyError(f"trial {trial.number}: {exc.detail}") from None
        return outcome("FAIL", reason=f"{exc.reason}: {exc.detail}")
    except Exception as exc:  # a bug or an unexpected engine error must not end the study
        log.exception("trial %d failed unexpectedly", trial.number)
        _fail(study, trial, "error", f"{type(exc).__name__}: {exc}")
        return outcome("FAIL", reason=f"error: {exc}")
    metrics = measurement.metrics()
    trial.set_user_attr(METRICS_ATTR, metrics)
    values = [metrics.get(o.metric, math.nan) for o in spec.objectives]
    constraints = constraint_values(metrics, spec.feasibility_slos)
    feasible = all(c <= 0 for c in constraints)
    stopped = (measurement.extra or {}).get("stopped")
    if stopped:  # a partial run: its values are not the config's, so the sampler gets none
        _set_constraints(trial, spec, [1.0] * len(spec.feasibility_slos))
        trial.set_user_attr(RESULT_ATTR, _result(measurement, engine, constraints, False, started))
        trial.set_user_attr(FAIL_ATTR, fail_record(OVERLOADED, str(stopped)))
        _tell(study, trial, state=TrialState.PRUNED)
        return outcome("PRUNED", reason=f"{OVERLOADED}: {stopped}")
    if any(v is None or not math.isfinite(v) for v in values):
        _fail(
            study,
            trial,
            "no_result",
            f"objective values {values} (completed "
            f"{measurement.num_completed}/{measurement.num_requests} requests)",
        )
        return outcome("FAIL", reason="no_result")
    _set_constraints(trial, spec, constraints)
    trial.set_user_attr(RESULT_ATTR, _result(measurement, engine, constraints, feasible, started))
    _tell(study, trial, values)
    return outcome("COMPLETE", values, feasible)


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    values: list[float] | None = None,
    state: TrialState | None = None,
) -> None:
    """``study.tell``, around one Optuna behaviour: the grid sampler (BruteForceSampler) calls
    ``study.stop()`` from ``after_trial`` once every config was tried, which raises outside
    ``study.optimize`` (servetune asks and tells). The trial is stored all the same (Optuna sets
    its state in a ``finally``); the study is marked exhausted, for every worker sharing it."""
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise
        study.set_user_attr(SEARCH_EXHAUSTED, True)


def search_exhausted(study: optuna.Study) -> bool:
    """Whether the sampler has tried every config it can offer (``sampler: grid``, or random
    draws found no unmeasured config: :mod:`tuner.study.repeats`)."""
    return bool(study.user_attrs.get(SEARCH_EXHAUSTED))


def _result(
    measurement: Measurement,
    engine: Engine,
    constraints: list[float],
    feasible: bool,
    started: float,
) -> dict[str, Any]:
    """The ``result`` attribute of a trial that ran: the whole measurement and its verdict."""
    return {
        "feasible": feasible,
        "estimated": measurement.estimated,
        "constraints": constraints,
        "measurement": json.loads(json.dumps(measurement.to_dict(), default=str)),
        "versions": engine.versions(),
        "trial_seconds": round(time.monotonic() - started, 4),
    }


def _set_constraints(trial: optuna.Trial, spec: StudySpec, values: list[float]) -> None:
    """Record SLO constraint values (<= 0 met) where Optuna's samplers read them."""
    for metric, value in zip(spec.feasibility_slos, values, strict=True):
        trial.set_constraint(metric, value)


def _fail(
    study: optuna.Study, trial: optuna.Trial, reason: str, detail: str, log_path: str | None = None
) -> None:
    extra = {"log_path": log_path} if log_path else {}
    trial.set_user_attr(FAIL_ATTR, fail_record(reason, detail, **extra))
    _tell(study, trial, state=TrialState.FAIL)


def _enqueue_starts(
    study: optuna.Study, spec: StudySpec, engines: dict[str, Engine], spaces: dict[str, list]
) -> None:
    """Queue the baseline (engine defaults, or the config the spec names) and warm-start
    configs, once per study."""
    if study.user_attrs.get(STARTS_ENQUEUED_ATTR):
        return
    many = len(engines) > 1
    for name, config in baseline_configs(spec, spaces).items():
        study.enqueue_trial(
            config_params(name, config, many, spaces[name]),
            user_attrs={BASELINE_ATTR: True},
            skip_if_exists=True,
        )
    if spec.warm_start:
        from tuner.study.warmstart import warm_start_configs

        for name, config in warm_start_configs(spec):
            if name in engines:
                study.enqueue_trial(
                    config_params(name, config, many, spaces[name]),
                    user_attrs={WARM_START_ATTR: True},
                    skip_if_exists=True,
                )
    study.set_user_attr(STARTS_ENQUEUED_ATTR, True)
