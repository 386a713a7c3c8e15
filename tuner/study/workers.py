"""Many workers, one study: Optuna's distributed design (a shared RDB storage) plus crash recovery.

Every worker is an ordinary process that opens the study in the shared storage (PostgreSQL,
MySQL, SQLite on one host, or ``journal:<path>`` on a shared filesystem), asks Optuna for a
trial, measures it on the GPUs it owns and tells the result. There is no scheduler: the database
is the only thing workers share.

Three things make that safe:

* **Heartbeats.** While a worker holds a trial, a thread records Optuna heartbeats for it
  (``RDBStorage(heartbeat_interval, grace_period)``). A trial whose heartbeat is older than the
  grace period is failed by whichever worker notices first, with reason ``worker_lost`` (not
  counted against the budget) and, with ``requeue_lost``, its config is enqueued again.
* **An exact budget.** Checking the count before ``ask()`` races between workers, so each trial
  also checks its *position* after ``ask()``: trials are numbered in creation order under a row
  lock on the study, so "how many budget-holding trials have a smaller number than mine" is the
  same answer in every worker. A trial at position >= budget ends FAIL ``over_budget`` (not
  counted) before anything is measured. Workers stop only once exactly ``budget.trials`` counted
  trials have *finished*; while the rest are running elsewhere they wait, so a worker that dies
  near the end still has its trial redone by someone.
* **GPU ownership.** A worker owns a list of devices and runs one trial at a time on the first
  ``plan.gpus`` of them (``CUDA_VISIBLE_DEVICES`` in the server's environment); a config needing
  more GPUs than the worker owns is rejected as invalid with that reason.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from engines import Engine, EngineError, RunContext
from engines.errors import StudyError
from tuner.spec import StudySpec
from tuner.study.attrs import FAIL_ATTR, REQUEUED_FROM_ATTR, WORKER_ATTR, fail_record
from tuner.study.liveness import fail_dead_owners
from tuner.study.loop import (
    ProgressCallback,
    _enqueue_starts,
    build_engines,
    counted_trials,
    holds_budget,
    open_study,
    run_one_trial,
    search_spaces,
)
from tuner.study.optuna_private import (
    TrialCreationHooks,
    backend_of,
    finish_trial,
    heartbeat_enabled,
    id_of,
    id_of_number,
    stale_trial_ids,
    storage_of,
    write_trial_attr,
)
from tuner.study.search import make_sampler
from tuner.study.storage import _tune_sqlite, open_storage, redact, sqlalchemy_url

log = logging.getLogger(__name__)
DEFAULT_HEARTBEAT_S = 10
warnings.filterwarnings(
    "ignore", category=optuna.exceptions.ExperimentalWarning, message=".*heartbeat_interval"
)


# ---------------------------------------------------------------- heartbeats
class HeartbeatStorage(TrialCreationHooks):
    """An RDBStorage that records heartbeats for every trial this process holds.

    A trial is held from the moment it is created RUNNING (``ask()``) or popped from the queue
    until its state is finished, whatever code path asks and tells; the first heartbeat is
    written at once so a worker killed during sampling is still detected.
    """

    def __init__(self, url: str, heartbeat_s: int, grace_s: int) -> None:
        super().__init__(url, heartbeat_interval=heartbeat_s, grace_period=grace_s)
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def held(self) -> set[int]:
        with self._lock:
            return set(self._held)

    def _hold(self, trial_id: int) -> None:
        self.record_heartbeat(trial_id)
        with self._lock:
            self._held.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
                self._thread.start()

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            for trial_id in self.held():
                try:
                    self.record_heartbeat(trial_id)
                except Exception as exc:  # a database hiccup must not kill the worker
                    log.warning("heartbeat for trial id %d failed: %s", trial_id, exc)

    def close(self) -> None:
        self._stop.set()

    def on_trial_created(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.RUNNING:
            self._hold(id_of(trial))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state=state, values=values)
        if state == TrialState.RUNNING and changed:
            self._hold(trial_id)
        elif state.is_finished():
            self.release(trial_id)
        return changed


def open_worker_storage(
    url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S, grace_s: int | None = None
) -> optuna.storages.BaseStorage:
    """The shared storage with heartbeats (RDB URLs); ``journal:`` storages have none."""
    if url.startswith("journal:"):
        log.warning(
            "journal storage has no heartbeats: a killed worker's trial stays RUNNING "
            "(use PostgreSQL/MySQL/SQLite for crash recovery)"
        )
        return open_storage(url)
    open_storage(url).engine.dispose()  # same checks and one-line errors as everywhere else
    storage = HeartbeatStorage(sqlalchemy_url(url), heartbeat_s, grace_s or 3 * heartbeat_s)
    if url.startswith("sqlite:"):
        _tune_sqlite(storage)
    return storage


# ---------------------------------------------------------------- lost workers
def fail_lost_trials(study: optuna.Study, requeue: bool = False) -> list[int]:
    """Fail trials whose worker stopped sending heartbeats; returns their numbers.

    Optuna's ``fail_stale_trials`` would fail them too, but a finished trial's attributes can no
    longer be written, so the reason is written first, while the trial is still RUNNING. (If the
    worker was only paused and finishes between the two writes, its COMPLETE trial keeps a stale
    ``fail`` attribute; ``counted_trials`` only reads reasons of FAIL and PRUNED trials.)
    """
    if not heartbeat_enabled(study):
        return []
    storage, backend = storage_of(study), backend_of(study)
    grace = getattr(backend, "grace_period", None) or 2 * storage.get_heartbeat_interval()
    lost = []
    for stale in stale_trial_ids(study):
        trial = storage.get_trial(stale)
        worker = trial.user_attrs.get(WORKER_ATTR) or {}
        detail = (
            f"no heartbeat for over {grace}s from worker {worker.get('host', '?')} pid "
            f"{worker.get('pid', '?')}: killed, crashed or cut off"
        )
        record = {FAIL_ATTR: fail_record("worker_lost", detail, worker=worker)}
        if not finish_trial(study, stale, record, TrialState.FAIL):
            continue  # another worker failed it first, or its own worker just finished it
        lost.append(trial.number)
        log.warning("trial %d lost its worker (%s)", trial.number, detail)
        if requeue and trial.params:
            study.enqueue_trial(trial.params, user_attrs={REQUEUED_FROM_ATTR: trial.number})
    return lost


# ---------------------------------------------------------------- the shared budget
@dataclass(frozen=True)
class BudgetStatus:
    """Budget-holding trials by state: finished (counted), running anywhere, queued."""

    done: int
    running: int
    waiting: int


def budget_status(study: optuna.Study) -> BudgetStatus:
    """How much of the budget is done, in flight and queued, across all workers."""
    done = running = waiting = 0
    for trial in study.get_trials(deepcopy=False):
        if not holds_budget(trial):
            continue
        if trial.state == TrialState.RUNNING:
            running += 1
        elif trial.state == TrialState.WAITING:
            waiting += 1
        else:
            done += 1
    return BudgetStatus(done, running, waiting)


def budget_position(study: optuna.Study, number: int) -> int:
    """How many budget-holding trials come before trial ``number`` (its place in the budget).

    Trial numbers are given under a lock on the study row, so every worker sees the same order,
    and a trial's position can only go down later (an earlier trial may still end not counted),
    never up: once inside the budget, a trial stays inside.
    """
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and holds_budget(t))


# ---------------------------------------------------------------- one worker's view of an engine
def parse_gpus(text: str | None) -> list[str] | None:
    """``"0,1,2,3"`` -> ``["0", "1", "2", "3"]``; None or empty -> None (no restriction)."""
    if not text:
        return None
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if len(set(gpus)) != len(gpus):
        raise StudyError(f"--gpus: {text!r} names a GPU twice")
    return gpus


class WorkerEngine:
    """An engine as one worker runs it: inside the shared budget, on the worker's own GPUs."""

    def __init__(
        self, inner: Engine, study: optuna.Study, budget: int | None, gpus: list[str] | None
    ) -> None:
        self.inner, self.study, self.budget, self.gpus = inner, study, budget, gpus
        self.name = inner.name

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def validate(self, config: dict, ctx: RunContext) -> list[str]:
        reasons = self.inner.validate(config, ctx)
        needed = self.inner.plan(config, ctx).gpus
        if self.gpus is not None and needed > len(self.gpus):
            reasons = [
                *reasons,
                f"needs {needed} GPUs (TP x PP); this worker owns "
                f"{len(self.gpus)} ({','.join(self.gpus)})",
            ]
        return reasons

    def run(self, config: dict, ctx: RunContext):
        number = ctx.trial_number
        if number is not None and self.budget is not None:
            position = budget_position(self.study, number)
            if position >= self.budget:
                raise EngineError(
                    "over_budget",
                    f"the budget of {self.budget} trials was "
                    f"taken by other workers first (position {position})",
                )
        options = dict(ctx.options)
        devices = None
        if self.gpus is not None:
            devices = ",".join(self.gpus[: self.inner.plan(config, ctx).gpus])
            options["cuda_visible_devices"] = devices
            options["env"] = {**(options.get("env") or {}), "CUDA_VISIBLE_DEVICES": devices}
        if number is not None:
            write_trial_attr(
                self.study,
                id_of_number(self.study, number),
                "worker",
                {"host": socket.gethostname(), "pid": os.getpid(), "gpus": devices},
            )
        return self.inner.run(config, replace(ctx, options=options))


