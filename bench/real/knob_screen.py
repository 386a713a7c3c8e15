"""The knob screen of issue 27 on one GPU machine (run there, vLLM importable).

    python bench/real/knob_screen.py setup
    python bench/real/knob_screen.py run --plan expert,api_server_count_4 --seconds 560 \\
        --out DIR --db /root/campaign/h200-beyond-expert.db [--last expert_end]
        [--spec SPEC --knobs KNOBS --first-s S --later-s S]

Each name of ``--plan`` is one config measured as one trial of the study in
``studies/real/h200-beyond-expert.yaml`` (through ``run_study``: the vllm engine, the real runner,
the shared load generator, the spec's repeats), on its own server, in the order given:

* ``expert``: the study's named baseline (the expert hand-tune), as its first trial;
* ``expert_end``: the same config again at the end of the stretch (the drift guard);
* a name of ``--knobs`` (``studies/real/h200-beyond-expert-knobs.yaml``): the expert plus those
  options;
* ``combo``: the expert plus the options of the two single knobs that read highest above the
  first expert run on the spec's winner metric (output tok/s for the throughput screen,
  ``capacity_rps`` for the capacity one; skipped, and said, when fewer than two read above it);
* ``NAME@K``: round K of NAME, the same config on a server of its own again (the finalists'
  rounds, interleaved with the expert's: ``expert,api_server_count_4,expert@2,...``).

A name already measured in the study is skipped, so a call can be repeated after a lost machine.
A config is started only when the time it is expected to take (the longest trial so far after
the machine's first, ``--later-s`` (200 s) before any; ``--first-s`` (330 s) for the first start
of a machine, whose kernels are compiled then) fits in ``--seconds``, keeping room for
``--last``, which runs at the end. The study's SQLite file lives at ``--db`` (keep it under
/root: the next call of a warm machine resumes it) and is copied to ``--out`` through SQLite's
backup API after every trial, with ``knob-screen.json``: every trial's name, options, server
argv, runs and GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import optuna  # noqa: E402
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.real.make_dummy_model import make  # noqa: E402
from tuner.spec import StudySpec, load_spec  # noqa: E402
from tuner.study.attrs import FAIL_ATTR, fail_reason, fail_record  # noqa: E402
from tuner.study.loop import (  # noqa: E402
    build_engines,
    counted_trials,
    open_study,
    run_study,
    search_spaces,
)
from tuner.study.optuna_private import finish_trial, id_of  # noqa: E402
from tuner.study.search import config_params  # noqa: E402

SPEC = Path("studies/real/h200-beyond-expert.yaml")
KNOBS = Path("studies/real/h200-beyond-expert-knobs.yaml")
FIRST_START_S = 330.0  # a first vLLM start of a machine (kernel JIT, torch.compile) + 2 runs
LATER_S = 200.0  # a later start (caches warm) + 2 runs, until a trial has been timed
COLD_MARKER = Path.home() / ".cache" / "vllm"  # vLLM's compile cache: present once it started
# Options that change the compiled model: a new torch.compile (~1 min) before the first run.
RECOMPILES = ("attention_backend", "max_cudagraph_capture_size", "cudagraph_mode")

log = logging.getLogger("knob_screen")


def knob_configs(path: Path = KNOBS) -> dict[str, dict[str, Any]]:
    """The single knobs to screen: name -> options added to the expert's config."""
    data = yaml.safe_load(path.read_text()) or {}
    return {str(name): dict(options or {}) for name, options in data.items()}


def expert_config(spec: StudySpec) -> dict[str, Any]:
    """The study's named baseline as the full config the vllm engine serves."""
    from tuner.study.loop import baseline_configs

    engines = build_engines(spec)
    return dict(baseline_configs(spec, search_spaces(spec, engines))["vllm"])


def measured(study: optuna.Study, stretch: str = "A") -> dict[str, optuna.trial.FrozenTrial]:
    """Completed trials of one stretch (one machine) by knob name (the last one of a name);
    trials from before stretches were named belong to stretch A."""
    return {
        t.user_attrs["knob"]: t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "knob" in t.user_attrs and t.user_attrs.get("stretch", "A") == stretch
    }


def score(trial: optuna.trial.FrozenTrial, metric: str = "output_tokens_per_s") -> float:
    """The trial's reading of the screen's metric (higher is better: tok/s or req/s)."""
    return float(trial.user_attrs["metrics"][metric])


def combo_options(
    study: optuna.Study,
    knobs: dict[str, dict[str, Any]],
    stretch: str = "A",
    metric: str = "output_tokens_per_s",
) -> tuple[list[str], dict[str, Any]] | None:
    """The two single knobs that read highest above the first expert run on ``metric``, and
    their options together; None when fewer than two read above it."""
    done = measured(study, stretch)
    if "expert" not in done:
        return None
    bar = score(done["expert"], metric)
    above = sorted(
        (name for name in knobs if name in done and score(done[name], metric) > bar),
        key=lambda name: score(done[name], metric),
        reverse=True,
    )
    if len(above) < 2:
        return None
    best = above[:2]
    return best, {**knobs[best[0]], **knobs[best[1]]}