# ---------------------------------------------------------------- the worker loop
def open_worker_study(
    spec: StudySpec,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    grace_s: int | None = None,
    seed: int | None = None,
) -> optuna.Study:
    """Create or join the spec's study on a heartbeat storage.

    Each worker gets its own sampler seed: with one shared seed every worker would suggest the
    same configs in the same order.
    """
    open_study(spec)  # create-or-join with the spec-hash check, once
    storage = open_worker_storage(spec.storage_url, heartbeat_s, grace_s)
    seed = seed if seed is not None else (spec.seed * 1_000_003 + os.getpid()) % 2**31
    sampler = make_sampler(spec.sampler, seed, len(spec.objectives))
    return optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler)


def run_worker(
    spec: StudySpec,
    gpus: list[str] | None = None,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    grace_s: int | None = None,
    requeue_lost: bool = False,
    progress: ProgressCallback | None = None,
    engines: dict[str, Engine] | None = None,
    seed: int | None = None,
    poll_s: float = 1.0,
) -> optuna.Study:
    """Work on the spec's shared study until its budget is used up (by all workers together)."""
    from tuner.study.loop import LoopHooks, trial_loop

    engines = engines or build_engines(spec)
    spaces = search_spaces(spec, engines)
    study = open_worker_study(spec, heartbeat_s, grace_s, seed)
    _enqueue_starts(study, spec, engines, spaces)
    mine = {name: WorkerEngine(e, study, spec.budget.trials, gpus) for name, e in engines.items()}

    def tidy() -> None:
        fail_lost_trials(study, requeue_lost)
        fail_dead_owners(study)

    hooks = LoopHooks(
        run_trial=lambda: _one_trial(study, spec, mine, spaces),
        before_trial=tidy,
        budget_used=lambda: _done_and_running(study),
        wait=lambda: time.sleep(min(poll_s, heartbeat_s)),
    )
    try:
        trial_loop(study, spec, hooks, progress)
    finally:
        for engine in engines.values():
            engine.close()
        storage = backend_of(study)
        if isinstance(storage, HeartbeatStorage):
            storage.close()
    return study