def fail_unfinished(study: optuna.Study) -> None:
    """Trials a lost call left RUNNING or WAITING become FAIL with the reason, so the next
    ``run_study`` runs the trial this call queues, not a stale one."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        reason = "interrupted" if trial.state == TrialState.RUNNING else "not_run"
        detail = "the device call ended before this trial finished"
        finish_trial(study, id_of(trial), {FAIL_ATTR: fail_record(reason, detail)}, TrialState.FAIL)
        log.warning("trial %d (%s) was %s: marked FAIL", trial.number, trial.user_attrs, reason)


def gpu_identity() -> str:
    """``name, uuid, driver`` of the GPU(s) nvidia-smi lists ("" without one)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,uuid,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


class Screen:
    """One call's share of the screen: the study, the clock and the outputs."""

    def __init__(
        self,
        spec: StudySpec,
        out: Path,
        seconds: float,
        stretch: str = "A",
        knobs: Path = KNOBS,
        first_s: float = FIRST_START_S,
        later_s: float = LATER_S,
    ) -> None:
        self.spec, self.out, self.seconds, self.stretch = spec, out, seconds, stretch
        self.first_s, self.later_s = first_s, later_s
        self.metric = spec.winner_metric
        self.began = time.monotonic()
        self.cold = not COLD_MARKER.exists()
        self.gpu = gpu_identity()
        self.study = open_study(spec)
        self.knobs = knob_configs(knobs)
        self.expert = expert_config(spec)
        self.spaces = search_spaces(spec, build_engines(spec))

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.began)

    def estimate(self, name: str, later: bool = False) -> float:
        """Seconds ``name`` is expected to take: now, or ``later`` (after this call's first)."""
        if self.cold and not later:
            return self.first_s
        timed = [
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.datetime_complete and t.datetime_start and not t.user_attrs.get("cold_start")
        ]
        recompiles = any(key in RECOMPILES for key in self.knobs.get(name, {}))
        return max(timed, default=self.later_s) + 10.0 + (60.0 if recompiles else 0.0)

    def options_for(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(options over the expert, extra trial attributes) for a plan name; None: skip."""
        base, _, round_ = name.partition("@")
        if round_:
            if not round_.isdigit() or int(round_) < 2:
                raise SystemExit(f"--plan: {name!r}: a round is NAME@K with K >= 2")
            found = self.options_for(base)
            if found is None:
                return None
            return found[0], {**found[1], "knob_base": base, "round": int(round_)}
        if name in ("expert", "expert_end"):
            if name == "expert_end":
                return {}, {"drift_guard": True}
            first = not self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            return {}, {"baseline": True} if first else {"stretch_baseline": True}
        if name == "combo":
            found = combo_options(self.study, self.knobs, self.stretch, self.metric)
            if found is None:
                print("combo: fewer than two knobs read above the expert; skipped", flush=True)
                return None
            return found[1], {"combo_of": found[0]}
        if name not in self.knobs:
            raise SystemExit(f"--plan: unknown config {name!r}; known: {', '.join(self.knobs)}")
        return self.knobs[name], {}

    def measure(self, name: str) -> None:
        """Queue ``name``'s config as the study's next trial and run it through run_study."""
        found = self.options_for(name)
        if found is None:
            return
        options, attrs = found
        config = {**self.expert, **options}
        attrs = {**attrs, "knob": name, "knob_options": options, "gpu": self.gpu}
        attrs["stretch"] = self.stretch
        if self.cold:
            attrs["cold_start"] = True
        self.study.enqueue_trial(
            config_params("vllm", config, False, self.spaces["vllm"]), user_attrs=attrs
        )
        budget = self.spec.budget.model_copy(update={"trials": counted_trials(self.study) + 1})
        started = time.monotonic()
        run_study(self.spec.model_copy(update={"budget": budget}))
        self.cold = False
        trial = self.study.get_trials(deepcopy=False)[-1]
        metrics = trial.user_attrs.get("metrics") or {}
        print(
            f"[{time.monotonic() - self.began:6.0f}s] {name}: trial {trial.number} "
            f"{trial.state.name} in {time.monotonic() - started:.0f} s, "
            f"{metrics.get('output_tokens_per_s', float('nan')):.0f} tok/s, "
            f"p99 TTFT {metrics.get('ttft_p99_ms', float('nan')):.0f} ms, "
            f"capacity {metrics.get('capacity_rps', float('nan')):.2f} req/s, "
            f"agreement {metrics.get('token_agreement', float('nan')):.3f}, "
            f"server {_server_line(trial)} {fail_reason(trial) or ''}",
            flush=True,
        )
        self.save()

    def run(self, plan: list[str], last: str | None) -> None:
        fail_unfinished(self.study)
        done = set(measured(self.study, self.stretch))
        for name in plan:
            if name in done:
                print(f"{name}: measured already, skipped", flush=True)
                continue
            need = self.estimate(name)
            reserve = self.estimate(last, later=True) if last and last not in done else 0.0
            if need + reserve > self.left():
                print(f"{name}: {need:.0f} s needed, {self.left():.0f} s left; skipped", flush=True)
                continue
            self.measure(name)
            done = set(measured(self.study, self.stretch))
        if last and last not in done:
            if self.estimate(last) <= self.left() + 15.0:  # the reserve was kept for it
                self.measure(last)
            else:
                print(f"{last}: no time left for it", flush=True)
        self.save()

    def save(self) -> None:
        copy_storage(self.spec.storage_url, self.out)
        (self.out / "knob-screen.json").write_text(
            json.dumps(trial_rows(self.study), indent=1, default=str)
        )


def measurement_extra(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The trial's measurement ``extra`` record (runs, server argv, counters, capacity)."""
    measurement = (trial.user_attrs.get("result") or {}).get("measurement") or {}
    return measurement.get("extra") or {}


def copy_storage(storage_url: str, out: Path) -> None:
    """Copy a study's SQLite file into ``out`` through SQLite's backup API, so a device call
    brings it back after every trial. The storage runs in WAL mode, so the .db file alone can
    lack the latest trials (they sit in the -wal file until a checkpoint): copying the file
    lost a finished trial once."""
    out.mkdir(parents=True, exist_ok=True)
    db = Path(storage_url.removeprefix("sqlite:///"))
    source, target = sqlite3.connect(db), sqlite3.connect(out / db.name)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def server_counters(trial: optuna.trial.FrozenTrial, keys: tuple[str, ...], spec: str) -> str:
    """The server's own counters of the trial named by ``keys``, as ``k=v`` (``spec``: the
    number format), or "-" without any."""
    counted = measurement_extra(trial).get("server_metrics") or {}
    return " ".join(f"{k}={counted[k]:{spec}}" for k in keys if k in counted) or "-"


def _server_line(trial: optuna.trial.FrozenTrial) -> str:
    """The server's own counters of the trial, briefly: prefix-cache hits, n-gram acceptance."""
    keys = ("prefix_cache_hit_rate", "spec_acceptance_rate", "spec_mean_acceptance_length")
    return server_counters(trial, keys, ".3f")


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial: name, options, state, server argv, per-run and pooled numbers, GPU."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        extra = measurement_extra(t)
        metrics = t.user_attrs.get("metrics") or {}
        rows.append(
            {
                "trial": t.number,
                "knob": t.user_attrs.get("knob"),
                "stretch": t.user_attrs.get("stretch", "A"),
                "options": t.user_attrs.get("knob_options"),
                "state": t.state.name,
                "fail": t.user_attrs.get(FAIL_ATTR),
                "gpu": t.user_attrs.get("gpu"),
                "started": t.datetime_start,
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else None,
                "server_start_s": extra.get("server_start_s"),
                "server_argv": extra.get("server_argv"),
                "runs": [r.get("output_tokens_per_s") for r in extra.get("runs") or []],
                "output_tokens_per_s": metrics.get("output_tokens_per_s"),
                "output_tokens_per_s_ci": [
                    metrics.get("output_tokens_per_s_ci_low"),
                    metrics.get("output_tokens_per_s_ci_high"),
                ],
                "ttft_p99_ms": metrics.get("ttft_p99_ms"),
                "ttft_p99_ms_ci": [
                    metrics.get("ttft_p99_ms_ci_low"),
                    metrics.get("ttft_p99_ms_ci_high"),
                ],
                "tpot_p99_ms": metrics.get("tpot_p99_ms"),
                "capacity_rps": metrics.get("capacity_rps"),
                "capacity": extra.get("capacity"),
                "token_agreement": metrics.get("token_agreement"),
                "server_metrics": extra.get("server_metrics"),
            }
        )
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["setup", "run"])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--knobs", type=Path, default=KNOBS, help="name -> options over the expert")
    parser.add_argument("--first-s", type=float, default=FIRST_START_S, help="a cold first trial")
    parser.add_argument(
        "--later-s", type=float, default=LATER_S, help="a trial before one is timed"
    )
    parser.add_argument("--plan", default="", help="config names, in order, comma-separated")
    parser.add_argument("--last", default=None, help="a config kept time for, measured last")
    parser.add_argument("--seconds", type=float, default=560.0)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--db", type=Path, default=None, help="the study's SQLite file here")
    parser.add_argument(
        "--stretch", default="A", help="one machine's stretch: its own expert runs and ratios"
    )
    args = parser.parse_args()
    spec = load_spec(args.spec)
    if args.db is not None:
        args.db.parent.mkdir(parents=True, exist_ok=True)
        spec = spec.model_copy(update={"storage": f"sqlite:///{args.db}"})
    if args.command == "setup":
        make(Path(spec.model.path))
        return
    plan = [name for name in args.plan.split(",") if name.strip()]
    screen = Screen(
        spec, args.out, args.seconds, args.stretch, args.knobs, args.first_s, args.later_s
    )
    screen.run(plan, args.last)


if __name__ == "__main__":
    main()