def _done_and_running(study: optuna.Study) -> tuple[int, int]:
    status = budget_status(study)
    return status.done, status.running


def _one_trial(study, spec, engines, spaces):
    """One trial; None when another worker gave it up as lost while this one ran it."""
    try:
        with warnings.catch_warnings():  # Optuna warns on every ask() that heartbeats are
            warnings.filterwarnings("ignore", message="Heartbeat of storage")  # for optimize()
            return run_one_trial(study, spec, engines, spaces)
    except (UpdateFinishedTrialError, ValueError) as exc:
        storage = backend_of(study)
        given_up = [
            tid
            for tid in getattr(storage, "held", set)()
            if storage.get_trial(tid).state.is_finished()
        ]
        if not given_up:
            raise
        for trial_id in given_up:
            storage.release(trial_id)
        log.warning(
            "a trial was failed as worker_lost while this worker ran it (heartbeats "
            "late? raise --heartbeat): %s",
            exc,
        )
        return None


# ---------------------------------------------------------------- N local workers
def split_gpus(gpus: list[str] | None, workers: int) -> list[list[str] | None]:
    """Share ``gpus`` between ``workers`` in contiguous, equal, disjoint slices."""
    if gpus is None:
        return [None] * workers
    if len(gpus) < workers:
        raise StudyError(f"--gpus: {len(gpus)} GPUs cannot be shared by {workers} workers")
    size = len(gpus) // workers
    return [gpus[i * size : (i + 1) * size] for i in range(workers)]


def worker_main() -> None:
    """Entry point of a local worker process: the spec and settings come as JSON on stdin."""
    import json
    import sys

    from tuner.interrupts import interrupt_on_termination
    from tuner.spec import parse_spec

    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = json.load(sys.stdin)
    interrupt_on_termination()
    try:
        run_worker(parse_spec(data["spec"]), **data["settings"])
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def run_workers(
    spec: StudySpec,
    workers: int,
    gpus: list[str] | None = None,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    grace_s: int | None = None,
    requeue_lost: bool = False,
    on_poll: Callable[[int, int | None], None] | None = None,
) -> optuna.Study:
    """Run ``workers`` worker processes on this host against the spec's storage; wait for them.

    Plain subprocesses (not multiprocessing): nothing depends on how the caller's ``__main__``
    is guarded, and each worker is an ordinary process another host could run too.
    """
    import json
    import subprocess
    import sys

    if spec.storage_url in ("sqlite://", "sqlite:///:memory:"):
        raise StudyError("--workers: an in-memory SQLite storage cannot be shared")
    study = open_study(spec)
    engines = build_engines(spec)
    _enqueue_starts(study, spec, engines, search_spaces(spec, engines))
    for engine in engines.values():
        engine.close()
    argv = [sys.executable, "-c", "from tuner.study.workers import worker_main; worker_main()"]
    procs = []
    for i, part in enumerate(split_gpus(gpus, workers)):
        settings = {
            "gpus": part,
            "heartbeat_s": heartbeat_s,
            "grace_s": grace_s,
            "requeue_lost": requeue_lost,
            "seed": spec.seed + i,
        }
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)
        proc.stdin.write(json.dumps({"spec": spec.model_dump(mode="json"), "settings": settings}))
        proc.stdin.close()
        procs.append(proc)
    try:
        while any(p.poll() is None for p in procs):
            if on_poll:
                on_poll(counted_trials(study), spec.budget.trials)
            time.sleep(0.5)
    finally:
        for proc in procs:
            proc.wait()
    failed = [p.returncode for p in procs if p.returncode]
    if failed:
        raise StudyError(
            f"{len(failed)} of {workers} workers exited with an error "
            f"(exit codes {failed}); run again to resume {spec.name!r} in "
            f"{redact(spec.storage_url)}"
        )
    return study
